"""Triangle meshes: the :class:`Mesh` the renderer draws, read from the formats users have.

A mesh is ``vertices (V, 3) float32`` and ``faces (F, 3) int64`` (0-based), plus one base colour
per face ``(F, 3)`` in [0, 1]. :func:`read_mesh` reads Wavefront .obj (ShapeNet), .off
(ModelNet), .stl, .ply, .glb/.gltf through trimesh, the field's mesh library (polygons become
triangle fans, multi-part scenes one mesh, face or vertex colours kept where the file has them).
:func:`normalize_mesh` centres a mesh on its bounding-box centre and scales it into the unit ball,
so it fits the renderer's view for any rotation. The procedural stand-in airplanes are in
:mod:`groupact.data.airplanes`; AC3D (.ac) models with textures in :mod:`groupact.data.ac3d`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from groupact.errors import DataError
from groupact.extras import need

#: the mesh formats :func:`read_mesh` reads (by suffix, lower case)
MESH_SUFFIXES = (".obj", ".off", ".stl", ".ply", ".glb", ".gltf")

@dataclass
class Mesh:
    """A triangle mesh with one base colour per face."""

    vertices: Tensor  # (V, 3) float32
    faces: Tensor  # (F, 3) int64
    colors: Tensor  # (F, 3) float32 in [0, 1]

    @staticmethod
    def concat(parts: list["Mesh"]) -> "Mesh":
        verts, faces, cols, offset = [], [], [], 0
        for p in parts:
            verts.append(p.vertices)
            faces.append(p.faces + offset)
            cols.append(p.colors)
            offset += p.vertices.shape[0]
        return Mesh(torch.cat(verts), torch.cat(faces), torch.cat(cols))

    def mirrored_z(self) -> "Mesh":
        """The mirror image across the plane z = 0 (left wing from right wing)."""
        v = self.vertices * torch.tensor([1.0, 1.0, -1.0])
        return Mesh(v, self.faces.flip(1), self.colors)

    def normalized(self, radius: float = 1.0) -> "Mesh":
        return Mesh(normalize_mesh(self.vertices, radius), self.faces, self.colors)


def read_mesh(path: str | Path) -> tuple[Tensor, Tensor, Tensor | None]:
    """Vertices (V, 3) float32, triangles (F, 3) int64 and per-face colours (F, 3) in [0, 1] (None
    when the file has none) of a mesh file in one of :data:`MESH_SUFFIXES`."""
    trimesh = need("trimesh", "planes", "reading mesh files")

    path = Path(path)
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise DataError(f"cannot read mesh {path}: unknown format '{path.suffix}'; give one of "
                        + ", ".join(MESH_SUFFIXES))
    if not path.is_file():
        raise DataError(f"cannot read mesh {path}: no such file")
    try:
        mesh = trimesh.load(str(path), force="mesh", process=False)
        vertices = np.asarray(mesh.vertices, dtype=np.float32)
        faces = np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 3)
    except Exception as exc:  # trimesh's parsers raise anything from IndexError to KeyError
        raise DataError(f"cannot read mesh {path}: {exc.__class__.__name__}: "
                        f"{str(exc)[:80]}") from None
    if len(vertices) == 0 or len(faces) == 0:
        raise DataError(f"mesh {path} has {len(vertices)} vertices and {len(faces)} faces; "
                        "give a file with triangles or polygons")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise DataError(f"mesh {path} has face indices outside its {len(vertices)} vertices")
    if not np.isfinite(vertices).all():
        raise DataError(f"mesh {path} has non-finite vertex coordinates")
    return torch.from_numpy(vertices), torch.from_numpy(faces), _face_colors(mesh, len(faces))


def _face_colors(mesh, n_faces: int) -> Tensor | None:
    """The file's own colours per face (vertex colours averaged over each face), if it has any."""
    kind = getattr(mesh.visual, "kind", None)
    if kind == "face":
        rgb = np.asarray(mesh.visual.face_colors, dtype=np.float32)[:, :3] / 255.0
    elif kind == "vertex":
        vc = np.asarray(mesh.visual.vertex_colors, dtype=np.float32)[:, :3] / 255.0
        rgb = vc[np.asarray(mesh.faces)].mean(1)
    else:
        return None
    return torch.from_numpy(np.ascontiguousarray(rgb[:n_faces]))


def write_mesh(path: str | Path, vertices: Tensor, faces: Tensor,
               colors: Tensor | None = None) -> None:
    """Write a triangle mesh in the format its suffix names (any of :data:`MESH_SUFFIXES`)."""
    trimesh = need("trimesh", "planes", "writing mesh files")
    mesh = trimesh.Trimesh(vertices.detach().cpu().numpy(), faces.detach().cpu().numpy(),
                           process=False)
    if colors is not None:
        rgba = np.concatenate([colors.detach().cpu().numpy(), np.ones((len(colors), 1))], 1)
        mesh.visual.face_colors = (rgba.clip(0, 1) * 255).round().astype(np.uint8)
    mesh.export(str(path))


def normalize_mesh(vertices: Tensor, radius: float = 1.0) -> Tensor:
    """Centre on the bounding-box centre and scale so the farthest vertex lies at ``radius``."""
    v = vertices.to(torch.float32)
    centre = (v.amin(0) + v.amax(0)) / 2
    v = v - centre
    r = float(v.norm(dim=1).max())
    if not r > 0:
        raise DataError("mesh has zero extent (all vertices coincide)")
    return v * (radius / r)
