"""User-facing errors: one line that says what was wrong and what to do.

The CLI prints these without a traceback and exits with status 2; anything else is a bug.
"""


class GroupactError(Exception):
    """A mistake in the user's input (config, data file, image, run folder, checkpoint)."""


class ConfigError(GroupactError):
    """An unknown, ill-typed or inconsistent configuration key."""


class DataError(GroupactError):
    """A missing, unreadable or ill-shaped data file or image."""


class CheckpointError(GroupactError):
    """A run folder or checkpoint that is missing, truncated, corrupt or from another model."""
