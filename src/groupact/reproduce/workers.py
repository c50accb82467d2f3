"""The worker pool: one ``groupact train`` subprocess per run, J at a time, with progress, ETA,
forwarded Ctrl-C (a second one kills) and an outcome per run."""

from __future__ import annotations

import math
import os
import shlex
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from groupact.config import save_config
from groupact.errors import CheckpointError
from groupact.io import read_json_object
from groupact.reproduce.ledger import RUN_LOG, RunSpec, duration, write_run_meta
from groupact.reproduce.specs import run_config
from groupact.runs import RunPaths


EXIT_FAILED, EXIT_INTERRUPTED = 1, 130


@dataclass
class Outcome:
    """What happened to one launched run."""

    spec: RunSpec
    status: str                    # done | failed | interrupted
    seconds: float
    returncode: int
    metrics: dict[str, Any] | None = None
    message: str = ""
    #: the worker's CPU time (user + system): its wall time on an idle core, near enough, so
    #: per-run costs can be read off a machine that other work shares
    cpu_seconds: float | None = None


@dataclass
class ReproduceResult:
    """What one invocation did; ``launched`` is empty when everything was reused."""

    runs: list[RunSpec]
    launched: list[RunSpec] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_FAILED if self.failed else 0


# --- progress ------------------------------------------------------------------------------------

class Progress:
    """One line per started and finished run, with an ETA from the runs finished so far.

    The estimate of a run still to do is the mean time of finished runs of the same dataset and
    method, else of the same dataset, else of all; work left is divided by the worker count.
    """

    def __init__(self, total: int, jobs: int, say: Callable[[str], None]):
        self.total, self.jobs, self.say = total, jobs, say
        self.done: list[tuple[RunSpec, float]] = []
        self.count = 0  # finished runs, failed ones included

    def estimate(self, spec: RunSpec) -> float | None:
        for same in (lambda s: (s.dataset, s.method) == (spec.dataset, spec.method),
                     lambda s: s.dataset == spec.dataset, lambda s: True):
            times = [t for s, t in self.done if same(s)]
            if times:
                return sum(times) / len(times)
        return None

    def eta(self, waiting: list[RunSpec], running: dict[Any, tuple[RunSpec, float]]) -> str:
        now = time.monotonic()
        work = 0.0
        for spec in waiting:
            est = self.estimate(spec)
            if est is None:
                return "ETA unknown"
            work += est
        for spec, t0 in running.values():
            est = self.estimate(spec)
            if est is None:
                return "ETA unknown"
            work += max(0.0, est - (now - t0))
        return f"ETA {duration(work / max(1, self.jobs))}"

    def started(self, spec: RunSpec, n_running: int, n_waiting: int) -> None:
        how = {"resume": "resuming", "reevaluate": "evaluating again"}.get(spec.action, "new")
        self.say(f"[start] {spec.label} ({how}); {n_running} running, {n_waiting} waiting; "
                 f"log {spec.run_dir / RUN_LOG}")

    def finished(self, outcome: Outcome, waiting: list[RunSpec],
                 running: dict[Any, tuple[RunSpec, float]], stopping: bool = False) -> None:
        spec = outcome.spec
        if outcome.status == "done":
            self.done.append((spec, outcome.seconds))
        self.count += 1
        k = self.count
        left = len(waiting) + len(running)
        what = describe(outcome)
        if stopping:
            tail = f"{len(running)} still stopping"
        else:
            tail = f"{left} left, {self.eta(waiting, running)}" if left else "all done"
        cpu = "" if outcome.cpu_seconds is None else f" (CPU {duration(outcome.cpu_seconds)})"
        self.say(f"[{k}/{self.total}] {spec.label}: {what} in {duration(outcome.seconds)}{cpu}; "
                 f"{tail}")


def describe(outcome: Outcome) -> str:
    """The headline number of a finished run (probe accuracy for representation-only runs)."""
    m = outcome.metrics
    if outcome.status == "failed":
        return f"FAILED (exit {outcome.returncode}): {outcome.message}"
    if outcome.status == "interrupted":
        return "interrupted, checkpoint saved"
    if not m:
        return "done"
    if outcome.spec.probe_only and m.get("probe_z") is not None:
        up = m.get("probe_z_upright")
        return f"probe z {m['probe_z']:.3f} (upright→turned " \
               f"{'–' if up is None else format(up, '.3f')})"
    return f"PSNR {m.get('psnr', float('nan')):.2f} dB (do nothing " \
           f"{m.get('psnr_identity', float('nan')):.2f})"


# --- running -------------------------------------------------------------------------------------

