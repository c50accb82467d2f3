"""Estimating g between two images through the latent (model.estimate_g, groupact align).

Exact recovery on exact actions, with stated tolerances: every cube, C4 and shift element on
random latents; steerable latents turned by random angles; contrast (a, b); SO(3) volume latents
turned by random rotations. Each checks the direction (Φ_ĝ z1 = z2, never z1 = Φ_ĝ z2: the
elements are not their own inverses) and that the invariant channels do not matter. Then the
ambiguity of symmetric latents, the search grid's covering radius, the `--g` text of every group,
a shipped model end to end, and the command's one-line refusals.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from groupact import load_run
from groupact.cli import main
from groupact.errors import GroupactError
from groupact.groups import GROUPS, build_group
from groupact.groups.base import smooth_images
from groupact.latent import AffineAction, MatrixAction, SpatialAction, SteerableAction
from groupact.latent.estimate import AMBIGUITY_RATIO, Estimate, estimate_in_images, \
    estimate_latent, refine_in_images

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"

#: tolerances of the recoveries below, radians (continuous groups) or (a, b) units
STEERABLE_TOL = 1e-4          # closed form in float64, returned in float32
SO3_SPATIAL_TOL = math.radians(0.5)     # trilinear turns of smooth 12³ volumes: the search's floor
SO3_MATRIX_TOL = math.radians(0.1)
CONTRAST_TOL = 1e-4


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def with_invariant_noise(z2: torch.Tensor, mask: torch.Tensor, seed: int = 9) -> torch.Tensor:
    """z2 with its invariant channels replaced by noise: the estimate must not look at them."""
    noise = torch.randn(z2.shape, generator=gen(seed))
    keep = mask.bool().view(1, -1, *([1] * (z2.dim() - 2)))
    return torch.where(keep, z2, noise)


def moved_error(action, z1, z2, g, mask) -> float:
    """‖Φ_g z1 − z2‖ / ‖z2‖ on the variant channels."""
    keep = mask.bool()
    return float((action(z1, g)[:, keep] - z2[:, keep]).norm() / z2[:, keep].norm())


# --- exact recovery -----------------------------------------------------------------------------
@pytest.mark.parametrize("name, fibre", [("cube", (6, 6, 6)), ("c4", (7, 7)), ("shift", (7, 7))])
def test_every_element_of_a_finite_group_is_recovered_exactly(name, fibre):
    group = build_group(name, **({"size": 7} if name == "shift" else {}))
    action = SpatialAction(group)
    g = group.elements()
    mask = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    z1 = torch.randn(len(g), 5, *fibre, generator=gen())
    z2 = with_invariant_noise(action(z1, g), mask)
    est = estimate_latent(action, z1, z2, mask)
    assert est.method == "exhaustive"
    assert torch.equal(est.g, g)
    assert float(est.score.max()) < 1e-10
    assert not bool(est.ambiguous.any())
    assert moved_error(action, z1, z2, est.g, mask) < 1e-6          # Φ_ĝ z1 = z2 ...
    not_involution = group.distance(g, group.inverse(g)) > 0
    assert bool((group.distance(est.runner_up, est.g) > 0).all())   # another element
    if bool(not_involution.any()):                                  # ... not z1 = Φ_ĝ z2
        inverse = group.inverse(g)[not_involution]
        assert moved_error(action, z1[not_involution], z2[not_involution], inverse, mask) > 0.5


def test_steerable_latents_turned_by_random_angles_are_recovered_in_closed_form():
    so2 = build_group("so2")
    action = SteerableAction(so2)
    mask = torch.tensor([1.0, 1.0, 0.0, 1.0])
    z1 = torch.randn(32, 4, 5, 17, generator=gen(1))
    theta = so2.sample(32, gen(2))
    z2 = with_invariant_noise(action(z1, theta), mask)
    est = estimate_latent(action, z1, z2, mask)
    assert est.method == "fourier"
    assert float(so2.distance(est.g, theta).max()) < STEERABLE_TOL
    assert float(est.score.max()) < 1e-8
    assert moved_error(action, z1, z2, est.g, mask) < 1e-4
    assert moved_error(action, z1, z2, so2.inverse(est.g), mask) > 0.1  # the other direction
    assert not bool(est.ambiguous.any())


def test_contrast_is_recovered_by_least_squares():
    contrast = build_group("contrast")
    action = AffineAction(contrast)
    mask = torch.tensor([1.0, 0.0, 1.0])
    z1 = torch.randn(16, 3, 6, 6, generator=gen(3))
    ab = contrast.sample(16, gen(4))
    z2 = with_invariant_noise(action(z1, ab), mask)
    est = estimate_latent(action, z1, z2, mask)
    assert est.method == "least-squares"
    assert float((est.g - ab).abs().max()) < CONTRAST_TOL
    assert bool(torch.isinf(est.runner_up_score).all()) and not bool(est.ambiguous.any())
    flat = torch.ones(2, 3, 6, 6)                                    # z1 constant: a undetermined
    assert bool(estimate_latent(action, flat, flat, mask).ambiguous.all())


def test_so3_volume_latents_turned_by_random_rotations_are_recovered():
    so3 = build_group("so3")
    action = SpatialAction(so3)
    mask = torch.tensor([1.0, 1.0, 0.0])
    z1 = smooth_images(3, 12, 3, 3, gen(5))
    rot = so3.sample(3, gen(6))
    z2 = with_invariant_noise(action(z1, rot), mask)
    est = estimate_latent(action, z1, z2, mask, grid_size=256)
    assert est.method == "grid+refine"
    assert float(so3.distance(est.g, rot).max()) < SO3_SPATIAL_TOL
    assert moved_error(action, z1, z2, est.g, mask) < 0.02
    assert moved_error(action, z1, z2, so3.inverse(est.g), mask) > 0.3


def test_so3_matrix_latents_are_recovered():
    so3 = build_group("so3")
    action = MatrixAction(so3)
    z1 = torch.randn(8, 6, 3, generator=gen(7))
    rot = so3.sample(8, gen(8))
    est = estimate_latent(action, z1, action(z1, rot), torch.ones(6), grid_size=256)
    assert float(so3.distance(est.g, rot).max()) < SO3_MATRIX_TOL


def test_image_space_search_turns_x1_onto_x2():
    so2, c4 = build_group("so2"), build_group("c4")
    x = smooth_images(6, 28, 2, 1, gen(10))
    theta = so2.sample(6, gen(11))
    est = estimate_in_images(so2, x, so2.act_image(x, theta))
    assert float(so2.distance(est.g, theta).max()) < math.radians(0.1)
    quarter = torch.ones(6, dtype=torch.long)                        # 90°, not its inverse 270°
    assert torch.equal(estimate_in_images(c4, x, c4.act_image(x, quarter)).g, quarter)


def _rough(group, g: torch.Tensor, off: torch.Tensor, far: torch.Tensor) -> Estimate:
    """An estimate as a latent search leaves it: ``off`` from the truth, runner-up ``far``."""
    inf = torch.full((len(g),), math.inf)
    return Estimate(g=off, score=torch.ones(len(g)), runner_up=far,
                    runner_up_score=torch.where(torch.arange(len(g)) % 2 == 0, 2.0, inf),
                    ambiguous=torch.zeros(len(g), dtype=torch.bool), method="grid+refine")


def test_the_image_polish_brings_a_rough_so3_estimate_to_the_exact_turn():
    so3 = build_group("so3")
    x1 = smooth_images(4, 16, 3, 1, gen(30))
    rot = so3.sample(4, gen(31))
    x2 = so3.act_image(x1, rot)
    axis = torch.randn(4, 3, generator=gen(32))
    off = so3.exp_step(rot, math.radians(5.0) * axis / axis.norm(dim=1, keepdim=True))
    far = so3.compose(so3.sample(4, gen(33)), rot)
    assert float(so3.distance(off, rot).min()) > math.radians(4.9)
    est = refine_in_images(so3, x1, x2, _rough(so3, rot, off, far))
    assert est.method == "grid+refine+image polish"
    assert float(so3.distance(est.g, rot).max()) < math.radians(0.1)
    assert float(est.score.max()) < 1e-4                              # the images' residual now
    # the polished answer is never worse on the pixels than the rough one it started from
    rough = ((so3.act_image(x1, off) - x2).pow(2).flatten(1).sum(1)
             / x2.pow(2).flatten(1).sum(1))
    assert bool((est.score <= rough).all())
    assert not bool(est.ambiguous.any())


def test_the_image_polish_on_so2_and_what_it_leaves_alone():
    so2, c4 = build_group("so2"), build_group("c4")
    x1 = smooth_images(6, 28, 2, 1, gen(34))
    theta = so2.sample(6, gen(35))
    x2 = so2.act_image(x1, theta)
    est = refine_in_images(so2, x1, x2, _rough(so2, theta, theta + math.radians(4.0),
                                               theta + math.pi))
    assert float(so2.distance(est.g, theta).max()) < math.radians(0.1)
    # a runner-up on the other side of the circle stays a second basin, scored on the pixels
    finite = torch.isfinite(est.runner_up_score)
    assert bool(finite[0::2].all()) and not bool(finite[1::2].any())
    assert float(so2.distance(est.runner_up[0::2], theta[0::2]).min()) > math.radians(45)
    # an ambiguous latent answer is settled by the pixels: the runner-up is polished too, and
    # where it fits better it becomes ĝ
    wrong_first = _rough(so2, theta, theta + math.pi, theta + math.radians(3.0))
    wrong_first.ambiguous[:] = True
    est = refine_in_images(so2, x1, x2, wrong_first)
    even = torch.arange(6) % 2 == 0                    # runner-ups with a score; odd: none (inf)
    assert float(so2.distance(est.g[even], theta[even]).max()) < math.radians(0.1)
    assert float(so2.distance(est.runner_up[even], theta[even] + math.pi).max()) < 0.5
    # with no runner-up there is nothing to settle: ĝ stays in the basin it was given
    assert float(so2.distance(est.g[~even], theta[~even]).min()) > 2.0
    assert bool(torch.isinf(est.runner_up_score[~even]).all())
    # a finite group's estimate is exact already: returned as it came
    q = torch.ones(6, dtype=torch.long)
    found = estimate_in_images(c4, x1, c4.act_image(x1, q))
    assert refine_in_images(c4, x1, c4.act_image(x1, q), found) is found


# --- ambiguity, grid, text ----------------------------------------------------------------------
def test_a_latent_symmetric_under_half_turns_is_reported_ambiguous():
    c4 = build_group("c4")
    action = SpatialAction(c4)
    z = torch.randn(4, 3, 7, 7, generator=gen(12))
    sym = z + torch.rot90(z, 2, dims=(-2, -1))
    g = c4.elements()
    est = estimate_latent(action, sym, action(sym, g), torch.ones(3))
    assert bool(est.ambiguous.all())
    assert torch.equal(c4.distance(est.g, est.runner_up), torch.full((4,), 2.0))
    clear = estimate_latent(action, z, action(z, g), torch.ones(3))
    assert not bool(clear.ambiguous.any())
    steer = SteerableAction(build_group("so2"))                      # only even frequencies:
    f = torch.randn(3, 2, 4, 9, generator=gen(13))                   # a half turn moves nothing
    f[..., 1:3] = 0
    f[..., 5:7] = 0
    est = estimate_latent(steer, f, steer(f, torch.tensor([0.3, 1.0, 2.0])), torch.ones(2))
    assert bool(est.ambiguous.all())
    assert float((est.runner_up_score - est.score).abs().max()) < 1e-5
    assert AMBIGUITY_RATIO > 1


def test_so3_search_grid_covers_the_group_within_its_stated_radius():
    so3 = build_group("so3")
    grid, radius = so3.search_grid(512)
    draws = so3.sample(1000, gen(14))
    nearest = so3.distance(draws.repeat_interleave(512, 0), grid.repeat(1000, 1, 1))
    assert float(nearest.view(1000, 512).min(1).values.max()) <= radius


@pytest.mark.parametrize("name", list(GROUPS))
def test_to_text_is_what_parse_reads_back(name):
    group = build_group(name)
    g = group.sample(16, gen(15))
    back = torch.cat([group.parse(t) for t in group.to_text(g)])
    assert float(group.distance(back, g).max()) < 1e-4


def test_estimate_refuses_mismatched_pairs_and_an_empty_variant_part():
    c4 = build_group("c4")
    action = SpatialAction(c4)
    z = torch.randn(2, 3, 7, 7)
    with pytest.raises(GroupactError, match="differ in shape"):
        estimate_latent(action, z, z[:1], torch.ones(3))
    with pytest.raises(GroupactError, match="no channel variant"):
        estimate_latent(action, z, z, torch.zeros(3))


# --- shipped models -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    from groupact.data.mnist import load_mnist5k
    return load_mnist5k(10, 10, 10).test.images[:8]


def test_the_shipped_c4_model_recovers_every_turn_of_test_digits(digits):
    model = load_run(PRETRAINED / "rotmnist").model
    g = torch.arange(8) % 4
    est = model.estimate_g(digits, model.group.act_image(digits, g))
    assert torch.equal(est.g, g)


def test_the_shipped_so2_model_recovers_angles_of_test_digits(digits):
    model = load_run(PRETRAINED / "rotmnist-so2").model
    theta = model.group.sample(8, gen(16))
    est = model.estimate_g(digits, model.group.act_image(digits, theta))
    assert float(model.group.distance(est.g, theta).max()) < math.radians(2.0)


# --- the command --------------------------------------------------------------------------------
def _png(path: Path, image: np.ndarray) -> None:
    Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8)).save(path)


def test_align_prints_the_element_that_transform_reads_and_writes_the_turned_input(
        digits, tmp_path, capsys):
    digit = digits[3, 0].numpy()
    _png(tmp_path / "a.png", digit)
    _png(tmp_path / "b.png", np.rot90(digit, 1).copy())              # 90° counter-clockwise
    assert main(["align", str(PRETRAINED / "rotmnist"), "--input", str(tmp_path / "a.png"),
                 "--target", str(tmp_path / "b.png"), "--output", str(tmp_path / "o.npy")]) == 0
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines()
                 if ": " in line)
    group = build_group("c4")
    assert int(group.parse(lines["g"])[0]) == 1                      # not 270°, its inverse
    assert float(lines["score"]) < 0.1 and lines["ambiguous"] == "no"
    assert int(group.parse(lines["runner-up"].split(" score ")[0])[0]) != 1
    written = np.load(tmp_path / "o.npy")
    a = np.asarray(Image.open(tmp_path / "a.png"), np.float32) / 255
    assert np.array_equal(written[0], np.rot90(a, 1))                # T_ĝ of the input's pixels


def test_align_refuses_bad_inputs_with_one_line_and_writes_nothing(tmp_path, capsys):
    run = str(PRETRAINED / "rotmnist")
    _png(tmp_path / "a.png", np.zeros((28, 28)))
    _png(tmp_path / "big.png", np.zeros((32, 32)))
    np.save(tmp_path / "volume.npy", np.zeros((32, 32, 32), np.float32))
    out = tmp_path / "o.png"
    cases = [("big.png", "32×32"), ("volume.npy", "this model takes 28×28"),
             ("missing.png", "does not exist")]
    for target, needle in cases:
        code = main(["align", run, "--input", str(tmp_path / "a.png"), "--target",
                     str(tmp_path / target), "--output", str(out)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("groupact: error:"), err
        assert needle in err[0], err[0]
        assert not out.exists()
    code = main(["align", run, "--input", str(tmp_path / "a.png"), "--target",
                 str(tmp_path / "a.png"), "--output", str(tmp_path / "a.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "is the input" in err[0]


def test_align_polish_refines_the_shipped_so2_models_angle_on_the_pixels(digits, tmp_path, capsys):
    run = PRETRAINED / "rotmnist-so2"
    group = load_run(run).model.group
    theta = torch.tensor([math.radians(37.0)])
    np.save(tmp_path / "a.npy", digits[3:4].numpy())
    np.save(tmp_path / "b.npy", group.act_image(digits[3:4], theta).numpy())
    found = {}
    for flag in ([], ["--polish"]):
        assert main(["align", str(run), "--input", str(tmp_path / "a.npy"), "--target",
                     str(tmp_path / "b.npy"), *flag]) == 0
        lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines()
                     if ": " in line)
        found[bool(flag)] = (float(group.distance(group.parse(lines["g"]), theta)[0]),
                             float(lines["score"]))
    assert found[False][0] < math.radians(2.0)                       # the latent's own answer
    assert found[True][0] < math.radians(0.05)                       # polished on the pixels
    assert found[True][1] < 1e-4                                     # the images' residual
