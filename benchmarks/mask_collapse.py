"""Does the learned mask still collapse once the loss has the paper's stop-gradient?

Before groupact 0.2, ``paper_loss`` let the mask's gradient through the stop-gradient targets
((1 − M)·sg[z2] and M·sg[z2] with a live M). docs/RESULTS.md described a mask collapse measured
with that loss: with an inexact latent action the mask went all-invariant. This script trains the
same configurations with the paper's loss (the whole target detached, as groupact now does) and,
for comparison, with the old one applied from outside (groupact's source is not modified), and
records the variant fraction after every epoch and the test PSNR at the end.

    python benchmarks/mask_collapse.py                     # the configurations below
    python benchmarks/mask_collapse.py --only so2-spatial --epochs 5

Writes benchmarks/results/mask_collapse.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import groupact.losses as losses
from groupact.config import load_config
from groupact.evaluate.metrics import psnr
from groupact.data import fixed_pairs
from groupact.train import Trainer

RESULTS = Path(__file__).resolve().parent / "results"

#: name → (recipe, overrides, epochs, what it is)
CONFIGS = {
    "so2-spatial": ("rotmnist-so2", ["model.net=authors-mnist", "model.action.kind=spatial",
                                     "model.mask.init_logit=0.0"], 15,
                    "SO(2) on the authors' 7×7 maps turned by bilinear resampling (inexact), "
                    "logits from 0"),
    "so2-vector-0": ("rotmnist-so2", ["model.mask.init_logit=0.0"], 15,
                     "SO(2) on 32 2-vectors turned by 2×2 matrices (exact), logits from 0"),
    "adrenal-0": ("adrenal3d-so3", ["model.mask.init_logit=0.0"], 5,
                  "SO(3) on 32 7³ feature volumes turned trilinearly (inexact), logits from 0"),
    "adrenal-neg": ("adrenal3d-so3", ["model.mask.init_logit=-1.0"], 5,
                    "the same, logits from −1 (the invariant side)"),
}


def leaky_latent_terms(recon, m, z1, moved, target, w):
    """The pre-0.2 latent terms: the live mask multiplies the stop-gradient target."""
    total, parts = w.recon * recon, {"recon": recon}
    if w.inv:
        parts["inv"] = losses.latent_term((1 - m) * z1, (1 - m) * target, w.relative)
        total = total + w.inv * parts["inv"]
    if w.const:
        parts["const"] = losses.latent_term(m * moved, m * target, w.relative)
        total = total + w.const * parts["const"]
    return total, {k: float(v.detach()) for k, v in parts.items()}


def run(recipe: str, overrides: list[str], epochs: int, seed: int, leaky: bool) -> dict:
    cfg = load_config(recipe, ["train.progress=false", "train.threads=1", f"train.seed={seed}",
                               f"train.epochs={epochs}", *overrides])
    original = losses._with_latent_terms
    losses._with_latent_terms = leaky_latent_terms if leaky else original
    try:
        with tempfile.TemporaryDirectory(prefix="mask-collapse-") as tmp:
            tr = Trainer(cfg, tmp, log=lambda *_: None)
            test = fixed_pairs(tr.source, tr.splits.test, 500, cfg.eval.seed, True, tr.device)
            fractions = []
            for _ in range(epochs):
                t0 = time.perf_counter()
                rec = tr.end_epoch(tr.run_epoch(), time.perf_counter() - t0)
                fractions.append(rec["mask_fraction"])
            with torch.no_grad():
                p = float(psnr(tr.model.transform(test.x1, test.g), test.x2).mean())
                nothing = float(psnr(test.x1, test.x2).mean())
    finally:
        losses._with_latent_terms = original
    return {"mask_fraction": fractions, "test_psnr": p, "psnr_identity": nothing}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(CONFIGS))
    ap.add_argument("--epochs", type=int, default=0, help="override every config's epochs")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--out", default="mask_collapse")
    args = ap.parse_args()
    torch.set_num_threads(1)
    results, lines = {}, [
        "| configuration | loss | seed | variant fraction per epoch | test PSNR (do nothing) |",
        "|---|---|---|---|---|"]
    for name in args.only.split(","):
        recipe, over, epochs, what = CONFIGS[name]
        epochs = args.epochs or epochs
        for seed in range(args.seeds):
            for leaky in (False, True):
                r = run(recipe, over, epochs, seed, leaky)
                key = f"{name}/{'pre-0.2' if leaky else 'paper'}/seed{seed}"
                results[key] = {"recipe": recipe, "overrides": over, "what": what, **r}
                loss = "pre-0.2 (mask grad through target)" if leaky else "paper (target detached)"
                fractions = " ".join(f"{f:.2f}" for f in r["mask_fraction"])
                lines.append(f"| {name}: {what} | {loss} | {seed} | {fractions} | "
                             f"{r['test_psnr']:.2f} ({r['psnr_identity']:.2f}) |")
                print(lines[-1], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"args": vars(args), "runs": results},
                                                         indent=1))
    (RESULTS / f"{args.out}.md").write_text(
        f"# Mask collapse: the paper's stop-gradient vs the pre-0.2 loss\n\n"
        f"`python benchmarks/mask_collapse.py --seeds {args.seeds}`; 1 thread; test PSNR on 500 "
        f"fixed test pairs after the last epoch.\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
