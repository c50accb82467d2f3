"""MNIST (bundled and IDX), user images (npz, folder), pairs and the block occluder."""

import gzip

import numpy as np
import pytest
import torch
from PIL import Image

from groupact.config import DataConfig
from groupact.data import Occluder, TensorSet, TransformPairs, load_data
from groupact.data.images import load_folder, load_npz
from groupact.data.mnist import load_mnist5k, load_mnist_idx
from groupact.errors import ConfigError, DataError
from groupact.groups import CyclicRotations, SO2


def test_mnist5k_fixed_disjoint_splits():
    a = load_mnist5k(3200, 800, 1000, seed=0)
    b = load_mnist5k(3200, 800, 1000, seed=0)
    assert (len(a.train), len(a.val), len(a.test)) == (3200, 800, 1000)
    assert a.image_shape == (1, 28, 28)
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != load_mnist5k(3200, 800, 1000, seed=1).fingerprint()
    assert 0.0 <= float(a.train.images.min()) and float(a.train.images.max()) <= 1.0
    assert set(a.train.labels.tolist()) == set(range(10))
    # disjoint: no test image equals a train image
    tr = {bytes(x.numpy().tobytes()) for x in a.train.images[:3200]}
    assert not any(bytes(x.numpy().tobytes()) in tr for x in a.test.images)


def _write_idx(path, array, gz):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big")
                                                     for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_reader(tmp_path, gz):
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    _write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", rng.integers(0, 256, (16, 28, 28)), gz)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", np.arange(16) % 10, gz)
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", rng.integers(0, 256, (5, 28, 28)), gz)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", np.arange(5) % 10, gz)
    s = load_mnist_idx(tmp_path)
    assert (len(s.train), len(s.val), len(s.test)) == (14, 2, 5)
    assert s.test.labels.tolist() == [0, 1, 2, 3, 4]


def test_mnist_idx_missing_files_say_what_and_where(tmp_path):
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.*put them"):
        _write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 28, 28)), False)
        load_mnist_idx(tmp_path)


def test_mnist_idx_truncated_file(tmp_path):
    for name, arr in [("train-images-idx3-ubyte", np.zeros((4, 28, 28))),
                      ("train-labels-idx1-ubyte", np.zeros(4)),
                      ("t10k-images-idx3-ubyte", np.zeros((2, 28, 28))),
                      ("t10k-labels-idx1-ubyte", np.zeros(2))]:
        _write_idx(tmp_path / name, arr, False)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated"):
        load_mnist_idx(tmp_path)


@pytest.mark.parametrize("shape, dtype", [((30, 28, 28), np.uint8), ((30, 1, 28, 28), np.float32),
                                          ((30, 28, 28, 3), np.uint8)])
def test_npz_loader_layouts(tmp_path, shape, dtype):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, shape).astype(dtype)
    if dtype == np.float32:
        images /= 255
    np.savez(tmp_path / "d.npz", images=images, labels=np.arange(30) % 3)
    s = load_npz(tmp_path / "d.npz", channels=1)
    assert s.image_shape == (1, 28, 28)
    assert len(s.train) + len(s.val) + len(s.test) == 30
    assert float(s.train.images.max()) <= 1.0


def test_npz_resize_and_errors(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((12, 32, 32), np.uint8))
    assert load_npz(tmp_path / "d.npz", size=28).image_shape == (1, 28, 28)
    np.savez(tmp_path / "bad.npz", pictures=np.zeros((4, 28, 28)))
    with pytest.raises(DataError, match="no 'images' array"):
        load_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "nan.npz", images=np.full((6, 28, 28), np.nan, np.float32))
    with pytest.raises(DataError, match="NaN"):
        load_npz(tmp_path / "nan.npz")
    with pytest.raises(DataError, match="does not exist"):
        load_npz(tmp_path / "missing.npz")


