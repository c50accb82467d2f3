"""The learned latent action ρ_θ(g) (model.action.kind=learned): shapes and gradients, the
homomorphism term (zero exactly for a representation), the fixed start reproducing the fixed
matrix action exactly, what SO(2)'s frequencies mean, the config's checks, and a short training on
C4 that drives the homomorphism error down and leaves a ρ_θ that passes the generic law helper.

Tolerances: a fixed start against the matrix action 1e-6 (float32 products; SO(3) through
matrix_to_axis_angle and matrix_exp); the homomorphism term of an exact representation 1e-10;
after the short C4 training the representation's laws (laws.check_action) within 0.05
relative — the term is a penalty, not a constraint, so it is small, never zero.
"""

import math

import pytest
import torch

from groupact import laws
from groupact.config import ActionConfig, load_config
from groupact.errors import ConfigError, GroupactError
from groupact.groups import build_group
from groupact.latent import LearnedAction, MatrixAction, build_action

FORMS = [("c4", 2), ("cube", 3), ("shift", 4), ("so2", 4), ("so3", 6), ("c4", 5)]


def learned(name: str, k: int, init: str = "random", orthogonal: bool = True) -> LearnedAction:
    action = build_action("learned", build_group(name),
                          ActionConfig(kind="learned", init=init, orthogonal=orthogonal))
    action.check_fibre((k,))
    return action


@pytest.mark.parametrize("name,k", FORMS)
def test_shapes_and_gradients(name, k):
    action = learned(name, k)
    g = action.group.sample(7, torch.Generator().manual_seed(0))
    z = torch.randn(7, 3, k)
    out = action(z, g)
    assert out.shape == z.shape and torch.isfinite(out).all()
    out.pow(2).sum().backward()
    grads = [p.grad for p in action.parameters()]
    assert grads and all(gr is not None for gr in grads)
    # an orthogonal ρ keeps every fibre's length and the Gram read-out
    assert torch.allclose(out.norm(dim=-1), z.norm(dim=-1), atol=1e-4)
    assert torch.allclose(action.invariants(out), action.invariants(z), atol=1e-3)


@pytest.mark.parametrize("name", ["c4", "cube", "shift", "so2", "so3"])
def test_a_fixed_start_is_the_fixed_matrix_action_exactly(name):
    group = build_group(name)
    k = group.matrix_dim
    action, fixed = learned(name, k, init="fixed"), MatrixAction(group)
    g = group.sample(64, torch.Generator().manual_seed(1))
    z = torch.randn(64, 5, k)
    assert torch.allclose(action(z, g), fixed(z, g), atol=1e-6)
    # with room for two copies: ρ ⊕ ρ (and a trivial block for an odd remainder)
    big = learned(name, 2 * k + 1, init="fixed")
    z2 = torch.randn(64, 5, 2 * k + 1)
    out = big(z2, g)
    assert torch.allclose(out[..., :k], fixed(z2[..., :k], g), atol=1e-6)
    assert torch.allclose(out[..., k:2 * k], fixed(z2[..., k:2 * k], g), atol=1e-6)
    assert torch.allclose(out[..., -1], z2[..., -1])


@pytest.mark.parametrize("name,k", FORMS)
def test_the_homomorphism_term_is_zero_for_a_representation_and_not_otherwise(name, k):
    gen = torch.Generator().manual_seed(2)
    group = build_group(name)
    a, b = group.sample(32, gen), group.sample(32, gen)
    exact = learned(name, k, init="fixed")
    assert float(exact.homomorphism_penalty(a, b).detach()) < 1e-10
    assert exact.report()["rep_homomorphism_error"] < 1e-5
    assert float(learned(name, k, init="random").homomorphism_penalty(a, b).detach()) > 1e-2


def test_so2_is_a_representation_of_the_circle_exactly_at_integer_frequencies():
    action = learned("so2", 4, init="fixed")
    a = torch.tensor([5.0, 1.0, 6.0])           # a + b wraps past 2π
    b = torch.tensor([2.0, 0.5, 6.2])
    with torch.no_grad():
        action.frequencies.copy_(torch.tensor([1.0, 3.0]))
    assert float(action.homomorphism_penalty(a, b).detach()) < 1e-10
    with torch.no_grad():
        action.frequencies.copy_(torch.tensor([1.0, 1.5]))
    assert float(action.homomorphism_penalty(a, b).detach()) > 0.1
    assert action.report()["rep_frequencies"] == [1.0, 1.5]


def test_so3_generators_at_the_fixed_start_obey_the_brackets():
    action = learned("so3", 3, init="fixed")
    assert action.report()["rep_bracket_error"] < 1e-6
    assert learned("so3", 3, init="random").report()["rep_bracket_error"] > 0.1


def test_element_index_of_finite_groups():
    for name in ("c4", "cube", "shift"):
        group = build_group(name)
        elements = group.elements()
        perm = torch.randperm(len(elements), generator=torch.Generator().manual_seed(0))
        assert torch.equal(group.element_index(elements[perm]), perm)
    with pytest.raises(GroupactError, match="not finite"):
        build_group("so2").element_index(torch.zeros(3))


