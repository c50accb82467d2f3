"""Run folders: their layout, their config, and their trained model, with clear errors.

A run folder holds everything needed to trust and reuse a result: ``config.yaml`` (resolved),
``data.json`` (provenance + split fingerprint), ``metrics.jsonl`` (one line per epoch),
``checkpoints/last.pt`` (where training stands, possibly mid-epoch) and ``checkpoints/best.pt``
(lowest validation loss). This module does not import the trainer, so both can use it.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from groupact.build import model_from_config
from groupact.config import Config, from_dict, load_yaml, read_text_file
from groupact.errors import CheckpointError, ConfigError
from groupact.io import (LOCK_NAME, TEMP_GLOB, FolderLock, atomic_copy, folder_built_aside,
                         load_checkpoint, save_checkpoint, write_checksums)
from groupact.model import GroupActionAutoencoder
from groupact.nets import check_trusted_net
from groupact.strict import checked_name


@dataclass
class RunPaths:
    """The files of one run folder."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def data(self) -> Path:
        return self.root / "data.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def eval(self) -> Path:
        """Where `groupact evaluate` writes metrics.json, summary.md and figures/."""
        return self.root / "eval"


#: what groupact itself writes at the top of a run folder (train, evaluate, reproduce), and in
#: its checkpoints/; ``--overwrite`` deletes a folder only when it holds nothing else
#: evaluation folders `groupact evaluate` writes inside a run: the protocol's, the held-out
#: brains' (--heldout) and a quick one (--no-probes / --pairs)
EVAL_FOLDERS = ("eval", "eval-heldout", "eval-quick")
RUN_ENTRIES = frozenset({"config.yaml", "data.json", "metrics.jsonl", "checkpoints",
                         "reproduce.json", "reproduce.log", LOCK_NAME, ".groupact-overwritten",
                         *EVAL_FOLDERS,
                         *(f".{e}.groupact-{k}" for e in EVAL_FOLDERS for k in ("partial", "old"))})
CHECKPOINT_ENTRIES = frozenset({"best.pt", "last.pt"})
#: what `groupact evaluate` writes into its output folder
EVAL_ENTRIES = frozenset({"metrics.json", "summary.md", "figures"})


def foreign_entries(root: Path) -> list[str]:
    """Names in a folder that groupact did not write there (so no command may delete them)."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = [p.name for p in root.iterdir()
           if p.name not in RUN_ENTRIES and not fnmatch.fnmatch(p.name, TEMP_GLOB)]
    for sub, names in (("checkpoints", CHECKPOINT_ENTRIES),
                       *((e, EVAL_ENTRIES) for e in EVAL_FOLDERS)):
        folder = root / sub
        if folder.exists() and not folder.is_dir():
            out.append(f"{sub} (a file)")
        elif folder.is_dir():
            out += [f"{sub}/{p.name}" for p in folder.iterdir()
                    if p.name not in names and not fnmatch.fnmatch(p.name, TEMP_GLOB)]
    return sorted(out)


def claim_eval_folder(paths: RunPaths, out: Path) -> FolderLock:
    """Check that ``out`` may be replaced by a new evaluation, and lock the run folder when
    ``out`` lies inside it (two evaluations, or a training, would interleave there)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"--out {out} is a file; give a folder")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in EVAL_ENTRIES
                         and not fnmatch.fnmatch(p.name, TEMP_GLOB))
        if foreign:
            raise CheckpointError(f"{out} holds files `groupact evaluate` did not write "
                                  f"({', '.join(foreign[:3])}); an evaluation replaces its "
                                  "folder whole, so give an empty or new --out")
    lock = FolderLock(paths.root, "run folder")
    if out.resolve().parent == paths.root.resolve():
        lock.acquire()
    return lock


@dataclass
class LoadedRun:
    cfg: Config
    model: GroupActionAutoencoder
    paths: RunPaths
    checkpoint: dict

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.checkpoint["input_shape"])


#: where runs go when no --run-dir is given
RUNS_ROOT = Path("runs")


