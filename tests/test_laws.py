"""The law checks (groupact.laws) over every registered group and every action that accepts it,
by what the parts declare; proof that they have teeth (deliberately broken groups and actions must
fail them) and that a part which declares nothing fails instead of dropping out of the checks."""

import re
from pathlib import Path

import pytest
import torch

import groupact.groups
from groupact import laws
from groupact.errors import ConfigError
from groupact.groups import (GROUPS, SO2, SO3, CubeRotations, CyclicRotations, CyclicShifts,
                             build_group)
from groupact.latent import (LatentAction, MatrixAction, SpatialAction, SteerableAction,
                             build_action)
from groupact.registry import Registry

ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "ARCHITECTURE.md"

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


# --- declarations: what a new part gets, and what it gets when it declares nothing -------------
def _documented_group(monkeypatch) -> type:
    """The group class of docs/ARCHITECTURE.md's example, run as written (its registration
    recorded, not made, so the registries stay as they are)."""
    block = re.search(r"\*\*A group\*\*.*?```python\n(.*?)```",
                      ARCHITECTURE.read_text(encoding="utf-8"), re.S).group(1)
    registered = []
    monkeypatch.setattr(groupact.groups, "register_group", lambda *a, **k: registered.append(a))
    namespace: dict = {}
    exec(compile(block, str(ARCHITECTURE), "exec"), namespace)
    assert [r[0] for r in registered] == ["c2"]
    return registered[0][1]


def test_the_documented_new_group_gets_every_law_a_built_in_group_gets(monkeypatch):
    """C2 from the docs against C4 (both exact planar turns with a 2×2 rotation ρ): the same
    group, image-action and action laws, the matrix action and the centroid law included. Only
    the steerable action differs: it turns by an angle, which the example does not define."""
    c2 = laws.check_all(_documented_group(monkeypatch)())
    c4 = laws.check_all(CyclicRotations(4))
    assert set(c4) - set(c2) == {"action:steerable"}, (sorted(c2), sorted(c4))
    assert {"action:matrix", "action:spatial", "action:learned"} <= set(c2)
    assert "centroid_follows_matrix" in c2["image_action"]
    for part in c2:
        assert set(c2[part]) == set(c4[part]), part
        assert all(err <= 1e-5 for err in c2[part].values()), (part, c2[part])


class UndeclaredTurns(CyclicRotations):
    """C4 with a rotation matrix but no word on what ρ(g) moves."""

    turns_coordinates = None


def test_a_group_with_a_matrix_that_declares_nothing_fails_loudly():
    group = UndeclaredTurns(4)
    with pytest.raises(laws.LawError, match="turns_coordinates"):
        laws.check_image_action(group)
    with pytest.raises(laws.LawError, match="turns_coordinates"):   # not silently dropped
        laws.accepted_actions(group)
    with pytest.raises(laws.LawError, match="turns_coordinates"):
        laws.check_all(group)


class Silent(LatentAction):
    """An action that acts (the identity) but declares no probe."""

    def forward(self, z, g):
        return z


def test_an_action_that_declares_no_probe_fails_loudly(monkeypatch):
    registry = Registry("model.action.kind", "model.action")
    registry.register("spatial", SpatialAction, "built in")
    registry.register("silent", Silent, "declares nothing")
    monkeypatch.setattr(laws, "ACTIONS", registry)
    with pytest.raises(laws.LawError, match="Silent.*declares no reference_probe"):
        laws.accepted_actions(CyclicRotations(4))
    with pytest.raises(laws.LawError, match="declares no reference_probe"):
        laws.check_all(SO2())

