"""`groupact reproduce`: expand the plan into runs, train what is missing, reuse what is done.

(The runs and what exists of them: :mod:`~groupact.reproduce.specs`; the worker pool:
:mod:`~groupact.reproduce.workers`; this module: the command and its manifest.)

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
lost, at most since their last checkpoint). Workers run in their own process sessions (setsid),
so a terminal's Ctrl-C reaches them once, through the runner.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any, Callable

from groupact.errors import ConfigError
from groupact.io import FolderLock, atomic_write_json, make_folder, read_json_object
from groupact.reproduce.ledger import MANIFEST, RUN_LOG, RunSpec
from groupact.reproduce.plan import Plan, load_plan
from groupact.reproduce.specs import expand_plan, inspect_runs, prepare_data
from groupact.reproduce.pages import write_tables
from groupact.reproduce.workers import ReproduceResult, run_all


def machine() -> dict[str, Any]:
    import torch
    return {"platform": platform.platform(), "processor": platform.processor() or
            platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__}


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
