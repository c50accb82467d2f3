"""The contrast group Aff(R)⁺ of Jin et al.: intensities change as u ↦ a·u + b in logit space.

An element (a, b) with a > 0 acts on an intensity x ∈ (0, 1) as σ(a·logit(x) + b): a stretches
the contrast, b shifts the brightness, and the order of grey values never changes. On latent
features it acts as a·z + b, which is the 2×2 representation [[a, b], [0, 1]] on (z, 1).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from groupact.errors import GroupactError
from groupact.groups.base import Group, smooth_images


class Contrast(Group):
    """Aff(R)⁺ = {(a, b): a > 0}; elements are (B, 2) float tensors (a, b).

    ``compose((a1, b1), (a2, b2)) = (a1·a2, a1·b2 + b1)``: apply u ↦ a2·u + b2 first.

    Sampling is *not* Haar: the group is not compact, so it has no Haar probability measure (its
    Haar measures da·db/a² and da·db/a have infinite mass). We draw log a uniform in
    [−log a_max, log a_max] and b uniform in [−b_max, b_max], a box of plausible contrast changes;
    training only needs pairs that cover the contrasts we care about, and the log scale makes a
    and 1/a equally likely.

    On images x is first clamped to [eps, 1 − eps], so 0 and 1 (black background, binary masks)
    have a finite logit; the law T_a T_b = T_{a·b} then holds wherever the intermediate image stays
    inside that interval. With ``inside="foreground"`` pixels with x ≤ ``threshold`` are left
    exactly as they are (Jin et al. change the contrast only inside the brain); the law then holds
    on pixels that stay above the threshold.
    """

    name = "contrast"
    spatial_dims = 2
    matrix_dim = 2
    matrix_kind = "affine"
    turns_coordinates = False      # ρ moves logits of intensities: matrix_features

    def __init__(self, a_max: float = 2.0, b_max: float = 1.0, eps: float = 1e-3,
                 inside: str = "all", threshold: float = 0.05):
        if not a_max >= 1.0 or not math.isfinite(a_max):
            raise GroupactError(f"contrast group needs a_max ≥ 1 (a in [1/a_max, a_max]); "
                                f"got {a_max}")
        if not b_max >= 0.0 or not math.isfinite(b_max):
            raise GroupactError(f"contrast group needs b_max ≥ 0; got {b_max}")
        if not 0.0 < eps < 0.5:
            raise GroupactError(f"contrast group needs 0 < eps < 0.5; got {eps}")
        if inside not in ("all", "foreground"):
            raise GroupactError(f"contrast group: inside must be 'all' or 'foreground'; "
                                f"got {inside!r}")
        if not 0.0 <= threshold < 1.0:
            raise GroupactError(f"contrast group needs 0 ≤ threshold < 1; got {threshold}")
        self.a_max, self.b_max, self.eps = float(a_max), float(b_max), float(eps)
        self.inside, self.threshold = inside, float(threshold)

    def identity(self, n, device=None):
        return torch.tensor([1.0, 0.0], device=device).expand(n, 2).clone()

    def sample(self, n, generator=None, device=None):
        u = torch.rand(n, 2, generator=generator, device=device) * 2 - 1  # uniform in [−1, 1]
        return torch.stack([torch.exp(u[:, 0] * math.log(self.a_max)), u[:, 1] * self.b_max], -1)

    def compose(self, a, b):
        a1, b1 = a.unbind(-1)
        a2, b2 = b.unbind(-1)
        return torch.stack([a1 * a2, a1 * b2 + b1], -1)

    def inverse(self, g):
        a, b = g.unbind(-1)
        return torch.stack([1 / a, -b / a], -1)

    def distance(self, a, b):
        """Euclidean distance in (log a, b): scale changes count by ratio, not difference."""
        return torch.hypot(torch.log(a[:, 0] / b[:, 0]), a[:, 1] - b[:, 1])

    def orbit_elements(self, n, device=None):
        """Contrasts from 1/a_max to a_max (the identity first), brightness unchanged."""
        t = torch.linspace(-1, 1, n, device=device) if n > 1 else torch.zeros(1, device=device)
        t = torch.cat([torch.zeros(1, device=device), t[t != 0]])[:n]
        return torch.stack([torch.exp(t * math.log(self.a_max)), torch.zeros_like(t)], -1)

    def _per_sample(self, g: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        shape = (-1,) + (1,) * (like.dim() - 1)
        g = g.to(device=like.device, dtype=like.dtype)
        return g[:, 0].view(shape), g[:, 1].view(shape)

    def act_image(self, x, g):
        self.check_input(x)
        a, b = self._per_sample(g, x)
        out = torch.sigmoid(a * self.logits(x) + b)
        if self.inside == "foreground":
            out = torch.where(x <= self.threshold, x, out)
        return out

    def act_map(self, z, g):
        """The latent action a·z + b on features of any shape (B, …)."""
        a, b = self._per_sample(g, z)
        return a * z + b

    # --- probes for the law checks ---
    def testing_images(self, n, channels=1, generator=None):
        """Blobs in [0.1, 0.9]: logits stay clear of the clamp at eps, so the laws are exact."""
        side = 28 if self.spatial_dims == 2 else 20
        return smooth_images(n, side, self.spatial_dims, channels, generator, 0.1, 0.9)

    def logits(self, x: Tensor) -> Tensor:
        """logit(x) clamped to [eps, 1 − eps]: where the group acts as u ↦ a·u + b."""
        return torch.logit(x.clamp(self.eps, 1 - self.eps))

    def matrix_features(self, x):
        """(B, N, 2): each pixel's (logit, 1), which [[a, b], [0, 1]] maps to (a·logit + b, 1)."""
        u = self.logits(x).flatten(1)
        return torch.stack([u, torch.ones_like(u)], -1)

    def map_features(self, x):
        """The logits themselves: ``act_map`` is a·z + b pointwise, so no pooling."""
        return self.logits(x)

    def matrix(self, g):
        a, b = g.to(torch.float32).unbind(-1)
        return torch.stack([torch.stack([a, b], -1),
                            torch.stack([torch.zeros_like(a), torch.ones_like(a)], -1)], -2)

    def parse(self, text):
        hint = f"group 'contrast' takes 'a,b' with a > 0, e.g. --g 1.5,-0.2; got {text!r}"
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 2:
            raise GroupactError(hint)
        try:
            a, b = float(parts[0].removeprefix("a=")), float(parts[1].removeprefix("b="))
        except ValueError:
            raise GroupactError(hint) from None
        if not (math.isfinite(a) and math.isfinite(b) and a > 0):
            raise GroupactError(hint)
        return torch.tensor([[a, b]])

    def describe(self, g):
        return [f"a={a:.4g},b={b + 0.0:.4g}" for a, b in g.tolist()]

    def to_text(self, g):
        """'a,b' to 7 significant digits (what ``--g`` takes)."""
        return [f"{a:.7g},{b + 0.0:.7g}" for a, b in g.tolist()]

    def check_input(self, x):
        """Contrast is pointwise: images (B, C, H, W) and volumes (B, C, D, H, W) alike."""
        if x.dim() not in (4, 5):
            raise GroupactError(f"group 'contrast' acts on images (B, C, H, W) or volumes "
                                f"(B, C, D, H, W); got a tensor of shape {tuple(x.shape)}")

    def __repr__(self):
        return (f"Contrast(a_max={self.a_max:g}, b_max={self.b_max:g}, eps={self.eps:g}, "
                f"inside={self.inside!r}, threshold={self.threshold:g})")
