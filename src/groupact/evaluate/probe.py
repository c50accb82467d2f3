"""Linear probes: how much class information each part of the latent (z_i, z_v, z) carries, and
the probe protocol of an evaluation (turned and upright training views, orbit-pooling baselines)."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from groupact.build import model_from_config
from groupact.data import TransformPairs
from groupact.errors import GroupactError
from groupact.evaluate.metrics import EVAL_BATCH, encode_all
from groupact.model import GroupActionAutoencoder


def fit_linear_probe(x: Tensor, y: Tensor, n_classes: int, steps: int = 100,
                     l2: float = 1e-3) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Multinomial logistic regression on standardised features, full-batch L-BFGS (float32).

    Returns (weight, bias, mean, std) so the same standardisation is applied to test features.
    """
    x = x.float()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    xs = (x - mean) / std
    w = torch.zeros(x.shape[1], n_classes, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=steps, history_size=10,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xs @ w + b, y) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach(), mean, std


def probe_accuracy(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor,
                   steps: int = 100, l2: float = 1e-3) -> float | None:
    """Test accuracy of a linear probe trained on (train_x, train_y); None for empty features."""
    if train_x.shape[1] == 0:
        return None
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    w, b, mean, std = fit_linear_probe(train_x.cpu(), train_y.cpu(), n_classes, steps, l2)
    logits = ((test_x.cpu().float() - mean) / std) @ w + b
    return float((logits.argmax(1) == test_y.cpu()).double().mean())


def split_features(z: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """Flattened features of the invariant channels, the variant channels and the whole latent."""
    keep = mask.bool().cpu()
    return {"zi": z[:, ~keep].flatten(1), "zv": z[:, keep].flatten(1), "z": z.flatten(1)}


@torch.no_grad()
def orbit_pooled(model: GroupActionAutoencoder, x: Tensor, elements: Tensor) -> Tensor:
    """(N, F) features: E(T_h x) averaged over h in a finite subgroup H, flattened.

    Image-space orbit pooling, the classic way to make any encoder invariant (to H exactly): it
    costs |H| encoder passes per image, where the latent read-out costs one.
    """
    group, k = model.group, elements.shape[0]
    out = []
    for i in range(0, len(x), max(1, EVAL_BATCH // k)):
        xb = x[i:i + max(1, EVAL_BATCH // k)]
        rep = xb.repeat_interleave(k, 0)
        turned = group.act_image(rep, elements.repeat(xb.shape[0], *([1] * (elements.dim() - 1))))
        z = model.encode(turned)
        out.append(z.view(xb.shape[0], k, *z.shape[1:]).mean(1).flatten(1))
    return torch.cat(out)


def untrained_copy(model: GroupActionAutoencoder, cfg, input_shape, seed: int
                   ) -> GroupActionAutoencoder:
    """The same architecture at a fresh random start (the random-encoder baseline); the global
    RNG is left as it was."""
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))
    with torch.random.fork_rng(devices=[]):
        fresh = model_from_config(cfg, tuple(input_shape))
    return fresh.to(next(model.parameters()).device).eval()


@torch.no_grad()
def probes(model: GroupActionAutoencoder, source, splits, seed: int, steps: int,
           l2: float, random_model: GroupActionAutoencoder | None = None,
           max_items: int | None = None, orbit: bool = True) -> dict[str, float | None]:
    """Linear probes on z_i / z_v / z / the invariant read-out, and the orbit-pooling baselines
    (this encoder and ``random_model``'s, pooled over the group's finite subgroup in image
    space; ``orbit=False`` leaves them out); two protocols (see docs/PROTOCOL.md)."""
    if splits.train.labels is None or splits.test.labels is None:
        return {}
    mask = model.mask.hard()
    tr_idx, te_idx = torch.arange(len(splits.train)), torch.arange(len(splits.test))
    if max_items is not None:   # a seeded subset bounds the probes' memory on large latents
        pick = torch.Generator().manual_seed(seed + 5)
        if len(tr_idx) > max_items:
            tr_idx = torch.randperm(len(tr_idx), generator=pick)[:max_items].sort().values
        if len(te_idx) > max_items:
            te_idx = torch.randperm(len(te_idx), generator=pick)[:max_items].sort().values
    dev = splits.train.images.device
    turned_train = source.views(splits.train, tr_idx.to(dev), torch.Generator().manual_seed(seed),
                                device=dev)
    upright_train = source.views(splits.train, tr_idx.to(dev), None, device=dev)
    turned_test = source.views(splits.test, te_idx.to(dev),
                               torch.Generator().manual_seed(seed + 1), device=dev)
    pool_over = None
    if orbit and isinstance(source, TransformPairs):  # rendered data has no T_h of one image
        try:
            pool_over = model.group.averaging_elements(dev)
        except GroupactError:
            pool_over = None
    feats = []
    for views in (turned_train, upright_train, turned_test):
        z = encode_all(model, views)
        f = split_features(z, mask)
        f["zinv"] = torch.cat([model.invariant_features(z[i:i + EVAL_BATCH])
                               for i in range(0, len(z), EVAL_BATCH)])
        if pool_over is not None:
            f["orbit"] = orbit_pooled(model, views, pool_over)
            if random_model is not None:
                f["orbit_random"] = orbit_pooled(random_model, views, pool_over)
        feats.append(f)
    f_tt, f_ut, f_te = feats
    y_tr, y_te = splits.train.labels[tr_idx.to(dev)], splits.test.labels[te_idx.to(dev)]
    # parts that are the same features (z_v = z when every channel is variant, z_i = z and the
    # read-out = z_i when none is) share one probe: the probes are most of the evaluation's time
    variant = int(mask.sum())
    same_as = {"zv": "z"} if variant == mask.numel() else {}
    if variant == 0:
        same_as = {"zi": "z", "zinv": "z"}
    out: dict[str, float | None] = {}
    for part in ("z", "zi", "zv", "zinv", "orbit", "orbit_random"):
        if part not in f_tt:
            continue
        if part in same_as:
            out[f"probe_{part}"] = out[f"probe_{same_as[part]}"]
            out[f"probe_{part}_upright"] = out[f"probe_{same_as[part]}_upright"]
            continue
        out[f"probe_{part}"] = probe_accuracy(f_tt[part], y_tr, f_te[part], y_te, steps, l2)
        out[f"probe_{part}_upright"] = probe_accuracy(f_ut[part], y_tr, f_te[part], y_te, steps,
                                                      l2)
    if pool_over is not None:
        out["orbit_pool_passes"] = int(pool_over.shape[0])   # encoder passes per image
    out["probe_chance"] = float(torch.bincount(y_te.cpu()).max()) / len(y_te)
    return out
