"""The protocol's baselines and latent errors: mean target, centred invariance, orbit pooling."""

import math

import torch
from torch import nn

from groupact.data.pairs import PairBatch
from groupact.evaluate.evaluate import image_metrics
from groupact.evaluate.probe import orbit_pooled
from groupact.evaluate.metrics import mse_per_image, psnr
from groupact.groups import build_group
from groupact.latent import FixedMask, SpatialAction
from groupact.model import GroupActionAutoencoder


def _model(offset: float = 0.0, seed: int = 0) -> GroupActionAutoencoder:
    torch.manual_seed(seed)
    c4 = build_group("c4")
    enc = nn.Sequential(nn.Conv2d(1, 4, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(4, 4, 4, 2, 1))
    with torch.no_grad():
        enc[-1].bias += offset
    dec = nn.Sequential(nn.ConvTranspose2d(4, 4, 4, 2, 1), nn.LeakyReLU(0.2),
                        nn.ConvTranspose2d(4, 1, 4, 2, 1), nn.Sigmoid())
    return GroupActionAutoencoder.for_input(enc, dec, c4, lambda c: FixedMask(c, [0, 1]),
                                            SpatialAction(c4), (1, 28, 28)).eval()


def _pairs(n: int = 12) -> PairBatch:
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(n, 1, 28, 28, generator=gen)
    g = torch.randint(1, 4, (n,), generator=gen)
    return PairBatch(x, build_group("c4").act_image(x, g), g)


def test_the_mean_target_answer_is_scored_against_every_target():
    pairs = _pairs()
    m = image_metrics(_model(), pairs)
    blob = pairs.x2.mean(0, keepdim=True).expand_as(pairs.x2)
    assert math.isclose(m["mse_mean_target"], float(mse_per_image(blob, pairs.x2).mean()),
                        rel_tol=1e-5)
    assert math.isclose(m["psnr_mean_target"], float(psnr(blob, pairs.x2).mean()), rel_tol=1e-5)
    assert math.isclose(m["psnr_identity"], float(psnr(pairs.x1, pairs.x2).mean()), rel_tol=1e-5)


def test_the_invariance_error_is_centred_so_a_constant_offset_does_not_hide_movement():
    """Adding 100 to every latent value leaves z1 − z2 as it is: a centred error stays put; an
    uncentred one (divided by ‖z_i‖²) would drop about 10⁴-fold."""
    pairs = _pairs()
    plain = image_metrics(_model(0.0), pairs)["inv_error"]
    offset = image_metrics(_model(100.0), pairs)["inv_error"]
    assert plain > 0.05
    assert math.isclose(plain, offset, rel_tol=1e-3), (plain, offset)


def test_image_orbit_pooling_is_exactly_invariant_over_the_whole_group():
    model, c4 = _model(), build_group("c4")
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    every = c4.averaging_elements()
    assert every.shape[0] == 4
    pooled = orbit_pooled(model, x, every)
    for k in range(1, 4):
        turned = orbit_pooled(model, torch.rot90(x, k, dims=(-2, -1)), every)
        assert torch.allclose(pooled, turned, atol=1e-5)
    # pooling over a subset (the identity and one quarter turn) is not invariant
    part = orbit_pooled(model, x, every[:2])
    assert not torch.allclose(part, orbit_pooled(model, torch.rot90(x, 1, dims=(-2, -1)),
                                                 every[:2]), atol=1e-3)


def test_dice_thresholds_both_masks_and_scores_overlap():
    from groupact.evaluate.metrics import dice
    a = torch.zeros(3, 1, 4, 4)
    a[:, :, :2] = 0.9                                  # top half on
    b = a.clone()
    b[1] = 0.0
    b[1, :, :1] = 0.7                                  # a quarter, inside a's half
    b[2] = 0.4                                         # below the threshold: empty
    d = dice(a, b)
    assert torch.allclose(d, torch.tensor([1.0, 2 * 4 / (8 + 4), 0.0]))
    assert float(dice(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))) == 1.0


def test_figures_say_when_a_part_of_the_latent_is_empty_and_skip_zero_losses(tmp_path,
                                                                              monkeypatch):
    from groupact.evaluate import figures

    assert "z_i is empty" in figures.empty_part_note(torch.ones(8))
    assert "z_v is empty" in figures.empty_part_note(torch.zeros(8))
    assert figures.empty_part_note(torch.tensor([1.0, 0.0])) is None
    from matplotlib.axes import Axes

    drawn = {}
    real_plot = Axes.plot

    def spy(ax, x, y, *args, label=None, **kw):
        drawn[label] = list(y)
        return real_plot(ax, x, y, *args, label=label, **kw)

    monkeypatch.setattr(Axes, "plot", spy)
    records = [{"epoch": e, "train_recon": 0.1 / e, "train_inv": 0.0, "val_loss": 0.2 / e,
                "val_psnr": 20.0 + e} for e in (1, 2, 3)]
    figures.training_curves(records, tmp_path / "c.png", "t")
    assert (tmp_path / "c.png").stat().st_size > 1000
    assert "train_inv" not in drawn and "train_recon" in drawn   # all-zero: not a log line


def test_3d_figure_titles_give_axis_and_angle_short_enough_to_fit_a_column():
    from groupact.evaluate.run_figures import axis_angle_labels
    so3 = build_group("so3")
    g = so3.parse("1,1,1,120°")
    assert axis_angle_labels(so3, g) == ["axis (1.00, 1.00, 1.00)\n120.0°"]
    c4 = build_group("c4")
    assert axis_angle_labels(c4, torch.tensor([1])) == c4.describe(torch.tensor([1]))
