"""The runs of a plan and what already exists of them: expansion into run folders, whether each is
new, to resume, finished (reused) or changed (refused), and the data each needs, built once."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from groupact.config import Config, load_config, load_yaml, read_text_file
from groupact.data import load_data
from groupact.errors import CheckpointError, ConfigError, did_you_mean
from groupact.io import FolderLock
from groupact.reproduce.ledger import RunSpec, duration
from groupact.reproduce.plan import MAX_RUNS, MAX_SEEDS, Plan


from groupact.runs import RunPaths, config_differences, foreign_entries, with_defaults

#: config keys that do not change what a run computes: a saved run differing only in these is
#: still the plan's run (the recipe's prose, and how/where it ran)
IGNORED_KEYS = frozenset({"description", "train.device", "train.threads", "train.progress",
                          "train.checkpoint_every"})


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
    _inside(out, runs)
    if not runs:
        raise ConfigError("the selection holds no runs (check --datasets and --methods: an "
                          "ablation runs only on its own datasets)")
    return runs


def _inside(out: Path, runs: list[RunSpec]) -> None:
    """Every run folder resolves inside ``out`` (a symlinked folder there cannot send a run
    elsewhere), and no two runs share one (a case-insensitive file system)."""
    root = out.resolve()
    seen: dict[str, str] = {}
    for spec in runs:
        where = spec.run_dir.resolve()
        if not where.is_relative_to(root):
            raise ConfigError(f"{spec.run_dir} resolves to {where}, outside --out {out} (a "
                              "symbolic link?); reproduce writes only inside --out")
        key = str(where).casefold()
        if key in seen:
            raise ConfigError(f"runs {seen[key]} and {spec.label} would share the folder "
                              f"{spec.run_dir}; rename one of them in the plan")
        seen[key] = spec.label


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
            foreign = foreign_entries(spec.run_dir)
            if foreign or (paths.root.exists() and not paths.root.is_dir()):
                raise CheckpointError(f"{spec.run_dir} exists and holds files groupact did not "
                                      f"write ({', '.join(foreign[:3]) or 'it is a file'}); "
                                      "reproduce writes only into run folders it makes: move "
                                      "them, or use another --out")
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
