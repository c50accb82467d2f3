"""Training-time changes to the mask logits' gradient: the two-state ("flip") estimator and the
freeze of the first epochs. Kept apart from the loop because each is one idea about the mask."""

from __future__ import annotations

import torch

from groupact.data import PairBatch
from groupact.model import GroupActionAutoencoder


@torch.no_grad()
def flip_gradient(model: GroupActionAutoencoder, batch: PairBatch, generator: torch.Generator,
                  n_pairs: int = 8) -> None:
    """Set the mask logits' gradient from the exact difference between a channel's two states
    (``model.mask.estimator=flip``), in place of the straight-through tangent.

    The STE sets ∂L/∂α_c = ⟨∂L/∂z̃_c, Φ_g z_c − z_c⟩·σ'(α_c): the first-order change of the
    loss when channel c is turned. Turning a volume is no small change, and the decoder has
    adapted to the state the channel is in, so the tangent can point the wrong way: measured
    on planes-so3-debian after one epoch, it pushed the full-resolution sky channels to the
    variant side while turning them *raised* the reconstruction error by 9 % each. Here one
    channel c per step (drawn from ``generator``, the epoch's, so a resume stays exact) is decoded
    both ways on the first ``n_pairs`` pairs of the batch, and ∂L/∂α_c = (L(M_c = 1) −
    L(M_c = 0))·σ'(α_c) with L the reconstruction error D(Φ_g E x1) vs x2; the other logits
    get no gradient this step. Costs one encoder and two decoder passes of ``n_pairs``.
    """
    mask = model.mask
    n = min(n_pairs, batch.x1.shape[0])
    x1, x2, g = batch.x1[:n], batch.x2[:n], batch.g[:n]
    z1 = model.encode(x1)
    moved = model.action(z1, g)
    c = int(torch.randint(mask.channels, (1,), generator=generator))
    m = mask.hard().to(z1)
    errs = []
    for state in (0.0, 1.0):
        mm = m.clone()
        mm[c] = state
        mm = mm.view(1, -1, *([1] * (z1.dim() - 2)))
        errs.append(model.recon_error(model.decode(model.mix(mm, moved, z1)), x2))
    s = torch.sigmoid(mask.logits[c])
    grad = torch.zeros_like(mask.logits)
    grad[c] = (errs[1] - errs[0]) * s * (1 - s)
    mask.logits.grad = grad


def freeze_mask(model: GroupActionAutoencoder) -> None:
    """Hold the mask still (zero gradients: Adam's moments stay 0, so the logits stay put).

    Lets the encoder and decoder learn to use the initial split before the mask may move,
    so early, noisy L_const gradients cannot push every channel to one side.
    """
    for p in model.mask.parameters():
        if p.grad is not None:
            p.grad.zero_()
