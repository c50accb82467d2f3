"""Long training checks of the paper's claims (run with `python -m pytest -m slow`)."""

import pytest
import torch

from groupact.config import load_config
from groupact.data import Occluder
from groupact.evaluate.evaluate import evaluate_run
from groupact.train import train_run

pytestmark = pytest.mark.slow


def test_rotmnist_c4_paper_recipe(tmp_path):
    """The paper's recipe as the authors published it (50 epochs, 3,200 digits): 27.8-28.3 dB
    over 3 seeds, beside their script's 27.8-28.4 (benchmarks/faithful.py); the mask ends partly
    invariant (about 70 % variant), as theirs (62-69 %)."""
    train_run(load_config("rotmnist-c4", ["train.progress=false"]), tmp_path / "r",
              log=lambda *_: None)
    m = evaluate_run(tmp_path / "r", log=lambda *_: None, figures_on=False)
    assert m["psnr"] > 27.4 and m["psnr_identity"] < 10.0
    assert 0.5 < m["mask_fraction"] < 0.9
    assert m["homomorphism_error"] == 0.0


def test_blocked_mnist_c4_puts_the_block_in_zi(tmp_path):
    """The learned mask splits the latent: D(0, z_i) draws the block, D(z_v, 0) the digit."""
    trainer = train_run(load_config("blocked-mnist-c4", ["train.epochs=20",
                                                         "train.progress=false"]),
                        tmp_path / "r", log=lambda *_: None)
    model = trainer.model.eval()
    digits = trainer.splits.test.images[:256]
    block = Occluder(7, 1.0).sample(256, 28, 28, torch.Generator().manual_seed(0), "cpu")
    x = Occluder.paint(digits, block)
    with torch.no_grad():
        zv, zi = model.split(model.encode(x))
        from_zi, from_zv = model.decode(zi), model.decode(zv)

    def corr(a, b):
        a, b = a.flatten(1) - a.flatten(1).mean(1, True), b.flatten(1) - b.flatten(1).mean(1, True)
        return float((a * b).sum(1).div(a.norm(dim=1) * b.norm(dim=1) + 1e-8).mean())

    assert 0.2 < float(model.mask.hard().mean()) < 0.9
    assert corr(from_zi, block) > corr(from_zi, digits) + 0.2
    assert corr(from_zv, digits) > corr(from_zv, block) + 0.2


def test_brain3d_so3_uses_the_rotation(tmp_path):
    """The 3D recipe learns to turn volumes: it beats both doing nothing and the same model told
    another pair's rotation (a model that ignored g would score the same there).

    The res3d latent (32×16³ for 32³ volumes) carries detail finer than its own grid, which a
    trilinear turn of the 16³ volumes cannot move exactly: its relative equivariance error is
    about 0.1 (0.14 on adrenal3d-so3 at the recipe's default), where the old 8³ conv3d latent
    held only smooth features (0.005) and decoded blobs."""
    cfg = load_config("brain3d-so3", ["train.epochs=12", "train.progress=false",
                                      "eval.figures=false", "eval.probe_c=[0.01]"])
    train_run(cfg, tmp_path / "run", log=lambda *_: None)
    m = evaluate_run(tmp_path / "run", log=lambda *_: None)
    assert m["psnr"] > m["psnr_identity"] + 3.0, m
    assert m["psnr"] > m["psnr_wrong_g"] + 3.0, m
    assert m["equiv_error"] < 0.3, m


def test_rotmnist_so2_steerable_turns_by_any_angle(tmp_path):
    """The steerable polar-Fourier latent: sharp at every angle and equivariant to ≤ 0.05 (issue
    11's bar; measured ≈ 27.9 dB and 0.0014 after 9 epochs, docs/SO2.md). 8 epochs here."""
    cfg = load_config("rotmnist-so2", ["train.epochs=8", "train.progress=false",
                                       "eval.figures=false", "eval.probe_c=[0.01]"])
    train_run(cfg, tmp_path / "r", log=lambda *_: None)
    m = evaluate_run(tmp_path / "r", log=lambda *_: None)
    assert m["psnr"] > 25.0 and m["equiv_error"] < 0.05, m
    assert m["homomorphism_error"] < 1e-6, m
