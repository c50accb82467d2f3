"""A neural-rendering autoencoder for pictures of 3D objects on a background (planes in the sky).

After the Equivariant Neural Rendering design (Dupont et al., ICML 2020,
apple/ml-equivariant-neural-rendering): a 2D ResNet encoder, a 1×1 "inverse projection" whose
output channels are reshaped into a feature volume, 3D residual blocks, the turn (here: the
latent action, outside the net), 3D residual blocks, a "projection" (depth folded back into
channels, 1×1 conv) and a 2D ResNet decoder. Sized for a CPU: a 16³ volume with few channels.

The background is what the group leaves alone, so it travels in separate latent channels that
skip the volume: a full-resolution 2D branch (64² features packed losslessly into 16³ "fibres"
by pixel-unshuffle) plus the 16² trunk features, also packed. The decoder paints the object
(colour + alpha) from the volume channels and the background from the sky channels, and
composites one over the other. All channels are (16, 16, 16) fibres, so the mask and the
spatial action treat them alike: the learned mask has to find that the sky channels are the
invariant ones (turning them scrambles the sky) and the volume channels the variant ones.

Volume axis convention. The latent action turns volumes in index order (d, h, w)
(:mod:`groupact.groups.rotations3d`); rendered pairs give g in the camera frame (x right, y up,
z towards the viewer; :mod:`groupact.data.render`). The encoder therefore lays its volume out
as (x, y, z) = (image column, image row flipped, depth), so the camera-frame g turns it
directly; the decoder undoes that layout before projecting. The ``object_channels`` first
channels are volumes, the ``sky_channels`` after them carry the background.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from groupact.nets.residual import ResBlock, group_count


def sky_volumes(sky_full: int, v: int) -> int:
    """How many of the v³ sky channels hold the ``sky_full`` full-resolution maps: (4v)² values
    each, packed by pixel-unshuffle, so sky_full·16·v² values = sky_full·16/v volumes."""
    return sky_full * 16 // v


def to_camera_layout(v: Tensor) -> Tensor:
    """(B, C, z, row, col) → (B, C, x, y, z): index order = camera axes (x right, y up, z)."""
    return v.permute(0, 1, 4, 3, 2).flip(3)


def from_camera_layout(v: Tensor) -> Tensor:
    """The inverse of :func:`to_camera_layout`."""
    return v.flip(3).permute(0, 1, 4, 3, 2)


def low_sky_features(sky_channels: int, sky_full: int, v: int) -> int:
    """The low-resolution sky features at (S/4)²: what the sky channels hold beyond the packed
    full-resolution maps (checked: there must be some)."""
    low_feats = (sky_channels - sky_volumes(sky_full, v)) * v
    if low_feats <= 0:
        raise ValueError("sky_channels must exceed the full-resolution sky volumes "
                         f"({sky_volumes(sky_full, v)})")
    return low_feats


def trunk2d(in_channels: int, width: int) -> nn.Sequential:
    """The 2D ResNet trunk S → S/4 of both encoders (width, then 2·width channels)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 4, 2, 1), ResBlock(2, width),          # S/2
        nn.Conv2d(width, 2 * width, 4, 2, 1), ResBlock(2, 2 * width),        # S/4
        ResBlock(2, 2 * width), nn.GroupNorm(group_count(2 * width), 2 * width), nn.SiLU())


class VolumeLift(nn.Module):
    """The object's channels from the trunk's (S/4)² features: Dupont et al.'s inverse
    projection (a 1×1 conv whose channels are read as depth), laid out in camera axes, then 3D
    residual blocks."""

    def __init__(self, features: int, object_channels: int, v: int, blocks3d: int):
        super().__init__()
        self.co, self.v = object_channels, v
        self.inverse_projection = nn.Conv2d(features, object_channels * v, 1)
        self.blocks3d = nn.Sequential(*[ResBlock(3, object_channels) for _ in range(blocks3d)])

    def lift(self, h: Tensor) -> Tensor:
        v = self.v
        vol = self.inverse_projection(h).view(h.shape[0], self.co, v, v, v)   # (z, row, col)
        return self.blocks3d(to_camera_layout(vol))


