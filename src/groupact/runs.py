"""Opening a finished run folder: its config and its best model, with clear errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from groupact.build import group_from_config, model_from_config
from groupact.config import Config, from_dict
from groupact.errors import CheckpointError, ConfigError
from groupact.io import load_checkpoint
from groupact.model import GroupActionAutoencoder
from groupact.train import RunPaths


@dataclass
class LoadedRun:
    cfg: Config
    model: GroupActionAutoencoder
    paths: RunPaths
    checkpoint: dict

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.checkpoint["input_shape"])


def load_run(run_dir: str | Path, which: str = "best",
             device: str | torch.device = "cpu") -> LoadedRun:
    """The config and trained model of ``run_dir`` (``which``: best or last checkpoint)."""
    paths = RunPaths(Path(run_dir))
    if not paths.root.is_dir():
        raise CheckpointError(f"run folder {run_dir} does not exist")
    if not paths.config.is_file():
        raise CheckpointError(f"{run_dir} is not a groupact run folder (no config.yaml); "
                              "give the folder `groupact train` wrote")
    try:
        cfg = from_dict(Config, yaml.safe_load(paths.config.read_text()))
    except (yaml.YAMLError, ConfigError) as e:
        raise CheckpointError(f"{paths.config} is unreadable: {e}") from None
    ckpt_path = paths.best if which == "best" else paths.last
    if not ckpt_path.is_file():
        raise CheckpointError(f"{run_dir} has no checkpoints/{ckpt_path.name}; train it first "
                              f"(groupact train … --run-dir {run_dir})")
    state = load_checkpoint(ckpt_path, device)
    if "input_shape" not in state:
        raise CheckpointError(f"{ckpt_path} lacks the input shape; it is not a groupact run")
    model = model_from_config(cfg, tuple(state["input_shape"])).to(device)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError:
        raise CheckpointError(f"{ckpt_path} holds a different model than {paths.config} "
                              "describes") from None
    model.eval()
    return LoadedRun(cfg, model, paths, state)
