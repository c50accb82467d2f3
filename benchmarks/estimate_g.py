"""Estimating g between two images through the latent, against the baselines, on the same pairs.

For each shipped model: the protocol's fixed test pairs (x1, x2 = T_g x1; test split, eval.seed,
no identity), and for each method the accuracy of ĝ against the hidden g and the wall time per
pair on one thread:

- latent: ``model.estimate_g`` (groupact.latent.estimate): one encoder pass per image, then the
  search the group and action declare (every C4 element; the Fourier closed form for SO(2); the
  coarse SO(3) grid refined locally; least squares for contrast);
- latent, polished on the pixels (brains): the latent estimate refined by the local search on the
  images (``estimate_g(polish=True)``): the latent supplies the basin, the pixels the precision;
- image space: the same search on pixels (``estimate_in_images``: T_g x1 against x2 for every
  candidate), the accuracy anchor; for contrast the least-squares line through the foreground
  pixels' logits;
- SimpleITK (brains only; ``pip install -e '.[align]'``): rigid registration as the field runs it
  (Euler3D, Mattes mutual information, 32 bins, two resolutions with shrink 2, 1, regular step
  gradient descent), once from the identity, and from the 24 cube rotations at the coarse level
  with the best final metric then registered at both levels (large turns are outside one start's
  basin).

Rows: C4 digits (pretrained/rotmnist; accuracy also on the digits a half turn changes by at least
half their energy, i.e. not C2-symmetric), SO(2) digits (pretrained/rotmnist-so2), the blocked
variants (the block stays put, so pixels mislead), C2-symmetrised digits (max(x, rot180 x): g is
determined only up to a half turn, and the ambiguity flag should say so), contrast brain slices,
brain volumes under Haar turns, the same under turns of at most 30° (inside SimpleITK's basin),
and the held-out real brains (needs `apt-get install mricron-data insighttoolkit5-examples`).

    OMP_NUM_THREADS=1 python benchmarks/estimate_g.py [--brain-pairs 24] [--out benchmarks/results/estimate-g]

Writes OUT.json and OUT.md. Latent and image-space times on 2D data are per pair within one
batched call over all pairs; on volumes each pair is one call, as SimpleITK's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from groupact import load_run
from groupact.data import build_pair_source, fixed_pairs, load_data
from groupact.data.pairs import PairBatch
from groupact.evaluate.g_estimate import not_c2_symmetric
from groupact.groups import axis_angle_to_matrix
from groupact.groups.rotations3d import _cube_matrices
from groupact.latent.estimate import estimate_in_images, estimate_latent
from groupact.threads import use_threads

ROOT = Path(__file__).resolve().parents[1]
PRETRAINED = ROOT / "pretrained"


def sitk_module():
    """SimpleITK, or one line naming the extra that installs it."""
    try:
        import SimpleITK
    except ImportError:
        sys.exit("groupact: error: the SimpleITK baselines need the 'align' extra: pip install "
                 "-e '.[align]' (or run with --no-sitk)")
    SimpleITK.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    return SimpleITK


def test_pairs(name: str, n: int | None, heldout: list[str] | None = None):
    """A shipped model and the protocol's fixed test pairs (or ``n`` of them)."""
    run = load_run(PRETRAINED / name)
    cfg = run.cfg.data if heldout is None else dataclasses.replace(run.cfg.data, heldout=heldout)
    splits = load_data(cfg)
    source = build_pair_source(run.cfg, run.model.group, splits)
    return run.model, fixed_pairs(source, splits.test, n, run.cfg.eval.seed, non_identity=True,
                                  device="cpu"), splits


def timed(fn, *args, **kw):
    start = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - start


def angle_errors(group, g_hat: torch.Tensor, g: torch.Tensor) -> np.ndarray:
    return np.degrees(group.distance(g_hat, g).double().numpy())


def flags(est, wrong: np.ndarray) -> dict[str, float | None]:
    """How the ambiguity flag sits with the errors: the share flagged, and of the wrong and the
    right estimates the share flagged (None where there are none)."""
    flagged = est.ambiguous.numpy()
    share = lambda m: float(flagged[m].mean()) if m.any() else None  # noqa: E731
    return {"ambiguous": float(flagged.mean()), "wrong": int(wrong.sum()),
            "flagged_if_wrong": share(wrong), "flagged_if_right": share(~wrong)}


def stats(err: np.ndarray) -> dict[str, float]:
    return {"median_deg": float(np.median(err)), "p95_deg": float(np.percentile(err, 95)),
            "max_deg": float(err.max()), "within_5deg": float((err <= 5).mean())}


