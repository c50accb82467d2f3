"""The package surface: what `import groupact` gives a user, and building a model without side
effects on their process."""

from __future__ import annotations

from importlib.metadata import version

import pytest
import torch
from torch import nn

import groupact
from groupact.build import model_from_config
from groupact.config import load_config
from groupact.errors import ConfigError


def test_the_package_has_a_version_and_the_names_a_user_needs():
    assert groupact.__version__ == version("groupact")
    for name in groupact.__all__:
        assert getattr(groupact, name) is not None, name
    group = groupact.build_group("c4")
    model = groupact.GroupActionAutoencoder.for_input(
        nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 1, 3, padding=1), group,
        lambda c: groupact.AllVariantMask(c), groupact.SpatialAction(group), (1, 8, 8))
    x = torch.rand(2, 1, 8, 8)
    assert model.transform(x, torch.tensor([1, 3])).shape == x.shape


def test_a_model_refuses_an_action_built_for_another_group():
    c4, so2 = groupact.build_group("c4"), groupact.build_group("so2")
    with pytest.raises(ConfigError, match="built for group 'so2'"):
        groupact.GroupActionAutoencoder.for_input(
            nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 1, 3, padding=1), c4,
            lambda c: groupact.AllVariantMask(c), groupact.SpatialAction(so2), (1, 8, 8))


def test_the_dry_run_leaves_batchnorm_statistics_and_the_mode_alone():
    encoder = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4))
    encoder[1].running_mean.fill_(0.5)
    group = groupact.build_group("c4")
    groupact.GroupActionAutoencoder.for_input(
        encoder, nn.Conv2d(4, 1, 3, padding=1), group, lambda c: groupact.AllVariantMask(c),
        groupact.SpatialAction(group), (1, 8, 8))
    assert torch.equal(encoder[1].running_mean, torch.full((4,), 0.5))
    assert encoder.training and int(encoder[1].num_batches_tracked) == 0


def test_building_a_model_is_seeded_but_leaves_the_global_rng_alone():
    cfg = load_config("rotmnist-c4")
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    a = model_from_config(cfg, (1, 28, 28))
    assert torch.equal(torch.rand(4), expected)        # the caller's stream is untouched
    b = model_from_config(cfg, (1, 28, 28))             # and the weights are the seed's
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(),
                                                 b.state_dict().values()))
