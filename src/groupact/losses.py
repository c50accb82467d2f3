"""Training objectives.

Reconstruction errors are in the networks' pixel units (:meth:`GroupActionAutoencoder.recon_error`:
on [−1, 1] for the authors' MNIST net, as their script computes it).

- :func:`paper_loss` (ALD paper): λ_r·‖D(Φ_g(E x1)) − x2‖² + λ_i·‖z_i(x1) − sg[z_i(x2)]‖²
  + λ_v·‖Φ^v_g(z_v(x1)) − sg[z_v(x2)]‖². The target branch only needs the encoder, and runs
  without gradient (sg = stop-gradient).
- :func:`symmetric_loss` (Jin et al. 2024): ‖x2 − D(g·z1)‖² + ‖x1 − D(g⁻¹·z2)‖², both branches
  trained.
- :func:`centred_loss`: the paper's loss with each latent term divided by the batch variance of
  its (stop-gradient) target. The paper's absolute terms are lowest when the latent shrinks to 0;
  dividing by the target's energy (``loss.relative``) removes that, but is then lowest for a
  large offset shared by every image (the offset is in the energy, not in the error: measured on
  planes, object volumes at mean z² ≈ 800 against 0.06 in the sky channels, carrying nothing).
  Divided by the variance across the batch, neither an offset nor a scale changes the term.
- :func:`autoencoder_loss`: ‖D(E x1) − x1‖², a plain autoencoder (no group action, no latent
  terms): the representation-only baseline of the downstream-classification columns.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from groupact.data.pairs import PairBatch
from groupact.errors import ConfigError
from groupact.registry import Registry
from groupact.model import GroupActionAutoencoder

if TYPE_CHECKING:
    from groupact.config import Config


@dataclass
class LossWeights:
    recon: float = 1.0
    inv: float = 1.0
    const: float = 1.0
    #: divide each latent term by the (stop-gradient) energy of its target, so shrinking the whole
    #: latent towards 0 no longer lowers L_inv and L_const (the paper's terms reward that collapse)
    relative: bool = False
    #: weight of the homomorphism term ‖ρ(a)ρ(b) − ρ(ab)‖² + ‖ρ(e) − I‖² of a learned action
    hom: float = 0.0
    #: weight of the cross-entropies of the object's coverage against the renderer's alpha: the
    #: encoder's prediction for x1 and the decoder's drawn alpha of x̂2 (rendered data and a net
    #: that exposes both only)
    coverage: float = 0.0
    #: divide each latent term by the batch variance of its target (:func:`centred_loss`)
    centred: bool = False


def latent_term(pred: Tensor, target: Tensor, relative: bool, centred: bool = False) -> Tensor:
    """‖pred − target‖² (mean); with ``relative``, over sg[‖target‖²] (mean) — scale-free; with
    ``centred``, over sg[the target's variance across the batch] — offset- and scale-free."""
    err = F.mse_loss(pred, target)
    t = target.detach()
    if centred:
        return err / (t - t.mean(0, keepdim=True)).pow(2).mean().clamp_min(1e-8)
    if not relative:
        return err
    return err / t.pow(2).mean().clamp_min(1e-8)


_COVERAGE_NEEDS = ("loss.coverage needs a net that predicts the object's coverage "
                   "(model.net=render-composite) and data that knows it (rendered planes); set "
                   "loss.coverage=0")


def check_coverage_net(model: GroupActionAutoencoder) -> None:
    """Refuse ``loss.coverage`` before training for a net that does not expose both the encoder's
    predicted coverage and the decoder's drawn alpha."""
    if not (hasattr(model.encoder, "coverage_logits") and hasattr(model.decoder, "alpha_logits")):
        raise ConfigError(_COVERAGE_NEEDS)


def check_loss_fits_model(cfg: Config, model: GroupActionAutoencoder) -> None:
    """Refuse, before any step, loss terms the model cannot give: the coverage term needs a net
    that predicts coverage, the homomorphism term a learned action."""
    if cfg.loss.coverage:
        check_coverage_net(model)
    if cfg.loss.hom and not hasattr(model.action, "homomorphism_penalty"):
        raise ConfigError(f"loss.hom={cfg.loss.hom} applies to model.action.kind=learned; "
                          f"this recipe's action is {cfg.model.action.kind}")


def _alpha_bce(module: torch.nn.Module, attr: str, alpha: Tensor | None) -> Tensor:
    logits = getattr(module, attr, None)
    if logits is None or alpha is None:
        raise ConfigError(_COVERAGE_NEEDS)
    return F.binary_cross_entropy_with_logits(logits, alpha)


def coverage_term(model: GroupActionAutoencoder, batch: PairBatch) -> Tensor:
    """Cross-entropy of the coverage the encoder predicted on its LAST call (x1: call right after
    encoding x1) against the data's alpha of x1: what the sky path cuts out."""
    return _alpha_bce(model.encoder, "coverage_logits", batch.alpha1)


def silhouette_term(model: GroupActionAutoencoder, batch: PairBatch) -> Tensor:
    """Cross-entropy of the object alpha the decoder drew on its LAST call (call right after
    decoding x̂2) against the data's alpha of x2: the turned volume's silhouette must be the
    target's, a signal about the object's 3D shape and pose that the colours alone give weakly."""
    return _alpha_bce(model.decoder, "alpha_logits", batch.alpha2)


def _with_latent_terms(recon: Tensor, m: Tensor, z1: Tensor, moved: Tensor, target: Tensor,
                       w: LossWeights) -> tuple[Tensor, dict[str, float]]:
    """λ_r·recon + λ_i·L_inv + λ_v·L_const (terms with weight 0 skipped); ``target`` is sg[z2].

    The targets sg[z_i(x2)] = (1 − sg[M]) ⊙ sg[z2] and sg[z_v(x2)] = sg[M] ⊙ sg[z2] are detached
    whole, the mask included, as the paper writes them and as the authors' script computes them
    (its target branch runs under ``no_grad``): the mask logits get gradient only through the
    prediction side. Letting it through the target too doubles the logit gradient at the start
    and makes it grow with the squared error.
    """
    total = w.recon * recon
    parts = {"recon": recon}
    m_sg = m.detach()
    if w.inv:
        parts["inv"] = latent_term((1 - m) * z1, (1 - m_sg) * target, w.relative, w.centred)
        total = total + w.inv * parts["inv"]
    if w.const:
        parts["const"] = latent_term(m * moved, m_sg * target, w.relative, w.centred)
        total = total + w.const * parts["const"]
    return total, {k: float(v.detach()) for k, v in parts.items()}


def _encode_x1(model: GroupActionAutoencoder, batch: PairBatch,
               w: LossWeights) -> tuple[Tensor, Tensor | None]:
    """E(x1) and, with ``w.coverage``, the coverage term read before anything else is encoded."""
    z1 = model.encode(batch.x1)
    return z1, (coverage_term(model, batch) if w.coverage else None)


def _add_coverage(total: Tensor, parts: dict[str, float], cov: Tensor | None,
                  sil: Tensor | None, w: LossWeights) -> tuple[Tensor, dict[str, float]]:
    """λ_c·(coverage + silhouette) added to the total, both logged; nothing without λ_c."""
    if cov is None or sil is None:
        return total, parts
    parts["coverage"], parts["silhouette"] = float(cov.detach()), float(sil.detach())
    return total + w.coverage * (cov + sil), parts


def _decode_x2(model: GroupActionAutoencoder, batch: PairBatch, z: Tensor,
               w: LossWeights) -> tuple[Tensor, Tensor | None]:
    """D(z) as the prediction of x2 and, with ``w.coverage``, its silhouette term."""
    pred = model.decode(z)
    return pred, (silhouette_term(model, batch) if w.coverage else None)


def paper_loss(model: GroupActionAutoencoder, batch: PairBatch,
               w: LossWeights) -> tuple[Tensor, dict[str, float]]:
    """The ALD objective; returns the total and its parts (as floats, for logs)."""
    z1, cov = _encode_x1(model, batch, w)
    with torch.no_grad():
        z2 = model.encode(batch.x2) if (w.inv or w.const) else None
    m = model.mask_like(z1)
    moved = model.action(z1, batch.g)
    pred, sil = _decode_x2(model, batch, model.mix(m, moved, z1), w)
    recon = model.recon_error(pred, batch.x2)
    return _add_coverage(*_with_latent_terms(recon, m, z1, moved, z2, w), cov, sil, w)


def centred_loss(model: GroupActionAutoencoder, batch: PairBatch,
                 w: LossWeights) -> tuple[Tensor, dict[str, float]]:
    """The ALD objective with batch-centred, scale-free latent terms (see the module's text)."""
    return paper_loss(model, batch, dataclasses.replace(w, centred=True))


def symmetric_loss(model: GroupActionAutoencoder, batch: PairBatch,
                   w: LossWeights) -> tuple[Tensor, dict[str, float]]:
    """Jin et al.'s two-way reconstruction; λ_i/λ_v add the paper's latent terms if non-zero."""
    z1, cov = _encode_x1(model, batch, w)
    z2 = model.encode(batch.x2)
    g_inv = model.group.inverse(batch.g)
    m = model.mask_like(z1)
    moved = model.action(z1, batch.g)
    pred, sil = _decode_x2(model, batch, model.mix(m, moved, z1), w)
    fwd = model.recon_error(pred, batch.x2)
    bwd = model.recon_error(model.decode(model.act(z2, g_inv, m)), batch.x1)
    return _add_coverage(*_with_latent_terms(fwd + bwd, m, z1, moved, z2.detach(), w), cov, sil,
                         w)


def autoencoder_loss(model: GroupActionAutoencoder, batch: PairBatch,
                     w: LossWeights) -> tuple[Tensor, dict[str, float]]:
    """A plain autoencoder: λ_r·‖D(E x1) − x1‖², ignoring g, x2, the mask and the action.

    The baseline for the probe columns: what a latent learns from reconstruction alone. x1 is a
    randomly transformed view with ``pairs.mode=both`` (the reproduce plan sets it), so the
    autoencoder sees the same image distribution as the group-action methods; λ_i and λ_v are
    not used (there is no group action to make anything invariant or equivariant).
    """
    recon = model.recon_error(model.decode(model.encode(batch.x1)), batch.x1)
    return w.recon * recon, {"recon": float(recon.detach())}


#: loss.kind → loss(model, batch, weights) → (total, parts)
LOSSES: Registry = Registry("loss.kind", "loss")
LOSSES.register("paper", paper_loss, "the paper's L_recon + L_inv + L_const, the whole target "
                "(mask included) stop-gradient")
LOSSES.register("centred", centred_loss, "the paper's loss with latent terms over the batch "
                "variance of their target: no offset or scale satisfies them")
LOSSES.register("symmetric", symmetric_loss, "Jin et al.'s two-way reconstruction on "
                "(g1·x, g2·x) pairs")
LOSSES.register("autoencoder", autoencoder_loss, "plain reconstruction of a transformed view (the "
                "representation baseline)")


def homomorphism_term(model: GroupActionAutoencoder, batch: PairBatch) -> Tensor:
    """The learned action's homomorphism penalty on the batch's elements paired with the same
    elements shifted by one (a and b drawn from the data, no extra random draws)."""
    penalty = getattr(model.action, "homomorphism_penalty", None)
    if penalty is None:
        raise ConfigError(f"loss.hom applies to a learned action (model.action.kind=learned); "
                          f"this model's action is {type(model.action).__name__}")
    return penalty(batch.g, batch.g.roll(1, 0))


def get_loss(kind: str):
    """The loss ``loss.kind`` names."""
    return LOSSES.entry(kind).factory


def with_homomorphism(loss_fn):
    """``loss_fn`` plus ``w.hom`` × the learned action's homomorphism term (``loss.hom``)."""

    def loss(model: GroupActionAutoencoder, batch: PairBatch,
             w: LossWeights) -> tuple[Tensor, dict[str, float]]:
        total, parts = loss_fn(model, batch, w)
        h = homomorphism_term(model, batch)
        parts["hom"] = float(h.detach())
        return total + w.hom * h, parts

    loss.__doc__ = loss_fn.__doc__
    return loss
