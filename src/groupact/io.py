"""Files that are whole or absent: atomic writes (temp file + rename) and checked checkpoints."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from groupact.errors import CheckpointError, GroupactError

#: bumped when the checkpoint layout changes; newer files are refused with a clear message.
#: 2: mid-epoch position (batch, epoch generator state, partial sums), last epoch record, best epoch
CHECKPOINT_FORMAT = 2

#: temporary files of :func:`_atomic` are ``.NAME.RANDOM.tmp`` next to their target
TEMP_GLOB = ".*.tmp"


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux), else briefly set."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: str | Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on folders
        pass
    finally:
        os.close(fd)


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, then rename it over ``path``.

    A reader (or a resumed run) sees the old file or the whole new one, never a torn one; a kill
    mid-write leaves only a hidden ``.NAME.*.tmp`` (removed by :func:`remove_stale_temps`); the
    data is fsynced before the rename, so a power cut cannot leave an empty file either. The
    file gets the permissions a plain ``open`` would give (mkstemp's are owner-only).
    """
    path = Path(path)
    if path.is_dir():
        raise GroupactError(f"cannot write {path}: it is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from None
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        _fsync(tmp)  # the data is on disk before the name points at it (power cuts)
        os.replace(tmp, path)
        _fsync(path.parent)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(path, e) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_error(path: Path, e: OSError) -> GroupactError:
    """A failed write as one line that names the cause (full disk, permissions, a file in the
    way) and the fix; the old file, if any, is untouched."""
    fixes = {errno.ENOSPC: "the disk is full; free space and run again",
             errno.EDQUOT: "the disk quota is exceeded; free space and run again",
             errno.EACCES: "no permission to write there; choose a writable folder",
             errno.EPERM: "no permission to write there; choose a writable folder",
             errno.EROFS: "the file system is read-only; choose a writable folder",
             errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
             errno.EEXIST: "a part of the path is a file, not a folder; choose another path",
             errno.EISDIR: "it is a folder; give a file name"}
    why = fixes.get(e.errno, f"{e.strerror or type(e).__name__}; check the path")
    return GroupactError(f"cannot write {path}: {why}")


def atomic_write_text(path: Path, text: str) -> None:
    _atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda p: p.write_bytes(data))


def atomic_write_npz(path: Path, arrays: Mapping[str, Any]) -> None:
    """Arrays as one compressed ``.npz``, whole or not at all."""
    def write(p: Path) -> None:
        with open(p, "wb") as f:   # a file object: np.savez would append .npz to a name
            np.savez_compressed(f, **arrays)
    _atomic(path, write)


def atomic_copy(src: Path, dst: Path) -> None:
    """Copy a file so that ``dst`` is the old file or the whole new one, never a torn copy."""
    _atomic(dst, lambda p: shutil.copyfile(src, p))


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete temporary files a killed atomic write left in ``folder``; returns what it removed."""
    removed = []
    for p in Path(folder).glob(TEMP_GLOB):
        if p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def atomic_save_figure(path: Path, fig) -> None:
    """Save a matplotlib figure as PNG, whole or not at all."""
    _atomic(path, lambda p: fig.savefig(p, format="png", dpi=110, bbox_inches="tight"))


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """One JSON line per record; a line is written with a single write call."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """Replace a JSONL file with ``records``, atomically (used to repair a log on resume)."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, or {} when it is missing, unreadable or not an object:
    for bookkeeping files a fresh start can do without."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return obj if isinstance(obj, dict) else {}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records (JSON objects) of a JSONL file; a torn line (a crash mid-write) is skipped."""
    out = []
    if not Path(path).exists():
        return out
    for line in Path(path).read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def make_folder(path: Path) -> bool:
    """Create ``path`` (and parents); True if this call created it. One-line errors for a file
    in the way or a folder that cannot be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise GroupactError(f"{path} is a file, not a folder; choose another path")
    try:
        path.mkdir(parents=True)
        return True
    except FileExistsError:
        if not path.is_dir():
            raise GroupactError(f"{path} is a file, not a folder; choose another path") from None
        return False
    except OSError as e:
        raise write_error(path, e) from None


#: the lock file groupact keeps inside a folder it is writing (a run folder, a results folder)
LOCK_NAME = ".groupact.lock"


class FolderLock:
    """An exclusive ``fcntl.flock`` on ``FOLDER/.groupact.lock``, held while a command writes
    the folder.

    The kernel drops the lock when its process dies, however it dies, so a stale lock (SIGKILL,
    power cut) never blocks the next command; the pid inside is only for the message. The file
    is left in place after release: unlinking a lock file races with the next locker.
    """

    def __init__(self, folder: Path, what: str = "folder"):
        self.folder, self.what = Path(folder), what
        self._fd: int | None = None

    def acquire(self, record: bool = True) -> "FolderLock":
        """Take the lock (``record``: write this pid into the file, for the next one's message)."""
        path = self.folder / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise write_error(path, e) from None
        try:
            import fcntl
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no flock (Windows): no lock, as before
            pass
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise GroupactError(f"{self.what} {self.folder} is in use by process {holder} "
                                "(another groupact command is writing it); wait for it to "
                                "finish or stop it, or choose another folder") from None
        if record:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    @staticmethod
    def check_free(folder: Path, what: str = "folder") -> None:
        """Refuse now, without creating anything, if another process holds ``folder``'s lock."""
        if (Path(folder) / LOCK_NAME).is_file():
            FolderLock(folder, what).acquire(record=False).release()

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *_exc) -> None:
        self.release()


