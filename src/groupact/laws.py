"""Law checks for groups and latent actions, with stated tolerances (in the spirit of escnn's
``check_equivariance``): run them on your own group or action before training on it.

- :func:`check_group`: identity, inverse, associativity, the relative element, and for a matrix
  representation ρ(a)ρ(b) = ρ(a·b), ρ(e) = 1, ρ(g⁻¹)ρ(g) = 1, ρ(g)ᵀ = ρ(g⁻¹) when orthogonal.
- :func:`check_image_action`: T_e x = x, T_a(T_b x) = T_{a·b} x (``compose(a, b)`` acts with b
  first, see :mod:`groupact.groups.base`), T_{g⁻¹}T_g x = x, and for a group with a matrix
  representation that ρ(g) moves what T_g moves: f(T_g x) = ρ(g)·f(x) for the group's
  ``matrix_features`` f — for turns, centroid(T_g x) = ρ(g)·centroid(x) in centred index
  coordinates (h, w) or (d, h, w), the library's one convention.
- :func:`check_action`: a latent action's identity, Φ_a Φ_b = Φ_{a·b}, inverse, and — through a
  *probe* p, a fixed map from images to latents that commutes with the group — that the latent
  turns like the data: Φ_g(p(x)) = p(T_g x).
- :func:`check_all`: every law above that applies to a group and each registered action that
  accepts it, with the actions' own probes.

Which laws apply, how to probe them and how exactly they hold is *declared* by the parts, never
decided here: a group declares ``interpolates``, ``turns_coordinates`` (or its own
``matrix_features``), ``map_features``, ``testing_elements`` and ``testing_images``
(:class:`groupact.groups.Group`); an action declares ``resamples`` and ``reference_probe()``
(:class:`groupact.latent.LatentAction`). A part that declares nothing a law needs fails that law
with a :class:`LawError` saying what to declare, instead of dropping out of the checks.

For non-abelian groups each order law is also checked to have power: swapping the order must
break it by several times the tolerance, else the check could not see a swapped composition.

Errors are relative: ‖a − b‖ / ‖b‖ over the batch (the identity laws of group elements use the
group's own ``distance``). Each check returns {law: measured error} and raises :class:`LawError`
naming every law above its tolerance.
"""

from __future__ import annotations

import torch
from torch import Tensor

from groupact.errors import ConfigError
from groupact.groups import Group
from groupact.groups.base import centroids, smooth_images
from groupact.latent import ACTIONS, LatentAction, Probe

__all__ = ["INTERPOLATED_MAP_TOL", "INTERPOLATED_TOL", "PRECISION_TOL", "LawError", "Probe",
           "accepted_actions", "centroids", "check_action", "check_all", "check_group",
           "check_image_action", "is_abelian", "reference_probe", "relative_error",
           "smooth_images"]

#: relative errors accepted for interpolated (bilinear/trilinear) image actions on the smooth test
#: images of :func:`smooth_images` (28² / 20³; measured: SO(2) 0.008 / 0.014 / 0.005, SO(3) 0.024 /
#: 0.040 / 0.013 for compose / inverse / centroid), and for matrix or steerable latents read from
#: such images (probe: 0.008 centroids, 0.007 polar Fourier under SO(2)). Exact actions get 1e-5.
INTERPOLATED_TOL = {"compose": 0.05, "inverse": 0.08, "centroid": 0.03, "probe": 0.03}
#: the same for spatial actions that resample the *pooled* maps (14² / 10³: coarser, so worse;
#: measured SO(2) 0.032 / 0.047 / 0.019, SO(3) 0.077 / 0.135 / 0.058). A swapped order or a
#: mirrored turn errs by 0.8–1.4 on the same data, so these bounds still catch both.
INTERPOLATED_MAP_TOL = {"compose": 0.15, "inverse": 0.25, "probe": 0.12}
#: the tolerance of a probe's law by the precision it declares (:class:`Probe`): rounding error,
#: float arithmetic (logits, Fourier sums), interpolated images, interpolated latent maps
PRECISION_TOL = {"exact": 1e-5, "float": 1e-4, "interpolated": INTERPOLATED_TOL["probe"],
                 "interpolated-map": INTERPOLATED_MAP_TOL["probe"]}


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
    """Whether n testing pairs commute (then no order law can have power)."""
    a, b = group.testing_elements(n, generator), group.testing_elements(n, generator)
    return bool((group.distance(group.compose(a, b), group.compose(b, a)) <= 1e-5).all())


# --- groups -------------------------------------------------------------------------------------
def check_group(group: Group, n: int = 64, tol: float = 1e-5,
                generator: torch.Generator | None = None) -> dict[str, float]:
    """The group laws on n sampled triples, and those of ``group.matrix`` if it has one."""
    gen = generator or torch.Generator().manual_seed(0)
    a, b, c = (group.testing_elements(n, gen) for _ in range(3))
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


# --- images ------------------------------------------------------------------------------------
def _declared(what: str, fn, *args):
    """fn(*args), with an undeclared probe (NotImplementedError) turned into a LawError."""
    try:
        return fn(*args)
    except NotImplementedError as e:
        raise LawError(f"{what} cannot be checked: {e}") from None