class SkyPainter(nn.Module):
    """The background from the sky channels: the low-resolution features upsampled, joined with
    the full-resolution maps unpacked from their fibres, to colour in [0, 1]."""

    def init_sky(self, out_channels: int, v: int, object_channels: int, sky_channels: int,
                 sky_full: int) -> None:
        self.v, self.co = v, object_channels
        self.n_hi = sky_volumes(sky_full, v)
        low_feats = (sky_channels - self.n_hi) * v
        self.sky_up = nn.Sequential(nn.ConvTranspose2d(low_feats, 32, 4, 2, 1), nn.SiLU(),
                                    nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.SiLU())
        self.sky_out = nn.Sequential(nn.Conv2d(16 + sky_full, 16, 3, 1, 1), nn.SiLU(),
                                     nn.Conv2d(16, out_channels, 3, 1, 1))

    def full_res_maps(self, z: Tensor) -> Tensor:
        """The full-resolution sky maps, unpacked from their fibres: (B, sky_full, S, S)."""
        B, v = z.shape[0], self.v
        return F.pixel_shuffle(z[:, self.co:self.co + self.n_hi].reshape(B, -1, v, v), 4)

    def paint_sky(self, z: Tensor) -> Tensor:
        low = z[:, self.co + self.n_hi:].reshape(z.shape[0], -1, self.v, self.v)
        return self.out(self.sky_out(torch.cat([self.sky_up(low), self.full_res_maps(z)], 1)))


