"""The law checks (groupact.laws) over every registered group and every action that accepts it,
and proof that they have teeth: deliberately broken groups and actions must fail them."""

import pytest
import torch

from groupact import laws
from groupact.errors import ConfigError
from groupact.groups import (GROUPS, SO2, SO3, CubeRotations, CyclicRotations, CyclicShifts,
                             build_group)
from groupact.latent import MatrixAction, SpatialAction, SteerableAction, build_action

#: every registered group with its default parameters, plus the C_n and shift variants whose
#: actions take other code paths (bilinear C_3 / C_8, shifts by 4-pixel steps)
INSTANCES = {name: build_group(name) for name in GROUPS}
INSTANCES.update({"c3": CyclicRotations(3), "c8": CyclicRotations(8),
                  "shift-unit4": CyclicShifts(28, 4)})
PAIRS = [(gname, kind) for gname, g in INSTANCES.items() for kind in laws.accepted_actions(g)]


@pytest.mark.parametrize("name", INSTANCES)
def test_group_laws(name):
    laws.check_group(INSTANCES[name])


@pytest.mark.parametrize("name", INSTANCES)
def test_image_action_laws(name):
    laws.check_image_action(INSTANCES[name])


@pytest.mark.parametrize("gname,kind", PAIRS, ids=[f"{g}-{k}" for g, k in PAIRS])
def test_action_laws(gname, kind):
    group = INSTANCES[gname]
    action = build_action(kind, group)
    probe = laws.reference_probe(group, action)
    assert probe is not None, f"no data-turn probe for {kind} on {gname}"
    laws.check_action(group, action, probe=probe,
                      fibre_shape=tuple(probe.fn(probe.images[:1]).shape[2:]))


def test_coverage_every_group_has_actions_and_the_expected_ones():
    covered = {g: set(laws.accepted_actions(grp)) for g, grp in INSTANCES.items()}
    assert all(covered.values()), covered
    assert covered["so3"] == {"spatial", "matrix", "learned"}
    assert covered["cube"] == {"spatial", "matrix", "learned"}
    assert covered["so2"] == {"spatial", "matrix", "steerable", "learned"}
    # contrast's ρ = [[a, b], [0, 1]] is no rotation: the matrix action's Gram read-out would
    # not be invariant, so the group says so (matrix_kind) and the matrix action refuses it
    assert covered["contrast"] == {"spatial", "affine"}   # a learned ρ needs a rotation group
    assert "affine" not in covered["so2"]        # cos θ·z − sin θ is not an action
    with pytest.raises(ConfigError, match="needs a rotation group.*use action.kind=affine"):
        build_action("matrix", INSTANCES["contrast"]).check_fibre((2,))


class MirroredSO2(SO2):
    """ρ(θ) = R(θ)·diag(1, −1): orthogonal, a reflection, not a rotation; claims to be one."""

    def matrix(self, g):
        return super().matrix(g) @ torch.diag(torch.tensor([1.0, -1.0]))


def test_a_rotation_group_whose_matrices_reflect_fails_its_laws():
    with pytest.raises(AssertionError, match="matrix_det_is_one|matrix_homomorphism"):
        laws.check_group(MirroredSO2())


# --- the checks have teeth ---------------------------------------------------------------------
class TransposedMatrixAction(MatrixAction):
    """ρ(g)ᵀ instead of ρ(g): for SO(2) still a representation (it is ρ(g⁻¹)), but it turns the
    latent the wrong way; for SO(3) not even a homomorphism."""

    def forward(self, z, g):
        rho = self.group.matrix(g).to(z)
        return torch.einsum("bji,bcj->bci", rho, z)


class SwappedSpatialAction(SpatialAction):
    """Acts with g⁻¹: the composition order (and the turn's direction) reversed."""

    def forward(self, z, g):
        return self.group.act_map(z, self.group.inverse(g))


class SwappedCompose(CubeRotations):
    """compose(a, b) returning b·a: associative and with inverses, but not the documented order."""

    def compose(self, a, b):
        return super().compose(b, a)


def _check(group, action):
    probe = laws.reference_probe(group, action)
    return laws.check_action(group, action, probe=probe,
                             fibre_shape=tuple(probe.fn(probe.images[:1]).shape[2:]))


@pytest.mark.parametrize("group", [SO2(), CyclicRotations(4), SO3(), CubeRotations()],
                         ids=repr)
def test_a_transposed_matrix_action_fails(group):
    with pytest.raises(laws.LawError, match="latent_turn_equals_data_turn"):
        _check(group, TransposedMatrixAction(group))


@pytest.mark.parametrize("group", [SO2(), SO3(), CubeRotations()], ids=repr)
def test_an_inverted_spatial_action_fails(group):
    with pytest.raises(laws.LawError):
        _check(group, SwappedSpatialAction(group))


def test_a_swapped_composition_fails():
    group = SwappedCompose()
    with pytest.raises(laws.LawError, match="compose"):
        laws.check_image_action(group)
    with pytest.raises(laws.LawError, match="matrix_homomorphism"):
        laws.check_group(group)


def test_a_mirrored_steerable_action_fails():
    class Mirrored(SteerableAction):
        def forward(self, z, g):
            return super().forward(z, -self.group.angle(g))

    with pytest.raises(laws.LawError, match="latent_turn_equals_data_turn"):
        _check(SO2(), Mirrored(SO2()))


def test_an_off_centre_turn_fails():
    """Turning latent maps about a different centre than the image (a grid-convention slip)."""
    class OffCentre(SpatialAction):
        def forward(self, z, g):
            return torch.roll(self.group.act_map(torch.roll(z, 1, -1), g), -1, -1)

    with pytest.raises(laws.LawError, match="latent_turn_equals_data_turn"):
        _check(CyclicRotations(4), OffCentre(CyclicRotations(4)))
