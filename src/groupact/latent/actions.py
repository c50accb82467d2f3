"""Latent actions Φ_g: how a group element moves the fibres of a latent (B, C, *fibre).

An action acts on every channel; the model keeps only the variant channels of the result
(Φ_g(z) = M ⊙ action(z, g) + (1 − M) ⊙ z), so masks and actions are independent parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from groupact.errors import ConfigError
from groupact.groups import Group
from groupact.registry import Registry


@dataclass
class Probe:
    """A fixed map p from images to latents (B, C, *fibre) with p(T_g x) ≈ Φ_g(p(x)), the images
    to apply it to, and how exactly that law holds: ``tol``, or a ``precision`` that
    :mod:`groupact.laws` turns into its tolerance ("exact", "float", "interpolated",
    "interpolated-map")."""

    fn: Callable[[Tensor], Tensor]
    images: Tensor
    tol: float | None = None
    precision: str = "exact"


def _precision(group: Group, resampled_maps: bool = False) -> str:
    """How exactly a probe's law holds on this group: to rounding (exact groups), to float
    arithmetic (logits, Fourier sums), or to the interpolation of the image (resampling groups;
    coarser still when the latent maps are resampled too)."""
    if group.interpolates:
        return "interpolated-map" if resampled_maps else "interpolated"
    return "exact" if group.exact else "float"


class LatentAction(nn.Module):
    """Base: ``forward(z, g)`` → the acted latent, same shape as z.

    A new action declares how the law checks probe it (:meth:`reference_probe`); one that
    declares nothing fails :func:`groupact.laws.check_all` instead of escaping it.
    """

    #: True when the action resamples a grid (its homomorphism laws then hold only on smooth
    #: latents, to interpolation tolerances)
    resamples: bool = False
    #: how :mod:`groupact.latent.estimate` can solve for g on this action's latents in closed
    #: form: "affine" (least-squares a, b of a·z + b) or "fourier" (angular Fourier fibres:
    #: a circular cross-correlation over θ); None: searched (every element of a finite group,
    #: or the group's coarse grid refined locally)
    closed_form: str | None = None
    #: the action's parameters (a learned ρ_θ) train at train.lr × this (``model.action.lr_scale``)
    lr_scale: float = 1.0

    def __init__(self, group: Group):
        super().__init__()
        self.group = group

    def reference_probe(self, generator: torch.Generator | None = None) -> Probe | None:
        """A fixed map from images to latents this action moves as the group moves the images,
        on the group's testing images; None: not declared. Raises ConfigError when the action
        does not accept the group (the laws then do not apply)."""
        return None

    def check_fibre(self, fibre: tuple[int, ...]) -> None:
        """Raise a ConfigError if this action cannot act on fibres of this shape."""

    def coarsen(self, z: Tensor) -> Tensor:
        """A smaller latent this action moves the way it moves z, for the coarse stage of the
        estimate of g (:mod:`groupact.latent.estimate`); z itself by default."""
        return z

    def invariants(self, z: Tensor) -> Tensor:
        """(B, F) features of variant channels z (B, C, *fibre) that this action leaves unchanged.

        z_i is invariant but may carry little; z_v carries the content but moves. Invariants of
        z_v give a read-out that is both (docs/PROTOCOL.md, `probe_zinv`).
        """
        raise NotImplementedError


class SpatialAction(LatentAction):
    """The group's own geometric action on each channel's feature map or feature volume.

    rot90 for C4, grid rotation for SO(2)/SO(3), exact permutations for cube turns, rolls for
    shifts: the authors' MNIST action (each 7×7 map turned like the image).
    """

    def check_fibre(self, fibre):
        if len(fibre) != self.group.spatial_dims:
            raise ConfigError(f"action.kind=spatial for group '{self.group.name}' needs "
                              f"{self.group.spatial_dims}-D feature maps per channel; the latent's "
                              f"fibres are {fibre} (use action.kind=matrix for vector latents)")

    def forward(self, z: Tensor, g: Tensor) -> Tensor:
        return self.group.act_map(z, g)

    @property
    def resamples(self) -> bool:
        return self.group.interpolates

    def coarsen(self, z: Tensor) -> Tensor:
        """Feature maps of side 16 or more pooled by the group's own ``map_features`` (on which
        ``act_map`` acts as on the maps, a law the checks test): an eighth of the work per
        candidate for 3D fibres. Smaller maps stay whole: the adrenal model's 14³ pooled to 7³
        doubled the median error of its estimates (0.64° → 1.23° on 12 test pairs, two above
        10°)."""
        return self.group.map_features(z) if min(z.shape[2:]) >= 16 else z

    def reference_probe(self, generator=None):
        """The group's images as maps (:meth:`Group.map_features`)."""
        return Probe(self.group.map_features, self.group.testing_images(8, 2, generator),
                     precision=_precision(self.group, resampled_maps=True))

    def invariants(self, z: Tensor) -> Tensor:
        """Orbit mean and orbit mean square of each fibre over the group's averaging set.

        Exact for finite groups (C4, shifts, cube turns): Φ_g permutes the orbit. The mean square
        keeps what the mean averages away (a turned stroke vs its mirror turn).
        """
        elements = self.group.averaging_elements(z.device)
        total = torch.zeros_like(z)
        squares = torch.zeros_like(z)
        for e in elements:   # a loop over ≤ 49 group elements, each batched over samples
            moved = self.group.act_map(z, e.expand(z.shape[0], *e.shape))
            total += moved
            squares += moved * moved
        n = len(elements)
        return torch.cat([(total / n).flatten(1), (squares / n).flatten(1)], 1)


