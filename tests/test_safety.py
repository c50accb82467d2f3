"""A user's data is safe: what `--overwrite`, a second process, a diverging run, a full disk or a
kill can and cannot do to the files. test_robustness.py has the bad-input table and
the kill-and-resume chain of `train`; this file has the data-loss cases, the locks, and kills of
`evaluate`, `export` and `reproduce` through real processes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from groupact.cli import main
from groupact.config import load_config
from groupact.errors import GroupactError
from groupact.io import (LOCK_NAME, FolderLock, folder_built_aside, load_checkpoint, read_jsonl,
                         verify_checksums)
from groupact.train import TRASH, train_run

TINY = ["data.n_train=64", "data.n_val=32", "data.n_test=32", "train.epochs=1",
        "train.batch_size=32", "train.progress=false", "train.threads=1", "eval.probe_c=[0.01]"]


def quiet(*_args) -> None:
    """A log that says nothing."""


def tree(root: Path) -> dict[str, str]:
    """Every file (by content) and folder under root: what a user would call 'my files'."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else
            hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(Path(root).rglob("*"))}


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("groupact: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One tiny trained run, made once; tests copy it before changing anything."""
    run = tmp_path_factory.mktemp("trained") / "run"
    train_run(load_config("rotmnist-c4", TINY), run, log=quiet)
    return run


def copy_run(src: Path, dst: Path) -> Path:
    import shutil
    shutil.copytree(src, dst)
    return dst


def poison_loss_at(monkeypatch, step: int) -> None:
    """Make the loss of training step ``step`` (1-based) NaN."""
    import groupact.train.trainer as T
    real = T.get_loss

    def poisoned(kind):
        loss_fn = real(kind)
        calls = {"n": 0}

        def loss(model, batch, w):
            total, parts = loss_fn(model, batch, w)
            calls["n"] += model.training
            return (total * float("nan") if model.training and calls["n"] == step else total), \
                parts
        return loss

    monkeypatch.setattr(T, "get_loss", poisoned)


# --- 1. --overwrite ------------------------------------------------------------------------------

def test_a_second_default_run_gets_its_own_folder_and_resume_takes_the_newest(
        tmp_path, monkeypatch, capsys):
    """`groupact train RECIPE` twice (e.g. `bash run main` then a shorter run) is neither refused
    nor a reason to delete the first run: runs/RECIPE, then runs/RECIPE-2."""
    monkeypatch.chdir(tmp_path)
    sets = [a for kv in TINY for a in ("--set", kv)]
    assert main(["train", "rotmnist-c4", "--no-eval"] + sets) == 0
    first = tree(tmp_path / "runs" / "rotmnist-c4")
    assert main(["train", "rotmnist-c4", "--no-eval"] + sets) == 0
    assert tree(tmp_path / "runs" / "rotmnist-c4") == first
    assert (tmp_path / "runs" / "rotmnist-c4-2" / "checkpoints" / "best.pt").is_file()
    assert "run folder: runs/rotmnist-c4-2" in capsys.readouterr().err
    (tmp_path / "runs" / "rotmnist-c4-x").mkdir()          # not ours: neither counted nor used
    assert main(["train", "rotmnist-c4", "--no-eval"] + sets) == 0
    assert (tmp_path / "runs" / "rotmnist-c4-3").is_dir()
    # --resume RECIPE continues the newest one: asked for a second epoch, only -3 trains it
    second = tree(tmp_path / "runs" / "rotmnist-c4-2")
    assert main(["train", "rotmnist-c4", "--resume", "--no-eval", "--set", "train.epochs=2",
                 "--set", "train.progress=false"]) == 0
    assert len(read_jsonl(tmp_path / "runs" / "rotmnist-c4-3" / "metrics.jsonl")) == 2
    assert tree(tmp_path / "runs" / "rotmnist-c4") == first
    assert tree(tmp_path / "runs" / "rotmnist-c4-2") == second


def test_resume_of_a_recipe_never_run_says_how_to_start_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "rotmnist-c4", "--resume"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "no run of recipe 'rotmnist-c4'" in line and "groupact train rotmnist-c4" in line
    assert not (tmp_path / "runs").exists()


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(tmp_path, capsys):
    """Old code: `rmtree(DIR)` whatever DIR held."""
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "chapter1.tex").write_text("three years of work")
    (thesis / "figures").mkdir()
    (thesis / "figures" / "plot.pdf").write_bytes(b"%PDF")
    before = tree(tmp_path)
    rc = main(["train", "rotmnist-c4", "--run-dir", str(thesis), "--overwrite", "--no-eval",
               *sum((["--set", s] for s in TINY), [])])
    assert rc == 2
    assert "--overwrite refused" in one_error_line(capsys.readouterr().err)
    assert tree(tmp_path) == before


