"""Linear probes: how much class information each part of the latent (z_i, z_v, z) carries, and
the probe protocol of an evaluation (turned and upright training views, orbit-pooling baselines).

The probe is scikit-learn's LogisticRegression (multinomial, lbfgs) on standardised features,
fitted to convergence for each C of a grid and kept at the C with the best validation accuracy:
what readers of a probe column expect.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from groupact.build import model_from_config
from groupact.data import TransformPairs
from groupact.errors import DataError, GroupactError
from groupact.evaluate.metrics import EVAL_BATCH, encode_all
from groupact.extras import need
from groupact.model import GroupActionAutoencoder
from groupact.strict import shown
from groupact.threads import pool_limits

#: what needs scikit-learn (the 'eval' extra) and how to do without, for the one-line error
PROBES_NEED = ("evaluating with linear probes",
               "without them: eval.probes=false, or evaluate --no-probes")


@dataclasses.dataclass
class ProbeFit:
    """A probe's test accuracy, the C it was kept at and whether every fit converged."""
    accuracy: float
    c: float | None
    converged: bool


#: columns of the feature matrix handled at a time when reducing it (bounds the float64 copies)
COLUMN_CHUNK = 4096


def _mean_std(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The training features' mean and std in float64, a chunk of columns at a time (no whole
    float64 copy of a wide feature matrix); a std under 1e-6 counts as 1 (a constant column)."""
    d = train.shape[1]
    mean, std = np.empty(d), np.empty(d)
    for j in range(0, d, COLUMN_CHUNK):
        block = train[:, j:j + COLUMN_CHUNK].astype(np.float64)
        mean[j:j + COLUMN_CHUNK], std[j:j + COLUMN_CHUNK] = block.mean(0), block.std(0)
    std[std < 1e-6] = 1.0
    return mean, std


def row_space(train: np.ndarray, *others: np.ndarray, mean: np.ndarray | None = None,
              std: np.ndarray | None = None) -> list[np.ndarray]:
    """Coordinates in the span of the training rows, when there are fewer rows than features
    (each array standardised by ``mean``/``std`` first when given).

    Exact for an L2-regularised linear model: at its optimum the weights lie in that span (the
    loss's gradient is a sum of the training rows, the penalty's is the weights themselves), so
    w·x = (Qᵀw)·(Qᵀx) for every x. It makes a 3,136-feature probe on 1,000 items a 1,000-feature
    one with the same predictions. Computed from the Gram matrix of the rows (float64, a chunk of
    columns at a time): Q = Xᵀ U Λ^-½ from its eigenvectors U, so the training rows are U Λ^½ and
    any other row y is (y Xᵀ) U Λ^-½; directions of the span below 1e-10 of the largest
    eigenvalue hold only rounding and are left out. Memory: n² plus one chunk, never a second
    n × d copy; about 4× faster than a QR of the n × d matrix with its Q formed.
    """
    n, d = train.shape
    if n >= d:
        return [train, *others]
    gram = np.zeros((n, n))
    cross = [np.zeros((len(a), n)) for a in others]
    for j in range(0, d, COLUMN_CHUNK):
        cols = slice(j, j + COLUMN_CHUNK)

        def block(a: np.ndarray) -> np.ndarray:
            b = a[:, cols].astype(np.float64)
            return b if mean is None else (b - mean[cols]) / std[cols]

        t = block(train)
        gram += t @ t.T                        # one syrk
        for c, a in zip(cross, others):
            c += block(a) @ t.T
    lam, u = np.linalg.eigh(gram)
    keep = lam > max(lam[-1], 0.0) * 1e-10
    u, root = u[:, keep], np.sqrt(lam[keep])
    return [u * root, *(c @ u / root for c in cross)]


def equal_columns(train: np.ndarray, mean: np.ndarray, std: np.ndarray, tol: float = 1e-4
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Columns to keep, one of each set that is equal once standardised (within ``tol``), and
    √(copies) for each: a scale that leaves the probe exactly as it was.

    Exact for an L2-regularised linear model: m equal columns get equal weights s/m at the
    optimum, whose penalty m·(s/m)² = s²/m is that of one column √m·x with weight s/√m, and the
    predictions are the same. Latents repeat values (an orbit average of a turned map holds each
    value once per turn; voxels outside a ball mask are 0 in every item): on rotated MNIST the
    invariant read-out's 5,635 features are 1,963. Candidates are found by sorting the columns
    by two random projections, then checked entry by entry.
    """
    n, d = train.shape
    r = np.random.default_rng(0).standard_normal((n, 2)) / np.sqrt(n)
    keys = (train.T.astype(np.float64) @ r - mean[:, None] * r.sum(0)) / std[:, None]
    order = np.argsort(keys[:, 0], kind="stable")
    near = tol * np.sqrt(n)                     # equal columns have keys at least this close
    heads: list[int] = []
    copies: list[int] = []
    for j in order:
        if heads:
            h = heads[-1]
            if abs(keys[j, 0] - keys[h, 0]) <= near and abs(keys[j, 1] - keys[h, 1]) <= near \
                    and np.max(np.abs((train[:, j] - mean[j]) / std[j]
                                      - (train[:, h] - mean[h]) / std[h])) <= tol:
                copies[-1] += 1
                continue
        heads.append(int(j))
        copies.append(1)
    pick = np.argsort(heads)                    # the kept columns in their first order
    return np.asarray(heads)[pick], np.sqrt(np.asarray(copies, dtype=np.float64))[pick]


