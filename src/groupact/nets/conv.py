"""Convolutional encoders/decoders for 2D images and 3D volumes.

Encoders return the latent as (B, C, *fibre): a feature map per channel (spatial latents) or a
k-vector per channel (vector latents, via ``nn.Unflatten``). Decoders take the same shape back.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def _conv(dims: int):
    return nn.Conv2d if dims == 2 else nn.Conv3d


def _deconv(dims: int):
    return nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d


OUTPUTS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
#: the pixel range each output squashing produces; the model maps it to and from [0, 1]
OUTPUT_RANGES = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0)}


def conv_encoder(dims: int, in_channels: int, widths: Sequence[int], latent_channels: int,
                 kernel: int = 4, activate_latent: bool = False) -> nn.Sequential:
    """Stride-2 convs (kernel 4, padding 1: each halves the side), LeakyReLU(0.2) between them.

    The last conv gives the latent channels, followed by a LeakyReLU(0.2) only with
    ``activate_latent`` (the authors' MNIST encoder has one: ``conv_encoder(2, 1, [32], 64,
    activate_latent=True)``, 1→32→64 channels, 28×28 → 7×7).
    """
    conv, layers, c = _conv(dims), [], in_channels
    for w in widths:
        layers += [conv(c, w, kernel, 2, 1), nn.LeakyReLU(0.2)]
        c = w
    layers.append(conv(c, latent_channels, kernel, 2, 1))
    if activate_latent:
        layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


def conv_decoder(dims: int, out_channels: int, widths: Sequence[int], latent_channels: int,
                 kernel: int = 4, output: str = "sigmoid") -> nn.Sequential:
    """The mirror of :func:`conv_encoder`: stride-2 transposed convs, then ``output``
    (sigmoid: pixels in [0, 1]; tanh: in [−1, 1], the authors' MNIST decoder)."""
    deconv, layers, c = _deconv(dims), [], latent_channels
    for w in reversed(list(widths)):
        layers += [deconv(c, w, kernel, 2, 1), nn.LeakyReLU(0.2)]
        c = w
    layers += [deconv(c, out_channels, kernel, 2, 1), OUTPUTS[output]()]
    return nn.Sequential(*layers)


class JinEncoder(nn.Sequential):
    """Jin et al.'s MNIST encoder: four stride-2 3×3 convs (32-64-64-64), FC 256, FC latent_dim.

    28 → 14 → 7 → 4 → 2, so 64·2·2 = 256 features; the latent_dim-vector is viewed as
    (latent_dim / k, k): channels of k-vector fibres for the matrix action.
    """

    def __init__(self, in_channels: int = 1, latent_dim: int = 24, fibre: int = 2):
        super().__init__(
            nn.Conv2d(in_channels, 32, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, 2, 1), nn.ReLU(),
            nn.Flatten(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, latent_dim),
            nn.Unflatten(1, (latent_dim // fibre, fibre)),
        )


class JinDecoder(nn.Sequential):
    """The mirror of :class:`JinEncoder`: FC, FC, four stride-2 transposed 3×3 convs, sigmoid."""

    def __init__(self, out_channels: int = 1, latent_dim: int = 24):
        super().__init__(
            nn.Flatten(), nn.Linear(latent_dim, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
            nn.Unflatten(1, (64, 2, 2)),
            nn.ConvTranspose2d(64, 64, 3, 2, 1, output_padding=1), nn.ReLU(),   # 2 → 4
            nn.ConvTranspose2d(64, 64, 3, 2, 1, output_padding=0), nn.ReLU(),   # 4 → 7
            nn.ConvTranspose2d(64, 32, 3, 2, 1, output_padding=1), nn.ReLU(),   # 7 → 14
            nn.ConvTranspose2d(32, out_channels, 3, 2, 1, output_padding=1),    # 14 → 28
            nn.Sigmoid(),
        )


class VectorHead(nn.Sequential):
    """A conv encoder followed by an FC layer to a (latent_dim / k, k) vector latent."""

    def __init__(self, body: nn.Module, body_features: int, latent_dim: int, fibre: int):
        super().__init__(body, nn.Flatten(), nn.LeakyReLU(0.2),
                         nn.Linear(body_features, latent_dim),
                         nn.Unflatten(1, (latent_dim // fibre, fibre)))


class VectorTail(nn.Sequential):
    """The mirror of :class:`VectorHead`: FC from the vector latent back to a feature map."""

    def __init__(self, body: nn.Module, body_shape: tuple[int, ...], latent_dim: int):
        n = 1
        for s in body_shape:
            n *= s
        super().__init__(nn.Flatten(), nn.Linear(latent_dim, n), nn.LeakyReLU(0.2),
                         nn.Unflatten(1, body_shape), body)


class MapToVolume(nn.Module):
    """View a (B, C·S, S, S) feature map as (B, C, S, S, S) volumes so SO(3) can turn it.

    For 2D pictures of 3D objects (planes): the latent is a small 3D volume per channel, turned
    by resampling, in the spirit of equivariant neural rendering.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels

    def forward(self, z):
        b, cs, h, w = z.shape
        return z.reshape(b, self.channels, cs // self.channels, h, w)


class VolumeToMap(nn.Module):
    """The inverse of :class:`MapToVolume`."""

    def forward(self, z):
        return z.flatten(1, 2)
