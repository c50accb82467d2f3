"""Image and latent metrics, per image and batched, for 2D images and 3D volumes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: items per encoder/decoder pass in evaluation (bounds memory on large volumes)
EVAL_BATCH = 256


@torch.no_grad()
def encode_all(model, x: Tensor) -> Tensor:
    """``model.encode`` of many items, EVAL_BATCH at a time."""
    return torch.cat([model.encode(x[i:i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)])


def mse_per_image(x: Tensor, y: Tensor) -> Tensor:
    return (x - y).pow(2).flatten(1).mean(1)


def dice(x: Tensor, y: Tensor, threshold: float = 0.5) -> Tensor:
    """Dice overlap of each pair of masks, both thresholded at ``threshold`` (for binary shapes
    whose turned copies are interpolated); 1 when both are empty."""
    a, b = (x > threshold).flatten(1).float(), (y > threshold).flatten(1).float()
    inter, total = (a * b).sum(1), a.sum(1) + b.sum(1)
    return torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total))


def psnr(x: Tensor, y: Tensor, max_value: float = 1.0, eps: float = 1e-10) -> Tensor:
    """PSNR in dB of each image (values on [0, max_value]); average these for the report."""
    return 10 * torch.log10(max_value ** 2 / mse_per_image(x, y).clamp_min(eps))


def region_psnr(x: Tensor, y: Tensor, region: Tensor, eps: float = 1e-10) -> Tensor:
    """PSNR in dB of each image over the pixels of ``region`` (B, 1, *spatial), 0/1 or weights:
    e.g. the object's or the background's pixels of a rendered target. NaN where an image has
    no such pixel (average with ``nanmean``)."""
    w = region.to(x.dtype).expand_as(x).flatten(1)
    mse = (w * (x - y).pow(2).flatten(1)).sum(1) / w.sum(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(eps))


def _gaussian(window: int, sigma: float, device, dtype) -> Tensor:
    r = torch.arange(window, device=device, dtype=dtype) - (window - 1) / 2
    k = torch.exp(-r ** 2 / (2 * sigma ** 2))
    return k / k.sum()


def ssim(x: Tensor, y: Tensor, max_value: float = 1.0, window: int | None = None,
         sigma: float = 1.5) -> Tensor:
    """Structural similarity per image (Wang et al. 2004), Gaussian window, 2D or 3D.

    Works on (B, C, H, W) and (B, C, D, H, W) (a 3D SSIM for volumes); channels are averaged.
    The window is 11 (7 for sides under 32) and filters are separable, so 3D stays cheap.
    """
    dims = x.dim() - 2
    side = min(x.shape[2:])
    window = window or (11 if side >= 32 else 7)
    window = min(window, side if side % 2 else side - 1)
    c1, c2 = (0.01 * max_value) ** 2, (0.03 * max_value) ** 2
    g = _gaussian(window, sigma, x.device, x.dtype)
    channels = x.shape[1]
    conv = F.conv2d if dims == 2 else F.conv3d

    def blur(t: Tensor) -> Tensor:
        for axis in range(dims):
            shape = [1] * dims
            shape[axis] = window
            kernel = g.view(1, 1, *shape).expand(channels, 1, *shape)
            t = conv(t, kernel, groups=channels)
        return t

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x ** 2
    syy = blur(y * y) - mu_y ** 2
    sxy = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2)
    return (num / den).flatten(1).mean(1)
