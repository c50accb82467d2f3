"""SO(3), the cube group and the contrast group: group laws, representations and actions.

Tolerances: SO(3) element laws 1e-5 (float32 matrix products); SO(3) actions that land on voxel
centres (identity, quarter turns, cube elements) 1e-5; composing two trilinear turns of a smooth
blob (σ = 2.5 voxels, 16³) against one turn: 5% relative L2 and 0.1 of the peak (two
interpolations versus one); contrast laws 1e-5 on elements and 1e-4 on images. The cube group
is checked exactly (torch.equal).
"""

import math

import pytest
import torch

from groupact.errors import GroupactError
from groupact.groups import (GROUPS, SO3, Contrast, CubeRotations, axis_angle_to_matrix,
                             build_group, matrix_to_axis_angle, rotate_images, rotation_angle)

E_D, E_H, E_W = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def turn(axis, degrees) -> torch.Tensor:
    """One (1, 3, 3) matrix from an axis in (d, h, w) and an angle in degrees."""
    return axis_angle_to_matrix(torch.tensor([axis]), torch.tensor([math.radians(degrees)]))


def blob(n: int = 16, centre=(2.0, -1.5, 1.0), sigma: float = 2.5) -> torch.Tensor:
    """A smooth off-centre Gaussian (1, 1, n, n, n) well inside the inscribed sphere."""
    c = torch.arange(n, dtype=torch.float32) - (n - 1) / 2
    d, h, w = torch.meshgrid(c, c, c, indexing="ij")
    r2 = (d - centre[0]) ** 2 + (h - centre[1]) ** 2 + (w - centre[2]) ** 2
    return torch.exp(-r2 / (2 * sigma**2))[None, None]


