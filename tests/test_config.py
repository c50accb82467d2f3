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


@pytest.mark.parametrize("name", recipe_names())
def test_every_recipe_builds_a_working_model(name):
    """timm-style: each bundled recipe's model runs forward on its input shape, on the CPU."""
    cfg = load_config(name)
    shapes = {"authors-mnist": (1, 28, 28), "jin-mnist": (1, 28, 28)}
    shape = shapes.get(cfg.model.net)
    if shape is None:
        pytest.skip(f"{name}: input shape comes from its dataset (tested with the data)")
    model = model_from_config(cfg, shape)
    x = torch.rand(3, *shape)
    g = model.group.sample(3)
    with torch.no_grad():
        y = model(x, g)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert 0 <= float(y.min()) and float(y.max()) <= 1


def test_a_folder_named_like_a_recipe_does_not_shadow_it(tmp_path, monkeypatch):
    """`groupact train rotmnist-so2 --run-dir rotmnist-so2`, then the same command again."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rotmnist-so2").mkdir()
    assert load_config("rotmnist-so2").name == "rotmnist-so2"
