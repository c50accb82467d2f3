"""Throughput: FLOPs per step, the machine's attainable FLOP/s, and the fraction groupact reaches.

Sections (each prints a Markdown table; all are written to benchmarks/results/throughput.{json,md}):

1. machine   measured float32 matmul (2048²) and conv GFLOP/s, per torch thread count;
2. flops     FLOPs per training pair of the rotmnist-c4 model: counted with
             torch.utils.flop_counter.FlopCounterMode and analytically (conv MACs × 2);
3. batch     training pairs/s vs batch size (16…1024), as shipped (pair generation + Trainer
             step), and the fraction of the measured matmul FLOP/s that this is;
4. options   what pays: 1 vs 2 threads, channels_last, inference_mode vs no_grad for evaluation,
             the per-epoch overhead of Trainer.end_epoch; (section compile, only with --compile
             or --sections compile: torch.compile of the encoder and decoder);
5. scaling   epoch time vs training-set size (1,000 / 2,000 / 4,000) and pairs/s vs image side
             (28 / 56 / 112, conv2d net, C4);
6. volumes   3D throughput: the recipes adrenal3d-so3 (28³) and brain3d-so3 (32³)
             (conv3d-vector + SO(3) matrix action, trilinear pair generation), and a conv3d
             spatial latent with the exact cube group at 28³ and 32³.

Timings alternate between the variants being compared (round-robin, several rounds, median), so
the noise of a shared machine hits all variants alike. Usage::

    python benchmarks/throughput.py                 # everything, ~5-8 min on a busy 2-core box
    python benchmarks/throughput.py --quick         # ~1-2 min
    python benchmarks/throughput.py --sections batch,options --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from groupact.config import load_config
from groupact.data import PairBatch, Splits, TensorSet
from groupact.train import Trainer

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
QUIET = ["train.progress=false"]


def now() -> float:
    return time.perf_counter()


def rounds_median(fns: dict, rounds: int) -> dict:
    """Call each fn (returning a rate) once per round, alternating; median and spread per fn."""
    res = {k: [] for k in fns}
    for r in range(rounds):
        keys = list(fns)
        keys = keys[r % len(keys):] + keys[:r % len(keys)]
        for k in keys:
            res[k].append(fns[k]())
    return {k: {"median": statistics.median(v), "min": min(v), "max": max(v),
                "all": [round(x, 2) for x in v]} for k, v in res.items()}


def with_threads(n: int, fn):
    def run():
        old = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            return fn()
        finally:
            torch.set_num_threads(old)
    return run


# --- 1. machine ----------------------------------------------------------------------------

def matmul_gflops(n: int = 2048, reps: int = 4) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = now()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (now() - t) / 1e9


def conv_gflops(batch=256, cin=32, cout=64, side=14, k=4, stride=2, reps=5) -> float:
    """The rotmnist-c4 encoder's big conv (32→64, 4×4, stride 2, 14²→7²), forward."""
    x = torch.randn(batch, cin, side, side)
    w = torch.randn(cout, cin, k, k)
    out = F.conv2d(x, w, stride=stride, padding=1)
    flops = 2 * out.numel() * cin * k * k
    t = now()
    for _ in range(reps):
        F.conv2d(x, w, stride=stride, padding=1)
    return flops * reps / (now() - t) / 1e9


def section_machine(args, out):
    threads = sorted({1, os.cpu_count() or 1})
    fns = {}
    for t in threads:
        fns[f"matmul 2048² fp32, {t} thread(s)"] = with_threads(t, matmul_gflops)
        fns[f"conv 32→64 4×4/2 on 14², batch 256, {t} thread(s)"] = with_threads(t, conv_gflops)
    res = rounds_median(fns, args.rounds)
    out["machine"] = res
    table(["measurement", "GFLOP/s median", "min–max"],
          [[k, f"{v['median']:.1f}", f"{v['min']:.1f}–{v['max']:.1f}"] for k, v in res.items()])


def attainable(out, threads: int) -> float:
    return out["machine"][f"matmul 2048² fp32, {threads} thread(s)"]["median"]


# --- 2. flops ------------------------------------------------------------------------------

def c4_trainer(overrides=(), splits=None) -> Trainer:
    cfg = load_config("rotmnist-c4", QUIET + list(overrides))
    return Trainer(cfg, tempfile.mkdtemp(prefix="tp-"), splits=splits, log=lambda *_: None)


