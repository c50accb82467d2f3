"""Planar groups: group laws, exact actions (rot90, rolls), SO(2) ≈ C4 at right angles."""

import math

import pytest
import torch

from groupact.errors import GroupactError
from groupact.groups import SO2, CyclicRotations, CyclicShifts, build_group

GEN = torch.Generator().manual_seed(0)


def smooth_images(n: int = 6, size: int = 28) -> torch.Tensor:
    """Blobs well inside the frame, so rotations lose nothing at the corners."""
    r = torch.arange(size) - (size - 1) / 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    cy, cx = torch.rand(n, 1, 1, generator=GEN) * 8 - 4, torch.rand(n, 1, 1, generator=GEN) * 8 - 4
    return torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 18.0).unsqueeze(1)


GROUPS = [CyclicRotations(4), CyclicRotations(3), CyclicRotations(8), SO2(),
          CyclicShifts(28, 4)]


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: repr(g))
def test_group_laws(group):
    a, b, c = (group.sample(64, GEN) for _ in range(3))
    e = group.identity(64)
    tol = 1e-5
    assert (group.distance(group.compose(a, e), a) <= tol).all()
    assert (group.distance(group.compose(e, a), a) <= tol).all()
    assert (group.distance(group.compose(a, group.inverse(a)), e) <= tol).all()
    assert (group.distance(group.compose(group.compose(a, b), c),
                           group.compose(a, group.compose(b, c))) <= tol).all()
    # relative element: g·g1 = g2
    g = group.relative(a, b)
    assert (group.distance(group.compose(g, a), b) <= tol).all()


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: repr(g))
def test_matrix_is_a_representation(group):
    a, b = group.sample(32, GEN), group.sample(32, GEN)
    lhs = group.matrix(group.compose(a, b))
    rhs = group.matrix(a) @ group.matrix(b)
    assert torch.allclose(lhs, rhs, atol=1e-5)
    eye = torch.eye(group.matrix_dim).expand(32, -1, -1)
    assert torch.allclose(group.matrix(group.identity(32)), eye, atol=1e-6)


def test_c4_is_exact_rot90_per_sample():
    c4 = CyclicRotations(4)
    x = torch.rand(16, 2, 28, 28, generator=GEN)
    k = torch.arange(16) % 4
    y = c4.act_image(x, k)
    for i in range(16):
        assert torch.equal(y[i], torch.rot90(x[i], int(k[i]), dims=(-2, -1)))


@pytest.mark.parametrize("group", [CyclicRotations(4), CyclicRotations(2), CyclicShifts(28, 4),
                                   CyclicShifts(12, 1)], ids=repr)
def test_exact_actions_compose_exactly(group):
    size = 28 if not isinstance(group, CyclicShifts) else group.size
    x = torch.rand(40, 1, size, size, generator=GEN)
    a, b = group.sample(40, GEN), group.sample(40, GEN)
    assert group.exact
    assert torch.equal(group.act_image(group.act_image(x, b), a),
                       group.act_image(x, group.compose(a, b)))
    assert torch.equal(group.act_image(x, group.identity(40)), x)
    assert torch.equal(group.act_image(group.act_image(x, a), group.inverse(a)), x)


def test_so2_agrees_with_c4_at_right_angles():
    c4, so2 = CyclicRotations(4), SO2()
    x = torch.rand(8, 1, 28, 28, generator=GEN)
    k = torch.arange(8) % 4
    assert torch.allclose(so2.act_image(x, c4.angle(k)), c4.act_image(x, k), atol=1e-5)


def test_so2_composes_on_smooth_images():
    so2 = SO2()
    x = smooth_images()
    a, b = so2.sample(6, GEN), so2.sample(6, GEN)
    twice = so2.act_image(so2.act_image(x, b), a)
    once = so2.act_image(x, so2.compose(a, b))
    # two bilinear resamplings blur a little: relative L2 error under 3%
    assert (twice - once).norm() / once.norm() < 0.03
    assert torch.allclose(so2.act_image(x, so2.identity(6)), x, atol=1e-6)


def test_so2_turns_counter_clockwise():
    """A bright pixel right of centre moves to above the centre under +90°."""
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 7] = 1.0
    y = SO2().act_image(x, torch.tensor([math.pi / 2]))
    assert y[0, 0].argmax() == 1 * 9 + 4


def test_shift_latent_map_matches_image_at_stride():
    s = CyclicShifts(28, 4)
    g = s.sample(5, GEN)
    z = torch.rand(5, 3, 7, 7, generator=GEN)
    zz = s.act_map(z, g)
    for i in range(5):
        assert torch.equal(zz[i], torch.roll(z[i], (int(g[i, 0]), int(g[i, 1])), (-2, -1)))
    with pytest.raises(GroupactError):
        s.act_image(torch.rand(1, 1, 20, 20), s.identity(1))


@pytest.mark.parametrize("group", [CyclicRotations(4), CyclicShifts(28, 1)], ids=repr)
def test_non_identity_sampling(group):
    g = group.sample_non_identity(500, GEN)
    assert not group.is_identity(g).any()


def test_c4_samples_uniformly():
    k = CyclicRotations(4).sample(8000, GEN)
    counts = torch.bincount(k, minlength=4).float() / 8000
    assert (counts - 0.25).abs().max() < 0.03


def test_parse_and_describe():
    c4 = build_group("c4")
    assert c4.parse("90").tolist() == [1] and c4.parse("-90").tolist() == [3]
    assert c4.describe(torch.tensor([2])) == ["180°"]
    with pytest.raises(GroupactError, match="multiples of 90"):
        c4.parse("45")
    with pytest.raises(GroupactError, match="degrees"):
        c4.parse("ninety")
    assert SO2().parse("30").item() == pytest.approx(math.radians(30))
    assert CyclicShifts(28, 4).parse("1,-2").tolist() == [[1, 5]]
    with pytest.raises(GroupactError):
        build_group("nope")
