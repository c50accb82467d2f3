"""3D data: the NIfTI folder and MedMNIST loaders on tiny files in the real formats, the two
generated stand-ins (mni152-synthetic, adrenal-synthetic) and the on-disk cache behind them."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from groupact.data import adrenal, brain, cache
from groupact.data.base import Splits
from groupact.errors import DataError

nib = pytest.importorskip("nibabel")


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("GROUPACT_CACHE", str(folder))
    return folder


def _all(sp: Splits) -> tuple[torch.Tensor, torch.Tensor]:
    parts = (sp.train, sp.val, sp.test)
    return torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts])


# ---------------------------------------------------------------------------------------- cache

def test_cache_hit_miss_corrupt_and_atomic(tmp_cache):
    calls = []

    def make():
        calls.append(1)
        return {"a": np.arange(6, dtype=np.uint8).reshape(2, 3), "b": np.ones(3)}

    first = cache.cached("toy", {"n": 2}, make)
    second = cache.cached("toy", {"n": 2}, make)
    assert len(calls) == 1 and all(np.array_equal(first[k], second[k]) for k in first)
    assert set(second) == {"a", "b"} and second["a"].dtype == np.uint8
    cache.cached("toy", {"n": 3}, make)  # other settings → another file
    assert len(calls) == 2
    files = sorted(tmp_cache.iterdir())
    assert len(files) == 2 and all(f.suffix == ".npz" for f in files)  # no temporary files left
    path = cache.cache_path("toy", {"n": 2})
    path.write_bytes(path.read_bytes()[:40])  # a truncated file
    with pytest.warns(RuntimeWarning, match="unreadable"):
        again = cache.cached("toy", {"n": 2}, make)
    assert len(calls) == 3 and np.array_equal(again["a"], first["a"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache.cached("toy", {"n": 2}, make)  # the rewritten file is intact
    assert len(calls) == 3


def test_cache_off_and_bad_settings(monkeypatch, tmp_cache):
    monkeypatch.setenv("GROUPACT_CACHE", "off")
    calls = []
    make = lambda: calls.append(1) or {"a": np.zeros(2)}  # noqa: E731
    cache.cached("toy", {}, make)
    cache.cached("toy", {}, make)
    assert len(calls) == 2 and not tmp_cache.exists()
    with pytest.raises(DataError, match="JSON"):
        cache.cached("toy", {"x": object()}, make)


# ----------------------------------------------------------------------------- brain: NIfTI folder

def _nifti_folder(root: Path, labels: bool = True) -> Path:
    folder = root / "mri"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        vol = rng.random((10, 12, 9)).astype(np.float32) * 100
        vol[:, :, -2:] += 1000.0 * (i + 1)  # the top (superior) slab is bright
        img = nib.Nifti1Image(vol, np.diag([2.0, 2.0, 2.0, 1.0]))
        nib.save(img, str(folder / (f"sub{i}.nii.gz" if i else f"sub{i}.nii")))
    if labels:
        (folder / "labels.csv").write_text("filename,label\nsub0.nii,0\nsub1,1\nsub2.nii.gz,1\n")
    return folder


def test_brain_folder_loads(tmp_path):
    sp = brain.load_brain_folder(_nifti_folder(tmp_path), size=8, val_fraction=0.0,
                                 test_fraction=0.34, seed=1)
    assert (len(sp.train), len(sp.val), len(sp.test)) == (2, 0, 1)
    x, y = _all(sp)
    assert x.shape == (3, 1, 8, 8, 8) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.max()) > 0.99
    idx = torch.cat([sp.train.extras["file_index"], sp.test.extras["file_index"]])
    assert torch.equal(y, torch.tensor([0, 1, 1])[idx]) and y.dtype == torch.int64
    profile = x[:, 0].mean(dim=(2, 3))  # mean over each axial slice, along D
    assert (profile.argmax(dim=1) >= 5).all()  # D runs inferior → superior: the bright top slab
    assert (profile[:, 0] < 0.02).all()  # the short axis was padded (kept aspect) with the minimum
    assert sp.info["stand_in"] is False and sp.info["files"][0] == "sub0.nii"


def test_brain_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        brain.load_brain_folder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"\.nii"):
        brain.load_brain_folder(tmp_path / "empty")
    folder = _nifti_folder(tmp_path)
    (folder / "labels.csv").write_text("sub0.nii,0\nsub1.nii.gz,1\n")
    with pytest.raises(DataError, match="no label for sub2"):
        brain.load_brain_folder(folder)
    (folder / "labels.csv").unlink()
    (folder / "broken.nii.gz").write_bytes(b"not a volume")
    with pytest.raises(DataError, match="broken.nii.gz"):
        brain.load_brain_folder(folder)
    (folder / "broken.nii.gz").unlink()
    sp = brain.load_brain_folder(folder, size=6)  # no labels.csv → no labels
    assert sp.train.labels is None and len(sp.train) + len(sp.val) + len(sp.test) == 3


# ------------------------------------------------------------------------ brain: mni152-synthetic

def test_brain_synthetic_shapes_labels_determinism_and_cache(tmp_cache):
    sp = brain.load_brain3d_synthetic(6, 2, 2, size=16, seed=3)
    assert sp.image_shape == (1, 16, 16, 16)
    assert (len(sp.train), len(sp.val), len(sp.test)) == (6, 2, 2)
    x, y = _all(sp)
    assert x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) <= 1
    assert sorted(sp.train.labels.tolist()) == [0, 0, 0, 1, 1, 1]  # half of each split
    assert sp.info["stand_in"] is True and sp.info["name"] == "mni152-synthetic"
    assert "nilearn" in sp.info["source"]
    fresh = brain.load_brain3d_synthetic(6, 2, 2, size=16, seed=3, use_cache=False)
    assert torch.equal(fresh.train.images, sp.train.images)  # deterministic for a seed
    assert torch.equal(fresh.test.labels, sp.test.labels)
    other = brain.load_brain3d_synthetic(6, 2, 2, size=16, seed=4, use_cache=False)
    assert not torch.equal(other.train.images, sp.train.images)

    files = list(tmp_cache.glob("mni152-synthetic-3d-*.npz"))
    assert len(files) == 1
    hit = brain.load_brain3d_synthetic(6, 2, 2, size=16, seed=3)
    assert torch.equal(hit.train.images, sp.train.images) and hit.fingerprint() == sp.fingerprint()
    files[0].write_bytes(b"PK\x03\x04 garbage")
    with pytest.warns(RuntimeWarning, match="regenerating"):
        again = brain.load_brain3d_synthetic(6, 2, 2, size=16, seed=3)
    assert torch.equal(again.train.images, sp.train.images)


_SAME_ON_EVERY_CPU = """
import json, torch
from groupact.data import brain
from groupact.data.brain.population import randn64
draws = randn64(37, 29, generator=torch.Generator().manual_seed(5))
vols = brain.load_brain3d_synthetic(24, 4, 4, size=32, seed=0, use_cache=False)
slices = brain.load_brain2d_slices(8, 2, 2, size=48, seed=0, use_cache=False)
print(json.dumps([vols.fingerprint(), slices.fingerprint(), draws.tolist()]))
"""


def test_brain_synthetic_bytes_do_not_depend_on_the_cpu_kernels():
    """The population is the same bytes whichever kernels torch and MKL pick for the CPU (the
    float32 generator differed in a few voxels per million between AVX-512, AVX2 and plain
    builds, and so did every fingerprint made from it), and randn64 takes torch.randn's numbers."""
    import json
    import subprocess
    import sys

    def run(**env):
        out = subprocess.run([sys.executable, "-c", _SAME_ON_EVERY_CPU], capture_output=True,
                             text=True, env={**os.environ, "GROUPACT_CACHE": "off", **env})
        assert out.returncode == 0, out.stderr
        *fingerprints, draws = json.loads(out.stdout)
        return fingerprints, torch.tensor(draws, dtype=torch.float64)

    native, draws = run()
    for env in ({"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"},
                {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}):
        fingerprints, other = run(**env)
        assert fingerprints == native, env
        # float64 draws: the CPU's own log, sin and cos may differ in the last bit, no more
        assert torch.allclose(other, draws, rtol=1e-14, atol=1e-14), env
    from groupact.data.brain.population import randn64
    for shape in ((5,), (37, 29), (4, 16)):
        ours = randn64(*shape, generator=torch.Generator().manual_seed(5))
        torchs = torch.randn(*shape, generator=torch.Generator().manual_seed(5))
        assert ours.dtype == torch.float64 and ours.shape == torchs.shape
        assert torch.allclose(ours, torchs.double(), rtol=0, atol=1e-5)

