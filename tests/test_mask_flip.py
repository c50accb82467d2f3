"""ALD's two-state ("flip") estimator for the mask logits, and the mask's own learning rate."""

import pytest
import torch

from groupact.config import load_config
from groupact.errors import ConfigError
from groupact.train.mask_gradients import flip_gradient

TINY = ["data.n_train=128", "data.n_val=64", "data.n_test=64", "train.progress=false",
        "eval.probe_c=[0.01]", "train.epochs=0"]


def _trainer(tmp_path, extra):
    from groupact.train import Trainer
    return Trainer(load_config("rotmnist-c4", TINY + extra), tmp_path, log=lambda *_: None)


def test_flip_gradient_is_the_exact_difference_of_one_channels_two_states(tmp_path):
    tr = _trainer(tmp_path, ["model.mask.estimator=flip"])
    model = tr.model
    gen = torch.Generator().manual_seed(3)
    batch = tr.source.pairs(tr.splits.train, torch.arange(16), gen)
    tr._gen = torch.Generator().manual_seed(0)
    c = int(torch.randint(model.mask.channels, (1,), generator=torch.Generator().manual_seed(0)))
    flip_gradient(model, batch, tr._gen)
    grad = model.mask.logits.grad
    assert torch.count_nonzero(grad) <= 1 and grad[c] != 0
    with torch.no_grad():   # by hand: decode with channel c moved and kept
        z1 = model.encode(batch.x1[:8])
        moved = model.action(z1, batch.g[:8])
        m = model.mask.hard()
        err = []
        for state in (0.0, 1.0):
            mm = m.clone()
            mm[c] = state
            mm = mm.view(1, -1, 1, 1)
            err.append(float(((model.decode(mm * moved + (1 - mm) * z1) - batch.x2[:8]) ** 2)
                             .mean()) * 4)   # authors-mnist works on [−1, 1]: 2² × the error
    s = torch.sigmoid(model.mask.logits[c].detach())
    assert torch.allclose(grad[c], (err[1] - err[0]) * s * (1 - s), rtol=1e-4, atol=1e-9)


def test_flip_estimator_trains_and_moves_the_mask(tmp_path):
    from groupact.train import train_run
    cfg = load_config("rotmnist-c4", TINY[:-1] + ["train.epochs=1", "model.mask.estimator=flip",
                                                   "model.mask.lr_scale=10"])
    tr = train_run(cfg, tmp_path / "run", log=lambda *_: None)
    assert not torch.allclose(tr.model.mask.logits.detach(), torch.zeros(64), atol=0.02)


def test_unknown_estimator_is_refused_when_the_config_is_read():
    with pytest.raises(ConfigError, match="model.mask.estimator' is one of ste, flip; got "
                                          "'gumbel'"):
        load_config("rotmnist-c4", ["model.mask.estimator=gumbel"])

def test_mask_lr_scale_gives_the_logits_their_own_learning_rate(tmp_path):
    tr = _trainer(tmp_path / "a", ["model.mask.lr_scale=10", "train.lr=0.001"])
    groups = tr.opt.param_groups
    assert len(groups) == 2 and groups[1]["lr"] == 0.01 and groups[0]["lr"] == 0.001
    assert groups[1]["params"][0] is tr.model.mask.logits
    n = sum(p.numel() for g in groups for p in g["params"])
    assert n == sum(p.numel() for p in tr.model.parameters())
    assert len(_trainer(tmp_path / "b", []).opt.param_groups) == 1


def test_exploration_draws_bernoulli_masks_only_when_asked():
    from groupact.latent import ALDMask
    m = ALDMask(3, init_std=0.0)
    with torch.no_grad():
        m.logits.copy_(torch.tensor([-1.0, 0.3, 2.0]))
    m.train()
    gen = torch.Generator().manual_seed(0)
    draws = []
    for _ in range(4000):
        m.draw = torch.rand(3, generator=gen)
        draws.append(m().detach())
    m.draw = None
    draws = torch.stack(draws)
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(draws.mean(0), torch.sigmoid(m.logits.detach()), atol=0.03)
    assert m().detach().tolist() == [0.0, 1.0, 1.0] == m.hard().tolist()
    m.draw = torch.zeros(3)          # eval mode ignores a draw
    m.eval()
    assert m().detach().tolist() == [0.0, 1.0, 1.0]


def test_sample_epochs_explore_then_stop(tmp_path):
    from groupact.train import train_run
    cfg = load_config("rotmnist-c4", TINY[:-1] + ["train.epochs=2", "model.mask.sample_epochs=1",
                                                   "model.mask.freeze_epochs=1"])
    tr = train_run(cfg, tmp_path / "run", log=lambda *_: None)
    assert tr.model.mask.draw is None

