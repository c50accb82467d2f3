"""What training time buys on planes: PSNR, object-pixel PSNR and the wrong-g cost of a run's
checkpoints against the time spent training them.

    python benchmarks/planes_curve.py RUN [RUN ...] --snapshots SNAPDIR [--pairs 300]
        [--out benchmarks/results/planes-curve]

SNAPDIR/<run folder name>/epochN.pt are copies of RUN/checkpoints/last.pt taken as each epoch
ended (a run keeps only its best and last checkpoints); the run's own best.pt is added at its
epoch. Each is evaluated on the protocol's first N fixed test pairs (eval.seed), the training time
read from RUN/metrics.jsonl (the wall seconds of each epoch, summed: CPU time for a
single-threaded run on an otherwise idle core, more on a shared one). Writes OUT.json and OUT.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from groupact.data import build_pair_source, fixed_pairs, load_data
from groupact.evaluate.evaluate import image_metrics, swap_metrics
from groupact.io import load_checkpoint
from groupact.runs import load_run

KEYS = ("psnr", "psnr_object", "psnr_background", "wrong_g_cost", "swap_psnr")


def epoch_seconds(run: Path) -> dict[int, float]:
    """Cumulative training seconds at the end of each epoch of ``run``."""
    total, out = 0.0, {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        total += float(rec["seconds"])
        out[int(rec["epoch"])] = total
    return out


def curve(run: Path, snapshots: Path, n_pairs: int) -> list[dict]:
    """One record per checkpoint of ``run``: its epoch, training seconds and metrics."""
    loaded = load_run(run)
    cfg, model = loaded.cfg, loaded.model
    splits = load_data(cfg.data)
    source = build_pair_source(cfg, model.group, splits)
    pairs = fixed_pairs(source, splits.test, n_pairs, cfg.eval.seed, non_identity=True,
                        device=torch.device("cpu"))
    seconds = epoch_seconds(run)
    found = {int(p.stem.removeprefix("epoch")): p for p in (snapshots / run.name).glob("epoch*.pt")}
    out = []
    for epoch in sorted(found):
        model.load_state_dict(load_checkpoint(found[epoch])["model"])
        model.eval()
        m = image_metrics(model, pairs)
        m.update(swap_metrics(model, source, splits.test, n_pairs, cfg.eval.seed + 3))
        rec = {"run": run.name, "epoch": epoch, "seconds": seconds.get(epoch),
               "mask": model.mask.hard().int().tolist(),
               **{k: float(m[k]) for k in KEYS}}
        for k in ("psnr_identity", "psnr_mean_target", "psnr_object_identity",
                  "psnr_object_mean_target"):
            rec[k] = float(m[k])
        print(json.dumps(rec), flush=True)
        out.append(rec)
    return out


def plot(records: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name in dict.fromkeys(r["run"] for r in records):
        rs = [r for r in records if r["run"] == name and r["seconds"] is not None]
        t = [r["seconds"] / 60 for r in rs]
        for ax, key in zip(axes, ("psnr", "psnr_object", "wrong_g_cost")):
            ax.plot(t, [r[key] for r in rs], "o-", label=name)
    ref = records[0]
    for ax, key, title in ((axes[0], "psnr", "test PSNR (dB)"),
                           (axes[1], "psnr_object", "PSNR on the target's plane pixels (dB)"),
                           (axes[2], "wrong_g_cost", "PSNR lost when told another pair's g")):
        if key != "wrong_g_cost":
            ax.axhline(ref[f"{key}_identity"], color="grey", ls="--", label="do nothing")
            ax.axhline(ref[f"{key}_mean_target"], color="grey", ls=":", label="mean target")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training minutes (wall clock, 1 thread)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--snapshots", type=Path, required=True)
    ap.add_argument("--pairs", type=int, default=300)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/planes-curve"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    records = [r for run in args.runs for r in curve(run, args.snapshots, args.pairs)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(records, indent=1) + "\n")
    plot(records, args.out.with_suffix(".png"))
    print(f"wrote {args.out.with_suffix('.json')} and .png")


if __name__ == "__main__":
    main()
