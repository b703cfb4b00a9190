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
    #: The CLI's label: ``lepton: <kind>: <message>``.
    kind = "error"

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
    """A checkpoint or run directory is missing, incomplete, damaged or for another task."""


class RunFileError(CheckpointError):
    """A run's own record (``config.yaml``, ``result.json``, ``metrics.jsonl``) is damaged
    (names the file and the line)."""


class ClusterError(LeptonError):
    """The Ray cluster cannot run the job as configured (e.g. too few resources)."""


class TrainingFailed(LeptonError):
    """Training ran but did not finish; the message says where its checkpoints are."""

    exit_code = 1


class RunInterrupted(LeptonError):
    """Training was stopped by SIGINT or SIGTERM; the hint is the command that resumes it.

    The exit status is the shell's for that signal (130, 143); the CLI prints it as
    ``lepton: interrupted: ...``.
    """

    kind = "interrupted"

    def __init__(self, message: str, *, hint: str | None = None, signum: int) -> None:
        super().__init__(message, hint=hint)
        self.signum = signum
        self.exit_code = 128 + signum


class StorageError(LeptonError):
    """The run directory's storage (a path or an object-store URI) cannot be used."""


class RunLockedError(CheckpointError):
    """Another live driver holds the run directory (the message names it: host, pid, since)."""


class OutputError(LeptonError):
    """An output path would overwrite a file (without ``--force``) or a run's own files."""


#: How many characters of a value from the user's data a message quotes.
QUOTE_LIMIT = 200


def clip(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``str(value)`` cut to ``limit`` characters, for quoting user data in a message.

    A cell, header or line from a data file can be megabytes long; a message quotes
    its start and says how much was left out: ``'abc…(9812 more characters)'``.
    """
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…({len(text) - limit} more characters)"


def clip_repr(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` cut like :func:`clip` (a long string is cut before it is quoted)."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}…({len(value) - limit} more characters)"
    return clip(repr(value), limit)


class ExportError(LeptonError):
    """A model cannot be exported or quantized as asked (``lepton export``): an operator
    or module the format cannot express, outputs that do not match the PyTorch model, no
    layer to quantize, a missing extra; the message names which."""


class ServeError(LeptonError):
    """A service that cannot start or be reached (``lepton serve``)."""


class JobError(LeptonError):
    """A cluster job cannot be submitted or found (``lepton submit``, ``lepton jobs``): a bad
    address or token, an unknown job id, an upload too big; the message names which."""
