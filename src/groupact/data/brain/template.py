"""The MNI152 2009a template that ships inside the nilearn wheel, as cubes of any size, and the
smooth ventricle-enlargement field the synthetic population is made with."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from groupact.data.brains_real import ball_cube
from groupact.data.nifti import import_nibabel
from groupact.errors import DataError
from groupact.extras import need, package_dir

#: what the template's users are, for the one-line error when the 'mri' extra is missing
MNI152_SYNTHETIC = ("making the mni152-synthetic brains (data.kind=brain3d or brain2d without "
                    "data.path)")


TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
_FIELD_RES = 64          # grid on which the ventricle-enlargement field is stored (≈3 mm voxels)


def template_dir() -> Path:
    """The folder inside the installed nilearn package that holds the MNI152 2009a maps."""
    folder = package_dir("nilearn", "mri", MNI152_SYNTHETIC) / "datasets" / "data"
    missing = [n for n in TEMPLATE_FILES.values() if not (folder / n).exists()]
    if missing:
        raise DataError(f"{folder} lacks {missing[0]}; reinstall nilearn (pip install --force-reinstall "
                        "nilearn) or give a folder of NIfTI volumes as data.path")
    return folder


@functools.lru_cache(maxsize=1)
def template_full() -> dict[str, Any]:
    """Full-resolution (1 mm) cube arrays: T1 and the lateral-ventricle mask (cached in memory)."""
    ndimage = need("scipy.ndimage", "mri", MNI152_SYNTHETIC)
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
    full = template_full()
    return cube_at(full["t1"], size), cube_at(full["vent"], size)


def cube_at(cube: np.ndarray, size: int) -> Tensor:
    """A 1 mm ball cube averaged down (area) to ``size``³, values clamped to [0, 1]."""
    x = torch.from_numpy(cube)[None, None]
    return F.interpolate(x, size=(size,) * 3, mode="area")[0, 0].clamp(0, 1)


@functools.lru_cache(maxsize=2)
def enlarge_field(smooth_mm: float) -> Tensor:
    """(1, 3, R, R, R) unit-peak field (float64) pointing into the ventricles, in grid_sample
    (x, y, z) order.

    It is the gradient of the ventricle mask smoothed with a Gaussian of ``smooth_mm``, scaled so its
    largest length is 1 mm (stored in normalised units: 2 / side_mm per mm). A pull map
    q = p + a·field(p) samples ventricle from just outside it, so the ventricles grow by about a mm
    in every direction (a < 0 shrinks them).
    """
    ndimage = need("scipy.ndimage", "mri", MNI152_SYNTHETIC)
    full = template_full()
    vent = F.interpolate(torch.from_numpy(full["vent"])[None, None], size=(_FIELD_RES,) * 3,
                         mode="area")[0, 0].numpy()
    vox_mm = full["side_mm"] / _FIELD_RES
    smooth = ndimage.gaussian_filter(vent.astype(np.float64), smooth_mm / vox_mm)
    grad = np.stack(np.gradient(smooth, vox_mm))  # (d, h, w) components, per mm
    grad /= np.sqrt((grad ** 2).sum(0)).max()
    field = grad[::-1] * (2.0 / full["side_mm"])  # → (x=w, y=h, z=d), normalised units per mm
    return torch.from_numpy(np.ascontiguousarray(field, dtype=np.float64))[None]
