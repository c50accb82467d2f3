"""The small trained models committed in pretrained/: intact, loadable, and they do their job."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from groupact.cli import main
from groupact.data.mnist import load_mnist5k
from groupact.io import verify_checksums
from groupact.runs import load_run

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"
DATASETS = ["rotmnist", "blocked", "rotmnist-so2", "blocked-so2", "brain3d", "adrenal3d", "contrast",
            "planes"]


def test_every_file_matches_its_recorded_checksum():
    assert (PRETRAINED / "SHA256SUMS").is_file()
    assert verify_checksums(PRETRAINED) == []
    total = sum(p.stat().st_size for p in PRETRAINED.rglob("*") if p.is_file())
    assert total < 8e6, total           # "a few MB"


@pytest.mark.parametrize("name", DATASETS)
def test_each_model_loads_with_its_config(name):
    run = load_run(PRETRAINED / name)
    assert not run.model.training
    assert "optimizer" not in run.checkpoint          # weights only


def test_the_rotated_mnist_model_turns_a_test_digit(tmp_path):
    digit = load_mnist5k(3200, 800, 1000).test.images[3, 0]
    Image.fromarray((digit.numpy() * 255).astype(np.uint8)).save(tmp_path / "d.png")
    assert main(["transform", str(PRETRAINED / "rotmnist"), "--input", str(tmp_path / "d.png"),
                 "--g", "270", "--output", str(tmp_path / "out.png"), "--scale", "1"]) == 0
    out = torch.from_numpy(np.array(Image.open(tmp_path / "out.png"))).float() / 255
    err = {k: float((out - torch.rot90(digit, k)).pow(2).mean()) for k in range(4)}
    assert min(err, key=err.get) == 3, err
    assert err[3] < 0.01, err           # a trained model: well under the turn's own change


def test_features_of_turned_digits_barely_move_with_the_invariant_readout(tmp_path):
    """`groupact features`: the default read-out (model.readout = invariant) hardly changes when
    the digits turn, while the raw latent z changes completely; written as (N, F) .npy."""
    digits = load_mnist5k(3200, 800, 1000).test.images[:64, 0]
    np.save(tmp_path / "up.npy", (digits.numpy() * 255).astype(np.uint8))
    np.save(tmp_path / "turned.npy", (torch.rot90(digits, 1, (1, 2)).numpy() * 255)
            .astype(np.uint8))
    run = str(PRETRAINED / "rotmnist")
    feats = {}
    for name in ("up", "turned"):
        for readout in (None, "z"):
            out = tmp_path / f"{name}-{readout}.npy"
            argv = ["features", run, "--input", str(tmp_path / f"{name}.npy"), "--output", str(out)]
            assert main(argv + (["--readout", readout] if readout else [])) == 0
            feats[name, readout] = torch.from_numpy(np.load(out))
    variant = int(load_run(run).model.mask.hard().sum())
    # z_i as it is, plus the orbit mean and mean square of each variant 7×7 map
    assert feats["up", None].shape == (64, (64 - variant) * 49 + 2 * variant * 49)
    assert feats["up", "z"].shape == (64, 64 * 49)

    def change(key):
        a, b = feats["up", key], feats["turned", key]
        return float((a - b).pow(2).sum() / a.pow(2).sum())

    assert change(None) < 0.05 and change("z") > 0.5, (change(None), change("z"))


def test_features_refuse_bad_inputs_in_one_line(tmp_path, capsys):
    run = str(PRETRAINED / "rotmnist")
    np.save(tmp_path / "bad.npy", np.zeros((3, 5, 5)))
    np.save(tmp_path / "ok.npy", np.zeros((2, 28, 28)))
    cases = [["--input", str(tmp_path / "bad.npy"), "--output", str(tmp_path / "a.npy")],
             ["--input", str(tmp_path / "missing.npy"), "--output", str(tmp_path / "b.npy")],
             ["--input", str(tmp_path / "ok.npy"), "--output", str(tmp_path / "c.png")]]
    for argv in cases:
        assert main(["features", run] + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(e.startswith("groupact: error:") for e in err), err
    assert not any((tmp_path / n).exists() for n in ("a.npy", "b.npy", "c.png"))


def test_the_so2_model_turns_test_digits_by_any_angle():
    """pretrained/rotmnist-so2 (steerable latent): 30°, 45° and 137° through the latent match
    the bilinear turn of the image (≈ 29.6 dB measured on the whole test split)."""
    from groupact.evaluate.metrics import psnr
    model = load_run(PRETRAINED / "rotmnist-so2").model
    digits = load_mnist5k(3200, 800, 1000).test.images[:32]
    for degrees in (30.0, 45.0, 137.0):
        g = torch.full((32,), degrees * torch.pi / 180)
        assert float(psnr(model.transform(digits, g), model.group.act_image(digits, g)).mean()) > 26


@pytest.mark.parametrize("name, bars", [
    # the bars for the shipped models (brain: SSIM 0.85, +5 dB over the mean target;
    # adrenal: Dice 0.75), raised to what the 0.4 recipes without L_const clear with a margin, on
    # the first 24 of the protocol's fixed test pairs (the whole test split is measured by
    # `groupact evaluate`, docs/RESULTS.md: brain 34.62 dB, SSIM 0.976; adrenal Dice 0.939)
    ("brain3d", {"ssim": 0.95, "psnr_over_mean_target": 15.0}),
    ("adrenal3d", {"dice": 0.9, "ssim_over_identity": 0.3}),
    ("contrast", {"psnr_over_identity": 3.0, "ssim_over_identity": 0.0}),
])
def test_the_shipped_volume_and_contrast_models_meet_their_bars(name, bars, tmp_path, monkeypatch):
    from groupact.data import build_pair_source, load_data
    from groupact.evaluate.evaluate import image_metrics
    from groupact.evaluate.views3d import looks_binary
    from groupact.data import fixed_pairs

    monkeypatch.setenv("GROUPACT_CACHE", str(tmp_path / "cache"))
    run = load_run(PRETRAINED / name)
    splits = load_data(run.cfg.data)
    assert splits.fingerprint() == run.checkpoint["data_fingerprint"]
    source = build_pair_source(run.cfg, run.model.group, splits)
    pairs = fixed_pairs(source, splits.test, 24, run.cfg.eval.seed, True, torch.device("cpu"))
    with torch.no_grad():
        m = image_metrics(run.model, pairs, looks_binary(splits.test.images))
    got = {"ssim": m["ssim"], "dice": m.get("dice"),
           "psnr_over_mean_target": m["psnr"] - m["psnr_mean_target"],
           "psnr_over_identity": m["psnr"] - m["psnr_identity"],
           "ssim_over_identity": m["ssim"] - m["ssim_identity"]}
    for key, bar in bars.items():
        assert got[key] >= bar, (key, got)


@pytest.mark.slow
def test_the_shipped_planes_model_turns_the_plane_and_keeps_the_sky(tmp_path, monkeypatch):
    """pretrained/planes (render-composite with the sky copy and a 2-pixel cut margin, ALD; 7
    epochs at lr 1e-3, then 3 at 1e-4) on the first 64 of the protocol's test pairs: above doing
    nothing, a sky better than the input's where the plane was, and it uses g (measured on 1,000
    pairs: +3.5 dB, background +5.96 dB, a wrong g costs 1.61 dB; docs/datasets/planes.md). Needs
    the Debian packages."""
    from groupact.data import build_pair_source, fixed_pairs, load_data
    from groupact.data.planes.debian import debian_model_files
    from groupact.errors import DataError
    from groupact.evaluate.evaluate import image_metrics
    try:
        debian_model_files()
    except DataError as err:
        pytest.skip(str(err))
    monkeypatch.setenv("GROUPACT_CACHE", str(tmp_path / "cache"))
    run = load_run(PRETRAINED / "planes")
    splits = load_data(run.cfg.data)
    assert splits.fingerprint() == run.checkpoint["data_fingerprint"]
    source = build_pair_source(run.cfg, run.model.group, splits)
    pairs = fixed_pairs(source, splits.test, 64, run.cfg.eval.seed, True, torch.device("cpu"))
    with torch.no_grad():
        m = image_metrics(run.model, pairs)
    assert m["psnr"] - m["psnr_identity"] >= 2.5, m
    assert m["psnr_background"] - m["psnr_background_identity"] >= 4.5, m
    assert m["wrong_g_cost"] >= 1.0, m
