"""Planar groups acting on 2D images: cyclic rotations C_n, all rotations SO(2), cyclic shifts.

Angles turn images counter-clockwise as displayed (row 0 at the top), the convention of
``torch.rot90(x, 1, dims=(-2, -1))``; the tests check that SO(2) at 90° agrees with C4.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from groupact.errors import GroupactError
from groupact.groups.base import Group, apply_grouped, reduce_degrees, smooth_images


def rotation_matrix_2d(theta: Tensor) -> Tensor:
    """(B,) angles → (B, 2, 2) matrices [[cos, -sin], [sin, cos]]."""
    c, s = torch.cos(theta), torch.sin(theta)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def rotate_images(x: Tensor, theta: Tensor, mode: str = "bilinear") -> Tensor:
    """Turn each image of (B, C, H, W) by its angle about the centre, zero fill (Jin et al.)."""
    if x.shape[-1] != x.shape[-2]:
        raise GroupactError(f"rotations need square images; got {x.shape[-2]}×{x.shape[-1]}")
    theta = theta.to(x.dtype)
    c, s = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(c)
    # affine_grid maps output (x right, y down) to input coordinates: the inverse turn.
    inv = torch.stack([torch.stack([c, -s, zero], -1), torch.stack([s, c, zero], -1)], -2)
    grid = F.affine_grid(inv, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


def _parse_degrees(text: str, group: str) -> tuple[float, float]:
    """``--g`` as (the degrees typed, the same turn in [0, 360)); non-finite angles refused."""
    try:
        deg = float(text.strip().removesuffix("deg").removesuffix("°"))
    except ValueError:
        raise GroupactError(f"group '{group}' takes an angle in degrees, e.g. --g 90; "
                            f"got {text!r}") from None
    if not math.isfinite(deg):
        raise GroupactError(f"group '{group}' takes a finite angle in degrees; got {text!r}")
    return deg, reduce_degrees(deg)


def shift_phases(x: Tensor) -> Tensor:
    """(B, C, S, S) → (B, C, 4): the first Fourier coefficient along rows and along columns,
    (Re, Im) each; a cyclic shift by (dy, dx)·unit px turns them by 2π·(dy, dx)/m, which is
    :meth:`CyclicShifts.matrix`."""
    s = x.shape[-1]
    phase = torch.exp(2j * torch.pi * torch.arange(s, device=x.device) / s)
    rows = (x.sum(-1).to(phase.dtype) * phase).sum(-1)
    cols = (x.sum(-2).to(phase.dtype) * phase).sum(-1)
    return torch.stack([rows.real, rows.imag, cols.real, cols.imag], -1).to(x.dtype)


class CyclicRotations(Group):
    """C_n: turns by multiples of 360°/n. Elements are integers k (a turn of k·360°/n).

    Exact (rot90, no interpolation) when n divides 4; otherwise bilinear like SO(2).
    """

    matrix_dim = 2
    matrix_kind = "rotation"
    turns_coordinates = True

    def __init__(self, n: int = 4):
        if n < 1:
            raise GroupactError(f"C_n needs n ≥ 1; got n={n}")
        self.n = int(n)
        self.name = f"c{self.n}"
        self.exact = 4 % self.n == 0
        self.interpolates = not self.exact

    def identity(self, n, device=None):
        return torch.zeros(n, dtype=torch.long, device=device)

    def sample(self, n, generator=None, device=None):
        return torch.randint(0, self.n, (n,), generator=generator, device=device)

    def compose(self, a, b):
        return (a + b) % self.n

    def inverse(self, g):
        return (-g) % self.n

    def distance(self, a, b):
        d = (a - b) % self.n
        return torch.minimum(d, self.n - d).to(torch.float32)

    def elements(self, device=None):
        return torch.arange(self.n, device=device)

    def automorphisms(self):
        """k ↦ u·k mod n for every u coprime to n (C4: the identity and 90° ↔ 270°)."""
        units = [u for u in range(1, self.n) if math.gcd(u, self.n) == 1] or [1]
        return {("identity" if u == 1 else "inverse" if u == self.n - 1 else f"times {u}"):
                (lambda g, u=u: (u * g) % self.n) for u in units}

    def orbit_elements(self, n, device=None):
        return self.elements(device)

    def angle(self, g: Tensor) -> Tensor:
        """The turn of each element in radians."""
        return g.to(torch.float32) * (2 * math.pi / self.n)

    def act_image(self, x, g):
        self.check_input(x)
        if not self.exact:
            return rotate_images(x, self.angle(g).to(x.device))
        quarter = 4 // self.n
        return apply_grouped(x, g.to(x.device), self.n,
                             lambda xs, k: torch.rot90(xs, k * quarter, dims=(-2, -1)))

    def matrix(self, g):
        return rotation_matrix_2d(self.angle(g))

    def parse(self, text):
        typed, deg = _parse_degrees(text, self.name)
        step = 360.0 / self.n
        k = deg / step
        if abs(k - round(k)) > 1e-6:
            turned = f" ({deg:g}° after whole turns)" if typed != deg else ""
            raise GroupactError(f"group '{self.name}' turns by multiples of {step:g}°; "
                                f"got {typed:g}°{turned}")
        return torch.tensor([round(k) % self.n])

    def describe(self, g):
        return [f"{int(k) * 360 / self.n:g}°" for k in g.tolist()]

    def __repr__(self):
        return f"CyclicRotations(n={self.n})"


class SO2(Group):
    """SO(2): any turn. Elements are angles in radians in [0, 2π); bilinear, zero fill."""

    name = "so2"
    matrix_dim = 2
    matrix_kind = "rotation"
    interpolates = True
    turns_coordinates = True
    tangent_dim = 1
    #: the coarse grid of the estimate of g: 5° steps, refined from there
    search_size = 72

    def identity(self, n, device=None):
        return torch.zeros(n, device=device)

    def sample(self, n, generator=None, device=None):
        return torch.rand(n, generator=generator, device=device) * (2 * math.pi)

    def compose(self, a, b):
        return torch.remainder(a + b, 2 * math.pi)

    def inverse(self, g):
        return torch.remainder(-g, 2 * math.pi)

    def distance(self, a, b):
        d = torch.remainder(a - b, 2 * math.pi)
        return torch.minimum(d, 2 * math.pi - d)

    def automorphisms(self):
        """The continuous automorphisms of SO(2): θ ↦ θ and θ ↦ −θ."""
        return {"identity": lambda g: g, "inverse": self.inverse}

    def orbit_elements(self, n, device=None):
        return torch.arange(n, device=device, dtype=torch.float32) * (2 * math.pi / n)

    def averaging_elements(self, device=None):
        """C_8: eighth turns (exact on the latent up to bilinear resampling)."""
        return self.orbit_elements(8, device)

    def search_grid(self, n=None, device=None):
        """n equal turns; any angle lies within half a step of one."""
        n = n or self.search_size
        return self.orbit_elements(n, device), math.pi / n

    def exp_step(self, g, v):
        return torch.remainder(g + v[:, 0].to(g), 2 * math.pi)

    def angle(self, g: Tensor) -> Tensor:
        """The turn of each element in radians (the element itself), as for C_n."""
        return g.to(torch.float32)

    def act_image(self, x, g):
        self.check_input(x)
        return rotate_images(x, g.to(x.device))

    def matrix(self, g):
        return rotation_matrix_2d(g)

    def parse(self, text):
        return torch.tensor([math.radians(_parse_degrees(text, self.name)[1]) % (2 * math.pi)])

    def describe(self, g):
        return [f"{math.degrees(t):.0f}°" for t in g.tolist()]

    def to_text(self, g):
        """Degrees to 1e-3 (whole degrees in :meth:`describe` are for figures)."""
        return [f"{round(math.degrees(t), 3) + 0.0:g}°" for t in g.tolist()]


class CyclicShifts(Group):
    """Z_m × Z_m: cyclic shifts of square images by whole steps of ``unit`` pixels. Exact.

    Elements are integer pairs (dy, dx) in steps. ``size`` is the image side in pixels; on a latent
    map of side size/unit the same element shifts by (dy, dx) cells, so with ``unit`` equal to the
    encoder's stride the spatial latent action is exact too.
    """

    name = "shift"
    exact = True
    matrix_dim = 4
    matrix_kind = "rotation"
    turns_coordinates = False      # ρ turns Fourier phases, not coordinates: matrix_features

    def __init__(self, size: int = 28, unit: int = 1):
        if size % unit:
            raise GroupactError(f"shift group: image size {size} is not a multiple of unit {unit}")
        self.size, self.unit = int(size), int(unit)
        self.m = self.size // self.unit

    def identity(self, n, device=None):
        return torch.zeros(n, 2, dtype=torch.long, device=device)

    def sample(self, n, generator=None, device=None):
        return torch.randint(0, self.m, (n, 2), generator=generator, device=device)

    def compose(self, a, b):
        return (a + b) % self.m

    def inverse(self, g):
        return (-g) % self.m

    def distance(self, a, b):
        d = (a - b) % self.m
        return torch.minimum(d, self.m - d).sum(-1).to(torch.float32)

    def elements(self, device=None):
        r = torch.arange(self.m, device=device)
        return torch.cartesian_prod(r, r)

    def orbit_elements(self, n, device=None):
        dx = torch.arange(n, device=device) * max(1, self.m // n) % self.m
        return torch.stack([torch.zeros_like(dx), dx], -1)

    def _roll(self, x: Tensor, g: Tensor, cells: int) -> Tensor:
        side = self.m * cells
        if x.shape[-1] != side or x.shape[-2] != side:
            raise GroupactError(f"shift group expects {side}×{side} maps here; got "
                                f"{x.shape[-2]}×{x.shape[-1]} (set group.size/group.unit)")
        # Two batched gathers (rows, then columns) instead of a roll per sample.
        b = x.shape[0]
        idx = torch.arange(side, device=x.device)
        rows = (idx[None, :] - g[:, 0:1].to(x.device) * cells) % side  # (B, side)
        cols = (idx[None, :] - g[:, 1:2].to(x.device) * cells) % side
        x = torch.gather(x, -2, rows.view(b, 1, side, 1).expand_as(x))
        return torch.gather(x, -1, cols.view(b, 1, 1, side).expand_as(x))

    def act_image(self, x, g):
        self.check_input(x)
        return self._roll(x, g, self.unit)

    def act_map(self, z, g):
        self.check_input(z)
        return self._roll(z, g, 1)

    def matrix(self, g):
        theta = g.to(torch.float32) * (2 * math.pi / self.m)
        out = torch.zeros(g.shape[0], 4, 4, device=g.device)
        out[:, :2, :2] = rotation_matrix_2d(theta[:, 0])
        out[:, 2:, 2:] = rotation_matrix_2d(theta[:, 1])
        return out

    def testing_images(self, n, channels=1, generator=None):
        return smooth_images(n, self.size, 2, channels, generator)

    def matrix_features(self, x):
        """The first Fourier coefficient along rows and columns (:func:`shift_phases`)."""
        return shift_phases(x)

    def map_features(self, x):
        """Images pooled by ``unit``: maps of side m, on which ``act_map`` shifts by cells."""
        return F.avg_pool2d(x, self.unit)

    def parse(self, text):
        try:
            dy, dx = (int(v) for v in text.split(","))
        except ValueError:
            raise GroupactError(f"group 'shift' takes 'dy,dx' in steps of {self.unit} px, "
                                f"e.g. --g 1,-2; got {text!r}") from None
        return torch.tensor([[dy % self.m, dx % self.m]])

    def describe(self, g):
        return [f"({dy * self.unit},{dx * self.unit})px" for dy, dx in g.tolist()]

    def to_text(self, g):
        """'dy,dx' in steps of ``unit`` px (what ``--g`` takes), each the shortest way round."""
        half = self.m // 2
        signed = lambda k: k - self.m if k > half else k  # noqa: E731
        return [f"{signed(dy)},{signed(dx)}" for dy, dx in g.tolist()]

    def __repr__(self):
        return f"CyclicShifts(size={self.size}, unit={self.unit})"
