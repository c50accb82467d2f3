"""A user's own encoder/decoder, defined in a file outside the package, gets every command:
train, resume, evaluate, transform, features and export, through the CLI."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
import yaml

from groupact.cli import main
from groupact.data.mnist import load_mnist5k
from groupact.nets import net_entry

USER_NETS = textwrap.dedent('''
    import torch
    from torch import nn

    def make_pair(spec):
        """28x28 digits -> 8 maps of 7x7 (turned by rot90 under C4) -> 28x28."""
        c = spec.channels
        encoder = nn.Sequential(nn.Conv2d(1, 16, 4, 2, 1), nn.ReLU(),
                                nn.Conv2d(16, c, 4, 2, 1))
        decoder = nn.Sequential(nn.ConvTranspose2d(c, 16, 4, 2, 1), nn.ReLU(),
                                nn.ConvTranspose2d(16, 1, 4, 2, 1), nn.Sigmoid())
        return encoder, decoder

    def not_a_pair(spec):
        return nn.Linear(2, 2)
''')

TINY = ["--set", "data.n_train=640", "--set", "train.lr=0.003", "--set", "data.n_val=64", "--set", "data.n_test=64",
        "--set", "train.batch_size=32", "--set", "train.progress=false",
        "--set", "eval.probe_c=[0.01]", "--set", "eval.figures=false", "--set", "model.channels=8"]


@pytest.fixture()
def user_file(tmp_path, monkeypatch):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "mynets.py").write_text(USER_NETS)
    monkeypatch.chdir(tmp_path / "elsewhere")
    return tmp_path / "elsewhere" / "mynets.py"


def test_a_user_net_trains_resumes_evaluates_transforms_and_exports(user_file, tmp_path,
                                                                     monkeypatch, capsys):
    run = tmp_path / "run"
    assert main(["train", "rotmnist-c4", "--run-dir", str(run), "--set",
                 "model.net=mynets.py:make_pair", "--set", "train.epochs=3", *TINY]) == 0
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["model"]["net"] == f"{user_file}:make_pair"       # recorded with its full path
    monkeypatch.chdir(tmp_path)                                  # the other commands, elsewhere
    assert main(["train", "--resume", "--run-dir", str(run), "--set", "train.epochs=4",
                 "--no-eval", "--trust-code"]) == 0                # the run's net is code
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 4
    assert main(["evaluate", str(run), "--out", str(tmp_path / "e"), "--no-figures",
                 "--trust-code"]) == 0
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert m["psnr"] > m["psnr_identity"]
    digit = load_mnist5k(10, 10, 10).test.images[0, 0].numpy()
    np.save(tmp_path / "d.npy", digit)
    assert main(["transform", str(run), "--input", str(tmp_path / "d.npy"), "--g", "90",
                 "--output", str(tmp_path / "t.npy"), "--trust-code"]) == 0
    assert np.load(tmp_path / "t.npy").shape == (1, 28, 28)
    np.save(tmp_path / "three.npy", np.stack([digit] * 3))         # (N, H, W)
    assert main(["features", str(run), "--input", str(tmp_path / "three.npy"),
                 "--output", str(tmp_path / "f.npy"), "--trust-code"]) == 0
    assert np.load(tmp_path / "f.npy").shape[0] == 3
    assert main(["export", str(run), str(tmp_path / "shared"), "--trust-code"]) == 0
    assert main(["evaluate", str(tmp_path / "shared"), "--out", str(tmp_path / "e2"),
                 "--no-figures", "--no-probes", "--trust-code"]) == 0
    m2 = json.loads((tmp_path / "e2" / "metrics.json").read_text())
    assert m2["psnr"] == m["psnr"]


def test_user_net_mistakes_are_one_line_errors(user_file, tmp_path, capsys):
    for net, needle in (("nowhere.py:make_pair", "nowhere.py does not exist"),
                        ("mynets.py:missing", "has no function 'missing'"),
                        ("no_such_module_xyz:make", "cannot import module 'no_such_module_xyz'"),
                        ("mynets.py:not_a_pair", "must return (encoder, decoder)")):
        code = main(["train", "rotmnist-c4", "--run-dir", str(tmp_path / "r"), "--set",
                     f"model.net={net}", "--set", "train.epochs=1", *TINY])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and needle in err[0], (net, err)
        assert not (tmp_path / "r").exists()


def test_a_user_factory_can_declare_its_pixel_range(tmp_path, monkeypatch):
    (tmp_path / "ranged.py").write_text(USER_NETS + "\nmake_pair.pixel_range = (-1.0, 1.0)\n")
    monkeypatch.chdir(tmp_path)
    entry = net_entry("ranged.py:make_pair")
    assert entry.pixel_range == (-1.0, 1.0)
    from groupact.nets import NetSpec
    enc, dec = entry.build(NetSpec((1, 28, 28), channels=8))
    assert enc(torch.zeros(1, 1, 28, 28)).shape == (1, 8, 7, 7)
