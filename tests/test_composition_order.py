"""Composition order where it can be seen: on a non-abelian group (the cube's 24 rotations, whose
action on volumes is exact). On C4, SO(2) or shifts a·b = b·a, so a swapped order in the
evaluation's homomorphism error or in Jin et al.'s pair maker would pass every test; on the cube
it changes the answer, and both must then match the convention compose(a, b) = a·b (b first)."""

import torch

from groupact.data import TensorSet, TransformPairs
from groupact.evaluate.evaluate import homomorphism_error
from groupact.groups import CubeRotations
from groupact.latent import AllVariantMask, SpatialAction
from groupact.model import GroupActionAutoencoder
from groupact.nets import NetSpec, net_entry

CUBE = CubeRotations()


def _relative_sq(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).sum() / b.pow(2).sum())


def test_homomorphism_error_is_zero_for_an_exact_action_and_not_for_a_swapped_order():
    """An untrained cube model with the spatial action: Φ_a Φ_b = Φ_{a·b} exactly (voxels are
    permuted), so the evaluation must report 0; the same pairs compared with Φ_{b·a} (the order
    swapped) differ by a large fraction, which is what a swapped evaluation would report."""
    torch.manual_seed(0)
    encoder, decoder = net_entry("conv3d").build(NetSpec((1, 16, 16, 16), channels=3,
                                                         widths=(4,)))
    model = GroupActionAutoencoder(encoder, decoder, CUBE, AllVariantMask(3), SpatialAction(CUBE))
    x = torch.rand(32, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    assert homomorphism_error(model, x, seed=5) < 1e-12

    gen = torch.Generator().manual_seed(5)       # the evaluation's draws: a, then b
    a, b = CUBE.sample(len(x), gen), CUBE.sample(len(x), gen)
    with torch.no_grad():
        z = model.encode(x)
        twice = model.action(model.action(z, b), a)
        assert _relative_sq(twice, model.action(z, CUBE.compose(a, b))) < 1e-12
        assert _relative_sq(twice, model.action(z, CUBE.compose(b, a))) > 0.1


def test_both_mode_pairs_are_related_by_their_element_on_the_cube_group():
    """pairs.mode=both: x1 = T_g1 x, x2 = T_{g·g1} x, so x2 = T_g x1 exactly (T_{g1·g} x is not,
    for the many g that do not commute with g1)."""
    x = torch.rand(64, 1, 6, 6, 6, generator=torch.Generator().manual_seed(2))
    batch = TransformPairs(CUBE, "both").pairs(TensorSet(x), torch.arange(64),
                                               torch.Generator().manual_seed(3))
    assert torch.equal(batch.x2, CUBE.act_image(batch.x1, batch.g))
    assert not torch.equal(batch.x1, x)                   # x1 is moved too, not the anchor
