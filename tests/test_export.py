"""Exported (slim) runs: evaluate/transform accept them, resume refuses them; checksums."""

import pytest
import torch

from groupact.cli import main
from groupact.config import load_config
from groupact.evaluate.evaluate import evaluate_run
from groupact.io import verify_checksums, write_checksums
from groupact.runs import RunPaths, export_run, load_run
from groupact.train import train_run

TINY = ["data.n_train=128", "data.n_val=32", "data.n_test=32", "train.epochs=1",
        "train.progress=false", "eval.probe_c=[0.01]", "eval.figures=false"]


@pytest.fixture(scope="module")
def run_and_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    train_run(load_config("rotmnist-c4", TINY), root / "run", log=lambda *_: None)
    evaluate_run(root / "run", log=lambda *_: None)
    export_run(root / "run", root / "slim")
    return root / "run", root / "slim"


def test_export_keeps_the_weights_and_drops_the_training_state(run_and_export):
    run, slim = run_and_export
    a, b = load_run(run).model.state_dict(), load_run(slim).model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert RunPaths(slim).best.stat().st_size < 0.5 * RunPaths(run).best.stat().st_size
    assert not RunPaths(slim).last.exists()
    state = torch.load(RunPaths(slim).best, weights_only=True)
    assert "optimizer" not in state and "torch_rng" not in state
    for name in ("metrics.json", "summary.md"):       # the model travels with its numbers
        assert (slim / "eval" / name).read_bytes() == (run / "eval" / name).read_bytes()


def test_exported_run_evaluates_and_transforms_but_does_not_resume(run_and_export, tmp_path,
                                                                    capsys):
    _, slim = run_and_export
    assert main(["evaluate", str(slim), "--out", str(tmp_path / "e"), "--no-figures"]) == 0
    assert (tmp_path / "e" / "metrics.json").is_file()
    assert main(["train", "--resume", "--run-dir", str(slim)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("groupact: error:")


def test_checksums_catch_a_changed_or_missing_file(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.bin").write_bytes(b"123")
    (tmp_path / "y.txt").write_text("hello")
    write_checksums(tmp_path)
    assert verify_checksums(tmp_path) == []
    (tmp_path / "y.txt").write_text("hullo")
    (tmp_path / "a" / "x.bin").unlink()
    assert sorted(verify_checksums(tmp_path)) == ["a/x.bin", "y.txt"]


def test_export_command_writes_checksums_and_refuses_bad_targets(run_and_export, tmp_path,
                                                                 capsys):
    run, _ = run_and_export
    out = tmp_path / "shared"
    assert main(["export", str(run), str(out)]) == 0
    assert verify_checksums(out) == []
    assert "checkpoints/best.pt" in (out / "SHA256SUMS").read_text()
    assert main(["export", str(run), str(out)]) == 2                 # not empty: refused
    assert main(["export", str(tmp_path / "nope"), str(tmp_path / "o2")]) == 2
    assert not (tmp_path / "o2").exists()                             # nothing half-written
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("groupact: error:") for e in err)
