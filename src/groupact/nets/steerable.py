"""Polar-Fourier steerable encoder/decoder for SO(2): a latent whose turn is exact for every angle.

Hand-written rather than escnn/e2cnn: escnn's install needs py3nj, which needs a Fortran compiler
this machine lacks (checked: `pip download py3nj` fails in meson looking for gfortran), and a
steerable-CNN latent left on a Cartesian grid still has to be *resampled* to be turned by 30° or
137° — the inexact step that broke the first SO(2) design (docs/RESULTS.md). Here the turn never
touches a grid:

- the image is sampled on a polar grid (rings × angles about the centre); a turn of the image is
  then a cyclic shift along the angle axis;
- the encoder is a CNN on that polar image whose convolutions wrap around in angle, so it commutes
  with those shifts (exactly for whole angle steps, and nearly for fractions: L_const trains the
  rest);
- its output is taken to angular Fourier coefficients per ring: channel c, ring r, frequency k.
  A shift by θ multiplies coefficient k by e^{ikθ}, i.e. turns its (Re, Im) pair by R(kθ). So each
  channel's fibre carries ρ(θ) = R(0θ) ⊕ R(1θ) ⊕ … ⊕ R(Kθ) per ring (:class:`SteerableAction`),
  an exact representation of SO(2) for every angle, with K frequencies of angular detail;
- the decoder mirrors it: inverse Fourier transform (band-limited, so a sub-step shift stays
  exact), polar CNN, then a fixed polar → Cartesian resampling and two Cartesian convs.

The ALD mask still chooses whole channels; a channel may carry a turning digit (variant) or a
fixed block (invariant), whose coefficients simply are not multiplied by e^{ikθ}.
Fibre layout along the last axis: [c₀, Re c₁, Im c₁, …, Re c_K, Im c_K] (2K + 1 numbers).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from groupact.latent.steerable import ToPolar, from_fourier, to_fourier


def cartesian_grid(rings: int, angles: int, rmax: float, side: int) -> Tensor:
    """(1, side, side, 2) coordinates of each pixel in a polar map padded by one angle each side."""
    c = torch.arange(side) - (side - 1) / 2
    y, x = torch.meshgrid(c, c, indexing="ij")
    r = torch.sqrt(x * x + y * y)
    phi = torch.remainder(torch.atan2(-y, x), 2 * math.pi)
    u = phi / (2 * math.pi / angles) + 1.0                     # +1: the wrapped column in front
    v = r / (rmax / rings) - 0.5
    nu = 2 * u / (angles + 1) - 1                              # align_corners=True, width angles+2
    nv = 2 * v / (rings - 1) - 1
    return torch.stack([nu, nv], -1)[None]


class ToCartesian(nn.Module):
    """Polar (B, C, rings, angles) → Cartesian (B, C, S, S), wrapping in angle (fixed)."""

    def __init__(self, side: int, rings: int, angles: int, rmax: float):
        super().__init__()
        self.register_buffer("grid", cartesian_grid(rings, angles, rmax, side), persistent=False)

    def forward(self, p: Tensor) -> Tensor:
        p = torch.cat([p[..., -1:], p, p[..., :1]], -1)
        grid = self.grid.to(p.dtype).expand(p.shape[0], -1, -1, -1)
        return F.grid_sample(p, grid, mode="bilinear", padding_mode="border", align_corners=True)


class PolarConv(nn.Conv2d):
    """A k×k conv on (B, C, rings, angles): wraps around in angle, zero-pads in radius.

    Wrapping makes it commute with cyclic shifts along the angle axis, i.e. with turns.
    """

    def __init__(self, cin: int, cout: int, kernel: int = 3):
        super().__init__(cin, cout, kernel, padding=0)
        self.pad = kernel // 2

    def forward(self, x: Tensor) -> Tensor:
        p = self.pad
        x = F.pad(x, (p, p, 0, 0), mode="circular")
        x = F.pad(x, (0, 0, p, p))
        return super().forward(x)


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2)


class SteerableEncoder(nn.Module):
    """Image → (B, C, rings/2, 2K + 1): polar sampling, wrap-around convs, angular Fourier."""

    def __init__(self, in_channels: int, side: int, channels: int, widths: tuple[int, int],
                 frequencies: int, rings: int, angles: int, rmax: float):
        super().__init__()
        w1, w2 = widths
        self.frequencies = frequencies
        self.polar = ToPolar(side, rings, angles, rmax)
        self.body = nn.Sequential(
            PolarConv(in_channels, w1), _act(), PolarConv(w1, w1), _act(),
            nn.AvgPool2d(2),                                   # rings/2 × angles/2
            PolarConv(w1, w2), _act(), PolarConv(w2, channels))

    def forward(self, x: Tensor) -> Tensor:
        return to_fourier(self.body(self.polar(x)), self.frequencies)


class SteerableDecoder(nn.Module):
    """(B, C, rings/2, 2K + 1) → image: inverse Fourier, polar CNN at half resolution, ×2
    upsampling (wrapping in angle), one polar conv, polar → Cartesian, two 3×3 Cartesian convs
    (they undo the resampling's blur), sigmoid."""

    def __init__(self, out_channels: int, side: int, channels: int, widths: tuple[int, int],
                 rings: int, angles: int, rmax: float):
        super().__init__()
        w1, w2 = widths
        self.angles = angles
        self.coarse = nn.Sequential(PolarConv(channels, w2), _act(), PolarConv(w2, w1), _act())
        self.fine = nn.Sequential(PolarConv(w1, w1), _act())
        self.cartesian = ToCartesian(side, rings, angles, rmax)
        self.head = nn.Sequential(nn.Conv2d(w1, w1, 3, padding=1), _act(),
                                  nn.Conv2d(w1, out_channels, 3, padding=1), nn.Sigmoid())

    def forward(self, z: Tensor) -> Tensor:
        p = self.coarse(from_fourier(z, self.angles // 2))            # (B, w1, rings/2, A/2)
        p = F.pad(p, (1, 1, 0, 0), mode="circular")
        p = F.interpolate(p, scale_factor=2, mode="bilinear", align_corners=False)[..., 2:-2]
        return self.head(self.cartesian(self.fine(p)))


def steerable_pair(in_channels: int, side: int, channels: int, widths: tuple[int, ...],
                   frequencies: int) -> tuple[SteerableEncoder, SteerableDecoder]:
    """The encoder/decoder for side×side images: rings 1 px apart out to the corners
    (half-diagonal, so a block in a corner survives), angles about 2.25 per pixel of the
    circumference at the image's inscribed radius, a multiple of 4."""
    w = tuple(widths) if len(widths) >= 2 else (widths[0], 2 * widths[0])
    rmax = side / math.sqrt(2)
    rings = 2 * math.ceil(rmax / 2)
    angles = 4 * math.ceil(2.25 * side / 4)
    if 2 * frequencies + 1 > angles // 2:
        raise ValueError(f"{frequencies} angular frequencies need more than {angles // 2} angles")
    enc = SteerableEncoder(in_channels, side, channels, w[:2], frequencies, rings, angles, rmax)
    dec = SteerableDecoder(in_channels, side, channels, w[:2], rings, angles, rmax)
    return enc, dec