def test_overwrite_keeps_the_old_run_until_the_new_one_has_a_checkpoint(tmp_path, trained,
                                                                        monkeypatch):
    """Old code deleted the old run before the new one trained a step: a failure left neither."""
    run = copy_run(trained, tmp_path / "run")
    before = tree(run)
    poison_loss_at(monkeypatch, 1)  # the new run fails at its first step
    with pytest.raises(GroupactError, match="no checkpoint was written"):
        train_run(load_config("rotmnist-c4", TINY + ["train.lr=0.01"]), run, overwrite=True,
                  log=quiet)
    assert tree(run) == before  # the old run, byte for byte, and nothing of the new one


def test_overwrite_replaces_the_run_once_the_new_one_is_saved(tmp_path, trained):
    run = copy_run(trained, tmp_path / "run")
    (run / "eval").mkdir()
    (run / "eval" / "metrics.json").write_text("{}")
    train_run(load_config("rotmnist-c4", TINY + ["train.seed=7"]), run, overwrite=True, log=quiet)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["config"]["train"]["seed"] == 7
    assert not (run / TRASH).exists() and not (run / "eval").exists()
    assert [r["epoch"] for r in read_jsonl(run / "metrics.jsonl")] == [1]


def test_overwrite_cut_short_keeps_the_old_run_aside_and_a_rerun_completes(tmp_path, trained,
                                                                           monkeypatch):
    """A hard stop before the new run's first checkpoint (as abrupt as a kill)."""
    import groupact.train.trainer as T
    run = copy_run(trained, tmp_path / "run")
    old_last = (run / "checkpoints" / "last.pt").read_bytes()
    step = T.Trainer.train_step

    def crash(self, batch):
        step(self, batch)
        raise KeyboardInterrupt

    monkeypatch.setattr(T.Trainer, "train_step", crash)
    with pytest.raises(KeyboardInterrupt):
        train_run(load_config("rotmnist-c4", TINY + ["train.seed=7"]), run, overwrite=True,
                  log=quiet)
    assert (run / TRASH / "checkpoints" / "last.pt").read_bytes() == old_last  # not lost
    monkeypatch.setattr(T.Trainer, "train_step", step)
    train_run(load_config("rotmnist-c4", TINY + ["train.seed=7"]), run, overwrite=True, log=quiet)
    assert not (run / TRASH).exists()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["config"]["train"]["seed"] == 7


def test_a_failed_fresh_start_leaves_no_folder_to_block_the_rerun(tmp_path, monkeypatch):
    run = tmp_path / "new"
    poison_loss_at(monkeypatch, 1)
    with pytest.raises(GroupactError, match="no checkpoint was written"):
        train_run(load_config("rotmnist-c4", TINY), run, log=quiet)
    assert not run.exists()
    mine = tmp_path / "made_by_me"
    mine.mkdir()
    with pytest.raises(GroupactError, match="no checkpoint was written"):
        train_run(load_config("rotmnist-c4", TINY), mine, log=quiet)
    assert list(mine.iterdir()) == []  # a folder the user made stays, empty as it was
    monkeypatch.undo()
    train_run(load_config("rotmnist-c4", TINY), run, log=quiet)  # no --overwrite needed
    assert (run / "checkpoints" / "last.pt").is_file()


def test_resume_of_a_folder_that_is_not_a_run_puts_nothing_in_it(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    with pytest.raises(GroupactError, match="not a groupact run folder"):
        train_run(load_config("rotmnist-c4", TINY), mine, resume=True, log=quiet)
    assert list(mine.iterdir()) == []


# --- 2. one writer per folder --------------------------------------------------------------------

def _cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "groupact.cli", *argv]


