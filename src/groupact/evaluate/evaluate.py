"""The fixed evaluation protocol (docs/PROTOCOL.md): metrics.json, summary.md and figures.

Test pairs come from the test split with a fixed seed (``eval.seed``) and never use the identity,
so every method sees the same pairs and the do-nothing answer x̂2 = x1 has a finite PSNR.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from groupact.config import SELECT_KEYS, EvalConfig
from groupact.data import batches, build_pair_source, fixed_pairs, load_data
from groupact.distributed import resolve_device
from groupact.errors import CheckpointError, GroupactError
from groupact.evaluate.figures import FIGURES_NEED
from groupact.evaluate.g_estimate import g_estimate_metrics, relabelled
from groupact.evaluate.metrics import EVAL_BATCH, dice, mse_per_image, psnr, region_psnr, ssim
from groupact.evaluate.probe import PROBES_NEED, ProbeSettings, check_probe_labels, probes, \
    untrained_copy
from groupact.evaluate.report import read_history
from groupact.evaluate.run_figures import make_figures
from groupact.evaluate.views3d import looks_binary
from groupact.extras import require
from groupact.io import atomic_write_json, atomic_write_text, folder_built_aside, refuse_symlink
from groupact.model import GroupActionAutoencoder
from groupact.runs import claim_eval_folder, load_run


@torch.no_grad()
def image_metrics(model: GroupActionAutoencoder, pairs, binary: bool = False
                  ) -> dict[str, float]:
    """Transformed reconstruction vs target, the do-nothing and mean-target answers, and the
    latent errors; with ``binary`` (masks such as adrenal shapes) their Dice overlaps too."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}      # keys averaged over fewer images than the pairs (regions)
    lat = {"inv_num": 0.0, "inv_sq": 0.0, "eq_num": 0.0, "eq_den": 0.0}
    inv_sum: Tensor | None = None      # Σ over pairs of (1 − M) z2, for the centred energy
    mean_target = pairs.x2.mean(0, keepdim=True)   # an orientation-free blob
    n = 0

    def add(key: str, values: Tensor) -> None:
        sums[key] = sums.get(key, 0.0) + float(values.sum())

    def add_regions(suffix: str, answer: Tensor, b) -> None:
        """PSNR on the target's object pixels (its alpha > ½) and on its background pixels."""
        if b.alpha2 is None:
            return
        obj = b.alpha2 > 0.5
        for region, mask in (("object", obj), ("background", ~obj)):
            v = region_psnr(answer, b.x2, mask)
            key = f"psnr_{region}{suffix}"
            sums[key] = sums.get(key, 0.0) + float(v.nan_to_num(0.0).sum())
            counts[key] = counts.get(key, 0) + int((~v.isnan()).sum())

    for b in batches(pairs, EVAL_BATCH):
        z1, z2 = model.encode(b.x1), model.encode(b.x2)
        m = model.mask_like(z1)
        moved = model.action(z1, b.g)
        pred = model.decode(model.mix(m, moved, z1))
        add("mse", mse_per_image(pred, b.x2))
        add("psnr", psnr(pred, b.x2))
        add("ssim", ssim(pred, b.x2))
        add_regions("", pred, b)
        if binary:
            add("dice", dice(pred, b.x2))
        for name, answer in (("identity", b.x1), ("mean_target", mean_target.expand_as(b.x2))):
            add(f"mse_{name}", mse_per_image(answer, b.x2))
            add(f"psnr_{name}", psnr(answer, b.x2))
            add(f"ssim_{name}", ssim(answer, b.x2))
            add_regions(f"_{name}", answer, b)
            if binary:
                add(f"dice_{name}", dice(answer, b.x2))
        add("psnr_autoencode", psnr(model.decode(z1), b.x1))
        # the same model told another pair's g: if this matches "psnr", the decoder ignores g
        wrong = model.action(z1, b.g.roll(1, 0))
        wrong_pred = model.decode(model.mix(m, wrong, z1))
        add("psnr_wrong_g", psnr(wrong_pred, b.x2))
        add_regions("_wrong_g", wrong_pred, b)
        zi2 = ((1 - m) * z2).double()   # float64: the centred energy is a difference of sums
        lat["inv_num"] += float(((1 - m) * (z1 - z2)).pow(2).sum())
        lat["inv_sq"] += float(zi2.pow(2).sum())
        inv_sum = zi2.sum(0) if inv_sum is None else inv_sum + zi2.sum(0)
        lat["eq_num"] += float((m * (moved - z2)).pow(2).sum())
        lat["eq_den"] += float((m * z2).pow(2).sum())
        n += b.x1.shape[0]
    out = {k: v / counts.get(k, n) if counts.get(k, n) else math.nan for k, v in sums.items()}
    out["wrong_g_cost"] = out["psnr"] - out["psnr_wrong_g"]
    out["psnr_from_mean_mse"] = 10 * math.log10(1.0 / max(out["mse"], 1e-10))
    # centred: a near-constant invariant channel has little energy about its mean, so it no
    # longer looks invariant just by being large (Σ (z − z̄)² = Σ z² − n·z̄²)
    inv_den = lat["inv_sq"] - float(inv_sum.pow(2).sum()) / n if inv_sum is not None else 0.0
    out["inv_error"] = lat["inv_num"] / inv_den if inv_den > 1e-12 else math.nan
    out["equiv_error"] = lat["eq_num"] / lat["eq_den"] if lat["eq_den"] else math.nan
    out["n_pairs"] = n
    return out


