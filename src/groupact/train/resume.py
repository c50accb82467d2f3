"""Resuming a run: which config may continue it, and the checkpoint it continues from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from groupact.config import Config, from_dict, load_config, merge, parse_override
from groupact.errors import CheckpointError, ConfigError
from groupact.io import load_checkpoint, read_jsonl
from groupact.nets import check_trusted_net, is_user_net, resolved_net_name
from groupact.runs import RunPaths, config_differences, read_run_config, saved_config

#: config keys a resumed run may change: how long and where it trains, never what it learns
RESUMABLE_KEYS = frozenset({
    "name", "description", "train.epochs", "train.device", "train.threads", "train.progress",
    "train.checkpoint_every", "eval.n_pairs", "eval.probe_c", "eval.probe_max_iter",
    "eval.figures"})



def check_resume_config(saved: dict[str, Any] | None, cfg: Config) -> None:
    """Refuse to resume with a config that would train something else than the run did.

    Only :data:`RESUMABLE_KEYS` may differ (e.g. more ``train.epochs``); with a one-cycle schedule
    not even the epochs, as the schedule spans the whole run.
    """
    if saved is None:
        return
    try:
        saved_cfg = saved_config(saved)  # fills keys an older groupact did not write
    except ConfigError as e:
        raise CheckpointError(f"the checkpoint's config is not one this groupact reads: {e}")
    diffs = config_differences(saved_cfg.to_dict(), cfg.to_dict())
    bad = [d for d in diffs if d[0] not in RESUMABLE_KEYS]
    if not bad and saved_cfg.train.schedule == "onecycle" and \
            saved_cfg.train.epochs != cfg.train.epochs:
        bad = [d for d in diffs if d[0] == "train.epochs"]
    if bad:
        key, theirs, ours = bad[0]
        more = f" (and {len(bad) - 1} more: {', '.join(d[0] for d in bad[1:4])})" \
            if len(bad) > 1 else ""
        raise ConfigError(f"cannot resume with a different config: {key} is {ours!r} here but "
                          f"{theirs!r} in the run{more}; resume with the run's own config "
                          "(groupact train --resume --run-dir RUN_DIR, changing at most "
                          "train.epochs) or train into a new --run-dir")


def net_given(recipe: str | None, overrides: list[str] | None) -> str | None:
    """The ``model.net`` the command line itself names (its recipe, or ``--set model.net``), with
    a file's path made absolute; None when it names none."""
    if recipe is not None:
        return resolved_net_name(load_config(recipe, overrides).model.net)
    net = None
    for text in overrides or []:
        part = parse_override(text).get("model")
        if isinstance(part, dict) and "net" in part:
            net = str(part["net"])
    return None if net is None else resolved_net_name(net)


def resume_config(run_dir: str | Path, recipe: str | None = None,
                  overrides: list[str] | None = None, trust_code: bool = False) -> Config:
    """The config to continue ``run_dir`` with: its own config.yaml plus ``--set`` overrides.

    A recipe, if given, must be the one the run was trained from; the overrides may change only
    :data:`RESUMABLE_KEYS` (checked again against the checkpoint when training resumes). A run
    whose ``model.net`` names code outside the registry resumes only with ``trust_code`` or
    when the recipe or overrides name that same net (the user chose it here).
    """
    saved = read_run_config(run_dir)
    if is_user_net(saved.model.net) and not trust_code:
        named_here = net_given(recipe, overrides) == resolved_net_name(saved.model.net)
        check_trusted_net(saved.model.net, named_here, str(RunPaths(Path(run_dir)).config))
    if recipe is not None:
        named = load_config(recipe).name
        if named != saved.name:
            raise ConfigError(f"{run_dir} was trained from recipe '{saved.name}', not "
                              f"'{named}'; resume it with: groupact train --resume --run-dir "
                              f"{run_dir}")
    data = saved.to_dict()
    for text in overrides or []:
        data = merge(data, parse_override(text))
    cfg = from_dict(Config, data)
    check_resume_config(saved.to_dict(), cfg)
    return cfg



def resume_state(paths: RunPaths, cfg: Config) -> dict[str, Any] | None:
    """The checkpoint to resume from; None for a run killed before its first checkpoint."""
    if not paths.root.is_dir():
        raise CheckpointError(f"run folder {paths.root} does not exist; nothing to resume")
    if not paths.last.is_file():
        started = paths.config.is_file() and not read_jsonl(paths.metrics) and \
            not any(paths.checkpoints.glob("*.pt"))
        if not started:
            raise CheckpointError(f"{paths.root} holds no checkpoints/last.pt to resume from")
        check_resume_config(read_run_config(paths.root).to_dict(), cfg)
        return None  # nothing was saved yet: the run starts again from step 0, which is exact
    state = load_checkpoint(paths.last, "cpu")
    check_resume_config(state.get("config"), cfg)
    return state