def relative_l2(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Per-sample ‖u − v‖ / ‖v‖."""
    return (u - v).flatten(1).norm(dim=1) / v.flatten(1).norm(dim=1)


@pytest.fixture(scope="module")
def cube() -> CubeRotations:
    return CubeRotations()


@pytest.fixture(scope="module")
def all_pairs(cube):
    """Every (a, b) of the cube group as two flat index tensors of length 576."""
    g = cube.elements()
    return g.repeat_interleave(24), g.repeat(24)


# --- registry -------------------------------------------------------------------------------------
def test_registry_builds_the_new_groups():
    assert {"so3", "cube", "contrast"} <= set(GROUPS)
    assert isinstance(build_group("so3"), SO3)
    assert isinstance(build_group("cube"), CubeRotations)
    c = build_group("contrast", a_max=3.0, b_max=0.5, inside="foreground", threshold=0.1)
    assert (c.a_max, c.b_max, c.inside, c.threshold) == (3.0, 0.5, "foreground", 0.1)


# --- SO(3): elements ------------------------------------------------------------------------------
def test_so3_group_laws():
    so3 = SO3()
    a, b, c = (so3.sample(256, gen(i)) for i in range(3))
    e = so3.identity(256)
    tol = 1e-5
    assert (so3.distance(so3.compose(e, a), a) < tol).all()
    assert (so3.distance(so3.compose(a, e), a) < tol).all()
    assert (so3.distance(so3.compose(a, so3.inverse(a)), e) < tol).all()
    assert (so3.distance(so3.compose(so3.inverse(a), a), e) < tol).all()
    left, right = so3.compose(so3.compose(a, b), c), so3.compose(a, so3.compose(b, c))
    assert (so3.distance(left, right) < tol).all()
    assert so3.is_identity(e).all() and not so3.is_identity(a).any()
    # distance is the angle of a·bᵀ: symmetric, and a real metric away from 0
    assert torch.allclose(so3.distance(a, b), so3.distance(b, a), atol=tol)
    assert (so3.distance(a, b) > 1e-3).all()


def test_so3_haar_sampling():
    so3 = SO3()
    r = so3.sample(20000, gen(1))
    eye = torch.eye(3).expand_as(r)
    assert torch.allclose(r @ r.transpose(-1, -2), eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(r), torch.ones(20000), atol=1e-5)
    # Haar: E[R] = 0 (entry std ≈ 0.004 at this n) …
    assert r.mean(0).abs().max() < 0.03
    # … and the angle has density (1 − cos θ)/π, mean π/2 + 2/π ≈ 2.207 (uniform angles give π/2)
    assert abs(rotation_angle(r).mean().item() - (math.pi / 2 + 2 / math.pi)) < 0.02
    # the same generator gives the same draw
    assert torch.equal(so3.sample(5, gen(7)), so3.sample(5, gen(7)))


def test_so3_matrix_is_a_representation():
    so3 = SO3()
    a, b = so3.sample(64, gen(2)), so3.sample(64, gen(3))
    assert torch.allclose(so3.matrix(so3.compose(a, b)), so3.matrix(a) @ so3.matrix(b), atol=1e-6)


def test_axis_angle_helpers_agree():
    # right-hand rule in (d, h, w): +90° about d takes h to w
    assert torch.allclose(turn(E_D, 90)[0] @ torch.tensor(E_H), torch.tensor(E_W), atol=1e-6)
    assert torch.allclose(turn(E_H, 90)[0] @ torch.tensor(E_W), torch.tensor(E_D), atol=1e-6)
    assert torch.allclose(turn(E_W, 90)[0] @ torch.tensor(E_D), torch.tensor(E_H), atol=1e-6)
    # matrix → axis, angle → matrix round trip, including half turns (where the skew part is 0)
    r = torch.cat([SO3().sample(200, gen(4)), turn([1.0, 1.0, 0.0], 180), turn(E_W, 180),
                   turn([1.0, -2.0, 0.5], 179.99), turn(E_H, 0.01)])
    axis, angle = matrix_to_axis_angle(r)
    assert torch.allclose(axis.norm(dim=-1), torch.ones(len(r)), atol=1e-5)
    assert torch.allclose(axis_angle_to_matrix(axis, angle), r, atol=1e-4)
    assert matrix_to_axis_angle(torch.eye(3)[None])[1].item() == 0.0


def test_rotation_maths_agrees_with_scipy():
    """scipy's Rotation is the reference for every conversion of the one torch home
    (groups/rotations3d.py), in float64: quaternions (scipy's are scalar-last), rotation vectors
    both ways, angles, Rodrigues' form and the Haar sampler's matrices."""
    from scipy.spatial.transform import Rotation

    from groupact.groups.rotations3d import haar_rotations, quaternion_to_matrix, rodrigues
    q = torch.randn(300, 4, generator=gen(7), dtype=torch.float64)
    q = torch.cat([q, torch.tensor([[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]],
                                   dtype=torch.float64)])          # a half turn, the identity
    ref = Rotation.from_quat(q[:, [1, 2, 3, 0]].numpy())          # (x, y, z, w) for scipy
    assert torch.allclose(quaternion_to_matrix(q), torch.from_numpy(ref.as_matrix()), atol=1e-12)
    rotvec = torch.from_numpy(ref.as_rotvec())
    angle = rotvec.norm(dim=-1)
    axis = torch.where(angle[:, None] > 0, rotvec / angle.clamp_min(1e-300)[:, None],
                       torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    assert torch.allclose(axis_angle_to_matrix(axis, angle), torch.from_numpy(ref.as_matrix()),
                          atol=1e-12)
    assert torch.allclose(rodrigues(axis, angle), torch.from_numpy(ref.as_matrix()), atol=1e-12)
    got_axis, got_angle = matrix_to_axis_angle(torch.from_numpy(ref.as_matrix()))
    assert torch.allclose(got_angle, angle, atol=1e-7)
    # the axis is defined up to sign at a half turn; elsewhere it is scipy's
    keep = (angle > 1e-6) & (angle < math.pi - 1e-6)
    assert torch.allclose(got_axis[keep], axis[keep], atol=1e-7)
    assert torch.allclose(rotation_angle(torch.from_numpy(ref.as_matrix())), angle, atol=1e-7)
    r = haar_rotations(500, gen(3))
    scipy_r = Rotation.from_matrix(r.double().numpy())              # refuses non-rotations
    assert torch.allclose(torch.from_numpy(scipy_r.as_matrix()).float(), r, atol=1e-6)
    # composition order: matrix products compose like scipy's (a * b applies b first)
    a, b = Rotation.random(20, random_state=1), Rotation.random(20, random_state=2)
    ma, mb = (torch.from_numpy(x.as_matrix()) for x in (a, b))
    assert torch.allclose(SO3().compose(ma, mb), torch.from_numpy((a * b).as_matrix()),
                          atol=1e-12)


def test_so3_orbit_elements_turn_about_one_axis():
    so3 = SO3()
    g = so3.orbit_elements(8)
    assert so3.is_identity(g[:1]).all()
    assert torch.allclose(g[:, 0, 0], torch.ones(8))
    assert torch.allclose(g[:, 0, 1:], torch.zeros(8, 2))
    assert torch.allclose(rotation_angle(g[3:4]), torch.tensor([3 * math.pi / 4]), atol=1e-5)


# --- SO(3): the action on volumes ----------------------------------------------------------------
def test_so3_identity_action_returns_input():
    x = torch.rand(3, 2, 7, 8, 9, generator=gen(5))
    out = SO3().act_image(x, SO3().identity(3))
    assert torch.allclose(out, x, atol=1e-5)


def test_so3_quarter_turns_match_rot90():
    """The documented convention: +90° about d, h, w is rot90 from h→w, w→d, d→h."""
    so3 = SO3()
    x = torch.rand(1, 2, 6, 6, 6, generator=gen(6))
    for axis, dims in [(E_D, (-2, -1)), (E_H, (-1, -3)), (E_W, (-3, -2))]:
        out = so3.act_image(x, turn(axis, 90))
        assert torch.allclose(out, torch.rot90(x, 1, dims=dims), atol=1e-5)
        assert not torch.allclose(out, torch.rot90(x, -1, dims=dims), atol=1e-2)
    # non-cubic volumes turn in voxel units: 90° about d on a 4×6×6 box is rot90 of each slice
    y = torch.rand(2, 1, 4, 6, 6, generator=gen(7))
    assert torch.allclose(so3.act_image(y, turn(E_D, 90).expand(2, 3, 3)),
                          torch.rot90(y, 1, dims=(-2, -1)), atol=1e-5)


def test_so3_about_d_axis_is_the_planar_turn_of_each_slice():
    so3 = SO3()
    x = torch.rand(2, 1, 5, 12, 12, generator=gen(8))
    theta = torch.tensor([0.7, 2.9])
    r = axis_angle_to_matrix(torch.tensor([E_D, E_D]), theta)
    slices = x.permute(0, 2, 1, 3, 4).reshape(10, 1, 12, 12)
    planar = rotate_images(slices, theta.repeat_interleave(5))
    planar = planar.reshape(2, 5, 1, 12, 12).permute(0, 2, 1, 3, 4)
    assert torch.allclose(so3.act_image(x, r), planar, atol=1e-5)


def test_so3_action_composes_on_a_smooth_volume():
    so3 = SO3()
    x = blob().expand(16, 1, 16, 16, 16)
    a, b = so3.sample(16, gen(9)), so3.sample(16, gen(10))
    twice = so3.act_image(so3.act_image(x, b), a)
    once = so3.act_image(x, so3.compose(a, b))
    # two trilinear passes blur the peak (1.0) by ≈ 0.07 and the blob by ≈ 4% in L2
    assert (twice - once).abs().amax() < 0.1
    assert (relative_l2(twice, once) < 0.05).all()
    # the order matters: acting with b·a instead is far off, so the check above is not vacuous
    assert (relative_l2(so3.act_image(x, so3.compose(b, a)), once) > 0.15).all()


def test_so3_rejects_images():
    with pytest.raises(GroupactError):
        SO3().act_image(torch.rand(2, 1, 8, 8), SO3().identity(2))


def test_so3_parse_and_describe():
    so3 = SO3()
    r = so3.parse("0,0,1,90")
    assert r.shape == (1, 3, 3) and torch.allclose(r, turn(E_W, 90), atol=1e-6)
    assert torch.allclose(so3.parse(" 0, 0, 2, 90° "), r, atol=1e-6)  # axis length is free
    g = so3.sample(20, gen(11))
    back = torch.cat([so3.parse(s) for s in so3.describe(g)])
    assert (so3.distance(back, g) < 2e-3).all()
    assert so3.describe(so3.identity(1)) == ["1,0,0,0°"]
    for bad in ["", "1,0,90", "0,0,0,90", "a,b,c,d", "1,0,0,nan", "1,0,0,90,1"]:
        with pytest.raises(GroupactError):
            so3.parse(bad)


# --- the cube group ------------------------------------------------------------------------------
def test_cube_table(cube):
    m = cube.matrices
    assert m.shape == (24, 3, 3)
    assert torch.equal(m[0], torch.eye(3, dtype=m.dtype))
    assert torch.allclose(torch.linalg.det(m), torch.ones(24, dtype=m.dtype))
    assert torch.equal((m != 0).sum(-1), torch.ones(24, 3, dtype=torch.long))  # signed perms
    assert torch.equal(m.abs().sum(-1), torch.ones(24, 3, dtype=m.dtype))
    assert len({tuple(x.flatten().tolist()) for x in m}) == 24
    assert torch.equal(cube.elements(), torch.arange(24))
    assert torch.equal(cube.index_of(cube.matrix(cube.elements())), torch.arange(24))
    with pytest.raises(GroupactError):
        cube.index_of(turn(E_D, 45))


def test_cube_group_laws_exact(cube, all_pairs):
    a, b = all_pairs
    e = cube.identity(576)
    assert torch.equal(cube.compose(e, a), a) and torch.equal(cube.compose(a, e), a)
    assert torch.equal(cube.compose(a, cube.inverse(a)), e)
    assert torch.equal(cube.compose(cube.inverse(a), a), e)
    # associativity over all 24³ triples
    x, y, z = torch.cartesian_prod(*[cube.elements()] * 3).unbind(-1)
    assert torch.equal(cube.compose(cube.compose(x, y), z), cube.compose(x, cube.compose(y, z)))
    # each row of the Cayley table is a permutation (Latin square), and the group is not abelian
    assert torch.equal(cube.cayley.sort(-1).values, torch.arange(24).expand(24, 24))
    assert not torch.equal(cube.cayley, cube.cayley.T)
    assert torch.equal(cube.distance(a, b) == 0, a == b)


def test_cube_matrix_is_a_representation_and_agrees_with_so3(cube, all_pairs):
    a, b = all_pairs
    assert torch.equal(cube.matrix(cube.compose(a, b)), cube.matrix(a) @ cube.matrix(b))
    assert torch.allclose(cube.distance(a, b), SO3().distance(cube.matrix(a), cube.matrix(b)),
                          atol=1e-6)


def test_cube_sampling(cube):
    g = cube.sample(24000, gen(12))
    counts = torch.bincount(g, minlength=24)
    assert g.dtype == torch.long and counts.numel() == 24
    assert (counts - 1000).abs().max() < 160  # ≈ 5 standard deviations
    assert (cube.sample_non_identity(2000, gen(13)) != 0).all()


@pytest.mark.parametrize("n", [5, 6])
def test_cube_action_equals_so3_action(cube, n):
    """Same convention: each exact cube turn equals trilinear SO(3) at its matrix (odd, even n)."""
    g = cube.elements()
    x = torch.rand(24, 2, n, n, n, generator=gen(14))
    exact = cube.act_image(x, g)
    assert torch.allclose(exact, SO3().act_image(x, cube.matrix(g)), atol=1e-5)
    assert sum(torch.equal(exact[k], x[k]) for k in range(24)) == 1  # only the identity


@pytest.mark.parametrize("n", [4, 5])
def test_cube_action_composes_exactly(cube, all_pairs, n):
    a, b = all_pairs
    x = torch.rand(576, 1, n, n, n, generator=gen(15))
    twice = cube.act_image(cube.act_image(x, b), a)
    assert torch.equal(twice, cube.act_image(x, cube.compose(a, b)))


def test_cube_action_is_a_faithful_bijection_of_voxels(cube):
    n = 4
    x = torch.arange(n**3, dtype=torch.float32).view(1, 1, n, n, n).expand(24, 1, n, n, n)
    out = cube.act_image(x, cube.elements())
    assert torch.equal(out.flatten(1).sort(-1).values, x.flatten(1))  # a permutation of voxels
    assert len({tuple(v.flatten().tolist()) for v in out}) == 24  # distinct elements differ


def test_cube_four_quarter_turns_are_the_identity(cube):
    x = torch.rand(1, 2, 5, 5, 5, generator=gen(16))
    for axis in (E_D, E_H, E_W):
        q = cube.index_of(turn(axis, 90))
        assert int(q) != 0
        g, y = cube.identity(1), x
        for k in range(4):
            assert (int(g) == 0) == (k == 0)
            g, y = cube.compose(q, g), cube.act_image(y, q)
        assert int(g) == 0 and torch.equal(y, x)


def test_cube_orbit_elements(cube):
    g = cube.orbit_elements(24)
    assert int(g[0]) == 0 and torch.equal(g.sort().values, torch.arange(24))
    q = g[1:2]
    assert torch.equal(cube.compose(q, q), g[2:3]) and torch.equal(cube.compose(q, g[2:3]), g[3:4])


def test_cube_rejects_bad_volumes(cube):
    with pytest.raises(GroupactError):
        cube.act_image(torch.rand(1, 1, 4, 4, 5), cube.identity(1))
    with pytest.raises(GroupactError):
        cube.act_image(torch.rand(1, 1, 4, 4), cube.identity(1))


def test_cube_parse_and_describe(cube):
    g = cube.elements()
    labels = cube.describe(g)
    assert len(set(labels)) == 24 and labels[0] == "1,0,0,0°"
    assert torch.equal(torch.cat([cube.parse(s) for s in labels]), g)
    assert int(cube.parse("1,1,1,120")) == int(cube.index_of(turn([1.0, 1.0, 1.0], 120)))
    for bad in ["1,0,0,45", "1,1,0,90", "x", "0,0,0,90"]:
        with pytest.raises(GroupactError):
            cube.parse(bad)


# --- contrast -------------------------------------------------------------------------------------
def test_contrast_group_laws():
    c = Contrast()
    a, b, d = (c.sample(256, gen(20 + i)) for i in range(3))
    e = c.identity(256)
    tol = 1e-5
    assert torch.allclose(c.compose(e, a), a, atol=tol)
    assert torch.allclose(c.compose(a, e), a, atol=tol)
    assert torch.allclose(c.compose(a, c.inverse(a)), e, atol=tol)
    assert torch.allclose(c.compose(c.inverse(a), a), e, atol=tol)
    assert torch.allclose(c.compose(c.compose(a, b), d), c.compose(a, c.compose(b, d)), atol=tol)
    assert torch.allclose(c.compose(torch.tensor([[2.0, 1.0]]), torch.tensor([[3.0, 0.5]])),
                          torch.tensor([[6.0, 2.0]]))  # u ↦ 3u + 0.5 first, then 2(·) + 1
    assert (c.distance(a, a) == 0).all() and (c.distance(a, b) > 0).all()
    assert c.is_identity(e).all()


def test_contrast_sampling_box():
    c = Contrast(a_max=2.0, b_max=1.0)
    g = c.sample(20000, gen(23))
    la = torch.log(g[:, 0])
    assert la.abs().max() <= math.log(2.0) + 1e-6 and g[:, 1].abs().max() <= 1.0
    assert abs(la.mean().item()) < 0.02 and abs(g[:, 1].mean().item()) < 0.02
    assert la.abs().max() > 0.68 and g[:, 1].abs().max() > 0.99  # fills the box
    assert abs(la.std().item() - math.log(2.0) / math.sqrt(3)) < 0.01  # uniform in log a


def test_contrast_matrix_is_a_representation_of_the_latent_action():
    c = Contrast()
    a, b = c.sample(64, gen(24)), c.sample(64, gen(25))
    assert torch.allclose(c.matrix(c.compose(a, b)), c.matrix(a) @ c.matrix(b), atol=1e-5)
    z = torch.randn(64, 3, 5)
    # act_map is a·z + b, the matrix acting on (z, 1)
    hom = torch.stack([z, torch.ones_like(z)], -2)  # (64, 3, 2, 5)
    via_matrix = (c.matrix(a)[:, None] @ hom)[:, :, 0]
    assert torch.allclose(c.act_map(z, a), via_matrix, atol=1e-5)
    assert torch.allclose(c.act_map(c.act_map(z, b), a), c.act_map(z, c.compose(a, b)), atol=1e-5)


def test_contrast_image_action():
    c = Contrast(a_max=1.5, b_max=0.5)
    x = 0.05 + 0.9 * torch.rand(32, 1, 8, 8, generator=gen(26))
    a, b = c.sample(32, gen(27)), c.sample(32, gen(28))
    assert torch.allclose(c.act_image(c.act_image(x, b), a), c.act_image(x, c.compose(a, b)),
                          atol=1e-4)
    assert torch.allclose(c.act_image(x, c.identity(32)), x, atol=1e-5)
    g = torch.tensor([[2.0, 0.5]])
    expect = torch.sigmoid(2.0 * torch.logit(x[:1]) + 0.5)
    assert torch.allclose(c.act_image(x[:1], g), expect, atol=1e-6)
    # monotone: the order of grey values is kept
    flat, out = x[0].flatten(), c.act_image(x[:1], a[:1])[0].flatten()
    assert torch.equal(flat.argsort(), out.argsort())


def test_contrast_stays_inside_the_unit_interval():
    c = Contrast()
    x = torch.rand(64, 1, 6, 6, generator=gen(29))
    x[:, :, 0] = 0.0
    x[:, :, 1] = 1.0
    out = c.act_image(x, c.sample(64, gen(30)))
    assert torch.isfinite(out).all() and (out > 0).all() and (out < 1).all()


def test_contrast_foreground_only():
    c = Contrast(inside="foreground", threshold=0.05)
    x = torch.rand(16, 1, 3, 8, 8, generator=gen(31))  # volumes are accepted too
    x[x < 0.3] = 0.0
    x[:, :, 0, 0, :4] = 0.05  # exactly at the threshold: background
    g = c.sample(16, gen(32))
    out = c.act_image(x, g)
    back = x <= 0.05
    assert back.float().mean() > 0.2
    assert torch.equal(out[back], x[back])
    full = Contrast().act_image(x, g)
    assert torch.equal(out[~back], full[~back])
    assert not torch.allclose(full[back], x[back])  # without the option the background moves


def test_contrast_input_checks_and_params():
    c = Contrast()
    with pytest.raises(GroupactError):
        c.act_image(torch.rand(2, 8, 8), c.identity(2))
    for bad in [dict(a_max=0.5), dict(b_max=-1.0), dict(eps=0.0), dict(eps=0.5),
                dict(inside="brain"), dict(threshold=1.0)]:
        with pytest.raises(GroupactError):
            Contrast(**bad)


def test_contrast_parse_and_describe():
    c = Contrast()
    assert torch.equal(c.parse("1.5,-0.2"), torch.tensor([[1.5, -0.2]]))
    g = c.sample(20, gen(33))
    back = torch.cat([c.parse(s) for s in c.describe(g)])
    assert torch.allclose(back, g, rtol=1e-3, atol=1e-4)
    assert c.describe(c.identity(1)) == ["a=1,b=0"]
    for bad in ["", "1.5", "0,1", "-1,0", "a,b", "inf,0", "1,2,3"]:
        with pytest.raises(GroupactError):
            c.parse(bad)


def test_contrast_orbit_elements():
    c = Contrast(a_max=2.0)
    g = c.orbit_elements(5)
    assert c.is_identity(g[:1]).all() and len(g) == 5
    assert torch.allclose(g[:, 0].sort().values, torch.tensor([0.5, 2**-0.5, 1.0, 2**0.5, 2.0]))
