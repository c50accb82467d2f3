"""Channel masks: which latent channels (fibres) the group moves (1) and which it leaves alone (0).

One mask for the whole dataset, not per image. A mask returns a (C,) float tensor of hard 0/1 values;
:class:`ALDMask` routes gradients to its logits with the straight-through estimator, or with the
two-state ("flip") estimator, and owns how it trains: its learning-rate scale, its exploration
epochs and its freeze. A trainer calls the same hooks on every mask (:meth:`ChannelMask.step`,
:meth:`ChannelMask.set_gradient`); a mask that does not learn leaves them as no-ops.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal, Protocol

import torch
from torch import Tensor, nn

from groupact.errors import ConfigError
from groupact.registry import Registry

Estimator = Literal["ste", "flip"]
ESTIMATORS: tuple[str, ...] = ("ste", "flip")


class Pairs(Protocol):
    """A batch of pairs as a mask's gradient estimator reads it: x2 = T_g x1."""

    x1: Tensor
    x2: Tensor
    g: Tensor


class MaskedModel(Protocol):
    """What the flip estimator needs of a model (:class:`groupact.model.GroupActionAutoencoder`)."""

    action: nn.Module

    def encode(self, x: Tensor) -> Tensor: ...
    def decode(self, z: Tensor) -> Tensor: ...
    def mix(self, m: Tensor, moved: Tensor, z: Tensor) -> Tensor: ...
    def recon_error(self, pred: Tensor, target: Tensor) -> Tensor: ...


class ChannelMask(nn.Module):
    """Base: ``forward()`` → (C,) mask, 1 = variant channel (moved by the action).

    The training hooks below are what a trainer calls each step, in this order: the forward pass
    inside :meth:`step`, then ``backward()``, then :meth:`set_gradient`, then the optimiser. The
    base's hooks do nothing, so a fixed mask (or a user's own) trains as a plain module.
    """

    channels: int
    #: the mask's parameters train at train.lr × this (:meth:`GroupActionAutoencoder.param_groups`)
    lr_scale: float = 1.0
    #: the threshold on σ(α) that makes the hard mask; None for a mask without one
    tau: float | None = None

    def probabilities(self) -> Tensor:
        """Soft membership in [0, 1] (for logs and figures); equals the mask for fixed masks."""
        return self().detach()

    def hard(self) -> Tensor:
        """The 0/1 mask without any gradient path."""
        return self().detach().round()

    @contextmanager
    def step(self, epoch: int, generator: torch.Generator) -> Iterator[None]:
        """Around one training step's forward pass in epoch ``epoch`` (0-based); draws, if any,
        come from ``generator`` (the epoch's, so a resumed run draws the same)."""
        yield

    def set_gradient(self, model: MaskedModel, batch: Pairs, epoch: int,
                     generator: torch.Generator) -> None:
        """After ``backward()`` and before the gradients are summed over ranks and the optimiser
        steps: replace or hold the mask parameters' gradient."""


