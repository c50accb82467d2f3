"""The model: encoder → mask (split) → latent action → decoder.

``D(Φ_g(E(x))) ≈ T_g(x)`` with ``Φ_g(z) = M ⊙ action_g(z) + (1 − M) ⊙ z``: the mask M chooses the
channels the group moves, the action moves their fibres, the rest passes through untouched.
Any encoder/decoder pair plugs in, as long as the encoder returns (B, C, *fibre) and the decoder
takes that shape back.

Images outside the model are always in [0, 1]. ``pixel_range`` is the range the networks work in
(the authors' MNIST net reads and writes [−1, 1], ending in Tanh): :meth:`encode` maps [0, 1] to
it, :meth:`decode` maps back, and :meth:`recon_error` measures the squared error in the networks'
own units, so a loss is the loss the network's authors wrote.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from groupact.errors import ConfigError, GroupactError
from groupact.groups import Group
from groupact.latent import ChannelMask, LatentAction
from groupact.latent.estimate import POLISH_LATENT_TOL, Estimate, estimate_latent, \
    refine_in_images


class GroupActionAutoencoder(nn.Module):
    """An autoencoder whose latent carries a group action on a (learned or fixed) channel subset."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, group: Group,
                 mask: ChannelMask, action: LatentAction,
                 latent_shape: tuple[int, ...] | None = None,
                 pixel_range: tuple[float, float] = (0.0, 1.0)):
        super().__init__()
        lo, hi = (float(v) for v in pixel_range)
        if not hi > lo:
            raise ConfigError(f"pixel_range must be (low, high) with high > low; got {pixel_range}")
        self.pixel_range = (lo, hi)
        self.encoder, self.decoder = encoder, decoder
        acts_on = getattr(action, "group", None)
        if acts_on is not None and (type(acts_on) is not type(group)
                                    or acts_on.name != group.name):
            raise ConfigError(f"the latent action is built for group '{acts_on.name}' but the "
                              f"model's group is '{group.name}'; build the action with the "
                              "same group")
        if not isinstance(mask, ChannelMask):
            raise ConfigError(f"the mask must be a groupact.latent.ChannelMask (a trainer calls "
                              f"its hooks); got {type(mask).__name__}")
        self.group, self.mask, self.action = group, mask, action
        self.latent_shape = tuple(latent_shape) if latent_shape is not None else None
        if self.latent_shape is not None:
            self._check_latent(self.latent_shape)

    @classmethod
    def for_input(cls, encoder: nn.Module, decoder: nn.Module, group: Group,
                  mask_factory, action: LatentAction,
                  input_shape: tuple[int, ...],
                  pixel_range: tuple[float, float] = (0.0, 1.0)) -> "GroupActionAutoencoder":
        """Build with the latent shape found by one dry run of the encoder on ``input_shape``.

        ``mask_factory(channels)`` makes the mask once the channel count is known. The dry run is
        in eval mode (BatchNorm statistics stay as they are) on the encoder's own device.
        """
        device = next((p.device for p in encoder.parameters()), torch.device("cpu"))
        was_training = encoder.training
        encoder.eval()
        try:
            with torch.no_grad():
                z = encoder(torch.zeros(2, *input_shape, device=device))
        finally:
            encoder.train(was_training)
        mask = mask_factory(z.shape[1])
        return cls(encoder, decoder, group, mask, action, tuple(z.shape[1:]), pixel_range)

    def _check_latent(self, shape: tuple[int, ...]) -> None:
        if len(shape) < 2:
            raise ConfigError(f"the encoder must return (B, C, *fibre); got a latent of shape "
                              f"(B, {', '.join(map(str, shape))}); add nn.Unflatten(1, (C, k))")
        if shape[0] != self.mask.channels:
            raise ConfigError(f"the mask has {self.mask.channels} channels but the latent has "
                              f"{shape[0]}")
        self.action.check_fibre(tuple(shape[1:]))

    # --- the pieces -------------------------------------------------------------------------
    def encode(self, x: Tensor) -> Tensor:
        """E(x) for images in [0, 1] (mapped to the networks' pixel range first)."""
        lo, hi = self.pixel_range
        return self.encoder(x if (lo, hi) == (0.0, 1.0) else lo + (hi - lo) * x)

    def decode(self, z: Tensor) -> Tensor:
        """D(z) as an image in [0, 1] (mapped back from the networks' pixel range)."""
        lo, hi = self.pixel_range
        y = self.decoder(z)
        return y if (lo, hi) == (0.0, 1.0) else (y - lo) / (hi - lo)

    def recon_error(self, pred: Tensor, target: Tensor) -> Tensor:
        """Mean squared error of two [0, 1] images in the networks' pixel units: (hi − lo)² times
        the [0, 1] error — exactly the MSE the networks' own output and normalised target have."""
        lo, hi = self.pixel_range
        err = F.mse_loss(pred, target)
        return err if (lo, hi) == (0.0, 1.0) else (hi - lo) ** 2 * err

    def mask_like(self, z: Tensor) -> Tensor:
        """The (C,) mask broadcast over (B, C, *fibre), with the STE gradient path."""
        m = self.mask()
        return m.view(1, -1, *([1] * (z.dim() - 2))).to(z.dtype)

    def split(self, z: Tensor, m: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(z_v, z_i) = (M ⊙ z, (1 − M) ⊙ z): both full-size, the other part's channels zeroed
        (so either can be decoded on its own; index with ``model.mask.hard().bool()`` for the
        channels themselves)."""
        m = self.mask_like(z) if m is None else m
        return m * z, (1 - m) * z

    def act(self, z: Tensor, g: Tensor, m: Tensor | None = None) -> Tensor:
        """Φ_g(z): move the variant channels, keep the invariant ones."""
        m = self.mask_like(z) if m is None else m
        return self.mix(m, self.action(z, g), z)

    @staticmethod
    def mix(m: Tensor, variant_from: Tensor, invariant_from: Tensor) -> Tensor:
        """M ⊙ a + (1 − M) ⊙ b: the variant channels of ``a`` with the invariant channels of
        ``b`` — the one home of the recomposition (acting, z_v/z_i swaps, the flip estimator)."""
        return m * variant_from + (1 - m) * invariant_from

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        """D(Φ_g(E(x))): the transformed image predicted through the latent space."""
        return self.decode(self.act(self.encode(x), g))

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def invariant_features(self, z: Tensor) -> Tensor:
        """(B, F) features of a latent that the group leaves unchanged and that keep its content:
        the invariant channels as they are, plus the action's invariants of the variant channels
        (orbit statistics for spatial actions, Gram matrices for matrix actions). For probes and
        downstream classifiers; see docs/PROTOCOL.md (`probe_zinv`)."""
        keep = self.mask.hard().bool().to(z.device)
        parts = [z[:, ~keep].flatten(1)]
        if bool(keep.any()):
            parts.append(self.action.invariants(z[:, keep]))
        return torch.cat(parts, 1)

    def param_groups(self, lr: float) -> list[dict[str, Any]] | Iterator[nn.Parameter]:
        """The optimiser's parameter groups at base rate ``lr``: the parameters as one group, or,
        when the mask or the action declares its own ``lr_scale``, the rest first and then that
        part's parameters at ``lr × lr_scale`` (the mask before the action)."""
        parts = [(self.mask, getattr(self.mask, "lr_scale", 1.0)),
                 (self.action, getattr(self.action, "lr_scale", 1.0))]
        scaled = [(list(part.parameters()), s) for part, s in parts
                  if s != 1.0 and any(True for _ in part.parameters())]
        if not scaled:
            return self.parameters()
        taken = {id(p) for params, _ in scaled for p in params}
        rest = [p for p in self.parameters() if id(p) not in taken]
        return [{"params": rest}] + [{"params": params, "lr": lr * s} for params, s in scaled]

    @torch.no_grad()
    def estimate_g(self, x1: Tensor, x2: Tensor, polish: bool = False, **search) -> Estimate:
        """ĝ for each pair of images (B, C, *spatial) in [0, 1], so that T_ĝ x1 ≈ x2: the
        element whose latent action moves z_v(x1) onto z_v(x2), with a score per pair (the
        relative residual on the variant channels) and the runner-up of another basin, so a
        guess or a pair the data's own symmetry leaves ambiguous is reported as such. One
        encoder pass per image, in eval mode; how the search runs is what the group and the
        action declare (:mod:`groupact.latent.estimate`; ``search``: its ``separation``,
        ``grid_size`` and ``refine_tol``). With ``polish`` a continuous group's estimate is
        then refined locally on the pixels (:func:`~groupact.latent.estimate.refine_in_images`:
        the latent finds the basin, the pixels the last fraction of a degree; the latent search
        stops at coarser steps first; scores are then the images')."""
        if x1.shape != x2.shape:
            raise GroupactError(f"the two images differ in shape: {tuple(x1.shape)} and "
                                f"{tuple(x2.shape)}; give pairs of the same size")
        was = self.training
        self.eval()
        try:
            z1, z2 = self.encode(torch.cat([x1, x2])).chunk(2)
            if not polish:
                return estimate_latent(self.action, z1, z2, self.mask.hard(), **search)
            search.setdefault("refine_tol", POLISH_LATENT_TOL)     # the pixels finish the job
            found = estimate_latent(self.action, z1, z2, self.mask.hard(), **search)
            return refine_in_images(self.group, x1, x2, found)
        finally:
            self.train(was)

    @torch.no_grad()
    def transform(self, x: Tensor, g: Tensor) -> Tensor:
        """Inference helper: T_g(x) through the latent space, in eval mode, without gradients."""
        was = self.training
        self.eval()
        try:
            return self(x, g)
        finally:
            self.train(was)