def latent_row(model, pairs: PairBatch, per_pair: bool = False, polish: bool = False):
    """model.estimate_g on all pairs (one call, or one call per pair), with its time; with
    ``polish`` refined locally on the pixels after the latent search."""
    if not per_pair:
        est, seconds = timed(model.estimate_g, pairs.x1, pairs.x2, polish=polish)
        return est, seconds / len(pairs.g)
    parts, total = [], 0.0
    for i in range(len(pairs.g)):
        est, s = timed(model.estimate_g, pairs.x1[i:i + 1], pairs.x2[i:i + 1], polish=polish)
        parts.append(est)
        total += s
    cat = lambda k: torch.cat([getattr(p, k) for p in parts])  # noqa: E731
    return dataclasses.replace(parts[0], **{k: cat(k) for k in ("g", "score", "runner_up",
                                                                  "runner_up_score",
                                                                  "ambiguous")}), \
        total / len(pairs.g)


def image_row(group, pairs: PairBatch, per_pair: bool = False):
    if not per_pair:
        est, seconds = timed(estimate_in_images, group, pairs.x1, pairs.x2)
        return est.g, seconds / len(pairs.g)
    out, total = [], 0.0
    for i in range(len(pairs.g)):
        est, s = timed(estimate_in_images, group, pairs.x1[i:i + 1], pairs.x2[i:i + 1])
        out.append(est.g)
        total += s
    return torch.cat(out), total / len(pairs.g)


def split_cost(model, pairs: PairBatch) -> dict[str, float]:
    """Seconds per pair of the encoder passes and of the latent search alone (latents given)."""
    with torch.no_grad():
        z, enc = timed(model.encode, torch.cat([pairs.x1, pairs.x2]))
        z1, z2 = z.chunk(2)
        _, search = timed(estimate_latent, model.action, z1, z2, model.mask.hard())
    n = len(pairs.g)
    return {"encode_s_per_pair": enc / n, "latent_search_s_per_pair": search / n}


# --- digits ---------------------------------------------------------------------------------------
def both_searches(name: str, label: str, n: int | None):
    """The shipped model's test pairs searched in the latent and on pixels, the pairs a half turn
    changes, and the fields every row of them shares."""
    model, pairs, _ = test_pairs(name, n)
    group = model.group
    est, t_latent = latent_row(model, pairs)
    g_img, t_image = image_row(group, pairs)
    keep = not_c2_symmetric(group, pairs.x1)   # the evaluation's criterion
    base = {"dataset": label, "model": f"pretrained/{name}", "group": group.name,
            "pairs": len(pairs.g), "not_c2_symmetric": int(keep.sum())}
    return model, pairs, group, est, t_latent, g_img, t_image, keep, base


def finite_rows(name: str, label: str, n: int | None) -> list[dict]:
    model, pairs, group, est, t_latent, g_img, t_image, keep, base = both_searches(name, label, n)
    exact = lambda g_hat, m=None: float((g_hat == pairs.g)[m if m is not None else slice(None)]  # noqa: E731
                                        .float().mean())
    rows = [dict(base, method="latent", exact=exact(est.g), exact_not_c2=exact(est.g, keep),
                 s_per_pair=t_latent, **flags(est, (est.g != pairs.g).numpy()),
                 **split_cost(model, pairs)),
            dict(base, method="image space", exact=exact(g_img), exact_not_c2=exact(g_img, keep),
                 s_per_pair=t_image)]
    return rows


def so2_rows(name: str, label: str, n: int | None) -> list[dict]:
    model, pairs, group, est, t_latent, g_img, t_image, keep, base = both_searches(name, label, n)
    e_lat, e_img = angle_errors(group, est.g, pairs.g), angle_errors(group, g_img, pairs.g)
    return [dict(base, method="latent", **stats(e_lat), s_per_pair=t_latent,
                 median_deg_not_c2=float(np.median(e_lat[keep.numpy()])),
                 p95_deg_not_c2=float(np.percentile(e_lat[keep.numpy()], 95)),
                 **flags(est, e_lat > 5), **split_cost(model, pairs)),
            dict(base, method="image space", **stats(e_img), s_per_pair=t_image)]


