"""Masks (ALD with straight-through gradients, fixed, all) and latent actions (exactness, laws)."""

import torch

from groupact.groups import SO2, CyclicRotations, CyclicShifts, build_group
from groupact.latent import (AffineAction, ALDMask, AllVariantMask, FixedMask, MatrixAction,
                             SpatialAction)
from groupact.model import GroupActionAutoencoder

GEN = torch.Generator().manual_seed(1)


def test_ald_forward_is_hard_and_backward_is_sigmoid_gradient():
    mask = ALDMask(6, tau=0.5)
    with torch.no_grad():
        mask.logits.copy_(torch.tensor([-2.0, -0.1, 0.0, 0.1, 2.0, 0.7]))
    m = mask()
    assert torch.equal(m.detach(), torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0]))
    upstream = torch.arange(1.0, 7.0)
    (m * upstream).sum().backward()
    s = torch.sigmoid(mask.logits.detach())
    assert torch.allclose(mask.logits.grad, upstream * s * (1 - s))


def test_ald_threshold_tau():
    mask = ALDMask(3, tau=0.7)
    with torch.no_grad():
        mask.logits.copy_(torch.tensor([0.5, 0.9, 1.0]))  # σ = 0.62, 0.71, 0.73
    assert mask.hard().tolist() == [0.0, 1.0, 1.0]


def test_fixed_and_all_masks():
    assert FixedMask(5, [0, 3])().tolist() == [1, 0, 0, 1, 0]
    assert FixedMask.first_fraction(8, 0.5)().tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert AllVariantMask(4)().tolist() == [1, 1, 1, 1]
    assert not any(p.requires_grad for p in FixedMask(3, [1]).parameters())


def test_spatial_c4_action_is_exact_and_a_homomorphism():
    c4 = CyclicRotations(4)
    act = SpatialAction(c4)
    z = torch.randn(32, 8, 7, 7, generator=GEN)
    a, b = c4.sample(32, GEN), c4.sample(32, GEN)
    out = act(z, a)
    for i in range(32):
        assert torch.equal(out[i], torch.rot90(z[i], int(a[i]), dims=(-2, -1)))
    assert torch.equal(act(act(z, b), a), act(z, c4.compose(a, b)))


def test_spatial_shift_action_exact():
    s = CyclicShifts(28, 4)
    act = SpatialAction(s)
    z = torch.randn(16, 4, 7, 7, generator=GEN)
    a, b = s.sample(16, GEN), s.sample(16, GEN)
    assert torch.equal(act(act(z, b), a), act(z, s.compose(a, b)))


def test_matrix_action_is_a_representation():
    for group in (SO2(), CyclicRotations(6), CyclicShifts(28, 4)):
        act = MatrixAction(group)
        k = group.matrix_dim
        z = torch.randn(20, 5, k, generator=GEN)
        a, b = group.sample(20, GEN), group.sample(20, GEN)
        assert torch.allclose(act(act(z, b), a), act(z, group.compose(a, b)), atol=1e-5)
        # rotations keep fibre lengths
        assert torch.allclose(act(z, a).norm(dim=-1), z.norm(dim=-1), atol=1e-5)


def test_affine_action_on_contrast():
    group = build_group("contrast")
    act = AffineAction(group)
    z = torch.randn(10, 3, 4, 4, generator=GEN)
    g = group.sample(10, GEN)
    a, b = g[:, 0].view(-1, 1, 1, 1), g[:, 1].view(-1, 1, 1, 1)
    assert torch.allclose(act(z, g), a * z + b, atol=1e-6)
    h = group.sample(10, GEN)
    assert torch.allclose(act(act(z, h), g), act(z, group.compose(g, h)), atol=1e-5)


def _toy_model(mask):
    enc = torch.nn.Conv2d(1, 4, 4, 4)
    dec = torch.nn.ConvTranspose2d(4, 1, 4, 4)
    return GroupActionAutoencoder(enc, dec, CyclicRotations(4), mask,
                                  SpatialAction(CyclicRotations(4)), (4, 7, 7))


