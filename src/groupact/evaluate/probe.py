"""Linear probes: how much class information each part of the latent (z_i, z_v, z) carries."""

from __future__ import annotations

import torch
from torch import Tensor


def fit_linear_probe(x: Tensor, y: Tensor, n_classes: int, steps: int = 100,
                     l2: float = 1e-3) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Multinomial logistic regression on standardised features, full-batch L-BFGS (float32).

    Returns (weight, bias, mean, std) so the same standardisation is applied to test features.
    """
    x = x.float()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    xs = (x - mean) / std
    w = torch.zeros(x.shape[1], n_classes, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=steps, history_size=10,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xs @ w + b, y) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach(), mean, std


def probe_accuracy(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor,
                   steps: int = 100, l2: float = 1e-3) -> float | None:
    """Test accuracy of a linear probe trained on (train_x, train_y); None for empty features."""
    if train_x.shape[1] == 0:
        return None
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    w, b, mean, std = fit_linear_probe(train_x.cpu(), train_y.cpu(), n_classes, steps, l2)
    logits = ((test_x.cpu().float() - mean) / std) @ w + b
    return float((logits.argmax(1) == test_y.cpu()).double().mean())


def split_features(z: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """Flattened features of the invariant channels, the variant channels and the whole latent."""
    keep = mask.bool().cpu()
    return {"zi": z[:, ~keep].flatten(1), "zv": z[:, keep].flatten(1), "z": z.flatten(1)}
