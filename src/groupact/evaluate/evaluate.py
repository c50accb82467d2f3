"""The fixed evaluation protocol (docs/PROTOCOL.md): metrics.json, summary.md and figures.

Test pairs come from the test split with a fixed seed (``eval.seed``) and never use the identity,
so every method sees the same pairs and the do-nothing answer x̂2 = x1 has a finite PSNR.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from groupact.data import TransformPairs, build_pair_source, load_data
from groupact.errors import CheckpointError
from groupact.evaluate import figures
from groupact.evaluate.metrics import mse_per_image, psnr, ssim
from groupact.evaluate.probe import probe_accuracy, split_features
from groupact.io import atomic_write_json, atomic_write_text, folder_built_aside, read_jsonl
from groupact.model import GroupActionAutoencoder
from groupact.runs import load_run
from groupact.train import batches, fixed_pairs, resolve_device

EVAL_BATCH = 256


@torch.no_grad()
def encode_all(model: GroupActionAutoencoder, x: Tensor) -> Tensor:
    return torch.cat([model.encode(x[i:i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)])


@torch.no_grad()
def image_metrics(model: GroupActionAutoencoder, pairs) -> dict[str, float]:
    """Transformed reconstruction vs target, the do-nothing answer, and the latent errors."""
    sums: dict[str, float] = {}
    lat = {"inv_num": 0.0, "inv_den": 0.0, "eq_num": 0.0, "eq_den": 0.0}
    n = 0

    def add(key: str, values: Tensor) -> None:
        sums[key] = sums.get(key, 0.0) + float(values.sum())

    for b in batches(pairs, EVAL_BATCH):
        z1, z2 = model.encode(b.x1), model.encode(b.x2)
        m = model.mask_like(z1)
        moved = model.action(z1, b.g)
        pred = model.decode(m * moved + (1 - m) * z1)
        add("mse", mse_per_image(pred, b.x2))
        add("psnr", psnr(pred, b.x2))
        add("ssim", ssim(pred, b.x2))
        add("mse_identity", mse_per_image(b.x1, b.x2))
        add("psnr_identity", psnr(b.x1, b.x2))
        add("ssim_identity", ssim(b.x1, b.x2))
        add("psnr_autoencode", psnr(model.decode(z1), b.x1))
        # the same model told another pair's g: if this matches "psnr", the decoder ignores g
        wrong = model.action(z1, b.g.roll(1, 0))
        add("psnr_wrong_g", psnr(model.decode(m * wrong + (1 - m) * z1), b.x2))
        lat["inv_num"] += float(((1 - m) * (z1 - z2)).pow(2).sum())
        lat["inv_den"] += float(((1 - m) * z2).pow(2).sum())
        lat["eq_num"] += float((m * (moved - z2)).pow(2).sum())
        lat["eq_den"] += float((m * z2).pow(2).sum())
        n += b.x1.shape[0]
    out = {k: v / n for k, v in sums.items()}
    out["psnr_from_mean_mse"] = 10 * math.log10(1.0 / max(out["mse"], 1e-10))
    out["inv_error"] = lat["inv_num"] / lat["inv_den"] if lat["inv_den"] else math.nan
    out["equiv_error"] = lat["eq_num"] / lat["eq_den"] if lat["eq_den"] else math.nan
    out["n_pairs"] = n
    return out


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


@torch.no_grad()
def probes(model: GroupActionAutoencoder, source, splits, seed: int, steps: int,
           l2: float) -> dict[str, float | None]:
    """Linear probes on z_i / z_v / z; two protocols (see docs/PROTOCOL.md)."""
    if splits.train.labels is None or splits.test.labels is None:
        return {}
    mask = model.mask.hard()
    tr_idx, te_idx = torch.arange(len(splits.train)), torch.arange(len(splits.test))
    dev = splits.train.images.device
    turned_train = source.views(splits.train, tr_idx.to(dev), torch.Generator().manual_seed(seed),
                                device=dev)
    upright_train = source.views(splits.train, tr_idx.to(dev), None, device=dev)
    turned_test = source.views(splits.test, te_idx.to(dev),
                               torch.Generator().manual_seed(seed + 1), device=dev)
    feats = []
    for views in (turned_train, upright_train, turned_test):
        z = encode_all(model, views)
        f = split_features(z, mask)
        f["zinv"] = torch.cat([model.invariant_features(z[i:i + EVAL_BATCH])
                               for i in range(0, len(z), EVAL_BATCH)])
        feats.append(f)
    f_tt, f_ut, f_te = feats
    y_tr, y_te = splits.train.labels, splits.test.labels
    # parts that are the same features (z_v = z when every channel is variant, z_i = z and the
    # read-out = z_i when none is) share one probe: the probes are most of the evaluation's time
    variant = int(mask.sum())
    same_as = {"zv": "z"} if variant == mask.numel() else {}
    if variant == 0:
        same_as = {"zi": "z", "zinv": "z"}
    out: dict[str, float | None] = {}
    for part in ("z", "zi", "zv", "zinv"):
        if part in same_as:
            out[f"probe_{part}"] = out[f"probe_{same_as[part]}"]
            out[f"probe_{part}_upright"] = out[f"probe_{same_as[part]}_upright"]
            continue
        out[f"probe_{part}"] = probe_accuracy(f_tt[part], y_tr, f_te[part], y_te, steps, l2)
        out[f"probe_{part}_upright"] = probe_accuracy(f_ut[part], y_tr, f_te[part], y_te, steps,
                                                      l2)
    out["probe_chance"] = float(torch.bincount(y_te.cpu()).max()) / len(y_te)
    return out


def mask_stats(model: GroupActionAutoencoder, run_dir: Path) -> dict[str, Any]:
    hard = model.mask.hard().cpu()
    history = read_jsonl(run_dir / "metrics.jsonl")
    fractions = [r["mask_fraction"] for r in history if "mask_fraction" in r]
    flips = 0
    for prev, cur in zip(history, history[1:]):
        if "mask" in prev and "mask" in cur:
            flips += sum(int(a != b) for a, b in zip(prev["mask"], cur["mask"]))
    return {"mask_fraction": float(hard.mean()), "mask_channels": int(hard.numel()),
            "mask_variant_channels": [int(i) for i in hard.nonzero().flatten().tolist()],
            "mask_fraction_first_epoch": fractions[0] if fractions else None,
            "mask_flips_during_training": flips}


def short_labels(group, g: Tensor) -> list[str]:
    """Figure titles: SO(3)'s 'ad,ah,aw,angle°' shortened to its angle."""
    return [d.rsplit(",", 1)[-1] if d.count(",") >= 3 else d for d in group.describe(g)]


