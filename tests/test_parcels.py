"""Brain-atlas parcels as binary 3D shapes, on tiny label volumes written here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from groupact.config import DataConfig
from groupact.data import load_data, parcels
from groupact.errors import DataError

nib = pytest.importorskip("nibabel")


def _box_labels() -> np.ndarray:
    """Label 1: a 6×4×2 bar plus a far stray blob; label 2 touches label 1's bar; label 3 is tiny."""
    lab = np.zeros((24, 20, 16), np.int16)
    lab[4:10, 4:8, 4:6] = 1        # the bar (48 voxels)
    lab[20:22, 16:18, 12:14] = 1   # a stray piece (8 voxels), far away
    lab[10:14, 4:8, 4:6] = 2       # touches the bar face to face
    lab[1, 1, 1] = 3
    return lab


def test_largest_pieces_keeps_the_big_piece_and_the_shared_border():
    lab = _box_labels()
    out = parcels.largest_pieces(lab)
    assert (out == 1).sum() == 48 and (out[20:22, 16:18, 12:14] == 0).all()
    assert (out == 2).sum() == 32          # its border with label 1 came back whole
    assert (out == 3).sum() == 1


def test_parcel_shapes_are_centred_in_the_ball_and_oriented():
    lab = np.zeros((30, 30, 30), np.int64)
    lab[5:25, 14:16, 14:16] = 7            # a bar along x (left → right)
    shapes, ids = parcels.parcel_shapes(lab, np.ones(3), size=16, min_voxels=10)
    assert ids.tolist() == [7] and shapes.shape == (1, 16, 16, 16)
    s = shapes[0]
    assert set(np.unique(s)) <= {0, 1}
    nz = np.argwhere(s)
    extent = nz.max(0) - nz.min(0) + 1
    assert extent[2] > 3 * max(extent[0], extent[1])   # x is W, the last axis
    assert np.abs(nz.mean(0) - 7.5).max() < 1.0         # centred
    assert np.sqrt(((nz - 7.5) ** 2).sum(1)).max() <= 8  # inside the inscribed ball
    small, none = parcels.parcel_shapes(lab, np.ones(3), size=16, min_voxels=1000)
    assert small.shape == (0, 16, 16, 16) and len(none) == 0


def test_anisotropic_voxels_keep_proportions():
    lab = np.zeros((30, 30, 10), np.int64)
    lab[5:25, 10:20, 2:8] = 1              # 20 × 10 × 6 voxels at 1 × 1 × 3 mm: 20 × 10 × 18 mm
    s = parcels.parcel_shapes(lab, np.array([1.0, 1.0, 3.0]), size=16, min_voxels=10)[0][0]
    nz = np.argwhere(s)
    d, h, w = nz.max(0) - nz.min(0) + 1     # (z, y, x)
    assert abs(d / w - 18 / 20) < 0.25 and abs(h / w - 10 / 20) < 0.2


def test_loader_folder_classes_split_and_errors(tmp_path):
    folder = tmp_path / "atlases"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(2):
        lab = np.zeros((20, 20, 20), np.int16)
        for j in range(6):                  # six disjoint boxes per atlas
            a = 2 + 3 * j
            lab[a:a + 2, 2:6 + k * 4, 2 + rng.integers(0, 3):12] = j + 1
        nib.save(nib.Nifti1Image(lab, np.eye(4)), str(folder / f"atlas{k}.nii.gz"))
    s = load_data(DataConfig(kind="parcels3d", path=str(folder), size=8, cache_dir=str(tmp_path / "c")))
    assert len(s.train) + len(s.val) + len(s.test) == 12
    assert s.train.images.shape[1:] == (1, 8, 8, 8)
    assert torch.equal(s.train.images, s.train.images.round())
    assert s.info["classes"] == ["atlas0", "atlas1"] and s.info["name"] == "brain-parcels"
    labels = torch.cat([s.train.labels, s.val.labels, s.test.labels])
    assert sorted(labels.tolist()) == [0] * 6 + [1] * 6
    with pytest.raises(DataError, match="apt-get install mricron-data"):
        parcels.atlas_files(None, root=tmp_path)
    with pytest.raises(DataError, match="no .nii"):
        parcels.atlas_files(tmp_path / "c")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), str(tmp_path / "f.nii"))
    (tmp_path / "only").mkdir()
    (tmp_path / "f.nii").rename(tmp_path / "only" / "f.nii")
    with pytest.raises(DataError, match="integer 3D label volume"):
        load_data(DataConfig(kind="parcels3d", path=str(tmp_path / "only"), size=8,
                             cache_dir=str(tmp_path / "c")))