def test_folder_loader_with_classes(tmp_path):
    for cls in ("cats", "dogs"):
        (tmp_path / cls).mkdir()
        for i in range(6):
            Image.fromarray(np.full((28, 28), 40 * i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    s = load_folder(tmp_path)
    assert s.image_shape == (1, 28, 28) and s.info["classes"] == ["cats", "dogs"]
    assert set(torch.cat([s.train.labels, s.val.labels, s.test.labels]).tolist()) == {0, 1}


def test_load_data_rejects_unknown_kind():
    with pytest.raises(ConfigError, match="unknown data.kind"):
        load_data(DataConfig(kind="imagenet"))


def test_anchor_pairs_are_exact_c4_turns():
    x = torch.rand(20, 1, 28, 28)
    src = TransformPairs(CyclicRotations(4), "anchor")
    b = src.pairs(TensorSet(x), torch.arange(20), torch.Generator().manual_seed(0))
    assert torch.equal(b.x1, x)
    for i in range(20):
        assert torch.equal(b.x2[i], torch.rot90(x[i], int(b.g[i]), dims=(-2, -1)))


def test_both_mode_pairs_use_the_relative_element():
    x = torch.rand(20, 1, 28, 28)
    group = CyclicRotations(4)
    b = TransformPairs(group, "both").pairs(TensorSet(x), torch.arange(20),
                                            torch.Generator().manual_seed(0), non_identity=True)
    assert torch.equal(group.act_image(b.x1, b.g), b.x2)
    assert not group.is_identity(b.g).any()


def test_pairs_are_seeded():
    x = torch.rand(10, 1, 28, 28)
    src = TransformPairs(SO2(), "both", Occluder(7, 0.8))
    a = src.pairs(TensorSet(x), torch.arange(10), torch.Generator().manual_seed(3))
    b = src.pairs(TensorSet(x), torch.arange(10), torch.Generator().manual_seed(3))
    assert torch.equal(a.x1, b.x1) and torch.equal(a.g, b.g)


def test_block_is_at_the_same_place_in_both_images():
    x = torch.zeros(400, 1, 28, 28)
    src = TransformPairs(CyclicRotations(4), "anchor", Occluder(7, 0.8))
    b = src.pairs(TensorSet(x), torch.arange(400), torch.Generator().manual_seed(0))
    assert torch.equal(b.x1, b.x2)                    # empty digits: only the block remains
    area = b.x1.flatten(1).sum(1)
    assert set(area.unique().tolist()) <= {0.0, 49.0}  # one 7×7 block or none
    assert 0.74 < float((area > 0).float().mean()) < 0.86


# --- pixel scale from the dtype, never guessed --------------------------------------------------

def test_pixel_scale_is_decided_by_dtype():
    from groupact.data.base import to_unit_float
    ramp = np.arange(0, 256, dtype=np.uint8).reshape(1, 16, 16)
    assert torch.allclose(to_unit_float(ramp, "u8"), torch.from_numpy(ramp / 255.0).float())
    deep = (ramp.astype(np.uint16) * 257)  # 16-bit: 0..65535
    assert torch.allclose(to_unit_float(deep, "u16"), torch.from_numpy(deep / 65535.0).float())
    with pytest.raises(DataError, match="divide by the maximum"):  # old code: divided by 255
        to_unit_float(ramp / 255.0 * 1.01, "f")
    with pytest.raises(DataError, match="NaN or infinite"):
        to_unit_float(np.array([[0.5, np.inf]]), "f")


def test_16_bit_png_keeps_its_depth_and_mixed_grey_and_colour_folders_load(tmp_path):
    from groupact.data.images import read_image
    deep = (np.arange(28 * 28, dtype=np.uint16).reshape(28, 28) * 83)  # up to 65,000
    Image.fromarray(deep).save(tmp_path / "deep.png")  # a 16-bit grey PNG
    x = read_image(tmp_path / "deep.png", 1)
    assert torch.allclose(x[0, 0], torch.from_numpy(deep / 65535.0).float(), atol=1e-6)
    folder = tmp_path / "mixed"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):  # grey, colour and 16-bit grey files side by side
        arr = rng.integers(0, 255, (28, 28, 3) if i % 3 == 1 else (28, 28), dtype=np.uint8)
        Image.fromarray(arr.astype(np.uint16) * 257 if i % 3 == 2 else arr).save(
            folder / f"{i}.png")
    sp = load_folder(folder, n_train=4, n_val=1, n_test=1)
    assert sp.image_shape == (3, 28, 28)  # colour wins; grey is repeated, not dropped
    assert float(sp.train.images.max()) <= 1.0