def test_a_second_process_on_a_run_folder_is_refused_and_a_dead_ones_lock_is_not_stale(
        tmp_path, capsys):
    """Two trains (or a train and a resume, or --overwrite) on one folder: the second is refused
    with one line naming the holder; after a SIGKILL the lock is gone with its process."""
    run = tmp_path / "run"
    sets = sum((["--set", s] for s in ["data.n_train=256", "data.n_val=32", "data.n_test=32",
                                       "train.batch_size=32", "train.epochs=200",
                                       "train.progress=false", "train.threads=1",
                                       "train.checkpoint_every=1"]), [])
    first = subprocess.Popen(_cli("train", "rotmnist-c4", "--run-dir", str(run), "--no-eval",
                                  *sets), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (run / "checkpoints" / "best.pt").is_file():
            assert first.poll() is None, first.stderr.read()
            time.sleep(0.05)
        for argv in (["train", "rotmnist-c4", "--run-dir", str(run), "--no-eval", *sets],
                     ["train", "rotmnist-c4", "--run-dir", str(run), "--overwrite", "--no-eval",
                      *sets],
                     ["train", "--resume", "--run-dir", str(run), "--no-eval"],
                     ["evaluate", str(run), "--no-figures"]):
            assert main(argv) == 2, argv
            line = one_error_line(capsys.readouterr().err)
            assert f"run folder {run} is in use by process {first.pid}" in line, line
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
        first.stderr.close()
    assert (run / LOCK_NAME).is_file()  # left behind by the killed process, and harmless:
    rc = main(["train", "--resume", "--run-dir", str(run), "--set", "train.epochs=1",
               "--no-eval"])
    assert rc == 0, capsys.readouterr().err


def test_reproduce_refuses_a_results_folder_in_use(tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    with FolderLock(out, "results folder"):  # as another `reproduce` would hold it
        rc = main(["reproduce", "--budget", "tiny", "--datasets", "rotmnist", "--methods", "ald",
                   "--seeds", "1", "--out", str(out)])
    assert rc == 2
    assert f"results folder {out} is in use by process {os.getpid()}" in \
        one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]


# --- 3. a run that diverges ----------------------------------------------------------------------

def _poison_weights_after(monkeypatch, step: int, param: str, value: float) -> None:
    """After optimiser step ``step``, set one weight to ``value`` (as an exploding step would)."""
    import groupact.train.trainer as T
    real = T.Trainer.train_step

    def train_step(self, batch):
        out = real(self, batch)
        if self.step == step:
            with torch.no_grad():
                dict(self.model.named_parameters())[param].view(-1)[0] = value
        return out

    monkeypatch.setattr(T.Trainer, "train_step", train_step)


@pytest.mark.parametrize("param, value, words", [
    ("decoder.0.weight", float("nan"), "validation loss became nan"),  # the output turns NaN
    ("decoder.0.weight", float("inf"), "weights became non-finite (decoder.0.weight)"),
    ("mask.logits", float("inf"), "weights became non-finite (mask.logits)"),  # loss finite
])
def test_a_checkpoint_never_holds_non_finite_weights(tmp_path, monkeypatch, param, value, words):
    """The step that poisons the weights is the last of epoch 2; old code saved it as last.pt."""
    cfg = load_config("rotmnist-c4", TINY + ["train.epochs=3", "train.checkpoint_every=1"])
    run = tmp_path / "run"
    _poison_weights_after(monkeypatch, 4, param, value)  # 2 steps an epoch: step 4 ends epoch 2
    with pytest.raises(GroupactError,
                       match=rf"{re.escape(words)}.*last good checkpoint .*last.pt \(step 3\)"):
        train_run(cfg, run, log=quiet)
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["step"] == 3
    assert all(bool(torch.isfinite(v).all()) for v in last["model"].values())
    assert load_checkpoint(run / "checkpoints" / "best.pt")["epoch"] == 1
    assert [r["epoch"] for r in read_jsonl(run / "metrics.jsonl")] == [1]


# --- full disk ---------------------------------------------------------------------------------

def test_a_full_disk_is_one_line_and_keeps_the_old_checkpoint(tmp_path, trained, monkeypatch,
                                                              capsys):
    run = copy_run(trained, tmp_path / "run")
    before = tree(run)
    real = torch.save

    def full(obj, f, *a, **k):
        real(obj, f, *a, **k)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    rc = main(["train", "--resume", "--run-dir", str(run), "--set", "train.epochs=2",
               "--no-eval"])
    assert rc == 2
    assert "the disk is full; free space and run again" in one_error_line(capsys.readouterr().err)
    after = tree(run)
    assert after["checkpoints/last.pt"] == before["checkpoints/last.pt"]
    assert not [p for p in run.rglob("*.tmp")]
    rc = main(["export", str(run), str(tmp_path / "copy")])
    assert rc == 2 and "the disk is full" in one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no half export, no partial


# --- 9. whole folders; kills of evaluate, export and reproduce through real processes ------------

#: `groupact` that SIGKILLs itself at the N-th call of MODULE.FUNCTION (GA_KILL_AT=MODULE:FUNC:N)
KILLER = r'''
import importlib, os, signal, sys
from groupact.cli import main
module, name, n = os.environ["GA_KILL_AT"].split(":")
target = importlib.import_module(module)
real, calls = getattr(target, name), [0]
def wrapped(*args, **kwargs):
    calls[0] += 1
    if calls[0] == int(n):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
setattr(target, name, wrapped)
sys.exit(main(sys.argv[1:]))
'''


def killed(tmp_path: Path, at: str, *argv: str) -> None:
    """Run ``groupact ARGV`` in a process that is SIGKILLed at ``at``; check that it was."""
    driver = tmp_path / "killer.py"
    driver.write_text(KILLER)
    p = subprocess.run([sys.executable, str(driver), *argv], capture_output=True, text=True,
                       env={**os.environ, "GA_KILL_AT": at, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert p.returncode == -signal.SIGKILL, f"not killed at {at}: exit {p.returncode}\n{p.stderr}"


def test_folder_built_aside_is_whole_or_absent(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        with folder_built_aside(target) as part:
            (part / "a").write_text("1")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with folder_built_aside(target) as part:
        (part / "a").write_text("2")
    assert tree(tmp_path) == {"out": "dir", "out/a": hashlib.sha1(b"2").hexdigest()}


def _kill_points(default: str, slow: list[str]) -> list:
    """One kill point in the default run, the rest behind the slow marker."""
    return [default, *[pytest.param(at, marks=pytest.mark.slow) for at in slow]]


@pytest.mark.parametrize("at", _kill_points(
    "groupact.evaluate.figures:atomic_save_figure:3",
    [*[f"groupact.evaluate.figures:atomic_save_figure:{n}" for n in (1, 2, 4)],
     "groupact.evaluate.evaluate:atomic_write_json:1",
     "groupact.evaluate.evaluate:atomic_write_text:1"]))
def test_evaluate_killed_mid_figures_keeps_the_old_evaluation_then_completes(tmp_path, trained,
                                                                            capsys, at):
    """Old code wrote figures straight into eval/: a kill left new figures beside old metrics."""
    run = copy_run(trained, tmp_path / "run")
    assert main(["evaluate", str(run), "--no-figures"]) == 0  # an earlier evaluation
    capsys.readouterr()
    old = tree(run / "eval")
    reference = json.loads((run / "eval" / "metrics.json").read_text())
    killed(tmp_path, at, "evaluate", str(run))
    assert tree(run / "eval") == old
    assert main(["evaluate", str(run)]) == 0  # the same command again
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    figures = metrics.pop("figures")
    assert metrics == reference  # the evaluation is deterministic: same numbers, now with figures
    assert sorted(p.name for p in (run / "eval" / "figures").iterdir()) == sorted(figures)
    assert not [p.name for p in run.iterdir() if "groupact-" in p.name]


@pytest.mark.parametrize("points", [
    ["groupact.runs:save_checkpoint:1", "groupact.runs:write_checksums:1"],
    pytest.param([f"groupact.runs:atomic_copy:{n}" for n in (1, 2, 3)], marks=pytest.mark.slow)])
def test_export_killed_leaves_nothing_under_its_name_then_completes(tmp_path, trained, capsys,
                                                                    points):
    """Old code: a kill left a half folder (or one without checksums) that blocked the retry."""
    assert main(["export", str(trained), str(tmp_path / "reference")]) == 0
    for at in points:
        out = tmp_path / "copy"
        killed(tmp_path, at, "export", str(trained), str(out))
        assert not out.exists(), at
        assert main(["export", str(trained), str(out)]) == 0, capsys.readouterr().err
        ref = tmp_path / "reference"
        assert verify_checksums(out) == [] and tree(out).keys() == tree(ref).keys()
        for name in ("config.yaml", "data.json", "metrics.jsonl"):  # byte for byte
            assert (out / name).read_bytes() == (ref / name).read_bytes()
        a, b = (load_checkpoint(d / "checkpoints" / "best.pt") for d in (out, ref))
        assert a.keys() == b.keys() and all(torch.equal(a["model"][k], b["model"][k])
                                            for k in a["model"])
        assert sorted(p.name for p in tmp_path.iterdir()) == ["copy", "killer.py", "reference"]
        import shutil
        shutil.rmtree(out)


def test_train_overwrite_killed_before_its_first_checkpoint_loses_nothing(tmp_path, trained):
    run = copy_run(trained, tmp_path / "run")
    old_last = (run / "checkpoints" / "last.pt").read_bytes()
    sets = sum((["--set", s] for s in TINY + ["train.seed=7"]), [])
    killed(tmp_path, "groupact.train.trainer:save_checkpoint:1", "train", "rotmnist-c4", "--run-dir",
           str(run), "--overwrite", "--no-eval", *sets)
    assert (run / TRASH / "checkpoints" / "last.pt").read_bytes() == old_last
    assert main(["train", "rotmnist-c4", "--run-dir", str(run), "--overwrite", "--no-eval",
                 *sets]) == 0
    reference = tmp_path / "reference"
    assert main(["train", "rotmnist-c4", "--run-dir", str(reference), "--no-eval", *sets]) == 0
    a = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(reference / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a) and not (run / TRASH).exists()


REPRO = ["reproduce", "--budget", "tiny", "--datasets", "rotmnist", "--methods", "ald",
         "--seeds", "1", "--jobs", "1", "--no-ablations"]


@pytest.mark.parametrize("at", _kill_points(
    "groupact.reproduce.pages:atomic_write_text:2",
    [*[f"groupact.reproduce.pages:atomic_write_text:{n}" for n in (1, 4)],
     "groupact.reproduce.runner:write_manifest:1",
     "groupact.reproduce.workers:write_run_meta:2"]))
def test_reproduce_killed_while_writing_its_tables_then_run_again(tmp_path, capsys, at):
    """Killed after its run is trained, while it writes its bookkeeping and tables."""
    out = tmp_path / "results"
    killed(tmp_path, at, *REPRO, "--out", str(out))
    runs = [p for p in (out / "runs").rglob("last.pt")]
    assert len(runs) == 1
    trained_bytes = runs[0].read_bytes()
    assert main([*REPRO, "--out", str(out)]) == 0  # the same command again: reuses the run
    assert runs[0].read_bytes() == trained_bytes
    csv = (out / "results.csv").read_text()
    assert main(["reproduce", "--tables-only", "--out", str(out)]) == 0
    assert (out / "results.csv").read_text() == csv
    assert not list(out.rglob("*.tmp"))


def test_data_cache_clears_temp_files_of_killed_writers(tmp_path):
    from groupact.data.cache import cached, cache_path
    settings = {"n": 3}
    path = cache_path("toy", settings, tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    orphan = path.parent / f".{path.stem}.{dead}.abc123.tmp"
    live = path.parent / f".{path.stem}.{os.getpid()}.def456.tmp"
    for p in (orphan, live):
        p.write_bytes(b"\0" * 10)
    cached("toy", settings, lambda: {"x": np.arange(3)}, tmp_path)
    assert not orphan.exists() and live.exists()  # a live writer's file is not ours to delete


@pytest.mark.parametrize("code, words", [
    (errno.EACCES, "no permission to write there"), (errno.EROFS, "the file system is read-only"),
    (errno.ENOSPC, "the disk is full"), (errno.ENOTDIR, "a part of the path is a file"),
])
def test_a_write_that_the_system_refuses_names_the_cause(tmp_path, monkeypatch, code, words):
    """Read-only folders cannot be made for a test run as root, so the system's refusal is
    simulated where every write starts (the temporary file of an atomic write)."""
    import tempfile

    from groupact.io import atomic_write_text

    def refuse(*_a, **_k):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(GroupactError, match=f"cannot write .*out.txt: {words}"):
        atomic_write_text(tmp_path / "out.txt", "x")
    assert list(tmp_path.iterdir()) == []