class RenderEncoder(VolumeLift):
    """Image (B, 3, S, S) → latent (B, object_channels + sky_channels, S/4, S/4, S/4)."""

    def __init__(self, in_channels: int = 3, size: int = 64, width: int = 32,
                 object_channels: int = 8, sky_channels: int = 8, sky_full: int = 4,
                 blocks3d: int = 1):
        if size % 4:
            raise ValueError(f"image side must be a multiple of 4, got {size}")
        v = size // 4
        low_feats = low_sky_features(sky_channels, sky_full, v)
        trunk = trunk2d(in_channels, width)
        super().__init__(2 * width, object_channels, v, blocks3d)
        self.trunk = trunk
        self.sky_low = nn.Conv2d(2 * width, low_feats, 1)
        self.sky_hi = nn.Sequential(nn.Conv2d(in_channels, 16, 3, 1, 1), nn.SiLU(),
                                    nn.Conv2d(16, sky_full, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        B, v = x.shape[0], self.v
        h = self.trunk(x)
        vol = self.lift(h)
        low = self.sky_low(h).reshape(B, -1, v, v, v)
        hi = F.pixel_unshuffle(self.sky_hi(x), 4).reshape(B, -1, v, v, v)
        return torch.cat([vol, hi, low], 1)


class RenderDecoder(SkyPainter):
    """Latent → image: the object (colour + alpha) from the volume channels, composited over
    the background painted from the sky channels."""

    def __init__(self, out_channels: int = 3, size: int = 64, width: int = 32,
                 object_channels: int = 8, sky_channels: int = 8, sky_full: int = 4,
                 blocks3d: int = 1):
        super().__init__()
        v = size // 4
        self.blocks3d = nn.Sequential(*[ResBlock(3, object_channels) for _ in range(blocks3d)])
        self.projection = nn.Sequential(nn.Conv2d(object_channels * v, 2 * width, 1),
                                        ResBlock(2, 2 * width), ResBlock(2, 2 * width))
        self.up = nn.Sequential(
            nn.GroupNorm(group_count(2 * width), 2 * width), nn.SiLU(),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), ResBlock(2, width),    # S/2
            nn.GroupNorm(group_count(width), width), nn.SiLU(),
            nn.ConvTranspose2d(width, 16, 4, 2, 1), nn.SiLU(),                 # S
            nn.Conv2d(16, out_channels + 1, 3, 1, 1))
        self.init_sky(out_channels, v, object_channels, sky_channels, sky_full)
        self.out = nn.Sigmoid()        # init_output_bias finds this and the sky head's bias

    def parts(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(object colour, object alpha, background), each in [0, 1]."""
        B, v = z.shape[0], self.v
        vol = from_camera_layout(self.blocks3d(z[:, :self.co]))
        h = self.projection(vol.reshape(B, self.co * v, v, v))
        o = self.up(h)
        rgb, alpha = torch.sigmoid(o[:, :-1]), torch.sigmoid(o[:, -1:])
        return rgb, alpha, self.paint_sky(z)

    def forward(self, z: Tensor) -> Tensor:
        rgb, alpha, sky = self.parts(z)
        return alpha * rgb + (1 - alpha) * sky


def render_pair(in_channels: int, size: int, width: int = 32, object_channels: int = 8,
                sky_channels: int = 8, sky_full: int = 4, blocks3d: int = 1
                ) -> tuple[RenderEncoder, RenderDecoder]:
    kw = dict(size=size, width=width, object_channels=object_channels,
              sky_channels=sky_channels, sky_full=sky_full, blocks3d=blocks3d)
    return RenderEncoder(in_channels, **kw), RenderDecoder(in_channels, **kw)




def composite_depth(volume: Tensor) -> tuple[Tensor, Tensor]:
    """Emission–absorption along the camera's viewing axis of an image-layout volume.

    ``volume``: (B, 1 + F, D, H, W) with depth index D increasing towards the viewer (the camera
    frame's z; :func:`from_camera_layout`). Channel 0 is a density (softplus), the rest features.
    Returns the features seen through the volume (B, F, H, W), each ray's features weighted by
    how much light its voxels send to the camera, and the coverage (B, 1, H, W) = 1 − the light
    that passes the whole ray. Orthographic, as the renderer of the data: the silhouette of the
    turned volume is the coverage of the picture, so the pose acts on the picture directly.
    """
    near_first = volume.flip(2)
    sigma = F.softplus(near_first[:, :1])
    absorb = 1 - torch.exp(-sigma)                                   # (B, 1, D, H, W)
    passed = torch.cumprod(torch.cat([torch.ones_like(absorb[:, :, :1]),
                                      1 - absorb[:, :, :-1]], 2), 2)
    weight = passed * absorb
    feats = (weight * near_first[:, 1:]).sum(2)
    return feats, weight.sum(2).clamp(0, 1)


class CompositeEncoder(VolumeLift):
    """Image (B, 3, S, S) → latent (B, object_channels + sky_channels, S/4, S/4, S/4).

    The object's channels are feature volumes lifted from a 2D trunk (Dupont et al.'s inverse
    projection). The sky's channels never see the object at full strength: the encoder first
    predicts the object's coverage α̂ (a per-pixel logit, kept in ``coverage_logits`` for an
    optional supervised term) and the sky branch reads only x·(1 − α̂) and α̂, so the decoder
    has to in-paint the sky under the old plane instead of copying it (which leaves a ghost of
    the plane at its old pose in every turned picture).

    With ``sky_copy`` the full-resolution sky maps are x·(1 − α̂) and α̂ themselves, not learned
    features of them: the sky the picture shows travels through the latent exactly, so the
    decoder need only paint the cut-out (a learned full-resolution path has to learn to copy,
    and draws a blurred sky until it has).

    ``cut_margin`` grows the cut-out by that many pixels (a max-pool of α̂) before the sky
    branch reads it: a soft predicted edge lets a thin outline of the old plane through to the
    copied sky, and a margin keeps it out at the price of a wider in-painted patch. The
    coverage term still supervises α̂ itself, not the grown cut-out.
    """

    def __init__(self, in_channels: int = 3, size: int = 64, width: int = 32,
                 object_channels: int = 16, sky_channels: int = 8, sky_full: int = 4,
                 blocks3d: int = 1, sky_copy: bool = False, cut_margin: int = 0):
        if size % 16:
            raise ValueError(f"image side must be a multiple of 16, got {size}")
        v = size // 4
        low_feats = low_sky_features(sky_channels, sky_full, v)
        trunk = trunk2d(in_channels, width)
        super().__init__(2 * width, object_channels, v, blocks3d)
        self.trunk = trunk
        self.coverage_up = nn.Sequential(
            nn.ConvTranspose2d(2 * width, 16, 4, 2, 1), nn.SiLU(),
            nn.ConvTranspose2d(16, 8, 4, 2, 1), nn.SiLU())
        self.coverage_out = nn.Sequential(nn.Conv2d(8 + in_channels, 16, 3, 1, 1), nn.SiLU(),
                                          nn.Conv2d(16, 1, 3, 1, 1))
        nn.init.constant_(self.coverage_out[-1].bias, -2.0)   # start mostly 'sky everywhere'
        self.sky_low = nn.Sequential(
            nn.Conv2d(in_channels + 1, 32, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(32, 64, 4, 2, 1), nn.SiLU(), nn.Conv2d(64, 64, 3, 1, 1), nn.SiLU(),
            nn.Conv2d(64, low_feats, 1))
        if sky_copy and sky_full != in_channels + 1:
            raise ValueError(f"sky_copy carries the {in_channels} picture channels and the "
                             f"cut-out: sky_full must be {in_channels + 1}, got {sky_full}")
        self.sky_copy = sky_copy
        self.cut_margin = cut_margin
        self.sky_hi = nn.Identity() if sky_copy else nn.Sequential(
            nn.Conv2d(in_channels + 1, 16, 3, 1, 1), nn.SiLU(), nn.Conv2d(16, sky_full, 3, 1, 1))
        self.coverage_logits: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        B, v = x.shape[0], self.v
        h = self.trunk(x)
        vol = self.lift(h)
        logits = self.coverage_out(torch.cat([self.coverage_up(h), x], 1))
        self.coverage_logits = logits
        alpha = self.cut_out(torch.sigmoid(logits))
        holed = torch.cat([x * (1 - alpha), alpha], 1)
        low = self.sky_low(holed).reshape(B, -1, v, v, v)
        hi = F.pixel_unshuffle(self.sky_hi(holed), 4).reshape(B, -1, v, v, v)
        return torch.cat([vol, hi, low], 1)

    def cut_out(self, alpha: Tensor) -> Tensor:
        """The region the sky branch does not see: α̂, grown by ``cut_margin`` pixels."""
        r = self.cut_margin
        return F.max_pool2d(alpha, 2 * r + 1, 1, r) if r else alpha


class CompositeDecoder(SkyPainter):
    """Latent → image: the object volume rendered by emission–absorption along the viewing axis
    (:func:`composite_depth`) and refined in 2D to colour and alpha at full resolution, over a sky
    painted from the sky channels."""

    def __init__(self, out_channels: int = 3, size: int = 64, width: int = 32,
                 object_channels: int = 16, sky_channels: int = 8, sky_full: int = 4,
                 blocks3d: int = 1, sky_copy: bool = False):
        super().__init__()
        v = size // 4
        #: the full-resolution sky maps are the picture's sky x·(1 − α̂) and its cut-out α̂
        #: (CompositeEncoder's sky_copy): the sky is that copy with the cut-out painted in
        self.sky_copy = sky_copy
        self.blocks3d = nn.Sequential(*[ResBlock(3, object_channels) for _ in range(blocks3d)])
        feats = object_channels - 1
        self.refine = nn.Sequential(
            nn.Conv2d(feats + 1, 2 * width, 3, 1, 1), ResBlock(2, 2 * width),
            nn.GroupNorm(group_count(2 * width), 2 * width), nn.SiLU(),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), ResBlock(2, width),     # S/2
            nn.GroupNorm(group_count(width), width), nn.SiLU(),
            nn.ConvTranspose2d(width, 16, 4, 2, 1), nn.SiLU(),                 # S
            nn.Conv2d(16, out_channels + 1, 3, 1, 1))
        nn.init.zeros_(self.refine[-1].weight)
        nn.init.zeros_(self.refine[-1].bias)
        self.init_sky(out_channels, v, object_channels, sky_channels, sky_full)
        #: the density starts low, so the untrained object covers ~10 % of a ray, not all of it
        self.density_bias = nn.Parameter(torch.tensor(-5.0))
        self.out = nn.Sigmoid()        # init_output_bias finds this and the sky head's bias
        #: the object alpha's logits of the last call (for an optional silhouette term)
        self.alpha_logits: Tensor | None = None

    def parts(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(object colour, object alpha, background), each in [0, 1]."""
        vol = from_camera_layout(self.blocks3d(z[:, :self.co]))
        vol = torch.cat([vol[:, :1] + self.density_bias, vol[:, 1:]], 1)
        feats, coverage = composite_depth(vol)
        o = self.refine(torch.cat([feats, coverage], 1))
        size = o.shape[-1]
        prior = F.interpolate(coverage, size=size, mode="bilinear", align_corners=False)
        prior = torch.logit(prior.clamp(1e-4, 1 - 1e-4))
        self.alpha_logits = o[:, -1:] + prior
        rgb, alpha = torch.sigmoid(o[:, :-1]), torch.sigmoid(self.alpha_logits)
        return rgb, alpha, self.copied_sky(z) if self.sky_copy else self.paint_sky(z)

    def copied_sky(self, z: Tensor) -> Tensor:
        """The sky of a ``sky_copy`` latent: its copy of the picture's sky where the picture
        showed it, the painted sky in the cut-out α̂ (the copy is x·(1 − α̂), so the two add
        up)."""
        hi = self.full_res_maps(z)
        copy, cut = hi[:, :-1], hi[:, -1:]
        return (copy + cut * self.paint_sky(z)).clamp(0, 1)

    def forward(self, z: Tensor) -> Tensor:
        rgb, alpha, sky = self.parts(z)
        return alpha * rgb + (1 - alpha) * sky


def composite_pair(in_channels: int, size: int, width: int = 32, object_channels: int = 16,
                   sky_channels: int = 8, sky_full: int = 4, blocks3d: int = 1,
                   sky_copy: bool = False,
                   cut_margin: int = 0) -> tuple[CompositeEncoder, CompositeDecoder]:
    kw = dict(size=size, width=width, object_channels=object_channels,
              sky_channels=sky_channels, sky_full=sky_full, blocks3d=blocks3d, sky_copy=sky_copy)
    return (CompositeEncoder(in_channels, cut_margin=cut_margin, **kw),
            CompositeDecoder(in_channels, **kw))


__all__ = ["CompositeDecoder", "CompositeEncoder", "RenderDecoder", "RenderEncoder",
           "composite_depth", "composite_pair", "from_camera_layout", "render_pair",
           "sky_volumes", "to_camera_layout"]
