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
DATASETS = ["rotmnist", "blocked", "brain3d", "adrenal3d", "planes"]


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
                 "--g", "270", "--output", str(tmp_path / "out.png")]) == 0
    out = torch.from_numpy(np.array(Image.open(tmp_path / "out.png"))).float() / 255
    err = {k: float((out - torch.rot90(digit, k)).pow(2).mean()) for k in range(4)}
    assert min(err, key=err.get) == 3, err
    assert err[3] < 0.01, err           # a trained model: well under the turn's own change
