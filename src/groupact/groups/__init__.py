"""Groups: batched elements, group laws and actions on images (see :class:`Group`)."""

from __future__ import annotations

from typing import Any, Callable

from groupact.groups.base import Group, apply_grouped
from groupact.groups.contrast import Contrast
from groupact.groups.planar import SO2, CyclicRotations, CyclicShifts, rotate_images
from groupact.groups.rotations3d import (SO3, CubeRotations, axis_angle_to_matrix,
                                         matrix_to_axis_angle, quaternion_to_matrix,
                                         rotate_volumes, rotation_angle)
from groupact.registry import Registry

#: group.name → group; its parameters are the GroupConfig fields the group reads
GROUPS: Registry[Group] = Registry("group.name", "group")
GROUPS.register("cn", lambda n=4: CyclicRotations(n),
                "C_n planar turns by 360°/n (exact for n | 4)", ["n"])
GROUPS.register("c4", CyclicRotations, "C4: exact 90° turns (rot90), the authors' MNIST group")
GROUPS.register("so2", SO2, "SO(2): any planar turn, bilinear, zero fill (Jin et al.)")
GROUPS.register("shift", lambda size=28, unit=1: CyclicShifts(size, unit),
                "Z_m×Z_m cyclic shifts by whole steps of `unit` px (exact)", ["size", "unit"])
GROUPS.register("so3", SO3, "SO(3): any turn of a volume, trilinear, zero fill, Haar sampling")
GROUPS.register("cube", CubeRotations, "the 24 rotations of the cube on volumes (exact)")
GROUPS.register("contrast", lambda a_max=2.0, b_max=1.0, inside="all", eps=1e-3, threshold=0.05:
                Contrast(a_max, b_max, eps, inside or "all", threshold),
                "Aff(R)+ contrast σ(a·logit(x)+b), a ∈ [1/a_max, a_max], |b| ≤ b_max (Jin)",
                ["a_max", "b_max", "inside", "eps", "threshold"])


def register_group(name: str, factory: Callable[..., Group], description: str,
                   params: list[str] | tuple[str, ...] = ()) -> None:
    """Make a group available to recipes under ``group.name`` (``params``: the group.* keys
    its factory reads)."""
    GROUPS.register(name, factory, description, params)


def build_group(name: str, **params: Any) -> Group:
    """The group a recipe names, with its parameters (n for C_n, size/unit for shifts…); a
    parameter the group does not read is an error."""
    return GROUPS.build(name, **params)


__all__ = ["Group", "GROUPS", "SO2", "CyclicRotations", "CyclicShifts", "apply_grouped",
           "build_group", "register_group", "rotate_images",
           "SO3", "CubeRotations", "Contrast", "axis_angle_to_matrix", "matrix_to_axis_angle",
           "quaternion_to_matrix", "rotate_volumes", "rotation_angle"]
