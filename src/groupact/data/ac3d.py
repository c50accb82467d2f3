"""A reader for AC3D ``.ac`` models (the format of FlightGear's and CRRCsim's aircraft).

Hand-written on purpose: trimesh (the well-kept mesh library on PyPI) reads OBJ/PLY/STL/GLTF/OFF
and more, but not AC3D; meshio reads volume/FE meshes, not AC3D; open3d neither. The format is
small and line-based (https://www.inivis.com/ac3d/man/ac3dfileformat.html), so ~150 lines read
everything the Debian models use:

- ``MATERIAL "name" rgb r g b amb … emis … spec … shi n trans t`` lines (0-based ``mat`` index);
- ``OBJECT world|group|poly|light`` blocks with ``name``, ``data`` (skipped, may span lines),
  ``texture "file"``, ``texrep u v``, ``texoff u v``, ``rot`` (9 numbers), ``loc`` (3 numbers),
  ``crease``/``url``/``subdiv``/``hidden``/``locked``/``folded`` (ignored), ``numvert``,
  ``numsurf`` with ``SURF flags`` / ``mat i`` / ``refs n`` + n lines ``index u v``, and
  ``kids n`` followed by n nested OBJECT blocks;
- transforms nest: a vertex v of an object is placed at ``v @ rot + loc`` in its parent's frame,
  and so on up to the world (AC3D's own row-vector convention; none of the Debian models uses
  ``rot``, all use ``loc``);
- polygons (SURF type 0) are triangulated by a fan from their first vertex; closed lines and
  lines (types 1, 2) are skipped (they have no area); texture coordinates become
  ``uv·texrep + texoff`` per triangle corner.

:func:`read_ac` returns an :class:`ACModel`; :func:`load_texture_atlas` reads its textures
(PNG, JPEG or SGI ``.rgb``, all through Pillow) into one atlas the rasteriser can sample.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from groupact.errors import DataError

#: object names that are not part of the airframe's look (shadows, spinning-prop discs)
SKIP_NAMES = re.compile(r"shadow|propdisc|prop_disc|prop-disc|blur", re.IGNORECASE)
#: how deep ``kids`` may nest (the Debian models nest a few levels; a hostile file, thousands)
MAX_DEPTH = 64


@dataclass
class ACModel:
    """A triangulated AC3D model: world-frame vertices, triangles, per-face material colour,
    per-corner texture coordinates and a texture index per face (−1 = untextured)."""

    vertices: Tensor                   # (V, 3) float32
    faces: Tensor                      # (F, 3) int64
    colors: Tensor                     # (F, 3) float32 material rgb in [0, 1]
    uv: Tensor                         # (F, 3, 2) float32 (texrep/texoff applied)
    tex_id: Tensor                     # (F,) int64 index into ``textures`` or −1
    textures: list[str] = field(default_factory=list)   # texture file names as written
    alpha: Tensor | None = None        # (F,) 1 − material transparency


def _floats(parts: list[str], n: int, where: str) -> list[float]:
    if len(parts) < n:
        raise DataError(f"{where}: expected {n} numbers, got {len(parts)}")
    try:
        return [float(p) for p in parts[:n]]
    except ValueError:
        raise DataError(f"{where}: not numbers: {' '.join(parts[:n])}") from None


def _count(parts: list[str], remaining: int, where: str) -> int:
    """The count of a ``numvert``/``numsurf``/``refs``/``kids`` line, checked against the lines
    left in the file (each item takes at least one), so a header cannot make the reader
    allocate or loop for items that are not there (``numsurf 1000000000``)."""
    try:
        n = int(parts[1])
    except (IndexError, ValueError):
        raise DataError(f"{where}: '{parts[0]}' needs a whole number") from None
    if not 0 <= n <= remaining:
        raise DataError(f"{where}: '{parts[0]} {n}' but only {remaining} lines follow; the file "
                        "is truncated or corrupt")
    return n


def _int(text: str, where: str, base: int = 10) -> int:
    try:
        return int(text, base)
    except ValueError:
        raise DataError(f"{where}: not a whole number: {text[:20]}") from None


def _material(line: str, where: str) -> tuple[list[float], float]:
    m = re.search(r"\brgb\s+(\S+)\s+(\S+)\s+(\S+)", line)
    if not m:
        raise DataError(f"{where}: MATERIAL line without 'rgb r g b'")
    rgb = _floats(list(m.groups()), 3, where)
    t = re.search(r"\btrans\s+(\S+)", line)
    return rgb, float(t.group(1)) if t else 0.0


def read_ac(path: str | Path, skip_names: re.Pattern | None = SKIP_NAMES) -> ACModel:
    """Read an AC3D file into one triangulated :class:`ACModel` (see the module docstring).

    Objects whose name matches ``skip_names`` (and their kids) are left out. Raises
    :class:`~groupact.errors.DataError` naming the file and line for malformed input.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("latin-1")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    lines = text.splitlines()
    if not lines or not lines[0].startswith("AC3D"):
        raise DataError(f"{path} is not an AC3D file (first line must start with 'AC3D')")
    materials: list[tuple[list[float], float]] = []
    verts_out: list[np.ndarray] = []
    faces_out: list[list[int]] = []
    cols_out: list[list[float]] = []
    alpha_out: list[float] = []
    uv_out: list[list[list[float]]] = []
    tex_out: list[int] = []
    textures: list[str] = []
    pos = 1
    offset = 0

    def where(i: int) -> str:
        return f"{path}:{i + 1}"

    while pos < len(lines) and not lines[pos].lstrip().startswith("OBJECT"):
        s = lines[pos].strip()
        if s.startswith("MATERIAL"):
            materials.append(_material(s, where(pos)))
        pos += 1

    def left(at: int) -> int:
        return max(0, len(lines) - at - 1)

    def read_object(rot: np.ndarray, loc: np.ndarray, skipped: bool, depth: int = 0) -> None:
        nonlocal pos
        if pos >= len(lines) or not lines[pos].strip().startswith("OBJECT"):
            raise DataError(f"{where(pos)}: expected an OBJECT line")
        if depth > MAX_DEPTH:
            raise DataError(f"{where(pos)}: objects nest deeper than {MAX_DEPTH} levels")
        kind = lines[pos].split()[1].lower() if len(lines[pos].split()) > 1 else "poly"
        pos += 1
        name, tex, texrep, texoff = "", None, (1.0, 1.0), (0.0, 0.0)
        my_rot, my_loc = np.eye(3), np.zeros(3)
        verts = np.zeros((0, 3))
        surfs: list[tuple[int, list[tuple[int, float, float]]]] = []
        while pos < len(lines):
            s = lines[pos].strip()
            parts = s.split()
            if not parts:
                pos += 1
                continue
            key = parts[0]
            if key == "name":
                name = s[4:].strip().strip('"')
            elif key == "data":
                n_chars, got = _int(parts[1] if len(parts) > 1 else "", where(pos)), 0
                while got < n_chars and pos + 1 < len(lines):
                    pos += 1
                    got += len(lines[pos]) + 1
            elif key == "texture":
                tex = s[7:].strip().strip('"')
            elif key == "texrep":
                texrep = tuple(_floats(parts[1:], 2, where(pos)))
            elif key == "texoff":
                texoff = tuple(_floats(parts[1:], 2, where(pos)))
            elif key == "rot":
                my_rot = np.asarray(_floats(parts[1:], 9, where(pos))).reshape(3, 3)
            elif key == "loc":
                my_loc = np.asarray(_floats(parts[1:], 3, where(pos)))
            elif key == "numvert":
                n = _count(parts, left(pos), where(pos))
                try:
                    verts = np.asarray([[float(x) for x in lines[pos + 1 + k].split()[:3]]
                                        for k in range(n)], dtype=np.float64).reshape(n, 3)
                except (ValueError, IndexError):
                    raise DataError(f"{where(pos)}: bad vertex list ({n} vertices)") from None
                pos += n
            elif key == "numsurf":
                n_surf = _count(parts, left(pos), where(pos))
                pos += 1
                for _ in range(n_surf):
                    flags, mat, refs = 0, 0, []
                    while pos < len(lines):
                        p2 = lines[pos].split()
                        if not p2:
                            pos += 1
                            continue
                        if p2[0] == "SURF":
                            flags = _int(p2[1] if len(p2) > 1 else "", where(pos), 16)
                        elif p2[0] == "mat":
                            mat = _int(p2[1] if len(p2) > 1 else "", where(pos))
                        elif p2[0] == "refs":
                            n = _count(p2, left(pos), where(pos))
                            at = pos
                            try:
                                while len(refs) < n:
                                    pos += 1
                                    r = lines[pos].split()
                                    if not r:       # blank lines inside refs occur in the wild
                                        continue
                                    refs.append((int(r[0]), float(r[1]) if len(r) > 1 else 0.0,
                                                 float(r[2]) if len(r) > 2 else 0.0))
                            except (ValueError, IndexError):
                                raise DataError(f"{where(at)}: bad refs list") from None
                            pos += 1
                            break
                        else:
                            raise DataError(f"{where(pos)}: unexpected '{p2[0]}' in a SURF")
                        pos += 1
                    if flags & 0xF == 0 and len(refs) >= 3:
                        surfs.append((mat, refs))
                continue
            elif key == "kids":
                n_kids = _count(parts, left(pos), where(pos))
                pos += 1
                world_rot = my_rot @ rot
                world_loc = my_loc @ rot + loc
                skip = skipped or bool(skip_names is not None and skip_names.search(name))
                if not skip and kind != "light":
                    _emit(verts, surfs, world_rot, world_loc, tex, texrep, texoff)
                for _ in range(n_kids):
                    while pos < len(lines) and not lines[pos].strip():
                        pos += 1
                    if pos >= len(lines):   # fewer kids than declared (some FlightGear files)
                        break
                    read_object(world_rot, world_loc, skip, depth + 1)
                return
            pos += 1
        raise DataError(f"{path}: an OBJECT block ends without its 'kids' line")

    def _emit(verts, surfs, rot_w, loc_w, tex, texrep, texoff) -> None:
        nonlocal offset
        if not surfs or len(verts) == 0:
            return
        tid = -1
        if tex:
            if tex not in textures:
                textures.append(tex)
            tid = textures.index(tex)
        verts_out.append(verts @ rot_w + loc_w)
        nv = len(verts)
        for mat, refs in surfs:
            rgb, trans = materials[mat] if 0 <= mat < len(materials) else ([0.8, 0.8, 0.8], 0.0)
            idx = [r[0] for r in refs]
            if max(idx) >= nv or min(idx) < 0:
                raise DataError(f"{path}: a surface refers to vertex {max(idx)} of {nv}")
            uvs = [[r[1] * texrep[0] + texoff[0], r[2] * texrep[1] + texoff[1]] for r in refs]
            for k in range(1, len(refs) - 1):      # fan triangulation
                faces_out.append([offset + idx[0], offset + idx[k], offset + idx[k + 1]])
                uv_out.append([uvs[0], uvs[k], uvs[k + 1]])
                cols_out.append(rgb)
                alpha_out.append(1.0 - trans)
                tex_out.append(tid)
        offset += nv

    read_object(np.eye(3), np.zeros(3), False)
    if not faces_out:
        raise DataError(f"{path} has no polygons")
    return ACModel(
        torch.from_numpy(np.concatenate(verts_out)).to(torch.float32),
        torch.tensor(faces_out, dtype=torch.int64),
        torch.tensor(cols_out, dtype=torch.float32).clamp(0, 1),
        torch.tensor(uv_out, dtype=torch.float32),
        torch.tensor(tex_out, dtype=torch.int64),
        textures,
        torch.tensor(alpha_out, dtype=torch.float32).clamp(0, 1),
    )