def turn_apart(group, a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Degrees between planar turns (C_n or SO(2)), by their angles."""
    d = torch.remainder(group.angle(a) - group.angle(b), 2 * math.pi).double()
    return np.degrees(torch.minimum(d, 2 * math.pi - d).numpy())


def symmetrised_rows(name: str, label: str, n: int) -> list[dict]:
    """C2-symmetric digits max(x, rot180 x): ĝ is right up to a half turn, and ambiguous."""
    model, pairs, _ = test_pairs(name, n)
    group = model.group
    x = torch.maximum(pairs.x1, torch.rot90(pairs.x1, 2, dims=(-2, -1)))
    sym = PairBatch(x, group.act_image(x, pairs.g), pairs.g)
    est, seconds = latent_row(model, sym)
    half = group.parse("180").expand(len(pairs.g))
    err = np.minimum(turn_apart(group, est.g, pairs.g),
                     turn_apart(group, est.g, group.compose(half, pairs.g)))
    rival = turn_apart(group, est.g, est.runner_up)
    same = (x == sym.x2).flatten(1).all(1).numpy()            # a half turn: x2 is x1 itself
    return [{"dataset": label, "model": f"pretrained/{name}", "group": group.name,
             "pairs": len(pairs.g), "method": "latent",
             "right_up_to_half_turn": float((err <= 2.0).mean()),
             "ambiguous": float(est.ambiguous.float().mean()),
             "identical_pairs": int(same.sum()),
             "ambiguous_if_not_identical": float(est.ambiguous.numpy()[~same].mean()),
             "runner_up_half_turn_away": float((np.abs(rival - 180) <= 5).mean()),
             "s_per_pair": seconds}]


# --- contrast -------------------------------------------------------------------------------------
def contrast_rows(n: int) -> list[dict]:
    model, pairs, _ = test_pairs("contrast", n)
    group = model.group
    est, t_latent = latent_row(model, pairs)
    start = time.perf_counter()
    u, v = group.logits(pairs.x1).flatten(1).double(), group.logits(pairs.x2).flatten(1).double()
    inside = (pairs.x1.flatten(1) > group.threshold).double()
    w = inside / inside.sum(1, keepdim=True)
    mu, mv = (w * u).sum(1, keepdim=True), (w * v).sum(1, keepdim=True)
    slope = (w * (u - mu) * (v - mv)).sum(1) / (w * (u - mu) ** 2).sum(1)
    g_img = torch.stack([slope, mv[:, 0] - slope * mu[:, 0]], 1).float()
    t_image = (time.perf_counter() - start) / len(pairs.g)

    def errors(g_hat):
        return {"median_log_a_error": float((g_hat[:, 0] / pairs.g[:, 0]).log().abs().median()),
                "median_b_error": float((g_hat[:, 1] - pairs.g[:, 1]).abs().median()),
                "p95_log_a_error": float((g_hat[:, 0] / pairs.g[:, 0]).log().abs()
                                         .quantile(0.95))}
    base = {"dataset": "brain slices, contrast", "model": "pretrained/contrast",
            "group": group.name, "pairs": len(pairs.g)}
    return [dict(base, method="latent", **errors(est.g), s_per_pair=t_latent),
            dict(base, method="image space (least squares on logits)", **errors(g_img),
                 s_per_pair=t_image)]


# --- brains ---------------------------------------------------------------------------------------
def sitk_image(sitk, volume: torch.Tensor):
    """A (D, H, W) volume as a SimpleITK image whose physical points are the centred index
    coordinates (x, y, z) = (w, h, d), the library's rotation centre."""
    img = sitk.GetImageFromArray(volume.numpy().astype(np.float32))
    d, h, w = volume.shape
    img.SetOrigin([-(w - 1) / 2, -(h - 1) / 2, -(d - 1) / 2])
    return img


def sitk_method(sitk, shrink: list[int], sigmas: list[float], iterations: int):
    r = sitk.ImageRegistrationMethod()
    r.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    r.SetMetricSamplingStrategy(r.NONE)
    r.SetInterpolator(sitk.sitkLinear)
    r.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-4,
                                               numberOfIterations=iterations,
                                               gradientMagnitudeTolerance=1e-8)
    r.SetOptimizerScalesFromPhysicalShift()
    r.SetShrinkFactorsPerLevel(shrink)
    r.SetSmoothingSigmasPerLevel(sigmas)
    return r


def sitk_register(sitk, method, fixed, moving, start_xyz: np.ndarray):
    transform = sitk.Euler3DTransform()
    transform.SetCenter((0.0, 0.0, 0.0))
    transform.SetMatrix(start_xyz.flatten().tolist())
    method.SetInitialTransform(transform, inPlace=False)
    out = method.Execute(fixed, moving)
    out = out.GetNthTransform(0) if hasattr(out, "GetNthTransform") else out
    return np.array(out.GetMatrix()).reshape(3, 3), method.GetMetricValue()


def to_dhw(a_xyz: np.ndarray) -> np.ndarray:
    """SimpleITK maps fixed (x2) points to moving (x1) points, x1(A p) = x2(p), so T_R with
    R = A⁻¹ = Aᵀ, its axes reversed from (x, y, z) to (d, h, w)."""
    return a_xyz.T[::-1, ::-1].copy()


