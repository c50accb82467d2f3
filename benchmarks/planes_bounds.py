"""What the plane's pixels can score: answers that are told part of the truth, beside the model.

    python benchmarks/planes_bounds.py RUN [--pairs 1000] [--out benchmarks/results/planes-bounds]

On the protocol's fixed test pairs of a planes run (eval.seed), the PSNR on the target's plane
pixels (its renderer alpha > ½, as ``psnr_object`` of the evaluation) and on the whole picture of:

- the run's prediction, as evaluated;
- the run's reconstruction of x1 itself (no turn), scored against x1 on x1's plane pixels: what
  the net draws when no 3D inference is asked of it;
- the run's colours and sky under the target's TRUE silhouette (a perfect alpha; what the plane's
  shape costs against what its colour costs);
- a flat colour on the true silhouette over the target's own sky: the data set's mean plane colour,
  x1's mean plane colour (all a pose-free model can know of the colour from x1), and the target's
  own mean plane colour (the best single colour there is; no model can know it from x1);
- the target itself blurred by a Gaussian of σ pixels: how sharp a prediction must be.

The flat-colour rows need no model and bound what a silhouette-exact but shading-free plane
scores; they are the yardstick for the plane-pixel bar. Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from groupact.data import batches, build_pair_source, fixed_pairs, load_data
from groupact.evaluate.metrics import EVAL_BATCH, psnr, region_psnr
from groupact.runs import load_run
from groupact.threads import use_threads


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """A separable Gaussian blur of (B, C, H, W) with replicated edges."""
    half = int(3 * sigma)
    r = torch.arange(-half, half + 1, dtype=x.dtype)
    k = torch.exp(-r ** 2 / (2 * sigma ** 2))
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(x.shape[1], 1, 1, 1)
    y = F.pad(x, (half,) * 4, mode="replicate")
    y = F.conv2d(y, k, groups=x.shape[1])
    return F.conv2d(y, k.transpose(2, 3), groups=x.shape[1])


def plane_colour(x: Tensor, alpha: Tensor) -> Tensor:
    """Each picture's mean colour over its plane, weighted by the alpha: (B, C, 1, 1)."""
    w = alpha.expand_as(x)
    return ((w * x).sum((2, 3)) / w.sum((2, 3)).clamp_min(1e-6))[..., None, None]


def silhouette_iou(alpha: Tensor, truth: Tensor) -> Tensor:
    """Per picture, the intersection over union of the drawn and the true plane (alpha > ½)."""
    a, t = (alpha > 0.5).flatten(1), (truth > 0.5).flatten(1)
    return (a & t).sum(1) / (a | t).sum(1).clamp_min(1)


#: the answer scored against x1 (the rest are scored against the target x2)
AUTOENCODED = "the run's reconstruction of x1 itself (no turn), against x1"


@torch.no_grad()
def answers(model, b, mean_colour: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Every answer of the table for one batch of pairs, each (B, C, H, W), and the silhouette
    IoU of the run's two drawings (turned, against x2's alpha; autoencoded, against x1's)."""
    z1 = model.encode(b.x1)
    m = model.mask_like(z1)
    rgb, alpha, sky = model.decoder.parts(model.mix(m, model.action(z1, b.g), z1))
    rgb1, alpha1, sky1 = model.decoder.parts(z1)
    a2 = b.alpha2

    def on_true_silhouette(colour: Tensor) -> Tensor:
        return a2 * colour + (1 - a2) * b.x2

    out = {"the run's prediction": alpha * rgb + (1 - alpha) * sky,
           AUTOENCODED: alpha1 * rgb1 + (1 - alpha1) * sky1,
           "the run's colours and sky, true silhouette": a2 * rgb + (1 - a2) * sky,
           "flat colour: the data set's mean plane colour, true silhouette":
               on_true_silhouette(mean_colour),
           "flat colour: x1's mean plane colour, true silhouette":
               on_true_silhouette(plane_colour(b.x1, b.alpha1)),
           "flat colour: the target's own mean plane colour, true silhouette":
               on_true_silhouette(plane_colour(b.x2, a2))}
    for sigma in (1.0, 2.0, 3.0):
        out[f"the target blurred, σ = {sigma:g} px"] = gaussian_blur(b.x2, sigma)
    ious = {"the run's prediction": silhouette_iou(alpha, a2),
            AUTOENCODED: silhouette_iou(alpha1, b.alpha1)}
    return out, ious


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--out", default="benchmarks/results/planes-bounds")
    args = ap.parse_args()
    use_threads(1)
    start = time.time()
    loaded = load_run(args.run)
    cfg, model = loaded.cfg, loaded.model
    model.eval()
    splits = load_data(cfg.data)
    source = build_pair_source(cfg, model.group, splits)
    pairs = fixed_pairs(source, splits.test, args.pairs, cfg.eval.seed, non_identity=True,
                        device=torch.device("cpu"))
    if pairs.alpha2 is None:
        raise SystemExit("groupact: error: the run's data has no renderer alpha (not planes)")
    mean_colour = plane_colour(pairs.x2, pairs.alpha2).mean(0, keepdim=True)
    sums: dict[str, list[float]] = {}
    iou: dict[str, float] = {}
    for b in batches(pairs, EVAL_BATCH):
        found, ious = answers(model, b, mean_colour)
        for name, ans in found.items():
            target, alpha = (b.x1, b.alpha1) if name == AUTOENCODED else (b.x2, b.alpha2)
            s = sums.setdefault(name, [0.0, 0.0, 0.0])
            v = region_psnr(ans, target, alpha > 0.5)
            s[0] += float(v.nan_to_num(0.0).sum())
            s[1] += int((~v.isnan()).sum())
            s[2] += float(psnr(ans, target).sum())
        for name, v in ious.items():
            iou[name] = iou.get(name, 0.0) + float(v.sum())
    n = pairs.x1.shape[0]
    rows = [{"answer": k, "psnr_object": s[0] / s[1], "psnr": s[2] / n,
             "silhouette_iou": iou[k] / n if k in iou else None} for k, s in sums.items()]
    result = {"run": str(args.run), "pairs": n, "eval_seed": cfg.eval.seed,
              "plane_fraction": float((pairs.alpha2 > 0.5).float().mean()),
              "seconds": round(time.time() - start, 1), "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"# What the plane's pixels can score ({args.run})", "",
             f"`python benchmarks/planes_bounds.py {args.run}`: the protocol's {n} fixed test "
             f"pairs; the plane covers {100 * result['plane_fraction']:.1f} % of the pixels. "
             "'true silhouette' rows are told the target's renderer alpha; the flat-colour and "
             "blurred rows keep the target's own sky, so their whole-picture PSNR is the plane's "
             "error alone.", "",
             "| answer | plane pixels (dB) | whole picture (dB) | silhouette IoU |",
             "|---|---|---|---|"]
    lines += [f"| {r['answer']} | {r['psnr_object']:.2f} | {r['psnr']:.2f} | "
              + (f"{r['silhouette_iou']:.2f} |" if r["silhouette_iou"] is not None else "– |")
              for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
