"""Planes in the sky, the compositing net and what trains and measures it: emission–absorption
along the view, a sky path that cannot see the object, the coverage term, batch-centred latent
terms, the object/background split of the evaluation."""

import math

import pytest
import torch

from groupact.data.pairs import slice_pairs
from groupact.data.planes import PosePairs
from groupact.data.render import render
from groupact.errors import ConfigError
from groupact.evaluate.metrics import psnr, region_psnr
from groupact.groups import build_group
from groupact.evaluate.evaluate import decoded_shares
from groupact.latent import AllVariantMask, FixedMask
from groupact.latent.actions import build_action
from groupact.losses import (LossWeights, check_coverage_net, coverage_term, get_loss, latent_term,
                             silhouette_term)
from groupact.model import GroupActionAutoencoder
from groupact.nets import NetSpec, build_nets
from groupact.nets.rendering import composite_depth, from_camera_layout, to_camera_layout



@pytest.fixture(scope="module")
def splits(small_planes):
    return small_planes


def composite_model(size: int = 32, channels: int = 4, sky_copy: bool = False,
                    cut_margin: int = 0) -> GroupActionAutoencoder:
    torch.manual_seed(0)
    enc, dec = build_nets("render-composite", NetSpec((3, size, size), channels=channels,
                                                       widths=(8,), sky_copy=sky_copy,
                                                       cut_margin=cut_margin))
    group = build_group("so3")
    return GroupActionAutoencoder.for_input(enc, dec, group, AllVariantMask,
                                            build_action("spatial", group), (3, size, size))


# --- emission–absorption --------------------------------------------------------------------------
def test_composite_depth_nearest_voxel_wins_and_coverage_is_the_absorbed_light():
    vol = torch.full((1, 2, 4, 2, 2), -30.0)            # density ≈ 0 everywhere
    vol[:, 1] = 0.0
    vol[0, 0, 3, 0, 0], vol[0, 1, 3, 0, 0] = 30.0, 1.0   # near (depth index 3): opaque, feature 1
    vol[0, 0, 0, 0, 0], vol[0, 1, 0, 0, 0] = 30.0, 5.0   # far, behind it: opaque, feature 5
    vol[0, 0, 0, 1, 1], vol[0, 1, 0, 1, 1] = 30.0, 5.0   # far, alone on its ray
    sigma = math.log1p(math.exp(0.5))
    vol[0, 0, :, 1, 0], vol[0, 1, :, 1, 0] = 0.5, 2.0    # a faint ray: 4 voxels of density σ
    feats, cov = composite_depth(vol)
    assert feats.shape == (1, 1, 2, 2) and cov.shape == (1, 1, 2, 2)
    assert float(feats[0, 0, 0, 0]) == pytest.approx(1.0, abs=1e-6)     # occluded far voxel
    assert float(feats[0, 0, 1, 1]) == pytest.approx(5.0, abs=1e-6)
    assert float(cov[0, 0, 0, 0]) == pytest.approx(1.0, abs=1e-6)
    assert float(cov[0, 0, 0, 1]) == pytest.approx(0.0, abs=1e-9)        # empty ray
    assert float(cov[0, 0, 1, 0]) == pytest.approx(1 - math.exp(-4 * sigma), rel=1e-5)
    assert float(feats[0, 0, 1, 0]) == pytest.approx(2.0 * float(cov[0, 0, 1, 0]), rel=1e-5)


def test_composite_depth_sees_the_camera_frame_the_renderer_draws():
    """A dense point at camera (x, y, z) = (+0.5, 0, +0.5) in front of one at (+0.5, 0, −0.5):
    in the camera layout the near one covers the right half's pixel, as the renderer's +z is
    towards the viewer; turned 90° about y (x → −z), the near point goes behind."""
    v = 8
    vol = torch.full((1, 2, v, v, v), -30.0)
    vol[:, 1] = 0.0
    near, far = (6, 4, 6), (6, 4, 1)                     # (x, y, z) indices: right of centre
    vol[0, 0][near], vol[0, 1][near] = 30.0, 1.0
    vol[0, 0][far], vol[0, 1][far] = 30.0, 3.0
    feats, cov = composite_depth(from_camera_layout(vol))
    row, col = v - 1 - 4, 6                              # y up → row down
    assert float(feats[0, 0, row, col]) == pytest.approx(1.0, abs=1e-5)
    assert float(cov[0, 0].sum()) == pytest.approx(1.0, abs=1e-4)
    # the renderer draws a triangle about the voxel's centre (x, y) = (0.625, 0.125) at that pixel
    tri = torch.tensor([[0.5, 0.0, 0.0], [0.75, 0.0, 0.0], [0.625, 0.25, 0.0]])
    img = render(tri, torch.tensor([[0, 1, 2]]), torch.ones(1, 3), torch.eye(3)[None], size=v,
                 supersample=1, scale=1.0)
    assert img[0, 3].nonzero().tolist() == [[row, col]]
    # turned 90° about y, +x goes to −z: the near point goes behind the far one's old place
    # and the far point (x=+, z=−) comes to the front on the left
    from groupact.groups.rotations3d import axis_angle_to_matrix
    g = axis_angle_to_matrix(torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([math.pi / 2]))
    turned = build_group("so3").act_image(vol, g)
    feats, cov = composite_depth(from_camera_layout(turned))
    seen = feats[0, 0] / cov[0, 0].clamp_min(1e-6)
    assert float(cov[0, 0, row].sum()) > 0.5
    left = int(cov[0, 0, row].argmax())
    assert left < v // 2 and float(seen[row, left]) == pytest.approx(3.0, abs=0.3)
    # camera_layout is the inverse of from_camera_layout
    assert torch.equal(to_camera_layout(from_camera_layout(vol)), vol)