def counted_flops(model, batch, loss_fn, weights) -> int:
    with FlopCounterMode(display=False) as fc:
        loss, _ = loss_fn(model, batch, weights)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return fc.get_total_flops()


def analytic_c4_flops() -> dict:
    """Conv MACs of the authors' MNIST net, ×2 for FLOPs (biases and activations ignored)."""
    enc = 32 * 14 * 14 * (1 * 16) + 64 * 7 * 7 * (32 * 16)       # conv1 + conv2
    dec = 7 * 7 * 64 * 32 * 16 + 14 * 14 * 32 * 1 * 16            # deconv1 + deconv2 (input side)
    fwd = 2 * (enc + dec)
    # training: forward + backward (grad wrt weights and inputs = 2× forward, minus conv1's input
    # grad, which is not needed) + the target's encoder under no_grad
    conv1_in_grad = 2 * 32 * 14 * 14 * 16
    paper = 3 * fwd - conv1_in_grad + 2 * enc
    decoded = paper + 2 * dec  # a full target pass (the published script's structure) decodes too
    return {"encoder_fwd": 2 * enc, "decoder_fwd": 2 * dec, "forward": fwd,
            "train_pair_groupact": paper, "train_pair_target_decoded": decoded}


def section_flops(args, out):
    tr = c4_trainer()
    gen = torch.Generator().manual_seed(0)
    b = tr.source.pairs(tr.splits.train, torch.arange(64), gen)
    counted = counted_flops(tr.model, b, tr.loss_fn, tr.weights) / 64
    with torch.no_grad():
        z2 = tr.model.encode(b.x2)
        with FlopCounterMode(display=False) as fc:
            tr.model.decode(z2)
    decoded = counted + fc.get_total_flops() / 64    # the target's decoder pass as well
    with FlopCounterMode(display=False) as fc:
        with torch.no_grad():
            tr.model(b.x1, b.g)
    fwd = fc.get_total_flops() / 64
    ana = analytic_c4_flops()
    out["flops"] = {"counted_train_pair_groupact": counted,
                    "counted_train_pair_target_decoded": decoded,
                    "counted_forward_pair": fwd, "analytic": ana}
    table(["quantity", "FlopCounterMode (MFLOP/pair)", "analytic (MFLOP/pair)"], [
        ["forward D(Φ(E(x)))", f"{fwd / 1e6:.2f}", f"{ana['forward'] / 1e6:.2f}"],
        ["groupact training pair (fwd+bwd, target encoder only)", f"{counted / 1e6:.2f}",
         f"{ana['train_pair_groupact'] / 1e6:.2f}"],
        ["the same with the target decoded too (the published script's structure)",
         f"{decoded / 1e6:.2f}", f"{ana['train_pair_target_decoded'] / 1e6:.2f}"]])


def flop_per_pair(out) -> float:
    return out["flops"]["counted_train_pair_groupact"]


# --- 3. batch sweep ------------------------------------------------------------------------