@torch.no_grad()
def swap_metrics(model: GroupActionAutoencoder, source, split, n: int, seed: int,
                 device: str = "cpu") -> dict[str, float]:
    """``swap_psnr``: decode(z_v of A, z_i of B) against the ground truth, the plane of A at A's
    pose on the sky of B (rendered data only: the source must draw views on chosen skies).
    Beside it two answers that need no model: B itself (``swap_psnr_column``: the right sky,
    the wrong plane) and A itself (``swap_psnr_row``: the right plane, the wrong sky); a swap
    that works beats both."""
    if not hasattr(source, "swap_pairs"):
        return {}
    gen = torch.Generator().manual_seed(seed)
    xa, xb, truth = source.swap_pairs(split, n, gen, device=device)
    sums = {"swap_psnr": 0.0, "swap_ssim": 0.0, "swap_psnr_column": 0.0, "swap_psnr_row": 0.0}
    for i in range(0, n, EVAL_BATCH):
        a, b, t = xa[i:i + EVAL_BATCH], xb[i:i + EVAL_BATCH], truth[i:i + EVAL_BATCH]
        za, zb = model.encode(a), model.encode(b)
        m = model.mask_like(za)
        pred = model.decode(model.mix(m, za, zb))
        sums["swap_psnr"] += float(psnr(pred, t).sum())
        sums["swap_ssim"] += float(ssim(pred, t).sum())
        sums["swap_psnr_column"] += float(psnr(b, t).sum())
        sums["swap_psnr_row"] += float(psnr(a, t).sum())
    out = {k: v / n for k, v in sums.items()}
    out["swap_pairs"] = int(n)
    return out


@torch.no_grad()
def decoded_shares(model: GroupActionAutoencoder, x: Tensor) -> dict[str, float]:
    """Where the decoder's object and background come from, for nets that draw them apart
    (``decoder.parts``: object colour, alpha, background; planes): the share of each drawing's
    variation over the pictures ``x`` that is lost when z_i, or z_v, is replaced by its mean over
    them. ``background_share_zi`` = lost without z_i / (lost without z_i + lost without z_v), and
    ``object_share_zv`` likewise: 1 when the split is clean (a channel the mask calls variant but
    the decoder ignores counts for nothing, as it should), ½ when either half draws it alike.
    Two passes: the latent means, then the drawings."""
    if not hasattr(model.decoder, "parts"):
        return {}
    zsum, n = None, 0
    for i in range(0, len(x), EVAL_BATCH):
        z = model.encode(x[i:i + EVAL_BATCH]).double().sum(0)
        zsum, n = (z if zsum is None else zsum + z), n + min(EVAL_BATCH, len(x) - i)
    zmean = (zsum / n).to(x.dtype)[None]
    # per drawing: Σ d and Σ d² (its variation), and per half Σ ‖d − d(that half at its mean)‖²
    acc = {k: {"sq": 0.0, "sum": 0.0, "zi": 0.0, "zv": 0.0} for k in DRAWN_BY}
    for i in range(0, len(x), EVAL_BATCH):
        z = model.encode(x[i:i + EVAL_BATCH])
        m = model.mask_like(z)
        mean = zmean.expand_as(z)          # mix(m, variant part, invariant part)
        drawn = _drawings(model, z)
        without = {"zi": _drawings(model, model.mix(m, z, mean)),
                   "zv": _drawings(model, model.mix(m, mean, z))}
        for k, a in acc.items():
            d = drawn[k].double()
            a["sq"] += float(d.pow(2).sum())
            a["sum"] = a["sum"] + d.sum(0)
            for half in ("zi", "zv"):
                a[half] += float((d - without[half][k].double()).pow(2).sum())
    out = {}
    for k, a in acc.items():
        variation = a["sq"] - float(a["sum"].pow(2).sum()) / n
        for half in ("zi", "zv"):
            out[f"{k}_lost_without_{half}"] = a[half] / variation if variation > 1e-12 else math.nan
        both, own = a["zi"] + a["zv"], DRAWN_BY[k]
        out[f"{k}_share_{own}"] = a[own] / both if both > 0 else math.nan
    return out