def probe_features(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """The probe's float32 inputs: standardised by the training rows and reduced exactly, once
    for every C: equal columns kept once (:func:`equal_columns`), then the span of the training
    rows when they are still fewer than the features (:func:`row_space`)."""
    mean, std = _mean_std(train)
    cols, scale = equal_columns(train, mean, std)
    if len(cols) < train.shape[1]:
        train, others = train[:, cols], tuple(a[:, cols] for a in others)
        mean, std = mean[cols], std[cols] / scale
    if train.shape[0] < train.shape[1]:
        reduced = row_space(train, *others, mean=mean, std=std)
    else:
        reduced = [(a.astype(np.float64) - mean) / std for a in (train, *others)]
    return [a.astype(np.float32) for a in reduced]


def fit_sklearn_probe(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray,
                      val_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                      c_grid: list[float], max_iter: int = 2000) -> ProbeFit:
    """LogisticRegression on standardised features for each C (ascending, each fit warm-started
    from the last), kept at the best validation accuracy (the smaller C on a tie).

    The features are reduced once for all C (:func:`probe_features`); the fits run on torch's
    thread count (:func:`groupact.threads.pool_limits`), never a pool of their own."""
    ConvergenceWarning = need("sklearn.exceptions", "eval", *PROBES_NEED).ConvergenceWarning
    LogisticRegression = need("sklearn.linear_model", "eval", *PROBES_NEED).LogisticRegression

    # standardised in float64, fitted in float32 (1.5x faster, the same fits to the tolerance)
    tr, va, te = probe_features(train_x, val_x, test_x)
    clf = LogisticRegression(max_iter=max_iter, warm_start=True)
    best: tuple[float, float, float] | None = None     # (val accuracy, C, test accuracy)
    converged = True
    with pool_limits():
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


@dataclasses.dataclass(frozen=True)
class ProbeSettings:
    """How the probes are fitted (``eval.probe_c``, ``eval.probe_max_iter``, docs/PROTOCOL.md)."""
    c_grid: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    max_iter: int = 2000

    @classmethod
    def from_eval(cls, e) -> "ProbeSettings":
        return cls(tuple(e.probe_c), e.probe_max_iter)


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
    (val_x, val_y); None for empty features, and for training
    labels of one class (nothing to tell apart: the "probe" would be a constant, its accuracy
    the class's share of the test labels, not a property of the features)."""
    if train_x.shape[1] == 0 or torch.unique(train_y).numel() < 2:
        return None
    ytr = train_y.cpu().numpy()
    # fit_sklearn_probe standardises in float64 itself: no float64 copy here as well
    return fit_sklearn_probe(train_x.cpu().numpy(), ytr, val_x.cpu().numpy(), val_y.cpu().numpy(),
                             test_x.cpu().numpy(), test_y.cpu().numpy(), list(settings.c_grid),
                             settings.max_iter)


def split_features(z: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """Flattened features of the invariant channels, the variant channels and the whole latent."""
    keep = mask.bool().cpu()
    return {"zi": z[:, ~keep].flatten(1), "zv": z[:, keep].flatten(1), "z": z.flatten(1)}


#: input values per encoder pass of orbit pooling: small batches keep a 3D encoder's activations
#: in cache (a 28³ volume encodes 1.9× faster 8 at a time than 96 at a time) and memory bounded
ORBIT_PASS_VALUES = 1 << 19


@torch.no_grad()
def orbit_pooled(model: GroupActionAutoencoder, x: Tensor, elements: Tensor,
                 desc: str | None = None) -> Tensor:
    """(N, F) features: E(T_h x) averaged over h in a finite subgroup H, flattened.

    Image-space orbit pooling, the classic way to make any encoder invariant (to H exactly): it
    costs |H| encoder passes per image, where the latent read-out costs one. Items go through
    the encoder a few at a time (at least one orbit, at most EVAL_BATCH inputs and about
    ORBIT_PASS_VALUES input values per pass); ``desc`` shows a progress bar on a terminal.
    """
    from tqdm.auto import tqdm

    group, k = model.group, elements.shape[0]
    per_pass = max(k, min(EVAL_BATCH, ORBIT_PASS_VALUES // max(1, x[0].numel())))
    step = max(1, per_pass // k)
    out = []
    for i in tqdm(range(0, len(x), step), desc=desc, disable=None if desc else True,
                  leave=False, unit="pass", dynamic_ncols=True):
        xb = x[i:i + step]
        rep = xb.repeat_interleave(k, 0)
        turned = group.act_image(rep, elements.repeat(xb.shape[0], *([1] * (elements.dim() - 1))))
        z = model.encode(turned)
        out.append(z.view(xb.shape[0], k, *z.shape[1:]).mean(1).flatten(1))
    return torch.cat(out)


def _part_features(model: GroupActionAutoencoder, part: str, z: Tensor, views: Tensor,
                   mask: Tensor, pool_over: Tensor | None,
                   random_model: GroupActionAutoencoder | None, desc: str) -> Tensor:
    """One part's (N, F) probe features of a view set, from its latents ``z`` (the orbit parts
    encode ``views`` again, |H| times)."""
    if part in ("z", "zi", "zv"):
        return split_features(z, mask)[part]
    if part == "zinv":
        return torch.cat([model.invariant_features(z[i:i + EVAL_BATCH])
                          for i in range(0, len(z), EVAL_BATCH)])
    encoder = model if part == "orbit" else random_model
    return orbit_pooled(encoder, views, pool_over, desc=f"orbit-pooling ({desc})")


def _same(a: Tensor | None, b: Tensor | None) -> bool:
    """Whether two feature sets are the same up to rounding (summation order)."""
    if a is None or b is None:
        return a is b
    if a.shape != b.shape:
        return False
    scale = float(a.abs().max()) if a.numel() else 0.0
    return bool(torch.allclose(a, b, rtol=1e-5, atol=1e-6 * scale))


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
           max_items: int | None = None, orbit: bool = True,
           log: Callable[[str], None] | None = None) -> dict[str, object]:
    """Linear probes on z_i / z_v / z / the invariant read-out, and the orbit-pooling baselines
    (this encoder and ``random_model``'s, pooled over the group's finite subgroup in image
    space; ``orbit=False`` leaves them out); two protocols (see docs/PROTOCOL.md). C is chosen
    on validation views drawn the way the protocol's training views are (turned for T→T,
    upright for U→T), so the upright protocol sees no turned image before the test.

    Each view set is encoded once; a protocol whose features equal another's (orbit pooling of
    views turned within the pooled subgroup) reuses its probe. ``log`` hears a line per step."""
    say = log or (lambda _line: None)
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
    view_sets["turned_val"] = turned(val, va_idx, seed + 2)
    view_sets["upright_val"] = upright(val, va_idx)
    pool_over = None
    if orbit and isinstance(source, TransformPairs):  # rendered data has no T_h of one image
        try:
            pool_over = model.group.averaging_elements(dev)
        except GroupactError:
            pool_over = None
    say(f"probes: encoding {sum(len(v) for v in view_sets.values())} views "
        f"({', '.join(view_sets)}) ...")
    latents = {name: encode_all(model, views) for name, views in view_sets.items()}
    parts = ["z", "zi", "zv", "zinv"]
    if pool_over is not None:
        parts += ["orbit"] + (["orbit_random"] if random_model is not None else [])
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
    fits = sum(len(protocols) for p in parts if p not in same_as)
    done = 0
    for part in parts:
        if part in same_as:
            for suffix in protocols:
                out[f"probe_{part}{suffix}"] = out[f"probe_{same_as[part]}{suffix}"]
            continue
        # one part's features at a time, for every view set: memory holds the latents and one
        # part (a 3D latent's parts are each ~1 GB over an evaluation's views)
        feats = {}
        for name, views in view_sets.items():
            if part in ("orbit", "orbit_random"):      # |H| encoder passes per view: minutes
                say(f"probes: orbit-pooling {name} for {part} ({len(views)} views × "
                    f"{pool_over.shape[0]} turns) ...")
            feats[name] = _part_features(model, part, latents[name], views, mask, pool_over,
                                         random_model, f"{part}, {name}")
        fitted: list[tuple[str, str, str]] = []          # (suffix, train, val) of fits made
        for suffix, (tr_name, va_name) in protocols.items():
            key = f"probe_{part}{suffix}"
            done += 1
            twin = next((s for s, t, v in fitted if _same(feats[t], feats[tr_name])
                         and _same(feats.get(v), feats.get(va_name))), None)
            if twin is not None:   # the same problem (orbit features of views turned within H)
                say(f"probes: {part}{suffix or ' (turned)'} [{done}/{fits}]: the same "
                    f"features as {part}{twin or ' (turned)'}, its probe reused")
                out[key] = out[f"probe_{part}{twin}"]
                if f"{part}{twin}" in chosen:
                    chosen[f"{part}{suffix}"] = chosen[f"{part}{twin}"]
                continue
            say(f"probes: {part}{suffix or ' (turned)'} [{done}/{fits}] on "
                f"{feats[tr_name].shape[1]} features ...")
            val_f = feats.get(va_name, feats[tr_name])
            fit = probe_accuracy(feats[tr_name], y_tr, val_f, y_va, feats["turned_test"], y_te,
                                 settings)
            fitted.append((suffix, tr_name, va_name))
            out[key] = None if fit is None else fit.accuracy
            if fit is not None:
                converged &= fit.converged
                if fit.c is not None:
                    chosen[key.removeprefix("probe_")] = fit.c
        del feats
    if pool_over is not None:
        out["orbit_pool_passes"] = int(pool_over.shape[0])   # encoder passes per image
    out["probe_chance"] = float(torch.bincount(y_te.cpu()).max()) / len(y_te)
    # not "probe_…": the tables make a column of every numeric probe_ key
    out["probes_solver"] = "sklearn"
    out["probes_items"] = {"train": len(tr_idx), "val": len(va_idx), "test": len(te_idx)}
    out["probes_c"] = chosen
    out["probes_converged"] = converged
    return out
