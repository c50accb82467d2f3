"""`groupact reproduce`: expand the plan into runs, train what is missing, reuse what is done.

Each run is one ``groupact train`` in a subprocess (``OMP_NUM_THREADS=1``, ``train.threads=1``),
J of them at a time, each logging to ``RUN_DIR/reproduce.log``. The run folder is the unit of
reuse:

- ``eval/metrics.json`` present and ``config.yaml`` equal to what the plan asks: reused, nothing
  runs;
- ``config.yaml`` equal but no evaluation: resumed (``groupact train --resume``), which continues
  exactly from the last checkpoint (or starts again if none was written) and then evaluates;
- ``config.yaml`` different: an error before anything runs (``--overwrite-changed`` retrains).

A new run's folder gets the plan's config.yaml (and its log) *before* the worker starts, and the
worker is started with ``--resume`` too: the trainer then treats it as a run stopped before its
first checkpoint, i.e. starts it from step 0. This way the log can live in the run folder from the
first line, and a run interrupted at any moment is recognised as the plan's run.

Ctrl-C (SIGINT) or SIGTERM is forwarded to the workers as SIGINT: each finishes its step, saves a
checkpoint and exits 130; the runner then writes the tables of what is finished, says how to go
on (the same command), and exits 130. A second Ctrl-C kills the workers (their unsaved steps are
lost, at most since their last checkpoint). Workers run in their own sessions, so a terminal's
Ctrl-C reaches them once, through the runner.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from groupact.config import Config, load_config, load_yaml, read_text_file, save_config
from groupact.data import load_data
from groupact.errors import CheckpointError, ConfigError, did_you_mean
from groupact.io import FolderLock, atomic_write_json, make_folder, read_json_object
from groupact.reproduce.ledger import MANIFEST, RUN_LOG, RunSpec, duration, write_run_meta
from groupact.reproduce.plan import MAX_RUNS, MAX_SEEDS, Plan, load_plan
from groupact.reproduce.tables import write_tables
from groupact.runs import RunPaths, config_differences, foreign_entries, with_defaults

#: config keys that do not change what a run computes: a saved run differing only in these is
#: still the plan's run (the recipe's prose, and how/where it ran)
IGNORED_KEYS = frozenset({"description", "train.device", "train.threads", "train.progress",
                          "train.checkpoint_every"})

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


# --- expanding the plan ------------------------------------------------------------------------

def _select(requested: list[str] | None, valid: list[str], what: str) -> list[str]:
    """Names the user asked for, checked against the plan (an unknown one is a user error)."""
    if requested is None:
        return list(valid)
    for name in requested:
        if name not in valid:
            raise ConfigError(f"unknown {what} '{name}'{did_you_mean(name, valid)}; the plan "
                              f"has: {', '.join(valid)}")
    return [v for v in valid if v in requested]


def expand_plan(plan: Plan, budget: str, out: Path, datasets: list[str] | None = None,
                methods: list[str] | None = None, ablations: bool = True,
                seeds: int | None = None) -> list[RunSpec]:
    """Every run the selection asks for, in a stable order (dataset, then method, then seed).

    ``methods`` may name methods and ablations alike; without it every method runs, plus every
    ablation unless ``ablations`` is False.
    """
    b = plan.budget(budget)
    ds = _select(datasets, list(plan.datasets), "dataset")
    if methods is None:
        names = list(plan.methods) + (list(plan.ablations) if ablations else [])
    else:
        names = _select(methods, plan.names(), "method or ablation")
    n_seeds = b.seeds if seeds is None else seeds
    if not 1 <= n_seeds <= MAX_SEEDS:
        raise ConfigError(f"--seeds must be 1 to {MAX_SEEDS}; got {n_seeds}")
    if len(ds) * len(names) * n_seeds > MAX_RUNS:
        raise ConfigError(f"the selection asks for {len(ds) * len(names) * n_seeds:,} runs, more "
                          f"than {MAX_RUNS:,}; choose fewer --seeds, --datasets or --methods")
    runs = []
    for d in ds:
        for name in names:
            if d not in plan.datasets_of(name):
                continue
            for seed in range(n_seeds):
                runs.append(RunSpec(d, name, "ablation" if plan.is_ablation(name) else "method",
                                    seed, plan.datasets[d].recipe,
                                    plan.overrides(d, name, budget, seed),
                                    out / "runs" / d / name / f"seed{seed}",
                                    probe_only=plan.entry(name).probe_only))
    if not runs:
        raise ConfigError("the selection holds no runs (check --datasets and --methods: an "
                          "ablation runs only on its own datasets)")
    return runs


# --- what exists already -----------------------------------------------------------------------

def run_config(spec: RunSpec) -> Config:
    return load_config(spec.recipe, spec.overrides)


def saved_differences(spec: RunSpec, planned: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """How the run folder's config.yaml differs from the plan's (IGNORED_KEYS aside)."""
    path = RunPaths(spec.run_dir).config
    try:
        saved = load_yaml(read_text_file(path, "run config"), str(path))
    except ConfigError:
        return [("config.yaml", "unreadable", "the plan's")]
    if not isinstance(saved, dict):
        return [("config.yaml", "not a mapping", "the plan's")]
    return [d for d in config_differences(with_defaults(saved), planned)
            if d[0] not in IGNORED_KEYS]


def inspect_runs(runs: list[RunSpec], overwrite_changed: bool = False,
                 delete: bool = True, reevaluate: bool = False) -> list[RunSpec]:
    """Decide for each run: reuse, resume or new; refuse runs trained with another config.

    With ``overwrite_changed`` a changed run is new, and (with ``delete``; not in a dry run) its
    folder is deleted. Without it, all changed runs are named in one error, before anything is
    launched or deleted. With ``reevaluate`` finished runs are evaluated again (new metrics keys)
    instead of reused.
    """
    changed = []
    for spec in runs:
        paths = RunPaths(spec.run_dir)
        if not paths.config.is_file():
            if paths.checkpoints.is_dir() and any(paths.checkpoints.iterdir()):
                raise CheckpointError(f"{spec.run_dir} holds checkpoints but no config.yaml; it "
                                      "is not a run this tool can reuse: delete the folder")
            spec.action = "new"
            continue
        diffs = saved_differences(spec, run_config(spec).to_dict())
        if diffs:
            changed.append((spec, diffs))
            continue
        if (paths.eval / "metrics.json").is_file():
            spec.action = "reevaluate" if reevaluate else "reuse"
        else:
            spec.action = "resume"
    if changed and not overwrite_changed:
        spec, diffs = changed[0]
        key, theirs, ours = diffs[0]
        more = f" and {len(changed) - 1} more runs" if len(changed) > 1 else ""
        raise ConfigError(
            f"{spec.run_dir}{more} were trained with another config than the plan asks "
            f"({key} is {theirs!r} there, {ours!r} in the plan); pass --overwrite-changed to "
            "retrain them, delete those folders, or use another --out")
    for spec, _ in changed:
        foreign = foreign_entries(spec.run_dir)
        if foreign:
            raise CheckpointError(f"{spec.run_dir} holds files groupact did not write "
                                  f"({', '.join(foreign[:3])}); --overwrite-changed deletes only "
                                  "run folders: move those files first")
    for spec, _ in changed:
        if delete:
            FolderLock.check_free(spec.run_dir, "run folder")
            shutil.rmtree(spec.run_dir)
        spec.action = "new"
    return runs


def prepare_data(runs: list[RunSpec], say: Callable[[str], None]) -> None:
    """Load (and for generated data, generate and cache) each distinct dataset once, here.

    Parallel workers would otherwise each generate the same stand-in data set at once, doing
    the work J times and racing on the cache file.
    """
    import torch


    torch.set_num_threads(1)
    seen: set[str] = set()
    for spec in runs:
        data = run_config(spec).data
        key = json.dumps(data.__dict__, sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        t0 = time.perf_counter()
        splits = load_data(data)
        say(f"data {spec.dataset}: {splits.info.get('name', data.kind)}, "
            f"{len(splits.train)}/{len(splits.val)}/{len(splits.test)} train/val/test "
            f"({duration(time.perf_counter() - t0)})")
        del splits


# --- bookkeeping files ---------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    import torch
    return {"platform": platform.platform(), "processor": platform.processor() or
            platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__}


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
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(run_config(spec), RunPaths(spec.run_dir).config)
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


# --- the command ---------------------------------------------------------------------------------

def write_manifest(out: Path, budget: str, runs: list[RunSpec], command: str,
                   seconds: float, plan: Plan, launched: int) -> None:
    """The results folder's header facts, read by the tables (also with --tables-only).

    Every invocation is appended to ``invocations`` (wall time, runs launched), so the total
    wall time of a reproduction that was interrupted and continued survives later no-op runs.
    """
    seeds = sorted({r.seed for r in runs})
    previous = read_json_object(out / MANIFEST)
    history = previous.get("invocations", []) if previous.get("budget") == budget else []
    finished = time.strftime("%Y-%m-%d %H:%M:%S")
    history = list(history) + [{"wall_seconds": round(seconds, 1), "launched": launched,
                                "finished": finished}]
    atomic_write_json(out / MANIFEST, {
        "budget": budget, "budget_description": plan.budgets[budget].description,
        "seeds": seeds, "datasets": sorted({r.dataset for r in runs}),
        "command": command, "plan": plan.source, "machine": machine(),
        "wall_seconds": round(seconds, 1), "finished": finished, "invocations": history})


def reproduce(budget: str = "quick", datasets: list[str] | None = None,
              methods: list[str] | None = None, ablations: bool = True,
              seeds: int | None = None, jobs: int | None = None, out: str | Path = "results",
              plan_path: str | Path | None = None, overwrite_changed: bool = False,
              dry_run: bool = False, reevaluate: bool = False,
              command: str = "groupact reproduce",
              say: Callable[[str], None] | None = None) -> ReproduceResult:
    """Expand the plan, train/resume what is missing, write the tables; see the module doc."""
    say = say or (lambda s: print(s, flush=True))
    t_start = time.monotonic()
    out = Path(out)
    plan = load_plan(plan_path)
    runs = expand_plan(plan, budget, out, datasets, methods, ablations, seeds)
    jobs = jobs if jobs is not None else max(1, min(2, os.cpu_count() or 1))
    if jobs < 1:
        raise ConfigError(f"--jobs must be 1 or more; got {jobs}")
    lock = None
    if not dry_run:  # one `reproduce` at a time per results folder
        make_folder(out)
        lock = FolderLock(out, "results folder").acquire()
    try:
        return _reproduce(runs, plan, out, budget, jobs, overwrite_changed, dry_run,
                          reevaluate, command, say, t_start)
    finally:
        if lock is not None:
            lock.release()


def _reproduce(runs: list[RunSpec], plan: Plan, out: Path, budget: str, jobs: int,
               overwrite_changed: bool, dry_run: bool, reevaluate: bool, command: str,
               say: Callable[[str], None], t_start: float) -> ReproduceResult:
    """:func:`reproduce` once the results folder is locked."""

    inspect_runs(runs, overwrite_changed=overwrite_changed, delete=not dry_run,
                 reevaluate=reevaluate)
    counts = {a: sum(r.action == a for r in runs) for a in ("new", "resume", "reuse",
                                                             "reevaluate")}
    again = f", {counts['reevaluate']} to evaluate again" if reevaluate else ""
    say(f"groupact reproduce: budget {budget}, {len(runs)} runs ({counts['new']} new, "
        f"{counts['resume']} to resume, {counts['reuse']} finished and reused{again}); "
        f"{jobs} worker(s); results in {out}")
    if dry_run:
        for r in runs:
            say(f"  {r.action:10s} {r.label}: groupact train {r.recipe} --run-dir {r.run_dir} "
                + " ".join(f"--set {o}" for o in r.overrides))
        return ReproduceResult(runs)
    todo = [r for r in runs if r.action != "reuse"]
    if todo:
        prepare_data(todo, say)
    result = run_all(runs, budget, jobs, say)
    result.seconds = time.monotonic() - t_start
    write_manifest(out, budget, runs, command, result.seconds, plan, launched=len(todo))
    paths = write_tables(out, plan)
    say(f"wrote {', '.join(str(p) for p in paths)}")
    if result.failed:
        say(f"{len(result.failed)} run(s) failed: "
            + "; ".join(f"{o.spec.label} (log {o.spec.run_dir / RUN_LOG})"
                        for o in result.failed))
    if result.interrupted:
        finished = {o.spec.label for o in result.outcomes if o.status == "done"}
        left = [r for r in todo if r.label not in finished]
        say(f"interrupted: {len(left)} run(s) not finished ("
            + ", ".join(r.label for r in left[:6]) + (", …" if len(left) > 6 else "")
            + f"); run the same command again to continue: {command}")
    return result