# --- the net ---------------------------------------------------------------------------------------
def test_render_composite_shapes_and_range():
    model = composite_model()
    x = torch.rand(3, 3, 32, 32)
    z = model.encode(x)
    assert z.shape[0] == 3 and z.shape[2:] == (8, 8, 8) and z.shape[1] == 4 + 8 + 8
    logits = model.encoder.coverage_logits
    assert logits.shape == (3, 1, 32, 32)
    with torch.no_grad():
        rgb, alpha, sky = model.decoder.parts(z)
    for t in (rgb, alpha, sky):
        assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    # an untrained object covers little of the picture (the density starts low)
    assert float(alpha.mean()) < 0.3


@pytest.mark.parametrize("sky_copy", [False, True])
def test_render_composite_sky_channels_cannot_see_what_the_coverage_cuts_out(sky_copy):
    """Where the predicted coverage is 1 the sky branch reads nothing of the picture: two pictures
    that differ only there give the same sky channels (no ghost of the old plane can pass), with
    the copied sky as with the learned one."""
    model = composite_model(sky_copy=sky_copy)
    enc = model.encoder
    with torch.no_grad():
        enc.coverage_out[-1].weight.zero_()
        enc.coverage_out[-1].bias.fill_(40.0)            # coverage 1 everywhere
    x1, x2 = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        z1, z2 = model.encode(x1), model.encode(x2)
    co = enc.co
    assert torch.allclose(z1[:, co:], z2[:, co:], atol=1e-6)
    assert not torch.allclose(z1[:, :co], z2[:, :co], atol=1e-3)


def test_sky_copy_carries_the_visible_sky_exactly_and_paints_only_the_cut_out():
    model = composite_model(sky_copy=True)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        z = model.encode(x)
        cut = torch.sigmoid(model.encoder.coverage_logits)
        _, _, sky = model.decoder.parts(z)
        painted = model.decoder.paint_sky(z)
    # the sky is the picture where it showed, the painting where it was cut out, nothing else
    assert torch.allclose(sky, x * (1 - cut) + cut * painted, atol=1e-5)
    # nothing cut out: the picture itself, to float precision (a learned path would blur it)
    with torch.no_grad():
        model.encoder.coverage_out[-1].weight.zero_()
        model.encoder.coverage_out[-1].bias.fill_(-40.0)
        _, _, sky = model.decoder.parts(model.encode(x))
    assert float((sky - x).abs().max()) < 1e-5
    # without the copy the same picture's sky is a learned drawing, not the picture
    plain = composite_model(sky_copy=False)
    with torch.no_grad():
        _, _, drawn = plain.decoder.parts(plain.encode(x))
    assert float((drawn - x).abs().mean()) > 0.05


