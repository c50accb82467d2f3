"""Recipes and overrides: every key checked, typos named, every bundled recipe builds."""

import pytest
import torch

from groupact.build import model_from_config
from groupact.config import Config, load_config, parse_override, recipe_names
from groupact.errors import ConfigError


def test_overrides_apply_with_types():
    cfg = load_config("rotmnist-c4", ["train.epochs=5", "train.lr=0.01", "model.mask.tau=0.3",
                                      "model.mask.variant=[0, 2]", "data.path=null"])
    assert cfg.train.epochs == 5 and cfg.train.lr == 0.01
    assert cfg.model.mask.tau == 0.3 and cfg.model.mask.variant == [0, 2]
    assert cfg.data.path is None


@pytest.mark.parametrize("override, message", [
    ("train.epoch=5", "did you mean 'train.epochs'"),
    ("trian.epochs=5", "did you mean 'train'"),
    ("model.mask.tua=0.3", "did you mean 'model.mask.tau'"),
    ("train.epochs=five", "whole number"),
    ("train.lr=fast", "takes a number"),
    ("train.progress=maybe", "true or false"),
    ("model.widths=3", "takes a list"),
    ("train.epochs", "key=value"),
    ("train=3", "must be a mapping"),
])
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("rotmnist-c4", [override])


def test_unknown_recipe_suggests():
    with pytest.raises(ConfigError, match="rotmnist-c4"):
        load_config("rotmnist-c5")


def test_parse_override_nesting():
    assert parse_override("a.b.c=1") == {"a": {"b": {"c": 1}}}
    assert parse_override("a=hello world") == {"a": "hello world"}


def test_config_round_trips_through_dict():
    cfg = load_config("rotmnist-c4", ["train.epochs=7"])
    assert load_config(cfg.to_dict()) == cfg
    assert Config() == load_config({})


#: the image shape each dataset kind gives (C, H, W) or (C, D, H, W), at its default size
DATA_SHAPES = {"mnist5k": (1, 28, 28), "brain3d": (1, 32, 32, 32), "adrenal3d": (1, 28, 28, 28),
               "brain2d": (1, 64, 64), "planes": (3, 64, 64), "planes-debian": (3, 64, 64)}


@pytest.mark.parametrize("name", recipe_names())
def test_every_recipe_builds_a_working_model_and_takes_a_training_step(name):
    """timm-style, for every bundled recipe: its model runs forward on its data's shape, on the
    CPU, with outputs in [0, 1], and one optimiser step on a reconstruction loss moves it."""
    cfg = load_config(name)
    shape = DATA_SHAPES[cfg.data.kind]
    model = model_from_config(cfg, shape)
    torch.manual_seed(0)
    x = torch.rand(2, *shape)
    g = model.group.sample(2)
    with torch.no_grad():
        y = model(x, g)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert 0 <= float(y.min()) and float(y.max()) <= 1
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = model.recon_error(model(x, g), x)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_a_folder_named_like_a_recipe_does_not_shadow_it(tmp_path, monkeypatch):
    """`groupact train rotmnist-so2 --run-dir rotmnist-so2`, then the same command again."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rotmnist-so2").mkdir()
    assert load_config("rotmnist-so2").name == "rotmnist-so2"


def test_another_dataset_drops_the_recipes_split_sizes_unless_the_user_sets_them():
    own = load_config("rotmnist-c4", ["data.kind=npz", "data.path=my.npz"])
    assert (own.data.n_train, own.data.n_val, own.data.n_test) == (None, None, None)
    mine = load_config("rotmnist-c4", ["data.kind=npz", "data.n_test=50", "data.n_val=20"])
    assert (mine.data.n_train, mine.data.n_val, mine.data.n_test) == (None, 20, 50)
    same = load_config("rotmnist-c4", ["train.epochs=2"])
    assert (same.data.n_train, same.data.n_val, same.data.n_test) == (3200, 800, 1000)


def test_the_readme_own_data_command_trains_on_a_small_set_under_home(tmp_path, monkeypatch):
    """600 images (under the recipe's 5,000), given as ~/digits.npz: split by the data's size."""
    import json

    import numpy as np

    from groupact.cli import main
    from groupact.data.mnist import load_mnist5k

    monkeypatch.setenv("HOME", str(tmp_path))
    digits = load_mnist5k(400, 100, 100).train
    images = np.concatenate([digits.images[:, 0].numpy()] * 2)[:600]
    np.savez(tmp_path / "digits.npz", images=(images * 255).astype(np.uint8))
    run = tmp_path / "run"
    assert main(["train", "rotmnist-c4", "--set", "data.kind=npz", "--set",
                 "data.path=~/digits.npz", "--run-dir", str(run), "--no-eval",
                 "--set", "train.epochs=1", "--set", "train.progress=false"]) == 0
    sizes = json.loads((run / "data.json").read_text())
    assert (sizes["n_train"], sizes["n_val"], sizes["n_test"]) == (400, 100, 100), sizes
    assert (run / "checkpoints" / "best.pt").exists()
