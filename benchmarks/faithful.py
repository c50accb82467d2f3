"""groupact beside the authors' published MNIST script, on the same digits and test pairs.

The project ships only its own code: point ``--script`` at your local copy of the authors'
``rotated_mnist.py`` (their public repository, commit b4d0d40). The harness runs that file as it
is, with three documented substitutions and nothing else:

- ``torchvision`` does not import beside this project's torch wheel, so a stand-in module
  provides what the script uses — ``datasets.MNIST`` (train = the 4,000 train + validation digits of
  groupact's mnist5k split, test = its 1,000 test digits, as PIL images, item by item) and
  ``transforms.Compose/ToTensor/Normalize`` (the same per-item arithmetic);
- the three ``seed(42)`` calls take ``--seed`` (the script hard-codes 42);
- ``print`` is wrapped: when the script announces epoch k + 1 (or "Training completed"), the harness
  measures the model after epoch k on groupact's fixed test pairs (C4, identity excluded, eval seed
  1234: the pairs ``groupact evaluate`` uses), outside the timed CPU budget. At the end it also
  measures the script's own best-validation checkpoint (``rotated_model.pth``).

Its file writes go to a temporary folder. groupact's contestants (``rotmnist-c4``: the paper's
settings; ``rotmnist-c4-fast``) train through the ``Trainer`` an epoch at a time, measured the same
way. Time is CPU time of the process (``time.process_time``; one torch thread each), which a
shared machine disturbs far less than wall time; test evaluations are excluded from it.

Usage::

    python benchmarks/faithful.py --script ~/src/ald/rotated_mnist.py --seeds 3

writes benchmarks/results/faithful.{json,md,png}. ``--worker`` runs one contestant (internal).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from groupact.build import group_from_config
from groupact.config import load_config
from groupact.data import build_pair_source, load_data
from groupact.evaluate.metrics import psnr
from groupact.data import fixed_pairs
from groupact.train import Trainer

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TARGET_DB = 28.0
CONTESTANTS = {"published": "the authors' script (their settings)",
               "paper": "groupact rotmnist-c4 (paper settings)",
               "fast": "groupact rotmnist-c4-fast"}


# --- the shared test pairs ---------------------------------------------------------------------

def protocol_pairs():
    """The fixed test pairs of ``groupact evaluate rotmnist-c4`` (identity excluded)."""
    cfg = load_config("rotmnist-c4")
    splits = load_data(cfg.data)
    source = build_pair_source(cfg, group_from_config(cfg), splits)
    return splits, fixed_pairs(source, splits.test, None, cfg.eval.seed, True,
                               torch.device("cpu"))


# --- the stand-in torchvision ------------------------------------------------------------------

def torchvision_standin(splits) -> types.ModuleType:
    """The parts of torchvision the script uses, over groupact's mnist5k digits."""
    from PIL import Image

    tv = types.ModuleType("torchvision")
    tf = types.ModuleType("torchvision.transforms")
    ds = types.ModuleType("torchvision.datasets")

    class Compose:
        def __init__(self, fns):
            self.fns = fns

        def __call__(self, x):
            for f in self.fns:
                x = f(x)
            return x

    class ToTensor:
        def __call__(self, img):
            return torch.from_numpy(np.array(img, dtype=np.float32) / 255.0)[None]

    class Normalize:
        def __init__(self, mean, std):
            self.mean, self.std = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]

        def __call__(self, x):
            return (x - self.mean) / self.std

    class MNIST(torch.utils.data.Dataset):
        def __init__(self, root=None, train=True, download=False, transform=None):
            parts = [splits.train, splits.val] if train else [splits.test]
            imgs = torch.cat([p.images for p in parts])[:, 0]
            self.images = (imgs * 255).round().to(torch.uint8).numpy()
            self.labels = torch.cat([p.labels for p in parts]).tolist()
            self.transform = transform

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            img = Image.fromarray(self.images[i], mode="L")
            return (self.transform(img) if self.transform else img), self.labels[i]

    tf.Compose, tf.ToTensor, tf.Normalize = Compose, ToTensor, Normalize
    ds.MNIST = MNIST
    tv.transforms, tv.datasets = tf, ds
    return tv


def patch_seed(source: str, seed: int) -> str:
    """The script's ``torch.manual_seed(42)``, ``np.random.seed(42)``, ``random.seed(42)``."""
    patched, n = re.subn(r"\b(manual_seed|random\.seed)\(42\)", rf"\g<1>({seed})", source)
    if n != 3:
        raise SystemExit(f"expected the script's three seed(42) calls, found {n}: is it "
                         "rotated_mnist.py at commit b4d0d40?")
    return patched


