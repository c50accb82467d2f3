"""For recipe_search.py: train a Trainer epoch by epoch, tracking test PSNR."""

from __future__ import annotations

import time

import torch

from groupact.evaluate.metrics import psnr
from groupact.data import fixed_pairs
from groupact.train import Trainer


def test_psnr_per_epoch(tr: Trainer, epochs: int, n_pairs: int | None) -> list[float]:
    """Mean test PSNR (dB) on fixed non-identity test pairs after each of ``epochs`` epochs."""
    test = fixed_pairs(tr.source, tr.splits.test, n_pairs, tr.cfg.eval.seed, True, tr.device)
    out = []
    for _ in range(epochs):
        t = time.perf_counter()
        stats = tr.run_epoch()
        tr.end_epoch(stats, time.perf_counter() - t)
        tr.model.eval()
        with torch.no_grad():
            out.append(round(float(psnr(tr.model(test.x1, test.g), test.x2).mean()), 2))
    return out
