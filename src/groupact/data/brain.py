"""3D brain MRI: a loader for a folder of NIfTI volumes, and an offline stand-in made from MNI152.

Volumes are (N, 1, D, H, W) float32 in [0, 1] in one orientation for both sources, the NIfTI data
reoriented to RAS first: D runs inferior→superior, H anterior→posterior, W left→right, so
``images[:, 0, d]`` is an axial slice that shows the front of the head at the top.

- :func:`load_brain_folder` reads real T1 volumes a user has (``.nii`` / ``.nii.gz``), with optional
  labels from ``labels.csv`` (``filename,label``).
- :func:`load_brain3d_synthetic` ("mni152-synthetic") is an honest stand-in, not patient data: a
  population of deformed copies of the MNI152 2009a T1 template that ships inside the nilearn wheel,
  with a binary label for simulated ventricle enlargement. It needs no network.
- :func:`load_brain2d_slices` gives a few axial slices per subject (for the 2D contrast recipes).
"""

from __future__ import annotations

import csv
import functools
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from groupact.data.base import Splits, TensorSet, split_indices, to_unit_float
from groupact.data.brains_real import (MATCH_PERCENTILE, REAL_BRAINS, ball_cube, load_real_brain,
                                       real_brain_files)
from groupact.data.cache import cached, generator_settings
from groupact.data.nifti import NIFTI_SUFFIXES, import_nibabel, read_nifti, resample_volumes
from groupact.errors import DataError

TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
SYNTHETIC_NAME = "mni152-synthetic"
SYNTHETIC_SOURCE = "generated from the MNI152 2009a template bundled in nilearn"
SYNTHETIC_LABELS = {"0": "no change (normal ventricle-size variation)",
                    "1": "simulated ventricle enlargement"}
_FIELD_RES = 64          # grid on which the ventricle-enlargement field is stored (≈3 mm voxels)
_CHUNK_POINTS = 1 << 22  # subjects × points per grid_sample call (bounds memory to ~100 MB)


# --------------------------------------------------------------------------------------------
# real data: a folder of NIfTI volumes
# --------------------------------------------------------------------------------------------

def load_brain_folder(path: str | Path, size: int = 32, *, val_fraction: float = 0.1,
                      test_fraction: float = 0.2, seed: int = 0,
                      percentiles: tuple[float, float] = (0.5, 99.5), keep_aspect: bool = True,
                      batch: int = 4) -> Splits:
    """Every ``.nii``/``.nii.gz`` volume in ``path`` (sorted by name), resampled to ``size``³.

    Each volume is reoriented to RAS, then (``keep_aspect``) padded to a cube in millimetres with
    its lowest value so that anatomy keeps its proportions, and resampled (batched
    ``F.interpolate``: area averaging when shrinking, trilinear when growing); then its intensities
    are mapped to [0, 1] between the given robust percentiles. An optional ``labels.csv`` in the
    folder gives ``filename,label`` rows (a header row is allowed; names may omit the suffix; string
    labels are numbered in sorted order and listed in ``info['classes']``). The split is a seeded
    permutation: ``test_fraction`` and ``val_fraction`` of the volumes (rounded), the rest train.
    """
    nib = import_nibabel()
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DataError(f"brain folder {folder} does not exist; give data.path a folder of NIfTI "
                        "volumes (*.nii or *.nii.gz), optionally with labels.csv (filename,label)")
    files = sorted(f for f in folder.iterdir() if f.is_file() and f.name.endswith(NIFTI_SUFFIXES))
    if not files:
        raise DataError(f"brain folder {folder} holds no .nii or .nii.gz files; put one 3D T1 volume "
                        "per file there (optionally with labels.csv: filename,label)")
    if size < 2:
        raise DataError(f"volume size {size} is too small; use data.size >= 2 (e.g. 32)")
    if not 0 <= percentiles[0] < percentiles[1] <= 100:
        raise DataError(f"percentiles {percentiles} must satisfy 0 <= low < high <= 100")
    n = len(files)
    # a split asked for (fraction > 0) gets at least one volume: an empty one breaks training late
    n_test = max(1, int(round(n * test_fraction))) if test_fraction > 0 else 0
    n_val = max(1, int(round(n * val_fraction))) if val_fraction > 0 else 0
    n_train = n - n_test - n_val
    if n_train < 1:
        raise DataError(f"brain folder {folder} holds {n} volume(s), too few for its train, "
                        f"validation and test splits ({n_val + n_test + 1} or more); add volumes")
    labels, classes = _read_labels_csv(folder, files)

    volumes: list[Tensor] = []
    pending: list[tuple[np.ndarray, tuple[float, float, float]]] = []

    def flush() -> None:
        if pending:
            volumes.append(_normalise(_resample_group(pending, size, keep_aspect), percentiles))
            pending.clear()

    for f in files:
        arr, zooms = read_nifti(nib, f)
        if pending and (pending[0][0].shape != arr.shape or pending[0][1] != zooms
                        or len(pending) >= batch):
            flush()
        pending.append((arr, zooms))
    flush()
    images = torch.cat(volumes)

    parts = split_indices(n, n_train, n_val, n_test, seed)
    lab = torch.as_tensor(labels, dtype=torch.int64) if labels is not None else None
    sets = [TensorSet(images[i], lab[i] if lab is not None else None,
                      {"file_index": i.clone()}) for i in parts]
    info: dict[str, Any] = {
        "name": "brain-folder", "source": str(folder), "stand_in": False,
        "files": [f.name for f in files], "size": size, "orientation": "RAS; (D,H,W) = (I→S, A→P, L→R)",
        "intensity": f"per volume, {percentiles[0]}–{percentiles[1]} percentiles mapped to [0, 1]",
        "keep_aspect": keep_aspect, "seed": seed, "labels": "labels.csv" if lab is not None else None,
    }
    if classes is not None:
        info["classes"] = classes
    return Splits(*sets, info=info)


