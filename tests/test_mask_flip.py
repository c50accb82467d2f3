"""ALD's two-state ("flip") estimator for the mask logits, and the mask's own learning rate."""

import pytest
import torch

from groupact.config import load_config
from groupact.errors import ConfigError
from groupact.latent.masks import flip_gradient

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
    flip_gradient(model.mask, model, batch, tr._gen)
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



#: the schedule of planes-so3-debian on MNIST: exploration (epoch 1), the freeze (epochs 1-2),
#: the flip estimator (from epoch 2, while the logits are still held) and its own learning rate
SCHEDULE = TINY[:-1] + ["data.n_train=64", "train.batch_size=16", "train.epochs=4",
                        "train.schedule=onecycle", "model.mask.estimator=flip",
                        "model.mask.sample_epochs=1", "model.mask.freeze_epochs=2",
                        "model.mask.lr_scale=3"]


def _checkpoint_tensors(state):
    """The model's and the optimiser's tensors of a checkpoint, flat, by name."""
    out = {f"model.{k}": v for k, v in state["model"].items()}
    for i, s in state["optimizer"]["state"].items():
        out.update({f"opt.{i}.{k}": v for k, v in s.items()})
    return out


def test_flip_schedule_resumes_bitwise_across_its_phases(tmp_path):
    """Stopped once in each phase (exploring, frozen with flip, free) and resumed each time, the
    run ends where one never stopped ends: weights, Adam's moments, mask and log."""
    import signal

    from groupact.io import load_checkpoint, read_jsonl
    from groupact.train import TIMING_KEYS, Trainer, train_run

    cfg = load_config("rotmnist-c4", SCHEDULE)
    full = train_run(cfg, tmp_path / "full", log=lambda *_: None)
    for stop_at in (2, 6, 10, 13):     # steps 1-4 explore, 5-8 flip while frozen, 9-16 move
        trainer = Trainer(cfg, tmp_path / "part", log=lambda *_: None)
        if stop_at > 2:
            trainer.load_state(load_checkpoint(trainer.paths.last))
            trainer.repair_folder()
        step = trainer.train_step

        def stop_after(batch, step=step, trainer=trainer, stop_at=stop_at):
            out = step(batch)
            if trainer.step == stop_at:
                trainer._stop_signal = signal.SIGTERM
            return out

        trainer.train_step = stop_after
        trainer.fit()
        assert trainer.stopped_by == signal.SIGTERM and trainer.step == stop_at
    resumed = train_run(cfg, tmp_path / "part", resume=True, log=lambda *_: None)
    a = _checkpoint_tensors(load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt"))
    b = _checkpoint_tensors(load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt"))
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert torch.equal(resumed.model.mask.logits, full.model.mask.logits)

    def log(run):
        return [{k: v for k, v in r.items() if k not in TIMING_KEYS}
                for r in read_jsonl(tmp_path / run / "metrics.jsonl")]

    assert log("part") == log("full")
    probs = [r["mask_probs"] for r in log("full")]
    assert probs[0] == probs[1] and probs[2] != probs[1]   # held two epochs, then moved
