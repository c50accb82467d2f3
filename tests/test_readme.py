"""The README's and docs' commands, as written: every `groupact …` line of their shell blocks
(README.md, docs/**/*.md) parses, every
training command's config loads and builds its model on its data's shape, and the commands that
are quick to run for real (info, reproduce --dry-run, transform and features on the shipped
models) run. Training and the full evaluations are run end to end by the other tests on tiny
data (test_cli.py, test_user_nets.py, test_recipes_3d.py).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from groupact.build import model_from_config
from groupact.cli import _parser, main
from groupact.config import load_config
from groupact.data.mnist import load_mnist5k

ROOT = Path(__file__).resolve().parents[1]

#: the image shape each dataset kind gives at its default size (as tests/test_config.py)
SHAPES = {"mnist5k": (1, 28, 28), "mnist": (1, 28, 28), "npz": (1, 28, 28),
          "folder": (1, 28, 28), "brain3d": (1, 32, 32, 32), "adrenal3d": (1, 28, 28, 28),
          "parcels3d": (1, 28, 28, 28), "brain2d": (1, 64, 64), "planes": (3, 64, 64),
          "planes-debian": (3, 64, 64)}


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def readme_commands(paths=DOCS) -> list[list[str]]:
    """argv of every groupact command in the ```bash blocks of ``paths`` (torchrun's
    included)."""
    out = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        for block in re.findall(r"```bash\n(.*?)```", text, re.S):
            lines = block.replace("\\\n", " ").splitlines()
            for line in lines:
                line = line.split(" # ")[0].strip()
                if "-m groupact.cli " in line:
                    line = "groupact " + line.split("-m groupact.cli ", 1)[1]
                if line.startswith("groupact "):
                    out.append(shlex.split(line)[1:])
    return out


COMMANDS = readme_commands()


def test_the_readme_has_the_commands_this_test_reads():
    kinds = {argv[0] for argv in COMMANDS}
    assert {"train", "evaluate", "transform", "features", "export", "reproduce",
            "info", "demo"} <= kinds and len(COMMANDS) >= 25
    in_readme = {argv[0] for argv in readme_commands([ROOT / "README.md"])}
    assert {"train", "evaluate", "transform", "features", "info"} <= in_readme


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(a)[:60] for a in COMMANDS])
def test_every_readme_command_parses_and_its_training_config_builds(argv, tmp_path,
                                                                    monkeypatch):
    args = _parser().parse_args(argv)
    if args.command != "train" or args.resume:
        return
    monkeypatch.chdir(tmp_path)
    if any("mynets.py" in a for a in argv):          # the README's own-net example file
        (tmp_path / "mynets.py").write_text(
            "from torch import nn\n\ndef make_pair(spec):\n"
            "    c = spec.channels\n"
            "    return (nn.Sequential(nn.Conv2d(1, 16, 4, 2, 1), nn.ReLU(),"
            " nn.Conv2d(16, c, 4, 2, 1)),\n"
            "            nn.Sequential(nn.ConvTranspose2d(c, 16, 4, 2, 1), nn.ReLU(),"
            " nn.ConvTranspose2d(16, 1, 4, 2, 1), nn.Sigmoid()))\n")
    cfg = load_config(args.recipe, args.overrides)
    shape = SHAPES[cfg.data.kind]
    if cfg.data.size:
        shape = (shape[0],) + (cfg.data.size,) * (len(shape) - 1)
    model = model_from_config(cfg, shape)
    assert model.latent_shape


@pytest.fixture()
def digit_files(tmp_path, monkeypatch):
    """digit.png and digits.npy where the README's commands look for them, and the shipped
    models under pretrained/."""
    digits = load_mnist5k(10, 10, 10).test.images[:4, 0].numpy()
    Image.fromarray((digits[0] * 255).astype(np.uint8)).save(tmp_path / "digit.png")
    np.save(tmp_path / "digits.npy", digits)
    (tmp_path / "pretrained").symlink_to(ROOT / "pretrained")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("argv", [a for a in COMMANDS if a[0] in ("transform", "features")
                                  and a[1].startswith("pretrained/")
                                  and a[a.index("--input") + 1] in ("digit.png", "digits.npy")],
                         ids=lambda a: " ".join(a)[:60])
def test_the_readme_commands_on_the_shipped_models_run_as_written(argv, digit_files):
    assert main(argv) == 0
    out = Path(argv[argv.index("--output") + 1])
    assert out.is_file() and out.stat().st_size > 100


@pytest.mark.parametrize("argv", [a for a in COMMANDS if a[0] in ("info", "reproduce")
                                  and "--tables-only" not in a],
                         ids=lambda a: " ".join(a)[:60])
def test_the_readme_info_and_reproduce_commands_run(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    if argv[0] == "reproduce":
        argv = argv + ["--dry-run"]                  # the plan and its runs, nothing trained
    assert main(argv) == 0
    assert capsys.readouterr().out.strip()