def _read_labels_csv(folder: Path, files: list[Path]) -> tuple[list[int] | None, list[str] | None]:
    table = folder / "labels.csv"
    if not table.exists():
        return None, None
    stems = {_stem(f.name): f.name for f in files}
    raw: dict[str, str] = {}
    try:
        with open(table, newline="") as fh:
            rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{table} is unreadable ({e}); write it as text rows 'filename,label'") from None
    for k, row in enumerate(rows):
        if len(row) < 2:
            raise DataError(f"{table} row {k + 1} is {row!r}; each row must be 'filename,label'")
        name, value = row[0].strip(), row[1].strip()
        key = stems.get(_stem(name))
        if key is not None:  # other rows (a header, files not in the folder) are ignored
            raw[key] = value
    missing = [f.name for f in files if f.name not in raw]
    if missing:
        raise DataError(f"{table} has no label for {missing[0]}"
                        + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                        + "; add a 'filename,label' row for every volume, or delete labels.csv")
    values = [raw[f.name] for f in files]
    try:
        return [int(v) for v in values], None
    except ValueError:
        classes = sorted(set(values))
        return [classes.index(v) for v in values], classes


def _stem(name: str) -> str:
    for s in (".nii.gz", ".nii"):
        if name.endswith(s):
            return name[: -len(s)]
    return name


def _resample_group(group: list[tuple[np.ndarray, tuple[float, float, float]]], size: int,
                    keep_aspect: bool) -> Tensor:
    """Same-shape volumes → (B, 1, size, size, size), in one batched call per step."""
    x = torch.from_numpy(np.stack([a for a, _ in group]))[:, None]
    x = x - x.amin(dim=(1, 2, 3, 4), keepdim=True)  # padding value 0 = the volume's minimum
    shape = x.shape[2:]
    if keep_aspect:
        extent = [n * z for n, z in zip(shape, group[0][1])]
        side = max(extent)
        inner = [max(1, int(round(2 * size * e / side))) for e in extent]
        x = resample_volumes(x, inner)
        pads = []
        for n in reversed(inner):
            lo = (2 * size - n) // 2
            pads += [lo, 2 * size - n - lo]
        x = F.pad(x, pads)
        return F.avg_pool3d(x, 2)
    return resample_volumes(x, [size] * 3)


def _normalise(x: Tensor, percentiles: tuple[float, float]) -> Tensor:
    """Per volume: the low/high percentiles → 0/1, clamped (batched; no torch.quantile size cap)."""
    lo_p, hi_p = percentiles
    if not 0 <= lo_p < hi_p <= 100:
        raise DataError(f"percentiles {percentiles} must satisfy 0 <= low < high <= 100")
    flat = x.reshape(x.shape[0], -1).sort(dim=1).values
    m = flat.shape[1] - 1
    lo = flat[:, int(round(lo_p / 100 * m))].view(-1, 1, 1, 1, 1)
    hi = flat[:, int(round(hi_p / 100 * m))].view(-1, 1, 1, 1, 1)
    span = (hi - lo).clamp_min(1e-12)
    return ((x - lo) / span).clamp(0, 1).to(torch.float32)