#: each drawing of a parts decoder and the half of the latent that should draw it
DRAWN_BY = {"object": "zv", "background": "zi"}


def _drawings(model: GroupActionAutoencoder, z: Tensor) -> dict[str, Tensor]:
    """The object as drawn (alpha·colour) and the background, from a latent."""
    rgb, alpha, background = model.decoder.parts(z)
    return {"object": alpha * rgb, "background": background}


@torch.no_grad()
def homomorphism_error(model: GroupActionAutoencoder, x: Tensor, seed: int) -> float:
    """‖Φ_a(Φ_b(z_v)) − Φ_{ab}(z_v)‖² / ‖Φ_{ab}(z_v)‖²: 0 for an exact latent representation."""
    gen = torch.Generator().manual_seed(seed)
    group = model.group
    num = den = 0.0
    for i in range(0, len(x), EVAL_BATCH):
        z = model.encode(x[i:i + EVAL_BATCH])
        zv = model.mask_like(z) * z
        a = group.sample(z.shape[0], gen).to(z.device)
        b = group.sample(z.shape[0], gen).to(z.device)
        twice = model.action(model.action(zv, b), a)
        once = model.action(zv, group.compose(a, b))
        m = model.mask_like(z)
        num += float((m * (twice - once)).pow(2).sum())
        den += float((m * once).pow(2).sum())
    return num / den if den else math.nan


def mask_stats(model: GroupActionAutoencoder, run_dir: Path) -> dict[str, Any]:
    hard = model.mask.hard().cpu()
    history = read_history(run_dir)
    fractions = [r["mask_fraction"] for r in history if "mask_fraction" in r]
    flips = 0
    for prev, cur in zip(history, history[1:]):
        if "mask" in prev and "mask" in cur:
            flips += sum(int(a != b) for a, b in zip(prev["mask"], cur["mask"]))
    return {"mask_fraction": float(hard.mean()), "mask_channels": int(hard.numel()),
            "mask_variant_channels": [int(i) for i in hard.nonzero().flatten().tolist()],
            "mask_fraction_first_epoch": fractions[0] if fractions else None,
            "mask_flips_during_training": flips}


def check_eval_extras(e: EvalConfig, figures_on: bool | None = None,
                      probes_on: bool | None = None) -> None:
    """The libraries the evaluation will import, checked before any work (and before training,
    when an evaluation follows it), so a missing 'eval' extra is one line now, not a traceback
    after the training."""
    if e.probes if probes_on is None else probes_on:
        require("sklearn", "eval", *PROBES_NEED)
    if e.figures if figures_on is None else figures_on:
        require("matplotlib", "eval", *FIGURES_NEED)


