"""Training and evaluation pairs (x1, x2 = T_g x1, g), made a whole batch at a time.

Two pair modes:
- ``anchor`` (the authors' code): x1 = x, x2 = T_g x, g uniform;
- ``both`` (Jin et al.): x1 = T_g1 x, x2 = T_g2 x, g = g2·g1⁻¹.

An optional :class:`Occluder` paints the same white square at the same place in both images of a
pair after the turn (rotated & blocked MNIST): the block is what the group leaves alone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from groupact.data.base import TensorSet
from groupact.errors import ConfigError
from groupact.groups import Group


@dataclass
class PairBatch:
    """A batch of pairs with the relative element g: x2 ≈ T_g x1 (None where training may not
    read it: ``pairs.g_known=false``)."""

    x1: Tensor
    x2: Tensor
    g: Tensor | None
    labels: Tensor | None = None
    #: the object's coverage (B, 1, H, W) in x1 and x2 where the data knows it (rendered objects
    #: on a background): what supervises a predicted coverage (``loss.coverage``) and splits the
    #: evaluation into object and background pixels
    alpha1: Tensor | None = None
    alpha2: Tensor | None = None


def slice_pairs(batch: PairBatch, start: int, stop: int) -> PairBatch:
    """Pairs ``start:stop`` of a batch (a rank's part of a global batch, an evaluation chunk)."""
    def part(t: Tensor | None) -> Tensor | None:
        return None if t is None else t[start:stop]

    return PairBatch(batch.x1[start:stop], batch.x2[start:stop], part(batch.g),
                     part(batch.labels), part(batch.alpha1), part(batch.alpha2))


def batches(batch: PairBatch, size: int):
    """Slices of a fixed pair batch, for memory-bounded evaluation."""
    for i in range(0, batch.x1.shape[0], size):
        yield slice_pairs(batch, i, i + size)


class PairSource(ABC):
    """Makes pairs and single views of a split's items, in batches, on any device."""

    group: Group

    @abstractmethod
    def pairs(self, split: TensorSet, idx: Tensor, generator: torch.Generator | None = None,
              non_identity: bool = False, device: torch.device | str = "cpu") -> PairBatch:
        """Pairs for the items ``idx`` (1-D index tensor) of ``split``."""

    @abstractmethod
    def views(self, split: TensorSet, idx: Tensor, generator: torch.Generator | None = None,
              device: torch.device | str = "cpu") -> Tensor:
        """Single images: canonical ones when ``generator`` is None, else randomly transformed."""


@dataclass
class Occluder:
    """A ``size``×``size`` square of value 1 at a random place with probability ``prob``."""

    size: int = 7
    prob: float = 0.8

    def sample(self, n: int, height: int, width: int, generator: torch.Generator | None,
               device) -> Tensor:
        """(n, 1, H, W) 0/1 masks, one block (or none) per sample."""
        if self.size > min(height, width):
            raise ConfigError(f"block size {self.size} exceeds the image ({height}×{width})")
        present = torch.rand(n, generator=generator) < self.prob
        top = torch.randint(0, height - self.size + 1, (n,), generator=generator)
        left = torch.randint(0, width - self.size + 1, (n,), generator=generator)
        rows = torch.arange(height)[None, :]
        cols = torch.arange(width)[None, :]
        in_rows = (rows >= top[:, None]) & (rows < top[:, None] + self.size)
        in_cols = (cols >= left[:, None]) & (cols < left[:, None] + self.size)
        mask = in_rows[:, :, None] & in_cols[:, None, :] & present[:, None, None]
        return mask[:, None].to(device=device, dtype=torch.float32)

    @staticmethod
    def paint(x: Tensor, mask: Tensor) -> Tensor:
        return torch.maximum(x, mask.expand_as(x))


class TransformPairs(PairSource):
    """Pairs made by the group's own action on the images (MNIST, volumes, brain contrast…)."""

    def __init__(self, group: Group, mode: str = "anchor", occluder: Occluder | None = None):
        if mode not in ("anchor", "both"):
            raise ConfigError(f"unknown pairs.mode '{mode}'; choose 'anchor' or 'both'")
        self.group, self.mode, self.occluder = group, mode, occluder

    def _elements(self, n: int, generator, non_identity: bool, device) -> Tensor:
        if non_identity:
            return self.group.sample_non_identity(n, generator).to(device)
        return self.group.sample(n, generator).to(device)

    def pairs(self, split, idx, generator=None, non_identity=False, device="cpu"):
        x = split.images[idx].to(device)
        n = x.shape[0]
        g = self._elements(n, generator, non_identity, device)
        if self.mode == "anchor":
            x1, x2 = x, self.group.act_image(x, g)
        else:
            g1 = self.group.sample(n, generator).to(device)
            x1 = self.group.act_image(x, g1)
            x2 = self.group.act_image(x, self.group.compose(g, g1))
        if self.occluder is not None:
            mask = self.occluder.sample(n, x.shape[-2], x.shape[-1], generator, device)
            x1, x2 = Occluder.paint(x1, mask), Occluder.paint(x2, mask)
        labels = split.labels[idx].to(device) if split.labels is not None else None
        return PairBatch(x1, x2, g, labels)

    def canonical_blocks(self, n: int, height: int, width: int,
                         device: torch.device | str = "cpu") -> Tensor | None:
        """The blocks :meth:`views` paints on ``n`` canonical views (its fixed seed-0 draw), or
        None without an occluder."""
        if self.occluder is None:
            return None
        return self.occluder.sample(n, height, width, torch.Generator().manual_seed(0), device)

    def moved_views(self, images: Tensor, g: Tensor, blocks: Tensor | None) -> Tensor:
        """What the data pairs canonical views with under ``g``: T_g of each clean image, then
        its view's block (the block is what the group leaves alone)."""
        x = self.group.act_image(images, g)
        return x if blocks is None else Occluder.paint(x, blocks)

    def views(self, split, idx, generator=None, device="cpu"):
        x = split.images[idx].to(device)
        if generator is not None:
            x = self.group.act_image(x, self.group.sample(x.shape[0], generator).to(device))
        if self.occluder is not None:
            blocks = (self.occluder.sample(x.shape[0], x.shape[-2], x.shape[-1], generator, device)
                      if generator is not None
                      else self.canonical_blocks(x.shape[0], x.shape[-2], x.shape[-1], device))
            x = Occluder.paint(x, blocks)
        return x


def fixed_pairs(source: PairSource, split: TensorSet, n: int | None, seed: int,
                non_identity: bool, device: torch.device | str) -> PairBatch:
    """Pairs fixed by a seed: validation and test pairs are the same for every run and method."""
    gen = torch.Generator().manual_seed(seed)
    count = len(split) if n is None else n
    idx = torch.arange(count) % len(split)
    return source.pairs(split, idx, gen, non_identity=non_identity, device=device)
