"""Every registered part through the same checks, timm-style: the tests are parametrized over the
registries themselves, so a new net, dataset kind, group, action or mask is tested by being
registered. Each case runs on tiny inputs (16² images, 8³ volumes, a dozen items).

- nets: latent (B, C, *fibre), the decoder's output in the net's declared pixel range and of the
  input's shape, finite gradients for every parameter;
- dataset kinds: a tiny split made in the test (generated, or a tiny file in the real format),
  images in [0, 1], labels int64, and pairs made from it;
- groups × the actions that accept them, and masks: forward shapes and finite gradients;
- every entry: a config naming it survives a save and a load, and `groupact info` lists it.
"""

from __future__ import annotations

import contextlib
import gzip
import io
from pathlib import Path
from typing import Any, Callable

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from groupact import laws
from groupact.build import mask_from_config
from groupact.cli import main
from groupact.config import Config, DataConfig, config_yaml, from_dict, load_config
from groupact.data import DATASETS, build_pair_source, load_data
from groupact.errors import ConfigError
from groupact.groups import GROUPS, build_group
from groupact.latent import MASKS
from groupact.nets import NETS, NetSpec, net_entry

#: tiny inputs a net is tried on, smallest first: each net is tested on the first it accepts
TINY_INPUTS = [(1, 16, 16), (3, 16, 16), (1, 28, 28), (1, 8, 8, 8), (1, 16, 16, 16)]
TINY_SPEC = dict(channels=8, widths=(8,), latent_dim=6, fibre=2, frequencies=2, blocks=1)


