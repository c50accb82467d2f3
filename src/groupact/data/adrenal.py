"""3D adrenal shapes: MedMNIST's AdrenalMNIST3D file, and an offline look-alike stand-in.

- :func:`load_medmnist_npz` reads a MedMNIST 3D ``.npz`` (``train_images`` … ``test_labels``; images
  (N, 28, 28, 28) uint8, labels (N, 1)) with the file's own train/val/test split. AdrenalMNIST3D is
  1,584 binary masks of adrenal glands from CT (1,188 / 98 / 298), label 0 normal, 1 adrenal mass;
  it is not bundled (no data host is reachable at run time): download it yourself (see
  :data:`ADRENAL_URL`).
- :func:`generate_adrenal_like` ("adrenal-synthetic") makes binary shapes that only *resemble*
  adrenal glands — thin folded λ-shaped sheets, some with a ball-like nodule — in exactly the same
  array layout, so one reader serves both; :func:`load_adrenal_synthetic` returns them as Splits.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from groupact.data.base import Splits, TensorSet, to_unit_float
from groupact.data.cache import cached, generator_settings
from groupact.errors import DataError
from groupact.groups.rotations3d import rodrigues
from groupact.io import atomic_write_npz, file_digest

ADRENAL_FILE = "adrenalmnist3d.npz"
ADRENAL_MD5 = "bbd3c5a5576322bc4cdfea780653b1ce"
ADRENAL_RECORD = "zenodo record 10519652"
ADRENAL_URL = "https://zenodo.org/records/10519652"
ADRENAL_LABELS = {"0": "normal", "1": "adrenal mass"}
SPLIT_NAMES = ("train", "val", "test")
SYNTHETIC_NAME = "adrenal-synthetic"
SYNTHETIC_DESCRIPTION = ("generated stand-in, not patient data: binary 3D λ-shaped thin sheets "
                         "resembling adrenal glands; label 1 adds a ball-like nodule (a 'mass') on a limb")


# --------------------------------------------------------------------------------------------
# the real file
# --------------------------------------------------------------------------------------------

def _missing_message(path: Path) -> str:
    return (f"{path} not found: download {ADRENAL_FILE} (CC BY 4.0) from {ADRENAL_RECORD} "
            f"({ADRENAL_URL}/files/{ADRENAL_FILE}), check its MD5 is {ADRENAL_MD5}, and put it at "
            f"{path} (or set data.path to where it is)")


def load_medmnist_npz(path: str | Path, *, check_md5: bool = True) -> Splits:
    """A MedMNIST 3D ``.npz`` as Splits of (N, 1, D, H, W) float32 in [0, 1], labels int64 (N,).

    ``path`` may be the file or a folder holding ``adrenalmnist3d.npz``. The file's own splits are
    kept. When the file is named exactly ``adrenalmnist3d.npz`` its MD5 is checked against the
    published one (a mismatch is an error: the file is truncated or another file).
    """
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / ADRENAL_FILE
    if not p.is_file():
        raise DataError(_missing_message(p))
    md5 = None
    if check_md5 and p.name == ADRENAL_FILE:
        md5 = file_digest(p, "md5")
        if md5 != ADRENAL_MD5:
            raise DataError(f"{p}: MD5 {md5} differs from the published {ADRENAL_MD5}; the file may "
                            f"be truncated or altered — download it again from {ADRENAL_URL} "
                            "(or rename it if it is a different file on purpose)")
    try:
        with np.load(p, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{p} is not a readable .npz file ({type(e).__name__}: {e}); "
                        f"download it again ({ADRENAL_URL})") from None
    info: dict[str, Any] = {"name": p.name.removesuffix(".npz"), "source": str(p), "stand_in": False}
    if md5 is not None:
        info["md5"] = md5
    if p.name.startswith("adrenalmnist3d"):
        info.update(labels=ADRENAL_LABELS, license="CC BY 4.0",
                    reference=f"MedMNIST v2 AdrenalMNIST3D, {ADRENAL_URL}")
    return splits_from_medmnist(arrays, str(p), info)


def splits_from_medmnist(arrays: Mapping[str, np.ndarray], where: str,
                         info: dict[str, Any] | None = None) -> Splits:
    """Check MedMNIST-3D-layout arrays (``{split}_images``, ``{split}_labels``) and make Splits."""
    sets = []
    for split in SPLIT_NAMES:
        ik, lk = f"{split}_images", f"{split}_labels"
        for k in (ik, lk):
            if k not in arrays:
                raise DataError(f"{where} has no array '{k}' (it has {sorted(arrays)}); a MedMNIST "
                                "3D file holds train/val/test _images (N, D, H, W) and _labels (N, 1)")
        im, lab = np.asarray(arrays[ik]), np.asarray(arrays[lk])
        if im.ndim == 5 and im.shape[1] == 1:
            im = im[:, 0]
        if im.ndim != 4 or min(im.shape[1:], default=0) < 1:
            raise DataError(f"{where}: '{ik}' has shape {im.shape}; expected (N, D, H, W), "
                            "e.g. (N, 28, 28, 28) uint8")
        if lab.ndim == 2 and lab.shape[1] == 1:
            lab = lab[:, 0]
        if lab.ndim != 1 or lab.shape[0] != im.shape[0]:
            raise DataError(f"{where}: '{lk}' has shape {lab.shape}; expected ({im.shape[0]}, 1), "
                            f"one label per image of '{ik}'")
        integral = np.issubdtype(lab.dtype, np.integer) or (
            np.issubdtype(lab.dtype, np.floating) and bool(np.all(lab == np.round(lab))))
        if lab.size and (not integral or lab.min() < 0):
            raise DataError(f"{where}: '{lk}' holds {lab.dtype} values from {lab.min()} to "
                            f"{lab.max()}; expected class numbers 0, 1, …")
        images = to_unit_float(im, f"{where} '{ik}'")[:, None]
        sets.append(TensorSet(images.contiguous(), torch.from_numpy(lab.astype(np.int64))))
    shapes = {tuple(s.images.shape[1:]) for s in sets if len(s)}
    if len(shapes) > 1:
        raise DataError(f"{where}: the splits have different image shapes {sorted(shapes)}")
    return Splits(*sets, info=dict(info or {}))


# --------------------------------------------------------------------------------------------
# the synthetic look-alike
# --------------------------------------------------------------------------------------------

_SHAPE_DEFAULTS: dict[str, Any] = {
    "box_mm": 64.0,             # field of view (MedMNIST: a 64 mm cube around the gland → 28³)
    "height_mm": (24.0, 44.0),  # craniocaudal extent of the gland
    "body_mm": (8.0, 16.0),     # length of the body (anterior limb)
    "limb_mm": (10.0, 22.0),    # lengths of the medial and lateral limbs
    "opening_deg": (30.0, 75.0),  # angle between the medial and lateral limbs
    "radius_mm": (1.8, 3.2),    # half-thickness of the limbs
    "bend": 0.15,               # std of a limb's bend (sideways offset of its middle / its length)
    "mass_mm": (6.0, 12.0),     # radius of the nodule (label 1)
    "scale": (0.85, 1.15),      # overall size factor
    "max_angle_deg": 30.0,      # random rotation: uniform axis, angle U(0, max_angle)
    "shift_mm": 2.0,            # std of the random offset of the gland's centre
}


def _shape_settings(kwargs: dict[str, Any]) -> dict[str, Any]:
    return generator_settings("adrenal", _SHAPE_DEFAULTS, kwargs)


def _uniform(g: torch.Generator, n: int, lo_hi, *shape: int) -> Tensor:
    lo, hi = lo_hi
    return lo + (hi - lo) * torch.rand(n, *shape, generator=g)


def _random_rotations(g: torch.Generator, n: int, max_angle: float) -> Tensor:
    """(n, 3, 3) rotations about uniform random axes by U(0, max_angle) radians."""
    axis = torch.randn(n, 3, generator=g)
    angle = max_angle * torch.rand(n, generator=g)
    return rodrigues(axis, angle)


def _draw_shapes(labels: Tensor, seed: int, s: dict[str, Any]) -> dict[str, Tensor]:
    """Per-shape random parameters (mm, radians), all drawn up front: chunking cannot change them."""
    g = torch.Generator().manual_seed(seed)
    n = labels.numel()
    half = torch.deg2rad(_uniform(g, n, s["opening_deg"])) / 2
    front = torch.deg2rad(20 * torch.randn(n, generator=g))  # the body points to +y, ± 20°
    back = torch.deg2rad(15 * torch.randn(n, generator=g))   # the limbs' mean direction: −y, ± 15°
    angles = torch.stack([math.pi / 2 + front, -math.pi / 2 + back + half,
                          -math.pi / 2 + back - half], dim=1)
    lengths = torch.cat([_uniform(g, n, s["body_mm"], 1), _uniform(g, n, s["limb_mm"], 2)], dim=1)
    return {
        "labels": labels,
        "height": _uniform(g, n, s["height_mm"]),
        "junction": 2.0 * torch.randn(n, 2, generator=g),    # (x, y) at mid-height
        "drift": 4.0 * torch.randn(n, 2, generator=g),       # junction moves by this top to bottom
        "angle": angles,                                       # (n, 3) body, medial, lateral
        "length": lengths,                                     # (n, 3)
        "bend": s["bend"] * torch.randn(n, 3, generator=g),
        "centre": torch.stack([_uniform(g, n, (0.55, 0.85)), _uniform(g, n, (0.25, 0.55)),
                               _uniform(g, n, (0.25, 0.55))], dim=1),  # where each limb is longest
        "width": _uniform(g, n, (0.35, 0.7), 3),              # how fast it shortens away from there
        "radius": _uniform(g, n, s["radius_mm"]),
        "mass_limb": torch.randint(0, 3, (n,), generator=g),
        "mass_t": _uniform(g, n, (0.3, 0.9)),
        "mass_s": _uniform(g, n, (0.3, 0.7)),
        "mass_radius": _uniform(g, n, s["mass_mm"]),
        "mass_axes": _uniform(g, n, (0.85, 1.15), 3),
        "mass_offset": torch.randn(n, 3, generator=g),
        "scale": _uniform(g, n, s["scale"]),
        "rotation": _random_rotations(g, n, math.radians(s["max_angle_deg"])),
        "mirror": torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0),  # left or right gland
        "shift": s["shift_mm"] * torch.randn(n, 3, generator=g),
    }


def _limb_points(p: dict[str, Tensor], k: int, sz: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Junction, middle and tip (B, 2) of limb k at one height sz (B,) per shape."""
    ang, length = p["angle"][:, k], p["length"][:, k]
    u = torch.stack([torch.cos(ang), torch.sin(ang)], dim=-1)
    perp = torch.stack([-u[:, 1], u[:, 0]], dim=-1)
    L = (length * torch.exp(-((sz - p["centre"][:, k]) / p["width"][:, k]) ** 2))[:, None]
    j = p["junction"] + (sz - 0.5)[:, None] * p["drift"]
    return j, j + L * (0.5 * u + p["bend"][:, k, None] * perp), j + L * u


