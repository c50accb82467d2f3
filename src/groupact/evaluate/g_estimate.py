"""How well a model estimates g against the hidden truth (runs trained with
``pairs.g_known=false``).

A model trained without g learns its action up to a relabelling of the group by an automorphism
(``Group.automorphisms``: C4's 90° ↔ 270°, SO(2)'s θ ↔ −θ): nothing in unlabelled pairs tells a
turn by 90° from its mirror image in the labels. So the estimate ĝ = ``model.estimate_g(x1, x2)``
is compared with φ(g) for the automorphism φ that fits the test pairs best, φ is reported
(``g_automorphism``), and the protocol's image metrics are then computed with φ(g): what the
model does when asked in its own labelling. Without the relabelling a model that learned the
mirror image would score the PSNR of a wrong turn although its estimate of g is right.

Pairs whose first image a half turn hardly changes (a 0, an 8) leave g undetermined up to that
half turn; the error is also given without them (``_not_c2``), as ``benchmarks/estimate_g.py``
does (the same criterion).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from groupact.data.pairs import PairBatch, batches
from groupact.errors import GroupactError
from groupact.evaluate.metrics import EVAL_BATCH
from groupact.groups import Group
from groupact.model import GroupActionAutoencoder

#: a half turn changes a C2-symmetric image by less than this fraction of its energy
C2_SYMMETRIC = 0.5


def half_turn(group: Group) -> Tensor | None:
    """The group's half turn (180°) where it has one as ``--g 180`` (C_n with n even, SO(2))."""
    try:
        g = group.parse("180")
    except (GroupactError, ValueError):
        return None
    return None if bool(group.is_identity(g).all()) else g


def not_c2_symmetric(group: Group, x: Tensor) -> Tensor | None:
    """(B,) True where a half turn changes the image by at least :data:`C2_SYMMETRIC` of its
    energy; None for a group without a half turn."""
    half = half_turn(group)
    if half is None:
        return None
    turned = group.act_image(x, half.to(x.device).expand(x.shape[0], *half.shape[1:]))
    return (turned - x).pow(2).flatten(1).sum(1) >= C2_SYMMETRIC * x.pow(2).flatten(1).sum(1)


def estimate_all(model: GroupActionAutoencoder, pairs: PairBatch) -> Tensor:
    """ĝ of every pair, in evaluation chunks."""
    return torch.cat([model.estimate_g(b.x1, b.x2).g for b in batches(pairs, EVAL_BATCH)])


def _summary(errors: Tensor, finite: bool, unit: str) -> dict[str, float]:
    if finite:
        return {"exact": float((errors == 0).float().mean())}
    e = errors.double()
    return {f"median_{unit}": float(e.median()), f"p95_{unit}": float(e.quantile(0.95))}


@torch.no_grad()
def g_estimate_metrics(model: GroupActionAutoencoder, pairs: PairBatch
                       ) -> tuple[dict[str, Any], Callable[[Tensor], Tensor]]:
    """``g_estimate_*`` metrics of ĝ against φ(g) for the best automorphism φ, and φ itself.

    Finite groups: the share exactly right (``g_estimate_exact``); rotation groups: the median
    and 95th percentile of the angle between ĝ and φ(g) in degrees (``g_estimate_median_deg``,
    ``g_estimate_p95_deg``); other continuous groups the same in the group's own distance.
    """
    group = model.group
    g_hat = estimate_all(model, pairs)
    finite = group.elements() is not None
    unit = "deg" if group.tangent_dim else "distance"
    scale = math.degrees(1.0) if group.tangent_dim else 1.0
    candidates = group.automorphisms()
    errors = {name: group.distance(g_hat, phi(pairs.g)).float() * scale
              for name, phi in candidates.items()}
    name = min(errors, key=lambda k: float(errors[k].mean()))
    out: dict[str, Any] = {f"g_estimate_{k}": v
                           for k, v in _summary(errors[name], finite, unit).items()}
    keep = not_c2_symmetric(group, pairs.x1)
    if keep is not None and bool(keep.any()):
        out.update({f"g_estimate_{k}_not_c2": v
                    for k, v in _summary(errors[name][keep], finite, unit).items()})
        out["g_estimate_pairs_not_c2"] = int(keep.sum())
    out["g_automorphism"] = name
    return out, candidates[name]


def relabelled(pairs: PairBatch, phi: Callable[[Tensor], Tensor]) -> PairBatch:
    """The pairs with g mapped through φ: what the model is asked in its own labelling."""
    return dataclasses.replace(pairs, g=phi(pairs.g))
