"""Reading NIfTI volumes (nibabel) into one orientation, for every loader of MR volumes.

:func:`read_nifti` gives (D, H, W) = (I→S, A→P, L→R) arrays — RAS reoriented, so
``vol[d]`` is an axial slice with the front of the head at the top — and the voxel sizes in that
order; :func:`resample_volumes` brings volumes to a grid. nibabel comes with
the ``mri`` extra; :func:`import_nibabel` says so when it is missing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch.nn.functional as F
from torch import Tensor

from groupact.errors import DataError
from groupact.extras import need

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def import_nibabel():
    """nibabel, or a one-line error naming the ``mri`` extra."""
    return need("nibabel", "mri", "reading NIfTI volumes")


def read_nifti_ras(nib, f: Path, dtype=None) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A volume as stored, reoriented to RAS voxel order (x, y, z), trailing length-1 axes
    dropped, in ``dtype`` (None: the file's own, e.g. integer labels), and its voxel sizes in mm.
    2D images and voxel sizes that are zero, negative, NaN or infinite are refused."""
    logger = nib.imageglobals.logger
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)  # nibabel logs (and repairs) bad headers on stderr
    try:
        img = nib.load(str(f))
        if len(img.shape) < 3:
            raise DataError(f"{f} is a {len(img.shape)}D image of shape {img.shape}; each file "
                            "must hold one 3D volume")
        check_voxel_sizes(f, stored_voxel_sizes(nib, f, img))
        img = nib.as_closest_canonical(img)
        arr = np.asarray(img.dataobj, dtype=dtype)
        zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - nibabel raises many kinds for a bad file
        raise DataError(f"{f} is not a readable NIfTI volume ({type(e).__name__}: {e}); "
                        "replace or remove it") from None
    finally:
        logger.setLevel(level)
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return arr, zooms


def stored_voxel_sizes(nib, f: Path, img) -> tuple[float, ...]:
    """The three voxel sizes the file's header holds, read again without nibabel's repairs
    (which turn a 0 into 1 and would hide it)."""
    with nib.openers.ImageOpener(str(f)) as fo:
        raw = type(img.header).from_fileobj(fo, check=False)
    return tuple(float(z) for z in raw["pixdim"][1:4])


def check_voxel_sizes(f: Path, sizes: tuple[float, ...]) -> None:
    """Refuse voxel sizes that are not positive finite millimetres: resampling divides by them
    (inf or NaN gives an empty or NaN volume) and a 0 would be a guess."""
    if not all(math.isfinite(z) and z > 0 for z in sizes):
        shown = ", ".join(f"{z:g}" for z in sizes)
        raise DataError(f"{f} has voxel sizes ({shown}) mm; each must be a positive finite "
                        "number: fix the header's pixdim or remove the file")


def read_nifti(nib, f: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """One volume as float32 (D, H, W) = (I→S, A→P, L→R) and its voxel sizes in that order."""
    arr, (zx, zy, zz) = read_nifti_ras(nib, f, np.float32)
    if arr.ndim != 3:
        raise DataError(f"{f} has shape {arr.shape}; each file must hold one 3D volume "
                        "(split 4D series into one file per volume)")
    if not np.isfinite(arr).all():
        raise DataError(f"{f} contains NaN or infinite voxels; clean or remove it")
    # RAS (x, y, z) → (z, y, x), then flip y: D = inferior→superior, H = anterior→posterior
    arr = np.ascontiguousarray(arr.transpose(2, 1, 0)[:, ::-1, :])
    return arr, (zz, zy, zx)


def resample_volumes(x: Tensor, out: Sequence[int]) -> Tensor:
    """(B, C, *S) volumes at ``out`` voxels: area averaging when every side shrinks (no
    aliasing), else trilinear (``align_corners=False``, the grid convention everywhere here)."""
    if list(x.shape[2:]) == list(out):
        return x
    if all(o <= n for o, n in zip(out, x.shape[2:])):
        return F.interpolate(x, size=tuple(out), mode="area")
    return F.interpolate(x, size=tuple(out), mode="trilinear", align_corners=False)
