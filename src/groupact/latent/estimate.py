"""Estimate g between two images through the latent: the ĝ with Φ_ĝ(z_v(x1)) ≈ z_v(x2), so that
T_ĝ x1 ≈ x2 (``model.estimate_g``, ``groupact align``).

An equivariant latent answers "by how much is this image turned relative to that one?" with one
encoder pass per image and a search over latent actions. How the search runs is chosen by what
the parts declare, never by their class (as :mod:`groupact.laws` does):

- a finite group (``Group.elements()``: C_n, the cube, shifts): every element, batched over the
  pairs;
- an action with a closed form (``LatentAction.closed_form``): ``"fourier"`` for angular Fourier
  fibres (the steerable SO(2) latent: the cross-correlation over θ by an inverse FFT on a fine
  grid, then Newton steps on that trigonometric polynomial), ``"affine"`` for a·z + b (contrast:
  least squares);
- a continuous group with a coarse grid and local moves (``Group.search_grid``, ``exp_step``:
  SO(2), SO(3)): the grid, on a smaller latent where the action declares one
  (``LatentAction.coarsen``), then the best two separate basins refined by a shrinking stencil of
  moves in exponential coordinates, with a Newton step on a quadratic fitted to each stencil.

The **score** of an estimate is the relative residual on the variant channels,
‖Φ_ĝ(z_v(x1)) − z_v(x2)‖² / ‖z_v(x2)‖² (the protocol's equivariance error, per pair): near the
model's own equivariance error when ĝ is right, large when it is a guess. The **runner-up** is the
best element of another basin (the second-best element of a finite group; for a continuous one
the best element found at least ``separation`` from ĝ: a peak of the Fourier correlation, or the
other refined basin, or where that slid into ĝ's the best grid element that far), and a pair is
**ambiguous** when the runner-up scores within :data:`AMBIGUITY_RATIO` of ĝ: the data's own
symmetry (a 0 turned by 180°) then leaves g undetermined, and the estimate says so instead of
guessing silently. (Two identical images are the exception: ĝ = identity scores exactly 0, so
nothing is within a ratio of it, though a symmetric image's half turn fits as well.)

The same searches run on pixels (:func:`estimate_in_images`): the image-space baseline, and the
accuracy anchor of ``benchmarks/estimate_g.py``. :func:`refine_in_images` polishes a latent
estimate with the local part of that search (``model.estimate_g(polish=True)``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from groupact.errors import GroupactError
from groupact.groups import Group

#: a pair is ambiguous when its runner-up's score is at most this many times ĝ's
AMBIGUITY_RATIO = 1.5
#: how far (radians) the runner-up of a continuous group lies from ĝ at least: another basin
SEPARATION = math.radians(45.0)
#: the refinement of a continuous search stops below this step (radians); the last Newton step
#: goes further where the residual is smooth
REFINE_TOL = math.radians(0.25)
#: refinement steps above this (radians) move on the coarsened pairs (``coarsen``)
COARSE_STEP = math.radians(4.0)
#: the fine grid of the Fourier cross-correlation (0.25° steps), refined by Newton steps
FOURIER_GRID = 1440
#: numbers held at once by one chunk of candidate latents (bounds memory, not the batch)
CHUNK_NUMBERS = 1 << 23
#: a > 0 in the contrast group: the least-squares slope is held at least this large
MIN_SLOPE = 1e-6

#: act(latents or images (N, …), elements (N, …)) → moved (N, …)
Act = Callable[[Tensor, Tensor], Tensor]


@dataclass
class Estimate:
    """Estimated elements for a batch of pairs (x1, x2), with how far to trust each.

    ``g`` and ``runner_up`` are in the group's own element format (an index for C_n and the cube,
    radians for SO(2), 3×3 matrices for SO(3), (dy, dx) for shifts, (a, b) for contrast), so
    ``group.act_image(x1, est.g) ≈ x2``. Scores are relative residuals (0 = exact);
    ``runner_up_score`` is inf where no other basin was found (the contrast fit has one).
    """

    g: Tensor
    score: Tensor
    runner_up: Tensor
    runner_up_score: Tensor
    ambiguous: Tensor
    #: how it was found: "exhaustive", "fourier", "least-squares" or "grid+refine"
    method: str


def estimate_latent(action, z1: Tensor, z2: Tensor, mask: Tensor, *,
                    separation: float = SEPARATION, grid_size: int | None = None,
                    refine_tol: float = REFINE_TOL) -> Estimate:
    """ĝ for each pair of latents (B, C, *fibre): the element whose action moves the variant
    channels of z1 (``mask`` (C,) 0/1, 1 = variant) onto those of z2; a grid search refines
    down to steps of ``refine_tol`` radians."""
    _check_pair(z1, z2, "latents")
    keep = mask.detach().round().bool().to(z1.device)
    if keep.dim() != 1 or keep.numel() != z1.shape[1]:
        raise GroupactError(f"the mask has {keep.numel()} channels but the latents have "
                            f"{z1.shape[1]}")
    if not bool(keep.any()):
        raise GroupactError("the mask keeps no channel variant, so z_v carries nothing of g "
                            "and it cannot be estimated through the latent")
    a, b = z1[:, keep].detach(), z2[:, keep].detach()
    group = action.group
    elements = group.elements(a.device)
    if elements is not None:
        return _exhaustive(action, a, b, elements)
    if action.closed_form == "fourier":
        return _fourier(a, b, separation)
    if action.closed_form == "affine":
        return _affine(a, b)
    return _grid_refine(action, a, b, group, separation, grid_size, action.coarsen, refine_tol)


def estimate_in_images(group: Group, x1: Tensor, x2: Tensor, *, separation: float = SEPARATION,
                       grid_size: int | None = None) -> Estimate:
    """ĝ for each pair of images by the same search on pixels: T_g x1 against x2 for every
    element of a finite group, or the coarse grid refined locally (the image-space baseline)."""
    _check_pair(x1, x2, "images")
    group.check_input(x1)
    elements = group.elements(x1.device)
    if elements is not None:
        return _exhaustive(group.act_image, x1, x2, elements)
    return _grid_refine(group.act_image, x1, x2, group, separation, grid_size,
                        lambda x: _pooled(group, x))


#: the image-space polish of a latent estimate starts its stencil this far (radians); the latent
#: search before it stops at steps of POLISH_LATENT_TOL, since the pixels finish the job. On the
#: brain volumes (benchmarks/estimate_g.py) 2° and 6° were as accurate as 0.25° and 8° (largest
#: error 0.002°) at two thirds of the time; a 4° stencil left one held-out pair 0.8° off
POLISH_RADIUS = math.radians(6.0)
POLISH_LATENT_TOL = math.radians(2.0)


def refine_in_images(group: Group, x1: Tensor, x2: Tensor, found: Estimate, *,
                     radius: float = POLISH_RADIUS) -> Estimate:
    """A latent estimate polished on the pixels: the local search of :func:`estimate_in_images`
    started at ``found.g``, so the latent supplies the basin, the global and expensive part that a
    local image registration lacks, and the pixels the last fraction of a degree that the latent's
    own equivariance error limits. Scores become the images' relative residuals
    ‖T_ĝ x1 − x2‖² / ‖x2‖², ambiguity judged on them; the runner-up is polished too where the
    latent found the pair ambiguous (it may then win), else only scored on the pixels where it
    stands. Finite groups and closed forms without a local search (contrast) are returned as
    found."""
    _check_pair(x1, x2, "images")
    group.check_input(x1)
    if group.elements(x1.device) is not None or not group.tangent_dim:
        return found
    close = found.ambiguous.nonzero().flatten()
    # every level on the full images: pooled ones do not commute with a turn closely enough for
    # a local search (on 16³ smooth volumes a pooled minimum lay 22° from the truth)
    full = (torch.cat([x1, x1[close]]), torch.cat([x2, x2[close]]))
    starts = torch.cat([found.g, found.runner_up[close]]).to(x1.dtype)
    g, s = _refine(group.act_image, full, full, group, starts, radius)
    batch = x1.shape[0]
    first, s1 = g[:batch], s[:batch]
    second = found.runner_up.to(x1.dtype).clone()
    s2 = _scores(group.act_image, x1, x2, second)[:, 0]
    second[close], s2[close] = g[batch:], s[batch:]
    # a runner-up that slid into ĝ's basin, or none to begin with (inf), is not a second answer
    s2 = torch.where((group.distance(first, second) >= SEPARATION)
                     & torch.isfinite(found.runner_up_score), s2, math.inf)
    swap = s2 < s1
    return _finish(_where(swap, second, first), torch.where(swap, s2, s1),
                   _where(swap, first, second), torch.where(swap, s1, s2),
                   found.method + "+image polish")


# --- the searches -------------------------------------------------------------------------------
def _exhaustive(act: Act, a: Tensor, b: Tensor, elements: Tensor) -> Estimate:
    """Every element of a finite group on every pair: |G| actions, batched over the pairs."""
    n, batch = len(elements), a.shape[0]
    scores = _scores(act, a, b, _tile(elements, batch))
    order = scores.argsort(1)
    best = order[:, 0]
    second = order[:, 1] if n > 1 else best
    s1 = scores.gather(1, best[:, None])[:, 0]
    s2 = scores.gather(1, second[:, None])[:, 0] if n > 1 else torch.full_like(s1, math.inf)
    return _finish(elements[best], s1, elements[second], s2, "exhaustive")


def _fourier(a: Tensor, b: Tensor, separation: float) -> Estimate:
    """SO(2) on angular Fourier fibres [c₀, Re c₁, Im c₁, …] (B, C, …, 2K + 1), turned by c_k ↦
    e^{ikθ}c_k. ⟨ρ(θ)z1, z2⟩ = A + Re Σ_k S_k e^{ikθ} with S_k = Σ c_k(z1)·conj(c_k(z2)): a
    trigonometric polynomial of degree K, sampled by one inverse FFT, its two best separate peaks
    refined by Newton steps with exact derivatives. ρ is orthogonal, so the residual is
    ‖z1‖² + ‖z2‖² − 2⟨ρ(θ)z1, z2⟩, exactly."""
    u, v = a.double(), b.double()
    k = (u.shape[-1] - 1) // 2
    c1, c2 = _complex_coefficients(u, k), _complex_coefficients(v, k)
    spectrum = (c1 * c2.conj()).flatten(1, -2).sum(1)                      # (B, K)
    base = (u[..., 0] * v[..., 0]).flatten(1).sum(1)
    padded = torch.zeros(u.shape[0], FOURIER_GRID // 2 + 1, dtype=spectrum.dtype,
                         device=u.device)
    padded[:, 1:k + 1] = spectrum
    corr = torch.fft.irfft(padded, n=FOURIER_GRID) * (FOURIER_GRID / 2)   # Re Σ S_k e^{ikθ_j}
    peak = (corr >= corr.roll(1, 1)) & (corr >= corr.roll(-1, 1))
    best = corr.argmax(1)
    spacing = 2 * math.pi / FOURIER_GRID
    steps = torch.arange(FOURIER_GRID, device=u.device)
    gap = (steps[None] - best[:, None]).remainder(FOURIER_GRID)
    far = torch.minimum(gap, FOURIER_GRID - gap) * spacing >= separation
    rival = peak & far
    other = corr.masked_fill(~rival, -math.inf).argmax(1)
    theta = torch.stack([best, other], 1).to(u.dtype) * spacing            # (B, 2)
    freq = torch.arange(1, k + 1, dtype=u.dtype, device=u.device)
    for _ in range(4):                   # Newton on the polynomial: quadratic convergence
        turn = torch.polar(torch.ones_like(theta)[..., None], theta[..., None] * freq)
        terms = spectrum[:, None] * turn                                   # (B, 2, K)
        slope = (terms * (1j * freq)).real.sum(-1)
        curve = (terms * -(freq * freq)).real.sum(-1)
        move = torch.where(curve < 0, -slope / curve.clamp(max=-1e-300), 0.0)
        theta = theta + move.clamp(-spacing, spacing)
    turn = torch.polar(torch.ones_like(theta)[..., None], theta[..., None] * freq)
    value = (spectrum[:, None] * turn).real.sum(-1) + base[:, None]
    energy = v.pow(2).flatten(1).sum(1).clamp_min(1e-30)
    total = (u.pow(2).flatten(1).sum(1) + energy)[:, None]
    scores = ((total - 2 * value) / energy[:, None]).clamp_min(0).to(a.dtype)
    scores[:, 1] = torch.where(rival.any(1), scores[:, 1], math.inf)
    theta = theta.remainder(2 * math.pi).to(a.dtype)
    return _finish(theta[:, 0], scores[:, 0], theta[:, 1], scores[:, 1], "fourier")


def _complex_coefficients(z: Tensor, k: int) -> Tensor:
    """(…, 2K + 1) fibres → (…, K) complex c_k = Re c_k + i Im c_k, k = 1..K."""
    pairs = z[..., 1:].reshape(*z.shape[:-1], k, 2)
    return torch.complex(pairs[..., 0], pairs[..., 1])


def _affine(a: Tensor, b: Tensor) -> Estimate:
    """Contrast (a·z + b on every variant entry): the least-squares line through the pairs of
    entries (z1, z2), its slope held positive (the group's a > 0). A unique optimum, so no
    runner-up; z1 constant on the variant channels leaves a undetermined (ambiguous)."""
    u, v = a.flatten(1).double(), b.flatten(1).double()
    mu, mv = u.mean(1, keepdim=True), v.mean(1, keepdim=True)
    var = (u - mu).pow(2).mean(1)
    slope = ((u - mu) * (v - mv)).mean(1) / var.clamp_min(1e-300)
    slope = slope.clamp_min(MIN_SLOPE)
    offset = mv[:, 0] - slope * mu[:, 0]
    fitted = slope[:, None] * u + offset[:, None]
    score = ((fitted - v).pow(2).sum(1) / v.pow(2).sum(1).clamp_min(1e-30)).to(a.dtype)
    g = torch.stack([slope, offset], 1).to(a.dtype)
    flat = var <= 1e-12 * u.pow(2).mean(1) + 1e-30
    return _finish(g, score, g, torch.where(flat, score, math.inf), "least-squares")


def _grid_refine(act: Act, a: Tensor, b: Tensor, group: Group, separation: float,
                 grid_size: int | None, coarsen: Callable[[Tensor], Tensor],
                 tol: float = REFINE_TOL) -> Estimate:
    """A continuous group: its coarse grid on the coarsened pairs, then the best element and the
    best one at least ``separation`` from it each refined, and the better of the two kept."""
    found = group.search_grid(grid_size, a.device)
    if found is None or not group.tangent_dim:
        raise GroupactError(f"group '{group.name}' is continuous and declares no search grid "
                            "(search_grid, tangent_dim, exp_step), so g cannot be estimated")
    grid, radius = found
    batch, n = a.shape[0], len(grid)
    ca, cb = coarsen(a), coarsen(b)
    coarse = _scores(act, ca, cb, _tile(grid, batch))                      # (B, n)
    best = coarse.argmin(1)
    far = group.distance(_tile(grid, batch), grid[best].repeat_interleave(n, 0))
    far = far.view(batch, n) >= separation
    other = coarse.masked_fill(~far, math.inf).argmin(1)
    starts = torch.cat([grid[best], grid[other]])                          # (2B, …)
    twice = lambda t: torch.cat([t, t])  # noqa: E731
    g, s = _refine(act, (twice(ca), twice(cb)), (twice(a), twice(b)), group, starts, radius, tol)
    g, s = g.view(2, batch, *g.shape[1:]), s.view(2, batch)
    # the runner-up: the other refined optimum when it lies at least `separation` from ĝ, else
    # (it slid into ĝ's basin) the best grid element that far from ĝ, scored on the full pair
    swap = s[1] < s[0]
    first, second = _where(swap, g[1], g[0]), _where(swap, g[0], g[1])
    s1, s2 = torch.minimum(s[0], s[1]), torch.maximum(s[0], s[1])
    merged = group.distance(first, second) < separation
    away = group.distance(_tile(grid, batch), first.repeat_interleave(n, 0))
    away = away.view(batch, n) >= separation
    fallback = grid[coarse.masked_fill(~away, math.inf).argmin(1)]
    second = _where(merged, fallback, second)
    s2 = torch.where(merged, _scores(act, a, b, fallback)[:, 0], s2)
    s2 = torch.where(merged & ~away.any(1), math.inf, s2)
    return _finish(first, s1, second, s2, "grid+refine")


def _refine(act: Act, coarse: tuple[Tensor, Tensor], full: tuple[Tensor, Tensor], group: Group,
            g: Tensor, radius: float, tol: float = REFINE_TOL) -> tuple[Tensor, Tensor]:
    """Local search from one start per pair (``g`` (M, …), pairs (M, …)): at each level a stencil
    of moves exp(step·u)·g (u ∈ {−1, 0, 1}^d with at most two nonzero coordinates: 19 moves in
    3D, enough to fit a full quadratic) and a Newton step on the quadratic fitted to it, the best
    of those kept, the step halved from ``radius`` to ``tol``. Steps above
    :data:`COARSE_STEP` move on the coarsened pairs, the rest on the full ones; the centre is in
    every stencil, so the score never rises within either."""
    d = group.tangent_dim
    stencil = torch.tensor([u for u in itertools.product((-1.0, 0.0, 1.0), repeat=d)
                            if sum(map(abs, u)) <= 2], device=g.device)
    fit = torch.linalg.pinv(_quadratic_terms(stencil))                     # (P, S)
    m, size = len(g), len(stencil)
    steps = [radius / 2 ** i for i in range(max(1, math.ceil(math.log2(radius / tol))))]
    score = torch.full((m,), math.inf, device=g.device)
    for step in steps:
        a, b = coarse if step > COARSE_STEP and step != steps[-1] else full
        cand = group.exp_step(g.repeat_interleave(size, 0), (step * stencil).repeat(m, 1))
        s = _scores(act, a, b, cand)                                       # (M, S)
        newton = group.exp_step(g, step * _newton_move(s @ fit.T, d))
        s_newton = _scores(act, a, b, newton)[:, 0]
        s_best, j = s.min(1)
        on_stencil = cand.view(m, size, *cand.shape[1:])[torch.arange(m, device=g.device), j]
        g = _where(s_newton < s_best, newton, on_stencil)
        score = torch.minimum(s_newton, s_best)
    return g, score


def _quadratic_terms(u: Tensor) -> Tensor:
    """(S, d) points → (S, P) monomials 1, u_i, u_i·u_j (i ≤ j) of a full quadratic."""
    d = u.shape[1]
    cols = [torch.ones_like(u[:, 0])] + [u[:, i] for i in range(d)]
    cols += [u[:, i] * u[:, j] for i in range(d) for j in range(i, d)]
    return torch.stack(cols, 1)


def _newton_move(coef: Tensor, d: int) -> Tensor:
    """The minimiser u (M, d) of each fitted quadratic, in stencil units, clipped to the stencil's
    box; 0 where the fit is not convex (no minimum to step to)."""
    grad = coef[:, 1:1 + d]
    hess = torch.zeros(len(coef), d, d, dtype=coef.dtype, device=coef.device)
    k = 1 + d
    for i in range(d):
        for j in range(i, d):
            hess[:, i, j] = hess[:, j, i] = coef[:, k] * (2.0 if i == j else 1.0)
            k += 1
    chol, info = torch.linalg.cholesky_ex(hess)
    convex = info == 0
    safe = torch.where(convex[:, None, None], chol, torch.eye(d, device=coef.device))
    move = -torch.cholesky_solve(grad[..., None], safe)[..., 0]
    return torch.where(convex[:, None], move, 0.0).clamp(-1.0, 1.0)


# --- pieces -------------------------------------------------------------------------------------
def _scores(act: Act, a: Tensor, b: Tensor, g: Tensor) -> Tensor:
    """(P, n) relative residuals ‖act(a_p, g_pj) − b_p‖² / ‖b_p‖² of n candidates per pair, the
    candidates ``g`` (P·n, …) pair-major; in chunks of about :data:`CHUNK_NUMBERS` numbers (a
    loop over chunks of candidates, never over samples), with b broadcast, not copied."""
    pairs = a.shape[0]
    n = len(g) // pairs
    size = a[0].numel()
    g = g.view(pairs, n, *g.shape[1:])
    per = max(1, CHUNK_NUMBERS // max(1, size))            # candidates per chunk
    items, block = (max(1, per // n), n) if per >= n else (1, per)
    out = torch.empty(pairs, n, dtype=a.dtype, device=a.device)
    for i in range(0, pairs, items):
        k = min(items, pairs - i)
        for j in range(0, n, block):
            c = min(block, n - j)
            moved = act(a[i:i + k].repeat_interleave(c, 0), g[i:i + k, j:j + c].flatten(0, 1))
            diff = moved.reshape(k, c, size) - b[i:i + k].reshape(k, 1, size)
            out[i:i + k, j:j + c] = diff.pow_(2).sum(-1)
    return out / _energy(b)[:, None]


def _energy(b: Tensor) -> Tensor:
    """‖b‖² per pair: the normaliser of the scores (a zero target never divides by 0)."""
    return b.pow(2).flatten(1).sum(1).clamp_min(1e-30)


def _tile(elements: Tensor, batch: int) -> Tensor:
    """(n, …) elements repeated for each of ``batch`` pairs: (batch·n, …), pair-major."""
    return elements.repeat(batch, *([1] * (elements.dim() - 1)))


def _where(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """a where mask, else b, for element tensors of any trailing shape."""
    return torch.where(mask.view(-1, *([1] * (a.dim() - 1))), a, b)


def _pooled(group: Group, x: Tensor) -> Tensor:
    """Images halved by the group's own pooling (``map_features``, on which the group acts as on
    the images) when their sides allow, for the coarse stage of the image-space search."""
    return group.map_features(x) if min(x.shape[2:]) >= 16 else x


def _finish(g: Tensor, score: Tensor, runner_up: Tensor, runner_up_score: Tensor,
            method: str) -> Estimate:
    ambiguous = runner_up_score <= AMBIGUITY_RATIO * score
    return Estimate(g, score, runner_up, runner_up_score, ambiguous, method)


def _check_pair(x1: Tensor, x2: Tensor, what: str) -> None:
    if x1.shape != x2.shape:
        raise GroupactError(f"the two {what} differ in shape: {tuple(x1.shape)} and "
                            f"{tuple(x2.shape)}; give pairs of the same size")
    if x1.dim() < 3 or x1.shape[0] == 0:
        raise GroupactError(f"give a batch of {what} (B, C, …) with B ≥ 1; got shape "
                            f"{tuple(x1.shape)}")