@torch.no_grad()
def make_figures(model, source, splits, pairs, cfg, fig_dir: Path, run_dir: Path) -> list[str]:
    group, name = model.group, cfg.name
    written = []
    n = min(8 if pairs.x1.dim() == 4 else 4, pairs.x1.shape[0])  # volumes show 3 slices each
    pred = model(pairs.x1[:n], pairs.g[:n])
    p = fig_dir / "reconstructions.png"
    figures.reconstruction_grid(pairs.x1[:n], pairs.x2[:n], pred,
                                short_labels(group, pairs.g[:n]), p,
                                f"{name}: x1, T_g x1, D(Φ_g(E x1)) on test pairs")
    written.append(p.name)

    x0 = pairs.x1[:1]
    try:
        elems = group.orbit_elements(8, device=x0.device)
    except NotImplementedError:
        elems = group.sample(8, torch.Generator().manual_seed(0)).to(x0.device)
    xs = x0.expand(elems.shape[0], *x0.shape[1:])
    if isinstance(source, TransformPairs):  # rendered poses have no T_g of one image
        p = fig_dir / "orbit.png"
        figures.orbit_strip(group.act_image(xs, elems), model(xs, elems),
                            short_labels(group, elems), p,
                            f"{name}: one test image through the group, true vs through latent")
        written.append(p.name)

    z = model.encode(pairs.x1[:n])
    zv, zi = model.split(z)
    p = fig_dir / "latent_maps.png"
    figures.latent_maps(pairs.x1[:n], z, model.mask.hard(), p,
                        f"{name}: |z|, |z_v| (moved), |z_i| (kept), "
                        f"{int(model.mask.hard().sum())}/{model.mask.channels} channels variant",
                        model.decode(zv), model.decode(zi))
    written.append(p.name)

    k = min(5, pairs.x1.shape[0] // 2)
    xa, xb = pairs.x1[:k], pairs.x1[k:2 * k]
    za, zb = model.encode(xa), model.encode(xb)
    m = model.mask_like(za)
    mixed = m * za[:, None] + (1 - m) * zb[None, :]          # (k, k, C, *fibre)
    swapped = model.decode(mixed.flatten(0, 1)).view(k, k, *xa.shape[1:])
    p = fig_dir / "swap.png"
    figures.swap_grid(xa, xb, swapped, p, f"{name}: decode(z_v of row, z_i of column)")
    written.append(p.name)

    history = read_jsonl(run_dir / "metrics.jsonl")
    p = fig_dir / "training_curves.png"
    figures.training_curves(history, p, f"{name}: training")
    written.append(p.name)
    if cfg.model.mask.kind == "ald":
        p = fig_dir / "mask.png"
        figures.mask_over_epochs(history, cfg.model.mask.tau, p, f"{name}: the learned mask")
        written.append(p.name)
    return written


def evaluate_run(run_dir: str | Path, out_dir: str | Path | None = None,
                 device: str = "cpu", log: Callable[[str], None] = print,
                 figures_on: bool | None = None) -> dict[str, Any]:
    """Evaluate a trained run with the fixed protocol; writes RUN_DIR/eval/metrics.json.

    The output folder is built aside and renamed into place whole (see
    :func:`groupact.io.folder_built_aside`): a kill leaves the previous evaluation as it was.
    """
    from groupact.runs import claim_eval_folder
    device = str(resolve_device(device, "--device"))
    run = load_run(run_dir, device=device)
    out = Path(out_dir) if out_dir else run.paths.eval
    lock = claim_eval_folder(run.paths, out)
    try:
        return _evaluate(run, out, device, log, figures_on)
    finally:
        lock.release()


def _evaluate(run, out: Path, device: str, log: Callable[[str], None],
              figures_on: bool | None) -> dict[str, Any]:
    cfg, model, run_dir = run.cfg, run.model, run.paths.root
    splits = load_data(cfg.data)
    if splits.fingerprint() != run.checkpoint.get("data_fingerprint"):
        raise CheckpointError(f"the data for {run_dir} differs from the data it was trained on "
                              "(split fingerprint); check data.path and the package versions")
    for part in (splits.train, splits.val, splits.test):
        part.images = part.images.to(device)
    source = build_pair_source(cfg, model.group, splits)
    pairs = fixed_pairs(source, splits.test, cfg.eval.n_pairs, cfg.eval.seed, non_identity=True,
                        device=torch.device(device))
    metrics: dict[str, Any] = {"recipe": cfg.name, "dataset": splits.info.get("name"),
                               "stand_in_data": bool(splits.info.get("stand_in", False)),
                               "group": model.group.name, "epochs": cfg.train.epochs,
                               "best_epoch": run.checkpoint["epoch"]}
    metrics.update(image_metrics(model, pairs))
    metrics["homomorphism_error"] = homomorphism_error(model, pairs.x1, cfg.eval.seed + 2)
    metrics.update(mask_stats(model, run.paths.root))
    metrics.update(probes(model, source, splits, cfg.eval.seed + 10, cfg.eval.probe_steps,
                          cfg.eval.probe_l2))
    do_figs = cfg.eval.figures if figures_on is None else figures_on
    with folder_built_aside(out) as part:  # whole or not at all: never new figures, old metrics
        if do_figs:
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
             + f"; group {m['group']}; {m['n_pairs']} fixed test pairs without the identity; "
             f"{m['epochs']} epochs, best validation loss at epoch {m['best_epoch']} (the model "
             "evaluated).", "",
             "| transformed image x̂2 vs x2 = T_g x1 | PSNR (dB) | SSIM | MSE |",
             "|---|---|---|---|",
             f"| model D(Φ_g(E x1)) | {_fmt(m['psnr'], 2)} | {_fmt(m['ssim'])} | "
             f"{_fmt(m['mse'], 5)} |",
             f"| do nothing (x̂2 = x1) | {_fmt(m['psnr_identity'], 2)} | "
             f"{_fmt(m['ssim_identity'])} | {_fmt(m['mse_identity'], 5)} |", "",
             f"Plain autoencoding PSNR {_fmt(m['psnr_autoencode'], 2)} dB; told another pair's g, "
             f"the model scores {_fmt(m.get('psnr_wrong_g'), 2)} dB; PSNR from the mean MSE "
             f"{_fmt(m['psnr_from_mean_mse'], 2)} dB.", "",
             "| latent error (relative, 0 = exact) | value |", "|---|---|",
             f"| invariance ‖z_i(x1) − z_i(x2)‖²/‖z_i‖² | {_fmt(m['inv_error'], 4)} |",
             f"| equivariance ‖Φ_g z_v(x1) − z_v(x2)‖²/‖z_v‖² | {_fmt(m['equiv_error'], 4)} |",
             f"| homomorphism ‖Φ_aΦ_b z_v − Φ_ab z_v‖²/‖Φ_ab z_v‖² | "
             f"{_fmt(m['homomorphism_error'], 6)} |", "",
             f"Mask: {_fmt(m['mask_fraction'])} of {m['mask_channels']} channels variant "
             f"(first epoch {_fmt(m.get('mask_fraction_first_epoch'))}; "
             f"{m.get('mask_flips_during_training', 0)} channel flips during training).", ""]
    if "probe_z" in m:
        lines += ["| linear probe accuracy | z_i | z_v | z | invariant read-out |",
                  "|---|---|---|---|---|",
                  f"| train & test on transformed images | {_fmt(m['probe_zi'])} | "
                  f"{_fmt(m['probe_zv'])} | {_fmt(m['probe_z'])} | "
                  f"{_fmt(m.get('probe_zinv'))} |",
                  f"| train upright, test transformed | {_fmt(m['probe_zi_upright'])} | "
                  f"{_fmt(m['probe_zv_upright'])} | {_fmt(m['probe_z_upright'])} | "
                  f"{_fmt(m.get('probe_zinv_upright'))} |", "",
                  f"Chance (majority class): {_fmt(m['probe_chance'])}.", ""]
    if m.get("figures"):
        lines += ["Figures: " + ", ".join(f"[{f}](figures/{f})" for f in m["figures"]), ""]
    return "\n".join(lines)

