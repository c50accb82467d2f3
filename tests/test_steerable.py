"""The polar-Fourier steerable net and action (SO(2) exact for every angle)."""

import math

import pytest
import torch

from groupact.build import model_from_config
from groupact.config import load_config
from groupact.errors import ConfigError
from groupact.groups import SO2, SO3, CyclicRotations
from groupact.laws import smooth_images
from groupact.latent import SteerableAction
from groupact.latent.steerable import fourier_rotation, from_fourier, to_fourier
from groupact.nets.steerable import ToCartesian, ToPolar, steerable_pair

GEN = torch.Generator().manual_seed(0)


def rel(a, b):
    return float((a - b).norm() / b.norm())


def test_fourier_round_trip_of_band_limited_signals():
    f = torch.randn(4, 3, 5, 17, generator=GEN)          # K = 8
    assert torch.allclose(to_fourier(from_fourier(f, 64), 8), f, atol=1e-5)


def test_a_whole_step_shift_is_the_fourier_rotation_exactly():
    """p(φ − θ) with θ = 5 angle steps ↔ R(kθ) on every frequency: the sign convention."""
    p = torch.randn(2, 3, 4, 64, generator=GEN)
    theta = torch.full((2,), 5 * 2 * math.pi / 64)
    shifted = torch.roll(p, 5, -1)
    assert torch.allclose(to_fourier(shifted, 8), fourier_rotation(to_fourier(p, 8), theta),
                          atol=1e-5)


def test_polar_sampling_turns_with_the_image():
    x = smooth_images(6, 28, generator=GEN)
    polar = ToPolar(28, 20, 64, 28 / math.sqrt(2))
    quarter = torch.rot90(x, 1, dims=(-2, -1))           # +90°: 16 of 64 angle steps
    assert torch.allclose(polar(quarter), torch.roll(polar(x), 16, -1), atol=1e-5)
    back = ToCartesian(28, 20, 64, 28 / math.sqrt(2))(polar(x))
    assert rel(back, x) < 0.05                           # smooth blobs survive the round trip


@pytest.mark.parametrize("degrees", [30, 45, 90, 137])
def test_encoder_is_equivariant_by_construction(degrees):
    """Untrained: ‖E(T_θ x) − ρ(θ)E(x)‖²/‖E(T_θ x)‖² is rounding error at 90° (a whole number of
    angle steps) and small at other angles (bilinear T_θ and sub-step shifts)."""
    torch.manual_seed(0)
    enc, _ = steerable_pair(1, 28, 8, (8, 16), 8)
    x = smooth_images(8, 28, generator=GEN)
    theta = torch.full((8,), math.radians(degrees))
    with torch.no_grad():
        z1, z2 = enc(x), enc(SO2().act_image(x, theta))
    err = rel(fourier_rotation(z1, theta), z2) ** 2
    assert err < (1e-8 if degrees == 90 else 5e-3)


def test_steerable_action_accepts_planar_rotations_only():
    assert SteerableAction(CyclicRotations(4))
    with pytest.raises(ConfigError):
        SteerableAction(SO3())
    with pytest.raises(ConfigError):
        SteerableAction(SO2()).check_fibre((10, 16))


@pytest.mark.parametrize("recipe", ["rotmnist-so2", "blocked-mnist-so2"])
def test_so2_recipes_build_the_steerable_model(recipe):
    cfg = load_config(recipe, ["model.channels=8", "model.widths=[8,16]"])
    model = model_from_config(cfg, (1, 28, 28))
    assert model.latent_shape == (8, 10, 17)
    x = torch.rand(2, 1, 28, 28, generator=GEN)
    assert model(x, SO2().sample(2, GEN)).shape == x.shape


def test_steerable_invariants_are_unchanged_by_every_turn():
    act = SteerableAction(SO2())
    z = torch.randn(6, 4, 5, 17, generator=GEN)
    theta = SO2().sample(6, GEN)
    assert torch.allclose(act.invariants(act(z, theta)), act.invariants(z), atol=1e-4)
