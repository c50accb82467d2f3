"""A tiny on-disk cache for generated datasets.

A generator is a function that returns named numpy arrays; :func:`cached` stores its result as one
``.npz`` file named after the generator and a hash of its settings (plus :data:`FORMAT_VERSION`, bumped
whenever a generator changes what it makes), under ``GROUPACT_CACHE`` or ``~/.cache/groupact``.

- Writes are atomic: the arrays go to a temporary file in the same folder, which is then renamed over
  the final name (``os.replace``), so an interrupted run never leaves half a file under the real name.
- A file that cannot be read back (truncated, corrupt, or holding other settings) is regenerated with
  a warning, never crashed on.
- A cache folder that cannot be written only costs the caching (a warning); the data is still returned.
- ``GROUPACT_CACHE=off`` (or ``0``/``none``/``false``) switches caching off altogether.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from groupact.errors import DataError

#: part of every key: bump it when a generator's output changes for the same settings
FORMAT_VERSION = 1
_META = "__groupact_cache_meta__"
_OFF = {"off", "0", "none", "false", "no"}


def default_cache_dir() -> Path | None:
    """``$GROUPACT_CACHE`` if set (None when it says ``off``), else ``~/.cache/groupact``."""
    env = os.environ.get("GROUPACT_CACHE")
    if env is not None and env.strip():
        if env.strip().lower() in _OFF:
            return None
        return Path(env).expanduser()
    return Path.home() / ".cache" / "groupact"


def cache_key(name: str, settings: Mapping[str, Any]) -> str:
    """A short hash of the generator name, its settings and the cache format version."""
    return hashlib.sha256(_meta_text(name, settings).encode()).hexdigest()[:20]


def cache_path(name: str, settings: Mapping[str, Any], cache_dir: str | Path | None = None) -> Path | None:
    """Where :func:`cached` keeps this generator's result (None when caching is off)."""
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if folder is None:
        return None
    return folder / f"{_safe(name)}-{cache_key(name, settings)}.npz"


def cached(name: str, settings: Mapping[str, Any], make: Callable[[], Mapping[str, np.ndarray]],
           cache_dir: str | Path | None = None, *, enabled: bool = True) -> dict[str, np.ndarray]:
    """``make()``'s arrays, read from the cache when an intact copy for these settings exists.

    ``settings`` must be JSON-serialisable (numbers, strings, lists, dicts); it is what makes two
    results different, so put every argument that changes the output into it.
    """
    meta = _meta_text(name, settings)
    path = cache_path(name, settings, cache_dir) if enabled else None
    if path is not None and path.exists():
        arrays = _read(path, meta)
        if arrays is not None:
            return arrays
    arrays = _check(name, make())
    if path is not None:
        _write(path, arrays, meta)
    return arrays


def _meta_text(name: str, settings: Mapping[str, Any]) -> str:
    try:
        return json.dumps({"name": name, "settings": settings, "format": FORMAT_VERSION},
                          sort_keys=True, separators=(",", ":"))
    except TypeError as e:
        raise DataError(f"cache settings for {name!r} are not JSON-serialisable ({e}); "
                        "pass plain numbers, strings, lists and dicts") from None


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "data"


def _check(name: str, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in arrays.items():
        if not isinstance(k, str) or not k or k.startswith("__") or k == "file":
            raise DataError(f"generator {name!r} returned an array named {k!r}; "
                            "use plain names that do not start with '__'")
        out[k] = np.asarray(v)
        if out[k].dtype == object:
            raise DataError(f"generator {name!r} returned an object array {k!r}; return numbers")
    return out


def _read(path: Path, meta: str) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None (with a warning) if the file is unreadable or for other settings."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}  # reads (and CRC-checks) every member now
        stored = arrays.pop(_META, None)
        if stored is None or stored.tobytes().decode("utf-8") != meta:
            raise ValueError("the file holds other settings")
        return arrays
    except Exception as e:  # noqa: BLE001 - any unreadable file is regenerated
        warnings.warn(f"cache file {path} is unreadable ({type(e).__name__}: {e}); regenerating it",
                      RuntimeWarning, stacklevel=3)
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # alive, but another user's
        return True
    return True


def remove_orphan_temps(path: Path) -> list[Path]:
    """Temporary files of ``path`` left by writers that were killed (their pid is in the name:
    ``.STEM.PID.RANDOM.tmp``); a live writer's file is left alone (the cache is shared)."""
    removed = []
    for p in path.parent.glob(f".{path.stem}.*.tmp"):
        parts = p.name[len(path.stem) + 2:].split(".")
        if parts and parts[0].isdigit() and not _pid_alive(int(parts[0])):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _write(path: Path, arrays: dict[str, np.ndarray], meta: str) -> None:
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_orphan_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.{os.getpid()}.", suffix=".tmp",
                                   dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays, **{_META: np.frombuffer(meta.encode(), np.uint8)})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        warnings.warn(f"could not write the cache file {path} ({e}); the data is not cached. "
                      "Set GROUPACT_CACHE to a writable folder (or 'off')",
                      RuntimeWarning, stacklevel=3)
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def generator_settings(what: str, defaults: dict[str, Any],
                       overrides: dict[str, Any]) -> dict[str, Any]:
    """A generator's settings: defaults updated by ``overrides`` (unknown names refused).

    Tuples become lists so the settings hash the same way after a JSON round trip (cache keys).
    """
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise DataError(f"unknown {what} generator setting {sorted(unknown)[0]!r}; "
                        f"known: {', '.join(sorted(defaults))}")
    s = {**defaults, **overrides}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in s.items()}