def evaluate_run(run_dir: str | Path, out_dir: str | Path | None = None,
                 device: str = "cpu", log: Callable[[str], None] = print,
                 figures_on: bool | None = None,
                 heldout: list[str] | None = None,
                 probes_on: bool | None = None,
                 n_pairs: int | None = None, trust_code: bool = False) -> dict[str, Any]:
    """Evaluate a trained run with the fixed protocol; writes RUN_DIR/eval/metrics.json.

    ``figures_on`` / ``probes_on`` (None: the run's ``eval.figures`` / ``eval.probes``) switch the
    figures and the linear probes; without probes the image metrics take seconds. ``n_pairs``
    evaluates on N test pairs drawn with the protocol's seed (as ``eval.n_pairs``). A quick
    evaluation (no probes, or fewer
    pairs) goes to RUN_DIR/eval-quick unless ``out_dir`` says otherwise, so it never replaces the
    protocol's full one.

    ``heldout`` (brain3d runs on the generated population): evaluate on test subjects made from
    these other real brains instead of the run's test split (default folder RUN_DIR/eval-heldout).
    The output folder is built aside and renamed into place whole (see
    :func:`groupact.io.folder_built_aside`): a kill leaves the previous evaluation as it was.
    ``trust_code``: as in :func:`groupact.runs.load_run`.
    """
    device = str(resolve_device(device, "--device"))
    run = load_run(run_dir, device=device, trust_code=trust_code)
    if n_pairs is not None:
        if n_pairs < 1:
            raise GroupactError(f"--pairs takes 1 or more; got {n_pairs}")
        run.cfg = dataclasses.replace(run.cfg, eval=dataclasses.replace(run.cfg.eval,
                                                                         n_pairs=n_pairs))
    check_eval_extras(run.cfg.eval, figures_on, probes_on)
    quick = n_pairs is not None or probes_on is False
    out = Path(out_dir) if out_dir else run.paths.root / (
        "eval-heldout" if heldout else "eval-quick" if quick else "eval")
    refuse_symlink(out)
    splits = _checked_splits(run, heldout)
    read_history(run.paths.root)                  # a damaged training log: refused before work
    if run.cfg.eval.probes if probes_on is None else probes_on:
        check_probe_labels(splits)
    lock = claim_eval_folder(run.paths, out)
    try:
        return _evaluate(run, splits, out, device, log, figures_on, probes_on)
    finally:
        lock.release()


def _checked_splits(run, heldout: list[str] | None):
    """The run's data, checked against the fingerprint it was trained on; with ``heldout`` its test
    split replaced by subjects made from those real brains."""
    cfg = run.cfg
    if heldout and (cfg.data.kind != "brain3d" or cfg.data.path or cfg.data.heldout):
        raise GroupactError("--heldout evaluates a brain3d run trained on the generated "
                            f"population on other real brains; {run.paths.root} is "
                            f"data.kind={cfg.data.kind}" + (" with data.path" if cfg.data.path
                                                            else ""))
    splits = load_data(cfg.data)
    if splits.fingerprint() != run.checkpoint.get("data_fingerprint"):
        raise CheckpointError(f"the data for {run.paths.root} differs from the data it was trained "
                              "on (split fingerprint); check data.path and the package versions")
    if heldout:
        other = load_data(dataclasses.replace(cfg.data, heldout=list(heldout)))
        splits = type(splits)(splits.train, splits.val, other.test, info=other.info)
    return splits


