"""Planes and skies as train / val / test splits, split by plane (stratified by class) and by sky
photograph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from groupact.data.base import Splits, TensorSet
from groupact.data.airplanes import FAMILIES
from groupact.data.planes.debian import DEBIAN_INSTALL, load_planes_debian
from groupact.data.planes.pairs import PosePairs
from groupact.data.planes.skies import read_skies
from groupact.data.planes.views import generate_planes, load_planes_folder
from groupact.errors import DataError


def _split_sizes(n: int, val_fraction: float, test_fraction: float, what: str) -> tuple[int, int]:
    """(n_test, n_val) of ``n`` items: test_fraction of them, val_fraction of the rest."""
    n_test = max(1, int(round(n * test_fraction)))
    n_val = max(1, int(round((n - n_test) * val_fraction))) if val_fraction > 0 else 0
    if n - n_test - n_val < 1:
        raise DataError(f"{n} {what} cannot be split into train/val/test; use at least 3")
    return n_test, n_val


def _cut(n: int, val_fraction: float, test_fraction: float, gen: torch.Generator,
         what: str) -> tuple[Tensor, Tensor, Tensor]:
    n_test, n_val = _split_sizes(n, val_fraction, test_fraction, what)
    perm = torch.randperm(n, generator=gen)
    return perm[n_test + n_val:].sort().values, perm[n_test:n_test + n_val].sort().values, \
        perm[:n_test].sort().values


def _quotas(counts: np.ndarray, total: int, caps: np.ndarray, gen: torch.Generator) -> np.ndarray:
    """``total`` items shared among classes in proportion to ``counts`` (largest remainder, ties
    broken at random by ``gen``), no class above its cap."""
    share = total * counts / max(int(counts.sum()), 1)
    out = np.minimum(np.floor(share).astype(np.int64), caps)
    order = torch.randperm(len(counts), generator=gen).numpy()
    # remaining units to the largest remainders first; a random order breaks ties
    order = order[np.argsort(-(share - out)[order], kind="stable")]
    while out.sum() < total and (out < caps).any():
        for c in order:
            if out.sum() < total and out[c] < caps[c]:
                out[c] += 1
    return out


def _cut_by_class(labels: np.ndarray, val_fraction: float, test_fraction: float,
                  gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Planes into train / val / test, STRATIFIED by class: the split sizes of :func:`_cut`, with
    each class's planes shared out in proportion, so a split holds every class it has room for
    (a random cut of 40 planes left two of five families out of the test planes, and a probe
    scored there says little). Every class keeps a training plane where it has two or more."""
    n_test, n_val = _split_sizes(len(labels), val_fraction, test_fraction, "planes")
    classes, counts = np.unique(labels, return_counts=True)
    spare = np.where(counts >= 2, counts - 1, counts)  # what a class can give up, keeping one
    if spare.sum() < n_test + n_val:
        spare = counts
    t = _quotas(counts, n_test, spare, gen)
    v = _quotas(counts - t, n_val, spare - t, gen)
    parts: tuple[list[Tensor], list[Tensor], list[Tensor]] = ([], [], [])
    for c, k_test, k_val in zip(classes, t, v):
        members = torch.from_numpy(np.nonzero(labels == c)[0])
        members = members[torch.randperm(len(members), generator=gen)]
        parts[2].append(members[:k_test])
        parts[1].append(members[k_test:k_test + k_val])
        parts[0].append(members[k_test + k_val:])
    tr, va, te = (torch.cat(x).sort().values for x in parts)
    return tr, va, te


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
                stratify: bool = True, log=None) -> Splits:
    """Planes in the sky as train / val / test splits, split BY PLANE (and by sky).

    ``test_fraction`` of the planes (default 20 %) are test planes; ``val_fraction`` of the rest
    (default 10 %) are validation planes. With ``stratify`` (the default) each class gives test
    and validation planes in proportion to its size, so the recipe's 40 planes of 5 families test
    every family; False is the plain random cut of groupact 0.4.0 and before, which runs trained
    then need. Skies are split the same way (when there are at least 3), so test pairs show
    unseen planes on unseen skies. Each split's ``images`` are the RGBA
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
    if stratify:
        tr, va, te = _cut_by_class(np.asarray(data["labels"]), val_fraction, test_fraction, gen)
    else:
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
                   "plane_split": "stratified by class" if stratify else "random",
                   "planes": {"train": len(tr), "val": len(va), "test": len(te)},
                   "stored_channels": "RGBA (straight alpha)", "model_channels": 3,
                   "pose_convention": "view shows p = R v (x right, y up, z to viewer); "
                                      "pair g = R2 R1^T"}
    splits.pair_source = PosePairs  # type: ignore[attr-defined]  (build_pair_source hook)
    return splits
