"""Per-angle numbers and figures for a trained SO(2) run (docs/SO2.md).

The protocol's latent equivariance error ‖Φ^v_g(z_v(x1)) − z_v(x2)‖²/‖z_v‖² and PSNR/SSIM, on
every test digit turned by one fixed angle at a time (30°, 45°, 137° by default), the error
against the angle every 5° (where a design that resamples a grid is exact only at right angles),
and for a blocked-MNIST run the split check of the C4 page (correlations of D(0, z_i) and
D(z_v, 0) with the block and the digit). Figures: input / target / prediction rows per angle,
an orbit strip, the error curve.

    python benchmarks/so2_angles.py RUN_DIR [--angles 30 45 137] [--out RUN_DIR/eval/angles]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from groupact.data import Occluder, load_data  # noqa: E402
from groupact.evaluate.metrics import psnr, ssim  # noqa: E402
from groupact.runs import load_run  # noqa: E402


@torch.no_grad()
def at_angle(model, x1, x2, theta: float) -> dict[str, float]:
    g = torch.full((x1.shape[0],), theta)
    z1, z2 = model.encode(x1), model.encode(x2)
    m = model.mask_like(z1)
    moved = model.action(z1, g)
    pred = model.decode(m * moved + (1 - m) * z1)
    eq = float((m * (moved - z2)).pow(2).sum() / (m * z2).pow(2).sum().clamp_min(1e-12))
    den = ((1 - m) * z2).pow(2).sum()
    inv = float(((1 - m) * (z1 - z2)).pow(2).sum() / den) if float(den) > 0 else math.nan
    return {"psnr": float(psnr(pred, x2).mean()), "ssim": float(ssim(pred, x2).mean()),
            "psnr_identity": float(psnr(x1, x2).mean()), "equiv_error": eq, "inv_error": inv}


def pairs_at(group, images, block, theta: float):
    """x1 = digit (+ block), x2 = turned digit (+ the same block): the recipe's pairs, fixed g."""
    x2 = group.act_image(images, torch.full((images.shape[0],), theta))
    if block is None:
        return images, x2
    return Occluder.paint(images, block), Occluder.paint(x2, block)


@torch.no_grad()
def split_check(model, digits) -> dict[str, float]:
    """As docs/RESULTS.md for blocked-mnist-c4: a block painted on every digit."""
    block = Occluder(7, 1.0).sample(len(digits), 28, 28, torch.Generator().manual_seed(0), "cpu")
    zv, zi = model.split(model.encode(Occluder.paint(digits, block)))
    from_zi, from_zv = model.decode(zi), model.decode(zv)

    def corr(a, b):
        a, b = a.flatten(1) - a.flatten(1).mean(1, True), b.flatten(1) - b.flatten(1).mean(1, True)
        return float((a * b).sum(1).div(a.norm(dim=1) * b.norm(dim=1) + 1e-8).mean())

    return {"corr_zi_block": corr(from_zi, block), "corr_zi_digit": corr(from_zi, digits),
            "corr_zv_digit": corr(from_zv, digits), "corr_zv_block": corr(from_zv, block)}


def figure_rows(model, group, x, block, angles, path: Path, title: str) -> None:
    rows = [("input x1", pairs_at(group, x, block, 0.0)[0])]
    for deg in angles:
        x1, x2 = pairs_at(group, x, block, math.radians(deg))
        with torch.no_grad():
            pred = model(x1, torch.full((x1.shape[0],), math.radians(deg)))
        rows += [(f"target {deg}°", x2), (f"D(Φ E x1) {deg}°", pred)]
    n = x.shape[0]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.3 * n, 1.35 * len(rows)))
    for r, (label, imgs) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(imgs[c, 0].clamp(0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure_orbit(model, group, x0, block, path: Path, title: str) -> None:
    degs = list(range(0, 360, 30)) + [137]
    x1s, x2s = zip(*(pairs_at(group, x0, block, math.radians(d)) for d in degs))
    x1, x2 = torch.cat(x1s), torch.cat(x2s)
    with torch.no_grad():
        pred = model(x1, torch.tensor([math.radians(d) for d in degs]))
    fig, axes = plt.subplots(2, len(degs), figsize=(1.1 * len(degs), 2.6))
    for c, d in enumerate(degs):
        for r, imgs in enumerate((x2, pred)):
            axes[r, c].imshow(imgs[c, 0].clamp(0, 1), cmap="gray", vmin=0, vmax=1)
            axes[r, c].set_xticks([]), axes[r, c].set_yticks([])
        axes[0, c].set_title(f"{d}°", fontsize=7)
    axes[0, 0].set_ylabel("T_θ x", fontsize=7)
    axes[1, 0].set_ylabel("through z", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--angles", type=float, nargs="+", default=[30, 45, 137])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    run = load_run(args.run_dir)
    cfg, model = run.cfg, run.model
    out = Path(args.out or Path(args.run_dir) / "eval" / "angles")
    out.mkdir(parents=True, exist_ok=True)
    test = load_data(cfg.data).test.images
    block = None
    if cfg.data.block_prob > 0:
        block = Occluder(cfg.data.block_size, cfg.data.block_prob).sample(
            len(test), 28, 28, torch.Generator().manual_seed(cfg.eval.seed), "cpu")
    group = model.group
    result = {"run": str(args.run_dir), "mask_variant": float(model.mask.hard().mean()),
              "angles": {}}
    for deg in args.angles:
        result["angles"][f"{deg:g}"] = at_angle(model, *pairs_at(group, test, block,
                                                                 math.radians(deg)),
                                                math.radians(deg))
    curve = {}
    for deg in range(0, 361, 5):
        x1, x2 = pairs_at(group, test[:200], None if block is None else block[:200],
                          math.radians(deg))
        curve[deg] = at_angle(model, x1, x2, math.radians(deg))["equiv_error"]
    result["equiv_error_every_5deg"] = curve
    if block is not None:
        result["split"] = split_check(model, test[:256])
    (out / "angles.json").write_text(json.dumps(result, indent=1))
    name = cfg.name
    figure_rows(model, group, test[:8], None if block is None else block[:8],
                [int(a) if a == int(a) else a for a in args.angles], out / "angles.png",
                f"{name}: input, then target and prediction at each angle (test digits)")
    figure_orbit(model, group, test[:1], None if block is None else block[:1],
                 out / "orbit.png", f"{name}: one test digit, every 30° and 137°")
    fig, ax = plt.subplots(figsize=(6, 2.4))
    ax.plot(list(curve), list(curve.values()), ".-")
    ax.set_xlabel("angle (°)"), ax.set_ylabel("equivariance error")
    ax.set_xticks(range(0, 361, 45))
    ax.set_title(f"{name}: ‖Φ_θ z_v(x) − z_v(T_θ x)‖²/‖z_v‖² on 200 test digits", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "equiv_vs_angle.png", dpi=110)
    plt.close(fig)
    print(json.dumps({k: v for k, v in result.items() if k != "equiv_error_every_5deg"},
                     indent=1))
    print("max equivariance error over 0..360° (5° steps):", max(curve.values()))


if __name__ == "__main__":
    main()