def check_image_action(group: Group, x: Tensor | None = None, tol: float | None = None,
                       generator: torch.Generator | None = None) -> dict[str, float]:
    """T_g on images: identity, composition order, inverse, and for a group with a matrix
    representation f(T_g x) = ρ(g)·f(x) for its declared ``matrix_features`` f (centroids for
    turns: ``centroid_follows_matrix``). ``tol`` defaults to 1e-5 for exact groups,
    :data:`INTERPOLATED_TOL` for resampling ones (SO(2), SO(3), C_n with n ∤ 4) and 1e-4 for the
    rest (contrast: float32 logit and sigmoid). A group with a matrix that declares no
    features fails with a LawError."""
    gen = generator or torch.Generator().manual_seed(1)
    if x is None:
        x = group.testing_images(16, 1, gen)
    n = x.shape[0]
    a, b = group.testing_elements(n, gen), group.testing_elements(n, gen)
    t = lambda y, g: group.act_image(y, g)  # noqa: E731
    once = t(x, group.compose(a, b))
    errors = {
        "identity": relative_error(t(x, group.identity(n)), x),
        "compose": relative_error(t(t(x, b), a), once),
        "inverse": relative_error(t(t(x, a), group.inverse(a)), x),
    }
    base = tol if tol is not None else (1e-5 if group.exact else 1e-4)
    loose = tol is None and group.interpolates
    pick = lambda k: INTERPOLATED_TOL[k] if loose else base  # noqa: E731
    tols = {"identity": base, "compose": pick("compose"), "inverse": pick("inverse")}
    if group.matrix_dim:
        law = "centroid_follows_matrix" if group.turns_coordinates else "features_follow_matrix"
        f = lambda y: _declared(f"{law} of {group!r}", group.matrix_features, y)  # noqa: E731
        rho = group.matrix(a).to(x)
        moved = torch.einsum("bij,bcj->bci", rho, f(x))
        errors[law] = relative_error(f(t(x, a)), moved)
        tols[law] = pick("centroid")
    floors = {}
    if not is_abelian(group, 64, gen):
        errors["compose_order_power"] = relative_error(t(t(x, a), b), once)
        floors["compose_order_power"] = 3 * tols["compose"]
    return _finish(f"image action of {group!r}", errors, tols, floors)


# --- latent actions ----------------------------------------------------------------------------
def reference_probe(group: Group, action: LatentAction,
                    generator: torch.Generator | None = None) -> Probe:
    """The probe ``action`` declares for ``group`` (:meth:`LatentAction.reference_probe`) with
    its tolerance resolved; a LawError when it declares none. ConfigError (from the action) when
    it does not accept the group."""
    gen = generator or torch.Generator().manual_seed(2)
    probe = _declared(f"{type(action).__name__} of {group!r}", action.reference_probe, gen)
    if probe is None:
        raise LawError(f"{type(action).__name__} of {group!r} declares no reference_probe(): "
                       "say how its latent moves with the data (a fixed map from images to "
                       "latents), or raise ConfigError for groups it does not accept")
    _declared(f"the probe of {type(action).__name__} on {group!r}", probe.fn, probe.images[:1])
    if probe.tol is None:
        if probe.precision not in PRECISION_TOL:
            raise LawError(f"{type(action).__name__}'s probe declares precision "
                           f"{probe.precision!r}; choose one of {sorted(PRECISION_TOL)}")
        probe = Probe(probe.fn, probe.images, PRECISION_TOL[probe.precision], probe.precision)
    return probe


def probe_fibre(probe: Probe) -> tuple[int, ...]:
    """The fibre shape of the probe's latents."""
    return tuple(probe.fn(probe.images[:1]).shape[2:])


def check_action(group: Group, action, fibre_shape: tuple[int, ...] | None = None,
                 tol: float = 1e-5, n: int = 16, probe: Probe | None = None,
                 generator: torch.Generator | None = None) -> dict[str, float]:
    """A latent action's laws on latents of ``fibre_shape`` (or the probe's latents), and with a
    probe the law Φ_g(p(x)) = p(T_g x). Resampling actions are checked on the probe's smooth
    latents with :data:`INTERPOLATED_MAP_TOL`; exact ones on random latents with ``tol``.

    Raises ConfigError (from the action) when it does not accept this group or fibre shape.
    """
    gen = generator or torch.Generator().manual_seed(3)
    exact = not action.resamples
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
    a, c = group.testing_elements(b, gen), group.testing_elements(b, gen)
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
        g = group.testing_elements(x.shape[0], gen)
        errors["latent_turn_equals_data_turn"] = relative_error(
            phi(probe.fn(x), g), probe.fn(group.act_image(x, g)))
        tols["latent_turn_equals_data_turn"] = (probe.tol if probe.tol is not None
                                                else PRECISION_TOL[probe.precision])
    return _finish(f"{type(action).__name__} of {group!r}", errors, tols, floors)


def accepted_actions(group: Group) -> dict[str, LatentAction]:
    """Every registered action kind that accepts ``group``, built: the pairs the law checks
    cover. An action refuses a group with a ConfigError (from its constructor, its probe or
    ``check_fibre`` on the probe's fibre); one that declares no probe raises a LawError."""
    out = {}
    for kind in ACTIONS:
        try:
            action = ACTIONS.entry(kind).factory(group)
            action.check_fibre(probe_fibre(reference_probe(group, action)))
        except ConfigError:
            continue
        out[kind] = action
    return out


def check_all(group: Group) -> dict[str, dict[str, float]]:
    """Every law that applies to ``group`` by what it and the registered actions declare: the
    group laws, the image action's, and each accepting action's with its own probe
    ({"group": …, "image_action": …, "action:KIND": …}); raises the first LawError."""
    out = {"group": check_group(group), "image_action": check_image_action(group)}
    for kind, action in accepted_actions(group).items():
        probe = reference_probe(group, action)
        out[f"action:{kind}"] = check_action(group, action, probe_fibre(probe), probe=probe)
    return out
