"""Linear probes: how much class information each part of the latent (z_i, z_v, z) carries, and
the probe protocol of an evaluation (turned and upright training views, orbit-pooling baselines).

The probe is scikit-learn's LogisticRegression (multinomial, lbfgs) on standardised features,
fitted to convergence for each C of a grid and kept at the C with the best validation accuracy:
what readers of a probe column expect. :func:`fit_linear_probe` (a fixed number of torch L-BFGS
steps at one L2 weight) is groupact 0.3's probe, kept as ``eval.probe=lbfgs`` so older tables
can be compared like for like.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import torch
from torch import Tensor

from groupact.build import model_from_config
from groupact.data import TransformPairs
from groupact.errors import DataError, GroupactError
from groupact.evaluate.metrics import EVAL_BATCH, encode_all
from groupact.model import GroupActionAutoencoder
from groupact.strict import shown


@dataclasses.dataclass
class ProbeFit:
    """A probe's test accuracy, the C it was kept at and whether every fit converged."""
    accuracy: float
    c: float | None
    converged: bool


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Standardise every array by the training features' mean and std (float64)."""
    mean, std = train.mean(0), train.std(0)
    std[std < 1e-6] = 1.0
    return [(a - mean) / std for a in (train, *others)]


def row_space(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Coordinates in the span of the training rows, when there are fewer rows than features.

    Exact for an L2-regularised linear model: at its optimum the weights lie in that span (the
    loss's gradient is a sum of the training rows, the penalty's is the weights themselves), so
    w·x = (Qᵀw)·(Qᵀx) for every x. It makes a 3,136-feature probe on 1,000 items a 1,000-feature
    one with the same predictions.
    """
    n, d = train.shape
    if n >= d:
        return [train, *others]
    q, _ = np.linalg.qr(train.T)           # (d, n), orthonormal columns spanning the rows
    return [a @ q for a in (train, *others)]


def fit_sklearn_probe(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray,
                      val_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                      c_grid: list[float], max_iter: int = 2000) -> ProbeFit:
    """LogisticRegression on standardised features for each C (ascending, each fit warm-started
    from the last), kept at the best validation accuracy (the smaller C on a tie)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    # standardised in float64, fitted in float32 (1.5x faster, the same fits to the tolerance)
    tr, va, te = (a.astype(np.float32) for a in row_space(*_standardise(
        train_x.astype(np.float64), val_x.astype(np.float64), test_x.astype(np.float64))))
    clf = LogisticRegression(max_iter=max_iter, warm_start=True)
    best: tuple[float, float, float] | None = None     # (val accuracy, C, test accuracy)
    converged = True
    for c in sorted(c_grid):
        clf.C = c
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(tr, train_y)
        converged &= bool(np.all(clf.n_iter_ < max_iter))
        val_acc = float(np.mean(clf.predict(va) == val_y))
        if best is None or val_acc > best[0]:
            best = (val_acc, c, float(np.mean(clf.predict(te) == test_y)))
    assert best is not None
    return ProbeFit(best[2], best[1], converged)


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


@dataclasses.dataclass(frozen=True)
class ProbeSettings:
    """How the probes are fitted (``eval.probe*``, docs/PROTOCOL.md)."""
    solver: str = "sklearn"                 # "sklearn" | "lbfgs" (groupact 0.3)
    c_grid: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    max_iter: int = 2000
    steps: int = 100                        # lbfgs only
    l2: float = 1e-3                        # lbfgs only

    @classmethod
    def from_eval(cls, e) -> "ProbeSettings":
        return cls(e.probe, tuple(e.probe_c), e.probe_max_iter, e.probe_steps, e.probe_l2)


def check_probe_labels(splits) -> None:
    """Refuse labels that leave the probes nothing to tell apart: with one class in the training
    split every probe predicts it and scores its share of the test split (1.0 when the test
    split holds the same class), whatever the representation. Data without labels has no probes
    and passes."""
    if splits.train.labels is None or splits.test.labels is None:
        return
    classes = torch.unique(splits.train.labels).tolist()
    if len(classes) < 2:
        where = splits.info.get("source") or splits.info.get("name") or "the data"
        raise DataError(f"{where}: the training split's labels hold one class "
                        f"({shown(classes)}), so every linear probe would score its share of the "
                        "test split, whatever the model; give labels of two or more classes, or "
                        "set eval.probes=false (evaluate: --no-probes)")


def probe_accuracy(train_x: Tensor, train_y: Tensor, val_x: Tensor, val_y: Tensor,
                   test_x: Tensor, test_y: Tensor,
                   settings: ProbeSettings = ProbeSettings()) -> ProbeFit | None:
    """Test accuracy of a linear probe trained on (train_x, train_y), its C chosen on
    (val_x, val_y) (the lbfgs probe ignores them); None for empty features, and for training
    labels of one class (nothing to tell apart: the "probe" would be a constant, its accuracy
    the class's share of the test labels, not a property of the features)."""
    if train_x.shape[1] == 0 or torch.unique(train_y).numel() < 2:
        return None
    if settings.solver == "lbfgs":
        n_classes = int(max(train_y.max(), test_y.max())) + 1
        w, b, mean, std = fit_linear_probe(train_x.cpu(), train_y.cpu(), n_classes,
                                           settings.steps, settings.l2)
        logits = ((test_x.cpu().float() - mean) / std) @ w + b
        return ProbeFit(float((logits.argmax(1) == test_y.cpu()).double().mean()), None, True)
    ytr = train_y.cpu().numpy()
    # fit_sklearn_probe standardises in float64 itself: no float64 copy here as well
    return fit_sklearn_probe(train_x.cpu().numpy(), ytr, val_x.cpu().numpy(), val_y.cpu().numpy(),
                             test_x.cpu().numpy(), test_y.cpu().numpy(), list(settings.c_grid),
                             settings.max_iter)


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


def _subset(n: int, max_items: int | None, pick: torch.Generator) -> Tensor:
    """Indices of a seeded subset of at most ``max_items`` of ``n`` items (all when None)."""
    if max_items is None or n <= max_items:
        return torch.arange(n)
    return torch.randperm(n, generator=pick)[:max_items].sort().values


def validation_part(splits, seed: int) -> tuple[object, Tensor, Tensor]:
    """Where the probes choose C: ``(part, train items, val items)``. The validation split when it
    has labels (part = splits.val, train items = all of splits.train), else a seeded fifth of the
    training split held out (part = splits.train, the two index sets disjoint)."""
    val = splits.val
    if val is not None and val.labels is not None and len(val) > 0:
        return val, torch.arange(len(splits.train)), torch.arange(len(val))
    n = len(splits.train)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = max(1, n // 5)
    return splits.train, order[k:].sort().values, order[:k].sort().values


@torch.no_grad()
def probes(model: GroupActionAutoencoder, source, splits, seed: int,
           settings: ProbeSettings = ProbeSettings(),
           random_model: GroupActionAutoencoder | None = None,
           max_items: int | None = None, orbit: bool = True) -> dict[str, object]:
    """Linear probes on z_i / z_v / z / the invariant read-out, and the orbit-pooling baselines
    (this encoder and ``random_model``'s, pooled over the group's finite subgroup in image
    space; ``orbit=False`` leaves them out); two protocols (see docs/PROTOCOL.md). C is chosen
    on validation views drawn the way the protocol's training views are (turned for T→T,
    upright for U→T), so the upright protocol sees no turned image before the test."""
    if splits.train.labels is None or splits.test.labels is None:
        return {}
    mask = model.mask.hard()
    train = splits.train
    val, tr_pool, va_pool = validation_part(splits, seed + 7)
    pick = torch.Generator().manual_seed(seed + 5)  # a seeded subset bounds time and memory
    tr_idx = tr_pool[_subset(len(tr_pool), max_items, pick)]
    te_idx = _subset(len(splits.test), max_items, pick)
    va_idx = va_pool[_subset(len(va_pool), max_items, pick)]
    dev = splits.train.images.device
    tr_idx, va_idx, te_idx = tr_idx.to(dev), va_idx.to(dev), te_idx.to(dev)

    def turned(part, idx: Tensor, s: int) -> Tensor:
        return source.views(part, idx, torch.Generator().manual_seed(s), device=dev)

    def upright(part, idx: Tensor) -> Tensor:
        return source.views(part, idx, None, device=dev)

    view_sets = {"turned_train": turned(train, tr_idx, seed),
                 "upright_train": upright(train, tr_idx),
                 "turned_test": turned(splits.test, te_idx, seed + 1)}
    if settings.solver == "sklearn":
        view_sets["turned_val"] = turned(val, va_idx, seed + 2)
        view_sets["upright_val"] = upright(val, va_idx)
    pool_over = None
    if orbit and isinstance(source, TransformPairs):  # rendered data has no T_h of one image
        try:
            pool_over = model.group.averaging_elements(dev)
        except GroupactError:
            pool_over = None
    feats = {}
    for name, views in view_sets.items():
        z = encode_all(model, views)
        f = split_features(z, mask)
        f["zinv"] = torch.cat([model.invariant_features(z[i:i + EVAL_BATCH])
                               for i in range(0, len(z), EVAL_BATCH)])
        if pool_over is not None:
            f["orbit"] = orbit_pooled(model, views, pool_over)
            if random_model is not None:
                f["orbit_random"] = orbit_pooled(random_model, views, pool_over)
        feats[name] = f
    y_tr, y_te = train.labels[tr_idx], splits.test.labels[te_idx]
    y_va = val.labels[va_idx]
    protocols = {"": ("turned_train", "turned_val"), "_upright": ("upright_train", "upright_val")}
    # parts that are the same features (z_v = z when every channel is variant, z_i = z and the
    # read-out = z_i when none is) share one probe: the probes are most of the evaluation's time
    variant = int(mask.sum())
    same_as = {"zv": "z"} if variant == mask.numel() else {}
    if variant == 0:
        same_as = {"zi": "z", "zinv": "z"}
    out: dict[str, object] = {}
    chosen: dict[str, float] = {}
    converged = True
    for part in ("z", "zi", "zv", "zinv", "orbit", "orbit_random"):
        if part not in feats["turned_train"]:
            continue
        for suffix, (tr_name, va_name) in protocols.items():
            key = f"probe_{part}{suffix}"
            if part in same_as:
                out[key] = out[f"probe_{same_as[part]}{suffix}"]
                continue
            val_f = feats.get(va_name, feats[tr_name])[part]
            fit = probe_accuracy(feats[tr_name][part], y_tr, val_f, y_va,
                                 feats["turned_test"][part], y_te, settings)
            out[key] = None if fit is None else fit.accuracy
            if fit is not None:
                converged &= fit.converged
                if fit.c is not None:
                    chosen[key.removeprefix("probe_")] = fit.c
    if pool_over is not None:
        out["orbit_pool_passes"] = int(pool_over.shape[0])   # encoder passes per image
    out["probe_chance"] = float(torch.bincount(y_te.cpu()).max()) / len(y_te)
    # not "probe_…": the tables make a column of every numeric probe_ key
    out["probes_solver"] = settings.solver
    out["probes_items"] = {"train": len(tr_idx), "val": len(va_idx), "test": len(te_idx)}
    if settings.solver == "sklearn":
        out["probes_c"] = chosen
        out["probes_converged"] = converged
    return out
