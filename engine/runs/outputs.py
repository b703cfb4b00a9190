"""Files a user names as an output (``-o``): never overwritten by surprise.

:func:`check_output_path` is the one rule ``lepton predict``, ``evaluate`` and
``report`` follow: an existing file is replaced only with ``--force``, and a run
directory's own files (its bookkeeping and anything inside its checkpoints) are never
an output, ``--force`` or not. Files the engine writes on its own (``eval.json`` beside
a checkpoint, a run's ``report.md``) are not user-named outputs and do not come here.
"""

from __future__ import annotations

import os

from engine.errors import OutputError
from engine.runs.checkpoint import META_FILE
from engine.runs.layout import CONFIG_FILE, METRICS_FILE, RESULT_FILE
from engine.runs.lock import LOCK_FILE
from engine.runs.storage import Location

#: The files of a run directory that only the engine writes.
RUN_FILES = frozenset(
    {
        CONFIG_FILE,
        RESULT_FILE,
        METRICS_FILE,
        "progress.json",
        "workers.json",
        LOCK_FILE,
        META_FILE,
    }
)
CHECKPOINT_PREFIX = "checkpoint_"


def is_run_dir(where: Location) -> bool:
    """A directory the engine made for a run (its config plus its result or metrics)."""
    if (where / LOCK_FILE).is_file():
        return True
    return (where / CONFIG_FILE).is_file() and (
        (where / RESULT_FILE).is_file() or (where / METRICS_FILE).is_file()
    )


def _resolved(path: str | os.PathLike[str] | Location) -> Location:
    where = Location.parse(path)
    if where.is_local:  # a symlink to a run's file is that file
        return Location.parse(os.path.realpath(where.local_path))
    return where


def run_file_owner(path: str | os.PathLike[str] | Location) -> tuple[Location, str] | None:
    """``(run or checkpoint dir, what)`` when ``path`` is one of a run's own files."""
    where = _resolved(path)
    parent = where.parent
    if where.name in RUN_FILES and is_run_dir(parent):
        return parent, f"the run's own {where.name}"
    if (parent / META_FILE).is_file():
        return parent, "inside a checkpoint"
    ancestor = parent
    while ancestor.parent != ancestor:
        if ancestor.name.startswith(CHECKPOINT_PREFIX) and is_run_dir(ancestor.parent):
            return ancestor, "inside a checkpoint"
        ancestor = ancestor.parent
    return None


def check_output_path(
    path: str | os.PathLike[str] | Location, *, force: bool = False, option: str = "-o"
) -> None:
    """Refuse to write ``path``: an existing file without ``force``; a run's own file always."""
    where = Location.parse(path)
    shown = str(path)
    owned = run_file_owner(where)
    if owned is not None:
        home, what = owned
        raise OutputError(
            f"Refusing to write {shown}: it is {what} ({home}), which only the engine writes.",
            hint=f"Choose an {option} outside the run's own files and checkpoints "
            "(--force does not apply to them).",
        )
    if where.is_dir():
        raise OutputError(
            f"Refusing to write {shown}: it is a directory.",
            hint=f"Give {option} a file path.",
        )
    if where.exists() and not force:
        raise OutputError(
            f"Refusing to overwrite {shown} (it exists).",
            hint=f"Pass --force to replace it, or choose another {option}.",
        )
