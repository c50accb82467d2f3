"""The registries recipes pick parts from: unknown names and unread parameters are errors."""

from __future__ import annotations

import dataclasses

import pytest

from groupact.build import group_from_config, mask_from_config
from groupact.config import load_config
from groupact.errors import ConfigError
from groupact.groups import GROUPS
from groupact.latent import MASKS, ALDMask, AllVariantMask, FixedMask
from groupact.registry import Registry


@dataclasses.dataclass
class Section:
    name: str = "a"
    k: int = 1
    other: float = 0.5


def test_a_registry_builds_with_what_an_entry_reads_and_refuses_the_rest():
    reg: Registry[tuple] = Registry("part.name")
    reg.register("a", lambda k=1: ("a", k), "takes k", ["k"])
    reg.register("b", lambda: ("b",), "takes nothing")
    assert list(reg) == ["a", "b"] and "a" in reg and len(reg) == 2
    assert reg.build("a", k=3) == ("a", 3)
    assert reg.build_from("a", Section(k=4), skip=("name",)) == ("a", 4)
    with pytest.raises(ConfigError, match=r"part.other=0.7 does not apply to part.name=a "
                                          r"\(it reads part.k\)"):
        reg.build_from("a", Section(other=0.7), skip=("name",))
    assert reg.build_from("a", Section(other=0.7), skip=("name",), strict=False) == ("a", 1)
    with pytest.raises(ConfigError, match="part.k does not apply to part.name=b"):
        reg.build("b", k=2)
    with pytest.raises(ConfigError, match="unknown part.name 'c'; choose one of: a, b"):
        reg.build("c")
    with pytest.raises(ConfigError, match="did you mean 'a'"):
        reg.entry("aa")


def test_a_group_parameter_the_group_does_not_read_is_an_error():
    with pytest.raises(ConfigError, match="group.n=8 does not apply to group.name=so3"):
        group_from_config(load_config("rotmnist-so2", ["group.name=so3", "group.n=8"]))
    assert group_from_config(load_config("rotmnist-c4", ["group.name=cn", "group.n=8"])).n == 8
    with pytest.raises(ConfigError, match="unknown group.name 'so4'; did you mean 'so3'"):
        group_from_config(load_config("rotmnist-c4", ["group.name=so4"]))


def test_every_registered_group_builds_from_a_default_section_and_lists_its_parameters():
    for name in GROUPS:
        entry = GROUPS.entry(name)
        assert entry.description and all(hasattr(load_config("rotmnist-c4").group, p)
                                          for p in entry.params), name


def test_masks_come_from_their_registry():
    cfg = load_config("rotmnist-c4")
    assert isinstance(mask_from_config(cfg, 8, 0), ALDMask)
    fixed = mask_from_config(load_config("rotmnist-c4", ["model.mask.kind=fixed",
                                                         "model.mask.variant_fraction=0.25"]), 8, 0)
    assert isinstance(fixed, FixedMask) and int(fixed.hard().sum()) == 2
    assert isinstance(mask_from_config(load_config("rotmnist-c4", ["model.mask.kind=all"]), 8, 0),
                      AllVariantMask)
    assert set(MASKS) == {"ald", "fixed", "all"}
    with pytest.raises(ConfigError, match="unknown model.mask.kind 'fixd'; did you mean 'fixed'"):
        MASKS.entry("fixd")
