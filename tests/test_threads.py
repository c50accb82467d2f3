"""One thread count for torch, OpenMP/BLAS and scikit-learn, chosen from the machine; and `bash
run`'s choice of interpreter (a fake python records what it is asked to do)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from threadpoolctl import threadpool_info

from groupact import threads
from groupact.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def restore_threads():
    before, env = torch.get_num_threads(), {k: os.environ.get(k) for k in threads.POOL_VARIABLES}
    yield
    threads.use_threads(before)
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.mark.parametrize("n", [1, 2])
def test_torch_and_every_loaded_pool_get_the_same_number(n, restore_threads):
    import sklearn.linear_model  # noqa: F401  (its OpenMP and scipy's BLAS loaded, as in a probe)

    assert threads.use_threads(n) == n
    assert torch.get_num_threads() == n
    pools = threadpool_info()
    assert pools and all(p["num_threads"] == n for p in pools), pools
    assert all(os.environ[k] == str(n) for k in threads.POOL_VARIABLES)
    torch.set_num_threads(1)                  # the probes' pools follow torch's count
    with threads.pool_limits():
        assert all(p["num_threads"] == 1 for p in threadpool_info())


def test_the_default_is_the_free_physical_cores_unless_the_caller_chose(monkeypatch):
    monkeypatch.setattr(threads, "CALLER_OMP", "")
    monkeypatch.setattr(threads, "physical_cores", lambda: 8)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    for busy, want in ((0.2, 8), (2.0, 6), (7.6, 1), (30.0, 1)):
        monkeypatch.setattr(threads, "busy_elsewhere", lambda b=busy: b)
        assert threads.default_threads() == want
    monkeypatch.setattr(threads, "busy_elsewhere", lambda: 0.0)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")         # torchrun ranks share the cores
    assert threads.default_threads() == 2
    monkeypatch.setattr(threads, "CALLER_OMP", "3")      # OMP_NUM_THREADS set: the caller's
    assert threads.default_threads() == 3


def test_physical_cores_counts_no_more_than_this_process_may_use():
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert 1 <= threads.physical_cores() <= allowed
    assert threads.busy_elsewhere() >= 0


def test_a_thread_count_below_one_is_one_line_exit_2(capsys, restore_threads):
    assert main(["evaluate", "nowhere", "--threads", "0"]) == 2
    err = capsys.readouterr().err
    assert err == "groupact: error: --threads takes 1 or more; got 0\n"


# --- bash run: the interpreter ------------------------------------------------------------------

FAKE_PYTHON = """#!/usr/bin/env bash
# records its arguments; `-m venv DIR` makes DIR/bin/python, a copy of itself
echo "$0 $*" >> "$CALLS"
if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin" && cp "$0" "$3/bin/python"; fi
"""


def _run(tmp_path: Path, env: dict[str, str], arg: str = "test") -> tuple[int, list[str]]:
    shutil.copy(ROOT / "run", tmp_path / "run")
    fake = tmp_path / "fake-python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    calls = tmp_path / "calls.txt"
    base = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    p = subprocess.run(["bash", str(tmp_path / "run"), arg, "-k", "x"], capture_output=True,
                       text=True, env={**base, "PYTHON": str(fake), "CALLS": str(calls), **env})
    lines = calls.read_text().splitlines() if calls.exists() else []
    return p.returncode, [line.replace(str(tmp_path) + "/", "") for line in lines]


@pytest.mark.skipif(not shutil.which("bash"), reason="needs bash")
def test_run_makes_and_uses_a_project_venv_when_none_is_active(tmp_path):
    code, calls = _run(tmp_path, {})
    assert code == 0
    assert calls[0] == "fake-python3 -m venv .venv"
    assert all(c.startswith(".venv/bin/python -m") for c in calls[1:]), calls
    assert "pip install --quiet --disable-pip-version-check torch==2.13.0" in calls[1]
    assert calls[2].endswith("-e .[test]") and calls[3] == ".venv/bin/python -m pytest -q -k x"
    code, again = _run(tmp_path, {})            # the second time: .venv is there already
    assert code == 0 and not any("-m venv" in c for c in again[len(calls):])


@pytest.mark.skipif(not shutil.which("bash"), reason="needs bash")
def test_run_uses_the_active_venv_and_makes_none(tmp_path):
    venv = tmp_path / "active"
    (venv / "bin").mkdir(parents=True)
    shutil.copy(ROOT / "run", tmp_path / "run")
    fake = tmp_path / "fake-python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    shutil.copy(fake, venv / "bin" / "python")
    code, calls = _run(tmp_path, {"VIRTUAL_ENV": str(venv)}, "main")
    assert code == 0 and not (tmp_path / ".venv").exists()
    assert calls and all(c.startswith("active/bin/python -m") for c in calls), calls
    assert calls[-1] == "active/bin/python -m groupact.cli train rotmnist-c4-fast -k x"


@pytest.mark.skipif(not shutil.which("bash"), reason="needs bash")
def test_run_says_how_to_get_venv_when_python_cannot_make_one(tmp_path):
    broken = tmp_path / "no-venv"
    broken.write_text("#!/usr/bin/env bash\necho 'No module named venv' >&2; exit 1\n")
    broken.chmod(0o755)
    shutil.copy(ROOT / "run", tmp_path / "run")
    base = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    p = subprocess.run(["bash", str(tmp_path / "run"), "test"], capture_output=True, text=True,
                       env={**base, "PYTHON": str(broken)})
    assert p.returncode == 2 and "python3-venv" in p.stderr
    assert not (tmp_path / ".venv").exists()
