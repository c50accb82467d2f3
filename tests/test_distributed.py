"""Data-parallel training: 2 gloo processes launched by torchrun match one process.

One training setup, run three ways on the CPU:
- S: one process (in this test process);
- A: `torchrun --nproc_per_node 2 -m groupact.cli train ...` (each rank trains on half of every
  global batch; gradients summed by all-reduce);
- B: as A, but rank 1 alone receives SIGTERM mid-epoch; both ranks stop after the same step,
  rank 0 saves, and `torchrun ... train --resume` finishes the run.
A matches S to floating-point summation order (tolerance below); B matches A bitwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from groupact.config import load_config
from groupact.distributed import Comm, DistComm, backend_for, launched_by_torchrun
from groupact.io import read_jsonl
from groupact.train import TIMING_KEYS, train_run

#: 125 training images in batches of 32: the last batch (29) splits 14/15, the 31 validation
#: pairs 15/16, so unequal slices are exercised, not only halves
SETS = ["data.n_train=125", "data.n_val=31", "data.n_test=32", "train.batch_size=32",
        "train.epochs=2", "train.progress=false", "train.threads=1", "train.device=cpu"]

#: max |w_2proc − w_1proc| over all weights after 8 steps; measured 3.4e-7 (Adam turns summation-
#: order noise of ~1e-8 in the gradients into ~1e-7 in the weights)
WEIGHT_TOL = 1e-5

DRIVER = r'''
import json, os, signal, sys
import groupact.train.trainer as T
from groupact.cli import main
plan = json.loads(os.environ.get("GA_KILL") or "null")
if plan and int(os.environ["RANK"]) == plan["rank"]:
    step = T.Trainer.train_step
    def train_step(self, batch):
        out = step(self, batch)
        if self.step == plan["n"]:
            os.kill(os.getpid(), signal.SIGTERM)
        return out
    T.Trainer.train_step = train_step
sys.exit(main(sys.argv[1:]))
'''


def torchrun(tmp: Path, args: list[str], plan: dict | None = None) -> subprocess.CompletedProcess:
    driver = tmp / "driver.py"
    driver.write_text(DRIVER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(driver), *args]
    env = {**os.environ, "GA_KILL": json.dumps(plan)}
    return subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)


def train_args(run: Path) -> list[str]:
    args = ["train", "rotmnist-c4", "--run-dir", str(run), "--no-eval"]
    for s in SETS:
        args += ["--set", s]
    return args


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("ddp")
    out = {"S": tmp / "single", "A": tmp / "ddp", "B": tmp / "ddp_resumed"}
    p = torchrun(tmp, train_args(out["A"]))
    assert p.returncode == 0, p.stderr[-3000:]
    p = torchrun(tmp, train_args(out["B"]), plan={"rank": 1, "n": 2})
    assert p.returncode != 0, "the SIGTERM should have stopped the distributed run"
    stopped = torch.load(out["B"] / "checkpoints" / "last.pt", weights_only=True)
    assert (stopped["epoch"], stopped["batch"], stopped["step"]) == (0, 3, 3), \
        "both ranks stop after the step in whose all-reduce the stop flag travels"
    assert "stopped by SIGTERM" in p.stderr and "resume with" in p.stderr
    p = torchrun(tmp, ["train", "--resume", "--run-dir", str(out["B"]), "--no-eval"])
    assert p.returncode == 0, p.stderr[-3000:]
    train_run(load_config("rotmnist-c4", SETS), out["S"], log=lambda *_: None)
    return out


def test_two_gloo_processes_match_one_process(runs):
    diff = max_difference(weights(runs["A"]), weights(runs["S"]))
    print(f"max |w_ddp - w_single| = {diff:.3g}")
    assert diff < WEIGHT_TOL
    ddp, single = read_jsonl(runs["A"] / "metrics.jsonl"), read_jsonl(runs["S"] / "metrics.jsonl")
    assert [r["epoch"] for r in ddp] == [1, 2]  # rank 0 alone wrote the log
    for rd, rs in zip(ddp, single):
        assert rd["step"] == rs["step"] == 4 * rd["epoch"] and rd["mask"] == rs["mask"]
        for key in ("train_loss", "train_recon", "val_loss", "val_psnr"):
            assert rd[key] == pytest.approx(rs[key], rel=1e-5), key


def test_distributed_run_resumes_exactly_after_a_signal_to_one_rank(runs):
    a = torch.load(runs["A"] / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(runs["B"] / "checkpoints" / "last.pt", weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    strip = [{k: v for k, v in r.items() if k not in TIMING_KEYS}
             for r in read_jsonl(runs["A"] / "metrics.jsonl")]
    assert strip == [{k: v for k, v in r.items() if k not in TIMING_KEYS}
                     for r in read_jsonl(runs["B"] / "metrics.jsonl")]


def test_only_rank_zero_writes(runs):
    files = sorted(str(p.relative_to(runs["A"])) for p in runs["A"].rglob("*") if p.is_file())
    assert files == [".groupact.lock", "checkpoints/best.pt", "checkpoints/last.pt", "config.yaml",
                     "data.json", "metrics.jsonl"]


@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shards_cover_the_batch_once(world):
    for n in [0, 1, 2, 5, 31, 32, 33]:
        parts = [DistComm(r, world, 0).shard(n) for r in range(world)]
        assert parts[0][0] == 0 and parts[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
        sizes = [b - a for a, b in parts]
        assert max(sizes) - min(sizes) <= 1


def test_single_process_comm_is_the_identity():
    comm = Comm()
    assert comm.shard(7) == (0, 7) and comm.is_main and not comm.distributed
    t = torch.arange(3.0)
    assert comm.all_reduce_sum(t) is t
    assert comm.run_on_main(lambda: 5) == 5
    assert backend_for(False) == "gloo" and "cuda:nccl" in backend_for(True)
    assert not launched_by_torchrun() or "RANK" in os.environ
