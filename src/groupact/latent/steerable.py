"""Steerable fibres for planar rotations: ρ(θ) = R(0θ) ⊕ R(1θ) ⊕ … ⊕ R(Kθ), exact for every angle.

A fibre's last axis holds angular Fourier coefficients [c₀, Re c₁, Im c₁, …, Re c_K, Im c_K]
(2K + 1 numbers); any axes before it (rings of a polar map) are carried along. A turn by θ
multiplies c_k by e^{ikθ}: no grid, no interpolation, so the action is a representation of SO(2)
to rounding error, unlike resampling a feature map (the first SO(2) design, docs/RESULTS.md).
The nets that produce such latents are in :mod:`groupact.nets.steerable`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from groupact.errors import ConfigError
from groupact.groups import SO2, CyclicRotations, Group
from groupact.latent.actions import ACTIONS, LatentAction, Probe


def polar_grid(rings: int, angles: int, rmax: float, side: int) -> Tensor:
    """(1, rings, angles, 2) grid_sample coordinates of the polar samples of a side×side image.

    Ring i sits at radius (i + ½)·rmax/rings pixels, angle j at 2πj/angles counter-clockwise as
    displayed (x right, rows down), about the image centre — the centre of ``rotate_images``.
    """
    r = (torch.arange(rings) + 0.5) * (rmax / rings)
    phi = torch.arange(angles) * (2 * math.pi / angles)
    x = r[:, None] * torch.cos(phi)[None, :]
    y = -r[:, None] * torch.sin(phi)[None, :]        # rows grow downwards
    scale = 2.0 / side                               # pixels → [-1, 1] (align_corners=False)
    return torch.stack([x * scale, y * scale], -1)[None]


class ToPolar(nn.Module):
    """Cartesian (B, C, S, S) → polar (B, C, rings, angles) by bilinear sampling (fixed)."""

    def __init__(self, side: int, rings: int, angles: int, rmax: float):
        super().__init__()
        self.register_buffer("grid", polar_grid(rings, angles, rmax, side), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        grid = self.grid.to(x.dtype).expand(x.shape[0], -1, -1, -1)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def to_fourier(p: Tensor, frequencies: int) -> Tensor:
    """(…, angles) real samples → (…, 2K + 1) fibres [c₀, Re c₁, Im c₁, …] with c_k = Σ p e^{+ikφ}.

    A turn by θ (p(φ) → p(φ − θ)) then acts on (Re c_k, Im c_k) as R(kθ), counter-clockwise.
    """
    c = torch.fft.rfft(p, dim=-1, norm="ortho")[..., : frequencies + 1]
    pairs = torch.stack([c.real[..., 1:], -c.imag[..., 1:]], -1).flatten(-2)
    return torch.cat([c.real[..., :1], pairs], -1)


def from_fourier(f: Tensor, angles: int) -> Tensor:
    """The inverse of :func:`to_fourier`: band-limited samples at ``angles`` angles."""
    k = (f.shape[-1] - 1) // 2
    pairs = f[..., 1:].reshape(*f.shape[:-1], k, 2)
    re = torch.cat([f[..., :1], pairs[..., 0]], -1)
    im = torch.cat([torch.zeros_like(f[..., :1]), -pairs[..., 1]], -1)
    c = torch.complex(re, im)
    return torch.fft.irfft(c, n=angles, dim=-1, norm="ortho")


def fourier_rotation(f: Tensor, theta: Tensor) -> Tensor:
    """ρ(θ) = ⊕_k R(kθ) on fibres (B, C, …, 2K + 1), one angle per sample: exact for every θ."""
    k = (f.shape[-1] - 1) // 2
    shape = (-1,) + (1,) * (f.dim() - 2)
    freq = torch.arange(1, k + 1, device=f.device, dtype=f.dtype)
    ang = theta.to(f).view(*shape, 1) * freq                  # (B, 1, …, K)
    c, s = torch.cos(ang), torch.sin(ang)
    pairs = f[..., 1:].reshape(*f.shape[:-1], k, 2)
    re, im = pairs[..., 0], pairs[..., 1]
    turned = torch.stack([c * re - s * im, s * re + c * im], -1).flatten(-2)
    return torch.cat([f[..., :1], turned], -1)


class SteerableAction(LatentAction):
    """ρ(g) = ⊕_k R(kθ_g) on Fourier fibres (B, C, …, 2K + 1), for SO(2) and C_n (θ = the turn)."""

    closed_form = "fourier"

    def __init__(self, group: Group):
        if not isinstance(group, (SO2, CyclicRotations)):
            raise ConfigError(f"action.kind=steerable turns planar rotations (so2, c4, cn); got "
                              f"group '{group.name}'")
        super().__init__(group)

    def check_fibre(self, fibre):
        if not fibre or fibre[-1] % 2 == 0 or fibre[-1] < 3:
            raise ConfigError(f"action.kind=steerable needs fibres whose last axis holds 2K + 1 "
                              f"Fourier coefficients (odd, ≥ 3); the latent's fibres are {fibre} "
                              "(use model.net=steerable-polar)")

    def forward(self, z: Tensor, g: Tensor) -> Tensor:
        return fourier_rotation(z, self.group.angle(g).to(z.device))

    def reference_probe(self, generator: torch.Generator | None = None) -> Probe:
        """Polar samples of the image (14 rings × 64 angles), taken to 6 angular frequencies:
        a turn of the image turns frequency k by k·θ, up to the polar sampling."""
        x = self.group.testing_images(8, 2, generator)
        side = x.shape[-1]
        polar = ToPolar(side, 14, 64, side / 2)
        return Probe(lambda y: to_fourier(polar(y), 6), x,
                     precision="interpolated" if self.group.interpolates else "float")

    def invariants(self, z: Tensor) -> Tensor:
        """Power |c_k|² per ring and frequency, and c_k(ring r)·conj(c_k(ring r+1)) (both turn
        by the same phase, so the product does not): exactly invariant for every angle."""
        k = (z.shape[-1] - 1) // 2
        c0 = z[..., 0]
        pairs = z[..., 1:].reshape(*z.shape[:-1], k, 2)
        re, im = pairs[..., 0], pairs[..., 1]
        feats = [c0 * c0, re * re + im * im]
        if z.dim() >= 4 and z.shape[-2] > 1:          # at least two rings
            feats += [re[..., 1:, :] * re[..., :-1, :] + im[..., 1:, :] * im[..., :-1, :],
                      im[..., 1:, :] * re[..., :-1, :] - re[..., 1:, :] * im[..., :-1, :],
                      c0[..., 1:] * c0[..., :-1]]
        return torch.cat([f.flatten(1) for f in feats], 1)


ACTIONS.register("steerable", SteerableAction, "SO(2)/C_n rotation of polar Fourier "
                 "coefficients: frequency k turned by k·θ, exact for every angle")
