"""PNG figures: reconstructions, orbits, latent maps, z_v/z_i swaps, training curves, the mask.

Volumes are shown as their three central orthogonal slices side by side; RGB as colour images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from groupact.evaluate.views3d import whole_volume_views
from groupact.extras import need
from groupact.io import atomic_save_figure

#: what needs matplotlib (the 'eval' extra) and how to do without, for the one-line error
FIGURES_NEED = ("drawing the evaluation's figures",
                "without them: eval.figures=false, or evaluate --no-figures")


def _subplots(nrows: int = 1, ncols: int = 1, figsize=None, **kw):
    """(figure, axes) on matplotlib's object-oriented API: no pyplot, so drawing here neither
    switches the backend of the caller's process nor keeps figures alive in pyplot's registry."""
    figure = need("matplotlib.figure", "eval", *FIGURES_NEED)
    fig = figure.Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kw)


def to_display(x: Tensor) -> np.ndarray:
    """(N, C, H, W) or (N, C, D, H, W) → (N, h, w) grey or (N, h, w, 3) RGB arrays in [0, 1]."""
    x = x.detach().float().cpu()
    if x.dim() == 5:  # three central orthogonal slices, side by side
        d, h, w = x.shape[2:]
        side = max(d, h, w)

        def pad(s: Tensor) -> Tensor:
            out = torch.zeros(*s.shape[:2], side, side)
            out[..., :s.shape[-2], :s.shape[-1]] = s
            return out

        x = torch.cat([pad(x[:, :, d // 2]), pad(x[:, :, :, h // 2]), pad(x[:, :, :, :, w // 2])],
                      dim=-1)
    if x.shape[1] == 1:
        return x[:, 0].numpy()
    return x[:, :3].permute(0, 2, 3, 1).clamp(0, 1).numpy()


def _show(ax, img: np.ndarray, cmap: str = "gray", vmin=0.0, vmax=1.0) -> None:
    if img.ndim == 3:
        ax.imshow(img)
    else:
        ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_xticks([])
    ax.set_yticks([])


def _grid(rows: list[tuple[str, np.ndarray]], titles: list[str] | None, path: Path,
          suptitle: str, cmaps: dict[str, str] | None = None, scale: float = 1.3) -> None:
    n_cols = len(rows[0][1])
    aspect = rows[0][1].shape[2] / rows[0][1].shape[1]
    fig, axes = _subplots(len(rows), n_cols, squeeze=False,
                             figsize=(scale * aspect * n_cols + 1.2, scale * len(rows) + 0.6))
    for r, (name, imgs) in enumerate(rows):
        cmap = (cmaps or {}).get(name, "gray")
        vmax = max(float(imgs.max()), 1e-8) if cmap != "gray" else 1.0
        for c in range(n_cols):
            _show(axes[r, c], imgs[c], cmap, 0.0, vmax)
            if c == 0:
                axes[r, c].set_ylabel(name, fontsize=9)
            if r == 0 and titles:
                axes[r, c].set_title(titles[c], fontsize=8)
    fig.suptitle(suptitle, fontsize=10)
    atomic_save_figure(path, fig)


def reconstruction_grid(x1: Tensor, x2: Tensor, pred: Tensor, labels: list[str],
                        path: Path, title: str) -> None:
    """Rows: input x1, target T_g x1, prediction D(Φ_g(E x1)), |error|."""
    err = (pred - x2).abs().mean(1, keepdim=True)
    _grid([("input", to_display(x1)), ("target", to_display(x2)),
           ("prediction", to_display(pred)), ("|error|", to_display(err))],
          labels, path, title, cmaps={"|error|": "magma"})


def orbit_strip(truth: Tensor, pred: Tensor, labels: list[str], path: Path, title: str) -> None:
    """One image through many g: the true T_g x above the latent-space prediction."""
    _grid([("T_g x", to_display(truth)), ("D(Φ_g E x)", to_display(pred))], labels, path, title)


def whole_volume_grid(rows: list[tuple[str, Tensor]], labels: list[str], path: Path, title: str,
                      binary: bool) -> None:
    """Rows of volumes drawn whole (views3d): isosurfaces for binary shapes, else the maximum
    projections along d, h and w side by side."""
    _grid([(name, to_display(whole_volume_views(v, binary))) for name, v in rows], labels, path,
          title, scale=1.6 if binary else 1.3)


def _latent_magnitude(z: Tensor) -> Tensor:
    """Per-position magnitude summed over channels: (B, *spatial) for map/volume latents."""
    return z.abs().sum(1, keepdim=True)


def latent_maps(x: Tensor, z: Tensor, mask: Tensor, path: Path, title: str,
                decoded_v: Tensor | None = None, decoded_i: Tensor | None = None) -> None:
    """|z|, |z_v|, |z_i| per image, and optionally D(z_v) and D(z_i) decoded on their own.

    Spatial latents show heat maps over positions; vector latents show per-channel bars coloured
    by the mask. The decoded rows show what each part carries (for blocked MNIST: the digit in
    z_v, the block in z_i).
    """
    m = mask.view(1, -1, *([1] * (z.dim() - 2))).to(z)
    parts = []
    if decoded_v is not None and decoded_i is not None:
        parts = [("D(z_v, 0)", to_display(decoded_v)), ("D(0, z_i)", to_display(decoded_i))]
    if z.dim() >= 4:  # spatial latents: heat maps over positions
        rows = [("input", to_display(x)), ("|z|", to_display(_latent_magnitude(z))),
                ("|z_v|", to_display(_latent_magnitude(m * z))),
                ("|z_i|", to_display(_latent_magnitude((1 - m) * z)))] + parts
        _grid(rows, None, path, title, cmaps={"|z|": "viridis", "|z_v|": "viridis",
                                               "|z_i|": "viridis"})
        return
    norms = z.flatten(2).norm(dim=2).detach().cpu().numpy()  # (B, C)
    n = min(6, z.shape[0])
    rows = [("input", to_display(x))] + parts
    fig, axes = _subplots(len(rows) + 1, n, figsize=(2.2 * n, 2.1 * (len(rows) + 1)),
                             squeeze=False)
    colors = np.where(mask.cpu().numpy() > 0.5, "tab:red", "tab:blue")
    for c in range(n):
        for r, (name, imgs) in enumerate(rows):
            _show(axes[r, c], imgs[c])
            if c == 0:
                axes[r, c].set_ylabel(name, fontsize=9)
        axes[-1, c].bar(np.arange(norms.shape[1]), norms[c], color=colors)
        axes[-1, c].set_xticks([])
    axes[-1, 0].set_ylabel("|fibre| (red: z_v, blue: z_i)", fontsize=8)
    fig.suptitle(title, fontsize=10)
    atomic_save_figure(path, fig)


def empty_part_note(mask: Tensor) -> str | None:
    """Why a swap grid or a z_i / z_v panel shows nothing new: one part of the latent is empty."""
    variant, channels = int(mask.sum()), mask.numel()
    if variant == channels:
        return ("z_i is empty (every channel variant): a cell is its row's image alone, "
                "D(0, z_i) and |z_i| are blank")
    if variant == 0:
        return ("z_v is empty (no channel variant): a cell is its column's image alone, "
                "D(z_v, 0) and |z_v| are blank")
    return None


def swap_grid(xa: Tensor, xb: Tensor, swapped: Tensor, path: Path, title: str,
              note: str | None = None) -> None:
    """Cell (i, j) decodes z_v of row image A_i with z_i of column image B_j (``note``: a line
    under the title, e.g. why every column looks the same)."""
    n, k = xa.shape[0], xb.shape[0]
    a, b, s = to_display(xa), to_display(xb), to_display(swapped.view(n * k, *swapped.shape[2:]))
    fig, axes = _subplots(n + 1, k + 1, figsize=(1.3 * (k + 1) + 0.6, 1.3 * (n + 1) + 0.6),
                             squeeze=False)
    axes[0, 0].axis("off")
    axes[0, 0].text(0.5, 0.5, "z_v: row\nz_i: column", ha="center", va="center", fontsize=8)
    for j in range(k):
        _show(axes[0, j + 1], b[j])
    for i in range(n):
        _show(axes[i + 1, 0], a[i])
        for j in range(k):
            _show(axes[i + 1, j + 1], s[i * k + j])
    fig.suptitle(title + (f"\n{note}" if note else ""), fontsize=10 if not note else 8)
    atomic_save_figure(path, fig)


def training_curves(records: list[dict[str, Any]], path: Path, title: str) -> None:
    """Train/validation losses (log scale) and validation PSNR per epoch."""
    if not records:
        return
    ep = [r["epoch"] for r in records]
    fig, (a, b) = _subplots(1, 2, figsize=(10, 3.6))
    never = []   # terms that are 0 every epoch (e.g. L_inv with z_i empty): no line on a log axis
    for key in sorted(k for k in records[-1] if k.startswith(("train_", "val_")) and
                      k != "val_psnr"):
        values = np.array([r.get(key, np.nan) for r in records], dtype=float)
        values[~(values > 0)] = np.nan    # a zero is not a value of a log plot: a gap, no spike
        if np.isnan(values).all():
            never.append(key)
            continue
        a.plot(ep, values, label=key, linestyle="-" if key.startswith("train") else "--",
               marker="." if len(ep) < 30 else None)
    if never:
        a.text(0.01, 0.01, "0 every epoch: " + ", ".join(never), transform=a.transAxes,
               fontsize=7, va="bottom")
    a.set_yscale("log")
    a.set_xlabel("epoch")
    a.legend(fontsize=7)
    a.set_title("losses")
    b.plot(ep, [r.get("val_psnr", np.nan) for r in records], color="tab:green")
    b.set_xlabel("epoch")
    b.set_ylabel("dB")
    b.set_title("validation PSNR of T_g x through the latent")
    fig.suptitle(title, fontsize=10)
    atomic_save_figure(path, fig)


def mask_over_epochs(records: list[dict[str, Any]], tau: float | None, path: Path,
                     title: str) -> None:
    """The 0/1 mask of every channel per epoch (heat map) and the fraction of variant channels.

    The hard mask, not σ(α), is drawn: logits often hover near τ, where σ(α) looks uniform but
    channels still flip between the variant and invariant sides.
    """
    if not records or "mask" not in records[0]:
        return
    hard = np.array([r["mask"] for r in records]).T  # (C, epochs)
    probs = np.array([r.get("mask_probs", r["mask"]) for r in records])
    fig, (a, b) = _subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [3, 1.3]})
    a.imshow(hard, aspect="auto", cmap="coolwarm", vmin=0, vmax=1, interpolation="nearest",
             extent=(0.5, len(records) + 0.5, hard.shape[0] - 0.5, -0.5))
    a.set_xlabel("epoch")
    a.set_ylabel("channel")
    a.set_title("red: variant (z_v), blue: invariant (z_i)"
                + (f"; σ(α) in [{probs.min():.2f}, {probs.max():.2f}], τ = {tau:g}"
                   if tau is not None else ""), fontsize=9)
    b.plot([r["epoch"] for r in records], [r["mask_fraction"] for r in records], marker=".",
           clip_on=False, zorder=3)   # drawn over the frame: a line at 0 or 1 stays visible
    b.set_ylim(-0.03, 1.03)
    b.set_xlabel("epoch")
    b.set_title("fraction variant")
    fig.suptitle(title, fontsize=10)
    atomic_save_figure(path, fig)


@torch.no_grad()
def representation_figure(action, path: Path, title: str) -> None:
    """What a learned ρ_θ settled on: SO(2) its frequencies ω_j and its character tr ρ(θ) beside
    the fixed action's; SO(3) its three generators; a finite group ρ(g) for every element."""
    group = action.group
    if action.form == "so2":
        omega = action.frequencies.detach().cpu().numpy()
        theta = torch.linspace(0, 2 * np.pi, 361)
        char = action.representation(theta).diagonal(dim1=-2, dim2=-1).sum(-1).cpu().numpy()
        fig, (a, b) = _subplots(1, 2, figsize=(10, 3.4))
        a.bar(np.arange(len(omega)), omega, color="tab:red")
        top = max(3.0, float(np.ceil(omega.max())) + 0.5) if len(omega) else 3.0
        for w in range(int(np.floor(min(0.0, omega.min() if len(omega) else 0.0))), int(top) + 1):
            a.axhline(w, color="0.8", lw=0.8, zorder=0)
        a.set_xticks(np.arange(len(omega)))
        a.set_xlabel("block j")
        a.set_ylabel("frequency ω_j")
        a.set_title("integers: a representation of the circle", fontsize=9)
        fixed = action.k // 2 * 2 * np.cos(theta.numpy()) + action.k % 2
        b.plot(np.degrees(theta.numpy()), char, label="learned tr ρ(θ)")
        b.plot(np.degrees(theta.numpy()), fixed, "--", label="fixed (ω = 1)")
        b.set_xlabel("θ (degrees)")
        b.legend(fontsize=8)
    elif action.form == "so3":
        gens = action.generators().detach().cpu().numpy()
        fig, axes = _subplots(1, 3, figsize=(10, 3.4))
        lim = float(np.abs(gens).max()) or 1.0
        for ax, gen, name in zip(axes, gens, ("A_d", "A_h", "A_w")):
            ax.imshow(gen, cmap="RdBu_r", vmin=-lim, vmax=lim)
            ax.set_title(name, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    else:
        elements = group.elements()[:24]
        rho = action.representation(elements).detach().cpu().numpy()
        cols = min(8, len(rho))
        rows = int(np.ceil(len(rho) / cols))
        fig, axes = _subplots(rows, cols, figsize=(1.5 * cols, 1.6 * rows + 0.6), squeeze=False)
        for ax in axes.flat:
            ax.set_axis_off()
        for ax, m, label in zip(axes.flat, rho, group.describe(elements)):
            ax.imshow(m, cmap="RdBu_r", vmin=-1, vmax=1)
            ax.set_title(f"{label}\ntr {np.trace(m):+.2f}", fontsize=7)   # the character
    fig.suptitle(title, fontsize=10)
    atomic_save_figure(path, fig)