def _render_shapes(p: dict[str, Tensor], size: int, box_mm: float) -> Tensor:
    """(B, size³) bool: every shape of a chunk evaluated on all voxel centres at once.

    A limb is the polyline junction → middle → tip with middle = j + L·w1 and tip = j + L·u, where
    the junction j and length L depend on the height; the squared distance to each segment is
    written in closed form in terms of per-shape constants, so each step is one batched (B, V) op.
    """
    a = ((2 * torch.arange(size, dtype=torch.float32) + 1) / size - 1) * (box_mm / 2)
    zz, yy, xx = torch.meshgrid(a, a, a, indexing="ij")  # (D, H, W) = (z, y, x)
    grid = torch.stack([xx, yy, zz], dim=-1).reshape(-1, 3)  # (V, 3) mm
    # voxel → canonical gland coordinates: q = diag(mirror, 1, 1) · Rᵀ (x − shift) / scale
    B = p["scale"].shape[0]
    flip = torch.ones(B, 3)
    flip[:, 0] = p["mirror"]
    R = p["rotation"] * (flip / p["scale"][:, None])[:, None, :]  # scales the columns of R
    q = (grid[None] @ R - (p["shift"][:, None, :] @ R)).permute(2, 0, 1).contiguous()
    qx, qy, qz = q[0], q[1], q[2]  # (B, V) each
    sz = qz / p["height"][:, None] + 0.5  # 0 at the bottom of the gland, 1 at the top
    dx = qx - p["junction"][:, 0, None] - (sz - 0.5) * p["drift"][:, 0, None]
    dy = qy - p["junction"][:, 1, None] - (sz - 0.5) * p["drift"][:, 1, None]
    dd = dx * dx + dy * dy
    best = None
    for k in range(3):  # three limbs; each step is batched over shapes and voxels
        ang = p["angle"][:, k]
        ux, uy = torch.cos(ang), torch.sin(ang)
        b = p["bend"][:, k]
        w1x, w1y = 0.5 * ux - b * uy, 0.5 * uy + b * ux  # junction → middle, per unit length
        w2x, w2y = ux - w1x, uy - w1y                     # middle → tip
        n1, n2 = w1x ** 2 + w1y ** 2, w2x ** 2 + w2y ** 2
        w12 = w1x * w2x + w1y * w2y
        col = lambda v: v[:, None]  # noqa: E731
        L = col(p["length"][:, k]) * torch.exp(-((sz - col(p["centre"][:, k]))
                                                 / col(p["width"][:, k])) ** 2)
        c1 = dx * col(w1x) + dy * col(w1y)
        m1 = torch.minimum((c1 / col(n1)).clamp_min(0), L)
        d1 = dd - m1 * (2 * c1 - m1 * col(n1))
        c2 = dx * col(w2x) + dy * col(w2y) - L * col(w12)
        m2 = torch.minimum((c2 / col(n2)).clamp_min(0), L)
        e2 = dd - L * (2 * c1 - L * col(n1))  # |d − L·w1|²
        d2 = e2 - m2 * (2 * c2 - m2 * col(n2))
        d = torch.minimum(d1, d2)
        best = d if best is None else torch.minimum(best, d)
    # half-thickness, rounded off at the top and bottom (zero outside 0 <= sz <= 1)
    r2 = p["radius"][:, None] ** 2 * (1 - (2 * sz - 1) ** 4).clamp_min(0)
    inside = best < r2
    # the nodule (label 1): an ellipsoid centred on (or just off) a point of one limb
    ms, t = p["mass_s"], p["mass_t"][:, None]
    centre_xy = torch.zeros(B, 2)
    for k in range(3):
        j, mid, tip = _limb_points(p, k, ms)
        on = torch.where(t < 0.5, j + (mid - j) * (2 * t), mid + (tip - mid) * (2 * t - 1))
        centre_xy = torch.where((p["mass_limb"] == k)[:, None], on, centre_xy)
    radius = p["mass_radius"]
    centre = torch.cat([centre_xy, ((ms - 0.5) * p["height"])[:, None]], dim=1)
    centre = centre + 0.25 * radius[:, None] * p["mass_offset"]
    axes = radius[:, None] * p["mass_axes"]
    ball = sum(((q[i] - centre[:, i, None]) / axes[:, i, None]) ** 2 for i in range(3)) < 1
    return inside | (ball & (p["labels"] == 1)[:, None])


