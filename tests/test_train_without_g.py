"""Training without g (``pairs.g_known=false``): the step never reads the pair's g, the
reconstruction search picks the right element of an exact toy, a short training on tiny data
beats doing nothing and reports its estimate of g, and bad settings are one-line errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from groupact.cli import main
from groupact.config import load_config
from groupact.data.pairs import PairBatch
from groupact.errors import ConfigError
from groupact.evaluate.evaluate import evaluate_run
from groupact.evaluate.g_estimate import g_estimate_metrics
from groupact.groups import build_group
from groupact.latent import SpatialAction
from groupact.latent.masks import AllVariantMask
from groupact.model import GroupActionAutoencoder
from groupact.train import train_run
from groupact.train.trainer import Trainer
from groupact.train.unknown_g import PairElements, best_by_reconstruction

TINY = ["data.n_train=64", "data.n_val=16", "data.n_test=32", "train.progress=false",
        "train.batch_size=16", "eval.probe_c=[0.01]", "pairs.g_known=false"]


class PairsWithoutG(PairBatch):
    """A pair batch that fails the test if anything reads its g."""

    def __getattribute__(self, name):
        if name == "g":
            raise AssertionError("the step read the pair's g")
        return super().__getattribute__(name)


def without_g(batch: PairBatch) -> PairsWithoutG:
    return PairsWithoutG(batch.x1, batch.x2, torch.full((batch.x1.shape[0],), float("nan")),
                         batch.labels, batch.alpha1, batch.alpha2)


@pytest.mark.parametrize("recipe, extra", [
    ("rotmnist-c4", []),
    ("rotmnist-so2", ["model.widths=[4,4]", "model.channels=4", "model.frequencies=2"]),
])
@pytest.mark.parametrize("warmup", [0, 5])
def test_the_step_never_reads_g(tmp_path, recipe, extra, warmup):
    cfg = load_config(recipe, TINY + extra + [f"pairs.g_warmup_steps={warmup}"])
    trainer = Trainer(cfg, tmp_path / "run", log=lambda *_: None)
    trainer._gen = torch.Generator().manual_seed(0)
    batch = trainer.source.pairs(trainer.splits.train, torch.arange(16), trainer._gen)
    stats = trainer.train_step(without_g(batch))
    assert torch.isfinite(torch.tensor(stats["loss"]))
    trainer.val = without_g(trainer.val)            # validation estimates g as well
    assert torch.isfinite(torch.tensor(trainer.validate()["val_psnr"]))


def exact_c4_model() -> GroupActionAutoencoder:
    """E = D = identity on 1×8×8 images, every channel variant, rot90 on the maps: Φ_g is T_g."""
    group = build_group("c4")
    return GroupActionAutoencoder(nn.Identity(), nn.Identity(), group, AllVariantMask(1),
                                  SpatialAction(group), latent_shape=(1, 8, 8))


def test_reconstruction_search_picks_the_element_of_an_exact_toy():
    model = exact_c4_model()
    x1 = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    g = torch.arange(32) % 4
    x2 = model.group.act_image(x1, g)
    assert torch.equal(best_by_reconstruction(model, x1, x2), g)
    filled = PairElements(known=False).fill(model, PairBatch(x1, x2, None), step=None)
    assert torch.equal(filled.g, g)
    warm = PairElements(known=False, warmup_steps=3).fill(model, PairBatch(x1, x2, None), 2)
    assert torch.equal(warm.x2, x1) and not bool(warm.g.any())     # autoencoding, g = identity


def test_the_estimate_is_measured_up_to_an_automorphism():
    """A model whose action turns the other way (270° where told 90°) estimates g exactly up to
    C4's k ↦ −k: the evaluation says so and relabels g through it."""
    model = exact_c4_model()
    x1 = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    g = torch.arange(16) % 4
    mirrored = PairBatch(x1, model.group.act_image(x1, (-g) % 4), g)
    found, phi = g_estimate_metrics(model, mirrored)
    assert found["g_automorphism"] == "inverse" and found["g_estimate_exact"] == 1.0
    assert torch.equal(phi(g), (-g) % 4)


def test_short_training_without_g_beats_doing_nothing(tmp_path):
    cfg = load_config("rotmnist-c4", TINY + ["data.n_train=256", "train.epochs=3",
                                             "train.lr=0.003", "pairs.g_warmup_steps=16"])
    train_run(cfg, tmp_path / "run", log=lambda *_: None)
    m = evaluate_run(tmp_path / "run", log=lambda *_: None, figures_on=False, probes_on=False)
    assert m["psnr"] > m["psnr_identity"] + 4.0, m
    assert m["g_automorphism"] in ("identity", "inverse")
    assert 0.0 <= m["g_estimate_exact"] <= 1.0
    summary = (tmp_path / "run" / "eval-quick" / "summary.md").read_text()
    assert "Trained without g" in summary


@pytest.mark.parametrize("settings, message", [
    (["pairs.g_known=false", "pairs.mode=both"], "pairs.g_known=false trains on (x, T_g x)"),
    (["pairs.g_warmup_steps=-1"], "pairs.g_warmup_steps must be 0 or more"),
    (["pairs.g_known=maybe"], "pairs.g_known"),
])
def test_bad_settings_are_one_line_errors(tmp_path, capsys, settings, message):
    args = ["train", "rotmnist-c4", "--run-dir", str(tmp_path / "r"), "--no-eval"]
    assert main(args + [a for s in settings for a in ("--set", s)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("groupact: error:") and "\n" not in err and message in err, err


def test_a_model_without_an_estimate_is_refused():
    from groupact.train.unknown_g import check_g_unknown

    model = exact_c4_model()
    model.group.elements = lambda device=None: None        # a continuous group with no grid
    model.group.tangent_dim = 0
    cfg = load_config("rotmnist-c4", ["pairs.g_known=false"])
    with pytest.raises(ConfigError, match="needs an estimate of g") as e:
        check_g_unknown(cfg, model)
    assert "\n" not in str(e.value)
    check_g_unknown(load_config("rotmnist-c4"), model)     # g known: nothing to estimate


@pytest.mark.parametrize("name, kw", [("c4", {}), ("cn", {"n": 5}), ("so2", {}), ("so3", {})])
def test_declared_automorphisms_keep_the_group_law(name, kw):
    """Each φ of ``Group.automorphisms`` is a homomorphism (φ(ab) = φ(a)φ(b)) and a bijection on a
    finite group, the identity first: what lets the evaluation relabel g through it."""
    group = build_group(name, **kw)
    gen = torch.Generator().manual_seed(3)
    a, b = group.sample(64, gen), group.sample(64, gen)
    found = group.automorphisms()
    assert next(iter(found)) == "identity"
    for phi in found.values():
        err = group.distance(phi(group.compose(a, b)), group.compose(phi(a), phi(b)))
        assert float(err.max()) < 1e-5
        elements = group.elements()
        if elements is not None:
            assert sorted(phi(elements).tolist()) == sorted(elements.tolist())
