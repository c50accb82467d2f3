"""A short real training run must beat the do-nothing answer by a clear margin."""

import json
import math

import pytest
import torch

from groupact.config import load_config
from groupact.evaluate.evaluate import evaluate_run
from groupact.io import read_jsonl
from groupact.train import train_run

TINY = ["data.n_train=640", "data.n_val=128", "data.n_test=256", "train.progress=false",
        "eval.probe_c=[0.01]"]


@pytest.fixture(scope="module")
def c4_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "c4"
    cfg = load_config("rotmnist-c4", TINY + ["train.epochs=4", "train.lr=0.003", "train.batch_size=32"])
    train_run(cfg, run, log=lambda *_: None)
    return run


def test_training_beats_do_nothing(c4_run):
    m = evaluate_run(c4_run, log=lambda *_: None, figures_on=False)
    assert m["psnr"] > m["psnr_identity"] + 6.0, m
    assert m["ssim"] > m["ssim_identity"] + 0.3
    assert m["n_pairs"] == 256


def test_run_folder_contents(c4_run):
    for name in ("config.yaml", "data.json", "metrics.jsonl", "checkpoints/best.pt",
                 "checkpoints/last.pt"):
        assert (c4_run / name).is_file(), name
    records = read_jsonl(c4_run / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert records[-1]["val_loss"] < records[0]["val_loss"]
    assert len(records[0]["mask"]) == 64
    data = json.loads((c4_run / "data.json").read_text())
    assert data["n_train"] == 640 and data["name"] == "mnist5k"


def test_training_is_deterministic(tmp_path):
    cfg = load_config("rotmnist-c4", TINY + ["train.epochs=1", "data.n_train=128"])
    a = train_run(cfg, tmp_path / "a", log=lambda *_: None)
    b = train_run(cfg, tmp_path / "b", log=lambda *_: None)
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k


def test_resume_continues_to_the_same_weights(tmp_path):
    cfg2 = load_config("rotmnist-c4", TINY + ["train.epochs=2", "data.n_train=128"])
    full = train_run(cfg2, tmp_path / "full", log=lambda *_: None)
    cfg1 = load_config("rotmnist-c4", TINY + ["train.epochs=1", "data.n_train=128"])
    train_run(cfg1, tmp_path / "part", log=lambda *_: None)
    resumed = train_run(cfg2, tmp_path / "part", resume=True, log=lambda *_: None)
    for (k, va), vb in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(va, vb), k
    assert [r["epoch"] for r in read_jsonl(tmp_path / "part" / "metrics.jsonl")] == [1, 2]


def test_init_from_starts_from_the_weights_and_nothing_else(c4_run, tmp_path):
    """Fine-tuning: the weights (mask logits among them) of the source's best checkpoint; the
    epoch count, optimiser and history start afresh. A model of another shape is one error."""
    from groupact.errors import ConfigError, GroupactError
    from groupact.io import load_checkpoint
    from groupact.train.trainer import Trainer
    cfg = load_config("rotmnist-c4", TINY + ["train.epochs=1", f"train.init_from={c4_run}"])
    fresh = Trainer(cfg, tmp_path / "a", log=lambda *_: None)
    fresh.start_from(cfg.train.init_from)
    best = load_checkpoint(c4_run / "checkpoints" / "best.pt")["model"]
    for k, v in fresh.model.state_dict().items():
        assert torch.equal(v, best[k]), k
    assert fresh.epoch == 0 and fresh.step == 0 and not fresh.opt.state
    tuned = train_run(cfg, tmp_path / "b", log=lambda *_: None)
    assert [r["epoch"] for r in read_jsonl(tmp_path / "b" / "metrics.jsonl")] == [1]
    # one epoch from the 4-epoch model beats one epoch from scratch (the weights were used)
    scratch = read_jsonl(c4_run / "metrics.jsonl")[0]["val_loss"]
    assert read_jsonl(tmp_path / "b" / "metrics.jsonl")[0]["val_loss"] < scratch
    assert tuned.model.mask.logits.shape == best["mask.logits"].shape
    other = load_config("rotmnist-c4", TINY + ["train.epochs=1", "model.net=res2d",
                                               f"train.init_from={c4_run}"])
    with pytest.raises(GroupactError):          # another pixel range, then another shape
        train_run(other, tmp_path / "c", log=lambda *_: None)
    assert not (tmp_path / "c").exists()
    same_range = load_config("rotmnist-c4", TINY + ["train.epochs=1", "model.mask.kind=all",
                                                    f"train.init_from={c4_run}"])
    with pytest.raises(ConfigError, match="another model"):
        train_run(same_range, tmp_path / "d", log=lambda *_: None)
    assert not (tmp_path / "d").exists()


def test_mask_freeze_holds_the_logits_then_releases_them(tmp_path):
    cfg = load_config("rotmnist-c4", TINY + ["train.epochs=1", "data.n_train=128",
                                             "model.mask.freeze_epochs=1"])
    frozen = train_run(cfg, tmp_path / "a", log=lambda *_: None)
    init = load_config("rotmnist-c4", TINY + ["train.epochs=0", "data.n_train=128"])
    from groupact.build import model_from_config
    start = model_from_config(init, (1, 28, 28)).mask.logits
    assert torch.equal(frozen.model.mask.logits.detach(), start.detach())
    cfg2 = load_config("rotmnist-c4", TINY + ["train.epochs=2", "data.n_train=128",
                                              "model.mask.freeze_epochs=1"])
    moved = train_run(cfg2, tmp_path / "b", log=lambda *_: None)
    assert not torch.equal(moved.model.mask.logits.detach(), start.detach())


@pytest.mark.parametrize("net,inverse", [
    ("authors-mnist", lambda p: math.atanh(2 * p - 1)),            # Tanh on [−1, 1]
    ("authors-mnist-sigmoid", lambda p: math.log(p / (1 - p))),   # sigmoid on [0, 1]
])
def test_output_bias_init_starts_the_decoder_at_the_mean_pixel(tmp_path, net, inverse):
    from groupact.train import Trainer
    cfg = load_config("rotmnist-c4", TINY + ["train.epochs=0", "data.n_train=128",
                                             "model.init_output_bias=true", f"model.net={net}"])
    tr = Trainer(cfg, tmp_path / "a", log=lambda *_: None)
    mean = float(tr.splits.train.images.mean())
    last = [m for m in tr.model.decoder.modules() if isinstance(m, torch.nn.ConvTranspose2d)][-1]
    assert torch.allclose(last.bias, torch.full_like(last.bias, inverse(mean)))
    plain = Trainer(load_config("rotmnist-c4", TINY + ["train.epochs=0", "data.n_train=128"]),
                    tmp_path / "b", log=lambda *_: None)
    last_plain = [m for m in plain.model.decoder.modules()
                  if isinstance(m, torch.nn.ConvTranspose2d)][-1]
    assert not torch.allclose(last_plain.bias, last.bias)