def test_model_moves_variant_channels_and_keeps_the_rest():
    model = _toy_model(FixedMask(4, [1, 2]))
    z = torch.randn(8, 4, 7, 7, generator=GEN)
    g = torch.ones(8, dtype=torch.long)
    out = model.act(z, g)
    assert torch.equal(out[:, [0, 3]], z[:, [0, 3]])
    assert torch.equal(out[:, [1, 2]], torch.rot90(z[:, [1, 2]], 1, dims=(-2, -1)))
    zv, zi = model.split(z)
    assert torch.equal(zv + zi, z)
    assert torch.equal(zv[:, [0, 3]], torch.zeros_like(zv[:, [0, 3]]))


def test_mask_gradient_reaches_logits_through_the_model():
    mask = ALDMask(4)
    model = _toy_model(mask)
    x = torch.rand(4, 1, 28, 28, generator=GEN)
    target = torch.rand(4, 1, 28, 28, generator=GEN)
    torch.nn.functional.mse_loss(model(x, torch.ones(4, dtype=torch.long)), target).backward()
    assert mask.logits.grad is not None and mask.logits.grad.abs().sum() > 0


# --- invariant read-outs: unchanged by the action, and still informative ---------------------

def _invariant_cases():
    cube = build_group("cube")
    so3 = build_group("so3")
    return [
        ("c4 spatial", SpatialAction(CyclicRotations(4)), torch.randn(5, 3, 7, 7, generator=GEN),
         CyclicRotations(4)),
        ("shift spatial", SpatialAction(CyclicShifts(28, 4)),
         torch.randn(5, 3, 7, 7, generator=GEN), CyclicShifts(28, 4)),
        ("cube spatial", SpatialAction(cube), torch.randn(5, 2, 4, 4, 4, generator=GEN), cube),
        ("so2 matrix", MatrixAction(SO2()), torch.randn(5, 6, 2, generator=GEN), SO2()),
        ("c4 matrix", MatrixAction(CyclicRotations(4)), torch.randn(5, 6, 2, generator=GEN),
         CyclicRotations(4)),
        ("so3 matrix", MatrixAction(so3), torch.randn(5, 6, 3, generator=GEN), so3),
        ("contrast affine", AffineAction(build_group("contrast")),
         torch.randn(5, 4, 3, 3, generator=GEN), build_group("contrast")),
    ]


def test_invariant_readout_is_exactly_invariant_and_informative():
    for name, action, z, group in _invariant_cases():
        g = group.sample_non_identity(z.shape[0], GEN)
        before, after = action.invariants(z), action.invariants(action(z, g))
        assert before.shape[0] == z.shape[0] and before.dim() == 2, name
        assert torch.allclose(before, after, atol=1e-4, rtol=1e-4), \
            (name, float((before - after).abs().max()))
        # informative: different latents give different features (not a constant)
        assert float((before[0] - before[1]).abs().max()) > 1e-2, name


def test_invariant_readout_of_continuous_so2_spatial_is_exact_on_its_subgroup():
    action = SpatialAction(SO2())
    z = torch.randn(4, 3, 9, 9, generator=GEN)
    # a quarter turn is exact on the grid and permutes the C8 averaging set
    quarter = torch.full((4,), torch.pi / 2)
    assert torch.allclose(action.invariants(z), action.invariants(action(z, quarter)), atol=1e-5)


def test_model_invariant_features_keep_z_i_and_read_z_v():
    c4 = CyclicRotations(4)
    model = GroupActionAutoencoder(torch.nn.Identity(), torch.nn.Identity(), c4,
                                   FixedMask(4, [0, 1]), SpatialAction(c4), (4, 5, 5))
    z = torch.randn(3, 4, 5, 5, generator=GEN)
    f = model.invariant_features(z)
    assert torch.equal(f[:, :50], z[:, 2:].flatten(1))           # z_i as it is
    assert f.shape[1] == 50 + 2 * 2 * 25                          # + mean and mean square of z_v
    g = torch.tensor([1, 2, 3])
    moved = model.act(z, g)
    assert torch.allclose(model.invariant_features(moved), f, atol=1e-6)
    all_inv = GroupActionAutoencoder(torch.nn.Identity(), torch.nn.Identity(), c4,
                                     FixedMask(4, []), SpatialAction(c4), (4, 5, 5))
    assert torch.equal(all_inv.invariant_features(z), z.flatten(1))
