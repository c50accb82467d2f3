"""Latents as channels × fibres: masks choose channels, actions move fibres."""

from groupact.latent.actions import (ACTIONS, AffineAction, LatentAction, MatrixAction, Probe,
                                     SpatialAction, build_action)
from groupact.latent.masks import MASKS, ALDMask, AllVariantMask, ChannelMask, FixedMask
from groupact.latent.learned import LearnedAction
from groupact.latent.steerable import SteerableAction


__all__ = ["ACTIONS", "MASKS", "ALDMask", "AffineAction", "AllVariantMask", "ChannelMask", "FixedMask",
           "LatentAction", "LearnedAction", "MatrixAction", "Probe", "SpatialAction", "SteerableAction", "build_action"]
