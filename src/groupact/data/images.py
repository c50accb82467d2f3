"""A user's own images: an .npz with an ``images`` array, or a folder of PNG/JPEG files."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from groupact.data.base import Splits, TensorSet, split_indices, to_unit_float
from groupact.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def fit_images(x: Tensor, size: int | None, channels: int | None, where: str) -> Tensor:
    """Resize (N, C, H, W) images to size×size and convert channels, if asked (batched)."""
    if channels is not None and x.shape[1] != channels:
        if channels == 1 and x.shape[1] in (3, 4):
            x = (x[:, :3] * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, True)
        elif channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1).contiguous()
        elif channels == 3 and x.shape[1] == 4:
            x = x[:, :3]
        else:
            raise DataError(f"{where}: cannot turn {x.shape[1]}-channel images into {channels}")
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False).clamp(0, 1)
    return x


def _as_nchw(images: np.ndarray, where: str) -> Tensor:
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[1] not in (1, 3, 4) and images.shape[-1] in (1, 3, 4):
        images = np.moveaxis(images, -1, 1)  # (N, H, W, C) → (N, C, H, W)
    if images.ndim != 4:
        raise DataError(f"{where}: 'images' must be (N, H, W) or (N, C, H, W); got shape "
                        f"{images.shape}")
    return to_unit_float(np.ascontiguousarray(images), where)


def _labels(labels: np.ndarray | None, n: int, where: str) -> Tensor | None:
    if labels is None:
        return None
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != n:
        raise DataError(f"{where}: {n} images but {labels.shape[0]} labels")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: 'labels' must be integers; got {labels.dtype}")
    if n and (labels.min() < 0 or labels.max() >= n):
        raise DataError(f"{where}: 'labels' must be class numbers 0..K-1 (fewer than the "
                        f"{n} images); they span [{labels.min()}, {labels.max()}]")
    return torch.from_numpy(labels.astype(np.int64))


def _split(x: Tensor, y: Tensor | None, n_train, n_val, n_test, seed, info) -> Splits:
    n = x.shape[0]
    n_val = n_val if n_val is not None else max(1, n // 6)   # unset sizes: the defaults
    n_test = n_test if n_test is not None else max(1, n // 6)
    n_train = n_train if n_train is not None else n - n_val - n_test
    if n_train <= 0 or n_val <= 0 or n_test <= 0:
        raise DataError(f"{info['source']}: {n} images is too few for train/val/test splits "
                        f"({n_train}/{n_val}/{n_test}); add images or set data.n_train, "
                        "data.n_val and data.n_test")
    tr, va, te = split_indices(n, n_train, n_val, n_test, seed)

    def part(i):
        return TensorSet(x[i], y[i] if y is not None else None)

    return Splits(part(tr), part(va), part(te), info={**info, "split_seed": seed})


def load_npz(path: str | Path, size=None, channels=None, n_train=None, n_val=None, n_test=None,
             seed: int = 0) -> Splits:
    """An .npz with ``images`` (N, H, W) or (N, C, H, W), uint8 or float, optional ``labels``."""
    path = Path(path or "")
    if not path.is_file():
        raise DataError(f"data file {path} does not exist; give data.path=FILE.npz holding an "
                        "'images' array (N, H, W) or (N, C, H, W) and optionally 'labels' (N,)")
    try:
        with np.load(path, allow_pickle=False) as f:
            if "images" not in f.files:
                raise DataError(f"{path} has no 'images' array (it has: {', '.join(f.files)})")
            images = f["images"]
            labels = f["labels"] if "labels" in f.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read {path} as .npz ({type(e).__name__}: {str(e)[:80]}); is it "
                        "truncated? save it again with numpy.savez") from None
    where = str(path)
    x = fit_images(_as_nchw(images, where), size, channels, where)
    y = _labels(labels, x.shape[0], where)
    return _split(x, y, n_train, n_val, n_test, seed,
                  {"name": "npz", "stand_in": False, "source": f"user images in {path}"})


def load_folder(path: str | Path, size=None, channels=None, n_train=None, n_val=None,
                n_test=None, seed: int = 0) -> Splits:
    """A folder of images; sub-folders, if any, are the classes (sorted names → 0, 1, …)."""
    root = Path(path or "")
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist; give data.path=FOLDER of "
                        "PNG/JPEG files (optionally one sub-folder per class)")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"image folder {root} holds no {'/'.join(IMAGE_SUFFIXES)} files")
    classes = sorted({p.parent.relative_to(root).as_posix() for p in files})
    decoded = [decode_image(p) for p in files]  # decoding is per file; the maths after is batched
    if channels is None:  # one channel count for all: colour if any file is colour
        channels = 3 if any(a.ndim == 3 for a in decoded) else 1
    shapes = {a.shape[:2] for a in decoded}
    if len(shapes) > 1 and size is None:
        raise DataError(f"images in {root} differ in size ({sorted(shapes)[:3]}…); set data.size "
                        "to resize them all")
    groups: dict[tuple, list[int]] = {}  # files of one size and dtype go through as one batch
    for i, a in enumerate(decoded):
        groups.setdefault((a.shape, a.dtype.str), []).append(i)
    x = None
    for idx in groups.values():
        part = fit_images(_as_nchw(np.stack([decoded[i] for i in idx]), str(root)), size,
                          channels, str(root))
        if x is None:
            x = part.new_empty((len(files), *part.shape[1:]))
        x[idx] = part
    y = None
    if len(classes) > 1:
        index = {c: i for i, c in enumerate(classes)}
        y = torch.tensor([index[p.parent.relative_to(root).as_posix()] for p in files])
    return _split(x, y, n_train, n_val, n_test, seed,
                  {"name": "folder", "stand_in": False, "source": f"user images in {root}",
                   "classes": classes if y is not None else None})


def decode_image(path: Path) -> np.ndarray:
    """One image file as (H, W) grey or (H, W, 3) colour, uint8 or uint16 (16-bit PNG/TIFF
    keep their depth), or a DataError: unreadable, or so large it would exhaust memory."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                    arr = np.array(im)
                    if arr.dtype.kind == "f" or arr.min() < 0 or arr.max() > 65535:
                        raise DataError(f"cannot read image {path}: mode {im.mode} pixels are not "
                                        "0..65535; save it as an 8- or 16-bit image")
                    return arr.astype(np.uint16)
                grey = im.mode in ("L", "1", "LA", "P") and _palette_is_grey(im)
                return np.array(im.convert("L" if grey else "RGB"))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"image {path} is too large to decode safely (over "
                        f"{Image.MAX_IMAGE_PIXELS:,} pixels); resize it first") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"cannot read image {path}: {str(e)[:100]}") from None


def _palette_is_grey(im) -> bool:
    """A palette image whose colours are all grey reads as grey; other modes as they are."""
    if im.mode != "P":
        return True
    pal = im.getpalette() or []
    return all(pal[i] == pal[i + 1] == pal[i + 2] for i in range(0, len(pal) - 2, 3))


def read_image(path: str | Path, channels: int) -> Tensor:
    """One image file as a (1, C, H, W) float tensor in [0, 1] (for `groupact transform`)."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder, not an image; give an image file")
    if not path.is_file():
        raise DataError(f"image {path} does not exist")
    arr = decode_image(path)
    return fit_images(_as_nchw(arr[None], str(path)), None, channels, str(path))