#: marker inside a folder being built aside (so only folders groupact made are ever cleared)
PARTIAL_MARK = ".groupact-partial"


def partial_name(target: Path) -> Path:
    """Where a folder is built before it is renamed to ``target``: a hidden sibling."""
    target = Path(target)
    return target.parent / f".{target.name}.groupact-partial"


def refuse_symlink(target: Path) -> None:
    """Refuse an output folder that is a symbolic link (dangling or not), before anything is
    written: building aside swaps folders by renaming, which would move the link itself (not
    the folder it points to) and leave the job half done."""
    if target.is_symlink():
        raise GroupactError(f"{target} is a symbolic link (to {os.readlink(target)}); give the "
                            "folder it points to, or a new path")


@contextmanager
def folder_built_aside(target: Path) -> Iterator[Path]:
    """Build a whole folder next to ``target`` and rename it into place only when it is complete.

    A kill mid-build leaves ``target`` as it was (absent, or the old folder) and a hidden
    ``.NAME.groupact-partial`` that the next build clears (it carries a marker, so a user's
    folder of that name is never touched). An old ``target`` is swapped out and removed only
    after the new one is complete. Yields the folder to write into.
    """
    target = Path(target)
    refuse_symlink(target)
    part = partial_name(target)
    make_folder(target.parent)
    if part.exists():
        if not (part / PARTIAL_MARK).is_file():
            raise GroupactError(f"{part} is in the way and was not made by groupact; move it")
        shutil.rmtree(part)
    make_folder(part)
    (part / PARTIAL_MARK).write_text("a folder groupact is building; safe to delete\n")
    try:
        yield part
    except BaseException:
        shutil.rmtree(part, ignore_errors=True)
        raise
    (part / PARTIAL_MARK).unlink()
    old = target.parent / f".{target.name}.groupact-old"
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.rename(target, old)
    os.rename(part, target)
    _fsync(target.parent)
    if old.exists():
        shutil.rmtree(old)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically, stamped with the format version."""
    state = {"format": CHECKPOINT_FORMAT, **state}
    _atomic(path, lambda p: torch.save(state, p))


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file (any hashlib algorithm: sha256 for our checksums, md5 for the ones
    data publishers quote), read in 1 MiB chunks."""
    import hashlib

    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_checksums(folder: Path, name: str = "SHA256SUMS") -> Path:
    """``folder/SHA256SUMS`` for every file below it (``sha256sum -c`` format), sorted paths."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and p.name not in (name, PARTIAL_MARK))
    lines = [f"{file_digest(p)}  {p.relative_to(folder).as_posix()}" for p in files]
    atomic_write_text(folder / name, "\n".join(lines) + "\n")
    return folder / name


def verify_checksums(folder: Path, name: str = "SHA256SUMS") -> list[str]:
    """Paths under ``folder`` whose SHA-256 differs from ``SHA256SUMS`` (or that are missing)."""
    folder = Path(folder)
    bad = []
    for line in (folder / name).read_text().splitlines():
        digest, rel = line.split("  ", 1)
        path = folder / rel
        if not path.is_file() or file_digest(path) != digest:
            bad.append(rel)
    return bad


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint, turning every way it can be broken into a one-line CheckpointError.

    ``weights_only`` unpickling: a checkpoint holds tensors, numbers, text and containers only, so a
    file crafted to run code when unpickled is refused as corrupt instead of executed.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except OSError as e:  # the file is fine as far as we know; reading it is not
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}; check its "
                              "permissions and the disk") from None
    except Exception as e:  # truncated zip, pickle garbage, wrong file type
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt "
                              f"({type(e).__name__}); retrain or restore it from a backup") from None
    if not isinstance(state, dict) or "model" not in state or "format" not in state:
        raise CheckpointError(f"{path} is not a groupact checkpoint")
    fmt = state["format"]
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt < 1:
        raise CheckpointError(f"{path} is not a groupact checkpoint (format {str(fmt)[:40]}; "
                              f"groupact writes 1 to {CHECKPOINT_FORMAT})")
    if fmt > CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {fmt}, newer than this "
                              f"groupact understands ({CHECKPOINT_FORMAT}); upgrade groupact")
    check_finite_weights(path, state["model"])
    return state


def check_finite_weights(path: Path, weights: Any) -> None:
    """Refuse weights that are not a name → tensor mapping or hold NaN or inf: such a model turns
    every image into NaN (shown as black) without a word, and training never saves one."""
    if not isinstance(weights, dict):
        raise CheckpointError(f"{path} is not a groupact checkpoint (its model is not a mapping "
                              "of weights)")
    for name, w in weights.items():
        if isinstance(w, torch.Tensor) and w.is_floating_point() and not bool(w.isfinite().all()):
            raise CheckpointError(f"checkpoint {path} holds NaN or infinite weights (in "
                                  f"{str(name)[:80]}); it is damaged: retrain or restore it "
                                  "from a backup")
