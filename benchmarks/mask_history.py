"""The learned mask per epoch across a model trained in stages (runs continued by train.init_from).

    python benchmarks/mask_history.py RUN [RUN ...] --out FIGURE.png [--title TEXT]

A run's own evaluation draws the mask over that run's epochs only; a model fine-tuned from
another run's weights has its history in several run folders. This joins their metrics.jsonl in
the order given (epochs renumbered 1, 2, … across the stages) and draws the same figure as the
evaluation (`groupact.evaluate.figures.mask_over_epochs`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from groupact.evaluate.figures import mask_over_epochs
from groupact.evaluate.report import read_history


def joined(run_dirs: list[Path]) -> list[dict[str, Any]]:
    """Every stage's epoch records that carry a learned mask (read and checked as the
    evaluation reads them), in order, with epochs numbered across the stages."""
    out: list[dict[str, Any]] = []
    for run in run_dirs:
        for row in read_history(run):
            if "mask" in row:
                out.append({**row, "epoch": len(out) + 1})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tau", type=float, default=0.5)
    ap.add_argument("--title", default=None)
    args = ap.parse_args()
    records = joined(args.runs)
    if not records:
        raise SystemExit("mask_history: error: no epoch with a learned mask in "
                         + ", ".join(map(str, args.runs)))
    title = args.title or " → ".join(r.name for r in args.runs) + ": the learned mask"
    mask_over_epochs(records, args.tau, args.out, title)
    print(f"wrote {args.out} ({len(records)} epochs)")


if __name__ == "__main__":
    main()
