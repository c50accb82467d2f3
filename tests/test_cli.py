"""The command line end to end on tiny data, and its one-line errors for user mistakes."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from groupact.cli import main
from groupact.data.mnist import load_mnist5k

TINY = ["--set", "data.n_train=640", "--set", "data.n_val=64", "--set", "data.n_test=64",
        "--set", "train.lr=0.003", "--set", "train.batch_size=32",
        "--set", "train.epochs=3", "--set", "train.progress=false", "--set", "eval.probe_c=[0.01]"]

FLAT_KEYS = ["psnr", "ssim", "psnr_identity", "ssim_identity", "inv_error", "equiv_error",
             "homomorphism_error", "mask_fraction", "probe_zi", "probe_zv", "probe_z",
             "probe_zi_upright", "probe_zv_upright", "probe_z_upright", "psnr_wrong_g",
             "probe_zinv", "probe_zinv_upright"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "rotmnist-c4", "--run-dir", str(d)] + TINY) == 0
    return d


def test_train_writes_metrics_and_figures(run_dir):
    m = json.loads((run_dir / "eval" / "metrics.json").read_text())
    for key in FLAT_KEYS:
        assert key in m, key
    assert m["homomorphism_error"] == 0.0          # rot90 on maps is an exact representation
    # the default probe: scikit-learn's, converged, at a C of the grid chosen on validation
    assert m["probes_solver"] == "sklearn" and m["probes_converged"] is True
    assert set(m["probes_c"].values()) == {0.01}          # the one C these tests ask for
    assert m["probes_items"] == {"train": 640, "val": 64, "test": 64}
    assert m["probe_z"] > 2 * m["probe_chance"]
    for fig in ("reconstructions.png", "orbit.png", "latent_maps.png", "swap.png",
                "training_curves.png", "mask.png"):
        assert (run_dir / "eval" / "figures" / fig).stat().st_size > 1000, fig
    assert "PSNR" in (run_dir / "eval" / "summary.md").read_text()


def test_evaluate_is_repeatable(run_dir, tmp_path):
    assert main(["evaluate", str(run_dir), "--out", str(tmp_path / "e"), "--no-figures"]) == 0
    a = json.loads((run_dir / "eval" / "metrics.json").read_text())
    b = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert a["psnr"] == b["psnr"] and a["probe_z"] == b["probe_z"]


def test_evaluate_without_probes_keeps_the_image_metrics(run_dir, tmp_path):
    assert main(["evaluate", str(run_dir), "--out", str(tmp_path / "e"), "--no-figures",
                 "--no-probes"]) == 0                            # --out wins over eval-quick
    a = json.loads((run_dir / "eval" / "metrics.json").read_text())
    b = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert a["psnr"] == b["psnr"] and "probe_orbit" in a
    assert not [k for k in b if k.startswith("probe_")]
    assert "linear probe" not in (tmp_path / "e" / "summary.md").read_text()


def test_a_quick_evaluation_goes_beside_the_full_one(run_dir, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    full = (run / "eval" / "metrics.json").read_bytes()
    assert main(["evaluate", str(run), "--no-probes", "--pairs", "50", "--no-figures"]) == 0
    quick = json.loads((run / "eval-quick" / "metrics.json").read_text())
    assert quick["n_pairs"] == 50 and "probe_z" not in quick
    assert (run / "eval" / "metrics.json").read_bytes() == full     # the protocol's one kept
    assert main(["train", "rotmnist-c4", "--run-dir", str(run), "--overwrite"] + TINY[:12]
                + ["--set", "train.epochs=1", "--no-eval"]) == 0   # still a groupact run folder
    assert not (run / "eval-quick").exists()


def test_orbit_baselines_can_be_left_out_and_the_other_probes_stay(tmp_path):
    from groupact.evaluate.evaluate import evaluate_run

    d = tmp_path / "run"
    assert main(["train", "rotmnist-c4", "--run-dir", str(d), "--no-eval"] + TINY[:12]
                + ["--set", "train.epochs=1", "--set", "eval.probe_c=[0.01]",
                   "--set", "eval.orbit_probes=false"]) == 0
    m = evaluate_run(d, tmp_path / "e", figures_on=False, log=lambda _: None)
    assert "probe_z" in m and "probe_zinv" in m
    assert not [k for k in m if "orbit" in k]


def test_transform_turns_a_digit(run_dir, tmp_path):
    digit = load_mnist5k(10, 10, 10).test.images[0, 0]
    Image.fromarray((digit.numpy() * 255).astype(np.uint8)).save(tmp_path / "d.png")
    assert main(["transform", str(run_dir), "--input", str(tmp_path / "d.png"), "--g", "90",
                 "--output", str(tmp_path / "out.png"), "--scale", "1"]) == 0
    out = torch.from_numpy(np.array(Image.open(tmp_path / "out.png"))).float() / 255
    turned = torch.rot90(digit, 1)
    # the output is closer to the turned digit than to the input or the other turns
    err = {k: float((out - torch.rot90(digit, k)).pow(2).mean()) for k in range(4)}
    assert min(err, key=err.get) == 1, err
    assert err[1] < float((turned - digit).pow(2).mean())
    assert main(["transform", str(run_dir), "--input", str(tmp_path / "d.png"), "--orbit", "4",
                 "--output", str(tmp_path / "orbit.png"), "--scale", "1"]) == 0
    strip = np.asarray(Image.open(tmp_path / "orbit.png"))
    assert strip.shape == (28 + 14, 5 * 28, 3)                   # tiles, then a label band
    assert np.array_equal(strip[:28, :28, 0], np.asarray(Image.open(tmp_path / "d.png")))


def test_transform_pngs_are_scaled_up_and_an_orbit_longer_than_the_group_is_refused(
        run_dir, tmp_path, capsys):
    digit = load_mnist5k(10, 10, 10).test.images[0, 0].numpy()
    np.save(tmp_path / "d.npy", digit[:, :, None])               # (H, W, C): channels last
    assert main(["transform", str(run_dir), "--input", str(tmp_path / "d.npy"), "--g", "90",
                 "--output", str(tmp_path / "big.png")]) == 0
    big = np.asarray(Image.open(tmp_path / "big.png")).astype(float) / 255
    assert big.shape == (112, 112)                                # 28 px × 4 by default
    assert np.array_equal(big[::4, ::4], big[1::4, 1::4])         # pixel repetition, no blur
    assert main(["transform", str(run_dir), "--input", str(tmp_path / "d.npy"), "--g", "90",
                 "--output", str(tmp_path / "raw.npy")]) == 0
    raw = np.load(tmp_path / "raw.npy")
    assert raw.shape == (1, 28, 28)
    assert np.abs(big[::4, ::4] - np.clip(raw[0], 0, 1)).max() <= 1 / 255 + 1e-6
    _one_line_error(capsys, ["transform", str(run_dir), "--input", str(tmp_path / "d.npy"),
                             "--orbit", "8", "--output", str(tmp_path / "o8.png")],
                    "has 4 elements")
    assert not (tmp_path / "o8.png").exists()
    many = np.stack([digit] * 3)[..., None]                       # (N, H, W, C)
    np.save(tmp_path / "many.npy", many)
    assert main(["features", str(run_dir), "--input", str(tmp_path / "many.npy"),
                 "--output", str(tmp_path / "f.npy")]) == 0
    np.save(tmp_path / "many_cf.npy", many[:, None, :, :, 0])     # (N, C, H, W)
    assert main(["features", str(run_dir), "--input", str(tmp_path / "many_cf.npy"),
                 "--output", str(tmp_path / "f_cf.npy")]) == 0
    assert np.allclose(np.load(tmp_path / "f.npy"), np.load(tmp_path / "f_cf.npy"), atol=1e-5)


def _one_line_error(capsys, argv, needle):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("groupact: error:"), err
    assert needle in err[0], err[0]


def test_user_mistakes_are_one_line_errors(run_dir, tmp_path, capsys):
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "big.png")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    _one_line_error(capsys, ["transform", str(run_dir), "--input", str(tmp_path / "big.png"),
                             "--g", "90", "--output", str(tmp_path / "o.png")], "32×32")
    _one_line_error(capsys, ["transform", str(run_dir), "--input", str(tmp_path / "junk.png"),
                             "--g", "90", "--output", str(tmp_path / "o.png")], "cannot read")
    _one_line_error(capsys, ["transform", str(tmp_path / "nope"), "--input", "x.png", "--g", "90",
                             "--output", str(tmp_path / "o.png")], "does not exist")
    _one_line_error(capsys, ["transform", str(run_dir), "--input", str(tmp_path / "big.png"),
                             "--g", "45", "--output", str(tmp_path / "o.png")], "32×32")
    _one_line_error(capsys, ["train", "rotmnist-c4", "--set", "train.epoks=3"], "train.epochs")
    _one_line_error(capsys, ["train", "rotmnist-c4", "--run-dir", str(tmp_path / "r"),
                             "--set", "data.kind=mnist", "--set", f"data.path={tmp_path}/mn"],
                    "train-images-idx3-ubyte")
    assert not (tmp_path / "o.png").exists()


def test_console_entry_point_and_info():
    out = subprocess.run([sys.executable, "-m", "groupact.cli", "info"], capture_output=True,
                         text=True, check=True).stdout
    assert "rotmnist-c4" in out and "so3" in out
    bad = subprocess.run([sys.executable, "-m", "groupact.cli", "train", "rotmnist-c4", "--set",
                          "nope=1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_version_is_the_installed_distributions(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"groupact {version('groupact')}"


def test_info_of_a_recipe_prints_the_config_train_would_use(capsys, tmp_path):
    import yaml

    from groupact.config import Config, from_dict, load_config, recipe_names, save_config

    assert main(["info", "brain-contrast", "--set", "train.epochs=3"]) == 0
    out = capsys.readouterr().out
    head, _, body = out.partition("\n\n")
    assert head.startswith("brain-contrast:") and "estimator=flip" in " ".join(head.split())
    shown = from_dict(Config, yaml.safe_load(body))
    assert shown == load_config("brain-contrast", ["train.epochs=3"])
    assert "σ(a·logit(x) + b)" in body                      # unicode as itself, not \u03c3
    save_config(shown, tmp_path / "c.yaml")
    assert (tmp_path / "c.yaml").read_text(encoding="utf-8") == body
    assert main(["info"]) == 0
    listing = capsys.readouterr().out
    assert all(f"  {name} " in listing for name in recipe_names())
    _one_line_error(capsys, ["info", "--set", "train.epochs=3"], "needs a recipe")


def test_a_reader_that_leaves_the_pipe_is_not_an_error():
    shell = subprocess.run(f"'{sys.executable}' -m groupact.cli info | head -1", shell=True,
                           capture_output=True, text=True, check=True)
    assert shell.stdout.startswith("recipes") and shell.stderr == ""


def test_report_names_each_run_by_its_folder_and_recipe(run_dir, tmp_path, capsys):
    import shutil

    other = tmp_path / "manual"
    shutil.copytree(run_dir / "eval", other / "eval")
    assert main(["report", str(run_dir), str(other), "--output", str(tmp_path / "t.md")]) == 0
    lines = (tmp_path / "t.md").read_text().splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert [r[0] for r in rows] == [f"{run_dir.as_posix()} (rotmnist-c4)",
                                    f"{other.as_posix()} (rotmnist-c4)"]
    m = json.loads((run_dir / "eval" / "metrics.json").read_text())
    for key, title in (("psnr", "PSNR (dB)"), ("psnr_mean_target", "PSNR mean target")):
        assert rows[0][head.index(title)] == f"{m[key]:.2f}"
    # one name per metric: the same headers as the reproduction's tables
    from groupact.evaluate.labels import title as label
    assert "inv. error" in head and label("probe_zi_upright") in head
