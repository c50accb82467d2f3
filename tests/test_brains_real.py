"""Real held-out brains (Debian's Colin27 and ITK T1) on tiny NIfTI files written here."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from groupact.data import brains_real
from groupact.data.brain import load_brain3d_synthetic
from groupact.errors import DataError

nib = pytest.importorskip("nibabel")
ROOT = Path(__file__).resolve().parents[1]


def _head(shape=(20, 24, 12), zooms=(2.0, 2.0, 3.0), orientation="RAS"):
    """An ellipsoid 'brain' (value 100, a 200 spot in its superior-anterior part) inside a
    brighter 'skull' shell (value 250) — a T1 and its brain mask, in the given axis order."""
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(float)
    c = (np.array(shape) - 1) / 2
    r = ((idx - c) / (np.array(shape) / 2)) ** 2
    inside = r.sum(-1) < 0.5
    shell = (r.sum(-1) < 0.9) & ~inside
    t1 = np.where(inside, 100.0, 0.0) + np.where(shell, 250.0, 0.0)
    # superior = +z, anterior = +y in RAS
    spot = inside & (idx[..., 2] > c[2] + 1) & (idx[..., 1] > c[1] + 2)
    t1[spot] = 200.0
    affine = np.diag([*zooms, 1.0])
    if orientation == "LPS":   # flip x and y voxel axes: nibabel must reorient back to RAS
        t1, inside = t1[::-1, ::-1].copy(), inside[::-1, ::-1].copy()
        affine = np.diag([-zooms[0], -zooms[1], zooms[2], 1.0])
    return t1.astype(np.float32), inside.astype(np.uint8), affine


def _install(root: Path, orientation="RAS") -> None:
    """Write both registered brains where their Debian packages would put them under root."""
    t1, mask, affine = _head(orientation=orientation)
    for name, b in brains_real.REAL_BRAINS.items():
        (root / b.t1).parent.mkdir(parents=True, exist_ok=True)
        if b.mask is None:  # a skull-stripped T1: brain = T1 > 0
            nib.save(nib.Nifti1Image(t1 * mask, affine), str(root / b.t1))
        else:
            nib.save(nib.Nifti1Image(t1, affine), str(root / b.t1))
            nib.save(nib.Nifti1Image(mask, affine), str(root / b.mask))


def test_missing_package_names_the_install_step(tmp_path):
    with pytest.raises(DataError, match="apt-get install mricron-data"):
        brains_real.real_brain_files("colin27", tmp_path)
    with pytest.raises(DataError, match="unknown held-out brain 'bob'.*colin27"):
        brains_real.real_brain_files("bob", tmp_path)


@pytest.mark.parametrize("orientation", ["RAS", "LPS"])
def test_real_brain_is_1mm_skull_stripped_ball_cube_in_DHW_order(tmp_path, orientation):
    _install(tmp_path, orientation)
    t1, mask = brains_real.real_brain_files("itk-t1", tmp_path)
    cube = brains_real.load_real_brain(t1, mask, reference=0.5)
    side = cube.shape[0]
    assert cube.shape == (side,) * 3 and 0 <= cube.min() and cube.max() <= 1
    # the brain spans 2·sqrt(0.5)·(40, 48, 36) mm: the cube is at least the longest extent
    assert side >= int(np.sqrt(0.5) * 48)
    inside = cube > 0
    # skull stripped: the shell (250 → 0.625 after scaling) is gone; brain 100 → 0.25, spot 0.5
    assert cube.max() <= 0.5 + 1e-5
    assert np.isclose(cube[inside], 0.25, atol=1e-5).mean() > 0.3   # the plateau (edges blend)
    assert np.percentile(cube[inside], brains_real.MATCH_PERCENTILE) == pytest.approx(0.5, abs=1e-3)
    # every brain voxel lies in the inscribed ball
    idx = np.argwhere(inside)
    assert np.sqrt(((idx - (side - 1) / 2) ** 2).sum(1)).max() <= side / 2 + 0.5
    # orientation: (D, H, W) = (I→S, A→P, L→R) — the superior-anterior spot sits at high D, low H
    spot = np.argwhere(cube > 0.4).mean(0)
    assert spot[0] > (side - 1) / 2 and spot[1] < (side - 1) / 2
    assert abs(spot[2] - (side - 1) / 2) < 2


def test_ball_cube_keeps_orientation_and_pads_with_zeros():
    brain = np.zeros((9, 5, 3), bool)
    brain[2:7, 1:4, 1:2] = True
    vol = np.arange(brain.size, dtype=np.float32).reshape(brain.shape)
    cube, = brains_real.ball_cube([vol], brain)
    side = cube.shape[0]
    assert side >= 5 and cube.shape == (side,) * 3
    nz = np.argwhere(cube)
    assert (nz.max(0) - nz.min(0) + 1).tolist() == [5, 3, 1]   # the box, not rotated
    with pytest.raises(DataError, match="empty"):
        brains_real.ball_cube([vol], np.zeros_like(brain))


def test_heldout_replaces_only_the_test_split(tmp_path, monkeypatch):
    monkeypatch.setenv("GROUPACT_CACHE", "off")
    _install(tmp_path)
    kw = dict(n_train=4, n_val=2, n_test=5, size=8, seed=3, use_cache=False)
    plain = load_brain3d_synthetic(**kw)
    held = load_brain3d_synthetic(heldout=["colin27", "itk-t1"], heldout_root=tmp_path, **kw)
    assert torch.equal(plain.train.images, held.train.images)
    assert torch.equal(plain.val.images, held.val.images)
    assert held.test.images.shape == (5, 1, 8, 8, 8) and held.test.labels is None
    assert held.test.extras["brain"].tolist() == [0, 1, 0, 1, 0]
    assert not torch.equal(held.test.images[:1], plain.test.images[:1])
    assert set(held.info["heldout"]) == {"colin27", "itk-t1"}
    # deformations differ per subject: no two test volumes are equal
    flat = held.test.images.flatten(1)
    assert torch.cdist(flat, flat).add(torch.eye(5) * 1e9).min() > 0
    with pytest.raises(DataError, match="n_test >= 1"):
        load_brain3d_synthetic(heldout=["colin27"], heldout_root=tmp_path,
                               **{**kw, "n_test": 0})


def test_cli_refuses_heldout_for_a_non_brain_run(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(ROOT / "pretrained" / "rotmnist", run)
    before = sorted(p.name for p in run.iterdir())
    r = subprocess.run([sys.executable, "-m", "groupact.cli", "evaluate", str(run),
                        "--heldout", "colin27"], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.startswith("groupact: error: --heldout evaluates a brain3d run")
    assert len(r.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in run.iterdir()) == before