def _numbered(root: Path, name: str) -> list[Path]:
    """runs/NAME, runs/NAME-2, runs/NAME-3, … that exist, in order (NAME, the recipe's name,
    checked first: it must stay one folder under ``root``)."""
    checked_name(name, "the recipe's name (its default run folder)")
    found = [root / name] if (root / name).exists() else []
    numbered = []
    for p in root.glob(f"{name}-*") if root.is_dir() else []:
        tail = p.name[len(name) + 1:]
        if tail.isdigit() and int(tail) >= 2:
            numbered.append((int(tail), p))
    return found + [p for _, p in sorted(numbered)]


def new_run_dir(name: str, root: Path = RUNS_ROOT, overwrite: bool = False) -> Path:
    """The default folder of a new run: runs/NAME, or runs/NAME-2, -3, … if taken (with
    ``overwrite``: runs/NAME, which the run replaces).

    A second `groupact train RECIPE` (or `bash run main`) must neither be refused nor delete the
    first run, so each gets its own folder; the one chosen is printed.
    """
    taken = _numbered(root, name)
    if not taken or overwrite:
        return root / name
    last = taken[-1].name
    k = int(last[len(name) + 1:]) if last != name else 1
    return root / f"{name}-{k + 1}"


def latest_run_dir(name: str, root: Path = RUNS_ROOT) -> Path:
    """The newest default folder of recipe NAME (what `--resume RECIPE` continues)."""
    taken = _numbered(root, name)
    if not taken:
        raise CheckpointError(f"no run of recipe '{name}' under {root}/ to resume; start one with "
                              f"`groupact train {name}`, or give --run-dir RUN_DIR")
    return taken[-1]


#: keys a saved config may hold that no longer exist, dropped when it is read. Kept because
#: every run folder and checkpoint written before 0.5 holds them (pretrained/ among them): they
#: chose the L-BFGS probe of groupact 0.3, removed in 0.5, and train nothing.
RETIRED_KEYS: tuple[tuple[str, str], ...] = (
    ("eval", "probe"), ("eval", "probe_steps"), ("eval", "probe_l2"),
)


def saved_config(saved: Any) -> Config:
    """The Config of a dict a run saved (its config.yaml or a checkpoint's ``config``): keys added
    since it was written filled in by their defaults, :data:`RETIRED_KEYS` dropped. Every reader
    of a saved config goes through here."""
    if isinstance(saved, dict):
        saved = dict(saved)
        for section, key in RETIRED_KEYS:
            part = saved.get(section)
            if isinstance(part, dict) and key in part:
                saved[section] = {k: v for k, v in part.items() if k != key}
    return from_dict(Config, saved)


def read_run_config(run_dir: str | Path) -> Config:
    """The resolved config a run folder was trained with, or a CheckpointError saying why not."""
    paths = RunPaths(Path(run_dir))
    if paths.root.exists() and not paths.root.is_dir():
        raise CheckpointError(f"{run_dir} is a file, not a run folder; give the folder "
                              "`groupact train` wrote")
    if not paths.root.is_dir():
        raise CheckpointError(f"run folder {run_dir} does not exist; nothing to resume or read "
                              "(check the path, or train a new run there without --resume)")
    if not paths.config.is_file():
        raise CheckpointError(f"{run_dir} is not a groupact run folder (no config.yaml); "
                              "give the folder `groupact train` wrote")
    try:
        return saved_config(load_yaml(read_text_file(paths.config, "run config"),
                                      str(paths.config)))
    except ConfigError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{paths.config} is unreadable: {first}") from None