class Clock:
    """CPU time of this process, with measurement intervals taken out."""

    def __init__(self):
        self.start, self.paused = time.process_time(), 0.0

    def now(self) -> float:
        return time.process_time() - self.start - self.paused

    def pause(self):
        t0 = time.process_time()
        return lambda: setattr(self, "paused", self.paused + time.process_time() - t0)


def run_published(script: Path, seed: int, epochs: int) -> dict:
    splits, test = protocol_pairs()
    sys.modules["torchvision"] = tv = torchvision_standin(splits)
    sys.modules["torchvision.transforms"], sys.modules["torchvision.datasets"] = \
        tv.transforms, tv.datasets
    source = patch_seed(script.read_text(), seed)
    source, n = re.subn(r"^epochs = 50$", f"epochs = {epochs}", source, flags=re.M)
    if n != 1:
        raise SystemExit("expected the script's `epochs = 50` line")
    ns: dict = {"__name__": "__published__"}
    curve, clock = [], None

    def measure(model) -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            out = model.forward_with_latent_rotation((test.x1 - 0.5) / 0.5,
                                                     test.g.float() * 90)["recon_rot"]
        frac = float((torch.sigmoid(model.mask_module.logits) > 0.5).float().mean())
        return float(psnr((out + 1) / 2, test.x2).mean()), frac

    def hooked_print(*args, **kwargs):
        text = " ".join(str(a) for a in args)
        m = re.search(r"=== Epoch (\d+)/", text)
        if m or text.startswith("Training completed"):
            done = int(m.group(1)) - 1 if m else epochs
            if done >= 1:
                resume = clock.pause()
                p, frac = measure(ns["model"])
                curve.append({"epoch": done, "cpu_s": round(clock.now(), 2), "test_psnr": p,
                              "mask_fraction": frac})
                resume()

    ns["print"] = hooked_print
    with tempfile.TemporaryDirectory(prefix="published-") as tmp:
        import os
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            clock = Clock()
            exec(compile(source, str(script), "exec"), ns)
            model = ns["model"]
            model.load_state_dict(torch.load("rotated_model.pth", map_location="cpu"))
            best, _ = measure(model)
        finally:
            os.chdir(cwd)
    return {"curve": curve, "best_val_psnr": best}


def run_groupact(recipe: str, seed: int, epochs: int | None) -> dict:
    over = ["train.progress=false", "train.threads=1", f"train.seed={seed}"]
    if epochs:
        over.append(f"train.epochs={epochs}")
    cfg = load_config(recipe, over)
    splits, test = protocol_pairs()
    curve = []
    with tempfile.TemporaryDirectory(prefix="faithful-") as tmp:
        tr = Trainer(cfg, tmp, splits=splits, log=lambda *_: None)
        tr.paths.root.mkdir(parents=True, exist_ok=True)
        clock = Clock()
        for _ in range(cfg.train.epochs):
            t0 = time.perf_counter()
            stats = tr.run_epoch()
            tr.end_epoch(stats, time.perf_counter() - t0)
            resume = clock.pause()
            with torch.no_grad():
                p = float(psnr(tr.model.transform(test.x1, test.g), test.x2).mean())
            curve.append({"epoch": tr.epoch, "cpu_s": round(clock.now(), 2), "test_psnr": p,
                          "mask_fraction": float(tr.model.mask.hard().mean())})
            resume()
        state = torch.load(tr.paths.best, map_location="cpu", weights_only=False)
        tr.model.load_state_dict(state["model"])
        best = float(psnr(tr.model.transform(test.x1, test.g), test.x2).mean())
    return {"curve": curve, "best_val_psnr": best, "best_epoch": tr.best_epoch}


# --- the comparison ----------------------------------------------------------------------------

def first_reaching(curve: list[dict], target: float) -> dict | None:
    return next((c for c in curve if c["test_psnr"] >= target), None)


