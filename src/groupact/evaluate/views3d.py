"""Pictures of whole volumes, for figures a person can read: maximum-intensity projections of
grey volumes (brains) and shaded isosurfaces of binary shapes (adrenal glands).

Three central slices show a cut, not the shape: a turned shape whose thin limbs vanished can look
right in them. A projection along each axis shows all of a grey volume; an isosurface (marching
cubes from scikit-image, drawn by groupact's own batched rasteriser, data/render.py) shows the
surface of a shape from a fixed three-quarter view, so its limbs can be counted.

Volume axes are (d, h, w); the camera looks along −z with x to the right and y up (data/render.py).
A voxel (d, h, w) sits at camera x = w, y = −h, z = d (then the fixed view turns it), so w runs to
the right and h downwards as in an image of the d-slice.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from groupact.data.render import render
from groupact.extras import need


def looks_binary(x: Tensor) -> bool:
    """Every value 0 or 1 (binary masks); interpolated copies of them are not, so ask the data."""
    return bool(((x == 0) | (x == 1)).all())


def max_projections(x: Tensor) -> Tensor:
    """(N, 1, D, H, W) → (N, 1, S, 3S): the maxima along d, h and w side by side (S = max side)."""
    x = x.detach().float().cpu()
    d, h, w = x.shape[2:]
    side = max(d, h, w)
    views = [x.amax(2), x.amax(3), x.amax(4)]          # (N, C, H, W), (N, C, D, W), (N, C, D, H)
    out = torch.zeros(x.shape[0], x.shape[1], side, 3 * side)
    for i, v in enumerate(views):
        out[..., :v.shape[-2], i * side:i * side + v.shape[-1]] = v
    return out


def view_pose(elevation_deg: float = 25.0, azimuth_deg: float = -35.0) -> Tensor:
    """The fixed three-quarter view: a turn about the camera's y axis, then about its x axis."""
    a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
    ry = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    rx = torch.tensor([[1, 0, 0], [0, math.cos(e), -math.sin(e)], [0, math.sin(e), math.cos(e)]])
    return (rx @ ry).float()


def surface_mesh(volume: np.ndarray, level: float = 0.5) -> tuple[Tensor, Tensor] | None:
    """Marching cubes of one (D, H, W) volume at ``level``, vertices in the camera convention
    above scaled so the volume's inscribed ball is the unit ball (what turns stays in view; the
    cube's corners, which a turn crops anyway, may leave it); None when nothing crosses."""
    marching_cubes = need("skimage.measure", "eval",
                          "isosurfaces of binary volumes (figures)").marching_cubes
    if not (volume.min() < level < volume.max()):
        return None
    verts, faces, _, _ = marching_cubes(np.pad(volume, 1), level=level)
    side = max(volume.shape) + 1
    v = torch.from_numpy(verts.copy()).float() - 1 - (torch.tensor(volume.shape) - 1) / 2
    v = v / (side / 2)
    cam = torch.stack([v[:, 2], -v[:, 1], v[:, 0]], 1)    # w → x, h → −y, d → z
    return cam, torch.from_numpy(faces.astype(np.int64))


def surface_renders(x: Tensor, size: int = 96, level: float = 0.5,
                    colour=(0.85, 0.55, 0.35)) -> Tensor:
    """(N, 1, D, H, W) → (N, 3, size, size) shaded isosurfaces on white, one mesh a volume (the
    meshes differ in size, so each is rasterised on its own; the pixels are batched inside)."""
    vols = x.detach().float().cpu()[:, 0].numpy()
    pose = view_pose()[None]
    out = torch.ones(len(vols), 3, size, size)
    for i, vol in enumerate(vols):
        mesh = surface_mesh(vol, level)
        if mesh is None:
            continue
        verts, faces = mesh
        rgba = render(verts, faces, torch.tensor(colour).expand(faces.shape[0], 3), pose, size)
        out[i] = rgba[0, :3] * rgba[0, 3:] + (1 - rgba[0, 3:])
    return out


def whole_volume_views(x: Tensor, binary: bool) -> Tensor:
    """The picture of each volume a figure shows: isosurfaces for binary data, else projections."""
    return surface_renders(x) if binary else max_projections(x)
