"""Channel masks: which latent channels (fibres) the group moves (1) and which it leaves alone (0).

One mask for the whole dataset, not per image. A mask returns a (C,) float tensor of hard 0/1 values;
:class:`ALDMask` routes gradients to its logits with the straight-through estimator.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from groupact.errors import ConfigError
from groupact.registry import Registry


class ChannelMask(nn.Module):
    """Base: ``forward()`` → (C,) mask, 1 = variant channel (moved by the action)."""

    channels: int

    def probabilities(self) -> Tensor:
        """Soft membership in [0, 1] (for logs and figures); equals the mask for fixed masks."""
        return self().detach()

    def hard(self) -> Tensor:
        """The 0/1 mask without any gradient path."""
        return self().detach().round()


class ALDMask(ChannelMask):
    """Adaptive Latent Disentanglement: M = 1[σ(α) > τ] with straight-through gradients.

    Forward uses the hard 0/1 mask; backward uses dσ(α)/dα, so the losses can move channels between
    the variant and invariant parts while every forward pass sees a clean split.

    Exploration (not the paper's; used only when a trainer sets it): while :attr:`draw` holds
    uniform numbers u (C,) and the module is training, the hard mask is 1[u < σ(α)], a
    Bernoulli(σ(α)) draw, so the networks meet every undecided channel in both states
    (``model.mask.sample_epochs``). :meth:`hard` and eval mode always use the threshold.
    """

    draw: Tensor | None = None

    def __init__(self, channels: int, tau: float = 0.5, init_logit: float = 0.0,
                 init_std: float = 0.01, generator: torch.Generator | None = None):
        super().__init__()
        if not 0.0 < tau < 1.0:
            raise ConfigError(f"mask.tau must lie in (0, 1); got {tau}")
        self.channels, self.tau = int(channels), float(tau)
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

    def extra_repr(self) -> str:
        return f"channels={self.channels}, tau={self.tau}"


class FixedMask(ChannelMask):
    """A hand-chosen split (Jin et al. 2024): the listed channels are variant, the rest not."""

    def __init__(self, channels: int, variant: Sequence[int]):
        super().__init__()
        self.channels = int(channels)
        bad = [c for c in variant if not 0 <= c < channels]
        if bad:
            raise ConfigError(f"mask.variant lists channels {bad} outside 0..{channels - 1}")
        m = torch.zeros(self.channels)
        m[list(variant)] = 1.0
        self.register_buffer("mask", m)

    @classmethod
    def first_fraction(cls, channels: int, fraction: float) -> "FixedMask":
        """The first round(fraction·C) channels variant: Jin et al.'s z = [z_v; z_i]."""
        if not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"mask.variant_fraction must lie in [0, 1]; got {fraction}")
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
         generator: torch.Generator | None = None, **trainer_options) -> ALDMask:
    """The learned mask; ``trainer_options`` (estimator, lr_scale, sample_epochs,
    freeze_epochs) are read by the trainer, which is why the ald entry accepts them."""
    return ALDMask(channels, tau, init_logit, init_std, generator=generator)


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

