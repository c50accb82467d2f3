"""The figures of one evaluated run (reconstructions, orbit, whole-volume views, latent maps, swap,
training curves, the mask over epochs), drawn with the primitives of :mod:`.figures`."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from groupact.data import TransformPairs
from groupact.evaluate import figures
from groupact.evaluate.report import read_history
from groupact.evaluate.views3d import looks_binary


def short_labels(group, g: Tensor) -> list[str]:
    """Figure titles: SO(3)'s 'ad,ah,aw,angle°' shortened to its angle."""
    return [d.rsplit(",", 1)[-1] if d.count(",") >= 3 else d for d in group.describe(g)]


def axis_angle_labels(group, g: Tensor) -> list[str]:
    """Figure titles that fit a column: SO(3)'s axis to 2 decimals over its angle to 0.1°
    (`groupact transform --g` takes the full 'ad,ah,aw,angle°' of ``group.describe``)."""
    out = []
    for d in group.describe(g):
        parts = d.split(",")
        if len(parts) != 4:
            out.append(d)
            continue
        axis = ", ".join(f"{float(v):.2f}" for v in parts[:3])
        out.append(f"axis ({axis})\n{float(parts[3].rstrip('°')):.1f}°")
    return out


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
    orbit = None
    if hasattr(source, "orbit"):   # rendered data: the plane's other rendered views are T_g x
        item = int(torch.randint(len(splits.test), (1,),
                                 generator=torch.Generator().manual_seed(cfg.eval.seed)))
        x0s, truth, g_orbit = source.orbit(splits.test, item, 7, device=x0.device)
        # first column: the view x itself (g = identity), then its plane's other poses
        truth = torch.cat([x0s[:1], truth])
        x0s = torch.cat([x0s[:1], x0s])
        g_orbit = torch.cat([group.identity(1, device=x0.device), g_orbit])
        p = fig_dir / "orbit.png"
        figures.orbit_strip(truth, model(x0s, g_orbit), short_labels(group, g_orbit), p,
                            f"{name}: one test view x (first column) and its plane's other "
                            "rendered poses T_g x, vs D(Φ_g E x)")
        written.append(p.name)
    elif isinstance(source, TransformPairs):  # rendered poses have no T_g of one image
        orbit = [("T_g x", group.act_image(xs, elems)), ("D(Φ_g E x)", model(xs, elems))]
        p = fig_dir / "orbit.png"
        figures.orbit_strip(orbit[0][1], orbit[1][1], short_labels(group, elems), p,
                            f"{name}: one test image through the group, true vs through latent")
        written.append(p.name)

    if pairs.x1.dim() == 5:   # volumes: whole-volume views beside the slices
        binary = looks_binary(splits.test.images)
        how = "isosurfaces at 0.5" if binary else "max projections along d | h | w"
        p = fig_dir / "reconstructions_3d.png"
        figures.whole_volume_grid([("input", pairs.x1[:n]), ("target", pairs.x2[:n]),
                                   ("prediction", pred)], axis_angle_labels(group, pairs.g[:n]), p,
                                  f"{name}: x1, T_g x1, D(Φ_g(E x1)) ({how}; g as its axis in "
                                  "d, h, w and its angle)", binary)
        written.append(p.name)
        if orbit is not None:
            p = fig_dir / "orbit_3d.png"
            figures.whole_volume_grid(orbit, axis_angle_labels(group, elems), p,
                                      f"{name}: one test volume through the group ({how})",
                                      binary)
            written.append(p.name)

    z = model.encode(pairs.x1[:n])
    zv, zi = model.split(z)
    p = fig_dir / "latent_maps.png"
    empty = figures.empty_part_note(model.mask.hard())
    figures.latent_maps(pairs.x1[:n], z, model.mask.hard(), p,
                        f"{name}: |z|, |z_v| (moved), |z_i| (kept), "
                        f"{int(model.mask.hard().sum())}/{model.mask.channels} channels variant"
                        + (f"\n{empty}" if empty else ""),
                        model.decode(zv), model.decode(zi))
    written.append(p.name)

    k = min(5, pairs.x1.shape[0] // 2)
    truth = None
    if hasattr(source, "swap_indices"):
        # rendered data: rows and columns on skies of their own, so the truth can be drawn
        ia, ib, sa, sb = source.swap_indices(splits.test, k, torch.Generator().manual_seed(
            cfg.eval.seed + 4))
        xa = source.on_sky(splits.test, ia, sa, device=pairs.x1.device)
        xb = source.on_sky(splits.test, ib, sb, device=pairs.x1.device)
        truth = source.on_sky(splits.test, ia.repeat_interleave(k), sb.repeat(k),
                              device=pairs.x1.device).view(k, k, *xa.shape[1:])
    else:
        xa, xb = pairs.x1[:k], pairs.x1[k:2 * k]
    za, zb = model.encode(xa), model.encode(xb)
    m = model.mask_like(za)
    mixed = model.mix(m, za[:, None], zb[None, :])          # (k, k, C, *fibre)
    swapped = model.decode(mixed.flatten(0, 1)).view(k, k, *xa.shape[1:])
    p = fig_dir / "swap.png"
    figures.swap_grid(xa, xb, swapped, p, f"{name}: decode(z_v of row, z_i of column)", empty)
    written.append(p.name)
    if truth is not None:
        p = fig_dir / "swap_truth.png"
        figures.swap_grid(xa, xb, truth, p, f"{name}: truth: plane of row (its pose) on the sky "
                          "of column")
        written.append(p.name)

    if hasattr(model.action, "representation") and hasattr(model.action, "form"):
        p = fig_dir / "representation.png"
        figures.representation_figure(model.action, p, f"{name}: the learned representation ρ_θ")
        written.append(p.name)

    history = read_history(run_dir)
    p = fig_dir / "training_curves.png"
    figures.training_curves(history, p, f"{name}: training")
    written.append(p.name)
    if any(True for _ in model.mask.parameters()):   # a learned mask: how it moved
        p = fig_dir / "mask.png"
        figures.mask_over_epochs(history, model.mask.tau, p, f"{name}: the learned mask")
        written.append(p.name)
    return written
