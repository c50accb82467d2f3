"""A learned latent action ρ_θ(g) on k-vector fibres: the paper's "group transformation mappings"
learned jointly with the encoder, as the Homomorphism Autoencoder learns ρ (Keurti et al.).

Three forms, one per kind of group, each chosen so that what can be exact by construction is:

- **finite groups** (C_n, the cube, cyclic shifts): one matrix per element, looked up by index,
  ρ(g_i) = B_i · exp(S_i − S_iᵀ) — orthogonal for any S_i (``orthogonal=True``; the Gram matrix
  of the fibres is then an exact invariant), or B_i + S_i (``orthogonal=False``). Being a
  representation (ρ(a)ρ(b) = ρ(ab)) is learned, through the homomorphism term (``loss.hom``).
- **SO(2)**: ρ(θ) = ⊕_j R(ω_j θ) with learned frequencies ω_j (a trivial 1×1 block when k is odd).
  Any orthogonal one-parameter representation is this up to a change of basis, which the encoder
  can absorb; it is a homomorphism on the real line for every ω, and on the circle exactly when
  every ω_j is an integer, so the frequencies it settles on say what it learned (ω = 1: the
  fixed matrix action; ω = 0: an invariant block).
- **SO(3)**: ρ(R) = exp(Σ_j t_j A_j) with t = the rotation vector of R and three learned
  antisymmetric generators A_j: a representation exactly when the A_j obey so(3)'s brackets
  [A_x, A_y] = A_z (and cyclic), which the homomorphism term teaches.

``init="fixed"`` starts at copies of the group's own matrix representation (plus trivial blocks to
fill k): then the learned action *is* the fixed one until it trains (tested exactly).
``init="random"`` starts elsewhere: random rotations (Haar on SO(k); exp of an antisymmetric
matrix keeps the determinant, so a reflection could never turn into a rotation), frequencies in
U(0.5, 2.5), generators with N(0, 1) entries.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from groupact.errors import ConfigError
from groupact.groups import SO2, SO3, Group
from groupact.groups.rotations3d import matrix_to_axis_angle
from groupact.latent.actions import ACTIONS, LatentAction, Probe, matrix_probe


def _skew(s: Tensor) -> Tensor:
    return s - s.transpose(-1, -2)


def _blocks(group: Group, k: int) -> Tensor:
    """(|G|, k, k): copies of the group's own matrix representation down the diagonal, then 1s."""
    elements = group.elements()
    rho = group.matrix(elements).to(torch.float32)
    m = rho.shape[-1]
    out = torch.eye(k).repeat(len(elements), 1, 1)
    for start in range(0, k - m + 1, m):
        out[:, start:start + m, start:start + m] = rho
    return out


def _so3_generators() -> Tensor:
    """L_d, L_h, L_w: exp(Σ t_j L_j) = the rotation with rotation vector t, in the group's
    convention (axis_angle_to_matrix: right-handed in (d, h, w))."""
    gens = torch.zeros(3, 3, 3)
    for j, (a, b) in enumerate(((2, 1), (0, 2), (1, 0))):
        gens[j, a, b], gens[j, b, a] = 1.0, -1.0
    return gens


