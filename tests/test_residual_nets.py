"""The residual nets (res2d, res3d): shapes, exact reshapes, the ball mask, the output range, the
mean-voxel start, the recipes that use them, checkpoints, and (slow) short trainings that must
beat both baselines."""

import pytest
import torch
import torch.nn.functional as F

from groupact.build import model_from_config
from groupact.config import load_config
from groupact.errors import ConfigError
from groupact.nets import NetSpec, build_nets, init_output_bias, net_entry
from groupact.nets.residual import ball_mask, depth_to_space, space_to_depth


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GROUPACT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.mark.parametrize("shape, factor, latent", [
    ((1, 16, 16), 2, (6, 8, 8)),
    ((3, 12, 12), 1, (6, 12, 12)),
    ((1, 8, 8, 8), 2, (6, 4, 4, 4)),
    ((1, 12, 12, 12), 2, (6, 6, 6, 6)),
])
def test_latent_shapes(shape, factor, latent):
    name = "res2d" if len(shape) == 3 else "res3d"
    enc, dec = build_nets(name, NetSpec(shape, channels=6, widths=(8,), blocks=1, factor=factor,
                                        ball=True))
    x = torch.rand(3, *shape)
    z = enc(x)
    assert tuple(z.shape) == (3, *latent)
    assert tuple(dec(z).shape) == (3, *shape)