# --------------------------------------------------------------------------------------------
# the MNI152 template
# --------------------------------------------------------------------------------------------

def template_dir() -> Path:
    """The folder inside the installed nilearn package that holds the MNI152 2009a maps."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the mni152-synthetic brain data is made from the MNI152 template shipped "
                        "with nilearn; pip install nilearn (or groupact[medical])")
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    missing = [n for n in TEMPLATE_FILES.values() if not (folder / n).exists()]
    if missing:
        raise DataError(f"{folder} lacks {missing[0]}; reinstall nilearn (pip install --force-reinstall "
                        "nilearn) or give a folder of NIfTI volumes as data.path")
    return folder


@functools.lru_cache(maxsize=1)
def _template_full() -> dict[str, Any]:
    """Full-resolution (1 mm) cube arrays: T1 and the lateral-ventricle mask (cached in memory)."""
    from scipy import ndimage

    nib = import_nibabel()
    folder = template_dir()
    vol = {k: np.asarray(nib.load(str(folder / f)).dataobj) for k, f in TEMPLATE_FILES.items()}
    t1 = vol["t1"].astype(np.float32) / 255.0
    brain = vol["t1"] > 0
    # CSF: inside the (skull-stripped) brain, dark on T1 and neither grey nor white matter
    csf = brain & (vol["t1"] < 80) & (vol["gm"].astype(np.int32) + vol["wm"] < 80)
    lab, n = ndimage.label(csf)
    if n == 0:
        raise DataError(f"no ventricles found in {folder}; the template files look unusual — "
                        "reinstall nilearn")
    idx = np.arange(1, n + 1)
    sizes = ndimage.sum(csf, lab, idx)
    coms = np.array(ndimage.center_of_mass(csf, lab, idx))
    nz = np.argwhere(brain)
    lo, hi = nz.min(0), nz.max(0)
    centre = (lo + hi) / 2.0
    near = np.linalg.norm(coms - centre, axis=1) < 25.0  # mm (1 mm voxels)
    pick = idx[near][np.argsort(-sizes[near])][:2]  # the two lateral ventricles
    if len(pick) < 2 or sizes[pick - 1].min() < 1000:
        raise DataError(f"could not find the lateral ventricles in {folder}; reinstall nilearn")
    vent = np.isin(lab, pick)
    # a cube whose inscribed ball holds every brain voxel: any rotation about the centre keeps the
    # whole brain inside the volume (the brain is ellipsoidal, so this costs ~3%)
    t1_cube, vent_cube = (np.ascontiguousarray(c.transpose(2, 1, 0)[:, ::-1, :])  # RAS → (D, H, W)
                          for c in ball_cube([t1, vent.astype(np.float32)], brain))
    return {"t1": t1_cube, "vent": vent_cube, "side_mm": float(t1_cube.shape[0]),
            "ventricle_voxels": int(vent.sum()), "folder": str(folder)}


@functools.lru_cache(maxsize=8)
def mni152_template(size: int = 32) -> tuple[Tensor, Tensor]:
    """The MNI152 2009a T1 template and its lateral-ventricle occupancy, each (size, size, size).

    Cropped to the brain, padded to a cube whose inscribed ball holds the whole brain, and averaged
    down (area) to ``size``³; values in [0, 1]; orientation (D, H, W) = (I→S, A→P, L→R).
    """
    full = _template_full()
    return _cube_at(full["t1"], size), _cube_at(full["vent"], size)


def _cube_at(cube: np.ndarray, size: int) -> Tensor:
    """A 1 mm ball cube averaged down (area) to ``size``³, values clamped to [0, 1]."""
    x = torch.from_numpy(cube)[None, None]
    return F.interpolate(x, size=(size,) * 3, mode="area")[0, 0].clamp(0, 1)


@functools.lru_cache(maxsize=2)
def _enlarge_field(smooth_mm: float) -> Tensor:
    """(1, 3, R, R, R) unit-peak field pointing into the ventricles, in grid_sample (x, y, z) order.

    It is the gradient of the ventricle mask smoothed with a Gaussian of ``smooth_mm``, scaled so its
    largest length is 1 mm (stored in normalised units: 2 / side_mm per mm). A pull map
    q = p + a·field(p) samples ventricle from just outside it, so the ventricles grow by about a mm
    in every direction (a < 0 shrinks them).
    """
    from scipy import ndimage

    full = _template_full()
    vent = F.interpolate(torch.from_numpy(full["vent"])[None, None], size=(_FIELD_RES,) * 3,
                         mode="area")[0, 0].numpy()
    vox_mm = full["side_mm"] / _FIELD_RES
    smooth = ndimage.gaussian_filter(vent.astype(np.float64), smooth_mm / vox_mm)
    grad = np.stack(np.gradient(smooth, vox_mm))  # (d, h, w) components, per mm
    grad /= np.sqrt((grad ** 2).sum(0)).max()
    field = grad[::-1] * (2.0 / full["side_mm"])  # → (x=w, y=h, z=d), normalised units per mm
    return torch.from_numpy(np.ascontiguousarray(field, dtype=np.float32))[None]


# --------------------------------------------------------------------------------------------
# the synthetic population
# --------------------------------------------------------------------------------------------

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


def _draw_subjects(n_split: Sequence[int], seed: int, s: dict[str, Any]) -> dict[str, Tensor]:
    """Per-subject random parameters; they depend on the seed and counts only, not on the size."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([(torch.arange(m) % 2)[torch.randperm(m, generator=g)] for m in n_split])
    n = int(labels.numel())
    k = int(s["control_points"])
    u = torch.rand(n, generator=g)
    lo1, hi1 = s["enlarge_mm"]
    lo0, hi0 = s["normal_mm"]
    return {
        "labels": labels.to(torch.int64),
        "coarse": torch.randn(n, 4, k, k, k, generator=g),
        "affine": torch.eye(3) + s["affine_std"] * torch.randn(n, 3, 3, generator=g),
        "shift": s["shift_mm"] * torch.randn(n, 3, generator=g),
        "enlarge": torch.where(labels == 1, lo1 + u * (hi1 - lo1), lo0 + u * (hi0 - lo0)),
        "gamma": torch.exp(s["gamma_std"] * torch.randn(n, generator=g)),
        "gain": s["gain"][0] + (s["gain"][1] - s["gain"][0]) * torch.rand(n, generator=g),
    }