def flat_items(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``: dotted keys, as ``--set`` spells them."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat_items(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A saved config dict with keys added since it was written filled in by their defaults.

    So a run trained before a new key existed still matches its own config.yaml; a dict that no
    longer parses is returned as it is (the comparison then names the keys).
    """
    try:
        return saved_config(config).to_dict()
    except ConfigError:
        return config


def config_differences(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Dotted keys whose values differ between two config dicts, with both values."""
    fa, fb = flat_items(a), flat_items(b)
    return [(k, fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def check_net_version(state: dict[str, Any], model: GroupActionAutoencoder,
                      ckpt_path: Path) -> None:
    """Refuse weights trained for another pixel range than the net now has (nets of the same
    parameter shapes would load them and decode nonsense); checkpoints record the range."""
    saved = state.get("pixel_range")
    net = (state.get("config") or {}).get("model", {}).get("net")
    if saved is not None and tuple(saved) != tuple(model.pixel_range):
        raise CheckpointError(f"{ckpt_path} (model.net={net!r}) was trained on pixels in "
                              f"{tuple(saved)} but this model works in {model.pixel_range}")


def load_run(run_dir: str | Path, which: str = "best",
             device: str | torch.device = "cpu", trust_code: bool = False) -> LoadedRun:
    """The config and trained model of ``run_dir`` (``which``: best or last checkpoint).

    A run whose ``model.net`` names code outside groupact's registry is refused unless
    ``trust_code``: loading it would import and run that code (see docs/GUARANTEES.md).
    """
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last', not {which!r}")
    paths = RunPaths(Path(run_dir))
    cfg = read_run_config(run_dir)
    check_trusted_net(cfg.model.net, trust_code, str(paths.config))
    ckpt_path = paths.best if which == "best" else paths.last
    if not ckpt_path.is_file():
        raise CheckpointError(f"{run_dir} has no checkpoints/{ckpt_path.name}; train it first "
                              f"(groupact train … --run-dir {run_dir})")
    state = load_checkpoint(ckpt_path, device)
    shape = state.get("input_shape")
    if not isinstance(shape, (list, tuple)) or not all(isinstance(v, int) for v in shape):
        raise CheckpointError(f"{ckpt_path} lacks the input shape; it is not a groupact run")
    if isinstance(state.get("config"), dict):  # name the key, not just "a different model"
        saved = with_defaults(state["config"])
        diffs = config_differences({"model": saved.get("model"), "group": saved.get("group")},
                                   {"model": cfg.to_dict()["model"], "group": cfg.to_dict()["group"]})
        if diffs:
            key, theirs, ours = diffs[0]
            raise CheckpointError(f"{ckpt_path} is from another model ({key}={theirs!r}) than "
                                  f"{paths.config} describes ({key}={ours!r})")
    model = model_from_config(cfg, tuple(shape)).to(device)
    check_net_version(state, model, ckpt_path)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, AttributeError):
        raise CheckpointError(f"{ckpt_path} holds a different model than {paths.config} "
                              "describes") from None
    model.eval()
    return LoadedRun(cfg, model, paths, state)


#: what a slim (exported) checkpoint keeps: enough to evaluate and transform, not to resume
EXPORT_KEYS = ("format", "model", "epoch", "best_epoch", "best_val", "config", "data_fingerprint",
               "input_shape", "pixel_range")


def export_run(run_dir: str | Path, out_dir: str | Path, trust_code: bool = False) -> Path:
    """A small copy of a trained run that `evaluate` and `transform` accept, but that cannot resume.

    Keeps config.yaml, data.json, metrics.jsonl, the evaluation's eval/metrics.json and
    eval/summary.md when the run has them (a shared model travels with its numbers; the figures
    stay behind: `groupact evaluate` on the copy draws them again) and the best checkpoint's
    weights (no optimiser state, RNG or partial sums: about a third of the size).
    ``trust_code``: as in :func:`load_run` (the copy names the same net, so it asks again).
    """

    run = load_run(run_dir, trust_code=trust_code)   # every check `evaluate` makes, first
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise CheckpointError(f"{out_dir} exists and is not an empty folder; choose another "
                              "folder or delete it")
    with folder_built_aside(out_dir) as part:  # a kill leaves no half export under OUT_DIR
        dst = RunPaths(part)
        for f in (run.paths.config, run.paths.data, run.paths.metrics):
            if f.is_file():
                atomic_copy(f, dst.root / f.name)
        for name in ("metrics.json", "summary.md"):
            if (run.paths.eval / name).is_file():
                dst.eval.mkdir(exist_ok=True)
                atomic_copy(run.paths.eval / name, dst.eval / name)
        save_checkpoint(dst.best, {k: run.checkpoint[k] for k in EXPORT_KEYS
                                   if k in run.checkpoint})
        write_checksums(part)
    return out_dir