class MatrixAction(LatentAction):
    """ρ(g) on k-vector fibres (Jin et al.): z of shape (B, C, k), each channel a k-vector."""

    def check_fibre(self, fibre):
        k = self.group.matrix_dim
        if k == 0:
            raise ConfigError(f"group '{self.group.name}' has no matrix representation")
        if self.group.matrix_kind != "rotation":
            raise ConfigError(f"action.kind=matrix needs a rotation group (ρ(g) ∈ SO(k)); "
                              f"'{self.group.name}' is {self.group.matrix_kind}"
                              + ("; use action.kind=affine" if self.group.matrix_kind == "affine"
                                 else ""))
        if fibre != (k,):
            raise ConfigError(f"action.kind=matrix for group '{self.group.name}' needs fibres of "
                              f"size {k}; the latent's fibres are {fibre} (set model.fibre={k})")

    def forward(self, z: Tensor, g: Tensor) -> Tensor:
        rho = self.group.matrix(g).to(z)
        return torch.einsum("bij,bcj->bci", rho, z)

    def reference_probe(self, generator=None):
        """The group's own matrix features (:meth:`Group.matrix_features`: centroids for turns)."""
        self.check_fibre((self.group.matrix_dim,))
        return matrix_probe(self.group, generator)

    def invariants(self, z: Tensor) -> Tensor:
        """Inner products of every pair of fibres (the Gram matrix), and for k = 2 their 2×2
        determinants: unchanged by any rotation ρ(g) ∈ SO(k), since ρᵀρ = 1 and det ρ = 1."""
        c = z.shape[1]
        rows, cols = torch.triu_indices(c, c, device=z.device)
        feats = [torch.einsum("bck,bdk->bcd", z, z)[:, rows, cols]]
        if z.shape[2] == 2:
            r, s = torch.triu_indices(c, c, 1, device=z.device)
            det = z[:, :, 0, None] * z[:, None, :, 1] - z[:, :, 1, None] * z[:, None, :, 0]
            feats.append(det[:, r, s])
        return torch.cat(feats, 1)


class AffineAction(LatentAction):
    """a·z + b on every entry of the variant channels: the contrast group Aff(R) (Jin et al.).

    Uses the group's homogeneous 2×2 representation [[a, b], [0, 1]], so it works for any fibre.
    """

    closed_form = "affine"

    def check_fibre(self, fibre):
        if self.group.matrix_kind != "affine":
            raise ConfigError(f"action.kind=affine needs a 1-D affine group (contrast); got "
                              f"'{self.group.name}'")

    def reference_probe(self, generator=None):
        """The first matrix feature (a pixel's logit for contrast), moved as u ↦ a·u + b."""
        self.check_fibre((1,))
        return Probe(lambda x: self.group.matrix_features(x)[..., :1],
                     self.group.testing_images(8, 2, generator), precision="float")

    def forward(self, z: Tensor, g: Tensor) -> Tensor:
        rho = self.group.matrix(g).to(z)
        shape = (-1,) + (1,) * (z.dim() - 1)
        return rho[:, 0, 0].view(shape) * z + rho[:, 0, 1].view(shape)

    def invariants(self, z: Tensor) -> Tensor:
        """The variant entries standardised per sample, (z − mean) / std: unchanged by a·z + b for
        every a > 0 (the contrast group's a is positive)."""
        flat = z.flatten(1)
        centred = flat - flat.mean(1, keepdim=True)
        return centred / centred.pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-8)


def matrix_probe(group: Group, generator: torch.Generator | None = None) -> Probe:
    """The probe of every action that starts as ρ(g) on k-vectors: the group's matrix features
    on its testing images."""
    return Probe(group.matrix_features, group.testing_images(8, 2, generator),
                 precision=_precision(group))


#: model.action.kind → action class (built with the model's group); steerable.py adds its own
ACTIONS: Registry[LatentAction] = Registry("model.action.kind", "model.action")
ACTIONS.register("spatial", SpatialAction, "the group's own turn/shift of each channel's "
                 "feature map or volume (rot90, grid resampling, rolls)")
ACTIONS.register("matrix", MatrixAction, "ρ(g) ∈ SO(k) on k-vector fibres (Jin et al.)")
ACTIONS.register("affine", AffineAction, "a·z + b on every entry: the contrast group")


def build_action(kind: str, group: Group, section: Any = None) -> LatentAction:
    """The latent action ``model.action.kind`` names, for ``group``, with the parameters it reads
    from the config's ``model.action`` section (one it does not read, set, is an error) and the
    section's ``lr_scale``, which every action takes."""
    if section is None:
        return ACTIONS.entry(kind).factory(group)
    action = ACTIONS.build_from(kind, section, skip=("kind", "lr_scale"), group=group)
    action.lr_scale = float(section.lr_scale)
    return action
