"""The synthetic brain population ("mni152-synthetic"): deformed copies of the MNI152 template with
a binary label for simulated ventricle enlargement; held-out real subjects made the same way; and a
few axial slices per subject for the 2D recipes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from groupact.data.base import Splits, TensorSet, to_unit_float
from groupact.data.brains_real import (MATCH_PERCENTILE, REAL_BRAINS, load_real_brain,
                                       real_brain_files)
from groupact.data.cache import cached, generator_settings
from groupact.errors import DataError
from groupact.data.brain.folder import load_brain_folder
from groupact.data.brain.template import cube_at, enlarge_field, mni152_template, template_full


SYNTHETIC_NAME = "mni152-synthetic"
SYNTHETIC_SOURCE = "generated from the MNI152 2009a template bundled in nilearn"
SYNTHETIC_LABELS = {"0": "no change (normal ventricle-size variation)",
                    "1": "simulated ventricle enlargement"}
_CHUNK_POINTS = 1 << 22  # subjects × points per grid_sample call (bounds memory to ~0.6 GB)
#: part of the cache key of every volume this module generates: bump it when the bytes change
GENERATOR_VERSION = 2    # 2: float64 throughout, the same bytes on every CPU


_GENERATOR_DEFAULTS: dict[str, Any] = {
    "deform_mm": 4.0,          # std of the smooth random displacement at its control points (mm)
    "control_points": 5,       # control points per axis of that displacement
    "affine_std": 0.04,        # std of the entries of a small random linear map (≈ ±4% size/shear)
    "shift_mm": 2.0,           # std of a random translation (mm)
    "enlarge_mm": (2.5, 4.5),  # label 1: ventricle walls move out by U(lo, hi) mm
    "normal_mm": (-1.0, 1.0),  # label 0: natural variation, U(lo, hi) mm
    "smooth_mm": 7.0,          # smoothing of the ventricle mask behind the enlargement field
    "gamma_std": 0.15,         # intensity γ = exp(N(0, gamma_std))
    "gain": (0.9, 1.1),        # global intensity scale U(lo, hi)
    "bias_std": 0.1,           # smooth multiplicative bias field exp(N(0, bias_std)) at control points
    "noise": 0.02,             # Rician noise level (fraction of the [0, 1] range)
}


def _settings(kwargs: dict[str, Any]) -> dict[str, Any]:
    return generator_settings("brain", _GENERATOR_DEFAULTS, kwargs)


def randn64(*shape: int, generator: torch.Generator) -> Tensor:
    """Standard normal numbers, float64: ``torch.randn(*shape, generator=generator)`` to within
    float32 rounding, taking the same numbers from the generator, but the same bits on every CPU.

    torch's float32 normal sampler rounds differently with the instruction set the machine has
    (its AVX2/AVX-512 Box-Muller uses its own log and sincos), so the same seed gave draws a few
    ulps apart from one CPU to another, and after rendering a few voxels one grey level apart. Here
    the uniforms (exact: integers times 2⁻²⁴) come from the generator as torch.randn takes them, 16
    at a time (8 radii, 8 angles; a ragged end redrawn as 16 new ones), and the transform is done
    in float64, whose last-bit differences between CPUs stay far below a grey level.
    """
    size = math.prod(shape)
    if size < 16:   # torch draws these one at a time, in float64 already
        return torch.randn(*shape, generator=generator).double()
    u = torch.rand(size, generator=generator).double()
    tail = torch.rand(16, generator=generator).double() if size % 16 else None

    def box_muller(x: Tensor) -> Tensor:
        x = x.view(-1, 2, 8)
        radius = torch.sqrt(-2.0 * torch.log1p(-x[:, 0]))
        theta = (2.0 * math.pi) * x[:, 1]
        return torch.stack([radius * torch.cos(theta), radius * torch.sin(theta)], 1).reshape(-1)

    whole = size // 16 * 16
    out = torch.empty(size, dtype=torch.float64)
    out[:whole] = box_muller(u[:whole])
    if tail is not None:
        out[size - 16:] = box_muller(tail)
    return out.view(shape)


def _draw_subjects(n_split: Sequence[int], seed: int, s: dict[str, Any]) -> dict[str, Tensor]:
    """Per-subject random parameters (float64); they depend on the seed and counts only, not on
    the size, and not on the CPU."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([(torch.arange(m) % 2)[torch.randperm(m, generator=g)] for m in n_split])
    n = int(labels.numel())
    k = int(s["control_points"])
    u = torch.rand(n, generator=g).double()
    lo1, hi1 = s["enlarge_mm"]
    lo0, hi0 = s["normal_mm"]
    eye = torch.eye(3, dtype=torch.float64)
    return {
        "labels": labels.to(torch.int64),
        "coarse": randn64(n, 4, k, k, k, generator=g),
        "affine": eye + s["affine_std"] * randn64(n, 3, 3, generator=g),
        "shift": s["shift_mm"] * randn64(n, 3, generator=g),
        "enlarge": torch.where(labels == 1, lo1 + u * (hi1 - lo1), lo0 + u * (hi0 - lo0)),
        "gamma": torch.exp(s["gamma_std"] * randn64(n, generator=g)),
        "gain": s["gain"][0] + (s["gain"][1] - s["gain"][0]) * torch.rand(n, generator=g).double(),
    }