def test_brain_synthetic_label1_enlarges_ventricles():
    t1, vent = brain.mni152_template(32)
    region, tissue = vent > 0.2, t1 > 0.3
    assert int(region.sum()) > 20
    # population: relative to the brain's own brightness the ventricle region is darker in class 1
    sp = brain.load_brain3d_synthetic(32, 0, 0, size=32, seed=0, use_cache=False)
    x, y = sp.train.images[:, 0], sp.train.labels
    ratio = x[:, region].mean(1) / x[:, tissue].mean(1)
    assert ratio[y == 1].mean() < ratio[y == 0].mean() - 0.02
    # the same subjects without the enlargement: every class-1 subject's ventricles got darker
    flat = brain.load_brain3d_synthetic(32, 0, 0, size=32, seed=0, use_cache=False,
                                        enlarge_mm=(0.0, 0.0))
    assert torch.equal(flat.train.labels, y)
    assert torch.equal(flat.train.images[y == 0], sp.train.images[y == 0])
    drop = flat.train.images[:, 0][:, region].mean(1) - x[:, region].mean(1)
    assert (drop[y == 1] > 0.01).all()


def test_brain_slices_synthetic_and_folder(tmp_path):
    sl = brain.load_brain2d_slices(4, 2, 2, size=24, seed=0, n_slices=3)
    assert sl.image_shape == (1, 24, 24)
    assert (len(sl.train), len(sl.val), len(sl.test)) == (12, 6, 6)
    assert torch.equal(sl.train.labels.view(4, 3), sl.train.labels.view(4, 3)[:, :1].expand(4, 3))
    assert sl.train.extras["subject"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert 0 <= float(sl.train.images.min()) and float(sl.train.images.max()) <= 1
    assert float(sl.train.images.mean()) > 0.1 and sl.info["stand_in"] is True
    folder = _nifti_folder(tmp_path)
    fs = brain.load_brain2d_slices(size=8, n_slices=2, path=folder)
    assert fs.image_shape == (1, 8, 8) and len(fs.train) + len(fs.val) + len(fs.test) == 6
    assert fs.train.labels.shape == (len(fs.train),)


# ------------------------------------------------------------------------------ adrenal: MedMNIST

def _medmnist_arrays(rng: np.random.Generator) -> dict[str, np.ndarray]:
    out = {}
    for split, n in (("train", 4), ("val", 2), ("test", 3)):
        out[f"{split}_images"] = (rng.random((n, 28, 28, 28)) < 0.1).astype(np.uint8) * 255
        out[f"{split}_labels"] = rng.integers(0, 2, (n, 1)).astype(np.uint8)
    return out


def test_medmnist_npz_loads_with_its_splits(tmp_path):
    arrays = _medmnist_arrays(np.random.default_rng(0))
    path = tmp_path / "tiny_adrenal.npz"
    np.savez_compressed(path, **arrays)
    sp = adrenal.load_medmnist_npz(path)
    for split in ("train", "val", "test"):
        part = getattr(sp, split)
        assert part.images.shape == (len(arrays[f"{split}_labels"]), 1, 28, 28, 28)
        assert part.images.dtype == torch.float32 and part.labels.dtype == torch.int64
        assert set(part.images.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(part.images[:, 0], torch.from_numpy(arrays[f"{split}_images"] / 255.0).float())
        assert part.labels.tolist() == arrays[f"{split}_labels"][:, 0].tolist()
    assert sp.info["stand_in"] is False


def test_medmnist_missing_wrong_key_shape_and_md5(tmp_path):
    with pytest.raises(DataError) as e:
        adrenal.load_medmnist_npz(tmp_path / "adrenalmnist3d.npz")
    msg = str(e.value)
    assert "10519652" in msg and "bbd3c5a5576322bc4cdfea780653b1ce" in msg
    assert str(tmp_path / "adrenalmnist3d.npz") in msg and "\n" not in msg
    with pytest.raises(DataError, match="10519652"):
        adrenal.load_medmnist_npz(tmp_path)  # a folder without the file

    arrays = _medmnist_arrays(np.random.default_rng(1))
    broken = dict(arrays)
    del broken["val_labels"]
    np.savez(tmp_path / "nokey.npz", **broken)
    with pytest.raises(DataError, match="val_labels"):
        adrenal.load_medmnist_npz(tmp_path / "nokey.npz")
    bad = dict(arrays, test_images=arrays["test_images"][:, :, :, :5].reshape(3, 28, -1))
    np.savez(tmp_path / "badshape.npz", **bad)
    with pytest.raises(DataError, match="test_images"):
        adrenal.load_medmnist_npz(tmp_path / "badshape.npz")
    bad = dict(arrays, train_labels=arrays["train_labels"][:3])
    np.savez(tmp_path / "badlabels.npz", **bad)
    with pytest.raises(DataError, match="train_labels"):
        adrenal.load_medmnist_npz(tmp_path / "badlabels.npz")

    (tmp_path / "real").mkdir()
    named = tmp_path / "real" / "adrenalmnist3d.npz"
    np.savez(named, **arrays)  # right name, different bytes → checksum error
    with pytest.raises(DataError, match="MD5 .* differs"):
        adrenal.load_medmnist_npz(named)
    assert len(adrenal.load_medmnist_npz(tmp_path / "real", check_md5=False).train) == 4
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match="not a readable"):
        adrenal.load_medmnist_npz(tmp_path / "junk.npz")


# -------------------------------------------------------------------- adrenal: adrenal-synthetic

def test_adrenal_synthetic_layout_and_reader(tmp_path, tmp_cache):
    arrays = adrenal.generate_adrenal_like(20, 4, 6, seed=0, path=tmp_path / "synth.npz")
    for split, n in (("train", 20), ("val", 4), ("test", 6)):
        im, lab = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        assert im.shape == (n, 28, 28, 28) and im.dtype == np.uint8
        assert lab.shape == (n, 1) and lab.dtype == np.uint8
        assert set(np.unique(im).tolist()) <= {0, 255}
        assert lab.sum() == n // 2  # half of every split has a mass
    fg = (arrays["train_images"] > 0).reshape(20, -1).sum(1)
    assert (fg > 30).all() and (fg < 0.2 * 28 ** 3).all()  # a thin object, not empty, not a block
    assert (arrays["train_images"][:, [0, -1]] == 0).mean() > 0.95  # it sits inside the box

    read = adrenal.load_medmnist_npz(tmp_path / "synth.npz")  # the real file's reader
    sp = adrenal.load_adrenal_synthetic(20, 4, 6, seed=0)
    assert torch.equal(read.train.images, sp.train.images)
    assert torch.equal(read.test.labels, sp.test.labels)
    assert sp.info["stand_in"] is True and "adrenal" in sp.info["description"]
    assert set(sp.train.images.unique().tolist()) == {0.0, 1.0}
    assert len(list(tmp_cache.glob("adrenal-synthetic-*.npz"))) == 1
    again = adrenal.generate_adrenal_like(20, 4, 6, seed=0, use_cache=False)
    assert all(np.array_equal(again[k], arrays[k]) for k in arrays)  # deterministic


def test_adrenal_masses_add_a_nodule_to_the_same_shape():
    # the shapes do not depend on the labels: all-normal and all-mass runs share their base shapes
    normal = adrenal.generate_adrenal_like(40, 0, 0, seed=5, mass_fraction=0.0, use_cache=False)
    mass = adrenal.generate_adrenal_like(40, 0, 0, seed=5, mass_fraction=1.0, use_cache=False)
    a, b = normal["train_images"] > 0, mass["train_images"] > 0
    assert (b | a == b).all()  # every mass shape contains its normal shape
    grown = b.reshape(40, -1).sum(1) - a.reshape(40, -1).sum(1)
    assert (grown > 0).mean() >= 0.9 and grown.mean() > 40
    # in a mixed population, class 1 has more foreground and a thicker part (the nodule)
    from scipy import ndimage
    mixed = adrenal.load_adrenal_synthetic(40, 0, 0, seed=6, use_cache=False)
    x, y = mixed.train.images[:, 0].numpy() > 0.5, mixed.train.labels.numpy()
    fg = x.reshape(40, -1).sum(1)
    thick = np.array([ndimage.distance_transform_edt(v).max() for v in x])
    assert fg[y == 1].mean() > fg[y == 0].mean()
    assert thick[y == 1].mean() > thick[y == 0].mean() + 0.3


def test_generators_reject_bad_settings():
    with pytest.raises(DataError, match="unknown adrenal"):
        adrenal.generate_adrenal_like(2, 0, 0, use_cache=False, wobble=1)
    with pytest.raises(DataError, match="unknown brain"):
        brain.load_brain3d_synthetic(2, 0, 0, size=8, use_cache=False, wobble=1)
    with pytest.raises(DataError, match="n_train"):
        brain.load_brain3d_synthetic(0, 0, 0, size=8, use_cache=False)
    assert os.environ["GROUPACT_CACHE"].endswith("cache")


def test_save_npz_writes_whole_files_and_leaves_no_temporaries(tmp_path):
    import numpy as np

    from groupact.data.adrenal import save_npz

    out = save_npz(tmp_path / "sub" / "shapes.npz", {"images": np.arange(6).reshape(2, 3)})
    assert out == tmp_path / "sub" / "shapes.npz"
    assert np.array_equal(np.load(out)["images"], np.arange(6).reshape(2, 3))
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["shapes.npz"]