def _render(params: dict[str, Tensor], points: Tensor, size: int, s: dict[str, Any],
            noise_seed: int, template: Tensor | None = None, side_mm: float | None = None) -> Tensor:
    """Every subject sampled at ``points`` (M, 3) (normalised x, y, z): (N, M) uint8.

    ``template`` (size³, default the MNI152 one) is the brain every subject deforms, ``side_mm``
    its cube's side. All subjects in a chunk go through one grid_sample; chunks only bound memory.
    """
    if template is None:
        template, _ = mni152_template(size)
        side_mm = _template_full()["side_mm"]
    field = _enlarge_field(float(s["smooth_mm"]))
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
            n1 = torch.randn(B, m, generator=g)
            n2 = torch.randn(B, m, generator=g)
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

    arrays = cached(SYNTHETIC_NAME + "-3d", settings, make, cache_dir, enabled=use_cache)
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
    template = _template_full()["t1"]
    reference = float(np.percentile(template[template > 0], MATCH_PERCENTILE))
    settings = {"n": n, "size": size, "seed": seed, "heldout": names,
                "files": [[str(p), p.stat().st_size] for pair in files for p in pair if p],
                "reference": reference, "version": 2, **s}   # 2: skull stripped before resampling

    def make() -> dict[str, np.ndarray]:
        params = _draw_subjects((n,), seed + 7919, s)
        params["enlarge"] = torch.zeros(n)
        brain = torch.arange(n) % len(names)
        out = torch.empty(n, size ** 3, dtype=torch.uint8)
        points = _grid_points(_axis(size), size)
        for k, (t1_path, mask_path) in enumerate(files):
            cube = load_real_brain(t1_path, mask_path, reference)
            t = _cube_at(cube, size)
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
    w = vent.sum(dim=(1, 2))
    return float((w * _axis(size)).sum() / w.sum())


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

    arrays = cached(SYNTHETIC_NAME + "-slices", settings, make, cache_dir, enabled=use_cache)
    info = {**_synthetic_info("2d axial slices", settings), "slice_heights": z.tolist()}
    return _make_splits(arrays, counts, n_slices, info)


def load_brain3d(path: str | Path | None = None, **kwargs: Any) -> Splits:
    """A folder of NIfTI volumes when ``path`` is given, else the mni152-synthetic stand-in."""
    if path is not None:
        return load_brain_folder(path, **kwargs)
    return load_brain3d_synthetic(**kwargs)
