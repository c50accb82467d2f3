"""Real brains a user has: a folder of NIfTI T1 volumes (``.nii`` / ``.nii.gz``), reoriented to RAS,
resampled to one cube, normalised by percentiles, with optional labels from ``labels.csv``."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from groupact.data.base import Splits, TensorSet, split_indices
from groupact.data.nifti import NIFTI_SUFFIXES, import_nibabel, read_nifti, resample_volumes
from groupact.errors import DataError


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
