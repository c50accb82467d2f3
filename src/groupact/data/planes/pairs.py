"""Pairs of views of one plane composited on one shared sky, batched; and a preview figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from groupact.data.base import Splits, TensorSet
from groupact.data.pairs import PairBatch, PairSource
from groupact.data.render import composite
from groupact.errors import DataError


def _needs(split: TensorSet) -> tuple[Tensor, Tensor, Tensor]:
    try:
        return split.extras["pose"], split.extras["object"], split.extras["skies"]
    except KeyError as exc:
        raise DataError(f"this split has no extras[{exc.args[0]!r}]; PosePairs needs rendered "
                        "views from load_planes (pose, object, skies)") from None


class PosePairs(PairSource):
    """Pairs of two rendered views of the SAME plane on the SAME sky, with g = R2 R1ᵀ.

    For each item (a view with pose R1) a second view of that plane (pose R2) is drawn; with
    ``non_identity`` it is always a different view (a different pose). One sky per pair is drawn
    from the split's skies and both RGBA views are alpha-composited over it. ``g`` is the
    rotation in the camera frame that takes the plane of view 1 to the plane of view 2; it is
    computed from the stored poses, never sampled, so ``group`` is only carried along.
    """

    def __init__(self, group: Any = None):
        self.group = group

    def pairs(self, split: TensorSet, idx: Tensor, generator: torch.Generator | None = None,
              non_identity: bool = False, device: torch.device | str = "cpu") -> PairBatch:
        poses, obj, skies = _needs(split)
        idx = torch.as_tensor(idx, dtype=torch.int64).reshape(-1).cpu()
        n = idx.numel()
        order = torch.argsort(obj, stable=True)
        uniq, counts = torch.unique_consecutive(obj[order], return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel())
        grp = torch.searchsorted(uniq, obj[idx])
        cnt = counts[grp]
        pos = rank[idx] - starts[grp]
        r = torch.rand(n, generator=generator)
        if non_identity:
            if bool((cnt < 2).any()):
                raise DataError("a plane in this split has a single view; non-identity pairs "
                                "need at least 2 poses per plane")
            k = (r * (cnt - 1)).long().clamp(max=cnt - 2)
            k = k + (k >= pos).long()
        else:
            k = (r * cnt).long().clamp(max=cnt - 1)
        other = order[starts[grp] + k]
        sky_id = torch.randint(skies.shape[0], (n,), generator=generator)
        sky = skies[sky_id].to(device)
        v1, v2 = split.images[idx].to(device), split.images[other].to(device)
        r1, r2 = poses[idx].to(device), poses[other].to(device)
        g = r2 @ r1.transpose(-1, -2)
        labels = split.labels[idx].to(device) if split.labels is not None else None
        return PairBatch(composite(v1, sky), composite(v2, sky), g, labels,
                         alpha1=v1[:, 3:4], alpha2=v2[:, 3:4])

    def views(self, split: TensorSet, idx: Tensor, generator: torch.Generator | None = None,
              device: torch.device | str = "cpu") -> Tensor:
        _, _, skies = _needs(split)
        idx = torch.as_tensor(idx, dtype=torch.int64).reshape(-1).cpu()
        if generator is None:
            sky = skies[:1].to(device)
        else:
            pick = torch.randint(skies.shape[0], (idx.numel(),), generator=generator)
            sky = skies[pick].to(device)
        return composite(split.images[idx].to(device), sky)

    def on_sky(self, split: TensorSet, idx: Tensor, sky_idx: Tensor,
               device: torch.device | str = "cpu") -> Tensor:
        """Views ``idx`` composited on the split's skies ``sky_idx`` (one each): e.g. the
        reference for the z_v/z_i swap figure, the plane of image A on the sky of image B."""
        _, _, skies = _needs(split)
        idx = torch.as_tensor(idx, dtype=torch.int64).reshape(-1).cpu()
        sky_idx = torch.as_tensor(sky_idx, dtype=torch.int64).reshape(-1).cpu()
        return composite(split.images[idx].to(device), skies[sky_idx].to(device))

    def swap_pairs(self, split: TensorSet, n: int, generator: torch.Generator,
                   device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, Tensor]:
        """``n`` (x_a, x_b, truth) triples for the swap metric: view a on sky s_a, view b of
        ANOTHER plane on another sky s_b, and truth = the plane of a at a's pose on s_b (drawn
        from the stored RGBA, so it is exact)."""
        a, b, sa, sb = self.swap_indices(split, n, generator)
        xa = self.on_sky(split, a, sa, device)
        xb = self.on_sky(split, b, sb, device)
        truth = self.on_sky(split, a, sb, device)
        return xa, xb, truth

    def swap_indices(self, split: TensorSet, n: int, generator: torch.Generator
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Views a, b (different planes where the split has several) and skies s_a ≠ s_b."""
        _, obj, skies = _needs(split)
        N, S = len(split.images), skies.shape[0]
        a = torch.randint(N, (n,), generator=generator)
        b = torch.randint(N, (n,), generator=generator)
        same = obj[a] == obj[b]
        if bool(same.any()) and int(obj.unique().numel()) > 1:   # redraw b for the same plane
            for _ in range(20):
                b = torch.where(same, torch.randint(N, (n,), generator=generator), b)
                same = obj[a] == obj[b]
                if not bool(same.any()):
                    break
        sa = torch.randint(S, (n,), generator=generator)
        sb = (sa + 1 + torch.randint(max(1, S - 1), (n,), generator=generator)) % S \
            if S > 1 else sa
        return a, b, sa, sb

    def orbit(self, split: TensorSet, item: int, n: int, device: torch.device | str = "cpu"
              ) -> tuple[Tensor, Tensor, Tensor]:
        """One view and ``n`` other rendered views of the same plane on the same sky: (x0
        repeated n times, the true views, g = R_k R_0ᵀ), for an orbit strip of rendered data."""
        poses, obj, _ = _needs(split)
        same = torch.nonzero(obj == obj[item]).flatten()
        others = same[same != item][:n]
        sky = torch.zeros(len(others) + 1, dtype=torch.int64)
        views = self.on_sky(split, torch.cat([torch.tensor([item]), others]), sky, device)
        r0 = poses[item].to(device)
        g = poses[others].to(device) @ r0.transpose(-1, -2)
        return views[:1].expand(len(others), *views.shape[1:]), views[1:], g


def preview(splits: Splits, path: str | Path, n: int = 6, seed: int = 0) -> None:
    """Save a montage of ``n`` test pairs (x1 row above x2 row) as a PNG."""
    from PIL import Image

    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(splits.test), generator=gen)[:n]
    b = PosePairs().pairs(splits.test, idx, gen, non_identity=True)
    grid = torch.cat([torch.cat(list(b.x1), 2), torch.cat(list(b.x2), 2)], 1)
    Image.fromarray((grid.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()).save(path)

