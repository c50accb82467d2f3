"""Real aircraft on real skies: the Debian packages flightgear-data-ai (AC3D models with their
liveries) and crrcsim-data (models and skybox photographs), rendered once and cached."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from groupact.data.ac3d import load_texture_atlas, read_ac
from groupact.data.cache import cached
from groupact.data.mesh import normalize_mesh
from groupact.data.planes.skies import read_sky_crops
from groupact.data.planes.views import VIEW_SCALE, plane_generator
from groupact.data.render import render
from groupact.errors import DataError
from groupact.groups.rotations3d import haar_rotations


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


def skybox_files(crrc_dir: str | Path = CRRCSIM_DIR) -> list[Path]:
    """crrcsim's skybox photographs (the faces above the ground) that exist under ``crrc_dir``."""
    tex = Path(crrc_dir) / "textures"
    return [tex / f"skybox_{f}.rgb" for f in SKYBOX_FACES if (tex / f"skybox_{f}.rgb").is_file()]


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
            rot = haar_rotations(n_poses, plane_generator(seed, p))
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
