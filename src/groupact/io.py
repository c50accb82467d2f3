"""Files that are whole or absent: atomic writes (temp file + rename) and checked checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from groupact.errors import CheckpointError

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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        _fsync(tmp)  # the data is on disk before the name points at it (power cuts)
        os.replace(tmp, path)
        _fsync(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    _atomic(path, lambda p: p.write_text(text))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda p: p.write_bytes(data))


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
        obj = json.loads(Path(path).read_text())
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
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != name)
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
    except Exception as e:  # truncated zip, pickle garbage, wrong file type
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt "
                              f"({type(e).__name__}); retrain or restore it from a backup") from None
    if not isinstance(state, dict) or "model" not in state or "format" not in state:
        raise CheckpointError(f"{path} is not a groupact checkpoint")
    fmt = state["format"]
    if not isinstance(fmt, int) or isinstance(fmt, bool):
        raise CheckpointError(f"{path} is not a groupact checkpoint (format {fmt!r})")
    if fmt > CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {fmt}, newer than this "
                              f"groupact understands ({CHECKPOINT_FORMAT}); upgrade groupact")
    return state
