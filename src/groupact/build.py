"""From a checked :class:`Config` to the objects it names: group, pair source, model."""

from __future__ import annotations

import torch

from groupact.config import Config
from groupact.errors import ConfigError
from groupact.groups import Group, build_group
from groupact.latent import ALDMask, AllVariantMask, FixedMask, build_action
from groupact.model import GroupActionAutoencoder
from groupact.nets import NetSpec, net_entry


def group_from_config(cfg: Config) -> Group:
    g = cfg.group
    return build_group(g.name, n=g.n, size=g.size, unit=g.unit, a_max=g.a_max, b_max=g.b_max,
                       inside=g.inside or "all")


def mask_factory(cfg: Config, seed: int):
    """A callable channels → mask, for the kind the recipe names."""
    m = cfg.model.mask

    def make(channels: int):
        if m.kind == "ald":
            gen = torch.Generator().manual_seed(seed)
            return ALDMask(channels, m.tau, m.init_logit, m.init_std, generator=gen)
        if m.kind == "fixed":
            if m.variant is not None:
                return FixedMask(channels, m.variant)
            return FixedMask.first_fraction(channels, m.variant_fraction)
        if m.kind == "all":
            return AllVariantMask(channels)
        raise ConfigError(f"unknown model.mask.kind '{m.kind}'; choose ald, fixed or all")

    return make


def model_from_config(cfg: Config, input_shape: tuple[int, ...],
                      group: Group | None = None) -> GroupActionAutoencoder:
    """The recipe's model for inputs of ``input_shape`` (C, H, W) or (C, D, H, W)."""
    group = group or group_from_config(cfg)
    mc = cfg.model
    spec = NetSpec(tuple(input_shape), channels=mc.channels, widths=tuple(mc.widths),
                   latent_dim=mc.latent_dim, fibre=mc.fibre,
                   frequencies=mc.frequencies, blocks=mc.blocks, factor=mc.factor,
                   ball=mc.ball, out_margin=mc.out_margin)
    entry = net_entry(mc.net)
    with torch.random.fork_rng(devices=[]):   # seeded weights; the caller's RNG left as it was
        torch.manual_seed(cfg.train.seed)
        encoder, decoder = entry.build(spec)
    return GroupActionAutoencoder.for_input(encoder, decoder, group,
                                            mask_factory(cfg, cfg.train.seed),
                                            build_action(mc.action.kind, group), input_shape,
                                            pixel_range=entry.pixel_range)