def _render(params: dict[str, Tensor], points: Tensor, size: int, s: dict[str, Any],
            noise_seed: int, template: Tensor | None = None, side_mm: float | None = None) -> Tensor:
    """Every subject sampled at ``points`` (M, 3) (normalised x, y, z): (N, M) uint8.

    ``template`` (size³, default the MNI152 one) is the brain every subject deforms, ``side_mm``
    its cube's side. All subjects in a chunk go through one grid_sample; chunks only bound memory
    (and set the order the noise is drawn in). Everything before the final rounding is float64:
    in float32 the rounding of matrix products, sampling and random draws changes with the CPU's
    instruction set (MKL and torch pick kernels by it), and a few voxels in a million landed on
    the other side of a grey level, so one seed made different bytes on different machines.
    """
    if template is None:
        template, _ = mni152_template(size)
        side_mm = template_full()["side_mm"]
    template = template.double()
    points = points.double()
    field = enlarge_field(float(s["smooth_mm"]))
    mm = 2.0 / float(side_mm)  # normalised units per mm
    n, m = params["labels"].numel(), points.shape[0]
    out = torch.empty(n, m, dtype=torch.uint8)
    g = torch.Generator().manual_seed(noise_seed)
    chunk = max(1, _CHUNK_POINTS // m)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        B = b - a
        p = points[None, :, None, None, :].expand(B, m, 1, 1, 3)
        coarse = F.grid_sample(params["coarse"][a:b], p, mode="bilinear", align_corners=True)
        coarse = coarse[:, :, :, 0, 0].transpose(1, 2)  # (B, M, 4)
        # subject space → template space: small affine, smooth random warp, ventricle change
        r = (points[None] @ params["affine"][a:b].transpose(1, 2)
             + mm * params["shift"][a:b, None, :] + mm * s["deform_mm"] * coarse[..., :3])
        vf = F.grid_sample(field.expand(B, -1, -1, -1, -1), r[:, :, None, None, :],
                           mode="bilinear", padding_mode="zeros", align_corners=False)
        q = r + params["enlarge"][a:b, None, None] * vf[:, :, :, 0, 0].transpose(1, 2)
        v = F.grid_sample(template[None, None].expand(B, 1, -1, -1, -1), q[:, :, None, None, :],
                          mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0, :, 0, 0]
        v = v.clamp_min(0) ** params["gamma"][a:b, None]
        v = v * params["gain"][a:b, None] * torch.exp(s["bias_std"] * coarse[..., 3])
        sigma = float(s["noise"])
        if sigma > 0:  # Rician magnitude noise, as in MR magnitude images
            n1 = randn64(B, m, generator=g)
            n2 = randn64(B, m, generator=g)
            v = torch.sqrt((v + sigma * n1) ** 2 + (sigma * n2) ** 2)
        out[a:b] = (v.clamp(0, 1) * 255).round().to(torch.uint8)
    return out


def _axis(size: int) -> Tensor:
    return (2 * torch.arange(size, dtype=torch.float32) + 1) / size - 1


def _grid_points(z: Tensor, size: int) -> Tensor:
    """(len(z)·size·size, 3) points: the axial planes at normalised heights z, full in-plane."""
    a = _axis(size)
    zz, yy, xx = torch.meshgrid(z, a, a, indexing="ij")
    return torch.stack([xx, yy, zz], dim=-1).reshape(-1, 3)


def _check_counts(n_train: int, n_val: int, n_test: int, size: int) -> None:
    if min(n_train, n_val, n_test) < 0 or n_train < 1:
        raise DataError(f"subject counts {n_train}/{n_val}/{n_test} must be >= 0 with at least one "
                        "training subject; fix data.n_train / data.n_val / data.n_test")
    if size < 4:
        raise DataError(f"volume size {size} is too small; use data.size >= 4 (e.g. 32)")


def _make_splits(arrays: dict[str, np.ndarray], counts: Sequence[int], per_subject: int,
                 info: dict[str, Any]) -> Splits:
    images = to_unit_float(arrays["images"], info["name"])[:, None]
    labels = torch.from_numpy(arrays["labels"].astype(np.int64))
    subject = torch.from_numpy(arrays["subject"].astype(np.int64))
    sets, start = [], 0
    for c in counts:
        sl = slice(start, start + c * per_subject)
        sets.append(TensorSet(images[sl], labels[sl], {"subject": subject[sl]}))
        start += c * per_subject
    return Splits(*sets, info=info)


def _synthetic_info(kind: str, settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": SYNTHETIC_NAME, "source": SYNTHETIC_SOURCE, "stand_in": True, "kind": kind,
        "how": ("each subject is the MNI152 2009a T1 template (1 mm, from nilearn's wheel) cropped to "
                "the brain, padded to a cube, averaged down once, then pulled through a small random "
                "affine map, a smooth random displacement (a coarse random field, trilinearly "
                "upsampled), and for label 1 an enlargement of the lateral ventricles (their walls "
                "pushed out by a few mm along the gradient of the smoothed ventricle mask); then a "
                "random gamma, gain and smooth bias field and Rician noise; stored as uint8"),
        "labels": SYNTHETIC_LABELS, "orientation": "(D,H,W) = (I→S, A→P, L→R)",
        "settings": settings,
    }


def load_brain3d_synthetic(n_train: int = 480, n_val: int = 60, n_test: int = 60, size: int = 32,
                           seed: int = 0, *, cache_dir: str | Path | None = None,
                           use_cache: bool = True, heldout: Sequence[str] = (),
                           heldout_root: str | Path = "/", **generator: Any) -> Splits:
    """"mni152-synthetic": a population of deformed MNI152 brains, (N, 1, size, size, size).

    ``heldout`` (names in :data:`~groupact.data.brains_real.REAL_BRAINS`) replaces the test split by
    ``n_test`` subjects deformed from those other real brains (installed by Debian packages under
    ``heldout_root``): a test of brains the model never saw. The train and validation subjects do
    not change.

    Not patient data — a stand-in so the 3D brain recipes run offline. Every subject is the MNI152
    2009a T1 template (the copy in the nilearn wheel, read with nibabel) cropped to the brain,
    padded to a cube whose inscribed ball holds the brain (so any rotation keeps it inside) and
    averaged down to ``size``³ once; then warped by a random small affine map plus a smooth random
    displacement (normal random values on a ``control_points``³ grid, trilinearly upsampled). Label 1
    (half the subjects of every split) adds ventricle enlargement: the lateral ventricles are found
    in the template as dark CSF (T1 < 80/255, grey + white matter probability < 80/255) — the two
    largest such components within 25 mm of the brain's centre — and their walls are pushed out by
    U(``enlarge_mm``) mm along the gradient of the mask smoothed with ``smooth_mm`` (label 0:
    U(``normal_mm``), normal variation); at the defaults that makes class-1 lateral ventricles about
    1.3–2.0× the template's volume and class-0 ones about 0.8–1.3×. Intensities get a random gamma,
    gain, smooth bias field and Rician noise; volumes are quantised to uint8 and cached on disk
    (see :mod:`groupact.data.cache`).
    Generation is batched over subjects (grid_sample in memory-bounded chunks) and deterministic for
    a seed; a subject's deformation does not depend on ``size``. ``generator`` overrides
    the defaults in ``_GENERATOR_DEFAULTS``.
    """
    _check_counts(n_train, n_val, n_test, size)
    s = _settings(generator)
    counts = (n_train, n_val, n_test)
    settings = {"n": list(counts), "size": size, "seed": seed, **s}

    def make() -> dict[str, np.ndarray]:
        params = _draw_subjects(counts, seed, s)
        vols = _render(params, _grid_points(_axis(size), size), size, s, seed + 1)
        return {"images": vols.view(-1, size, size, size).numpy(),
                "labels": params["labels"].numpy().astype(np.uint8),
                "subject": np.arange(sum(counts), dtype=np.int64)}

    arrays = cached(SYNTHETIC_NAME + "-3d", {**settings, "generator": GENERATOR_VERSION}, make,
                    cache_dir, enabled=use_cache)
    splits = _make_splits(arrays, counts, 1, _synthetic_info("3d volumes", settings))
    if not heldout:
        return splits
    test, about = _heldout_subjects(heldout, n_test, size, seed, s, heldout_root, cache_dir,
                                    use_cache)
    info = {**splits.info, "test": "held-out real brains, deformed by the same generator "
            "(no ventricle label: probes skip)", "heldout": about}
    return Splits(splits.train, splits.val, test, info=info)


def _heldout_subjects(names: Sequence[str], n: int, size: int, seed: int, s: dict[str, Any],
                      root: str | Path, cache_dir: str | Path | None,
                      use_cache: bool) -> tuple[TensorSet, dict[str, str]]:
    """``n`` test subjects made from the named real brains (:mod:`groupact.data.brains_real`) in
    turn, each warped, biased and noised by the population's generator (ventricles unchanged:
    these subjects have no label). A loop over the few brains, each batched over its subjects."""
    if n < 1:
        raise DataError("data.heldout needs test subjects; set data.n_test >= 1")
    names = list(dict.fromkeys(names))
    files = [real_brain_files(name, root) for name in names]
    template = template_full()["t1"]
    reference = float(np.percentile(template[template > 0], MATCH_PERCENTILE))
    settings = {"n": n, "size": size, "seed": seed, "heldout": names,
                "files": [[str(p), p.stat().st_size] for pair in files for p in pair if p],
                "reference": reference, "version": 2, "generator": GENERATOR_VERSION,
                **s}   # version 2: skull stripped before resampling

    def make() -> dict[str, np.ndarray]:
        params = _draw_subjects((n,), seed + 7919, s)
        params["enlarge"] = torch.zeros(n, dtype=torch.float64)
        brain = torch.arange(n) % len(names)
        out = torch.empty(n, size ** 3, dtype=torch.uint8)
        points = _grid_points(_axis(size), size)
        for k, (t1_path, mask_path) in enumerate(files):
            cube = load_real_brain(t1_path, mask_path, reference)
            t = cube_at(cube, size)
            pick = (brain == k).nonzero()[:, 0]
            sub = {key: v[pick] for key, v in params.items()}
            out[pick] = _render(sub, points, size, s, seed + 7920 + k, t, float(cube.shape[0]))
        return {"images": out.view(n, size, size, size).numpy(), "brain": brain.numpy()}

    arrays = cached(SYNTHETIC_NAME + "-heldout", settings, make, cache_dir, enabled=use_cache)
    images = to_unit_float(arrays["images"], "held-out brains")[:, None]
    brain = torch.from_numpy(arrays["brain"].astype(np.int64))
    about = {name: REAL_BRAINS[name].about for name in names}
    return TensorSet(images, None, {"subject": torch.arange(n), "brain": brain}), about


def ventricle_height(size: int) -> float:
    """Normalised height (D axis, in [-1, 1]) of the lateral ventricles' centre in the template."""
    _, vent = mni152_template(size)
    w = vent.double().sum(dim=(1, 2))
    return float((w * _axis(size).double()).sum() / w.sum())


def load_brain2d_slices(n_train: int = 480, n_val: int = 60, n_test: int = 60, size: int = 64,
                        seed: int = 0, *, n_slices: int = 3, spacing: int = 2,
                        path: str | Path | None = None, cache_dir: str | Path | None = None,
                        use_cache: bool = True, **generator: Any) -> Splits:
    """Axial slices (N·n_slices, 1, size, size) of brains, each carrying its subject's label.

    Without ``path`` the subjects are the mni152-synthetic population (same seed → same subjects as
    :func:`load_brain3d_synthetic`), sampled straight at ``n_slices`` axial planes ``spacing`` voxels
    apart, centred on the lateral ventricles; counts are subjects. With ``path`` the volumes of
    :func:`load_brain_folder` (its own fractions split; the counts are ignored) give their central
    slices. Slices of one subject stay in one split; ``extras['subject']`` names the subject.
    """
    if n_slices < 1 or spacing < 0:
        raise DataError(f"n_slices={n_slices}, spacing={spacing}: need n_slices >= 1, spacing >= 0")
    offsets = (torch.arange(n_slices, dtype=torch.float32) - (n_slices - 1) / 2) * spacing
    if path is not None:
        vols = load_brain_folder(path, size=size, seed=seed)
        centre = (size - 1) / 2
        idx = (centre + offsets).round().long().clamp(0, size - 1)
        sets = []
        for part in (vols.train, vols.val, vols.test):
            im = part.images[:, :, idx].permute(0, 2, 1, 3, 4).reshape(-1, 1, size, size)
            lab = part.labels.repeat_interleave(n_slices) if part.labels is not None else None
            subj = part.extras["file_index"].repeat_interleave(n_slices)
            sets.append(TensorSet(im, lab, {"subject": subj}))
        info = {**vols.info, "kind": "2d axial slices", "slices": idx.tolist()}
        return Splits(*sets, info=info)

    _check_counts(n_train, n_val, n_test, size)
    s = _settings(generator)
    counts = (n_train, n_val, n_test)
    settings = {"n": list(counts), "size": size, "seed": seed, "n_slices": n_slices,
                "spacing": spacing, **s}
    z = ventricle_height(size) + offsets * (2.0 / size)

    def make() -> dict[str, np.ndarray]:
        params = _draw_subjects(counts, seed, s)
        im = _render(params, _grid_points(z, size), size, s, seed + 2)
        n = params["labels"].numel()
        return {"images": im.view(n * n_slices, size, size).numpy(),
                "labels": params["labels"].repeat_interleave(n_slices).numpy().astype(np.uint8),
                "subject": np.repeat(np.arange(n, dtype=np.int64), n_slices)}

    arrays = cached(SYNTHETIC_NAME + "-slices", {**settings, "generator": GENERATOR_VERSION}, make,
                    cache_dir, enabled=use_cache)
    info = {**_synthetic_info("2d axial slices", settings), "slice_heights": z.tolist()}
    return _make_splits(arrays, counts, n_slices, info)


def load_brain3d(path: str | Path | None = None, **kwargs: Any) -> Splits:
    """A folder of NIfTI volumes when ``path`` is given, else the mni152-synthetic stand-in."""
    if path is not None:
        return load_brain_folder(path, **kwargs)
    return load_brain3d_synthetic(**kwargs)
