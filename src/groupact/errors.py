"""User-facing errors: one line that says what was wrong and what to do.

The CLI prints these without a traceback and exits with status 2; anything else is a bug.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name: str, valid: Iterable[str], quote: str = "'") -> str:
    """"; did you mean 'x'?" for the nearest valid name, or "" when none is near (the one home
    of the suggestions in every unknown-name error)."""
    near = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.5)
    return f"; did you mean {quote}{near[0]}{quote}?" if near else ""


class GroupactError(Exception):
    """A mistake in the user's input (config, data file, image, run folder, checkpoint)."""


class ConfigError(GroupactError):
    """An unknown, ill-typed or inconsistent configuration key."""


class DataError(GroupactError):
    """A missing, unreadable or ill-shaped data file or image."""


class CheckpointError(GroupactError):
    """A run folder or checkpoint that is missing, truncated, corrupt or from another model."""
