"""The linear probe: scikit-learn's LogisticRegression, C chosen on validation data, the exact
row-space reduction, and the protocol's validation split."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from groupact.data.base import Splits, TensorSet
from groupact.evaluate import probe as probe_module
from groupact.evaluate.probe import (ProbeSettings, equal_columns, fit_sklearn_probe,
                                     probe_accuracy, probe_features, row_space, validation_part)


def blobs(n: int, d: int, seed: int, noise: float = 1.0, classes: int = 3):
    """Gaussian classes whose means differ in the first 5 of d features."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    means = np.zeros((classes, d))
    means[:, :5] = np.random.default_rng(99).normal(size=(classes, 5)) * 2
    return means[y] + noise * rng.normal(size=(n, d)), y


def test_the_row_space_reduction_gives_the_same_probe_as_the_full_features():
    # fewer items than features: the L2 optimum lies in the span of the training rows, so the
    # reduced problem predicts exactly what the full one does
    x, y = blobs(60, 200, 0)
    xt, _ = blobs(40, 200, 1)
    full = LogisticRegression(C=0.1, tol=1e-10, max_iter=20000).fit(x, y)
    r_train, r_test = row_space(x, xt)
    assert r_train.shape == (60, 60) and r_test.shape == (40, 60)
    reduced = LogisticRegression(C=0.1, tol=1e-10, max_iter=20000).fit(r_train, y)
    np.testing.assert_allclose(reduced.decision_function(r_test), full.decision_function(xt),
                               atol=1e-5)
    # more items than features: nothing to reduce
    big, _ = blobs(300, 20, 2)
    assert row_space(big)[0] is big


def _full_probe(x, y, xt, c):
    """The reference: LogisticRegression on the whole standardised features, tightly converged."""
    mean, std = x.mean(0), x.std(0)
    std[std < 1e-6] = 1.0
    clf = LogisticRegression(C=c, tol=1e-10, max_iter=20000).fit((x - mean) / std, y)
    return clf.decision_function((xt - mean) / std)


@pytest.mark.parametrize("n", [300, 40])       # more items than features, and fewer
def test_the_probe_features_predict_what_the_whole_standardised_features_do(n, monkeypatch):
    # repeated columns (as an orbit-averaged map repeats its values) and constant ones (a ball
    # mask's zeros) are kept once; with fewer items the span of the rows is taken a few
    # columns at a time (a small chunk, so the chunked Gram matrix is exercised)
    monkeypatch.setattr(probe_module, "COLUMN_CHUNK", 7)
    x, y = blobs(n, 30, 10)
    xt, _ = blobs(50, 30, 11)
    rep = [0, 0, 0, 1, 2, 2, *range(3, 30)]
    x, xt = np.c_[x[:, rep], np.zeros((n, 4))], np.c_[xt[:, rep], np.zeros((50, 4))]
    mean, std = x.mean(0), x.std(0)
    std[std < 1e-6] = 1.0
    cols, scale = equal_columns(x, mean, std)
    assert len(cols) == 31 and sorted(scale.tolist()).count(np.sqrt(3)) == 1
    tr, te = probe_features(x.astype(np.float32), xt.astype(np.float32))
    assert tr.dtype == np.float32 and tr.shape[1] == min(31, n)
    # fitted in float64 here: the reduction is under test, not float32's tolerance
    reduced = LogisticRegression(C=0.1, tol=1e-10, max_iter=20000).fit(tr.astype(float), y)
    np.testing.assert_allclose(reduced.decision_function(te.astype(float)),
                               _full_probe(x, y, xt, 0.1), atol=1e-4)


def test_near_equal_columns_beyond_the_tolerance_are_kept_apart():
    x, _ = blobs(100, 6, 12)
    x = np.c_[x, x[:, 0] + 1e-2 * np.random.default_rng(0).normal(size=100)]
    mean, std = x.mean(0), x.std(0)
    assert len(equal_columns(x, mean, std)[0]) == 7


