"""Law checks for groups and latent actions, with stated tolerances (in the spirit of escnn's
``check_equivariance``): run them on your own group or action before training on it.

- :func:`check_group`: identity, inverse, associativity, the relative element, and for a matrix
  representation ρ(a)ρ(b) = ρ(a·b), ρ(e) = 1, ρ(g⁻¹)ρ(g) = 1, ρ(g)ᵀ = ρ(g⁻¹) when orthogonal.
- :func:`check_image_action`: T_e x = x, T_a(T_b x) = T_{a·b} x (``compose(a, b)`` acts with b
  first, see :mod:`groupact.groups.base`), T_{g⁻¹}T_g x = x, and for rotation groups that the
  image turns the way ρ(g) turns coordinates: centroid(T_g x) = ρ(g)·centroid(x), in centred
  index coordinates (h, w) or (d, h, w) — the library's one convention.
- :func:`check_action`: a latent action's identity, Φ_a Φ_b = Φ_{a·b}, inverse, and — through a
  *probe* p, a fixed map from images to latents that commutes with the group — that the latent
  turns like the data: Φ_g(p(x)) = p(T_g x). :func:`reference_probe` gives one for every built-in
  (group, action) pair: the image pooled to a smaller map (spatial), centroids or Fourier phases
  (matrix), polar Fourier coefficients (steerable), logits (contrast).

For non-abelian groups each order law is also checked to have power: swapping the order must
break it by several times the tolerance, else the check could not see a swapped composition.

Errors are relative: ‖a − b‖ / ‖b‖ over the batch (the identity laws of group elements use the
group's own ``distance``). Each check returns {law: measured error} and raises :class:`LawError`
naming every law above its tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from groupact.errors import ConfigError
from groupact.groups import (SO2, SO3, Contrast, CubeRotations, CyclicRotations, CyclicShifts,
                             Group)
from groupact.latent.actions import ACTIONS, MatrixAction, SpatialAction
from groupact.latent.learned import LearnedAction
from groupact.latent.steerable import SteerableAction, to_fourier
from groupact.nets.steerable import ToPolar

#: groups whose ρ(g) turns the centred index coordinates of the image (checked by centroids)
ROTATION_GROUPS = (SO2, CyclicRotations, SO3, CubeRotations)

#: relative errors accepted for interpolated (bilinear/trilinear) image actions on the smooth test
#: images of :func:`smooth_images` (28² / 20³; measured: SO(2) 0.008 / 0.014 / 0.005, SO(3) 0.024 /
#: 0.040 / 0.013 for compose / inverse / centroid), and for matrix or steerable latents read from
#: such images (probe: 0.008 centroids, 0.007 polar Fourier under SO(2)). Exact actions get 1e-5.
INTERPOLATED_TOL = {"compose": 0.05, "inverse": 0.08, "centroid": 0.03, "probe": 0.03}
#: the same for spatial actions that resample the *pooled* maps (14² / 10³: coarser, so worse;
#: measured SO(2) 0.032 / 0.047 / 0.019, SO(3) 0.077 / 0.135 / 0.058). A swapped order or a
#: mirrored turn errs by 0.8–1.4 on the same data, so these bounds still catch both.
INTERPOLATED_MAP_TOL = {"compose": 0.15, "inverse": 0.25, "probe": 0.12}


class LawError(AssertionError):
    """A group or action law broken beyond its tolerance (the message lists every one)."""


def relative_error(a: Tensor, b: Tensor) -> float:
    """‖a − b‖ / ‖b‖ over the whole batch (0 when both are 0)."""
    num, den = (a - b).detach().double().norm(), b.detach().double().norm()
    return float(num / den) if float(den) > 0 else float(num)


def _finish(what: str, errors: dict[str, float], tols: dict[str, float],
            floors: dict[str, float] | None = None) -> dict[str, float]:
    """Raise a LawError naming each law above its tolerance and each power check (``floors``:
    errors that a swapped order must reach) below its floor; else return the errors."""
    bad = [f"{k}: {errors[k]:.3g} > {t:.3g}" for k, t in tols.items() if not errors[k] <= t]
    bad += [f"{k}: {errors[k]:.3g} < {f:.3g} (swapping a·b for b·a must break the law, else "
            "the check cannot see a swapped composition)"
            for k, f in (floors or {}).items() if not errors[k] >= f]
    if bad:
        raise LawError(f"{what} breaks: " + "; ".join(bad))
    return errors


def is_abelian(group: Group, n: int = 64, generator: torch.Generator | None = None) -> bool:
    a, b = group.sample(n, generator), group.sample(n, generator)
    return bool((group.distance(group.compose(a, b), group.compose(b, a)) <= 1e-5).all())


# --- groups -------------------------------------------------------------------------------------
def check_group(group: Group, n: int = 64, tol: float = 1e-5,
                generator: torch.Generator | None = None) -> dict[str, float]:
    """The group laws on n sampled triples, and those of ``group.matrix`` if it has one."""
    gen = generator or torch.Generator().manual_seed(0)
    a, b, c = (group.sample(n, gen) for _ in range(3))
    e = group.identity(n)
    d = lambda x, y: float(group.distance(x, y).max())  # noqa: E731
    errors = {
        "identity_right": d(group.compose(a, e), a),
        "identity_left": d(group.compose(e, a), a),
        "inverse_right": d(group.compose(a, group.inverse(a)), e),
        "inverse_left": d(group.compose(group.inverse(a), a), e),
        "associativity": d(group.compose(group.compose(a, b), c),
                           group.compose(a, group.compose(b, c))),
        "relative": d(group.compose(group.relative(a, b), a), b),
    }
    tols, floors = dict.fromkeys(errors, tol), {}
    if group.matrix_dim:
        ra, rb, rab = group.matrix(a), group.matrix(b), group.matrix(group.compose(a, b))
        eye = torch.eye(group.matrix_dim).expand(n, -1, -1)
        rinv = group.matrix(group.inverse(a))
        errors.update({
            "matrix_homomorphism": relative_error(ra @ rb, rab),
            "matrix_identity": relative_error(group.matrix(e), eye),
            "matrix_inverse": relative_error(rinv @ ra, eye),
        })
        if group.matrix_kind == "rotation":   # ρ(g) ∈ SO(k): orthogonal, and no reflection
            errors["matrix_transpose_is_inverse"] = relative_error(ra.transpose(-1, -2), rinv)
            det = torch.linalg.det(ra.double()).to(ra.dtype)
            errors["matrix_det_is_one"] = relative_error(det, torch.ones_like(det))
        elif group.matrix_kind == "affine":    # ρ(g) = [[a, b], [0, 1]]
            last = torch.tensor([0.0, 1.0]).to(ra).expand(n, 2)
            errors["matrix_affine_last_row"] = relative_error(ra[:, 1], last)
        tols.update({k: tol for k in errors if k.startswith("matrix_")})
        if not is_abelian(group, n, gen):
            errors["matrix_order_power"] = relative_error(rb @ ra, rab)
            floors["matrix_order_power"] = 10 * tol
    return _finish(f"group {group!r}", errors, tols, floors)


# --- test images -------------------------------------------------------------------------------
def _side(group: Group) -> int:
    return getattr(group, "size", 28 if group.spatial_dims == 2 else 20)


def _test_images(group: Group, n: int, channels: int, gen: torch.Generator) -> Tensor:
    """Smooth blobs the group acts on; in [0.1, 0.9] for contrast (logits stay unclamped)."""
    contrast = isinstance(group, Contrast)
    return smooth_images(n, _side(group), group.spatial_dims, channels, gen,
                         low=0.1 if contrast else 0.0, high=0.9 if contrast else 1.0)


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


def check_image_action(group: Group, x: Tensor | None = None, tol: float | None = None,
                       generator: torch.Generator | None = None,
                       coordinates: bool | None = None) -> dict[str, float]:
    """T_g on images: identity, composition order, inverse, and (rotation groups, or
    ``coordinates=True``) centroid(T_g x) = ρ(g)·centroid(x). ``tol`` defaults to 1e-5 for exact
    groups, :data:`INTERPOLATED_TOL` for resampling ones (SO(2), SO(3), C_n with n ∤ 4) and 1e-4
    for the rest (contrast: float32 logit and sigmoid)."""
    gen = generator or torch.Generator().manual_seed(1)
    if x is None:
        x = _test_images(group, 16, 1, gen)
    n = x.shape[0]
    a, b = group.sample(n, gen), group.sample(n, gen)
    t = lambda y, g: group.act_image(y, g)  # noqa: E731
    once = t(x, group.compose(a, b))
    errors = {
        "identity": relative_error(t(x, group.identity(n)), x),
        "compose": relative_error(t(t(x, b), a), once),
        "inverse": relative_error(t(t(x, a), group.inverse(a)), x),
    }
    base = tol if tol is not None else (1e-5 if group.exact else 1e-4)
    loose = tol is None and isinstance(group, ROTATION_GROUPS) and not group.exact
    pick = lambda k: INTERPOLATED_TOL[k] if loose else base  # noqa: E731
    tols = {"identity": base, "compose": pick("compose"), "inverse": pick("inverse")}
    if coordinates is None:
        coordinates = isinstance(group, ROTATION_GROUPS)
    if coordinates:
        rho = group.matrix(a).to(x)
        moved = torch.einsum("bij,bcj->bci", rho, centroids(x))
        errors["centroid_follows_matrix"] = relative_error(centroids(t(x, a)), moved)
        tols["centroid_follows_matrix"] = pick("centroid")
    floors = {}
    if not is_abelian(group, 64, gen):
        errors["compose_order_power"] = relative_error(t(t(x, a), b), once)
        floors["compose_order_power"] = 3 * tols["compose"]
    return _finish(f"image action of {group!r}", errors, tols, floors)


# --- latent actions ----------------------------------------------------------------------------
@dataclass
class Probe:
    """A fixed map p from images to latents (B, C, *fibre) with p(T_g x) ≈ Φ_g(p(x)), the images
    to apply it to, and the tolerance of that law."""

    fn: Callable[[Tensor], Tensor]
    images: Tensor
    tol: float


def shift_phases(x: Tensor) -> Tensor:
    """(B, C, S, S) → (B, C, 4): the first Fourier coefficient along rows and along columns,
    (Re, Im) each; a cyclic shift by (dy, dx)·unit px turns them by 2π·(dy, dx)/m, which is
    :meth:`CyclicShifts.matrix`."""
    s = x.shape[-1]
    phase = torch.exp(2j * torch.pi * torch.arange(s, device=x.device) / s)
    rows = (x.sum(-1).to(phase.dtype) * phase).sum(-1)
    cols = (x.sum(-2).to(phase.dtype) * phase).sum(-1)
    return torch.stack([rows.real, rows.imag, cols.real, cols.imag], -1).to(x.dtype)


def reference_probe(group: Group, action, generator: torch.Generator | None = None
                    ) -> Probe | None:
    """The probe for a built-in (group, action) pair; None when none is known."""

    gen = generator or torch.Generator().manual_seed(2)
    dims = group.spatial_dims
    side = _side(group)
    contrast = isinstance(group, Contrast)
    x = _test_images(group, 8, 2, gen)
    exact_tol = 1e-5
    loose = INTERPOLATED_TOL["probe"]
    if contrast:
        logit = lambda y: torch.logit(y.clamp(group.eps, 1 - group.eps))  # noqa: E731
        if isinstance(action, MatrixAction):
            return Probe(lambda y: torch.stack([logit(y).flatten(1),
                                                torch.ones_like(y.flatten(1))], -1), x, 1e-4)
        return Probe(logit, x, 1e-4)
    if isinstance(action, SpatialAction):
        unit = getattr(group, "unit", 2)
        pool = F.avg_pool2d if dims == 2 else F.avg_pool3d
        return Probe(lambda y: pool(y, unit), x,
                     exact_tol if group.exact else INTERPOLATED_MAP_TOL["probe"])
    if isinstance(action, MatrixAction) or (isinstance(action, LearnedAction)
                                            and action.init == "fixed"):
        # a learned ρ_θ before training starts as the group's own ρ: the same data-turn probe
        if isinstance(group, CyclicShifts):
            return Probe(shift_phases, x, 1e-4)
        if isinstance(group, ROTATION_GROUPS):
            return Probe(centroids, x, exact_tol if group.exact else INTERPOLATED_TOL["centroid"])
    if isinstance(action, SteerableAction):
        polar = ToPolar(side, 14, 64, side / 2)
        return Probe(lambda y: to_fourier(polar(y), 6), x,
                     1e-4 if group.exact else loose)
    return None


def check_action(group: Group, action, fibre_shape: tuple[int, ...] | None = None,
                 tol: float = 1e-5, n: int = 16, probe: Probe | None = None,
                 generator: torch.Generator | None = None) -> dict[str, float]:
    """A latent action's laws on latents of ``fibre_shape`` (or the probe's latents), and with a
    probe the law Φ_g(p(x)) = p(T_g x). Resampling actions are checked on the probe's smooth
    latents with :data:`INTERPOLATED_MAP_TOL`; exact ones on random latents with ``tol``.

    Raises ConfigError (from the action) when it does not accept this group or fibre shape.
    """
    gen = generator or torch.Generator().manual_seed(3)
    exact = not _interpolates(group, action)
    if probe is not None and not exact:
        z = probe.fn(probe.images)
    elif fibre_shape is not None:
        z = torch.randn(n, 3, *fibre_shape, generator=gen)
    elif probe is not None:
        z = probe.fn(probe.images)
    else:
        raise ValueError("check_action needs a fibre_shape or a probe")
    action.check_fibre(tuple(z.shape[2:]))
    b = z.shape[0]
    a, c = group.sample(b, gen), group.sample(b, gen)
    phi = lambda y, g: action(y, g)  # noqa: E731
    once = phi(z, group.compose(a, c))
    errors = {
        "shape": float(phi(z, a).shape != z.shape),
        "identity": relative_error(phi(z, group.identity(b)), z),
        "homomorphism": relative_error(phi(phi(z, c), a), once),
        "inverse": relative_error(phi(phi(z, a), group.inverse(a)), z),
    }
    comp, inv = (tol, tol) if exact else (INTERPOLATED_MAP_TOL["compose"],
                                          INTERPOLATED_MAP_TOL["inverse"])
    tols = {"shape": 0.0, "identity": tol, "homomorphism": comp, "inverse": inv}
    floors = {}
    if not is_abelian(group, 64, gen):
        errors["homomorphism_order_power"] = relative_error(phi(phi(z, a), c), once)
        floors["homomorphism_order_power"] = 3 * comp
    if probe is not None:
        x = probe.images
        g = group.sample(x.shape[0], gen)
        errors["latent_turn_equals_data_turn"] = relative_error(
            phi(probe.fn(x), g), probe.fn(group.act_image(x, g)))
        tols["latent_turn_equals_data_turn"] = probe.tol
    return _finish(f"{type(action).__name__} of {group!r}", errors, tols, floors)


def _interpolates(group: Group, action) -> bool:
    """Spatial actions of inexact rotation groups resample; matrix, steerable, affine ones and
    the contrast group's pointwise map do not."""
    return (isinstance(action, SpatialAction) and isinstance(group, ROTATION_GROUPS)
            and not group.exact)


def accepted_actions(group: Group) -> dict[str, object]:
    """Every registered action kind that accepts ``group`` (its constructor and the probe's
    fibre shape), built: the pairs the law tests cover."""

    out = {}
    for kind in ACTIONS:
        try:
            action = ACTIONS.entry(kind).factory(group)
            probe = reference_probe(group, action)
            fibre = (1,) if probe is None else tuple(probe.fn(probe.images[:1]).shape[2:])
            action.check_fibre(fibre)
        except ConfigError:
            continue
        out[kind] = action
    return out
