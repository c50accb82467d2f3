"""Binary 3D shapes of real anatomy, offline: the parcels of brain atlases, one shape per label.

MedMNIST's AdrenalMNIST3D (:mod:`groupact.data.adrenal`) is the paper's binary-shape set, but it
cannot be fetched here. Debian's ``mricron-data`` ships human brain atlases — label volumes drawn on
real anatomy (AAL, AICHA, Harvard-Oxford cortical, JHU white matter and JHU-189, Brodmann areas,
NatBrainLab tracts; :data:`DEBIAN_ATLASES`) — about 660 parcels in all. These are *brain parcels*,
not adrenal glands: folded cortical patches, tracts, deep nuclei, each a real binary shape with a
real outline, which is what the binary-shape recipes need (turn it, keep its limbs). They are
named ``brain-parcels`` everywhere, never "adrenal".

Each parcel becomes a (size³) binary volume in AdrenalMNIST3D's layout: centred on its centroid,
cut to its largest connected piece (:func:`largest_pieces`), scaled so its farthest voxel
touches the inscribed ball (any turn keeps it inside), sampled by one
batched ``grid_sample`` per chunk of parcels (nearest label, 2× supersampled, then the fraction
inside ≥ 0.5), in (D, H, W) = (I→S, A→P, L→R) order. The class label is the atlas a parcel comes
from (:data:`DEBIAN_ATLASES` order), so a probe asks "which kind of structure is this?", a question
a turn does not change. ``data.path`` may instead name a folder of your own integer label volumes
(.nii / .nii.gz): every label of every file becomes a shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from groupact.data.base import Splits, TensorSet, split_indices
from groupact.data.cache import cached
from groupact.data.nifti import NIFTI_SUFFIXES, import_nibabel, read_nifti_ras
from groupact.errors import DataError
from groupact.extras import need

NAME = "brain-parcels"
DEBIAN_PACKAGE = "mricron-data"
DEBIAN_FOLDER = "usr/share/mricron/templates"
#: the human atlases in mricron-data (inia19-NeuroMaps is a macaque atlas; JHU 2 mm repeats 1 mm)
DEBIAN_ATLASES = ("aal.nii.gz", "AICHAmc.nii.gz", "HarvardOxford-cort-maxprob-thr0-1mm.nii.gz",
                  "JHU-WhiteMatter-labels-1mm.nii.gz", "jhu189.nii.gz", "brodmann.nii.gz",
                  "natbrainlab.nii.gz")
MIN_VOXELS = 64          # smaller parcels are a few voxels of noise, not shapes
_CHUNK = 16              # parcels per grid_sample call (bounds memory to ~100 MB)


def atlas_files(path: str | Path | None = None, root: str | Path = "/") -> list[Path]:
    """The label volumes to cut into shapes: ``path``'s NIfTI files, else mricron-data's atlases."""
    if path is not None:
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise DataError(f"parcels folder {folder} does not exist; give data.path a folder of "
                            "integer label volumes (.nii / .nii.gz)")
        files = sorted(f for f in folder.iterdir() if f.is_file() and f.name.endswith(NIFTI_SUFFIXES))
        if not files:
            raise DataError(f"parcels folder {folder} holds no .nii or .nii.gz label volumes")
        return files
    folder = Path(root) / DEBIAN_FOLDER
    files = [folder / f for f in DEBIAN_ATLASES if (folder / f).is_file()]
    if not files:
        raise DataError(f"the brain-parcel shapes need the atlases in /{DEBIAN_FOLDER}; install them "
                        f"with `apt-get install {DEBIAN_PACKAGE}` (or give data.path a folder of "
                        "label volumes)")
    return files


def _read_labels(nib, f: Path) -> tuple[np.ndarray, np.ndarray]:
    """An integer label volume in RAS voxel order (x, y, z) and its voxel sizes (mm)."""
    arr, zooms = read_nifti_ras(nib, f)
    if arr.ndim != 3 or not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{f} is not an integer 3D label volume (shape {arr.shape}, dtype "
                        f"{arr.dtype}); give one label map per file")
    return arr.astype(np.int64), np.array(zooms)


def largest_pieces(labels: np.ndarray) -> np.ndarray:
    """The label volume with every parcel cut down to its largest connected piece.

    A parcel of two far-apart pieces (a bilateral cortical area, a few stray voxels) would be drawn
    tiny in its ball; its largest piece is the shape. Batched over all parcels at once: voxels
    touching another parcel are set aside so that one ``ndimage.label`` cannot join neighbours,
    each parcel keeps the piece with the most voxels, and the set-aside voxels of that parcel that
    touch the kept piece come back.
    """
    fg = labels > 0
    border = np.zeros_like(fg)
    for axis in range(3):                   # six face neighbours, each one vectorised shift
        for step in (1, -1):
            other = np.roll(labels, step, axis)
            border |= fg & (other > 0) & (other != labels)
    core = fg & ~border
    ndimage = need("scipy.ndimage", "mri", "data.kind=parcels3d")
    pieces, n = ndimage.label(core)
    if n == 0:
        return labels
    size = np.bincount(pieces.ravel(), minlength=n + 1)
    owner = np.zeros(n + 1, np.int64)
    owner[pieces[core]] = labels[core]
    # per parcel, the piece with the most voxels: sort pieces by (parcel, size) and take the last
    order = np.lexsort((size[1:], owner[1:])) + 1
    last = np.r_[owner[order][1:] != owner[order][:-1], True]
    keep = np.zeros(n + 1, bool)
    keep[order[last]] = True
    kept = core & keep[pieces]
    kept_label = np.where(kept, labels, 0)
    back = np.zeros_like(fg)
    for axis in range(3):
        for step in (1, -1):
            back |= border & (np.roll(kept_label, step, axis) == labels)
    return np.where(kept | back, labels, 0)


def parcel_shapes(labels: np.ndarray, zooms: np.ndarray, size: int,
                  min_voxels: int = MIN_VOXELS) -> tuple[np.ndarray, np.ndarray]:
    """Every label > 0 of a RAS label volume as a (size³) binary shape: (K, size, size, size) uint8
    in (D, H, W) = (I→S, A→P, L→R) order, and the label ids kept (parcels of ≥ ``min_voxels``)."""
    flat = labels.ravel()
    ids, counts = np.unique(flat[flat > 0], return_counts=True)
    ids = ids[counts >= min_voxels]
    if len(ids) == 0:
        return np.zeros((0, size, size, size), np.uint8), ids
    where = np.flatnonzero(np.isin(flat, ids))
    lab = flat[where]
    slot = np.searchsorted(ids, lab)
    mm = np.stack(np.unravel_index(where, labels.shape), 1) * zooms            # (V, 3) in mm
    count = np.bincount(slot, minlength=len(ids)).astype(np.float64)
    centre = np.stack([np.bincount(slot, mm[:, k], len(ids)) for k in range(3)], 1) / count[:, None]
    dist = np.sqrt(((mm - centre[slot]) ** 2).sum(1))
    radius = np.zeros(len(ids))
    np.maximum.at(radius, slot, dist)
    radius = radius + zooms.max()               # the farthest voxel's own extent stays inside

    # a (2·size)³ grid on [-1, 1]³ in output order (D, H, W) = (+z, −y, +x) about each centre
    fine = 2 * size
    a = (2 * torch.arange(fine, dtype=torch.float64) + 1) / fine - 1
    dd, hh, ww = torch.meshgrid(a, a, a, indexing="ij")
    unit = torch.stack([ww, -hh, dd], -1)                                       # (x, y, z)
    extent = torch.tensor(labels.shape, dtype=torch.float64) - 1
    vol = torch.from_numpy(labels.astype(np.float32))[None, None]               # (1, 1, X, Y, Z)
    out = np.empty((len(ids), size, size, size), np.uint8)
    for s in range(0, len(ids), _CHUNK):      # chunks bound memory; each is one batched sample
        c = torch.from_numpy(centre[s:s + _CHUNK])
        r = torch.from_numpy(radius[s:s + _CHUNK])
        p = c[:, None, None, None] + r[:, None, None, None, None] * unit          # mm
        idx = p / torch.from_numpy(zooms)
        g = (2 * idx / extent - 1).flip(-1).float()          # grid_sample's (W, H, D) = (z, y, x)
        got = F.grid_sample(vol.expand(len(c), -1, -1, -1, -1), g, mode="nearest",
                            padding_mode="zeros", align_corners=True)
        want = torch.from_numpy(ids[s:s + _CHUNK].astype(np.float32)).view(-1, 1, 1, 1, 1)
        inside = F.avg_pool3d((got == want).float(), 2)[:, 0]
        out[s:s + len(c)] = (inside >= 0.5).to(torch.uint8).numpy()
    return out, ids


def load_parcels(path: str | Path | None = None, size: int = 28, *, seed: int = 0,
                 val_fraction: float = 0.1, test_fraction: float = 0.2, root: str | Path = "/",
                 cache_dir: str | Path | None = None, use_cache: bool = True) -> Splits:
    """'brain-parcels': binary shapes of atlas parcels, (N, 1, size, size, size) in {0, 1}; the
    label is the atlas index (``info['classes']``); a seeded split of the parcels."""
    if size < 4:
        raise DataError(f"shape size {size} is too small; use data.size >= 4 (e.g. 28)")
    files = atlas_files(path, root)
    settings = {"files": [[str(f), f.stat().st_size] for f in files], "size": size,
                "min_voxels": MIN_VOXELS, "pieces": "largest"}

    def make() -> dict[str, np.ndarray]:
        nib = import_nibabel()
        shapes, atlas, parcel = [], [], []
        for k, f in enumerate(files):         # a loop over a few atlases, each batched
            lab, zooms = _read_labels(nib, f)
            s, ids = parcel_shapes(largest_pieces(lab), zooms, size)
            shapes.append(s)
            atlas.append(np.full(len(ids), k, np.int64))
            parcel.append(ids)
        return {"images": np.concatenate(shapes), "atlas": np.concatenate(atlas),
                "parcel": np.concatenate(parcel)}

    arrays = cached(NAME, settings, make, cache_dir, enabled=use_cache)
    images = torch.from_numpy(arrays["images"]).float()[:, None]
    n = len(images)
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    if n - n_test - n_val < 1 or (test_fraction > 0 and n_test < 1):
        raise DataError(f"the label volumes give {n} parcel(s) of {MIN_VOXELS}+ voxels, too few to "
                        "split into train, validation and test; add label volumes")
    labels = torch.from_numpy(arrays["atlas"])
    parts = split_indices(n, n - n_val - n_test, n_val, n_test, seed)
    sets = [TensorSet(images[i], labels[i], {"parcel": torch.from_numpy(arrays["parcel"])[i]})
            for i in parts]
    info: dict[str, Any] = {
        "name": NAME, "stand_in": False,
        "source": ", ".join(f.name for f in files) + (f" ({DEBIAN_PACKAGE})" if path is None else ""),
        "what": "parcels of human brain atlases as binary shapes (not adrenal glands)",
        "classes": [f.name.split(".nii")[0] for f in files], "size": size, "seed": seed,
        "orientation": "(D,H,W) = (I→S, A→P, L→R); each shape centred and scaled into the ball",
    }
    return Splits(*sets, info=info)
