"""Training without g (``pairs.g_known=false``): each step uses the current model's estimate ĝ of
the element that takes x1 to x2, never the pair's recorded g.

Why these estimates:

- a finite group (C_n, the cube, shifts): the element whose latent action best reconstructs x2,
  argmin_g ‖D(Φ_g E x1) − x2‖² over every element (a hard-EM step: one encoder pass, |G| latent
  actions and decoder passes, one batch). It scores what the step then optimises, so an
  autoencoder whose latent is not yet equivariant still picks the element its decoder can draw;
- a continuous group: :func:`groupact.latent.estimate.estimate_latent` on the encodings, the
  same search ``model.estimate_g`` runs (SO(2) on the steerable latent in closed form by an
  FFT, SO(3) by a grid and refinement, contrast by least squares). A decoder pass per candidate
  of a continuous grid would cost far more than the latent search.

Before anything is estimated the model has learned nothing that tells one g from another, so the
first ``pairs.g_warmup_steps`` steps train plain autoencoding: x1 → x1 with g = identity (what a
pair with the identity element is). Afterwards the estimate of a network that reconstructs
images and turns its feature maps is right often enough that the right element wins and the
errors shrink.

The estimate is of g up to what the data cannot tell apart (a 0 turned by 180°) and, for the
model, up to a relabelling of the group by an automorphism (C4's 90° ↔ 270°): the evaluation
measures ĝ against the hidden truth up to the best automorphism the group declares
(:func:`groupact.evaluate.g_estimate.g_estimate_metrics`).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from groupact.config import Config
from groupact.data.pairs import PairBatch
from groupact.errors import ConfigError
from groupact.latent.estimate import estimate_latent
from groupact.model import GroupActionAutoencoder

#: numbers one decoder batch of candidates may hold in the finite search (bounds memory)
CANDIDATE_NUMBERS = 1 << 24


def hide_g(batch: PairBatch) -> PairBatch:
    """The batch without its recorded g (None), built without reading it."""
    return PairBatch(batch.x1, batch.x2, None, batch.labels,  # type: ignore[arg-type]
                     batch.alpha1, batch.alpha2)


def estimable(model: GroupActionAutoencoder) -> bool:
    """Whether g can be estimated for this model: a finite group, an action with a closed form,
    or a continuous group that declares a search grid and local moves."""
    group, action = model.group, model.action
    if group.elements() is not None:
        return True
    if getattr(action, "closed_form", None) in ("fourier", "affine"):
        return True
    return bool(group.tangent_dim) and group.search_grid(None) is not None


def check_g_unknown(cfg: Config, model: GroupActionAutoencoder) -> None:
    """Refuse ``pairs.g_known=false`` where no estimate of g exists, or with a loss that needs
    pairs of a second kind; one line each."""
    if cfg.pairs.g_known:
        return
    if not estimable(model):
        raise ConfigError(f"pairs.g_known=false needs an estimate of g, and group "
                          f"'{model.group.name}' with model.action.kind="
                          f"{cfg.model.action.kind} has none (finite groups, steerable or "
                          "affine actions, or groups with a search grid); set "
                          "pairs.g_known=true")
    if cfg.pairs.mode != "anchor":
        raise ConfigError("pairs.g_known=false trains on (x, T_g x) pairs; set "
                          "pairs.mode=anchor")


@torch.no_grad()
def best_by_reconstruction(model: GroupActionAutoencoder, x1: Tensor, x2: Tensor) -> Tensor:
    """argmin over every element g of a finite group of ‖D(Φ_g E x1) − x2‖² per pair: one
    encoder pass, then all |G| candidates of a chunk of pairs decoded as one batch."""
    elements = model.group.elements(x1.device)
    n, batch = len(elements), x1.shape[0]
    z = model.encode(x1)
    m = model.mask_like(z)
    per = max(1, CANDIDATE_NUMBERS // max(1, n * x1[0].numel() * 4))   # pairs per chunk
    errors = []
    for i in range(0, batch, per):
        zc = z[i:i + per].repeat_interleave(n, 0)
        g = elements.repeat(zc.shape[0] // n, *([1] * (elements.dim() - 1)))
        pred = model.decode(model.mix(m, model.action(zc, g), zc))
        target = x2[i:i + per].repeat_interleave(n, 0)
        errors.append((pred - target).pow(2).flatten(1).mean(1).view(-1, n))
    return elements[torch.cat(errors).argmin(1)]


@torch.no_grad()
def best_in_latent(model: GroupActionAutoencoder, x1: Tensor, x2: Tensor) -> Tensor:
    """ĝ by the latent search of ``model.estimate_g`` (continuous groups), in the model's
    current mode; the identity where the mask keeps no channel variant (nothing to search)."""
    mask = model.mask.hard()
    if not bool(mask.round().bool().any()):
        return model.group.identity(x1.shape[0], x1.device)
    z1, z2 = model.encode(torch.cat([x1, x2])).chunk(2)
    return estimate_latent(model.action, z1, z2, mask).g


@dataclasses.dataclass
class PairElements:
    """Gives each batch the element the step trains with: the recorded g when it is known, else
    the model's estimate (or, during the warm-up, autoencoding: x2 = x1 and g = identity)."""

    known: bool = True
    warmup_steps: int = 0

    @classmethod
    def from_config(cls, cfg: Config, model: GroupActionAutoencoder) -> "PairElements":
        check_g_unknown(cfg, model)
        return cls(cfg.pairs.g_known, cfg.pairs.g_warmup_steps)

    def hide(self, batch: PairBatch) -> PairBatch:
        """The batch as the step may see it: without its g when g is not known."""
        return batch if self.known else hide_g(batch)

    def fill(self, model: GroupActionAutoencoder, batch: PairBatch, step: int | None) -> PairBatch:
        """The batch with the element to train on; ``step`` None (validation) never warms up."""
        if self.known:
            return batch
        if step is not None and step < self.warmup_steps:
            g = model.group.identity(batch.x1.shape[0], batch.x1.device)
            return dataclasses.replace(batch, x2=batch.x1, g=g, alpha2=batch.alpha1)
        search = best_by_reconstruction if model.group.elements() is not None else best_in_latent
        return dataclasses.replace(batch, g=search(model, batch.x1, batch.x2))