def test_the_random_start_follows_the_seed_and_leaves_the_global_rng_alone():
    torch.manual_seed(5)
    state = torch.get_rng_state()
    a = learned("so2", 4)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(5)
    assert torch.equal(learned("so2", 4).frequencies, a.frequencies)
    torch.manual_seed(6)
    assert not torch.equal(learned("so2", 4).frequencies, a.frequencies)


def test_config_checks():
    with pytest.raises(ConfigError, match="learned needs a finite rotation group.*affine"):
        build_action("learned", build_group("contrast"), ActionConfig(kind="learned"))
    with pytest.raises(ConfigError, match="k-vector fibres"):
        learned("c4", 2).check_fibre((7, 7))
    with pytest.raises(ConfigError, match="made for fibres of size 2, not 3"):
        learned("c4", 2).check_fibre((3,))
    with pytest.raises(ConfigError, match="orthogonal=false applies to finite groups"):
        build_action("learned", build_group("so2"), ActionConfig(kind="learned", orthogonal=False))
    with pytest.raises(ConfigError, match="model.action.init=.random. does not apply to "
                                          "model.action.kind=spatial"):
        build_action("spatial", build_group("c4"), ActionConfig(kind="spatial", init="random"))
    with pytest.raises(ConfigError, match="model.action.init' is one of fixed, random"):
        load_config("rotmnist-c4", ["model.action.init=zero"])
    free = learned("c4", 2, orthogonal=False)
    with pytest.raises(NotImplementedError, match="no invariants"):
        free.invariants(torch.randn(2, 3, 2))


def test_loss_hom_needs_a_learned_action(tmp_path):
    from groupact.train import Trainer
    cfg = load_config("rotmnist-c4", ["loss.hom=1", "data.n_train=64", "data.n_val=32",
                                      "data.n_test=32", "train.epochs=0", "train.progress=false"])
    with pytest.raises(ConfigError, match="loss.hom=1.0 applies to model.action.kind=learned"):
        Trainer(cfg, tmp_path / "run", log=lambda *_: None)


VECTOR_C4 = ["model.net=conv2d-vector", "model.widths=[16]", "model.latent_dim=32",
             "model.fibre=2", "model.action.kind=learned", "model.action.init=random",
             "loss.hom=1", "train.lr=0.01", "train.batch_size=16",
             "train.schedule=onecycle", "data.n_train=512", "data.n_val=64", "data.n_test=64",
             "train.progress=false", "train.threads=1", "eval.probe_c=[0.01]",
             "eval.figures=true", "eval.n_pairs=64"]


def test_training_on_c4_drives_the_homomorphism_error_down(tmp_path):
    from groupact.evaluate.evaluate import evaluate_run
    from groupact.runs import load_run
    from groupact.train import history, train_run
    cfg = load_config("rotmnist-c4", VECTOR_C4 + ["train.epochs=8", "model.action.lr_scale=2"])
    tr = train_run(cfg, tmp_path / "run", log=lambda *_: None)
    torch.manual_seed(cfg.train.seed)                  # the run's seed picks the random start
    start = learned("c4", 2)
    assert torch.equal(start.base, tr.model.action.base)
    before = start.report()["rep_homomorphism_error"]
    after = tr.model.action.report()["rep_homomorphism_error"]
    assert before > 0.3 and after < before / 20, (before, after)
    # the action's parameters had their own learning rate
    assert tr.opt.param_groups[-1]["params"][0] is tr.model.action.delta
    # what it found is a representation of C4: its characters are those of one (2 cos(mπk/2))
    chars = torch.tensor(tr.model.action.report()["rep_characters"])
    reps = {m: torch.tensor([2 * round(math.cos(m * k * math.pi / 2)) for k in range(4)],
                            dtype=torch.float32) for m in range(4)}
    assert any(torch.allclose(chars, r, atol=0.05) for r in reps.values()), chars
    # the trained ρ_θ through the generic law helper, within the stated tolerance
    errors = laws.check_action(tr.model.group, tr.model.action, fibre_shape=(2,), tol=0.05)
    assert errors["homomorphism"] < 0.05
    # it is saved and loaded with the run, evaluated, and drawn
    metrics = evaluate_run(tmp_path / "run", log=lambda *_: None)      # best.pt's ρ_θ
    best = load_run(tmp_path / "run").model.action
    assert metrics["rep_homomorphism_error"] == pytest.approx(
        best.report(seed=cfg.eval.seed + 5)["rep_homomorphism_error"], rel=1e-5)
    assert "representation.png" in metrics["figures"]
    last = load_run(tmp_path / "run", which="last").model.action
    assert torch.equal(last.delta, tr.model.action.delta)
    records = history(tmp_path / "run")
    assert all("train_hom" in r for r in records)
    assert records[-1]["train_hom"] < records[0]["train_hom"]