def step_rate(tr: Trainer, bs: int, pairs: int, memory_format=None):
    """pairs/s of pair generation + Trainer.train_step, ≈ `pairs` pairs per call."""
    gen = torch.Generator().manual_seed(bs)
    n = len(tr.splits.train)
    steps = max(2, pairs // bs)

    def run():
        t = now()
        for s in range(steps):
            idx = (torch.arange(bs) + s * bs) % n
            b = tr.source.pairs(tr.splits.train, idx, gen)
            if memory_format is not None:
                b = PairBatch(b.x1.contiguous(memory_format=memory_format),
                              b.x2.contiguous(memory_format=memory_format), b.g, b.labels)
            tr.train_step(b)
        return steps * bs / (now() - t)
    run()  # warm-up
    return run


def section_batch(args, out):
    tr = c4_trainer()
    sizes = [16, 32, 64, 128, 256, 512, 1024]
    fns = {bs: step_rate(tr, bs, args.pairs) for bs in sizes}
    res = rounds_median(fns, args.rounds)
    fpp, peak = flop_per_pair(out), attainable(out, torch.get_num_threads())
    rows = []
    for bs, v in res.items():
        gf = v["median"] * fpp / 1e9
        v["gflops"], v["fraction_of_matmul"] = gf, gf / peak
        rows.append([bs, f"{v['median']:.0f}", f"{v['min']:.0f}–{v['max']:.0f}", f"{gf:.1f}",
                     f"{100 * gf / peak:.0f}%"])
    out["batch"] = {str(k): v for k, v in res.items()}
    out["batch_threads"] = torch.get_num_threads()
    table(["batch", "pairs/s median", "min–max", "GFLOP/s", "of matmul peak"], rows)


# --- 4. options ----------------------------------------------------------------------------

def section_options(args, out):
    res = {}
    tr = c4_trainer()
    n_cpu = os.cpu_count() or 1
    for bs in (64, 256):
        fns = {f"batch {bs}, 1 thread": with_threads(1, step_rate(tr, bs, args.pairs))}
        if n_cpu > 1:
            fns[f"batch {bs}, {n_cpu} threads"] = with_threads(n_cpu, step_rate(tr, bs, args.pairs))
        res.update(rounds_median(fns, args.rounds))
    tr_cl = c4_trainer()
    tr_cl.model.to(memory_format=torch.channels_last)
    for bs in (64, 256):
        res.update(rounds_median({
            f"batch {bs}, contiguous": step_rate(tr, bs, args.pairs),
            f"batch {bs}, channels_last": step_rate(tr_cl, bs, args.pairs, torch.channels_last),
        }, args.rounds))
    # evaluation: 1,000 test pairs, forward only
    gen = torch.Generator().manual_seed(0)
    test = tr.source.pairs(tr.splits.test, torch.arange(len(tr.splits.test)), gen)
    model = tr.model.eval()

    def eval_rate(ctx):
        def run():
            t = now()
            with ctx():
                for i in range(0, 1000, 500):
                    model(test.x1[i:i + 500], test.g[i:i + 500])
            return 1000 / (now() - t)
        run()
        return run
    res.update(rounds_median({
        "eval forward, torch.no_grad": eval_rate(torch.no_grad),
        "eval forward, torch.inference_mode": eval_rate(torch.inference_mode)}, args.rounds))

    def validate_rate():
        t = now()
        tr.validate()
        return len(tr.val.x1) / (now() - t)
    res.update(rounds_median({"Trainer.validate (loss + PSNR)": validate_rate}, args.rounds))

    # the per-epoch overhead of Trainer.end_epoch, in milliseconds
    def ms(fn):
        def run():
            t = now()
            fn()
            return 1000 * (now() - t)
        return run

    def val_loss_only():
        with torch.no_grad():
            model.eval()
            for i in range(0, tr.val.x1.shape[0], 512):
                tr.loss_fn(model, PairBatch(tr.val.x1[i:i + 512], tr.val.x2[i:i + 512],
                                            tr.val.g[i:i + 512]), tr.weights)

    over = rounds_median({"validate(): loss + a second forward for PSNR": ms(tr.validate),
                          "the loss alone on the same val pairs": ms(val_loss_only),
                          "state() (incl. data fingerprint)": ms(tr.state),
                          "save(): state + torch.save + fsync + rename": ms(tr.save)},
                         args.rounds)
    out["epoch_overhead_ms"] = over
    out["options"] = res
    table(["variant", "pairs/s median", "min–max"],
          [[k, f"{v['median']:.0f}", f"{v['min']:.0f}–{v['max']:.0f}"] for k, v in res.items()])
    print("\nPer-epoch overhead of Trainer.end_epoch (ms, 800 val pairs):")
    MD.append("\nPer-epoch overhead of Trainer.end_epoch (ms, 800 val pairs):\n")
    table(["part", "ms median", "min–max"],
          [[k, f"{v['median']:.0f}", f"{v['min']:.0f}–{v['max']:.0f}"] for k, v in over.items()])


def section_compile(args, out):
    """torch.compile of the encoder and decoder (the loss calls them, not model.forward)."""
    tr = c4_trainer()
    trc = c4_trainer()
    trc.model.encoder = torch.compile(trc.model.encoder)
    trc.model.decoder = torch.compile(trc.model.decoder)
    t0 = now()
    f = step_rate(trc, 64, args.pairs)  # includes the warm-up step that compiles
    warm = now() - t0
    res = rounds_median({"batch 64, torch.compile (encoder, decoder)": f,
                         "batch 64, eager": step_rate(tr, 64, args.pairs)}, args.rounds)
    out["compile"] = {"warmup_s": warm, **res}
    print(f"compile warm-up: {warm:.1f} s")
    MD.append(f"\ntorch.compile warm-up (first steps, compiling): {warm:.1f} s\n")
    table(["variant", "pairs/s median", "min–max"],
          [[k, f"{v['median']:.0f}", f"{v['min']:.0f}–{v['max']:.0f}"] for k, v in res.items()])


# --- 5. scaling ----------------------------------------------------------------------------

def section_scaling(args, out):
    sizes = [1000, 2000, 4000]
    trainers = {n: c4_trainer([f"data.n_train={n}", "data.n_val=500", "data.n_test=500"])
                for n in sizes}

    def epoch_time(tr):
        def run():
            t = now()
            stats = tr.run_epoch()
            dt = now() - t
            tr.end_epoch(stats, dt)  # validation and checkpoint, outside the timing
            return dt
        return run
    res = rounds_median({n: epoch_time(tr) for n, tr in trainers.items()}, args.scale_rounds)
    rows = []
    for n, v in res.items():
        v["us_per_pair"] = 1e6 * v["median"] / n
        rows.append([n, f"{v['median']:.2f}", f"{v['min']:.2f}–{v['max']:.2f}",
                     f"{v['us_per_pair']:.0f}"])
    xs = list(res)
    ys = [res[n]["median"] for n in xs]
    slope = (ys[-1] - ys[0]) / (xs[-1] - xs[0])
    lin = {"slope_s_per_pair": slope, "intercept_s": ys[0] - slope * xs[0]}
    out["scaling_dataset"] = {"epoch_s": {str(k): v for k, v in res.items()}, "linear": lin}
    head = f"Epoch time vs training-set size (rotmnist-c4, batch 64, {args.scale_rounds} rounds):"
    print("\n" + head)
    MD.append("\n" + head + "\n")
    table(["n_train", "epoch s median", "min–max", "µs per pair"], rows)
    fit = (f"linear fit through the ends: {1e6 * slope:.0f} µs/pair, intercept "
           f"{lin['intercept_s']:.3f} s")
    print(fit)
    MD.append("\n" + fit + "\n")

    # image side: conv2d net (1→32→64, 4×4 stride 2), latent 64×(s/4)², C4, batch 64
    base = load_config("rotmnist-c4").data
    from groupact.data import load_data
    mn = load_data(base)
    rows, res2 = [], {}
    fns, fl = {}, {}
    for side in (28, 56, 112):
        imgs = mn.train.images[:512]
        if side != 28:
            imgs = F.interpolate(imgs, size=(side, side), mode="bilinear", align_corners=False)
        ts = TensorSet(imgs.clamp(0, 1).contiguous())
        sp = Splits(ts, TensorSet(ts.images[:128]), TensorSet(ts.images[:128]), info={})
        cfg = load_config("rotmnist-c4", QUIET + ["model.net=conv2d", "model.widths=[32]",
                                                  "model.channels=64"])
        tr = Trainer(cfg, tempfile.mkdtemp(prefix="tp-"), splits=sp, log=lambda *_: None)
        gen = torch.Generator().manual_seed(0)
        b = tr.source.pairs(tr.splits.train, torch.arange(16), gen)
        fl[side] = counted_flops(tr.model, b, tr.loss_fn, tr.weights) / 16
        fns[side] = step_rate(tr, 64, max(256, args.pairs * 28 * 28 // (side * side)))
    res2 = rounds_median(fns, args.rounds)
    peak = attainable(out, torch.get_num_threads())
    for side, v in res2.items():
        v["mflop_per_pair"] = fl[side] / 1e6
        v["us_per_kpixel"] = 1e6 / v["median"] / (side * side / 1000)
        v["fraction_of_matmul"] = v["median"] * fl[side] / 1e9 / peak
        rows.append([side, f"{v['median']:.0f}", f"{fl[side] / 1e6:.1f}",
                     f"{v['us_per_kpixel']:.0f}", f"{100 * v['fraction_of_matmul']:.0f}%"])
    out["scaling_image"] = {str(k): v for k, v in res2.items()}
    head = "Pairs/s vs image side (conv2d 1→32→64, latent 64×(side/4)², C4, batch 64):"
    print("\n" + head)
    MD.append("\n" + head + "\n")
    table(["side", "pairs/s", "MFLOP/pair", "µs per 1,000 pixels", "of matmul peak"], rows)


# --- 6. volumes ----------------------------------------------------------------------------

def volume_trainer(recipe: str, side: int, overrides=()):
    vols = (torch.rand(256, 1, side, side, side) > 0.7).float()  # content does not matter here
    ts = TensorSet(vols)
    sp = Splits(ts, TensorSet(vols[:64]), TensorSet(vols[:64]), info={})
    cfg = load_config(recipe, QUIET + list(overrides))
    return Trainer(cfg, tempfile.mkdtemp(prefix="tp-"), splits=sp, log=lambda *_: None)


def section_volumes(args, out):
    variants = {
        "adrenal3d-so3 recipe, 28³ (conv3d-vector, SO(3) matrix, batch 32)":
            ("adrenal3d-so3", 28, [], 32),
        "brain3d-so3 recipe, 32³ (conv3d-vector, SO(3) matrix, batch 32)":
            ("brain3d-so3", 32, [], 32),
        "conv3d spatial 32×7³ latent, cube group, 28³, batch 32":
            ("adrenal3d-so3", 28, ["model.net=conv3d", "model.action.kind=spatial",
                                   "group.name=cube"], 32),
        "conv3d spatial 32×8³ latent, cube group, 32³, batch 32":
            ("brain3d-so3", 32, ["model.net=conv3d", "model.action.kind=spatial",
                                 "group.name=cube"], 32),
    }
    fns, fl = {}, {}
    for name, (recipe, side, over, bs) in variants.items():
        tr = volume_trainer(recipe, side, over)
        gen = torch.Generator().manual_seed(0)
        b = tr.source.pairs(tr.splits.train, torch.arange(8), gen)
        fl[name] = counted_flops(tr.model, b, tr.loss_fn, tr.weights) / 8
        fns[name] = step_rate(tr, bs, max(64, args.pairs // 16))
    res = rounds_median(fns, args.rounds)
    peak = attainable(out, torch.get_num_threads())
    rows = []
    for name, v in res.items():
        v["mflop_per_pair"] = fl[name] / 1e6
        v["fraction_of_matmul"] = v["median"] * fl[name] / 1e9 / peak
        rows.append([name, f"{v['median']:.0f}", f"{v['min']:.0f}–{v['max']:.0f}",
                     f"{fl[name] / 1e6:.0f}", f"{100 * v['fraction_of_matmul']:.0f}%"])
    out["volumes"] = res
    table(["3D variant", "pairs/s median", "min–max", "MFLOP/pair", "of matmul peak"], rows)


# --- main --------------------------------------------------------------------------------------

MD: list[str] = []


def table(header, rows):
    lines = ["| " + " | ".join(str(h) for h in header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    text = "\n".join(lines)
    print(text, flush=True)
    MD.append(text)


SECTIONS = {"machine": section_machine, "flops": section_flops, "batch": section_batch,
            "options": section_options, "compile": section_compile,
            "scaling": section_scaling, "volumes": section_volumes}
DEFAULT = [k for k in SECTIONS if k != "compile"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds and pairs (~1-2 min)")
    ap.add_argument("--sections", default=",".join(DEFAULT),
                    help=f"comma-separated, from: {', '.join(SECTIONS)} (compile is slow and "
                         "not in the default)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for the sections that do not sweep threads")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--scale-rounds", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=2048, help="pairs per timed call")
    ap.add_argument("--compile", action="store_true",
                    help="also run the compile section (torch.compile; slow)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.scale_rounds, args.pairs = 3, 1, 1024
    torch.set_num_threads(args.threads)
    out: dict = {"meta": {"when": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.node(),
                          "cpus": os.cpu_count(), "torch": torch.__version__,
                          "threads": args.threads,
                          "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
                          "argv": sys.argv[1:]}}
    wanted = args.sections.split(",")
    if args.compile and "compile" not in wanted:
        wanted.append("compile")
    if any(s in wanted for s in ("batch", "scaling", "volumes")) and "machine" not in wanted:
        wanted.insert(0, "machine")
    if "batch" in wanted and "flops" not in wanted:
        wanted.insert(1, "flops")
    t0 = now()
    for name in SECTIONS:
        if name in wanted:
            print(f"\n## {name}", flush=True)
            MD.append(f"\n## {name}\n")
            SECTIONS[name](args, out)
    out["meta"]["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    out["meta"]["total_s"] = round(now() - t0, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = args.out or ("throughput_quick" if args.quick else "throughput")
    (RESULTS / f"{stem}.json").write_text(json.dumps(out, indent=1, default=str))
    head = (f"# Throughput ({out['meta']['when']}, {out['meta']['cpus']} CPUs, torch "
            f"{out['meta']['torch']}, {args.threads} thread(s) unless stated; load average "
            f"{out['meta']['load_before']} → {out['meta']['load_after']})\n")
    (RESULTS / f"{stem}.md").write_text(head + "\n".join(MD) + "\n")
    print(f"\nwrote {RESULTS / stem}.{{json,md}} in {out['meta']['total_s']} s")


if __name__ == "__main__":
    main()
