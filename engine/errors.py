"""Errors a user can fix.

Every exception here carries a message that names the problem and the fix. The CLI
prints it on one paragraph and exits with ``exit_code`` (2 for user mistakes), with
no traceback. Anything not derived from :class:`LeptonError` is a bug and keeps its
traceback.
"""

from __future__ import annotations


class LeptonError(Exception):
    """Base class: a problem the user can fix. Printed without a traceback."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n{hint}")


class ConfigError(LeptonError):
    """A config key, value or override is wrong (names the key and what is allowed)."""


class PluginError(LeptonError):
    """A plugin could not be loaded or misbehaves (names the plugin and the reason)."""


class UnknownTaskError(ConfigError):
    """The requested task is not provided by any installed plugin."""


class DataError(LeptonError):
    """Input data is missing, empty or in the wrong shape (names the file or column)."""


class CheckpointError(LeptonError):
    """A checkpoint or run directory is missing, incomplete or for another task."""


class ClusterError(LeptonError):
    """The Ray cluster cannot run the job as configured (e.g. too few resources)."""


class TrainingFailed(LeptonError):
    """Training ran but did not finish; the message says where its checkpoints are."""

    exit_code = 1


class StorageError(LeptonError):
    """The run directory's storage (a path or an object-store URI) cannot be used."""
