"""Planes in the sky: renders of airplanes under uniform SO(3) poses, composited on skies.

The paper's dataset renders airplane meshes under 100 uniform SO(3) poses each and pastes them on
sky photographs; SO(3) acts on the plane only, the sky is invariant (and the same within a pair).
Neither the meshes nor the photographs ship with any package this project may use, so:

- :func:`generate_planes` is an honest **stand-in**: procedural airplanes of five families
  (:data:`~groupact.data.mesh.FAMILIES`, the class labels) with random proportions and colours,
  drawn by the small torch rasteriser in :mod:`groupact.data.render`, on procedural skies
  (gradient, soft fractal clouds, sun glow). Its splits are named ``planes-synthetic`` with
  ``stand_in: True``.
- :func:`load_planes_folder` is the **real-format path**: a folder of Wavefront .obj meshes (one
  sub-folder per class, or none) and a folder of sky photographs (PNG/JPEG), rendered the same way.

Views are stored as straight-alpha RGBA, so the plane can be put on any sky: :class:`PosePairs`
composites both views of a pair over one shared sky, batched. Pose convention (see
:mod:`groupact.data.render`): a view with pose R shows the plane's vertices at p = R v in the camera
frame (x right, y up, z towards the viewer); the pair element is g = R2 R1ᵀ, the rotation (in the
camera frame) that takes the plane as seen in view 1 to the plane as seen in view 2.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from groupact.data.ac3d import load_texture_atlas, read_ac
from groupact.data.base import Splits, TensorSet
from groupact.data.cache import cached
from groupact.data.mesh import FAMILIES, Mesh, make_airplane, normalize_mesh, read_obj
from groupact.data.pairs import PairBatch, PairSource
from groupact.data.render import composite, random_rotations, render
from groupact.errors import DataError

#: fraction of the image the unit ball spans (a small margin so no pose touches the border)
VIEW_SCALE = 0.95
_IMAGE_EXTS = {".png", ".jpg", ".jpeg"}


# ----------------------------------------------------------------------------------------------
# skies
# ----------------------------------------------------------------------------------------------
def _fractal_noise(n: int, height: int, width: int, gen: torch.Generator, base: int = 3,
                   octaves: int = 5, stretch: float = 2.0) -> Tensor:
    """(n, 1, H, W) smooth value noise in about [0, 1], stretched horizontally."""
    out = torch.zeros(n, 1, height, width)
    total = 0.0
    for k in range(octaves):
        rh = base * 2 ** k
        rw = max(2, int(round(rh * stretch)))
        grid = torch.rand(n, 1, rh + 1, rw + 1, generator=gen)
        amp = 0.5 ** k
        out += amp * F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=True)
        total += amp
    return (out / total).clamp(0, 1)


def make_skies(n: int, size: int, seed: int = 0) -> np.ndarray:
    """n procedural skies (n, 3, size, size) uint8: a zenith→horizon gradient (blue to pale, some
    hazy or sunset-tinted), soft fractal clouds of random cover and a sun glow at a random place."""
    if n <= 0:
        raise DataError(f"n_skies must be positive, got {n}")
    gen = torch.Generator().manual_seed(7_919 + 1_000_003 * int(seed))
    H = W = int(size)

    def u(lo, hi, shape=(n,)):
        return lo + (hi - lo) * torch.rand(shape, generator=gen)

    zenith = torch.stack([u(0.08, 0.3), u(0.25, 0.5), u(0.55, 0.9)], 1)
    horizon = torch.stack([u(0.7, 0.9), u(0.8, 0.93), u(0.88, 1.0)], 1)
    warm = u(0, 1) < 0.25  # sunset / hazy warm horizon
    horizon = torch.where(warm[:, None], torch.stack([u(0.9, 1.0), u(0.65, 0.85), u(0.5, 0.7)], 1),
                          horizon)
    rows = (torch.arange(H, dtype=torch.float32) + 0.5) / H
    cols = (torch.arange(W, dtype=torch.float32) + 0.5) / W
    tilt = u(-0.15, 0.15)
    horizon_at = u(0.9, 1.4)  # where the palest colour is reached (below the frame if > 1)
    t = (rows[None, :, None] + tilt[:, None, None] * (cols[None, None, :] - 0.5))
    t = (t / horizon_at[:, None, None]).clamp(0, 1) ** u(0.7, 1.6)[:, None, None]
    sky = zenith[:, :, None, None] * (1 - t[:, None]) + horizon[:, :, None, None] * t[:, None]

    # sun glow
    sx, sy = u(-0.1, 1.1), u(-0.1, 0.7)
    d2 = ((cols[None, None, :] - sx[:, None, None]) ** 2
          + (rows[None, :, None] - sy[:, None, None]) ** 2)
    radius = u(0.15, 0.45)
    glow = torch.exp(-d2 / radius[:, None, None] ** 2) * u(0.2, 0.7)[:, None, None]
    has_core = (u(0, 1) < 0.5).float()[:, None, None]
    core = torch.exp(-d2 / (0.12 * radius[:, None, None]) ** 2) * has_core
    sun = torch.tensor([1.0, 0.93, 0.75])[None, :, None, None]
    sky = sky + (glow + core)[:, None] * (sun - sky) * 0.9

    # clouds: soft thresholded fractal noise, white where dense, greyer and thinner at the edges
    octaves = 4 if H <= 64 else 5
    noise = _fractal_noise(n, H, W, gen, base=int(u(2, 4, ()).item()), octaves=octaves,
                           stretch=float(u(1.5, 3, ())))[:, 0]
    cover = u(0.0, 0.8)
    lo = 0.64 - 0.28 * cover
    soft = u(0.06, 0.16)
    dens = ((noise - lo[:, None, None]) / soft[:, None, None]).clamp(0, 1)
    dens = dens * dens * (3 - 2 * dens) * u(0.75, 1.0)[:, None, None]
    body = ((noise - lo[:, None, None]) / (2.5 * soft[:, None, None])).clamp(0, 1)
    base_grey, top_grey = u(0.68, 0.8)[:, None, None], u(0.95, 1.0)[:, None, None]
    grey = base_grey + (top_grey - base_grey) * body
    cloud = torch.stack([grey, grey, grey * 1.01], 1)
    cloud = cloud + 0.35 * glow[:, None] * (sun - cloud)  # sunlit near the sun
    sky = sky * (1 - dens[:, None]) + cloud * dens[:, None]
    return (sky.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def read_skies(sky_dir: str | Path, size: int) -> np.ndarray:
    """Sky photographs from a folder (PNG/JPEG), centre-cropped square and resized: (S, 3, H, W)."""
    from PIL import Image

    folder = Path(sky_dir)
    if not folder.is_dir():
        raise DataError(f"sky folder {folder} does not exist; give a folder of PNG/JPEG sky photos")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in _IMAGE_EXTS)
    if not files:
        raise DataError(f"no .png/.jpg/.jpeg sky images in {folder}")
    out = []
    for p in files:
        try:
            with Image.open(p) as im:
                im = im.convert("RGB")
                w, h = im.size
                s = min(w, h)
                im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
                im = im.resize((size, size), Image.Resampling.LANCZOS)
                out.append(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1))
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read sky image {p}: {exc}") from None
    return np.stack(out)


# ----------------------------------------------------------------------------------------------
# rendering whole datasets
# ----------------------------------------------------------------------------------------------
def _render_views(mesh: Mesh, poses: Tensor, size: int, supersample: int) -> np.ndarray:
    # about 200k posed triangles per call keeps memory modest even for large real meshes
    batch = max(1, min(100, 200_000 // max(1, int(mesh.faces.shape[0]))))
    out = [render(mesh.vertices, mesh.faces, mesh.colors, poses[s:s + batch], size=size,
                  supersample=supersample, scale=VIEW_SCALE) for s in range(0, len(poses), batch)]
    return (torch.cat(out).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def _plane_generator(seed: int, index: int) -> torch.Generator:
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
            gen = _plane_generator(seed, p)
            mesh = make_airplane(int(labels[p]), gen)
            rot = random_rotations(n_poses, gen)
            poses[p] = rot.numpy()
            rgba[p] = _render_views(mesh, rot, size, supersample)
        return {"rgba": rgba, "poses": poses, "labels": labels,
                "skies": make_skies(n_skies, size, seed)}

    return cached("planes-synthetic", settings, make, cache_dir, enabled=cache)


def _mesh_files(mesh_dir: Path) -> tuple[list[Path], list[int], list[str]]:
    if not mesh_dir.is_dir():
        raise DataError(f"mesh folder {mesh_dir} does not exist; give a folder of .obj files "
                        "(optionally one sub-folder per class)")
    files = sorted(p for p in mesh_dir.rglob("*") if p.suffix.lower() == ".obj" and p.is_file())
    if not files:
        raise DataError(f"no .obj meshes in {mesh_dir}")
    groups = [p.relative_to(mesh_dir).parts[0] if len(p.relative_to(mesh_dir).parts) > 1 else ""
              for p in files]
    names = sorted(set(groups))
    return files, [names.index(g) for g in groups], [n or "plane" for n in names]


def load_planes_folder(mesh_dir: str | Path, sky_dir: str | Path | None = None,
                       n_poses: int = 100, size: int = 64, seed: int = 0, n_skies: int = 30,
                       supersample: int = 2, cache: bool = True,
                       cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Your meshes and skies, rendered like the stand-in.

    ``mesh_dir``: Wavefront .obj files; a file's first sub-folder under ``mesh_dir`` names its
    class (files directly in ``mesh_dir`` are one class, label 0 when there are no sub-folders).
    Each mesh is normalised to the unit ball and given one body colour (seeded; .mtl materials
    are ignored). ``sky_dir``: PNG/JPEG photographs, centre-cropped and resized to ``size``
    (None: procedural skies). Returns the arrays of :func:`generate_planes` plus ``class_names``.
    """
    mesh_dir = Path(mesh_dir)
    files, labels, names = _mesh_files(mesh_dir)
    sky_files = []
    if sky_dir is not None:
        sky_files = sorted(str(p) for p in Path(sky_dir).rglob("*")
                           if p.suffix.lower() in _IMAGE_EXTS)
    stamp = [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    stamp += [[s, Path(s).stat().st_size, Path(s).stat().st_mtime_ns] for s in sky_files]
    settings = {"files": stamp, "n_poses": int(n_poses), "size": int(size), "seed": int(seed),
                "n_skies": int(n_skies) if sky_dir is None else None,
                "supersample": int(supersample), "scale": VIEW_SCALE, "version": 1}

    def make() -> dict[str, np.ndarray]:
        P = len(files)
        rgba = np.empty((P, n_poses, 4, size, size), np.uint8)
        poses = np.empty((P, n_poses, 3, 3), np.float32)
        for p, path in enumerate(files):
            verts, faces = read_obj(path)
            gen = _plane_generator(seed, p)
            base = 0.55 + 0.4 * torch.rand(3, generator=gen)
            mesh = Mesh(normalize_mesh(verts), faces, base.expand(faces.shape[0], 3))
            rot = random_rotations(n_poses, gen)
            poses[p] = rot.numpy()
            rgba[p] = _render_views(mesh, rot, size, supersample)
        skies = (read_skies(sky_dir, size) if sky_dir is not None
                 else make_skies(n_skies, size, seed))
        return {"rgba": rgba, "poses": poses, "labels": np.asarray(labels, np.int64),
                "skies": skies}

    out: dict[str, Any] = dict(cached("planes-folder", settings, make, cache_dir, enabled=cache))
    out["class_names"] = names
    return out


# ----------------------------------------------------------------------------------------------
# real aircraft on real skies: the Debian packages flightgear-data-ai and crrcsim-data
# ----------------------------------------------------------------------------------------------
#: where Debian installs the two packages
FLIGHTGEAR_AI_DIR = Path("/usr/share/games/flightgear/AI/Aircraft")
CRRCSIM_DIR = Path("/usr/share/games/crrcsim")
DEBIAN_INSTALL = "sudo apt-get install flightgear-data-ai crrcsim-data"
#: .ac files in the packages that are not aircraft (lights, flares, tanks, wheels, a ferry, a
#: bomb, balloons, banners, shuttle engine parts) or not fixed-wing (CRRCsim's helicopters,
#: quadcopters, scenery and props)
NOT_AIRCRAFT = re.compile(
    r"/lights?/|light|flare|flash|exhaust|tank|wheels|banner|bomb|ferry|balloon|appleoon|"
    r"tuxalloon|probe|refuel|omspods|ssme|beacon|strobe|nav[lrb]|taxi|toggle|cone|"
    r"/hut|outhouse|table|trashcan|/log|populus|woods|terrain|freqboard|cape_cod|davis|copter|"
    r"/heli|qc01", re.IGNORECASE)
#: CRRCsim's skybox faces; the four sides show ground below the horizon (rows ≥ about half)
SKYBOX_FACES = ("n", "e", "s", "w", "u")
_SIDE_SKY_ROWS = 0.47          # fraction of a side face above its horizon haze


def debian_model_files(fg_dir: str | Path = FLIGHTGEAR_AI_DIR,
                       crrc_dir: str | Path = CRRCSIM_DIR) -> tuple[list[Path], list[int]]:
    """The aircraft .ac files of the two packages (sorted) and their source label
    (0 = FlightGear AI, full-size aircraft; 1 = CRRCsim, model aircraft and gliders)."""
    files, labels = [], []
    for label, root in ((0, Path(fg_dir)), (1, Path(crrc_dir) / "objects")):
        if root.is_dir():
            found = sorted(p for p in root.rglob("*.ac") if p.is_file()
                           and not NOT_AIRCRAFT.search("/" + str(p.relative_to(root)).lower()))
            files += found
            labels += [label] * len(found)
    return files, labels


def skybox_files(crrc_dir: str | Path = CRRCSIM_DIR) -> list[Path]:
    tex = Path(crrc_dir) / "textures"
    return [tex / f"skybox_{f}.rgb" for f in SKYBOX_FACES if (tex / f"skybox_{f}.rgb").is_file()]


def read_sky_crops(files: list[Path], per_face: int, size: int, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Random square crops of sky photographs (SGI .rgb, PNG or JPEG, read by Pillow), resized to
    ``size``: ``per_face`` crops of each file, (len(files)·per_face, 3, size, size) uint8, and the
    file index of each crop. Files named ``skybox_[nesw]*`` are cropped above their horizon
    only (their lower half is ground); crops have sides of 22–44 % of the face (the 'u' face and
    other photos: 22–62 %) and are mirrored left-right at random."""
    from PIL import Image

    rng = np.random.default_rng(10_007 + int(seed))
    out, groups = [], []
    for g, path in enumerate(files):
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                im.load()
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read sky image {path}: {exc}") from None
        w, h = im.size
        side_face = Path(path).stem.lower() in {f"skybox_{f}" for f in "nesw"}
        top_limit = int(h * _SIDE_SKY_ROWS) if side_face else h
        hi = 0.44 if side_face else 0.62
        for _ in range(per_face):
            c = int(min(w, h) * rng.uniform(0.22, hi))
            c = max(8, min(c, w, top_limit))
            x0 = int(rng.integers(0, w - c + 1))
            y0 = int(rng.integers(0, top_limit - c + 1))
            crop = im.crop((x0, y0, x0 + c, y0 + c)).resize((size, size),
                                                             Image.Resampling.LANCZOS)
            arr = np.asarray(crop, dtype=np.uint8).transpose(2, 0, 1)
            if rng.random() < 0.5:
                arr = arr[:, :, ::-1]
            out.append(np.ascontiguousarray(arr))
            groups.append(g)
    if not out:
        raise DataError("no sky images to crop")
    return np.stack(out), np.asarray(groups, np.int64)


def _render_ac(path: Path, poses: Tensor, size: int, supersample: int,
               texture_side: int = 128) -> np.ndarray:
    model = read_ac(path)
    atlas, found = load_texture_atlas(path, model.textures, texture_side)
    tex_id = model.tex_id.clone()
    if model.textures:
        tex_id[(tex_id >= 0) & ~found[tex_id.clamp(min=0)]] = -1   # missing texture: colour
    verts = normalize_mesh(model.vertices)
    batch = max(1, min(100, 200_000 // max(1, int(model.faces.shape[0]))))
    out = [render(verts, model.faces, model.colors, poses[s:s + batch], size=size,
                  supersample=supersample, scale=VIEW_SCALE, uv=model.uv, tex_id=tex_id,
                  atlas=atlas) for s in range(0, len(poses), batch)]
    return (torch.cat(out).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def missing_debian_message(what: str) -> str:
    return (f"data.kind=planes-debian needs the Debian packages flightgear-data-ai and "
            f"crrcsim-data ({what}); install them with `{DEBIAN_INSTALL}` (GPL-2+, about 300 MB; "
            f"read from {FLIGHTGEAR_AI_DIR} and {CRRCSIM_DIR}), or use data.kind=planes for the "
            "offline procedural stand-in")


def load_planes_debian(n_poses: int = 100, size: int = 64, seed: int = 0,
                       sky_crops_per_face: int = 40, n_planes: int | None = None,
                       supersample: int = 2, fg_dir: str | Path | None = None,
                       crrc_dir: str | Path | None = None, cache: bool = True,
                       cache_dir: str | Path | None = None,
                       log=None) -> dict[str, Any]:
    """Real aircraft on real skies, from files Debian installs (nothing is downloaded).

    Every aircraft .ac model of ``flightgear-data-ai`` (FlightGear's AI traffic: airliners,
    bizjets, fighters, light aircraft; textured with their liveries, the first airline in
    sorted order where a model has several) and of ``crrcsim-data`` (RC model aircraft and
    gliders), read by :mod:`groupact.data.ac3d`, normalised to the unit ball and rendered with
    full UV texturing by groupact's rasteriser under ``n_poses`` uniform SO(3) poses each.
    Skies: ``sky_crops_per_face`` random crops of each of CRRCsim's five 512² photographic
    skybox faces (cloudy blue sky; side faces cropped above the horizon). ``n_planes`` keeps a
    seeded random subset of the models. Cached on disk (keyed by the files' sizes and times).
    Returns the arrays of :func:`generate_planes` plus ``sky_groups`` (the face of each sky
    crop, so splits can keep test skies on an unseen face), ``class_names`` and ``files``.
    The package folders can be moved with ``$GROUPACT_FLIGHTGEAR_AI`` and ``$GROUPACT_CRRCSIM``.
    """
    fg_dir = Path(fg_dir or os.environ.get("GROUPACT_FLIGHTGEAR_AI") or FLIGHTGEAR_AI_DIR)
    crrc_dir = Path(crrc_dir or os.environ.get("GROUPACT_CRRCSIM") or CRRCSIM_DIR)
    files, labels = debian_model_files(fg_dir, crrc_dir)
    skies_src = skybox_files(crrc_dir)
    if not files:
        raise DataError(missing_debian_message(f"no aircraft .ac models under {fg_dir} or "
                                               f"{Path(crrc_dir) / 'objects'}"))
    if not skies_src:
        raise DataError(missing_debian_message(
            f"no sky textures {Path(crrc_dir) / 'textures' / 'skybox_*.rgb'}"))
    if n_planes is not None and n_planes < len(files):
        keep = np.sort(np.random.default_rng(31 + int(seed)).permutation(len(files))[:n_planes])
        files, labels = [files[i] for i in keep], [labels[i] for i in keep]
    stamp = [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in files + skies_src]
    settings = {"files": stamp, "n_poses": int(n_poses), "size": int(size), "seed": int(seed),
                "sky_crops_per_face": int(sky_crops_per_face), "supersample": int(supersample),
                "scale": VIEW_SCALE, "version": 1}

    def make() -> dict[str, np.ndarray]:
        P = len(files)
        rgba = np.empty((P, n_poses, 4, size, size), np.uint8)
        poses = np.empty((P, n_poses, 3, 3), np.float32)
        keep = np.ones(P, bool)
        t0 = time.time()
        for p, path in enumerate(files):
            rot = random_rotations(n_poses, _plane_generator(seed, p))
            poses[p] = rot.numpy()
            try:
                rgba[p] = _render_ac(path, rot, size, supersample)
            except DataError as exc:      # a few files in the wild are broken: leave them out
                keep[p] = False
                if log is not None:
                    log(f"skipping {path}: {exc}")
            if log is not None and (p + 1) % 25 == 0:
                log(f"rendered {p + 1}/{P} aircraft ({time.time() - t0:.0f} s)")
        # a model that renders (almost) empty or a sliver is not usable either
        cover = (rgba[:, :, 3] > 127).mean((1, 2, 3))
        keep &= cover > 0.01
        skies, groups = read_sky_crops(skies_src, sky_crops_per_face, size, seed)
        return {"rgba": rgba[keep], "poses": poses[keep],
                "labels": np.asarray(labels, np.int64)[keep], "skies": skies,
                "sky_groups": groups, "kept": np.nonzero(keep)[0].astype(np.int64)}

    out: dict[str, Any] = dict(cached("planes-debian", settings, make, cache_dir, enabled=cache))
    out["class_names"] = ["flightgear-ai", "crrcsim"]
    out["files"] = [str(files[i]) for i in out["kept"]]
    return out


# ----------------------------------------------------------------------------------------------
# splits
# ----------------------------------------------------------------------------------------------
def _cut(n: int, val_fraction: float, test_fraction: float, gen: torch.Generator,
         what: str) -> tuple[Tensor, Tensor, Tensor]:
    n_test = max(1, int(round(n * test_fraction)))
    n_val = max(1, int(round((n - n_test) * val_fraction))) if val_fraction > 0 else 0
    if n - n_test - n_val < 1:
        raise DataError(f"{n} {what} cannot be split into train/val/test; use at least 3")
    perm = torch.randperm(n, generator=gen)
    return perm[n_test + n_val:].sort().values, perm[n_test:n_test + n_val].sort().values, \
        perm[:n_test].sort().values


def _split_set(data: dict[str, Any], planes: Tensor, skies: Tensor) -> TensorSet:
    rgba = torch.from_numpy(np.ascontiguousarray(data["rgba"][planes.numpy()]))
    P, V = rgba.shape[:2]
    images = rgba.reshape(P * V, *rgba.shape[2:]).to(torch.float32) / 255.0
    labels = torch.from_numpy(np.asarray(data["labels"])[planes.numpy()]).to(torch.int64)
    poses = torch.from_numpy(np.asarray(data["poses"])[planes.numpy()]).reshape(P * V, 3, 3)
    sky = torch.from_numpy(np.asarray(data["skies"])[skies.numpy()]).to(torch.float32) / 255.0
    return TensorSet(images, labels.repeat_interleave(V), {
        "pose": poses.to(torch.float32),
        "object": planes.repeat_interleave(V),
        "view": torch.arange(V).repeat(P),
        "skies": sky,
    })


def load_planes(n_planes: int = 40, n_poses: int = 100, size: int = 64, seed: int = 0,
                n_skies: int = 30, split_seed: int = 0, val_fraction: float = 0.1,
                test_fraction: float = 0.2, mesh_dir: str | Path | None = None,
                sky_dir: str | Path | None = None, supersample: int = 2, cache: bool = True,
                cache_dir: str | Path | None = None, source: str = "synthetic",
                log=None) -> Splits:
    """Planes in the sky as train / val / test splits, split BY PLANE (and by sky).

    ``test_fraction`` of the planes (default 20 %) are test planes; ``val_fraction`` of the rest
    (default 10 %) are validation planes. Skies are split the same way (when there are at least
    3), so test pairs show unseen planes on unseen skies. Each split's ``images`` are the RGBA
    views (N = planes × n_poses, 4, H, W) with straight alpha, ``labels`` the family / class per
    view, and ``extras`` hold ``pose`` (N, 3, 3), ``object`` (N,) plane id, ``view`` (N,) pose
    index and ``skies`` (S_split, 3, H, W) floats. Models see 3-channel composites made by
    :class:`PosePairs` (the splits carry it as ``splits.pair_source``).

    With ``mesh_dir`` the meshes (and, with ``sky_dir``, the skies) are your files (see
    :func:`load_planes_folder`); with ``source="debian"`` real aircraft on real skies from the
    Debian packages (:func:`load_planes_debian`; ``n_planes`` None = all of them; test skies
    are crops of a skybox face no training sky comes from); otherwise the procedural stand-in
    (:func:`generate_planes`).
    """
    sky_groups = None
    if source == "debian":
        data = load_planes_debian(n_poses, size, seed, n_planes=n_planes,
                                  supersample=supersample, cache=cache, cache_dir=cache_dir,
                                  log=log)
        sky_groups = np.asarray(data["sky_groups"])
        fg = sum(1 for f in data["files"] if "flightgear" in f)
        how = (f"REAL aircraft on REAL skies from Debian packages: {fg} FlightGear AI models "
               f"(flightgear-data-ai) and {len(data['files']) - fg} CRRCsim models "
               "(crrcsim-data), AC3D meshes with their texture liveries, normalised to the unit "
               f"ball, rendered under {n_poses} uniform SO(3) poses each by groupact's rasteriser "
               "(orthographic, flat Lambert + ambient, UV-textured, 2×2 supersampled alpha), "
               "composited on random crops of CRRCsim's five photographic skybox faces")
        info = {"name": "planes-debian", "stand_in": False, "source": how,
                "classes": data["class_names"], "install": DEBIAN_INSTALL}
    elif source != "synthetic":
        raise DataError(f"unknown planes source '{source}'; use 'synthetic' or 'debian'")
    elif mesh_dir is not None:
        data = load_planes_folder(mesh_dir, sky_dir, n_poses, size, seed, n_skies, supersample,
                                  cache, cache_dir)
        names = data["class_names"]
        how = (f"your .obj meshes from {mesh_dir}, each normalised to the unit ball, one seeded "
               f"body colour, rendered under {n_poses} uniform SO(3) poses by groupact's "
               "rasteriser (orthographic, flat Lambert shading), composited on "
               + (f"your sky images from {sky_dir}" if sky_dir is not None
                  else "procedural skies (gradient, fractal clouds, sun glow)"))
        info = {"name": "planes-folder", "stand_in": False, "source": how, "classes": names}
    else:
        if sky_dir is not None:
            data = dict(generate_planes(n_planes, n_poses, size, seed, 1, supersample, cache,
                                        cache_dir))
            data["skies"] = read_skies(sky_dir, size)
        else:
            data = generate_planes(n_planes, n_poses, size, seed, n_skies, supersample, cache,
                                   cache_dir)
        how = ("GENERATED STAND-IN, not the paper's data: procedural airplanes of "
               f"{len(FAMILIES)} families ({', '.join(FAMILIES)}) built from simple parts with "
               f"random proportions and colours, rendered under {n_poses} uniform SO(3) poses "
               "each by groupact's torch rasteriser (orthographic, flat Lambert + ambient, "
               "2×2 supersampled alpha), composited on "
               + (f"your sky images from {sky_dir}" if sky_dir is not None else
                  "procedural skies (blue→pale gradient, soft fractal clouds, sun glow)"))
        info = {"name": "planes-synthetic", "stand_in": True, "source": how,
                "classes": list(FAMILIES)}
    P = int(data["rgba"].shape[0])
    S = int(data["skies"].shape[0])
    gen = torch.Generator().manual_seed(int(split_seed))
    tr, va, te = _cut(P, val_fraction, test_fraction, gen, "planes")
    if sky_groups is not None and len(np.unique(sky_groups)) >= 2:
        # whole photographs are held out: test crops come from a face no training crop shares;
        # validation crops are other crops of the training faces
        faces = np.unique(sky_groups)
        perm = torch.randperm(len(faces), generator=gen)
        n_test = max(1, int(round(len(faces) * test_fraction)))
        test_faces = faces[perm[:n_test].numpy()]
        in_test = np.isin(sky_groups, test_faces)
        s_te = torch.from_numpy(np.nonzero(in_test)[0])
        rest = torch.from_numpy(np.nonzero(~in_test)[0])
        rest = rest[torch.randperm(len(rest), generator=gen)]
        n_val = max(1, int(round(len(rest) * val_fraction)))
        s_va, s_tr = rest[:n_val].sort().values, rest[n_val:].sort().values
        sky_split = f"by photograph: test skies are crops of face(s) {test_faces.tolist()}"
    elif S >= 3:
        s_tr, s_va, s_te = _cut(S, val_fraction, test_fraction, gen, "skies")
        if len(s_va) == 0:
            s_va = s_tr
        sky_split = "disjoint"
    else:
        s_tr = s_va = s_te = torch.arange(S)
        sky_split = "shared (fewer than 3 skies)"
    splits = Splits(_split_set(data, tr, s_tr), _split_set(data, va, s_va),
                    _split_set(data, te, s_te))
    splits.info = {**info, "n_planes": P, "n_poses": int(data["rgba"].shape[1]),
                   "size": int(data["rgba"].shape[-1]), "seed": int(seed),
                   "split_seed": int(split_seed), "n_skies": S, "sky_split": sky_split,
                   "planes": {"train": len(tr), "val": len(va), "test": len(te)},
                   "stored_channels": "RGBA (straight alpha)", "model_channels": 3,
                   "pose_convention": "view shows p = R v (x right, y up, z to viewer); "
                                      "pair g = R2 R1^T"}
    splits.pair_source = PosePairs  # type: ignore[attr-defined]  (build_pair_source hook)
    return splits


# ----------------------------------------------------------------------------------------------
# pairs
# ----------------------------------------------------------------------------------------------
def _needs(split: TensorSet) -> tuple[Tensor, Tensor, Tensor]:
    try:
        return split.extras["pose"], split.extras["object"], split.extras["skies"]
    except KeyError as exc:
        raise DataError(f"this split has no extras[{exc.args[0]!r}]; PosePairs needs rendered "
                        "views from load_planes (pose, object, skies)") from None


class PosePairs(PairSource):
    """Pairs of two rendered views of the SAME plane on the SAME sky, with g = R2 R1ᵀ.

    For each item (a view with pose R1) a second view of that plane (pose R2) is drawn; with
    ``non_identity`` it is always a different view (a different pose). One sky per pair is drawn
    from the split's skies and both RGBA views are alpha-composited over it. ``g`` is the
    rotation in the camera frame that takes the plane of view 1 to the plane of view 2; it is
    computed from the stored poses, never sampled, so ``group`` is only carried along.
    """

    def __init__(self, group: Any = None):
        self.group = group

    def pairs(self, split: TensorSet, idx: Tensor, generator: torch.Generator | None = None,
              non_identity: bool = False, device: torch.device | str = "cpu") -> PairBatch:
        poses, obj, skies = _needs(split)
        idx = torch.as_tensor(idx, dtype=torch.int64).reshape(-1).cpu()
        n = idx.numel()
        order = torch.argsort(obj, stable=True)
        uniq, counts = torch.unique_consecutive(obj[order], return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel())
        grp = torch.searchsorted(uniq, obj[idx])
        cnt = counts[grp]
        pos = rank[idx] - starts[grp]
        r = torch.rand(n, generator=generator)
        if non_identity:
            if bool((cnt < 2).any()):
                raise DataError("a plane in this split has a single view; non-identity pairs "
                                "need at least 2 poses per plane")
            k = (r * (cnt - 1)).long().clamp(max=cnt - 2)
            k = k + (k >= pos).long()
        else:
            k = (r * cnt).long().clamp(max=cnt - 1)
        other = order[starts[grp] + k]
        sky_id = torch.randint(skies.shape[0], (n,), generator=generator)
        sky = skies[sky_id].to(device)
        x1 = composite(split.images[idx].to(device), sky)
        x2 = composite(split.images[other].to(device), sky)
        r1, r2 = poses[idx].to(device), poses[other].to(device)
        g = r2 @ r1.transpose(-1, -2)
        labels = split.labels[idx].to(device) if split.labels is not None else None
        return PairBatch(x1, x2, g, labels)

    def views(self, split: TensorSet, idx: Tensor, generator: torch.Generator | None = None,
              device: torch.device | str = "cpu") -> Tensor:
        _, _, skies = _needs(split)
        idx = torch.as_tensor(idx, dtype=torch.int64).reshape(-1).cpu()
        if generator is None:
            sky = skies[:1].to(device)
        else:
            pick = torch.randint(skies.shape[0], (idx.numel(),), generator=generator)
            sky = skies[pick].to(device)
        return composite(split.images[idx].to(device), sky)

    def on_sky(self, split: TensorSet, idx: Tensor, sky_idx: Tensor,
               device: torch.device | str = "cpu") -> Tensor:
        """Views ``idx`` composited on the split's skies ``sky_idx`` (one each): e.g. the
        reference for the z_v/z_i swap figure, the plane of image A on the sky of image B."""
        _, _, skies = _needs(split)
        idx = torch.as_tensor(idx, dtype=torch.int64).reshape(-1).cpu()
        sky_idx = torch.as_tensor(sky_idx, dtype=torch.int64).reshape(-1).cpu()
        return composite(split.images[idx].to(device), skies[sky_idx].to(device))

    def swap_pairs(self, split: TensorSet, n: int, generator: torch.Generator,
                   device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, Tensor]:
        """``n`` (x_a, x_b, truth) triples for the swap metric: view a on sky s_a, view b of
        ANOTHER plane on another sky s_b, and truth = the plane of a at a's pose on s_b (drawn
        from the stored RGBA, so it is exact)."""
        a, b, sa, sb = self.swap_indices(split, n, generator)
        xa = self.on_sky(split, a, sa, device)
        xb = self.on_sky(split, b, sb, device)
        truth = self.on_sky(split, a, sb, device)
        return xa, xb, truth

    def swap_indices(self, split: TensorSet, n: int, generator: torch.Generator
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Views a, b (different planes where the split has several) and skies s_a ≠ s_b."""
        _, obj, skies = _needs(split)
        N, S = len(split.images), skies.shape[0]
        a = torch.randint(N, (n,), generator=generator)
        b = torch.randint(N, (n,), generator=generator)
        same = obj[a] == obj[b]
        if bool(same.any()) and int(obj.unique().numel()) > 1:   # redraw b for the same plane
            for _ in range(20):
                b = torch.where(same, torch.randint(N, (n,), generator=generator), b)
                same = obj[a] == obj[b]
                if not bool(same.any()):
                    break
        sa = torch.randint(S, (n,), generator=generator)
        sb = (sa + 1 + torch.randint(max(1, S - 1), (n,), generator=generator)) % S \
            if S > 1 else sa
        return a, b, sa, sb

    def orbit(self, split: TensorSet, item: int, n: int, device: torch.device | str = "cpu"
              ) -> tuple[Tensor, Tensor, Tensor]:
        """One view and ``n`` other rendered views of the same plane on the same sky: (x0
        repeated n times, the true views, g = R_k R_0ᵀ), for an orbit strip of rendered data."""
        poses, obj, _ = _needs(split)
        same = torch.nonzero(obj == obj[item]).flatten()
        others = same[same != item][:n]
        sky = torch.zeros(len(others) + 1, dtype=torch.int64)
        views = self.on_sky(split, torch.cat([torch.tensor([item]), others]), sky, device)
        r0 = poses[item].to(device)
        g = poses[others].to(device) @ r0.transpose(-1, -2)
        return views[:1].expand(len(others), *views.shape[1:]), views[1:], g


def preview(splits: Splits, path: str | Path, n: int = 6, seed: int = 0) -> None:
    """Save a montage of ``n`` test pairs (x1 row above x2 row) as a PNG."""
    from PIL import Image

    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(splits.test), generator=gen)[:n]
    b = PosePairs().pairs(splits.test, idx, gen, non_identity=True)
    grid = torch.cat([torch.cat(list(b.x1), 2), torch.cat(list(b.x2), 2)], 1)
    Image.fromarray((grid.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()).save(path)


__all__ = ["PosePairs", "generate_planes", "load_planes", "load_planes_folder", "make_skies",
           "preview", "read_skies"]
