"""Rotations of volumes: all rotations SO(3) and the 24 rotations of the cube (exact).

Coordinate convention (one for the whole library, checked by the tests):

- A rotation matrix R acts on *centred voxel coordinates in index order* p = (d, h, w), i.e. the
  three spatial axes of a (B, C, D, H, W) tensor, with the origin at the volume's centre.
- T_R moves content along R: (T_R x)(p) = x(R⁻¹ p). Hence T_a(T_b x) = T_{a·b} x.
- Angles follow the right-hand rule in (d, h, w): a +90° turn about axis d takes h to w, which is
  ``torch.rot90(x, 1, dims=(-2, -1))`` on every d-slice, i.e. the planar groups' turn of each slice.
  Likewise +90° about h takes w to d (``dims=(-1, -3)``), about w takes d to h (``dims=(-3, -2)``).
- Axis–angle text is "ad,ah,aw,degrees", e.g. "1,0,0,90" for a quarter turn about the d axis.

``F.affine_grid`` works in (x, y, z) = (w, h, d) order and maps *output* to *input* coordinates,
so :func:`rotate_volumes` passes it the reversed-order inverse, rescaled to normalised units.

This module is the library's one home for 3D rotation maths (the groups, the renderer's poses and
the adrenal generator all use it). It is written in torch rather than taken from scipy's
``Rotation``: the group operations run inside training on batched tensors on any device, with
gradients, where scipy is numpy on the CPU. scipy's ``Rotation`` is the tests' reference for every
conversion here (tests/test_groups_3d.py).
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from groupact.errors import GroupactError
from groupact.groups.base import Group, apply_grouped, reduce_degrees


# --- matrices ---------------------------------------------------------------------------------
def quaternion_to_matrix(q: Tensor) -> Tensor:
    """(B, 4) quaternions (w, x, y, z), vector part in (d, h, w) coordinates → (B, 3, 3).

    q need not be unit length: it is normalised first, so q and −q give the same rotation.
    """
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    return torch.stack([torch.stack(r, -1) for r in rows], -2)


def haar_rotations(n: int, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> Tensor:
    """n rotation matrices (n, 3, 3) float32 from the uniform (Haar) distribution on SO(3), drawn
    in float64 (a normal 4-vector, normalised, is uniform on S³; the double cover S³ → SO(3)
    carries that to the Haar measure). The data generators' poses; :meth:`SO3.sample` is the
    group's own (float32, on the device)."""
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    return quaternion_to_matrix(q).to(torch.float32).to(device or "cpu")


def axis_angle_to_matrix(axis: Tensor, angle: Tensor) -> Tensor:
    """(B, 3) axes in (d, h, w) (any nonzero length) and (B,) radians → (B, 3, 3), right-handed."""
    axis = axis / axis.norm(dim=-1, keepdim=True)
    half = (angle / 2).unsqueeze(-1)
    return quaternion_to_matrix(torch.cat([torch.cos(half), torch.sin(half) * axis], -1))


def rodrigues(axis: Tensor, angle: Tensor) -> Tensor:
    """(B, 3) axes and (B,) radians → (B, 3, 3) by Rodrigues' formula I + sin θ K + (1 − cos θ) K².

    The same rotations as :func:`axis_angle_to_matrix`, rounded differently (≈1e-7 in float32).
    Kept because the adrenal generator has always used this form: it keeps the adrenal-synthetic
    shapes, and so the data fingerprints of runs trained on them (pretrained/adrenal3d, the
    adrenal rows of results/), bitwise the same: the other form changes the shapes' bytes, and
    those runs' fingerprints would refuse their own data.
    """
    axis = axis / axis.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    k = torch.zeros(*axis.shape[:-1], 3, 3, dtype=axis.dtype, device=axis.device)
    k[..., 0, 1], k[..., 0, 2], k[..., 1, 2] = -axis[..., 2], axis[..., 1], -axis[..., 0]
    k = k - k.transpose(-1, -2)
    s, c = torch.sin(angle)[..., None, None], torch.cos(angle)[..., None, None]
    eye = torch.eye(3, dtype=axis.dtype, device=axis.device)
    return eye + s * k + (1 - c) * (k @ k)


def _vee(r: Tensor) -> Tensor:
    """The vector v of the skew part: R − Rᵀ = 2·[v]×, and v = sin θ · axis."""
    return 0.5 * torch.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0],
                              r[..., 1, 0] - r[..., 0, 1]], -1)


