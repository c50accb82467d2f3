"""Real brains that Debian packages install, made ready to be held-out subjects of the 3D brain data.

The training population of the 3D brain recipes ('mni152-synthetic', :mod:`groupact.data.brain`)
is deformed copies of one real brain, the MNI152 template. Testing on deformed copies of *other*
real brains measures what a model learned about brains, not about one template. Two more real T1
brains ship in Debian packages (no download at run time):

- ``colin27``: the Colin27 average of 27 scans of one individual, skull-stripped (BET), 1 mm —
  ``apt-get install mricron-data``: /usr/share/mricron/templates/ch2bet.nii.gz.
- ``itk-t1``: the T1 head of ITK's k-means example, 2×2×3 mm, skull-stripped here with the
  brain mask that ships beside it — ``apt-get install insighttoolkit5-examples``:
  /usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz and
  KmeansTest_T1RawSkullStrip.nii.gz.

Each brain is brought to the template's frame the same way the template is (:func:`ball_cube`):
reoriented to RAS, resampled to 1 mm, cropped to the brain, padded to a cube whose inscribed ball
holds every brain voxel (any turn about the centre keeps the brain inside), and its intensities
scaled so its 99th brain percentile equals the template's. The deformation generator of
:mod:`groupact.data.brain` then makes as many held-out test subjects from them as asked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from groupact.data.nifti import import_nibabel, read_nifti, resample_volumes
from groupact.errors import DataError


@dataclass(frozen=True)
class RealBrain:
    """Where a Debian package puts one real T1 brain (paths relative to the file-system root)."""

    package: str
    t1: str
    mask: str | None        # a brain mask beside it (None: the T1 is skull-stripped: brain = T1 > 0)
    about: str


REAL_BRAINS: dict[str, RealBrain] = {
    "colin27": RealBrain(
        "mricron-data", "usr/share/mricron/templates/ch2bet.nii.gz", None,
        "Colin27 (mricron-data): 27 averaged T1 scans of one individual, skull-stripped, 1 mm"),
    "itk-t1": RealBrain(
        "insighttoolkit5-examples",
        "usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz",
        "usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1RawSkullStrip.nii.gz",
        "ITK's k-means example T1 head (insighttoolkit5-examples), 2×2×3 mm, masked with its "
        "skull-strip mask"),
}

#: the brain percentile matched to the template's (robust to a few bright voxels)
MATCH_PERCENTILE = 99.0


def real_brain_files(name: str, root: str | Path = "/") -> tuple[Path, Path | None]:
    """The T1 (and mask) files of a registered real brain, or a one-line DataError naming the
    package to install."""
    if name not in REAL_BRAINS:
        raise DataError(f"unknown held-out brain '{name}'; choose from: {', '.join(REAL_BRAINS)}")
    b = REAL_BRAINS[name]
    base = Path(root)
    t1, mask = base / b.t1, (base / b.mask if b.mask else None)
    missing = [p for p in (t1, mask) if p is not None and not p.is_file()]
    if missing:
        raise DataError(f"held-out brain '{name}' needs {missing[0]}; install it with "
                        f"`apt-get install {b.package}` (or drop data.heldout)")
    return t1, mask


def ball_cube(volumes: list[np.ndarray], brain: np.ndarray) -> list[np.ndarray]:
    """Each volume cropped to the box of ``brain`` and padded with zeros to a cube whose inscribed
    ball holds every brain voxel (so any turn about the centre keeps the brain inside); float32.
    Orientation is kept as given. The MNI152 template of :mod:`groupact.data.brain` is made so too."""
    nz = np.argwhere(brain)
    if len(nz) == 0:
        raise DataError("the brain mask is empty; the volume has no voxel above zero")
    lo, hi = nz.min(0), nz.max(0)
    centre = (lo + hi) / 2.0
    radius = float(np.sqrt(((nz - centre) ** 2).sum(1)).max())
    side = int(max((hi - lo + 1).max(), math.ceil(2 * radius) + 1))
    cubes = []
    for v in volumes:
        out = np.zeros((side,) * 3, dtype=np.float32)
        crop = v[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1]
        off = [(side - s) // 2 for s in crop.shape]
        out[off[0]:off[0] + crop.shape[0], off[1]:off[1] + crop.shape[1],
            off[2]:off[2] + crop.shape[2]] = crop
        cubes.append(out)
    return cubes


def _to_1mm(arr: np.ndarray, zooms: tuple[float, ...]) -> np.ndarray:
    """A volume with voxel sizes ``zooms`` (mm) resampled to 1 mm voxels."""
    shape = tuple(max(1, int(round(s * z))) for s, z in zip(arr.shape, zooms))
    x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None, None]
    return resample_volumes(x, shape)[0, 0].numpy()


def load_real_brain(t1_path: Path, mask_path: Path | None, reference: float) -> np.ndarray:
    """One real brain, (D, H, W) = (I→S, A→P, L→R) at 1 mm, skull-stripped (by its mask, or T1 > 0),
    in a ball cube (:func:`ball_cube`), scaled so its 99th brain percentile is ``reference`` (the
    template's), clipped to [0, 1]."""
    nib = import_nibabel()
    arr, zooms = read_nifti(nib, t1_path)
    if mask_path is not None:  # strip at the scan's own resolution, so no skull blends in
        m, _ = read_nifti(nib, mask_path)
        if m.shape != arr.shape:
            raise DataError(f"{mask_path} does not cover {t1_path} ({m.shape} vs {arr.shape} "
                            "voxels); give a mask on the same grid")
        arr = np.where(m > 0, arr, 0.0).astype(np.float32)
    arr = _to_1mm(arr, zooms)
    brain = arr > 0
    if not brain.any():
        raise DataError(f"{t1_path} has no brain voxels above zero; is it a T1 volume?")
    scale = reference / max(float(np.percentile(arr[brain], MATCH_PERCENTILE)), 1e-8)
    return np.clip(ball_cube([arr * scale], brain)[0], 0.0, 1.0)