@pytest.fixture(scope="module")
def listing() -> str:
    """What `groupact info` prints."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["info"]) == 0
    return out.getvalue()


def _listed(listing: str, title: str, name: str) -> bool:
    section = listing.split(f"\n{title} (", 1)[1].split("\n", 1)[1]
    entries = section.split("\n")
    return any(line.startswith(f"  {name} ") for line in entries)


def _round_trips(overrides: list[str]) -> None:
    cfg = load_config("rotmnist-c4", overrides)
    assert from_dict(Config, yaml.safe_load(config_yaml(cfg))) == cfg


# --- nets --------------------------------------------------------------------------------------
def _tiny_net(name: str):
    """(input shape, encoder, decoder) on the first tiny input the net accepts."""
    for shape in TINY_INPUTS:
        try:
            encoder, decoder = net_entry(name).build(NetSpec(shape, **TINY_SPEC))
        except ConfigError:
            continue
        return shape, encoder, decoder
    pytest.fail(f"net '{name}' builds for none of the tiny inputs {TINY_INPUTS}")


@pytest.mark.parametrize("name", list(NETS))
def test_every_net_round_trips_with_finite_gradients(name, listing):
    torch.manual_seed(0)
    shape, encoder, decoder = _tiny_net(name)
    lo, hi = net_entry(name).pixel_range
    x = lo + (hi - lo) * torch.rand(2, *shape)
    z = encoder(x)
    assert z.dim() >= 3 and z.shape[0] == 2, z.shape          # (B, C, *fibre)
    y = decoder(z)
    assert y.shape == x.shape
    y_lo, y_hi = float(y.detach().min()), float(y.detach().max())
    assert lo <= y_lo and y_hi <= hi, (y_lo, y_hi)
    ((y - x).pow(2).mean() + z.pow(2).mean()).backward()
    params = list(encoder.parameters()) + list(decoder.parameters())
    missing = [i for i, p in enumerate(params) if p.requires_grad and p.grad is None]
    assert params and not missing, f"parameters without a gradient: {missing}"
    assert all(torch.isfinite(p.grad).all() for p in params if p.grad is not None)
    _round_trips([f"model.net={name}"])
    assert _listed(listing, "networks", name)


# --- dataset kinds -----------------------------------------------------------------------------
def _idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big")
                                                     for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _mnist_files(tmp: Path) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 16), ("t10k", 4)):
        _idx(tmp / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _idx(tmp / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return {"path": str(tmp)}


def _npz_file(tmp: Path) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    np.savez(tmp / "d.npz", images=rng.integers(0, 256, (12, 16, 16), dtype=np.uint8),
             labels=np.arange(12) % 3)
    return {"path": str(tmp / "d.npz")}


def _image_folder(tmp: Path) -> dict[str, Any]:
    for cls in ("a", "b"):
        (tmp / cls).mkdir()
        for i in range(4):
            Image.fromarray(np.full((16, 16), 30 * i, np.uint8)).save(tmp / cls / f"{i}.png")
    return {"path": str(tmp)}


def _nifti_brains(tmp: Path) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    for i in range(3):
        vol = rng.random((10, 12, 9)).astype(np.float32) * 100
        nib.save(nib.Nifti1Image(vol, np.diag([2.0, 2.0, 2.0, 1.0])), str(tmp / f"s{i}.nii.gz"))
    return {"path": str(tmp), "size": 8}


def _nifti_atlases(tmp: Path) -> dict[str, Any]:
    for k in range(2):
        lab = np.zeros((20, 20, 20), np.int16)
        for j in range(4):                               # four disjoint boxes per atlas
            lab[2 + 4 * j:4 + 4 * j, 2:8 + 2 * k, 3:12] = j + 1
        nib.save(nib.Nifti1Image(lab, np.eye(4)), str(tmp / f"atlas{k}.nii.gz"))
    return {"path": str(tmp), "size": 8}


#: data.kind → the DataConfig fields of a tiny split, made in tmp (a file in the real format
#: where the kind reads user files)
TINY_DATA: dict[str, Callable[[Path], dict[str, Any]]] = {
    "mnist5k": lambda tmp: {"n_train": 16, "n_val": 8, "n_test": 8},
    "mnist": _mnist_files,
    "npz": _npz_file,
    "folder": _image_folder,
    "brain3d": _nifti_brains,
    "brain2d": _nifti_brains,
    "adrenal3d": lambda tmp: {"size": 16, "n_train": 4, "n_val": 2, "n_test": 2},
    "parcels3d": _nifti_atlases,
    "planes": lambda tmp: {"size": 16, "n_items": 10, "n_poses": 2},
}
#: kinds that cannot be made tiny here, and why
SKIP_DATA = {"planes-debian": "reads the real aircraft and skies of the Debian packages "
                              "flightgear-data-ai and crrcsim-data (tests/test_planes_debian.py)"}


@pytest.mark.parametrize("kind", list(DATASETS))
def test_every_dataset_kind_loads_a_tiny_split_and_makes_pairs(kind, tmp_path, monkeypatch,
                                                               listing):
    assert _listed(listing, "datasets", kind)
    _round_trips([f"data.kind={kind}"])
    if kind in SKIP_DATA:
        pytest.skip(SKIP_DATA[kind])
    assert kind in TINY_DATA, f"add a tiny split for data.kind={kind} to TINY_DATA"
    monkeypatch.setenv("GROUPACT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "in").mkdir()
    fields = TINY_DATA[kind](tmp_path / "in")
    splits = load_data(DataConfig(kind=kind, cache_dir=str(tmp_path / "cache"), **fields))
    for part in (splits.train, splits.val, splits.test):
        x = part.images
        assert len(part) > 0 and x.dtype == torch.float32 and torch.isfinite(x).all()
        assert 0 <= float(x.min()) and float(x.max()) <= 1
        assert part.labels is None or (part.labels.dtype == torch.int64
                                       and part.labels.shape == (len(part),))
    dims = len(splits.image_shape) - 1
    group = build_group("so3" if getattr(splits, "pair_source", None) else
                        ("c4" if dims == 2 else "cube"))
    cfg = load_config("rotmnist-c4", [f"data.kind={kind}"])
    n = min(2, len(splits.train))
    batch = build_pair_source(cfg, group, splits).pairs(splits.train, torch.arange(n),
                                                        torch.Generator().manual_seed(0))
    assert batch.x1.shape == batch.x2.shape == (n, *splits.image_shape)


# --- groups, actions, masks --------------------------------------------------------------------
PAIRS = [(g, kind) for g in GROUPS for kind in laws.accepted_actions(build_group(g))]


@pytest.mark.parametrize("name", list(GROUPS))
def test_every_group_acts_on_its_images_with_gradients(name, listing):
    group = build_group(name)
    gen = torch.Generator().manual_seed(0)
    x = group.testing_images(3, 2, gen).requires_grad_()
    g = group.sample(3, gen)
    y = group.act_image(x, g)
    assert y.shape == x.shape
    y.pow(2).sum().backward()
    assert torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0
    assert len(group.describe(g)) == 3
    _round_trips([f"group.name={name}"])
    assert _listed(listing, "groups", name)


@pytest.mark.parametrize("gname,kind", PAIRS, ids=[f"{g}-{k}" for g, k in PAIRS])
def test_every_action_moves_its_fibres_with_gradients(gname, kind, listing):
    group = build_group(gname)
    action = laws.accepted_actions(group)[kind]
    probe = laws.reference_probe(group, action)
    z = probe.fn(probe.images).detach().requires_grad_()
    out = action(z, group.sample(len(z), torch.Generator().manual_seed(0)))
    assert out.shape == z.shape
    out.pow(2).sum().backward()
    grads = [z.grad] + [p.grad for p in action.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
    _round_trips([f"group.name={gname}", f"model.action.kind={kind}"])
    assert _listed(listing, "latent actions", kind)


@pytest.mark.parametrize("kind", list(MASKS))
def test_every_mask_chooses_channels_with_finite_gradients(kind, listing):
    _round_trips([f"model.mask.kind={kind}"])
    cfg = load_config("rotmnist-c4", [f"model.mask.kind={kind}"])
    mask = mask_from_config(cfg, 6, seed=0)
    m = mask()
    assert m.shape == (6,) and set(m.detach().unique().tolist()) <= {0.0, 1.0}
    if any(p.requires_grad for p in mask.parameters()):
        (m * torch.arange(6.0)).sum().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all()
                   for p in mask.parameters())
    assert _listed(listing, "masks", kind)