class _FixedCoverage(torch.nn.Module):
    """Stands in for the encoder's coverage head: the same logit map for every picture."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(h.shape[0], -1, -1, -1)


@pytest.mark.parametrize("margin", [0, 2])
def test_cut_margin_hides_a_ring_around_the_predicted_plane_from_the_sky(margin):
    """A plane predicted on rows and columns 12..19: with ``cut_margin`` r the copied sky is zero
    and the cut-out one on 12−r..19+r, a picture changed only there gives the same sky channels,
    and one changed a pixel further out does not; the coverage term still reads α̂ itself."""
    model = composite_model(sky_copy=True, cut_margin=margin)
    logits = torch.full((1, 1, 32, 32), -40.0)
    logits[..., 12:20, 12:20] = 40.0
    model.encoder.coverage_out = _FixedCoverage(logits)
    lo, hi = 12 - margin, 20 + margin
    x = torch.rand(2, 3, 32, 32)
    inside, outside = x.clone(), x.clone()
    inside[..., lo:hi, lo:hi] = torch.rand(2, 3, hi - lo, hi - lo)
    outside[..., lo - 1, lo:hi] += 0.5
    co, n_hi = model.encoder.co, model.decoder.n_hi
    with torch.no_grad():
        z, z_in, z_out = (model.encode(p) for p in (x, inside, outside))
        maps = torch.nn.functional.pixel_shuffle(z[:, co:co + n_hi].reshape(2, -1, 8, 8), 4)
    ring = torch.zeros(32, 32, dtype=torch.bool)
    ring[lo:hi, lo:hi] = True
    assert float(maps[:, :3, ring].abs().max()) < 1e-6                # nothing of the picture
    assert torch.allclose(maps[:, 3, ring], torch.ones(()), atol=1e-6)   # all cut out
    assert torch.allclose(maps[:, :3, ~ring], x[:, :, ~ring], atol=1e-6)  # the rest copied
    assert torch.allclose(z_in[:, co:], z[:, co:], atol=1e-6)
    assert not torch.allclose(z_out[:, co:], z[:, co:], atol=1e-3)
    assert torch.equal(model.encoder.coverage_logits, logits.expand(2, -1, -1, -1))


def test_cut_margin_is_checked():
    with pytest.raises(ConfigError, match="cut_margin"):
        build_nets("render-composite", NetSpec((3, 32, 32), channels=4, cut_margin=-1))
    with pytest.raises(ConfigError, match="cut_margin"):
        build_nets("render-composite", NetSpec((3, 32, 32), channels=4, cut_margin=5))


def test_sky_copy_needs_rgb_pictures():
    with pytest.raises(ConfigError, match="sky_copy"):
        build_nets("render-composite", NetSpec((1, 32, 32), channels=4, sky_copy=True))


def test_render_composite_refuses_bad_shapes():
    with pytest.raises(ConfigError, match="divisible by 16"):
        build_nets("render-composite", NetSpec((3, 24, 24), channels=4))
    with pytest.raises(ConfigError, match="at least 2"):
        build_nets("render-composite", NetSpec((3, 32, 32), channels=1))
    with pytest.raises(ConfigError, match="divide 64"):
        build_nets("render-composite", NetSpec((3, 48, 48), channels=4))


# --- pairs carry the coverage ----------------------------------------------------------------------
def test_pose_pairs_carry_both_views_alpha(splits):
    part = splits.train
    idx = torch.arange(len(part))
    b = PosePairs().pairs(part, idx, torch.Generator().manual_seed(0), non_identity=True)
    assert torch.equal(b.alpha1, part.images[idx, 3:])
    # x2 is view j on the same sky; its alpha is that view's alpha
    j = (b.g @ part.extras["pose"][idx])[:, None].sub(part.extras["pose"][None]).abs() \
        .flatten(2).amax(2).argmin(1)
    assert torch.equal(b.alpha2, part.images[j, 3:])
    s = slice_pairs(b, 2, 5)
    assert torch.equal(s.alpha1, b.alpha1[2:5]) and torch.equal(s.alpha2, b.alpha2[2:5])


# --- losses ----------------------------------------------------------------------------------------
def test_centred_latent_term_is_blind_to_offsets_and_scales():
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(8, 4, 5, generator=gen)
    pred = target + 0.3 * torch.randn(8, 4, 5, generator=gen)
    base = latent_term(pred, target, relative=False, centred=True)
    for offset, scale in ((100.0, 1.0), (0.0, 1e-3), (-7.0, 20.0)):
        moved = latent_term(scale * pred + offset, scale * target + offset, False, True)
        assert float(moved) == pytest.approx(float(base), rel=1e-3)
    # the energy-relative form is what an offset satisfies: it falls as the offset grows
    rel = latent_term(pred, target, relative=True)
    assert float(latent_term(pred + 100.0, target + 100.0, relative=True)) < 1e-3 * float(rel)
    # the paper's form is what a shrink satisfies
    assert float(latent_term(1e-3 * pred, 1e-3 * target, False)) < 1e-5 * float(
        latent_term(pred, target, False))


def test_centred_loss_is_the_paper_loss_with_centred_terms(splits):
    model = composite_model()
    b = PosePairs().pairs(splits.train, torch.arange(6), torch.Generator().manual_seed(1))
    w = LossWeights()
    torch.manual_seed(0)
    _, paper = get_loss("paper")(model, b, w)
    _, centred = get_loss("centred")(model, b, w)
    assert centred["recon"] == pytest.approx(paper["recon"])
    assert centred["const"] != pytest.approx(paper["const"])


def test_coverage_term_trains_the_coverage_head(splits):
    model = composite_model()
    b = PosePairs().pairs(splits.train, torch.arange(6), torch.Generator().manual_seed(1))
    total, parts = get_loss("paper")(model, b, LossWeights(inv=0.0, const=0.0, coverage=1.0))
    assert parts["coverage"] > 0 and parts["silhouette"] > 0
    total.backward()
    head = model.encoder.coverage_out[-1].weight.grad
    assert head is not None and float(head.abs().sum()) > 0
    assert float(model.decoder.density_bias.grad.abs()) > 0      # the silhouette reaches density
    # read right after x1 is encoded: the term is x1's coverage against x1's alpha
    model.encode(b.x1)
    assert float(coverage_term(model, b)) == pytest.approx(parts["coverage"], rel=1e-5)
    # and the silhouette is the turned prediction's alpha against x2's alpha
    with torch.no_grad():
        model(b.x1, b.g)
        _, alpha, _ = model.decoder.parts(model.act(model.encode(b.x1), b.g))
    expected = torch.nn.functional.binary_cross_entropy(alpha.clamp(1e-7, 1 - 1e-7), b.alpha2)
    assert float(silhouette_term(model, b)) == pytest.approx(float(expected), rel=1e-3)


def test_coverage_term_needs_a_coverage_net_and_alpha(splits):
    torch.manual_seed(0)
    enc, dec = build_nets("render-volume", NetSpec((3, 32, 32), channels=4, widths=(8,)))
    group = build_group("so3")
    model = GroupActionAutoencoder.for_input(enc, dec, group, AllVariantMask,
                                             build_action("spatial", group), (3, 32, 32))
    b = PosePairs().pairs(splits.train, torch.arange(4), torch.Generator().manual_seed(1))
    with pytest.raises(ConfigError, match="render-composite"):
        get_loss("paper")(model, b, LossWeights(coverage=1.0))
    with pytest.raises(ConfigError, match="render-composite"):
        check_coverage_net(model)
    check_coverage_net(composite_model())              # both halves exposed: accepted
    # a net that predicts the coverage but does not expose its drawn alpha is refused too
    half = composite_model()
    del half.decoder.alpha_logits
    with pytest.raises(ConfigError, match="render-composite"):
        check_coverage_net(half)


# --- the evaluation's regions ----------------------------------------------------------------------
def test_region_psnr_is_the_psnr_of_the_region_pixels():
    x, y = torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4)
    y[0, :, :2] = 0.1                                   # error only in the top half of image 0
    top = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    top[:, :, :2] = True
    assert float(region_psnr(x, y, top)[0]) == pytest.approx(20.0, abs=1e-4)
    assert float(region_psnr(x, y, ~top)[0]) == pytest.approx(100.0, abs=1e-3)   # eps-capped
    assert float(psnr(x, y)[0]) == pytest.approx(23.0103, abs=1e-3)              # half the mse
    empty = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    assert bool(region_psnr(x, y, empty).isnan().all())


def test_decoded_shares_follow_where_the_decoder_reads_each_drawing(splits):
    """The object is drawn from the volume channels only and the sky from the sky channels
    only, so the right split scores shares of exactly 1, the reversed split 0, and everything
    variant leaves z_i nothing to carry (background share 0, object share 1)."""
    model = composite_model()
    model.eval()
    volumes = model.decoder.co
    channels = model.latent_shape[0]
    x = PosePairs().pairs(splits.test, torch.arange(12), torch.Generator().manual_seed(2)).x1
    right = FixedMask(channels, range(volumes))
    reversed_ = FixedMask(channels, range(volumes, channels))
    found = {}
    for name, mask in (("right", right), ("reversed", reversed_),
                       ("all", AllVariantMask(channels))):
        model.mask = mask
        found[name] = decoded_shares(model, x)
    r = found["right"]
    assert r["background_share_zi"] == 1.0 and r["object_share_zv"] == 1.0
    assert r["background_lost_without_zv"] == 0.0 and r["object_lost_without_zi"] == 0.0
    assert r["background_lost_without_zi"] > 0.01 and r["object_lost_without_zv"] > 0.01
    assert found["reversed"]["background_share_zi"] == 0.0
    assert found["reversed"]["object_share_zv"] == 0.0
    assert found["all"]["background_share_zi"] == 0.0 and found["all"]["object_share_zv"] == 1.0


def test_decoded_shares_are_empty_for_a_net_that_draws_no_parts():
    enc, dec = build_nets("res2d", NetSpec((1, 16, 16), channels=4, widths=(8,)))
    group = build_group("c4")
    model = GroupActionAutoencoder.for_input(enc, dec, group, AllVariantMask,
                                             build_action("spatial", group), (1, 16, 16))
    assert decoded_shares(model, torch.rand(3, 1, 16, 16)) == {}