def rotation_angle(r: Tensor) -> Tensor:
    """The angle θ ∈ [0, π] of each rotation, via atan2(sin, cos): accurate near 0 and π alike,
    where acos of the trace loses half the digits."""
    cos = (r.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    return torch.atan2(_vee(r).norm(dim=-1), cos)


def matrix_to_axis_angle(r: Tensor) -> tuple[Tensor, Tensor]:
    """(B, 3, 3) → unit axes (B, 3) and angles (B,) in [0, π]; axis (1, 0, 0) for the identity.

    Beyond 90° the axis comes from the symmetric part (R + Rᵀ)/2 − cos θ·I = (1 − cos θ)·n nᵀ,
    which stays well conditioned up to θ = π, where the skew part vanishes.
    """
    angle = rotation_angle(r)
    v = _vee(r)
    small = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    cos = torch.cos(angle)
    sym = (r + r.transpose(-1, -2)) / 2 - cos[..., None, None] * torch.eye(3, dtype=r.dtype,
                                                                           device=r.device)
    col = sym.diagonal(dim1=-2, dim2=-1).argmax(-1)
    big = torch.gather(sym, -1, col[..., None, None].expand(*sym.shape[:-1], 1)).squeeze(-1)
    big = big / big.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    big = torch.where((big * v).sum(-1, keepdim=True) < 0, -big, big)
    axis = torch.where((cos < 0)[..., None], big, small)
    default = torch.tensor([1.0, 0.0, 0.0], dtype=r.dtype, device=r.device).expand_as(axis)
    axis = torch.where((angle < 1e-7)[..., None], default, axis)
    return axis, angle


def super_fibonacci_rotations(n: int, device: torch.device | str | None = None) -> Tensor:
    """n rotations (n, 3, 3) spread evenly over SO(3), deterministically: the super-Fibonacci
    spiral of unit quaternions (Alexa, CVPR 2022, Algorithm 1). Written out because scipy's
    ``Rotation`` makes only random draws or the small point groups (60 rotations at most), and
    a coarse search needs an even grid of any size; the covering radius is measured in
    tests/test_estimate_g.py."""
    s = torch.arange(n, dtype=torch.float64) + 0.5
    t = s / n
    r, big_r = torch.sqrt(t), torch.sqrt(1 - t)
    alpha = 2 * math.pi * s / math.sqrt(2)
    beta = 2 * math.pi * s / 1.533751168755204288118041     # the real root of x⁴ = x + 4
    q = torch.stack([r * torch.sin(alpha), r * torch.cos(alpha),
                     big_r * torch.sin(beta), big_r * torch.cos(beta)], -1)
    return quaternion_to_matrix(q).to(torch.float32).to(device or "cpu")


def rotation_vector_to_matrix(v: Tensor) -> Tensor:
    """(B, 3) rotation vectors (axis × angle in radians, (d, h, w)) → (B, 3, 3), smooth at 0
    (the exponential map of SO(3))."""
    angle = v.norm(dim=-1, keepdim=True)
    half_sinc = 0.5 * torch.sinc(angle / (2 * math.pi))        # sin(θ/2)/θ, → ½ at θ = 0
    return quaternion_to_matrix(torch.cat([torch.cos(angle / 2), half_sinc * v], -1))


# --- the action on volumes --------------------------------------------------------------------
def rotate_volumes(x: Tensor, r: Tensor, mode: str = "bilinear") -> Tensor:
    """Turn each volume of (B, C, D, H, W) by its (B, 3, 3) matrix about the centre, zero fill.

    ``mode="bilinear"`` is trilinear for 5-D input. Voxels are taken as isotropic, so volumes
    need not be cubes (content rotated out of a box is lost, like the corners of any turn).
    """
    if x.dim() != 5:
        raise GroupactError(f"3D rotations act on volumes (B, C, D, H, W); got {tuple(x.shape)}")
    r = r.to(device=x.device, dtype=x.dtype)
    # Output voxel q (normalised, xyz order) samples the input at S⁻¹·P·Rᵀ·P·S·q, where P reverses
    # (d, h, w) ↔ (x, y, z) and S = half the side lengths turns normalised units into voxels.
    inv_xyz = r.transpose(-1, -2).flip(-1).flip(-2)
    half = torch.tensor([x.shape[-1], x.shape[-2], x.shape[-3]], dtype=x.dtype,
                        device=x.device) / 2
    theta = inv_xyz * half[None, None, :] / half[None, :, None]
    theta = torch.cat([theta, torch.zeros_like(theta[..., :1])], -1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


# --- text -------------------------------------------------------------------------------------
def _parse_axis_angle(text: str, group: str) -> Tensor:
    """'ad,ah,aw,degrees' → one (1, 3, 3) matrix."""
    hint = (f"group '{group}' takes an axis in (d,h,w) order and an angle in degrees, "
            f"e.g. --g 1,0,0,90; got {text!r}")
    parts = text.split(",")
    if len(parts) != 4:
        raise GroupactError(hint)
    parts[-1] = parts[-1].strip().removesuffix("deg").removesuffix("°")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise GroupactError(hint) from None
    if not all(math.isfinite(v) for v in values):
        raise GroupactError(f"group '{group}' takes finite numbers; got {text!r}")
    if not any(values[:3]):
        raise GroupactError(f"group '{group}': the axis 0,0,0 has no direction; give a nonzero "
                            f"axis, e.g. --g 1,0,0,90; got {text!r}")
    axis = torch.tensor([unit_axis(values[:3])], dtype=torch.float64)
    angle = torch.tensor([math.radians(reduce_degrees(values[3]))], dtype=torch.float64)
    return axis_angle_to_matrix(axis, angle).to(torch.float32)


def unit_axis(axis: list[float]) -> list[float]:
    """A nonzero finite axis scaled to length 1 in float64 without overflow or underflow.

    Dividing by the largest entry first keeps the squares in range: the norm of (1e200, 0, 0)
    computed directly is inf (and the axis becomes 0, the identity), of (1e-200, 0, 0) it is 0.
    """
    big = max(abs(v) for v in axis)
    scaled = [v / big for v in axis]
    norm = math.sqrt(sum(v * v for v in scaled))
    return [v / norm for v in scaled]


def _describe_axis_angle(r: Tensor, digits: int = 4) -> list[str]:
    """Labels 'ad,ah,aw,θ°' that :func:`_parse_axis_angle` reads back; the axis is scaled so its
    largest entry is ±1, which prints the cube's axes as small integers ('1,1,1,120°'), rounded
    to ``digits`` decimals (the angle to one fewer)."""
    axis, angle = matrix_to_axis_angle(r.to(torch.float64))
    axis = axis / axis.abs().amax(-1, keepdim=True)
    out = []
    for a, t in zip(axis.tolist(), angle.tolist()):
        comps = ",".join(f"{round(v, digits) + 0.0:.{digits + 2}g}" for v in a)
        out.append(f"{comps},{round(math.degrees(t), digits - 1) + 0.0:.{digits + 3}g}°")
    return out


# --- groups -----------------------------------------------------------------------------------
class SO3(Group):
    """SO(3): any rotation of a volume. Elements are (B, 3, 3) float matrices; trilinear, zero fill.

    Sampling is Haar: a normal 4-vector, normalised, is uniform on the unit quaternions, and the
    double cover S³ → SO(3) carries that uniform measure to the Haar measure.
    """

    name = "so3"
    spatial_dims = 3
    matrix_dim = 3
    matrix_kind = "rotation"
    interpolates = True
    turns_coordinates = True
    tangent_dim = 3
    #: the coarse grid of the estimate of g (super-Fibonacci; covering radius about 21°)
    search_size = 1024

    def identity(self, n, device=None):
        return torch.eye(3, device=device).expand(n, 3, 3).clone()

    def sample(self, n, generator=None, device=None):
        q = torch.randn(n, 4, generator=generator, device=device)
        return quaternion_to_matrix(q)

    def compose(self, a, b):
        return a @ b

    def inverse(self, g):
        return g.transpose(-1, -2)

    def distance(self, a, b):
        return rotation_angle(a @ b.transpose(-1, -2))

    def orbit_elements(self, n, device=None):
        """n equal turns about the d axis: each d-slice turns like a planar SO(2) orbit."""
        angle = torch.arange(n, device=device, dtype=torch.float32) * (2 * math.pi / n)
        axis = torch.tensor([[1.0, 0.0, 0.0]], device=device).expand(n, 3)
        return axis_angle_to_matrix(axis, angle)

    def averaging_elements(self, device=None):
        """The 24 cube rotations as matrices: a finite subgroup that resamples exactly."""
        return _cube_matrices().to(device=device, dtype=torch.float32)

    def search_grid(self, n=None, device=None):
        """n super-Fibonacci rotations (:func:`super_fibonacci_rotations`) and their covering
        radius, 3.75·n^(−1/3) radians (the largest gap measured from 4,000 Haar draws: 26.6°
        at n = 512, 20.9° at 1,024, 16.8° at 2,048)."""
        n = n or self.search_size
        return super_fibonacci_rotations(n, device), 3.75 * n ** (-1 / 3)

    def exp_step(self, g, v):
        return rotation_vector_to_matrix(v.to(g)) @ g

    def act_image(self, x, g):
        self.check_input(x)
        return rotate_volumes(x, g)

    def matrix(self, g):
        return g.to(torch.float32)

    def parse(self, text):
        return _parse_axis_angle(text, self.name)

    def describe(self, g):
        return _describe_axis_angle(g)

    def to_text(self, g):
        """Axis to 6 decimals, angle to 5 (:meth:`describe` rounds for figures)."""
        return _describe_axis_angle(g, 6)


def _cube_matrices() -> Tensor:
    """The 24 signed permutation matrices with det +1, in a fixed order; the identity first."""
    mats = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            m = torch.zeros(3, 3, dtype=torch.float64)
            m[range(3), perm] = torch.tensor(signs, dtype=torch.float64)
            if torch.linalg.det(m) > 0:
                mats.append(m)
    return torch.stack(mats)


class CubeRotations(Group):
    """The 24 rotations of the cube, exactly: permutations and flips of the voxel axes.

    Elements are integer indices 0..23 (0 = identity) into :attr:`matrices`; products and inverses
    come from tables built once from the matrices. The action uses the same convention as
    :class:`SO3` (the tests check all 24 against trilinear resampling) but moves voxels without
    interpolation, so acting twice equals acting once with the product, bit for bit.
    """

    name = "cube"
    exact = True
    spatial_dims = 3
    matrix_dim = 3
    matrix_kind = "rotation"
    turns_coordinates = True
    order = 24

    def __init__(self):
        mats = _cube_matrices()
        #: (24, 3, 3) float64 signed permutation matrices in (d, h, w) coordinates
        self.matrices = mats
        self.cayley = self.index_of(mats[:, None] @ mats[None])  # cayley[a, b] = index of a·b
        self.inverses = (self.cayley == 0).to(torch.long).argmax(-1)
        self.angles = rotation_angle(mats).to(torch.float32)
        # R[i, perm[i]] = sign[i]: (T_R x)[p] = x[q] with q[perm[i]] = sign[i]·p[i] (centred), so
        # T_R x = x permuted by perm, then flipped along the axes with sign −1.
        self._perms = [tuple(2 + int(j) for j in row.abs().argmax(-1)) for row in mats]
        self._flips = [tuple(2 + i for i in range(3) if float(row[i].sum()) < 0) for row in mats]

    def index_of(self, m: Tensor) -> Tensor:
        """The indices of cube rotation matrices (…, 3, 3), e.g. from :func:`axis_angle_to_matrix`;
        a GroupactError for any matrix more than 1e-3 from all 24."""
        table = self.matrices.to(device=m.device, dtype=torch.float64)
        gap = (m.to(torch.float64)[..., None, :, :] - table).abs().amax((-2, -1))
        best, idx = gap.min(-1)
        if bool((best > 1e-3).any()):
            raise GroupactError("not one of the 24 cube rotations (quarter turns about a face "
                                "axis, third turns about a corner axis, half turns about a face "
                                "or edge axis)")
        return idx

    def identity(self, n, device=None):
        return torch.zeros(n, dtype=torch.long, device=device)

    def sample(self, n, generator=None, device=None):
        return torch.randint(0, self.order, (n,), generator=generator, device=device)

    def compose(self, a, b):
        return self.cayley.to(a.device)[a, b]

    def inverse(self, g):
        return self.inverses.to(g.device)[g]

    def distance(self, a, b):
        """The rotation angle of a·b⁻¹ (radians), as :meth:`SO3.distance` on the matrices."""
        return self.angles.to(a.device)[self.compose(a, self.inverse(b))]

    def elements(self, device=None):
        return torch.arange(self.order, device=device)

    def orbit_elements(self, n, device=None):
        """The four quarter turns about the d axis first (a readable strip), then the rest."""
        quarter = int(self.index_of(axis_angle_to_matrix(torch.tensor([[1.0, 0.0, 0.0]]),
                                                         torch.tensor([math.pi / 2])))[0])
        cycle = [0]
        for _ in range(3):
            cycle.append(int(self.cayley[quarter, cycle[-1]]))
        rest = [k for k in range(self.order) if k not in cycle]
        return torch.tensor(cycle + rest, device=device)[:n]

    def act_image(self, x, g):
        self.check_input(x)
        if not x.shape[-1] == x.shape[-2] == x.shape[-3]:
            raise GroupactError(f"cube rotations need cubic volumes; got "
                                f"{x.shape[-3]}×{x.shape[-2]}×{x.shape[-1]}")

        def turn(xs: Tensor, k: int) -> Tensor:
            xs = xs.permute(0, 1, *self._perms[k])
            return xs.flip(self._flips[k]) if self._flips[k] else xs

        return apply_grouped(x, g.to(x.device), self.order, turn)

    def matrix(self, g):
        return self.matrices.to(device=g.device, dtype=torch.float32)[g]

    def parse(self, text):
        return self.index_of(_parse_axis_angle(text, self.name))

    def describe(self, g):
        return _describe_axis_angle(self.matrices[g.cpu()])

    def __repr__(self):
        return "CubeRotations()"
