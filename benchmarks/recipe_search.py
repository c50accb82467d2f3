"""The search behind rotmnist-c4-fast: epochs to a test-PSNR target for batch size × lr × schedule.

Each row trains rotmnist-c4 with the given overrides (same data, model, mask, action and loss) and
records the test PSNR after every epoch on the fixed 1,000 non-identity test pairs. Epoch counts
are what matter here (they do not depend on the machine's load); multiply by the per-pair cost of
the batch size (benchmarks/throughput.py, section batch) to compare wall times.

    python benchmarks/recipe_search.py                  # the grid in docs/PERFORMANCE.md (~25 min)
    python benchmarks/recipe_search.py --rows 0,5,12    # a few rows
    python benchmarks/recipe_search.py --seed 3
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from groupact.config import load_config
from groupact.train import Trainer

from epoch_curve import test_psnr_per_epoch

RESULTS = Path(__file__).resolve().parent / "results"

# (batch, lr, schedule, epochs)
GRID = [
    (64, 1e-3, "constant", 50),   # the paper's settings
    (64, 3e-3, "constant", 30),
    (64, 5e-3, "constant", 30),
    (64, 1e-2, "constant", 30),
    (64, 2e-2, "constant", 30),
    (128, 6e-3, "constant", 30),
    (32, 2e-3, "constant", 30),
    (32, 4e-3, "constant", 30),
    (256, 1e-2, "onecycle", 15),
    (128, 5e-3, "onecycle", 15),
    (64, 3e-3, "onecycle", 15),
    (64, 1e-2, "onecycle", 15),
    (64, 2e-2, "onecycle", 15),
    (64, 2e-2, "onecycle", 20),
    (64, 3e-2, "onecycle", 15),
    (64, 5e-2, "onecycle", 12),
    (64, 8e-2, "onecycle", 10),
    (32, 1e-2, "onecycle", 12),
    (32, 1.5e-2, "onecycle", 12),
    (32, 2e-2, "onecycle", 12),
    (32, 3e-2, "onecycle", 10),
    (32, 5e-2, "onecycle", 10),
    (16, 5e-3, "onecycle", 8),
    (16, 1e-2, "onecycle", 8),
    (16, 1e-2, "onecycle", 10),
    (16, 1e-2, "onecycle", 12),   # rotmnist-c4-fast
    (16, 2e-2, "onecycle", 8),
]


def run_row(batch, lr, schedule, epochs, seed, threads) -> list[float]:
    cfg = load_config("rotmnist-c4", [
        "train.progress=false", f"train.threads={threads}", f"train.seed={seed}",
        f"train.batch_size={batch}", f"train.lr={lr}", f"train.schedule={schedule}",
        f"train.epochs={epochs}"])
    tr = Trainer(cfg, tempfile.mkdtemp(prefix="search-"), log=lambda *_: None)
    return test_psnr_per_epoch(tr, epochs, None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default=None, help="comma-separated row numbers of the grid")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--target", type=float, default=28.0)
    ap.add_argument("--out", default="recipe_search")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = range(len(GRID)) if args.rows is None else [int(r) for r in args.rows.split(",")]
    lines = [f"| row | batch | lr | schedule | epochs | epochs to {args.target:g} dB | "
             "final test PSNR (dB) | best test PSNR (dB) |", "|---|---|---|---|---|---|---|---|"]
    results = []
    for r in rows:
        b, lr, sched, ep = GRID[r]
        curve = run_row(b, lr, sched, ep, args.seed, args.threads)
        hit = next((i + 1 for i, p in enumerate(curve) if p >= args.target), None)
        results.append({"row": r, "batch": b, "lr": lr, "schedule": sched, "epochs": ep,
                        "seed": args.seed, "curve": curve, "epochs_to_target": hit})
        lines.append(f"| {r} | {b} | {lr:g} | {sched} | {ep} | {hit or '–'} | {curve[-1]:.2f} | "
                     f"{max(curve):.2f} |")
        print(lines[-1], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(results, indent=1))
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
