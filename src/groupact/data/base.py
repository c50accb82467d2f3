"""Datasets as in-memory tensors with fixed train/val/test splits.

Every loader returns a :class:`Splits`: float images in [0, 1] shaped (N, C, H, W) or
(N, C, D, H, W), integer labels (or None), and a provenance record that says honestly where the
data came from (real files, a package's bundled copy, or a generated stand-in). Whole datasets sit in
memory as one tensor, so batches are gathered by index: no Dataset/DataLoader per-sample path.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from groupact.errors import DataError


@dataclass
class TensorSet:
    """One split: images (N, C, *spatial) float32 in [0, 1] and optional labels (N,) int64."""

    images: Tensor
    labels: Tensor | None = None
    #: extra per-item tensors a pair source may need (poses of rendered views, …)
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.labels is not None and self.labels.shape[0] != self.images.shape[0]:
            raise DataError(f"{self.images.shape[0]} images but {self.labels.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass
class Splits:
    """train / val / test splits plus provenance (``info``) recorded in every run folder."""

    train: TensorSet
    val: TensorSet
    test: TensorSet
    info: dict[str, Any] = field(default_factory=dict)
    #: datasets whose pairs are not T_g of one image (rendered poses) supply their own source,
    #: a callable ``group -> PairSource``; None means pairs by the group's action on images
    pair_source: Callable[..., Any] | None = None
    #: the shape a model sees when it differs from the stored one (planes: RGBA stored, RGB seen)
    input_shape: tuple[int, ...] | None = None

    @property
    def image_shape(self) -> tuple[int, ...]:
        """The shape of one model input: (C, H, W) or (C, D, H, W)."""
        if self.input_shape is not None:
            return tuple(self.input_shape)
        return tuple(self.train.images.shape[1:])

    def fingerprint(self) -> str:
        """A short hash of the split contents, so a resumed or evaluated run can check its data."""
        h = hashlib.sha256()
        for part in (self.train, self.val, self.test):
            h.update(str(tuple(part.images.shape)).encode())
            h.update(part.images[:: max(1, len(part) // 64)].float().mul(255).round()
                     .to(torch.uint8).numpy().tobytes())
            if part.labels is not None:
                h.update(part.labels.numpy().tobytes())
        return h.hexdigest()[:16]

    def summary(self) -> dict[str, Any]:
        return {**self.info, "image_shape": list(self.image_shape),
                "n_train": len(self.train), "n_val": len(self.val), "n_test": len(self.test),
                "fingerprint": self.fingerprint()}


def require_items(splits: Splits) -> Splits:
    """Refuse a split with no items, naming it: an empty training split leaves an epoch with no
    step (a division by zero in the trainer), an empty validation or test split has no mean."""
    where = splits.info.get("source") or splits.info.get("name") or "the data"
    for name, part in (("training", splits.train), ("validation", splits.val),
                       ("test", splits.test)):
        if len(part) == 0:
            raise DataError(f"{where}: the {name} split holds no images; every split needs "
                            "one or more (add images, or check data.n_train, data.n_val and "
                            "data.n_test)")
    return splits


def split_indices(n: int, n_train: int, n_val: int, n_test: int, seed: int) -> tuple[Tensor, ...]:
    """A seeded permutation cut into train / val / test index sets (fixed for a given seed)."""
    if n_train + n_val + n_test > n:
        raise DataError(f"asked for {n_train}+{n_val}+{n_test} items but the data has {n}; "
                        "lower data.n_train / data.n_val / data.n_test")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    a, b = n_train, n_train + n_val
    return perm[:a], perm[a:b], perm[b:b + n_test]


def to_unit_float(images: Any, where: str) -> Tensor:
    """Pixel arrays → float32 tensor in [0, 1], the scale decided by dtype, never guessed.

    uint8 is divided by 255 and uint16 (16-bit PNG/TIFF) by 65535; bool is 0/1; other integer
    arrays must hold 0..1 or 0..255; floats must already lie in [0, 1] (a float image that is
    slightly above 1 is an error, not a reason to divide by 255). NaN and inf are refused.
    """
    arr = np.asarray(images)
    if arr.dtype.kind not in "biuf":  # text, complex, objects, dates: not pixel values
        raise DataError(f"{where}: images have dtype {arr.dtype}; give uint8 0..255, uint16 "
                        "0..65535 or floats in [0, 1]")
    if arr.dtype == np.uint16:
        return torch.from_numpy(arr.astype(np.float32)) / 65535.0
    t = torch.from_numpy(np.array(arr, copy=True))
    if t.dtype == torch.uint8:
        return t.to(torch.float32) / 255.0
    if t.dtype == torch.bool:
        return t.to(torch.float32)
    if not torch.is_floating_point(t):
        t = t.to(torch.float32)
        if t.numel() and t.min() < 0:
            return _bad_range(t, where)
        if t.numel() and t.max() > 1:
            return t / 255.0 if t.max() <= 255 else _bad_range(t, where)
        return t
    t = t.to(torch.float32)
    if not torch.isfinite(t).all():
        raise DataError(f"{where}: images contain NaN or infinite values")
    if t.numel() and (t.min() < -1e-6 or t.max() > 1 + 1e-6):
        return _bad_range(t, where, floats=True)
    return t.clamp(0, 1)


def _bad_range(t: Tensor, where: str, floats: bool = False) -> Tensor:
    hint = "; divide by the maximum (e.g. 255) first" if floats and float(t.min()) >= 0 else ""
    raise DataError(f"{where}: image values span [{float(t.min()):g}, {float(t.max()):g}]; "
                    f"give uint8 0..255, uint16 0..65535 or floats in [0, 1]{hint}")
