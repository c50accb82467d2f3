"""A run folder's safety while training: the claim (lock, overwrite kept aside until the new run's
first checkpoint, undo of a fresh run that failed before it) and the repair that makes a folder
agree with the checkpoint a resume starts from. Every rule here protects what a user already has."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from typing import Any

from groupact.errors import GroupactError
from groupact.io import LOCK_NAME, FolderLock, atomic_copy, make_folder, read_jsonl, \
    remove_stale_temps, write_jsonl
from groupact.runs import RunPaths, foreign_entries

#: inside a run folder being overwritten: the old run, kept until the new one's first checkpoint
TRASH = ".groupact-overwritten"


def check_fresh(paths: RunPaths, overwrite: bool, locked: bool = False) -> None:
    """Refuse a fresh run where it would mix with, or wrongly delete, what is there (or where
    another process is writing, unless this one holds the lock: ``locked``)."""
    if paths.root.exists() and not paths.root.is_dir():
        raise GroupactError(f"run folder {paths.root} is a file; give another --run-dir")
    if not locked:
        FolderLock.check_free(paths.root, "run folder")
    there = [p for p in paths.root.iterdir() if p.name != LOCK_NAME] if paths.root.is_dir() else []
    if not there:
        return
    if not overwrite:
        raise GroupactError(f"run folder {paths.root} already exists; use --resume to "
                            "continue it, --overwrite to start again, or --run-dir")
    foreign = foreign_entries(paths.root)
    if foreign or not (paths.config.is_file() or (paths.root / TRASH).is_dir()):
        what = ", ".join(foreign[:3]) + (" …" if len(foreign) > 3 else "") if foreign \
            else "no config.yaml"
        raise GroupactError(f"--overwrite refused: {paths.root} is not a groupact run folder "
                            f"({what}); --overwrite only replaces runs groupact wrote, so move "
                            "your files or give another --run-dir")



class Claim:
    """Rank 0's hold on a run folder: its lock, whether this process made the folder, and an
    overwritten run set aside in ``TRASH`` until the new run has its first checkpoint."""

    def __init__(self, paths: RunPaths):
        self.paths, self.lock, self.created, self.trash = paths, None, False, None
        self.had_lock_file = False

    def take(self, fresh: bool, overwrite: bool) -> None:
        self.created = make_folder(self.paths.root)
        self.had_lock_file = (self.paths.root / LOCK_NAME).exists()
        self.lock = FolderLock(self.paths.root, "run folder").acquire()
        if not fresh:
            return
        check_fresh(self.paths, overwrite, locked=True)  # again, under the lock
        trash = self.paths.root / TRASH
        ours = [p for p in self.paths.root.iterdir() if p.name not in (LOCK_NAME, TRASH)]
        if trash.is_dir():  # an earlier --overwrite died before its first checkpoint
            for p in ours:  # that attempt's files; the run it set aside stays in TRASH
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        elif ours:
            trash.mkdir()
            for p in ours:
                p.rename(trash / p.name)
        self.trash = trash if trash.is_dir() else None

    def clear_trash(self) -> None:
        """The new run has a checkpoint: the overwritten one may go."""
        if self.trash is not None:
            shutil.rmtree(self.trash, ignore_errors=True)
            self.trash = None

    def undo(self) -> None:
        """A fresh run failed before its first checkpoint: put the folder back as it was."""
        root = self.paths.root
        for p in root.iterdir():
            if p.name not in (LOCK_NAME, TRASH):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        if self.trash is not None:
            for p in self.trash.iterdir():
                p.rename(root / p.name)
            self.trash.rmdir()
            self.trash = None
        self.release()
        if not self.had_lock_file:  # the folder as it was, lock file included
            (root / LOCK_NAME).unlink(missing_ok=True)
        if self.created:
            try:
                root.rmdir()
            except OSError:
                pass

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

def repair_run_folder(paths: RunPaths, epoch: int, batch: int, best_epoch: int,
                      last_record: dict[str, Any] | None,
                      log: Callable[[str], None] = print) -> None:
    """Make the folder agree with the checkpoint being resumed (rank 0, before training).

    A kill can leave the folder out of step with ``last.pt``: a temporary file of an atomic
    write, a torn or missing last line of metrics.jsonl (killed between the checkpoint and the
    append), records of epochs the checkpoint has not reached, or a best.pt not yet refreshed
    (killed between the checkpoint and the copy). The checkpoint is the truth; the rest follows:
    ``epoch``/``batch`` say where it stands, ``best_epoch`` which epoch best.pt must hold and
    ``last_record`` the log line of its last finished epoch.
    """
    for folder in (paths.root, paths.checkpoints):
        for p in remove_stale_temps(folder):
            log(f"removed {p.name}, left by an interrupted write")
    on_file = read_jsonl(paths.metrics)

    def epoch_of(r: dict[str, Any]) -> int:
        e = r.get("epoch")
        return e if isinstance(e, int) else 1 << 30  # a record without an epoch is dropped

    if last_record is not None:
        records = [r for r in on_file if epoch_of(r) < epoch] + [last_record]
    else:
        records = [r for r in on_file if epoch_of(r) <= epoch]
    text = paths.metrics.read_text() if paths.metrics.exists() else ""
    if text != "".join(json.dumps(r) + "\n" for r in records):  # also drops a torn line
        write_jsonl(paths.metrics, records)
    if epoch > 0 and batch == 0 and best_epoch == epoch:
        atomic_copy(paths.last, paths.best)