def _last_error(log: Path) -> str:
    """The one-line reason a worker gave (its `groupact: error:` line, else its last line)."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    for ln in reversed(lines):
        if ln.startswith("groupact: error:"):
            return ln[len("groupact: error:"):].strip()
    return lines[-1][:200] if lines else "no output"


class _Signals:
    """SIGINT/SIGTERM/SIGHUP → a count the main loop reads (handlers only set flags)."""

    def __init__(self):
        self.count = 0
        self.old: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
                if s is not None:
                    self.old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, _signum, _frame) -> None:
        self.count += 1

    def __exit__(self, *_exc) -> None:
        for s, h in self.old.items():
            signal.signal(s, h)


def _launch(spec: RunSpec, budget: str) -> tuple[subprocess.Popen, Any]:
    """Start one worker; its output goes to the run's log (appended: resumes keep history)."""
    if spec.action == "new":
        config = RunPaths(spec.run_dir).config
        if config.exists():   # made since the plan was inspected: not this plan's to overwrite
            raise CheckpointError(f"{spec.run_dir} gained a config.yaml while reproduce ran "
                                  "(another process?); it writes only into run folders it "
                                  "makes: run the same command again")
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(run_config(spec), config)
    write_run_meta(spec, budget, 0.0, "running")
    log = open(spec.run_dir / RUN_LOG, "a")
    cmd = spec.command()
    what = {"resume": "resume", "reevaluate": "evaluate again"}.get(spec.action, "new run")
    log.write(f"=== groupact reproduce, {time.strftime('%Y-%m-%d %H:%M:%S')}: {what}\n$ "
              f"{' '.join(shlex.quote(c) for c in cmd)}\n")
    log.flush()
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, start_new_session=True)
    return proc, log


def _reap(proc: subprocess.Popen) -> float | None:
    """None while the worker runs; once it has exited, its CPU seconds (user + system).

    ``os.wait4`` collects the exit status and the child's resource usage in one call (Popen's
    own poll would discard the usage); the status is handed back to the Popen object.
    """
    if not hasattr(os, "wait4"):  # not POSIX: exit status only
        return None if proc.poll() is None else math.nan
    try:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
    except ChildProcessError:  # already reaped
        return math.nan if proc.returncode is not None or proc.poll() is not None else None
    if pid == 0:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def _outcome(spec: RunSpec, code: int, seconds: float, stopping: bool) -> Outcome:
    metrics_path = RunPaths(spec.run_dir).eval / "metrics.json"
    if code == 0 and metrics_path.is_file():
        return Outcome(spec, "done", seconds, code, read_json_object(metrics_path) or None)
    if code in (130, 143, -signal.SIGINT, -signal.SIGTERM) or (stopping and code != 0):
        return Outcome(spec, "interrupted", seconds, code)
    if code == 0:
        return Outcome(spec, "failed", seconds, code, message="no eval/metrics.json was written")
    return Outcome(spec, "failed", seconds, code, message=_last_error(spec.run_dir / RUN_LOG))


def run_all(runs: list[RunSpec], budget: str, jobs: int, say: Callable[[str], None],
            poll: float = 0.2) -> ReproduceResult:
    """Launch every run not reused, ``jobs`` at a time, until done or interrupted."""
    result = ReproduceResult(runs)
    todo = [r for r in runs if r.action != "reuse"]
    waiting = deque(todo)
    running: dict[subprocess.Popen, tuple[RunSpec, float]] = {}
    logs: dict[subprocess.Popen, Any] = {}
    progress = Progress(len(todo), jobs, say)
    forwarded = killed = False
    with _Signals() as sig:
        try:
            while waiting or running:
                if sig.count and not forwarded:
                    forwarded = True
                    say(f"stopping: {len(running)} running run(s) save a checkpoint and stop "
                        "(Ctrl-C again to kill them)")
                    for proc in running:
                        _signal(proc, signal.SIGINT)
                if sig.count > 1 and not killed:
                    killed = True
                    for proc in running:
                        _signal(proc, signal.SIGKILL)
                while not sig.count and waiting and len(running) < jobs:
                    spec = waiting.popleft()
                    proc, log = _launch(spec, budget)
                    running[proc] = (spec, time.monotonic())
                    logs[proc] = log
                    result.launched.append(spec)
                    progress.started(spec, len(running), len(waiting))
                for proc in list(running):
                    cpu = _reap(proc)
                    if cpu is None:
                        continue
                    spec, t0 = running.pop(proc)
                    logs.pop(proc).close()
                    outcome = _outcome(spec, proc.returncode, time.monotonic() - t0,
                                       stopping=sig.count > 0)
                    outcome.cpu_seconds = None if math.isnan(cpu) else cpu
                    write_run_meta(spec, budget, outcome.seconds, outcome.status,
                                   outcome.cpu_seconds)
                    result.outcomes.append(outcome)
                    progress.finished(outcome, list(waiting), running, stopping=sig.count > 0)
                if sig.count and not running:
                    break
                time.sleep(poll)
        finally:
            for proc in running:  # only on an exception in this loop: leave no orphans
                _signal(proc, signal.SIGINT)
            for proc in running:
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    _signal(proc, signal.SIGKILL)
            for log in logs.values():
                log.close()
    result.interrupted = sig.count > 0
    return result


def _signal(proc: subprocess.Popen, signum: int) -> None:
    try:
        proc.send_signal(signum)
    except ProcessLookupError:
        pass
