"""From a checked :class:`Config` to the objects it names: group, pair source, model."""

from __future__ import annotations

import torch

from groupact.config import Config
from groupact.groups import GROUPS, Group
from groupact.latent import MASKS, ChannelMask, build_action
from groupact.model import GroupActionAutoencoder
from groupact.nets import NetSpec, net_entry


def group_from_config(cfg: Config) -> Group:
    """The recipe's group: the group.* keys it reads, and an error for one set that it does not
    read (``group.n=8`` on so3 used to be dropped silently)."""
    return GROUPS.build_from(cfg.group.name, cfg.group, skip=("name",))


def mask_from_config(cfg: Config, channels: int, seed: int) -> ChannelMask:
    """The recipe's mask for a latent of ``channels`` channels (seeded logits for ALD).

    Not strict: a recipe's mask section describes its own kind (an ALD start, say), and switching
    the kind (``model.mask.kind=fixed``, as the reproduce plan's baselines do) leaves those keys
    behind, unread, on purpose."""
    m = cfg.model.mask
    return MASKS.build_from(m.kind, m, skip=("kind",), strict=False, channels=channels,
                            generator=torch.Generator().manual_seed(seed))


def mask_factory(cfg: Config, seed: int):
    """A callable channels → mask, for the kind the recipe names (the model learns its channel
    count from one dry run of the encoder)."""
    MASKS.entry(cfg.model.mask.kind)     # an unknown kind fails before any net is built
    return lambda channels: mask_from_config(cfg, channels, seed)


def model_from_config(cfg: Config, input_shape: tuple[int, ...],
                      group: Group | None = None) -> GroupActionAutoencoder:
    """The recipe's model for inputs of ``input_shape`` (C, H, W) or (C, D, H, W)."""
    group = group or group_from_config(cfg)
    mc = cfg.model
    spec = NetSpec(tuple(input_shape), channels=mc.channels, widths=tuple(mc.widths),
                   latent_dim=mc.latent_dim, fibre=mc.fibre,
                   frequencies=mc.frequencies, blocks=mc.blocks, factor=mc.factor,
                   ball=mc.ball, out_margin=mc.out_margin, sky_copy=mc.sky_copy,
                   cut_margin=mc.cut_margin)
    entry = net_entry(mc.net)
    with torch.random.fork_rng(devices=[]):   # seeded weights; the caller's RNG left as it was
        torch.manual_seed(cfg.train.seed)
        encoder, decoder = entry.build(spec)
    return GroupActionAutoencoder.for_input(encoder, decoder, group,
                                            mask_factory(cfg, cfg.train.seed),
                                            build_action(mc.action.kind, group, mc.action), input_shape,
                                            pixel_range=entry.pixel_range)