@pytest.mark.parametrize("shape", [(2, 3, 8, 6), (2, 2, 4, 6, 8)])
@pytest.mark.parametrize("r", [1, 2])
def test_space_to_depth_and_back_are_exact_inverses(shape, r):
    x = torch.randn(shape)
    y = space_to_depth(x, r)
    d = x.dim() - 2
    assert y.shape == (shape[0], shape[1] * r ** d, *(s // r for s in shape[2:]))
    assert torch.equal(depth_to_space(y, r), x)
    assert torch.equal(space_to_depth(depth_to_space(y, r), r), y)
    if d == 2:  # torch's own pixel_unshuffle channel order
        assert torch.equal(y, F.pixel_unshuffle(x, r))
        assert torch.equal(depth_to_space(y, r), F.pixel_shuffle(y, r))


def test_space_to_depth_is_lossless_and_local():
    """Each output channel at a coarse voxel holds one pixel of that voxel's r³ block."""
    x = torch.arange(4 ** 3, dtype=torch.float32).reshape(1, 1, 4, 4, 4)
    y = space_to_depth(x, 2)
    assert sorted(y[0, :, 0, 0, 0].tolist()) == sorted(x[0, 0, :2, :2, :2].flatten().tolist())
    assert sorted(y.flatten().tolist()) == x.flatten().tolist()


@pytest.mark.parametrize("dims, side", [(2, 7), (2, 8), (3, 6), (3, 7)])
def test_ball_mask_zeroes_exactly_the_outside_of_the_inscribed_ball(dims, side):
    m = ball_mask(side, dims)
    centres = (2 * torch.arange(side, dtype=torch.float64) + 1) / side - 1  # align_corners=False
    grids = torch.meshgrid(*([centres] * dims), indexing="ij")
    inside = sum(g ** 2 for g in grids) <= 1.0
    assert torch.equal(m.bool(), inside)
    assert 0 < m.sum() < side ** dims
    # symmetric under the grid's own 90° turns and flips, so exact cube/C4 actions keep it
    assert torch.equal(m, m.flip(0)) and torch.equal(m, m.transpose(0, 1))


def test_encoder_latent_is_zero_outside_the_ball_and_decoder_cuts_it_too():
    enc, dec = build_nets("res3d", NetSpec((1, 8, 8, 8), channels=4, widths=(8,), blocks=1,
                                           ball=True))
    z = enc(torch.rand(2, 1, 8, 8, 8))
    outside = ~ball_mask(4, 3).bool()
    assert float(z.detach()[..., outside].abs().max()) == 0.0
    noise = torch.zeros_like(z)
    noise[..., outside] = 100.0  # what a turn could bring in from the corners: ignored
    assert torch.allclose(dec(z + noise), dec(z))
    enc2, _ = build_nets("res2d", NetSpec((1, 8, 8), channels=4, widths=(8,), ball=False))
    with torch.no_grad():
        corner = enc2(torch.rand(2, 1, 8, 8))[..., 0, 0]
    assert float(corner.abs().sum()) > 0  # no mask: corners used


@pytest.mark.parametrize("name, shape", [("res2d", (1, 8, 8)), ("res3d", (1, 8, 8, 8))])
def test_decoder_output_lies_in_the_pixel_range(name, shape):
    _, dec = build_nets(name, NetSpec(shape, channels=4, widths=(8,), blocks=1))
    assert net_entry(name).pixel_range == (0.0, 1.0)
    with torch.no_grad():
        y = dec(50 * torch.randn(5, 4, *(s // 2 for s in shape[1:])))
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


@pytest.mark.parametrize("name, shape", [("res2d", (1, 8, 8)), ("res3d", (1, 8, 8, 8))])
def test_init_output_bias_starts_the_decoder_at_the_mean(name, shape):
    _, dec = build_nets(name, NetSpec(shape, channels=4, widths=(8,), blocks=1))
    init_output_bias(dec, 0.025)
    with torch.no_grad():
        y = dec(torch.zeros(2, 4, *(s // 2 for s in shape[1:])))
    # a zero latent reaches the last conv as a constant, so the output is about the mean
    assert abs(float(y.mean()) - 0.025) < 0.02
    last = [m for m in dec.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))][-1]
    assert torch.allclose(last.bias, torch.full_like(last.bias, torch.logit(torch.tensor(0.025))))


def test_clamped_sigmoid_reaches_exact_black_and_white_and_keeps_learning():
    from groupact.nets.residual import ClampedSigmoid
    out = ClampedSigmoid(0.05)
    x = torch.tensor([-20.0, -4.0, 0.0, 4.0, 20.0], requires_grad=True)
    y = out(x)
    assert y[0] == 0.0 and y[-1] == 1.0 and y[1] == 0.0 and y[3] == 1.0  # σ(±4) is past the margin
    assert abs(float(y[2].detach()) - 0.5) < 1e-6
    # straight through: a pixel clamped at 0 whose target is 1 still gets a gradient
    ((y - 1.0) ** 2).sum().backward()
    assert float(x.grad[1]) < 0
    assert abs(out.inverse(0.025) - torch.logit(torch.tensor((0.025 + 0.05) / 1.1))) < 1e-5
    assert torch.equal(ClampedSigmoid(0.0)(x.detach()), torch.sigmoid(x.detach()))


def test_init_output_bias_uses_the_clamped_sigmoids_inverse():
    _, dec = build_nets("res3d", NetSpec((1, 8, 8, 8), channels=4, widths=(8,), blocks=1,
                                         out_margin=0.05))
    init_output_bias(dec, 0.025)
    with torch.no_grad():
        y = dec(torch.zeros(2, 4, 4, 4, 4))
    assert abs(float(y.mean()) - 0.025) < 0.02


def test_a_bad_factor_or_shape_is_refused_by_name():
    with pytest.raises(ConfigError, match="model.factor"):
        build_nets("res3d", NetSpec((1, 9, 9, 9), factor=2))
    with pytest.raises(ConfigError, match="volumes"):
        build_nets("res3d", NetSpec((1, 8, 8)))
    with pytest.raises(ConfigError, match="square"):
        build_nets("res2d", NetSpec((1, 8, 6)))
    with pytest.raises(ConfigError, match="out_margin"):
        build_nets("res2d", NetSpec((1, 8, 8), out_margin=0.6))


TINY = {"brain3d-so3": (1, 16, 16, 16), "adrenal3d-so3": (1, 12, 12, 12),
        "brain-contrast": (1, 16, 16)}


@pytest.mark.parametrize("recipe", sorted(TINY))
def test_the_recipes_build_the_residual_nets(recipe):
    cfg = load_config(recipe, ["model.widths=[8]", "model.channels=4", "model.blocks=1"])
    assert cfg.model.net in ("res2d", "res3d")
    model = model_from_config(cfg, TINY[recipe])
    x = torch.rand(2, *TINY[recipe])
    g = model.group.sample(2)
    assert model(x, g).shape == x.shape
    assert cfg.model.ball == (cfg.group.name == "so3")
    assert cfg.model.net in cfg.description or cfg.model.net[:-1] in cfg.description.lower() \
        or "residual" in cfg.description.lower()


def test_old_nets_stay_registered_for_old_checkpoints():
    for name in ("conv2d", "conv3d", "authors-mnist", "steerable-polar"):
        net_entry(name)


def test_train_select_picks_best_by_the_named_validation_number(tmp_path):
    import json
    from groupact.train import train_run
    cfg = load_config("brain3d-so3", ["data.n_train=4", "data.n_val=2", "data.n_test=2",
                                      "data.size=16", "model.widths=[8]", "model.channels=4",
                                      "model.blocks=1", "train.epochs=2", "train.batch_size=4",
                                      "train.progress=false"])
    assert cfg.train.select == "val_recon"
    train_run(cfg, tmp_path / "run", log=lambda *_: None)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    best = [r["epoch"] for r in rows if r["best"]]
    assert best[-1] == min(rows, key=lambda r: r["val_recon"])["epoch"]
    with pytest.raises(ConfigError, match="train.select"):
        train_run(load_config("brain3d-so3", ["train.select=psnr"]), tmp_path / "bad",
                  log=lambda *_: None)


def test_a_checkpoint_round_trips(tmp_path):
    from groupact.runs import load_run
    from groupact.train import train_run
    cfg = load_config("brain3d-so3", ["data.n_train=4", "data.n_val=2", "data.n_test=2",
                                      "data.size=16", "model.widths=[8]", "model.channels=4",
                                      "model.blocks=1", "train.epochs=1", "train.batch_size=4",
                                      "train.progress=false"])
    trainer = train_run(cfg, tmp_path / "run", log=lambda *_: None)
    loaded = load_run(tmp_path / "run", "last")
    x = trainer.splits.test.images[:2].float()
    g = trainer.group.sample(2, generator=torch.Generator().manual_seed(0))
    trainer.model.eval()
    assert torch.equal(loaded.model.eval().transform(x, g), trainer.model.transform(x, g))


# --- slow: short trainings of the 3D recipes must beat both baselines by a margin -------------

SHORT = {  # a few minutes each on one CPU thread; the recipes' defaults train for longer
    "brain3d-so3": ["train.epochs=4"],
    "adrenal3d-so3": ["train.epochs=2"],
}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(SHORT))
def test_short_training_beats_doing_nothing_and_the_mean_target(recipe, tmp_path):
    """The protocol's image metrics on its fixed test pairs (without the probes and figures of
    the full evaluation, which cost more than this training)."""
    from groupact.data import build_pair_source
    from groupact.evaluate.evaluate import image_metrics
    from groupact.evaluate.views3d import looks_binary
    from groupact.data import fixed_pairs
    from groupact.train import train_run
    cfg = load_config(recipe, SHORT[recipe] + ["train.progress=false", "train.threads=1"])
    trainer = train_run(cfg, tmp_path / "run", log=lambda *_: None)
    from groupact.runs import load_run
    run = load_run(tmp_path / "run")
    splits = trainer.splits
    source = build_pair_source(cfg, run.model.group, splits)
    pairs = fixed_pairs(source, splits.test, cfg.eval.n_pairs, cfg.eval.seed, non_identity=True,
                        device=torch.device("cpu"))
    m = image_metrics(run.model, pairs, looks_binary(splits.test.images))
    assert m["psnr"] > m["psnr_identity"] + 3.0, m
    assert m["psnr"] > m["psnr_mean_target"] + 2.0, m
    assert m["ssim"] > m["ssim_identity"] + 0.1, m
    assert float(run.model.mask.hard().mean()) >= 0.9   # a volume that turns whole: all variant