def check_ald_options(tau: float, init_std: float, estimator: str, lr_scale: float,
                      sample_epochs: int, freeze_epochs: int) -> None:
    """The learned mask's settings, checked once (here), whoever builds it."""
    checks = [
        (0.0 < tau < 1.0, f"model.mask.tau must lie in (0, 1); got {tau}"),
        (init_std >= 0.0, f"model.mask.init_std must be 0 or more; got {init_std}"),
        (estimator in ESTIMATORS, f"model.mask.estimator is one of {', '.join(ESTIMATORS)}; "
         f"got {estimator!r}"),
        (lr_scale > 0.0, f"model.mask.lr_scale must be positive; got {lr_scale}"),
        (sample_epochs >= 0, f"model.mask.sample_epochs must be 0 or more; got {sample_epochs}"),
        (freeze_epochs >= 0, f"model.mask.freeze_epochs must be 0 or more; got {freeze_epochs}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


class ALDMask(ChannelMask):
    """Adaptive Latent Disentanglement: M = 1[σ(α) > τ] with straight-through gradients.

    Forward uses the hard 0/1 mask; backward uses dσ(α)/dα, so the losses can move channels between
    the variant and invariant parts while every forward pass sees a clean split.

    How it trains (none of it is the paper's unless left at its default):

    - ``estimator="flip"``: the logits' gradient is the exact difference of the reconstruction
      error with one channel in either state (:func:`flip_gradient`), in place of the tangent.
    - ``sample_epochs``: exploration. In the first epochs each training step draws one hard mask
      1[u < σ(α)], a Bernoulli(σ(α)) draw held in :attr:`draw`, so the networks meet every
      undecided channel in both states (the flip estimator rests while it explores).
      :meth:`hard` and eval mode always use the threshold.
    - ``freeze_epochs``: the logits' gradient is held at zero in the first epochs (Adam's
      moments stay 0, so the logits stay put) while the encoder and decoder learn to use the
      initial split, so early, noisy L_const gradients cannot push every channel to one side.
    - ``lr_scale``: the logits train at train.lr × this.

    None of these is state: the module's ``state_dict`` is the logits alone.
    """

    draw: Tensor | None = None

    def __init__(self, channels: int, tau: float = 0.5, init_logit: float = 0.0,
                 init_std: float = 0.01, generator: torch.Generator | None = None, *,
                 estimator: Estimator = "ste", lr_scale: float = 1.0, sample_epochs: int = 0,
                 freeze_epochs: int = 0):
        super().__init__()
        check_ald_options(tau, init_std, estimator, lr_scale, sample_epochs, freeze_epochs)
        self.channels, self.tau = int(channels), float(tau)
        self.estimator, self.lr_scale = estimator, float(lr_scale)
        self.sample_epochs, self.freeze_epochs = int(sample_epochs), int(freeze_epochs)
        init = init_logit + init_std * torch.randn(self.channels, generator=generator)
        self.logits = nn.Parameter(init)

    def probabilities(self) -> Tensor:
        return torch.sigmoid(self.logits).detach()

    def hard(self) -> Tensor:
        return (torch.sigmoid(self.logits) > self.tau).to(self.logits.dtype).detach()

    def forward(self) -> Tensor:
        soft = torch.sigmoid(self.logits)
        if self.draw is not None and self.training:
            hard = (self.draw.to(soft) < soft).to(soft.dtype)
        else:
            hard = (soft > self.tau).to(soft.dtype)
        return hard + (soft - soft.detach())  # exactly 0/1 forward, dσ/dα backward

    # --- the training schedule -------------------------------------------------------------
    def explores(self, epoch: int) -> bool:
        """Whether steps of epoch ``epoch`` (0-based) draw Bernoulli masks."""
        return epoch < self.sample_epochs

    def frozen(self, epoch: int) -> bool:
        """Whether the logits are held still in epoch ``epoch`` (0-based)."""
        return epoch < self.freeze_epochs

    @contextmanager
    def step(self, epoch: int, generator: torch.Generator) -> Iterator[None]:
        """In an exploration epoch, one Bernoulli(σ(α)) mask for this step, drawn from
        ``generator``; the threshold again afterwards, however the step ends."""
        if not self.explores(epoch):
            yield
            return
        self.draw = torch.rand(self.channels, generator=generator)
        try:
            yield
        finally:
            self.draw = None

    def set_gradient(self, model: MaskedModel, batch: Pairs, epoch: int,
                     generator: torch.Generator) -> None:
        """The flip estimator's gradient (outside exploration), then the freeze."""
        if self.estimator == "flip" and not self.explores(epoch):
            flip_gradient(self, model, batch, generator)
        if self.frozen(epoch) and self.logits.grad is not None:
            self.logits.grad.zero_()

    def extra_repr(self) -> str:
        extra = [f"estimator={self.estimator}"] if self.estimator != "ste" else []
        extra += [f"{k}={v:g}" for k, v in (("lr_scale", self.lr_scale),
                                            ("sample_epochs", self.sample_epochs),
                                            ("freeze_epochs", self.freeze_epochs))
                  if v != (1.0 if k == "lr_scale" else 0)]
        return ", ".join([f"channels={self.channels}, tau={self.tau}", *extra])


@torch.no_grad()
def flip_gradient(mask: ALDMask, model: MaskedModel, batch: Pairs, generator: torch.Generator,
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


class FixedMask(ChannelMask):
    """A hand-chosen split (Jin et al. 2024): the listed channels are variant, the rest not."""

    def __init__(self, channels: int, variant: Sequence[int]):
        super().__init__()
        self.channels = int(channels)
        bad = [c for c in variant if not 0 <= c < channels]
        if bad:
            raise ConfigError(f"model.mask.variant must list channels 0..{channels - 1}; "
                              f"channel {bad[0]} is not one")
        m = torch.zeros(self.channels)
        m[list(variant)] = 1.0
        self.register_buffer("mask", m)

    @classmethod
    def first_fraction(cls, channels: int, fraction: float) -> "FixedMask":
        """The first round(fraction·C) channels variant: Jin et al.'s z = [z_v; z_i]."""
        if not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"model.mask.variant_fraction must lie in [0, 1]; got {fraction}")
        return cls(channels, range(round(fraction * channels)))

    def forward(self) -> Tensor:
        return self.mask

    def extra_repr(self) -> str:
        return f"channels={self.channels}, variant={int(self.mask.sum())}"


class AllVariantMask(FixedMask):
    """No split: every channel moves (the 'all-variant' baseline)."""

    def __init__(self, channels: int):
        super().__init__(channels, range(channels))


def _ald(channels: int, tau: float = 0.5, init_logit: float = 0.0, init_std: float = 0.01,
         estimator: Estimator = "ste", lr_scale: float = 1.0, sample_epochs: int = 0,
         freeze_epochs: int = 0, generator: torch.Generator | None = None) -> ALDMask:
    return ALDMask(channels, tau, init_logit, init_std, generator=generator, estimator=estimator,
                   lr_scale=lr_scale, sample_epochs=sample_epochs, freeze_epochs=freeze_epochs)


def _fixed(channels: int, variant: Sequence[int] | None = None, variant_fraction: float = 0.5,
           generator: torch.Generator | None = None) -> FixedMask:
    if variant is not None:
        return FixedMask(channels, variant)
    return FixedMask.first_fraction(channels, variant_fraction)


#: model.mask.kind → mask; its parameters are the model.mask.* keys it reads
MASKS: Registry[ChannelMask] = Registry("model.mask.kind", "model.mask")
MASKS.register("ald", _ald, "the paper's learned mask: 1[σ(α) > τ], straight-through (or flip) "
               "gradients to the logits α",
               ["tau", "init_logit", "init_std", "estimator", "lr_scale", "sample_epochs",
                "freeze_epochs"])
MASKS.register("fixed", _fixed, "a hand-chosen split: the listed channels, or the first "
               "fraction, variant (Jin et al.)", ["variant", "variant_fraction"])
MASKS.register("all", lambda channels, generator=None: AllVariantMask(channels),
               "every channel variant (no split; z_i empty)")