def to_xyz(r_dhw: np.ndarray) -> np.ndarray:
    return r_dhw[::-1, ::-1].T.copy()


def sitk_estimates(sitk, pairs: PairBatch, starts: np.ndarray) -> tuple[torch.Tensor, float]:
    """Rotations by SimpleITK, one registration per pair: from each start at the coarse level,
    then from the best (lowest metric) at both levels; seconds per pair."""
    out, total = [], 0.0
    for i in range(len(pairs.g)):
        begin = time.perf_counter()
        fixed, moving = sitk_image(sitk, pairs.x2[i, 0]), sitk_image(sitk, pairs.x1[i, 0])
        best = starts[0]
        if len(starts) > 1:
            found = [sitk_register(sitk, sitk_method(sitk, [2], [1.0], 30), fixed, moving,
                                   to_xyz(s)) for s in starts]
            best = to_dhw(min(found, key=lambda f: f[1])[0])
        a, _ = sitk_register(sitk, sitk_method(sitk, [2, 1], [1.0, 0.0], 200), fixed, moving,
                             to_xyz(best))
        total += time.perf_counter() - begin
        out.append(torch.tensor(to_dhw(a), dtype=torch.float32))
    return torch.stack(out), total / len(pairs.g)


def small_turns(pairs: PairBatch, group, most_deg: float, seed: int) -> PairBatch:
    """The same x1 turned by at most ``most_deg`` about a uniform axis."""
    gen = torch.Generator().manual_seed(seed)
    n = len(pairs.g)
    axis = torch.randn(n, 3, generator=gen)
    angle = torch.rand(n, generator=gen) * math.radians(most_deg)
    g = axis_angle_to_matrix(axis, angle)
    return PairBatch(pairs.x1, group.act_image(pairs.x1, g), g)


def brain_rows(label: str, model, pairs: PairBatch, sitk, image: bool = True) -> list[dict]:
    group = model.group
    base = {"dataset": label, "model": "pretrained/brain3d", "group": group.name,
            "pairs": len(pairs.g)}
    est, t_latent = latent_row(model, pairs, per_pair=True)
    err = angle_errors(group, est.g, pairs.g)
    rows = [dict(base, method="latent", **stats(err), s_per_pair=t_latent,
                 **flags(est, err > 5))]
    est, t_polish = latent_row(model, pairs, per_pair=True, polish=True)
    err = angle_errors(group, est.g, pairs.g)
    rows.append(dict(base, method="latent, polished on the pixels", **stats(err),
                     s_per_pair=t_polish, **flags(est, err > 5)))
    if image:
        g_img, t_image = image_row(group, pairs, per_pair=True)
        rows.append(dict(base, method="image space", **stats(angle_errors(group, g_img, pairs.g)),
                         s_per_pair=t_image))
    if sitk is not None:
        for method, starts in (("SimpleITK, 1 start", np.eye(3)[None]),
                               ("SimpleITK, 24 starts", _cube_matrices().numpy())):
            g_reg, t_reg = sitk_estimates(sitk, pairs, starts)
            rows.append(dict(base, method=method, **stats(angle_errors(group, g_reg, pairs.g)),
                             s_per_pair=t_reg))
    return rows


# --- report ---------------------------------------------------------------------------------------
#: one table per kind of row: (title, the key that marks its rows, its columns)
TABLES = [
    ("Finite groups: ĝ exact", "exact",
     [("dataset", "data"), ("method", "method"), ("pairs", "pairs"), ("exact", "exact"),
      ("exact_not_c2", "exact, not C2-symmetric"), ("ambiguous", "flagged ambiguous"),
      ("flagged_if_wrong", "flagged, of the wrong"), ("s_per_pair", "ms / pair")]),
    ("Continuous groups: angle between ĝ and g (degrees)", "median_deg",
     [("dataset", "data"), ("method", "method"), ("pairs", "pairs"), ("median_deg", "median"),
      ("p95_deg", "p95"), ("max_deg", "max"), ("within_5deg", "share ≤ 5°"),
      ("ambiguous", "flagged ambiguous"), ("flagged_if_wrong", "flagged, of those > 5°"),
      ("s_per_pair", "ms / pair")]),
    ("C2-symmetrised digits max(x, rot180 x): g is determined up to a half turn",
     "right_up_to_half_turn",
     [("dataset", "data"), ("pairs", "pairs"), ("right_up_to_half_turn", "right up to 180°"),
      ("runner_up_half_turn_away", "runner-up 180° away"), ("ambiguous", "flagged ambiguous"),
      ("identical_pairs", "pairs with x2 = x1"),
      ("ambiguous_if_not_identical", "flagged, of the others"), ("s_per_pair", "ms / pair")]),
    ("Contrast (a, b)", "median_log_a_error",
     [("dataset", "data"), ("method", "method"), ("pairs", "pairs"),
      ("median_log_a_error", "median abs log(â/a)"), ("p95_log_a_error", "p95 abs log(â/a)"),
      ("median_b_error", "median abs(b̂ − b)"), ("s_per_pair", "ms / pair")]),
]