def test_the_probe_is_scikit_learns_fit_at_the_chosen_c():
    # the whole protocol against a plain reference: the same validation choice and test accuracy
    x, y = blobs(150, 40, 13, noise=1.5)
    x = np.c_[x, x[:, :10]]                        # some features twice
    xv, yv = blobs(100, 40, 14, noise=1.5)
    xt, yt = blobs(200, 40, 15, noise=1.5)
    xv, xt = np.c_[xv, xv[:, :10]], np.c_[xt, xt[:, :10]]
    grid = [1e-3, 1e-2, 1e-1]
    fit = fit_sklearn_probe(x, y, xv, yv, xt, yt, grid)
    val = {c: np.mean(_full_probe(x, y, xv, c).argmax(1) == yv) for c in grid}
    assert val[fit.c] == pytest.approx(max(val.values()), abs=0.011)
    ref = np.mean(_full_probe(x, y, xt, fit.c).argmax(1) == yt)
    assert fit.accuracy == pytest.approx(ref, abs=0.011)


def test_c_is_chosen_by_validation_accuracy_not_by_test_accuracy():
    x, y = blobs(200, 50, 3, noise=2.0)
    xv, yv = blobs(200, 50, 4, noise=2.0)
    xt, yt = blobs(200, 50, 5, noise=2.0)
    fit = fit_sklearn_probe(x, y, xv, yv, xt, yt, [1e-4, 1e-2, 1.0])
    assert fit.converged
    val_acc = {c: LogisticRegression(C=c, max_iter=5000).fit(x, y).score(xv, yv)
               for c in (1e-4, 1e-2, 1.0)}
    assert val_acc[fit.c] == pytest.approx(max(val_acc.values()), abs=0.011)
    # the reported accuracy is the test accuracy at that C
    ref = LogisticRegression(C=fit.c, max_iter=5000).fit((x - x.mean(0)) / x.std(0), y)
    assert fit.accuracy == pytest.approx(ref.score((xt - x.mean(0)) / x.std(0), yt), abs=0.011)
    assert fit.accuracy > 0.8     # the classes are separable: a working probe finds them


def test_a_probe_on_labels_it_cannot_see_scores_chance():
    x, _ = blobs(300, 30, 6)
    rng = np.random.default_rng(7)
    y, yv, yt = (rng.integers(0, 4, 300) for _ in range(3))
    fit = fit_sklearn_probe(x, y, x, yv, x, yt, [1e-3, 1e-1])
    assert fit.accuracy < 0.4


def test_probe_accuracy_fits_and_handles_empty_and_one_class_features():
    x, y = (torch.from_numpy(a) for a in blobs(120, 10, 8))
    sk = probe_accuracy(x, y, x, y, x, y, ProbeSettings(c_grid=(0.01, 1.0)))
    assert sk.c in (0.01, 1.0) and sk.accuracy > 0.8
    assert probe_accuracy(x[:, :0], y, x[:, :0], y, x[:, :0], y) is None
    ones = torch.ones_like(y)   # one class: no probe (not a constant's trivial 1.0)
    assert probe_accuracy(x, ones, x, ones, x, ones) is None
    assert probe_accuracy(x, ones, x, y, x, y) is None


def _splits(val_labels: bool) -> Splits:
    part = lambda n, s: TensorSet(torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(s)),
                                  torch.arange(n) % 3)
    val = part(10, 2)
    if not val_labels:
        val = TensorSet(val.images, None)
    return Splits(part(50, 1), val, part(20, 3))


def test_validation_is_the_val_split_or_a_held_out_fifth_of_train():
    part, tr, va = validation_part(_splits(True), seed=0)
    assert part is not None and len(va) == 10 and len(tr) == 50
    splits = _splits(False)
    part, tr, va = validation_part(splits, seed=0)
    assert part is splits.train and len(va) == 10 and len(tr) == 40
    assert not set(tr.tolist()) & set(va.tolist())          # disjoint: no item probes itself
    assert validation_part(splits, seed=0)[2].tolist() == va.tolist()   # seeded
