"""Rendering whole sets of plane views: the procedural stand-in and a folder of .obj meshes, each
plane under its own uniform SO(3) poses, as straight-alpha RGBA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from groupact.data.cache import cached
from groupact.data.airplanes import FAMILIES, make_airplane
from groupact.data.mesh import MESH_SUFFIXES, Mesh, normalize_mesh, read_mesh
from groupact.data.planes.skies import IMAGE_EXTS, make_skies, read_skies
from groupact.data.render import render
from groupact.errors import DataError
from groupact.groups.rotations3d import haar_rotations


#: fraction of the image the unit ball spans (a small margin so no pose touches the border)
VIEW_SCALE = 0.95


def _render_views(mesh: Mesh, poses: Tensor, size: int, supersample: int) -> np.ndarray:
    # about 200k posed triangles per call keeps memory modest even for large real meshes
    batch = max(1, min(100, 200_000 // max(1, int(mesh.faces.shape[0]))))
    out = [render(mesh.vertices, mesh.faces, mesh.colors, poses[s:s + batch], size=size,
                  supersample=supersample, scale=VIEW_SCALE) for s in range(0, len(poses), batch)]
    return (torch.cat(out).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def plane_generator(seed: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(1_000_003 * int(seed) + 7_368_787 * (index + 1))


def generate_planes(n_planes: int = 40, n_poses: int = 100, size: int = 64, seed: int = 0,
                    n_skies: int = 30, supersample: int = 2, cache: bool = True,
                    cache_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """The procedural stand-in: ``n_planes`` airplanes × ``n_poses`` uniform SO(3) views.

    Returns numpy arrays ``rgba`` (P, V, 4, H, W) uint8 (straight alpha), ``poses`` (P, V, 3, 3)
    float32, ``labels`` (P,) int64 (family index, families assigned in turn so every family
    occurs once n_planes ≥ 5) and ``skies`` (S, 3, H, W) uint8. Plane p depends only on
    (seed, p), so a smaller set is a prefix of a larger one. Cached on disk by all settings.
    """
    if n_planes <= 0 or n_poses <= 0 or size <= 0:
        raise DataError(f"n_planes, n_poses and size must be positive "
                        f"(got {n_planes}, {n_poses}, {size})")
    settings = {"n_planes": int(n_planes), "n_poses": int(n_poses), "size": int(size),
                "seed": int(seed), "n_skies": int(n_skies), "supersample": int(supersample),
                "scale": VIEW_SCALE, "version": 1}

    def make() -> dict[str, np.ndarray]:
        rgba = np.empty((n_planes, n_poses, 4, size, size), np.uint8)
        poses = np.empty((n_planes, n_poses, 3, 3), np.float32)
        labels = np.arange(n_planes, dtype=np.int64) % len(FAMILIES)
        for p in range(n_planes):
            gen = plane_generator(seed, p)
            mesh = make_airplane(int(labels[p]), gen)
            rot = haar_rotations(n_poses, gen)
            poses[p] = rot.numpy()
            rgba[p] = _render_views(mesh, rot, size, supersample)
        return {"rgba": rgba, "poses": poses, "labels": labels,
                "skies": make_skies(n_skies, size, seed)}

    return cached("planes-synthetic", settings, make, cache_dir, enabled=cache)


def _mesh_files(mesh_dir: Path) -> tuple[list[Path], list[int], list[str]]:
    if not mesh_dir.is_dir():
        raise DataError(f"mesh folder {mesh_dir} does not exist; give a folder of mesh files "
                        f"({', '.join(MESH_SUFFIXES)}; optionally one sub-folder per class)")
    files = sorted(p for p in mesh_dir.rglob("*")
                   if p.suffix.lower() in MESH_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"no meshes ({', '.join(MESH_SUFFIXES)}) in {mesh_dir}")
    groups = [p.relative_to(mesh_dir).parts[0] if len(p.relative_to(mesh_dir).parts) > 1 else ""
              for p in files]
    names = sorted(set(groups))
    return files, [names.index(g) for g in groups], [n or "plane" for n in names]


def load_planes_folder(mesh_dir: str | Path, sky_dir: str | Path | None = None,
                       n_poses: int = 100, size: int = 64, seed: int = 0, n_skies: int = 30,
                       supersample: int = 2, cache: bool = True,
                       cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Your meshes and skies, rendered like the stand-in.

    ``mesh_dir``: mesh files (.obj, .off, .stl, .ply, .glb/.gltf, read by trimesh); a file's first
    sub-folder under ``mesh_dir`` names its class (files directly in ``mesh_dir`` are one class,
    label 0 when there are no sub-folders). Each mesh is normalised to the unit ball and keeps the
    face or vertex colours its file has; one without gets one body colour (seeded; textures and
    .mtl materials are not read). ``sky_dir``: PNG/JPEG photographs, centre-cropped and resized to ``size``
    (None: procedural skies). Returns the arrays of :func:`generate_planes` plus ``class_names``.
    """
    mesh_dir = Path(mesh_dir)
    files, labels, names = _mesh_files(mesh_dir)
    sky_files = []
    if sky_dir is not None:
        sky_files = sorted(str(p) for p in Path(sky_dir).rglob("*")
                           if p.suffix.lower() in IMAGE_EXTS)
    stamp = [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    stamp += [[s, Path(s).stat().st_size, Path(s).stat().st_mtime_ns] for s in sky_files]
    settings = {"files": stamp, "n_poses": int(n_poses), "size": int(size), "seed": int(seed),
                "n_skies": int(n_skies) if sky_dir is None else None,
                "supersample": int(supersample), "scale": VIEW_SCALE, "version": 2}

    def make() -> dict[str, np.ndarray]:
        P = len(files)
        rgba = np.empty((P, n_poses, 4, size, size), np.uint8)
        poses = np.empty((P, n_poses, 3, 3), np.float32)
        for p, path in enumerate(files):
            verts, faces, colors = read_mesh(path)
            gen = plane_generator(seed, p)
            base = 0.55 + 0.4 * torch.rand(3, generator=gen)   # drawn always: same poses either way
            if colors is None:
                colors = base.expand(faces.shape[0], 3)
            mesh = Mesh(normalize_mesh(verts), faces, colors)
            rot = haar_rotations(n_poses, gen)
            poses[p] = rot.numpy()
            rgba[p] = _render_views(mesh, rot, size, supersample)
        skies = (read_skies(sky_dir, size) if sky_dir is not None
                 else make_skies(n_skies, size, seed))
        return {"rgba": rgba, "poses": poses, "labels": np.asarray(labels, np.int64),
                "skies": skies}

    out: dict[str, Any] = dict(cached("planes-folder", settings, make, cache_dir, enabled=cache))
    out["class_names"] = names
    return out