def texture_roots(model_path: str | Path) -> list[Path]:
    """The folders a model's textures may come from: its own folder tree (the model's folder and
    the aircraft folder above it, where FlightGear keeps ``Textures/<airline>/``) and CRRCsim's
    ``textures/`` beside its ``objects/``. Nothing outside them is ever opened."""
    here = Path(model_path).resolve().parent
    return [here, here.parent, here.parent.parent / "textures", here.parent / "textures"]


def _inside(path: Path, roots: list[Path]) -> bool:
    where = path.resolve()
    return any(where.is_relative_to(r) for r in roots)


def find_texture(model_path: str | Path, name: str) -> Path | None:
    """Where a texture named in a model lives: next to the model, else under the aircraft's
    folders (FlightGear keeps liveries in ``../Textures/<airline>/``: the first in sorted order).

    Only files inside :func:`texture_roots` are returned. An absolute name is looked up inside
    them too (FlightGear writes ``/Aircraft/…`` relative to its data folder), never at that
    path; a name whose ``..`` leads out of the model's tree is refused (a DataError), so a model
    cannot pull an arbitrary image of the machine into the training data.
    """
    model_path = Path(model_path)
    roots = texture_roots(model_path)
    base = Path(name.replace("\\", "/"))
    if base.anchor:
        base = base.relative_to(base.anchor)
    if not str(base) or str(base) == ".":
        return None
    if ".." in base.parts and not _inside(model_path.parent / base, roots[:2]):
        raise DataError(f"{model_path}: texture '{name[:80]}' lies outside the model's folder; "
                        "textures must be inside it (no '..' that leads out)")
    for folder in (model_path.parent, model_path.parent.parent):
        cand = folder / base
        if cand.is_file() and _inside(cand, roots):
            return cand
    for root in (model_path.parent, model_path.parent.parent):
        hits = sorted(p for p in root.rglob(glob.escape(base.name))
                      if p.is_file() and _inside(p, roots))
        if hits:
            return hits[0]
    for root in (model_path.parent.parent.parent / "textures",
                 model_path.parent.parent / "textures"):   # CRRCsim: objects/ and textures/
        cand = root / base.name
        if cand.is_file() and _inside(cand, roots):
            return cand
    return None


def load_texture_atlas(model_path: str | Path, names: list[str], side: int = 128
                       ) -> tuple[Tensor, Tensor]:
    """The model's textures resized to ``side``² and stacked: ``atlas`` (T, 3, side, side) in
    [0, 1] and ``found`` (T,) bool (a texture that cannot be found or read is grey, not found)."""
    from PIL import Image

    atlas = torch.full((max(1, len(names)), 3, side, side), 0.8)
    found = torch.zeros(max(1, len(names)), dtype=torch.bool)
    for i, name in enumerate(names):
        p = find_texture(model_path, name)
        if p is None:
            continue
        try:
            with Image.open(p) as im:
                im = im.convert("RGB").resize((side, side), Image.Resampling.BILINEAR)
                atlas[i] = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)
                found[i] = True
        except (OSError, ValueError):
            continue
    return atlas, found


__all__ = ["ACModel", "SKIP_NAMES", "find_texture", "load_texture_atlas", "read_ac"]
