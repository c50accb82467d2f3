"""Time to quality, side by side: naive reference vs groupact (paper settings) vs groupact (fast).

All contestants run in ONE process, interleaved epoch by epoch (the order rotates every round), so
the noise of a shared machine falls on all of them alike. For each contestant and repeat:

- training pairs/s (training steps only; median over epochs);
- its own per-epoch overhead (validation, best-model copy, checkpoint files), timed apart;
- test PSNR after every epoch on fixed pairs of the mnist5k test split (C4, identity excluded,
  the same pairs for everyone), timed apart and EXCLUDED from the wall times;
- wall time until the test PSNR first reaches the target (default 28 dB): training + its own
  overhead, summed over its epochs; also "epochs to target × median epoch time", which is robust to
  load that drifts during the run;
- the test PSNR at the end of its budget (50 epochs for the paper's settings, the recipe's epochs
  for the fast recipe) and at its best-validation epoch (what the kept checkpoint gives);
- peak memory: resident-set high-water mark (``getrusage(RUSAGE_SELF).ru_maxrss``) of a fresh
  subprocess per contestant, after setup and after one epoch of training + validation; the delta
  is what training adds. (tracemalloc is not used: it does not see torch's tensor allocations.)

The paper-setting contestants keep training past their 50-epoch budget (up to ``--max-epochs``)
when they have not reached the target by then, so their time to target is measured, not guessed.

Usage::

    python benchmarks/time_to_quality.py              # full: ~15-25 min on a busy 2-core machine
    python benchmarks/time_to_quality.py --quick      # smoke run, < 2 min
    python benchmarks/time_to_quality.py --repeats 3 --max-epochs 120

Writes benchmarks/results/time_to_quality[_quick].{json,md,png}.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

from groupact.build import group_from_config  # noqa: E402
from groupact.config import load_config  # noqa: E402
from groupact.data import build_pair_source, load_data  # noqa: E402
from groupact.evaluate.metrics import psnr  # noqa: E402
from groupact.data import fixed_pairs  # noqa: E402
from groupact.train import Trainer  # noqa: E402

import naive_reference  # noqa: E402

RESULTS = HERE / "results"


# --- contestants ----------------------------------------------------------------------------

class Naive:
    key, label = "naive", "naive reference (published-script structure)"

    def __init__(self, splits, seed: int, budget: int, extend: bool):
        self.settings = ("batch 64, Adam 1e-3 constant, DataLoader, per-sample loops, "
                         "full target pass")
        self.budget, self.extend = budget, extend
        self.n_train = len(splits.train)
        self.tr = naive_reference.NaiveTrainer(splits, batch_size=64, lr=1e-3, seed=seed)
        self.last_val = None

    def train_epoch(self) -> None:
        self.tr.train_epoch()

    def end_epoch(self) -> float:
        self.last_val = self.tr.validate()
        return self.last_val

    def predict(self, x1, g):
        return self.tr.predict(x1, g)

    def mask_fraction(self) -> float:
        return float((torch.sigmoid(self.tr.model.mask.alpha) > 0.5).float().mean())


class Groupact:
    def __init__(self, key: str, label: str, recipe: str, splits, seed: int, threads: int,
                 budget: int | None, extend: bool, overrides=()):
        self.key, self.label = key, label
        cfg = load_config(recipe, ["train.progress=false", f"train.threads={threads}",
                                   f"train.seed={seed}", *overrides])
        t = cfg.train
        self.settings = (f"batch {t.batch_size}, Adam {t.lr:g} {t.schedule}, {t.epochs} epochs "
                         f"(recipe {recipe})")
        self.budget = budget if budget is not None else t.epochs
        # a one-cycle schedule ends at its last step: it cannot be extended
        self.extend = extend and t.schedule == "constant"
        self.tmp = tempfile.TemporaryDirectory(prefix=f"ttq-{key}-")
        self.tr = Trainer(cfg, self.tmp.name, splits=splits, log=lambda *_: None)
        self.n_train = len(self.tr.splits.train)
        self._stats, self._seconds = None, 0.0

    def train_epoch(self) -> None:
        t0 = time.perf_counter()
        self._stats = self.tr.run_epoch()
        self._seconds = time.perf_counter() - t0

    def end_epoch(self) -> float:
        """What ``Trainer.fit`` does after an epoch: validate, checkpoint, best copy, log."""
        if hasattr(self.tr, "end_epoch"):
            rec = self.tr.end_epoch(self._stats, self._seconds)
            return rec["val_loss"]
        self.tr.epoch += 1
        return self.tr.validate()["val_loss"]

    def mask_fraction(self) -> float:
        return float(self.tr.model.mask.hard().mean())

    def predict(self, x1, g):
        m = self.tr.model
        m.eval()
        with torch.no_grad():
            return m(x1, g)


def make_contestant(key: str, splits, seed: int, threads: int, args):
    splits = copy.deepcopy(splits)
    if key == "naive":
        return Naive(splits, seed, args.epochs, extend=True)
    if key == "paper":
        return Groupact("paper", "groupact, paper settings", "rotmnist-c4", splits, seed,
                        threads, args.epochs, extend=True,
                        overrides=[f"train.epochs={args.epochs}"])
    if key == "fast":
        over = [f"train.epochs={args.fast_epochs}"] if args.fast_epochs else []
        return Groupact("fast", "groupact, fast recipe", args.fast_recipe, splits, seed,
                        threads, None, extend=False, overrides=over)
    raise ValueError(key)


# --- memory probe (a fresh subprocess per contestant) -----------------------------------------

def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def memory_probe(key: str, args) -> dict:
    """Run in a child process: setup, then one epoch of training + own validation."""
    torch.set_num_threads(args.threads)
    splits = base_splits()
    c = make_contestant(key, splits, 0, args.threads, args)
    setup = maxrss_mib()
    c.train_epoch()
    c.end_epoch()
    peak = maxrss_mib()
    return {"setup_mib": round(setup, 1), "peak_mib": round(peak, 1),
            "train_delta_mib": round(peak - setup, 1)}


def run_memory_probes(keys, args) -> dict:
    out = {}
    for key in keys:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-probe", key,
               "--threads", str(args.threads), "--epochs", str(args.epochs),
               "--fast-recipe", args.fast_recipe]
        if args.fast_epochs:
            cmd += ["--fast-epochs", str(args.fast_epochs)]
        res = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if res.returncode != 0:
            out[key] = {"error": res.stderr.strip().splitlines()[-1:]}
            continue
        out[key] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


# --- the race ---------------------------------------------------------------------------------

def base_splits():
    return load_data(load_config("rotmnist-c4").data)


def test_pairs(splits, n: int):
    cfg = load_config("rotmnist-c4")
    source = build_pair_source(cfg, group_from_config(cfg), splits)
    return fixed_pairs(source, splits.test, n, cfg.eval.seed, non_identity=True,
                       device=torch.device("cpu"))


def test_psnr(c, pairs) -> float:
    total, n = 0.0, 0
    for i in range(0, pairs.x1.shape[0], 500):
        x1, x2, g = pairs.x1[i:i + 500], pairs.x2[i:i + 500], pairs.g[i:i + 500]
        total += float(psnr(c.predict(x1, g), x2).sum())
        n += x1.shape[0]
    return total / n


def race(keys, splits, pairs, seed: int, args, log) -> dict:
    """One repeat: all contestants interleaved epoch by epoch until each is done."""
    cs = [make_contestant(k, splits, seed, args.threads, args) for k in keys]
    hist = {c.key: [] for c in cs}
    done = {c.key: False for c in cs}
    rnd = 0
    while not all(done.values()):
        order = cs[rnd % len(cs):] + cs[:rnd % len(cs)]
        for c in order:
            if done[c.key]:
                continue
            t0 = time.perf_counter()
            c.train_epoch()
            t1 = time.perf_counter()
            val = c.end_epoch()
            t2 = time.perf_counter()
            p = test_psnr(c, pairs)
            t3 = time.perf_counter()
            h = hist[c.key]
            h.append({"epoch": len(h) + 1, "train_s": t1 - t0, "own_eval_s": t2 - t1,
                      "test_eval_s": t3 - t2, "val_loss": val, "test_psnr": p,
                      "mask_fraction": c.mask_fraction()})
            e = len(h)
            reached = any(r["test_psnr"] >= args.target for r in h)
            if e >= args.max_epochs or (e >= c.budget and (reached or not c.extend)):
                done[c.key] = True
            log(f"  seed {seed} {c.key:6s} epoch {e:3d}  train {t1 - t0:5.2f}s  "
                f"own-eval {t2 - t1:4.2f}s  test {p:5.2f} dB")
        rnd += 1
    out = {}
    for c in cs:
        out[c.key] = summarise_run(c, hist[c.key], args.target)
        tmp = getattr(c, "tmp", None)
        if tmp is not None:
            tmp.cleanup()
    return out


def summarise_run(c, h, target) -> dict:
    wall = 0.0
    t_target = e_target = None
    for r in h:
        wall += r["train_s"] + r["own_eval_s"]
        r["wall_s"] = wall
        if t_target is None and r["test_psnr"] >= target:
            t_target, e_target = wall, r["epoch"]
    budget_rows = h[:c.budget]
    best = min(budget_rows, key=lambda r: r["val_loss"])
    epoch_s = [r["train_s"] + r["own_eval_s"] for r in h]
    return {
        "label": c.label, "settings": c.settings, "budget_epochs": c.budget,
        "epochs_run": len(h), "n_train": c.n_train,
        "pairs_per_s": [c.n_train / r["train_s"] for r in h],
        "epochs_to_target": e_target, "wall_to_target_s": t_target,
        "median_epoch_s": statistics.median(epoch_s),
        "est_wall_to_target_s": (e_target * statistics.median(epoch_s)
                                 if e_target is not None else None),
        "train_s_to_target": (sum(r["train_s"] for r in h[:e_target])
                              if e_target is not None else None),
        "own_eval_s_total": sum(r["own_eval_s"] for r in h),
        "test_eval_s_total": sum(r["test_eval_s"] for r in h),
        "final_psnr": budget_rows[-1]["test_psnr"],
        "best_val_epoch": best["epoch"], "best_val_psnr": best["test_psnr"],
        "history": h,
    }


# --- reporting -----------------------------------------------------------------------------------

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def spread(xs, fmt="{:.1f}"):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "–"
    if len(xs) == 1:
        return fmt.format(xs[0])
    return f"{fmt.format(statistics.median(xs))} [{fmt.format(min(xs))}–{fmt.format(max(xs))}]"


def summarise(keys, runs, memory, args) -> dict:
    summary = {}
    for k in keys:
        rs = [r[k] for r in runs]
        pps = [p for r in rs for p in r["pairs_per_s"]]
        summary[k] = {
            "label": rs[0]["label"], "settings": rs[0]["settings"],
            "budget_epochs": rs[0]["budget_epochs"],
            "pairs_per_s_median": statistics.median(pps),
            "pairs_per_s_min": min(pps), "pairs_per_s_max": max(pps),
            "epochs_to_target": [r["epochs_to_target"] for r in rs],
            "wall_to_target_s": [r["wall_to_target_s"] for r in rs],
            "est_wall_to_target_s": [r["est_wall_to_target_s"] for r in rs],
            "max_wall_s": [r["history"][-1]["wall_s"] for r in rs],
            "epochs_run": [r["epochs_run"] for r in rs],
            "own_eval_s_total": [r["own_eval_s_total"] for r in rs],
            "test_eval_s_total": [r["test_eval_s_total"] for r in rs],
            "final_psnr": [r["final_psnr"] for r in rs],
            "best_val_psnr": [r["best_val_psnr"] for r in rs],
            "memory": memory.get(k),
        }
    base = summary.get("naive")
    for k in keys:
        s = summary[k]
        if base is None:
            continue
        for field in ("wall_to_target_s", "est_wall_to_target_s"):
            ratios = []
            for a, b, bmax in zip(base[field], s[field], base["max_wall_s"]):
                if a is not None and b is not None:
                    ratios.append({"ratio": a / b, "lower_bound": False})
                elif a is None and b is not None:  # naive never got there: a lower bound
                    ratios.append({"ratio": bmax / b, "lower_bound": True})
            s[f"speedup_{field}"] = ratios
        s["pairs_per_s_vs_naive"] = s["pairs_per_s_median"] / base["pairs_per_s_median"]
    return summary


def per_seed(values, fallbacks=None, fmt="{:.1f}") -> str:
    """One value per repeat; a repeat that never reached the target shows '>' its whole run."""
    out = []
    for i, v in enumerate(values):
        if v is not None:
            out.append(fmt.format(v))
        elif fallbacks is not None:
            out.append(">" + fmt.format(fallbacks[i]))
        else:
            out.append("–")
    return ", ".join(out)


def fmt_ratio(rs):
    if not rs:
        return "–"
    return ", ".join((">" if r["lower_bound"] else "") + f"{r['ratio']:.2f}×" for r in rs)


def markdown(keys, summary, meta) -> str:
    t = meta["target_db"]
    lines = [
        f"# Time to {t:g} dB test PSNR: naive reference vs groupact",
        "",
        f"- {meta['when']}, {meta['machine']}; torch {meta['torch']}, "
        f"{meta['threads']} torch thread(s); load average before/after: "
        f"{meta['load_before']} / {meta['load_after']}",
        f"- data: mnist5k (3,200 train / 800 val / 1,000 test), C4; test PSNR on "
        f"{meta['test_pairs']} fixed non-identity test pairs after every epoch",
        f"- repeats: {meta['repeats']} (seeds {meta['seeds']}), contestants interleaved epoch by "
        "epoch in one process. Columns marked 'per seed' list one value per repeat in seed "
        "order ('>' = target not reached: the whole run's time, a lower bound); other columns: "
        "median [min–max] over repeats (pairs/s: over all epochs)",
        "- wall time = training steps + each contestant's own per-epoch validation/checkpointing; "
        "the harness's test evaluation is excluded and listed apart. 'epochs × median epoch' = "
        "epochs to target × the contestant's median epoch time (robust to load drift)",
        f"- paper-setting runs (budget {meta['budget_epochs']} epochs) continue past the budget "
        f"until they reach the target or {meta['max_epochs']} epochs",
        "",
        f"| contestant | settings | pairs/s | epochs to {t:g} dB (per seed) | "
        f"wall to {t:g} dB, s (per seed) | epochs × median epoch, s (per seed) | "
        "speed-up vs naive, wall (per seed) | speed-up, epochs × median (per seed) | "
        "final PSNR at budget, dB | PSNR at best-val epoch, dB | own eval total, s | "
        "test eval total, s (excluded) | peak RSS: setup → +training, MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k in keys:
        s = summary[k]
        mem = s.get("memory") or {}
        mem_s = (f"{mem['setup_mib']:.0f} → +{mem['train_delta_mib']:.0f}"
                 if "setup_mib" in mem else "–")
        ep_s = per_seed(s["epochs_to_target"], [f"{n}" for n in s["epochs_run"]], "{}")
        lines.append(
            f"| {s['label']} | {s['settings']} | {s['pairs_per_s_median']:.0f} "
            f"[{s['pairs_per_s_min']:.0f}–{s['pairs_per_s_max']:.0f}] | {ep_s} | "
            f"{per_seed(s['wall_to_target_s'], s['max_wall_s'])} | "
            f"{per_seed(s['est_wall_to_target_s'])} | "
            f"{fmt_ratio(s.get('speedup_wall_to_target_s', []))} | "
            f"{fmt_ratio(s.get('speedup_est_wall_to_target_s', []))} | "
            f"{spread(s['final_psnr'], '{:.2f}')} | {spread(s['best_val_psnr'], '{:.2f}')} | "
            f"{spread(s['own_eval_s_total'])} | {spread(s['test_eval_s_total'])} | {mem_s} |")
    lines += ["", "Peak RSS: `getrusage(RUSAGE_SELF).ru_maxrss` of a fresh subprocess per "
              "contestant, after setup and after one epoch of training + validation.", ""]
    return "\n".join(lines)


def plot(keys, runs, target, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    colors = {"naive": "tab:red", "paper": "tab:blue", "fast": "tab:green"}
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, xkey, xlabel in ((axes[0], "wall_s", "training wall time (s; test evaluation "
                              "excluded)"), (axes[1], "epoch", "epoch")):
        for i, run in enumerate(runs):
            for k in keys:
                h = run[k]["history"]
                ax.plot([r[xkey] for r in h], [r["test_psnr"] for r in h],
                        color=colors.get(k), alpha=1.0 if i == 0 else 0.45, lw=1.5,
                        label=run[k]["label"] if i == 0 else None)
        ax.axhline(target, color="k", ls="--", lw=0.8)
        ax.text(ax.get_xlim()[1], target, f" {target:g} dB", va="center", fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test PSNR (dB)")
        ax.set_ylim(bottom=max(5.0, ax.get_ylim()[0]))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    axes[0].set_title("test PSNR vs training wall time (one line per repeat; seed 0 darkest)",
                      fontsize=10)
    axes[1].set_title("test PSNR vs epoch", fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def load_avg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run (< 2 min): 3 epochs each, "
                    "target 18 dB, 256 test pairs, one repeat")
    ap.add_argument("--repeats", type=int, default=2, help="repeats, with seeds 0..repeats-1")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (overrides --repeats)")
    ap.add_argument("--epochs", type=int, default=50, help="budget of the paper-setting runs")
    ap.add_argument("--max-epochs", type=int, default=100,
                    help="paper-setting runs keep going past the budget until the target or this")
    ap.add_argument("--fast-recipe", default="rotmnist-c4-fast")
    ap.add_argument("--fast-epochs", type=int, default=0, help="override the fast recipe's epochs")
    ap.add_argument("--target", type=float, default=28.0, help="test PSNR target (dB)")
    ap.add_argument("--test-pairs", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for every contestant (1 by default: on a shared 2-core "
                         "machine 2 threads collapse; see docs/PERFORMANCE.md)")
    ap.add_argument("--contestants", default="naive,paper,fast")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--out", default=None, help="output stem under benchmarks/results/")
    ap.add_argument("--replot", default=None, metavar="JSON",
                    help="only redraw the table and figure of an earlier results JSON")
    ap.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe, args)))
        return
    if args.replot:
        path = Path(args.replot)
        data = json.loads(path.read_text())
        keys = list(data["summary"])
        md = markdown(keys, data["summary"], data["meta"])
        path.with_suffix(".md").write_text(md)
        plot(keys, data["runs"], data["meta"]["target_db"], path.with_suffix(".png"))
        print(md)
        return
    if args.quick:
        args.repeats, args.epochs, args.max_epochs = 1, 3, 3
        args.fast_epochs, args.target, args.test_pairs = 3, 18.0, 256
    seeds = ([int(x) for x in args.seeds.split(",")] if args.seeds
             else list(range(args.repeats)))
    args.repeats = len(seeds)
    torch.set_num_threads(args.threads)
    keys = args.contestants.split(",")
    stem = args.out or ("time_to_quality_quick" if args.quick else "time_to_quality")
    RESULTS.mkdir(parents=True, exist_ok=True)

    def log(msg):
        print(msg, flush=True)

    meta = {"when": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.node()} "
            f"({os.cpu_count()} CPUs, {platform.processor() or platform.machine()})",
            "torch": torch.__version__, "threads": args.threads, "load_before": load_avg(),
            "target_db": args.target, "test_pairs": args.test_pairs, "repeats": args.repeats,
            "seeds": seeds, "budget_epochs": args.epochs,
            "max_epochs": args.max_epochs, "fast_recipe": args.fast_recipe,
            "argv": sys.argv[1:]}
    t_start = time.perf_counter()
    memory = {} if args.no_memory else run_memory_probes(keys, args)
    log(f"memory: {memory}")
    splits = base_splits()
    pairs = test_pairs(splits, args.test_pairs)
    runs = []
    for seed in seeds:
        runs.append(race(keys, splits, pairs, seed, args, log))
    meta["load_after"] = load_avg()
    meta["total_s"] = round(time.perf_counter() - t_start, 1)
    summary = summarise(keys, runs, memory, args)
    (RESULTS / f"{stem}.json").write_text(json.dumps(
        {"meta": meta, "summary": summary, "runs": runs}, indent=1))
    md = markdown(keys, summary, meta)
    (RESULTS / f"{stem}.md").write_text(md)
    plot(keys, runs, args.target, RESULTS / f"{stem}.png")
    print(md)
    print(f"wrote {RESULTS / stem}.{{json,md,png}} in {meta['total_s']} s")


if __name__ == "__main__":
    main()
