"""The reproduction's records: one run of the plan (:class:`RunSpec`), the per-run and
per-results-folder bookkeeping files, and how durations are written.

Shared by the runner (which writes them) and the tables (which read them), so neither imports
the other.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from groupact.io import atomic_write_json, read_json_object

#: per-run bookkeeping of the runner (dataset, method, seed, accumulated wall time)
RUN_META = "reproduce.json"
RUN_LOG = "reproduce.log"
#: per-results-folder record of the last invocation (budget, command, machine, wall time)
MANIFEST = "reproduce.json"


@dataclass
class RunSpec:
    """One run of the plan: where it lives and the exact ``groupact train`` that makes it."""

    dataset: str
    method: str
    kind: str                      # "method" or "ablation"
    seed: int
    recipe: str
    overrides: list[str]
    run_dir: Path
    probe_only: bool = False
    #: decided by :func:`inspect_runs`: new | resume | reuse | reevaluate
    action: str = "new"

    @property
    def label(self) -> str:
        return f"{self.dataset}/{self.method}/seed{self.seed}"

    def command(self) -> list[str]:
        """The worker's command line (also written at the top of its log)."""
        if self.action == "reevaluate":   # inspect_runs found the run's config to be the plan's,
            # so the net it names is the one the plan names: the user's own choice
            return [sys.executable, "-m", "groupact.cli", "evaluate", str(self.run_dir),
                    "--trust-code"]
        cmd = [sys.executable, "-m", "groupact.cli", "train", self.recipe, "--resume",
               "--run-dir", str(self.run_dir)]
        for o in self.overrides:
            cmd += ["--set", o]
        return cmd


def read_run_meta(run_dir: Path) -> dict[str, Any]:
    return read_json_object(Path(run_dir) / RUN_META)


def write_run_meta(spec: RunSpec, budget: str, add_seconds: float, status: str,
                   add_cpu: float | None = None) -> None:
    """What the tables need besides metrics.json: names, kind, the run's accumulated wall time
    and CPU time (over every invocation that worked on it)."""
    meta = read_run_meta(spec.run_dir)
    meta.update({"dataset": spec.dataset, "method": spec.method, "kind": spec.kind,
                 "seed": spec.seed, "probe_only": spec.probe_only, "recipe": spec.recipe,
                 "overrides": spec.overrides, "budget": budget,
                 "seconds": round(float(meta.get("seconds", 0.0)) + add_seconds, 1),
                 "cpu_seconds": round(float(meta.get("cpu_seconds", 0.0)) + (add_cpu or 0.0), 1),
                 "status": status})
    atomic_write_json(spec.run_dir / RUN_META, meta)


def duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"