class LearnedAction(LatentAction):
    """ρ_θ(g) on (B, C, k) latents; its parameters are made when the fibre size is known."""

    def __init__(self, group: Group, init: str = "fixed", orthogonal: bool = True):
        super().__init__(group)
        if init not in ("random", "fixed"):
            raise ConfigError(f"model.action.init is 'random' or 'fixed'; got {init!r}")
        self.init, self.orthogonal = init, bool(orthogonal)
        self.k: int | None = None
        if isinstance(group, SO2):
            self.form = "so2"
        elif isinstance(group, SO3):
            self.form = "so3"
        elif group.elements() is not None and group.matrix_kind == "rotation":
            self.form = "finite"
        else:
            raise ConfigError(f"action.kind=learned needs a finite rotation group, SO(2) or "
                              f"SO(3); '{group.name}' is none of these"
                              + ("; use action.kind=affine" if group.matrix_kind == "affine"
                                 else ""))
        if self.form != "finite" and not self.orthogonal:
            raise ConfigError(f"model.action.orthogonal=false applies to finite groups; the "
                              f"{group.name} form is orthogonal by construction")

    def reference_probe(self, generator: torch.Generator | None = None) -> Probe:
        """Before training, ``init="fixed"`` is the group's own ρ: the matrix action's probe.
        A random start is no representation until trained, so no law applies to it."""
        if self.init != "fixed":
            raise ConfigError("a learned action with model.action.init=random is a "
                              "representation only once trained; check init=fixed")
        return matrix_probe(self.group, generator)

    # --- parameters, once k is known --------------------------------------------------------
    def check_fibre(self, fibre: tuple[int, ...]) -> None:
        if len(fibre) != 1:
            raise ConfigError(f"action.kind=learned acts on k-vector fibres (B, C, k); the "
                              f"latent's fibres are {fibre} (use a vector net and model.fibre=k)")
        k = int(fibre[0])
        if self.k is not None:
            if k != self.k:
                raise ConfigError(f"this learned action was made for fibres of size {self.k}, "
                                  f"not {k}")
            return
        if k < 2:
            raise ConfigError(f"action.kind=learned needs fibres of 2 or more (set model.fibre);"
                              f" a fibre of {k} cannot rotate (SO(1) = {{1}}): ρ_θ(g) would be "
                              "the identity for every g, or at most flip a sign")
        if self.form == "so3" and k < 3:
            raise ConfigError(f"action.kind=learned for '{self.group.name}' needs fibres of at "
                              "least 3 (set model.fibre)")
        self.k = k
        # a random start follows the run's seed (the trainer seeds torch before building the
        # model) without drawing from the global RNG, which model builds leave alone
        gen = torch.Generator().manual_seed((torch.initial_seed() * 1_000_003 + 7_919 * k)
                                            % (1 << 63))
        if self.form == "finite":
            n = len(self.group.elements())
            if self.init == "fixed":
                base = _blocks(self.group, k)
            else:
                q, r = torch.linalg.qr(torch.randn(n, k, k, generator=gen))
                base = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]  # Haar
                base[:, :, 0] *= torch.sign(torch.linalg.det(base))[:, None]   # in SO(k)
                base[0] = torch.eye(k)            # the identity element starts at I
            self.register_buffer("base", base)
            self.delta = nn.Parameter(torch.zeros(n, k, k))
        elif self.form == "so2":
            if self.init == "fixed":
                omega = torch.ones(k // 2)
            else:
                omega = 0.5 + 2.0 * torch.rand(k // 2, generator=gen)
            self.frequencies = nn.Parameter(omega)
        else:
            if self.init == "fixed":
                gens = torch.zeros(3, k, k)
                for start in range(0, k - 2, 3):
                    gens[:, start:start + 3, start:start + 3] = _so3_generators()
                upper = torch.triu(gens)                # A = U − Uᵀ recovers gens exactly
            else:
                upper = torch.triu(torch.randn(3, k, k, generator=gen), 1) / math.sqrt(2)
            self.generators_upper = nn.Parameter(upper)

    # --- ρ_θ -----------------------------------------------------------------------------------
    def representation(self, g: Tensor) -> Tensor:
        """ρ_θ(g): (B, k, k)."""
        if self.k is None:
            raise ConfigError("the learned action has no parameters yet: build the model (its "
                              "latent's fibre size makes them)")
        if self.form == "finite":
            idx = self.group.element_index(g).to(self.delta.device)
            if self.orthogonal:
                return self.base[idx] @ torch.linalg.matrix_exp(_skew(self.delta[idx]))
            return self.base[idx] + self.delta[idx]
        if self.form == "so2":
            theta = self.group.angle(g).to(self.frequencies)
            angles = theta[:, None] * self.frequencies[None, :]          # (B, k // 2)
            c, s = torch.cos(angles), torch.sin(angles)
            out = torch.zeros(theta.shape[0], self.k, self.k, dtype=c.dtype, device=c.device)
            j = torch.arange(self.k // 2, device=c.device) * 2
            out[:, j, j], out[:, j, j + 1] = c, -s
            out[:, j + 1, j], out[:, j + 1, j + 1] = s, c
            if self.k % 2:
                out[:, -1, -1] = 1.0
            return out
        # in float64: the rotation vector of a float32 matrix near a half turn, and its
        # exponential, lose digits that a fixed start must keep (it equals ρ(R) = R to 1e-6)
        axis, angle = matrix_to_axis_angle(g.to(device=self.generators_upper.device,
                                                dtype=torch.float64))
        t = axis * angle[:, None]                                        # rotation vectors
        gens = self.generators().to(torch.float64)
        rho = torch.linalg.matrix_exp(torch.einsum("bj,jkl->bkl", t, gens))
        return rho.to(self.generators_upper.dtype)

    def generators(self) -> Tensor:
        """SO(3): the three antisymmetric generators (3, k, k)."""
        return _skew(self.generators_upper)

    def forward(self, z: Tensor, g: Tensor) -> Tensor:
        return torch.einsum("bij,bcj->bci", self.representation(g).to(z), z)

    def invariants(self, z: Tensor) -> Tensor:
        """The Gram matrix of the fibres: unchanged by any orthogonal ρ_θ(g)."""
        if self.form == "finite" and not self.orthogonal:
            raise NotImplementedError("a free (non-orthogonal) learned ρ has no invariants known "
                                      "in advance; use model.readout=zi or z")
        c = z.shape[1]
        rows, cols = torch.triu_indices(c, c, device=z.device)
        return torch.einsum("bck,bdk->bcd", z, z)[:, rows, cols]

    # --- what it learned ---------------------------------------------------------------------
    def homomorphism_penalty(self, a: Tensor, b: Tensor) -> Tensor:
        """mean ‖ρ(a)ρ(b) − ρ(ab)‖²_F / k + ‖ρ(e) − I‖²_F / k: zero exactly for a representation
        (the ``loss.hom`` term; a and b are batches of elements)."""
        ab = self.group.compose(a, b)
        diff = self.representation(a) @ self.representation(b) - self.representation(ab)
        e = self.representation(self.group.identity(1, device=a.device))
        eye = torch.eye(self.k, dtype=e.dtype, device=e.device)
        return diff.pow(2).sum((-2, -1)).mean() / self.k + (e - eye).pow(2).sum() / self.k

    @torch.no_grad()
    def report(self, n: int = 256, seed: int = 0) -> dict[str, Any]:
        """The representation's own law errors (relative Frobenius) on sampled pairs, and what
        it settled on (SO(2): the frequencies; SO(3): the so(3) bracket error)."""
        gen = torch.Generator().manual_seed(seed)
        a, b = self.group.sample(n, gen), self.group.sample(n, gen)
        ab = self.group.compose(a, b)
        rab = self.representation(ab)
        diff = self.representation(a) @ self.representation(b) - rab
        e = self.representation(self.group.identity(1))
        eye = torch.eye(self.k)
        r = self.representation(a)
        out: dict[str, Any] = {
            "rep_homomorphism_error": float(diff.norm() / rab.norm()),
            "rep_identity_error": float((e[0] - eye).norm() / math.sqrt(self.k)),
            "rep_orthogonality_error": float((r.transpose(-1, -2) @ r - eye).norm()
                                             / r.norm()),
        }
        if self.form == "finite":     # the character tr ρ(g) names the representation found
            elements = self.group.elements()[:24]
            out["rep_characters"] = [round(float(t), 3) for t in
                                     self.representation(elements).diagonal(dim1=-2, dim2=-1)
                                     .sum(-1)]
        if self.form == "so2":
            out["rep_frequencies"] = [round(float(w), 4) for w in self.frequencies]
        if self.form == "so3":
            A = self.generators()
            bracket = sum((A[i] @ A[j] - A[j] @ A[i] - A[k]).norm()
                          for i, j, k in ((0, 1, 2), (1, 2, 0), (2, 0, 1)))
            out["rep_bracket_error"] = float(bracket / A.norm().clamp_min(1e-12))
        return out


ACTIONS.register("learned", LearnedAction, "ρ_θ(g) learned on k-vector fibres: a matrix per "
                 "element (finite groups), frequencies ⊕R(ω_j θ) (SO(2)), generators exp(Σ t_j A_j) "
                 "(SO(3)); loss.hom teaches the homomorphism", ["init", "orthogonal"])