def summarise(runs: dict[str, list[dict]], target: float) -> tuple[dict, str]:
    rows, lines = {}, []
    for key, seeds in runs.items():
        final = [r["curve"][-1]["test_psnr"] for r in seeds]
        best = [r["best_val_psnr"] for r in seeds]
        hit = [first_reaching(r["curve"], target) for r in seeds]
        rows[key] = {"final_psnr": final, "best_val_psnr": best,
                     "final_mask_fraction": [r["curve"][-1]["mask_fraction"] for r in seeds],
                     "epochs": len(seeds[0]["curve"]),
                     "epoch_to_target": [h["epoch"] if h else None for h in hit],
                     "cpu_to_target_s": [h["cpu_s"] if h else None for h in hit],
                     "cpu_total_s": [r["curve"][-1]["cpu_s"] for r in seeds]}
    ref = rows.get("published")

    def ratio(key: str, i: int) -> str:
        mine, theirs = rows[key]["cpu_to_target_s"][i], ref["cpu_to_target_s"][i] if ref else None
        if mine is None:
            return "never"
        if theirs is None:   # the reference never got there: a lower bound
            return f"> {ref['cpu_total_s'][i] / mine:.1f}×"
        return f"{theirs / mine:.1f}×"

    lines.append(f"| contestant | epochs | final test PSNR (per seed) | mean | best-val checkpoint "
                 f"(mean) | final mask variant | epoch to {target:g} dB | CPU s to {target:g} dB | "
                 f"speed-up vs published |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for key, r in rows.items():
        n = len(r["final_psnr"])
        lines.append(
            f"| {CONTESTANTS[key]} | {r['epochs']} | "
            f"{' / '.join(f'{v:.2f}' for v in r['final_psnr'])} | "
            f"{statistics.mean(r['final_psnr']):.2f} | {statistics.mean(r['best_val_psnr']):.2f} | "
            f"{' / '.join(f'{v:.0%}' for v in r['final_mask_fraction'])} | "
            f"{' / '.join(str(v) if v else '—' for v in r['epoch_to_target'])} | "
            f"{' / '.join(f'{v:.0f}' if v else '—' for v in r['cpu_to_target_s'])} | "
            f"{' / '.join(ratio(key, i) for i in range(n)) if ref and key != 'published' else ''} |")
    return rows, "\n".join(lines)


def figure(runs: dict[str, list[dict]], path: Path, target: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    colours = {"published": "black", "paper": "tab:blue", "fast": "tab:orange"}
    for key, seeds in runs.items():
        for i, r in enumerate(seeds):
            ep = [c["epoch"] for c in r["curve"]]
            cpu = [c["cpu_s"] / 60 for c in r["curve"]]
            ps = [c["test_psnr"] for c in r["curve"]]
            label = CONTESTANTS[key] if i == 0 else None
            axes[0].plot(ep, ps, color=colours[key], alpha=0.8, label=label)
            axes[1].plot(cpu, ps, color=colours[key], alpha=0.8, label=label)
    for ax, xl in zip(axes, ("epoch", "CPU minutes (training only, 1 thread)")):
        ax.axhline(target, color="grey", ls=":", lw=1)
        ax.set_xlabel(xl)
        ax.set_ylabel("test PSNR (dB), C4 pairs without identity")
        ax.set_ylim(15, 30.5)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right")
    axes[0].set_title("per epoch, every seed")
    axes[1].set_title("per CPU time")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def worker(args) -> None:
    torch.set_num_threads(1)
    if args.worker == "published":
        out = run_published(Path(args.script).expanduser(), 42 + args.seed, args.epochs)
    else:
        recipe = "rotmnist-c4" if args.worker == "paper" else "rotmnist-c4-fast"
        out = run_groupact(recipe, args.seed, args.epochs if args.worker == "paper" else None)
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--script", help="your local copy of the authors' rotated_mnist.py")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=50, help="published and paper-setting epochs")
    ap.add_argument("--jobs", type=int, default=2, help="single-threaded runs at once")
    ap.add_argument("--only", default="published,paper,fast")
    ap.add_argument("--out", default=str(RESULTS / "faithful"))
    ap.add_argument("--worker", choices=list(CONTESTANTS), help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    keys = args.only.split(",")
    if "published" in keys and not (args.script and Path(args.script).expanduser().is_file()):
        ap.error("--script must name your copy of the authors' rotated_mnist.py "
                 "(or leave 'published' out of --only)")
    jobs = [(k, s) for s in range(args.seeds) for k in keys]

    def run(job):
        key, seed = job
        cmd = [sys.executable, __file__, "--worker", key, "--seed", str(seed),
               "--epochs", str(args.epochs)] + (["--script", args.script] if args.script else [])
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            raise SystemExit(f"{key} seed {seed} failed:\n{res.stderr[-3000:]}")
        print(f"done: {key} seed {seed}", flush=True)
        return json.loads(res.stdout.strip().splitlines()[-1])

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run, jobs))
    runs: dict[str, list[dict]] = {k: [] for k in keys}
    for (key, _), r in zip(jobs, results):
        runs[key].append(r)
    rows, table = summarise(runs, TARGET_DB)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"runs": runs, "summary": rows}, indent=1))
    out.with_suffix(".md").write_text(
        f"# groupact beside the authors' published script\n\n`python benchmarks/faithful.py "
        f"--script rotated_mnist.py --seeds {args.seeds}`; seeds: published 42…, groupact 0…; "
        f"CPU time of each single-threaded process, test evaluations excluded.\n\n{table}\n")
    figure(runs, out.with_suffix(".png"), TARGET_DB)
    print(table)


if __name__ == "__main__":
    main()
