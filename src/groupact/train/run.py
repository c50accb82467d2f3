"""``train_run``: one call that checks everything, claims the run folder and trains (or resumes)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from groupact.config import Config
from groupact.distributed import Comm
from groupact.errors import CheckpointError
from groupact.io import read_jsonl
from groupact.runs import RunPaths, read_run_config
from groupact.train.folder import TRASH, Claim, check_fresh
from groupact.train.resume import resume_state
from groupact.train.trainer import Trainer


def train_run(cfg: Config, run_dir: str | Path, resume: bool = False,
              overwrite: bool = False, log: Callable[[str], None] = print,
              comm: Comm | None = None) -> Trainer:
    """Train a recipe into ``run_dir`` (continuing it with ``resume``); returns the trainer.

    Everything is checked (config, data, checkpoint) before the folder is touched, and the
    folder is locked while training (a second process is refused). With ``overwrite`` the old
    run is set aside, not deleted, until the new run has written its first checkpoint; a new
    run that fails before that leaves the folder as it was (or no folder, if it made it).
    Check ``trainer.stopped_by`` to see whether a signal stopped it.
    """
    comm = comm if comm is not None else Comm()
    paths = RunPaths(Path(run_dir))
    claim = Claim(paths)
    state = None
    try:
        if resume:
            def locked_state():
                if not paths.root.is_dir():
                    raise CheckpointError(f"run folder {paths.root} does not exist; nothing to "
                                          "resume")
                read_run_config(paths.root)  # a run folder, before a lock file is put in it
                claim.take(fresh=False, overwrite=False)
                return resume_state(paths, cfg)
            state = comm.run_on_main(locked_state)
        else:
            comm.run_on_main(lambda: check_fresh(paths, overwrite))
        trainer = Trainer(cfg, run_dir, log=log, comm=comm)
        if cfg.train.init_from and not resume:     # a resume has its own weights
            trainer.start_from(cfg.train.init_from)
            trainer.log(f"starting from the weights of {cfg.train.init_from}")
        if not resume:
            comm.run_on_main(lambda: claim.take(fresh=True, overwrite=overwrite))
        trainer.on_first_save = claim.clear_trash
        if (paths.root / TRASH).is_dir() and claim.trash is None:
            claim.trash = paths.root / TRASH  # resuming a run whose overwrite was cut short
        if state is not None:
            trainer.load_state(state)
            comm.run_on_main(trainer.repair_folder)
            trainer.log(f"resuming {run_dir} in epoch {trainer.epoch + 1} after batch "
                        f"{trainer.batch}/{trainer.steps_per_epoch} (step {trainer.step})")
        elif resume:
            comm.run_on_main(trainer.repair_folder)  # stale temporary files, if any
            trainer.log(f"{run_dir} was stopped before its first checkpoint; starting it again")
        comm.barrier()
    except BaseException:
        claim.release()
        raise
    try:
        trainer.fit()
    except Exception:
        if comm.is_main and not resume and not trainer.has_checkpoint and claim.lock:
            claim.undo()
        raise
    finally:
        claim.release()
    return trainer


def history(run_dir: str | Path) -> list[dict[str, Any]]:
    """The run's metrics.jsonl records, one per finished epoch."""
    return read_jsonl(RunPaths(Path(run_dir)).metrics)