def fmt(key: str, value) -> str:
    if value is None:
        return "–"
    if key == "s_per_pair":
        return f"{value * 1e3:.3g}"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def markdown(rows: list[dict], meta: dict) -> str:
    lines = ["# Estimating g: latent search, image-space search, SimpleITK", "",
             f"`{meta['command']}`: {meta['seconds']:.0f} s on {meta['machine']}, one thread "
             "for torch and SimpleITK. "
             "Pairs: the protocol's fixed test pairs (x1, T_g x1) unless the row says "
             "otherwise; errors against the hidden g. Latent and image-space times on 2D data "
             "are per pair within one batched call; on volumes each pair is one call, as "
             "SimpleITK's."]
    for title, marker, columns in TABLES:
        part = [r for r in rows if marker in r]
        if not part:
            continue
        lines += ["", f"## {title}", "", "| " + " | ".join(t for _, t in columns) + " |",
                  "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(fmt(k, r.get(k)) for k, _ in columns) + " |" for r in part]
    split = [r for r in rows if "encode_s_per_pair" in r]
    if split:
        lines += ["", "Latent cost split, ms per pair (batched): the encoder passes, then the "
                      "search on the latents alone:", ""]
        lines += [f"- {r['dataset']}: {r['encode_s_per_pair'] * 1e3:.3g} + "
                  f"{r['latent_search_s_per_pair'] * 1e3:.3g}" for r in split]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=None,
                   help="2D pairs per row (default: every test pair, 1,000 for MNIST)")
    p.add_argument("--contrast-pairs", type=int, default=200)
    p.add_argument("--brain-pairs", type=int, default=24)
    p.add_argument("--heldout-pairs", type=int, default=16)
    p.add_argument("--rows", default="digits,symmetric,contrast,brain,heldout",
                   help="comma-separated groups of rows")
    p.add_argument("--no-sitk", action="store_true", help="skip the SimpleITK baselines")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "estimate-g"))
    args = p.parse_args()
    use_threads(args.threads)
    sitk = None if args.no_sitk else sitk_module()
    wanted = set(args.rows.split(","))
    load = os.getloadavg()[0]              # other work on the machine slows every method alike
    begin = time.perf_counter()
    rows: list[dict] = []

    def add(new: list[dict]) -> None:
        rows.extend(new)
        for r in new:
            print({k: fmt(k, v) for k, v in r.items()}, flush=True)

    if "digits" in wanted:
        add(finite_rows("rotmnist", "C4 digits", args.pairs))
        add(finite_rows("blocked", "C4 blocked digits", args.pairs))
        add(so2_rows("rotmnist-so2", "SO(2) digits", args.pairs))
        add(so2_rows("blocked-so2", "SO(2) blocked digits", args.pairs))
    if "symmetric" in wanted:
        add(symmetrised_rows("rotmnist", "C4, C2-symmetrised digits", 200))
        add(symmetrised_rows("rotmnist-so2", "SO(2), C2-symmetrised digits", 200))
    if "contrast" in wanted:
        add(contrast_rows(args.contrast_pairs))
    if "brain" in wanted:
        model, pairs, _ = test_pairs("brain3d", args.brain_pairs)
        add(brain_rows("brains, Haar turns", model, pairs, sitk))
        add(brain_rows("brains, turns ≤ 30°", model, small_turns(pairs, model.group, 30.0, 7),
                       sitk))
    if "heldout" in wanted:
        model, pairs, _ = test_pairs("brain3d", args.heldout_pairs, ["colin27", "itk-t1"])
        add(brain_rows("held-out real brains, Haar turns", model, pairs, sitk, image=False))
    command = "OMP_NUM_THREADS=1 python benchmarks/estimate_g.py " + " ".join(sys.argv[1:])
    meta = {"command": command.strip(), "threads": args.threads, "seconds":
            time.perf_counter() - begin, "torch": torch.__version__, "machine":
            f"{platform.machine()}, {os.cpu_count()} cores, load {load:.1f} at the start"}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    out.with_suffix(".md").write_text(markdown(rows, meta))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