def _evaluate(run, splits, out: Path, device: str, log: Callable[[str], None],
              figures_on: bool | None, probes_on: bool | None = None) -> dict[str, Any]:
    cfg, model, run_dir = run.cfg, run.model, run.paths.root
    for part in (splits.train, splits.val, splits.test):
        part.images = part.images.to(device)
    source = build_pair_source(cfg, model.group, splits)
    pairs = fixed_pairs(source, splits.test, cfg.eval.n_pairs, cfg.eval.seed, non_identity=True,
                        device=torch.device(device))
    metrics: dict[str, Any] = {"recipe": cfg.name, "dataset": splits.info.get("name"),
                               "test_data": ("held-out real brains: " + ", ".join(splits.info["heldout"])
                                             if splits.info.get("heldout") else "test split"),
                               "stand_in_data": bool(splits.info.get("stand_in", False)),
                               "group": model.group.name, "epochs": cfg.train.epochs,
                               "best_epoch": run.checkpoint["epoch"],
                               "selected_by": SELECT_KEYS.get(cfg.train.select, cfg.train.select)}
    if not cfg.pairs.g_known:    # trained without g: its estimate against the hidden truth
        log("the estimate of g against the test pairs' g ...")
        found, phi = g_estimate_metrics(model, pairs)
        metrics.update(found)
        pairs = relabelled(pairs, phi)
    log(f"evaluating {run_dir}: image metrics on {pairs.x1.shape[0]} fixed test pairs ...")
    metrics.update(image_metrics(model, pairs, looks_binary(splits.test.images)))
    log("homomorphism error, swap and mask ...")
    metrics["homomorphism_error"] = homomorphism_error(model, pairs.x1, cfg.eval.seed + 2)
    if hasattr(model.action, "report"):     # a learned ρ_θ: its own laws, and what it settled on
        metrics.update(model.action.report(seed=cfg.eval.seed + 5))
    metrics.update(swap_metrics(model, source, splits.test, int(pairs.x1.shape[0]),
                                cfg.eval.seed + 3, device))
    metrics.update(mask_stats(model, run.paths.root))
    metrics.update(decoded_shares(model, pairs.x1))
    if cfg.eval.probes if probes_on is None else probes_on:
        random_model = (untrained_copy(model, cfg, run.checkpoint["input_shape"],
                                       cfg.eval.seed + 20) if cfg.eval.orbit_probes else None)
        log("linear probes (`--no-probes` skips them) ...")
        metrics.update(probes(model, source, splits, cfg.eval.seed + 10,
                              ProbeSettings.from_eval(cfg.eval), random_model,
                              cfg.eval.probe_items, orbit=cfg.eval.orbit_probes, log=log))
    do_figs = cfg.eval.figures if figures_on is None else figures_on
    with folder_built_aside(out) as part:  # whole or not at all: never new figures, old metrics
        if do_figs:
            log("figures ...")
            metrics["figures"] = make_figures(model, source, splits, pairs, cfg, part / "figures",
                                              run.paths.root)
        atomic_write_json(part / "metrics.json", metrics)
        atomic_write_text(part / "summary.md", summary_markdown(metrics))
    log(f"wrote {out / 'metrics.json'}")
    return metrics


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def summary_markdown(m: dict[str, Any]) -> str:
    """A short human-readable report of metrics.json."""
    lines = [f"# {m['recipe']}: evaluation", "",
             f"Data: {m['dataset']}" + (" (generated stand-in)" if m.get("stand_in_data") else "")
             + (f"; tested on {m['test_data']}" if m.get("test_data", "test split") != "test split"
                else "")
             + f"; group {m['group']}; {m['n_pairs']} fixed test pairs without the identity; "
             f"{m['epochs']} epochs, best {m.get('selected_by', 'validation loss')} at epoch "
             f"{m['best_epoch']} (the model evaluated).", "",
             "| transformed image x̂2 vs x2 = T_g x1 | PSNR (dB) | SSIM | MSE |",
             "|---|---|---|---|",
             f"| model D(Φ_g(E x1)) | {_fmt(m['psnr'], 2)} | {_fmt(m['ssim'])} | "
             f"{_fmt(m['mse'], 5)} |",
             f"| do nothing (x̂2 = x1) | {_fmt(m['psnr_identity'], 2)} | "
             f"{_fmt(m['ssim_identity'])} | {_fmt(m['mse_identity'], 5)} |",
             f"| mean target (x̂2 = mean of all x2) | {_fmt(m.get('psnr_mean_target'), 2)} | "
             f"{_fmt(m.get('ssim_mean_target'))} | {_fmt(m.get('mse_mean_target'), 5)} |", ""]
    if "g_automorphism" in m:
        unit = "°" if "g_estimate_median_deg" in m else ""
        median, p95 = (next((v for k, v in m.items() if k.startswith(f"g_estimate_{stat}_")
                             and not k.endswith("_not_c2")), None) for stat in ("median", "p95"))
        error = (f"exactly right on {_fmt(m['g_estimate_exact'])} of the test pairs"
                 if "g_estimate_exact" in m else
                 f"off by {_fmt(median, 2)}{unit} (median) and {_fmt(p95, 2)}{unit} (95th "
                 "percentile) on the test pairs")
        lines += [f"Trained without g: its estimate of g (model.estimate_g) is {error}, up to "
                  f"the automorphism '{m['g_automorphism']}', through which the rows above were "
                  "given g.", ""]
    if "dice" in m:
        lines += [f"Dice (binary shapes, both thresholded at 0.5): model {_fmt(m['dice'])}, do "
                  f"nothing {_fmt(m.get('dice_identity'))}, mean target "
                  f"{_fmt(m.get('dice_mean_target'))}.", ""]
    if "psnr_object" in m:
        lines += ["| PSNR by the target's pixels (dB) | object (alpha > ½) | background |",
                  "|---|---|---|"]
        for label, suffix in (("model", ""), ("do nothing", "_identity"),
                              ("mean target", "_mean_target"), ("model told another pair's g",
                                                                "_wrong_g")):
            lines.append(f"| {label} | {_fmt(m.get('psnr_object' + suffix), 2)} | "
                         f"{_fmt(m.get('psnr_background' + suffix), 2)} |")
        lines.append("")
    if "object_share_zv" in m:
        lines += [f"Where the drawings come from (their variation over the test pictures lost "
                  f"when a half of the latent is replaced by its mean): the object "
                  f"{_fmt(m['object_lost_without_zv'])} without z_v, "
                  f"{_fmt(m['object_lost_without_zi'])} without z_i (share in z_v "
                  f"{_fmt(m['object_share_zv'])}); the background "
                  f"{_fmt(m['background_lost_without_zi'])} without z_i, "
                  f"{_fmt(m['background_lost_without_zv'])} without z_v (share in z_i "
                  f"{_fmt(m['background_share_zi'])}).", ""]
    if "swap_psnr" in m:
        lines += [f"Swap against the rendered truth (plane of A at A's pose on the sky of B, "
                  f"{m.get('swap_pairs')} couples): decode(z_v of A, z_i of B) scores PSNR "
                  f"{_fmt(m['swap_psnr'], 2)} dB, SSIM {_fmt(m.get('swap_ssim'))}; B itself "
                  f"(right sky, wrong plane) {_fmt(m.get('swap_psnr_column'), 2)} dB, A itself "
                  f"(right plane, wrong sky) {_fmt(m.get('swap_psnr_row'), 2)} dB.", ""]
    lines += [
             f"Plain autoencoding PSNR {_fmt(m['psnr_autoencode'], 2)} dB; told another pair's g, "
             f"the model scores {_fmt(m.get('psnr_wrong_g'), 2)} dB; PSNR from the mean MSE "
             f"{_fmt(m['psnr_from_mean_mse'], 2)} dB.", "",
             "| latent error (relative, 0 = exact) | value |", "|---|---|",
             f"| invariance ‖z_i(x1) − z_i(x2)‖²/‖z_i − mean z_i‖² | {_fmt(m['inv_error'], 4)} |",
             f"| equivariance ‖Φ_g z_v(x1) − z_v(x2)‖²/‖z_v‖² | {_fmt(m['equiv_error'], 4)} |",
             f"| homomorphism ‖Φ_aΦ_b z_v − Φ_ab z_v‖²/‖Φ_ab z_v‖² | "
             f"{_fmt(m['homomorphism_error'], 6)} |", "",
             f"Mask: {_fmt(m['mask_fraction'])} of {m['mask_channels']} channels variant "
             f"(first epoch {_fmt(m.get('mask_fraction_first_epoch'))}; "
             f"{m.get('mask_flips_during_training', 0)} channel flips during training).", ""]
    if "probe_z" in m:
        passes = m.get("orbit_pool_passes")
        cols = [("z_i", "zi", 1), ("z_v", "zv", 1), ("z", "z", 1), ("invariant read-out", "zinv", 1)]
        if "probe_orbit" in m:
            cols += [("this encoder, image orbit-pooled", "orbit", passes),
                     ("random encoder, image orbit-pooled", "orbit_random", passes)]
        cols = [c for c in cols if c[1] == "zinv" or f"probe_{c[1]}" in m]
        lines += ["| linear probe accuracy | " + " | ".join(c[0] for c in cols) + " |",
                  "|---" * (len(cols) + 1) + "|",
                  "| train & test on transformed images | "
                  + " | ".join(_fmt(m.get(f"probe_{c[1]}")) for c in cols) + " |",
                  "| train upright, test transformed | "
                  + " | ".join(_fmt(m.get(f"probe_{c[1]}_upright")) for c in cols) + " |",
                  "| encoder passes per image | " + " | ".join(str(c[2]) for c in cols) + " |",
                  "", f"Chance (majority class): {_fmt(m['probe_chance'])}.", ""]
    if m.get("figures"):
        lines += ["Figures: " + ", ".join(f"[{f}](figures/{f})" for f in m["figures"]), ""]
    return "\n".join(lines)

