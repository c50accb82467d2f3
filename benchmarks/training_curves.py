"""What longer training buys: validation PSNR against training time, from run folders' histories.

    python benchmarks/training_curves.py RUN_DIR [RUN_DIR ...] --out benchmarks/results/curves
        [--budget-min 30]

Reads each run's metrics.jsonl (one record an epoch: ``seconds`` of that epoch, ``val_psnr``,
``mask_fraction``), and writes OUT.png (validation PSNR and variant-mask fraction against cumulative
training minutes, the default budget marked) and OUT.md (per run: the best validation PSNR, the
PSNR reached at a quarter, half and all of its time, and what the last quarter of the time added).
Times are the runs' own (1 torch thread on the shared 2-core machine), so compare runs made side by
side; the curve says whether a recipe had saturated at its budget or was still climbing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def history(run: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cumulative minutes, val PSNR, variant fraction) per epoch of a run folder."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
            if line.strip()]
    rows = [r for r in rows if "val_psnr" in r]
    minutes = np.cumsum([r["seconds"] for r in rows]) / 60
    return (minutes, np.array([r["val_psnr"] for r in rows]),
            np.array([r.get("mask_fraction", np.nan) for r in rows]))


def at(minutes: np.ndarray, values: np.ndarray, t: float) -> float:
    """The best value reached by time t (a run keeps its best checkpoint)."""
    seen = values[minutes <= t + 1e-9]
    return float(seen.max()) if len(seen) else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="output path without suffix")
    ap.add_argument("--budget-min", type=float, default=30.0)
    args = ap.parse_args()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    lines = ["| run | epochs | minutes | best val PSNR | at ¼ time | at ½ | at all | last ¼ added |",
             "|---|---|---|---|---|---|---|---|"]
    for run in args.runs:
        m, p, f = history(run)
        name = run.name if run.name not in ("", ".") else str(run)
        a.plot(m, p, marker=".", label=name)
        b.plot(m, f, marker=".", label=name)
        total = float(m[-1])
        q = [at(m, p, total * s) for s in (0.25, 0.5, 0.75, 1.0)]
        lines.append(f"| {name} | {len(m)} | {total:.1f} | {p.max():.2f} | {q[0]:.2f} | {q[1]:.2f} "
                     f"| {q[3]:.2f} | {q[3] - q[2]:+.2f} dB |")
    for ax in (a, b):
        ax.axvline(args.budget_min, color="grey", linestyle=":", label=f"{args.budget_min:g} min")
        ax.set_xlabel("training minutes (1 thread)")
    a.set_ylabel("validation PSNR (dB)")
    b.set_ylabel("variant channels (fraction)")
    b.set_ylim(-0.05, 1.05)
    a.legend(fontsize=7)
    a.set_title("what longer training buys")
    b.set_title("the learned mask per epoch")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=110)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
