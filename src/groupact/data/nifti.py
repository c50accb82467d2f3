"""Reading NIfTI volumes (nibabel) into one orientation, for every loader of MR volumes.

:func:`read_nifti` gives (D, H, W) = (I→S, A→P, L→R) arrays — RAS reoriented, so
``vol[d]`` is an axial slice with the front of the head at the top — and the voxel sizes in that
order. nibabel is optional (``groupact[medical]``); :func:`import_nibabel` says how to get it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from groupact.errors import DataError

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def import_nibabel():
    try:
        import nibabel
    except ImportError:
        raise DataError("reading NIfTI volumes needs nibabel; pip install nibabel "
                        "(or groupact[medical])") from None
    return nibabel


def read_nifti(nib, f: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """One volume as float32 (D, H, W) = (I→S, A→P, L→R) and its voxel sizes in that order."""
    try:
        img = nib.as_closest_canonical(nib.load(str(f)))
        arr = np.asarray(img.dataobj, dtype=np.float32)
        zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    except Exception as e:  # noqa: BLE001 - nibabel raises many kinds for a bad file
        raise DataError(f"{f} is not a readable NIfTI volume ({type(e).__name__}: {e}); "
                        "replace or remove it") from None
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise DataError(f"{f} has shape {arr.shape}; each file must hold one 3D volume "
                        "(split 4D series into one file per volume)")
    if not np.isfinite(arr).all():
        raise DataError(f"{f} contains NaN or infinite voxels; clean or remove it")
    # RAS (x, y, z) → (z, y, x), then flip y: D = inferior→superior, H = anterior→posterior
    arr = np.ascontiguousarray(arr.transpose(2, 1, 0)[:, ::-1, :])
    zx, zy, zz = (z if z > 0 else 1.0 for z in zooms)
    return arr, (zz, zy, zx)
