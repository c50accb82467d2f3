"""Groups: batched elements, group laws and actions on images (see :class:`Group`)."""

from __future__ import annotations

from typing import Any, Callable

from groupact.errors import ConfigError
from groupact.groups.base import Group, apply_grouped
from groupact.groups.contrast import Contrast
from groupact.groups.planar import SO2, CyclicRotations, CyclicShifts, rotate_images
from groupact.groups.rotations3d import (SO3, CubeRotations, axis_angle_to_matrix,
                                         matrix_to_axis_angle, quaternion_to_matrix,
                                         rotate_volumes, rotation_angle)

#: name → (factory, one-line description); later modules register 3D groups here too
GROUPS: dict[str, tuple[Callable[..., Group], str]] = {
    "cn": (lambda n=4, **_: CyclicRotations(n), "C_n planar turns by 360°/n (exact for n | 4)"),
    "c4": (lambda **_: CyclicRotations(4), "C4: exact 90° turns (rot90), the authors' MNIST group"),
    "so2": (lambda **_: SO2(), "SO(2): any planar turn, bilinear, zero fill (Jin et al.)"),
    "shift": (lambda size=28, unit=1, **_: CyclicShifts(size, unit),
              "Z_m×Z_m cyclic shifts by whole steps of `unit` px (exact)"),
    "so3": (lambda **_: SO3(), "SO(3): any turn of a volume, trilinear, zero fill, Haar sampling"),
    "cube": (lambda **_: CubeRotations(), "the 24 rotations of the cube on volumes (exact)"),
    "contrast": (lambda a_max=2.0, b_max=1.0, eps=1e-3, inside="all", threshold=0.05, **_:
                 Contrast(a_max, b_max, eps, inside, threshold),
                 "Aff(R)+ contrast σ(a·logit(x)+b), a ∈ [1/a_max, a_max], |b| ≤ b_max (Jin)"),
}


def register_group(name: str, factory: Callable[..., Group], description: str) -> None:
    """Make a group available to recipes under ``group.name``."""
    GROUPS[name] = (factory, description)


def build_group(name: str, **params: Any) -> Group:
    """The group a recipe names, with its parameters (n for C_n, size/unit for shifts…)."""
    if name not in GROUPS:
        raise ConfigError(f"unknown group '{name}'; choose one of: {', '.join(sorted(GROUPS))}")
    return GROUPS[name][0](**params)


__all__ = ["Group", "GROUPS", "SO2", "CyclicRotations", "CyclicShifts", "apply_grouped",
           "build_group", "register_group", "rotate_images",
           "SO3", "CubeRotations", "Contrast", "axis_angle_to_matrix", "matrix_to_axis_angle",
           "quaternion_to_matrix", "rotate_volumes", "rotation_angle"]