def _split_labels(counts, mass_fraction: float, g: torch.Generator) -> Tensor:
    parts = []
    for m in counts:
        lab = (torch.arange(m) < int(round(mass_fraction * m))).to(torch.int64)
        parts.append(lab[torch.randperm(m, generator=g)])
    return torch.cat(parts)


def generate_adrenal_like(n_train: int = 1188, n_val: int = 98, n_test: int = 298, size: int = 28,
                          seed: int = 0, *, mass_fraction: float = 0.5,
                          path: str | Path | None = None, cache_dir: str | Path | None = None,
                          use_cache: bool = True, **shape: Any) -> dict[str, np.ndarray]:
    """"adrenal-synthetic": binary adrenal-gland look-alikes in AdrenalMNIST3D's array layout.

    Returns (and, given ``path``, also writes as ``.npz``) ``train_images`` (n_train, size, size,
    size) uint8 0/255, ``train_labels`` (n_train, 1) uint8, and the same for val and test — the
    layout of MedMNIST's file, so :func:`load_medmnist_npz` reads it too. Defaults match the real
    file's sizes (1,188 / 98 / 298 at 28³).

    Each shape is a thin folded sheet with a λ-shaped cross-section in the axial plane, in a 64 mm
    box like MedMNIST's crop: a body (pointing forwards) and a medial and a lateral limb (pointing
    backwards, opened by ``opening_deg``), each a bent two-segment polyline whose junction drifts and
    whose length swells and shrinks along the craniocaudal axis; a voxel is inside when its in-plane
    distance to a limb is below the half-thickness ``radius_mm`` (rounded off at the top and
    bottom). Label 1 ("mass", ``mass_fraction`` of every split) adds an ellipsoidal nodule of radius
    ``mass_mm`` centred near a random point of a random limb. Then a random left/right mirror,
    rotation (up to ``max_angle_deg``), size factor and offset. Every step is a batched distance
    evaluation over all voxels of a chunk of shapes (loops run over the three limbs only).
    The shapes resemble adrenal masks in form and size only; they are not patient data.
    """
    if min(n_train, n_val, n_test) < 0 or n_train < 1:
        raise DataError(f"shape counts {n_train}/{n_val}/{n_test} must be >= 0 with at least one "
                        "training shape; fix data.n_train / data.n_val / data.n_test")
    if size < 4:
        raise DataError(f"volume size {size} is too small; use data.size >= 4 (e.g. 28)")
    if not 0 <= mass_fraction <= 1:
        raise DataError(f"mass_fraction {mass_fraction} must lie in [0, 1]")
    s = _shape_settings(shape)
    counts = (n_train, n_val, n_test)
    settings = {"n": list(counts), "size": size, "seed": seed, "mass_fraction": mass_fraction, **s}

    def make() -> dict[str, np.ndarray]:
        g = torch.Generator().manual_seed(seed)
        labels = _split_labels(counts, mass_fraction, g)
        params = _draw_shapes(labels, seed + 1, s)
        n, v = labels.numel(), size ** 3
        vols = torch.empty(n, v, dtype=torch.uint8)
        chunk = max(1, (1 << 21) // v)
        for a in range(0, n, chunk):
            part = {k: t[a:a + chunk] for k, t in params.items()}
            vols[a:a + chunk] = _render_shapes(part, size, float(s["box_mm"])).to(torch.uint8) * 255
        vols = vols.view(n, size, size, size).numpy()
        out, start = {}, 0
        for name, c in zip(SPLIT_NAMES, counts):
            out[f"{name}_images"] = vols[start:start + c]
            out[f"{name}_labels"] = labels[start:start + c, None].numpy().astype(np.uint8)
            start += c
        return out

    arrays = cached(SYNTHETIC_NAME, settings, make, cache_dir, enabled=use_cache)
    if path is not None:
        save_npz(path, arrays)
    return arrays


def save_npz(path: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write arrays as a compressed ``.npz`` atomically (io.atomic_write_npz)."""
    p = Path(path).expanduser()
    atomic_write_npz(p, arrays)
    return p


def load_adrenal_synthetic(n_train: int = 1188, n_val: int = 98, n_test: int = 298, size: int = 28,
                           seed: int = 0, *, mass_fraction: float = 0.5,
                           cache_dir: str | Path | None = None, use_cache: bool = True,
                           **shape: Any) -> Splits:
    """:func:`generate_adrenal_like` read through the same code path as the real MedMNIST file."""
    arrays = generate_adrenal_like(n_train, n_val, n_test, size, seed, mass_fraction=mass_fraction,
                                   cache_dir=cache_dir, use_cache=use_cache, **shape)
    settings = {"n": [n_train, n_val, n_test], "size": size, "seed": seed,
                "mass_fraction": mass_fraction, **_shape_settings(shape)}
    info = {"name": SYNTHETIC_NAME, "source": "generated by groupact.data.adrenal.generate_adrenal_like",
            "stand_in": True, "description": SYNTHETIC_DESCRIPTION, "labels": ADRENAL_LABELS,
            "real_data": f"AdrenalMNIST3D: {ADRENAL_FILE} from {ADRENAL_RECORD} ({ADRENAL_URL})",
            "settings": settings}
    return splits_from_medmnist(arrays, SYNTHETIC_NAME, info)


def load_adrenal3d(path: str | Path | None = None, **kwargs: Any) -> Splits:
    """The real AdrenalMNIST3D file when ``path`` is given, else the adrenal-synthetic stand-in."""
    if path is not None:
        return load_medmnist_npz(path, **kwargs)
    return load_adrenal_synthetic(**kwargs)
