"""The group interface: batched elements as tensors, group laws, and the action on images.

Every method takes and returns a *batch* of elements (leading dimension B), so data generation,
losses and latent actions never loop over samples in Python. Composition follows the usual
convention ``compose(a, b) = a·b``: act with ``b`` first, then with ``a``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from groupact.errors import GroupactError


class Group(ABC):
    """A group G with a batched action T_g on images (B, C, H, W) or volumes (B, C, D, H, W)."""

    #: short registry name, e.g. ``"c4"``
    name: str = ""
    #: True when ``act_image`` is exact (no interpolation) for every element
    exact: bool = False
    #: spatial dimensions the action works on (2 for images, 3 for volumes)
    spatial_dims: int = 2
    #: the size k of the k×k matrix representation used by :class:`MatrixAction` (0 = none)
    matrix_dim: int = 0
    #: what the matrix representation is, so actions check capabilities instead of guessing them
    #: from shapes: "rotation" (ρ(g) ∈ SO(k): ρᵀ = ρ⁻¹ and det ρ = +1, what the matrix action's
    #: Gram invariants need), "affine" (ρ(g) = [[a, b], [0, 1]], the contrast group), or None
    matrix_kind: str | None = None

    # --- what the law checks read (groupact.laws): declared here, so a new group is checked by
    # --- being registered, and an undeclared law fails instead of dropping out of coverage
    #: True when ``act_image`` resamples a grid (bilinear, trilinear): its laws hold to the
    #: interpolation tolerances of :mod:`groupact.laws`, not to rounding error
    interpolates: bool = False
    #: True when ρ(g) turns the centred index coordinates (h, w) or (d, h, w) the way T_g turns
    #: the image (then centroid(T_g x) = ρ(g)·centroid(x) is checked); False when ρ means
    #: something else (override :meth:`matrix_features`); None: undeclared, and the law check
    #: of a group with a matrix representation fails until it is declared
    turns_coordinates: bool | None = None

    # --- what the estimate of g reads (groupact.latent.estimate): a finite group is searched
    # --- element by element; a continuous one declares a coarse grid and local moves
    #: dimension of the tangent space a continuous group's search refines in (1 for SO(2), 3 for
    #: SO(3)); 0: undeclared, and a continuous group then has no coarse-to-fine search
    tangent_dim: int = 0

    # --- elements -------------------------------------------------------------------------
    @abstractmethod
    def identity(self, n: int, device: torch.device | str | None = None) -> Tensor:
        """n copies of the identity element."""

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> Tensor:
        """n elements drawn from the group's uniform (Haar) distribution."""

    @abstractmethod
    def compose(self, a: Tensor, b: Tensor) -> Tensor:
        """The products a·b (act with b first), elementwise over the batch."""

    @abstractmethod
    def inverse(self, g: Tensor) -> Tensor:
        """The inverses g⁻¹."""

    @abstractmethod
    def distance(self, a: Tensor, b: Tensor) -> Tensor:
        """A per-element distance (0 iff equal) used by tests and to detect identities."""

    def relative(self, g1: Tensor, g2: Tensor) -> Tensor:
        """The element g with g·(g1·x) = g2·x, i.e. g = g2·g1⁻¹ (Jin et al.'s pair element)."""
        return self.compose(g2, self.inverse(g1))

    def is_identity(self, g: Tensor, atol: float = 1e-6) -> Tensor:
        """Boolean mask of the elements that equal the identity."""
        return self.distance(g, self.identity(g.shape[0], g.device)) <= atol

    def sample_non_identity(self, n: int, generator: torch.Generator | None = None,
                            device: torch.device | str | None = None) -> Tensor:
        """Like :meth:`sample`, but never the identity (for finite groups it has mass 1/|G|).

        Evaluation pairs use this so that the do-nothing answer cannot score an infinite PSNR.
        """
        g = self.sample(n, generator, device)
        for _ in range(64):
            bad = self.is_identity(g)
            if not bool(bad.any()):
                return g
            g = torch.where(_expand_mask(bad, g), self.sample(n, generator, device), g)
        raise RuntimeError(f"group {self.name} kept sampling the identity")

    def elements(self, device: torch.device | str | None = None) -> Tensor | None:
        """All elements of a finite group, or None for a continuous one."""
        return None

    def automorphisms(self) -> dict[str, Callable[[Tensor], Tensor]]:
        """Relabellings φ of the elements that keep the group law, by name (the identity first).

        A model trained without g learns its action up to one of them (a C4 model may turn by
        270° where it is told 90°: k ↦ −k keeps composition), so the error of its estimate of g
        is measured up to the best of them. The identity alone unless a group declares more.
        """
        return {"identity": lambda g: g}

    def element_index(self, g: Tensor) -> Tensor:
        """(B,) long: where each element of a finite group stands in :meth:`elements` (a lookup
        key for a per-element table, e.g. a learned representation)."""
        elements = self.elements(g.device)
        if elements is None:
            raise GroupactError(f"group '{self.name}' is not finite: its elements have no index")
        if elements.dim() == 1 and not elements.is_floating_point():
            return g.long()                             # the elements are their own indices
        hits = (g[:, None] == elements[None]).flatten(2).all(-1)       # (B, |G|)
        if not bool(hits.any(1).all()):
            raise GroupactError(f"an element is not one of group '{self.name}'s elements")
        return hits.float().argmax(1)

    def orbit_elements(self, n: int, device: torch.device | str | None = None) -> Tensor:
        """n elements spread along the group, for orbit figures (identity first)."""
        all_elements = self.elements(device)
        if all_elements is not None:
            return all_elements[:n]
        raise NotImplementedError

    def averaging_elements(self, device: torch.device | str | None = None) -> Tensor:
        """A finite set closed under the group law, to average latent fibres over.

        Averaging f(ρ_h z) over a finite subgroup H gives features invariant to H exactly: the
        whole group when it is finite; continuous groups pick a finite subgroup (C_8 ⊂ SO(2), the
        24 cube turns ⊂ SO(3)), so their read-out is invariant to that subgroup exactly and to
        the rest approximately.
        """
        all_elements = self.elements(device)
        if all_elements is None:
            raise GroupactError(f"group '{self.name}' has no finite subgroup to average over")
        return all_elements

    def search_grid(self, n: int | None = None,
                    device: torch.device | str | None = None) -> tuple[Tensor, float] | None:
        """n elements spread evenly over a continuous group (the group's own default n when
        None) and their covering radius in radians (every element lies about that close to one
        of them): the coarse stage of estimating g. None: not declared (finite groups are
        searched element by element instead)."""
        return None

    def exp_step(self, g: Tensor, v: Tensor) -> Tensor:
        """exp(v)·g for tangent vectors v (B, :attr:`tangent_dim`) in radians: the local moves
        with which a coarse estimate of g is refined."""
        raise NotImplementedError(f"group '{self.name}' declares no local moves (exp_step)")

    # --- actions --------------------------------------------------------------------------
    @abstractmethod
    def act_image(self, x: Tensor, g: Tensor) -> Tensor:
        """T_g(x) for a batch of images or volumes, one element per sample."""

    def act_map(self, z: Tensor, g: Tensor) -> Tensor:
        """The group's geometric action on latent feature maps (the spatial latent action).

        The default is the image action at the map's resolution, right for rotations about the
        centre; groups whose elements carry a length (shifts) override it.
        """
        return self.act_image(z, g)

    def matrix(self, g: Tensor) -> Tensor:
        """ρ(g) as (B, k, k) matrices: a representation, ρ(a·b) = ρ(a)ρ(b)."""
        raise GroupactError(f"group '{self.name}' has no matrix representation; "
                            "use action.kind=spatial")

    # --- probes for the law checks -------------------------------------------------------
    def testing_elements(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n elements for the law checks (escnn's ``testing_elements``): a finite group's every
        element when n allows, in a random order, so no element escapes; else Haar samples."""
        g = self.sample(n, generator)
        every = self.elements()
        if every is None or n < len(every):
            return g
        return torch.cat([every, g[len(every):]])[torch.randperm(n, generator=generator)]

    def testing_images(self, n: int, channels: int = 1,
                       generator: torch.Generator | None = None) -> Tensor:
        """Smooth images (B, C, *spatial) the law checks act on: 28² or 20³ blobs in [0, 1]."""
        side = 28 if self.spatial_dims == 2 else 20
        return smooth_images(n, side, self.spatial_dims, channels, generator)

    def matrix_features(self, x: Tensor) -> Tensor:
        """(B, N, k) features of images that ρ(g) moves as T_g moves the image:
        matrix_features(T_g x) = ρ(g)·matrix_features(x). The law checks read it to test that
        ``matrix`` and ``act_image`` agree, and the matrix action's latent against the data.

        Centroids when the group declares :attr:`turns_coordinates`; a group whose ρ means
        something else overrides this (shifts: Fourier phases; contrast: logits)."""
        if self.turns_coordinates:
            return centroids(x)
        raise NotImplementedError(
            f"group '{self.name}' has a matrix representation but declares neither "
            "turns_coordinates = True nor its own matrix_features(x), so nothing can check that "
            "ρ(g) moves what T_g moves")

    def map_features(self, x: Tensor) -> Tensor:
        """Images as latent maps on which ``act_map`` acts as ``act_image`` acts on the images:
        act_map(map_features(x), g) = map_features(T_g x); the spatial action's law check. The
        default pools by 2, right for turns about the centre (the default ``act_map``)."""
        pool = F.avg_pool2d if self.spatial_dims == 2 else F.avg_pool3d
        return pool(x, 2)

    # --- text -----------------------------------------------------------------------------
    @abstractmethod
    def parse(self, text: str) -> Tensor:
        """One element from the command line (a batch of 1); raises GroupactError if invalid."""

    @abstractmethod
    def describe(self, g: Tensor) -> list[str]:
        """Human-readable labels, one per element (for figures and logs)."""

    def to_text(self, g: Tensor) -> list[str]:
        """Each element as the command line's ``--g`` text, precise enough that :meth:`parse`
        reads back the same element (``groupact align`` prints it); the default is
        :meth:`describe`, for groups whose labels already are that."""
        return self.describe(g)

    def check_input(self, x: Tensor) -> None:
        """Raise a GroupactError if x is not a batch this group can act on."""
        want = 2 + self.spatial_dims
        if x.dim() != want:
            kind = "images (B, C, H, W)" if self.spatial_dims == 2 else "volumes (B, C, D, H, W)"
            raise GroupactError(f"group '{self.name}' acts on {kind}; got a tensor of shape "
                                f"{tuple(x.shape)}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def smooth_images(n: int, side: int, dims: int = 2, channels: int = 1,
                  generator: torch.Generator | None = None, low: float = 0.0,
                  high: float = 1.0) -> Tensor:
    """Gaussian blobs (σ = side/7) off the centre but inside the inscribed ball, so turns lose
    little at the corners and interpolation errors stay small; values in [low, high]."""
    gen = generator or torch.Generator().manual_seed(0)
    r = torch.arange(side, dtype=torch.float32) - (side - 1) / 2
    grids = torch.meshgrid(*([r] * dims), indexing="ij")
    centre = (torch.rand(n, channels, dims, generator=gen) * 2 - 1) * side * 0.15
    sq = sum((grids[i] - centre[..., i].view(n, channels, *([1] * dims))) ** 2
             for i in range(dims))
    blob = torch.exp(-sq / (2 * (side / 7) ** 2))
    return low + (high - low) * blob


def centroids(x: Tensor) -> Tensor:
    """(B, C, *spatial) → (B, C, dims): intensity centroids in centred index coordinates."""
    dims = x.dim() - 2
    coords = [torch.arange(s, dtype=x.dtype, device=x.device) - (s - 1) / 2 for s in x.shape[2:]]
    mesh = torch.meshgrid(*coords, indexing="ij")
    mass = x.flatten(2).sum(-1).clamp_min(1e-12)
    return torch.stack([(x * m).flatten(2).sum(-1) / mass for m in mesh[:dims]], -1)


def reduce_degrees(degrees: float) -> float:
    """An angle in degrees as the same turn in [0, 360).

    ``math.fmod`` is exact in float64, so even 1e20° lands on its true remainder (280°); turned
    into radians (or float32) first, a huge angle keeps none of the digits that say where it
    points.
    """
    r = math.fmod(degrees, 360.0)
    if r < 0:
        r += 360.0
    return 0.0 if r >= 360.0 else r + 0.0     # -1e-20 + 360 rounds to 360; + 0.0: no -0.0


def _expand_mask(mask: Tensor, like: Tensor) -> Tensor:
    """Broadcast a (B,) mask over the trailing dimensions of an element tensor."""
    return mask.view(-1, *([1] * (like.dim() - 1)))


def apply_grouped(x: Tensor, key: Tensor, n_values: int, fn) -> Tensor:
    """Apply ``fn(x_subset, j)`` to the samples whose element index ``key`` equals j.

    Loops over the distinct elements of a finite group (at most |G|, e.g. 4 or 24), never over
    samples: exact actions such as rot90, cube rotations and rolls take one element per call.
    """
    out = torch.empty_like(x)
    for j in range(n_values):
        idx = (key == j).nonzero(as_tuple=True)[0]
        if idx.numel():
            out[idx] = fn(x[idx], j)
    return out
