"""Where a checkpoint came from: the ``lineage`` object of its ``task.json``.

Every checkpoint the training loop writes records, under ``"lineage"``::

    {
      "config_hash": "<sha256 hex>" | null,  # of the run dir's config.yaml, as it was when
                                             # this worker group started (null: no such file)
      "git_commit": "<40 hex>" | null,       # HEAD of the git repo of the driver's working
                                             # directory (LoopSpec.cwd); null: no git, not a
                                             # repo, no commit yet
      "git_dirty": true | false | null,      # tracked files differ from HEAD (untracked files
                                             # do not count, as for `git describe --dirty`);
                                             # null when git_commit is
      "wandb_run_id": "<id>" | null,         # the W&B run the rows went to (logger=wandb)
      # a sweep trial only (LoopSpec.trial):
      "sweep": "<sweep name>", "trial": "trial_00003", "values": {"optimizer.lr": 0.0031}
    }

The config hash is of ``config.yaml``'s bytes (the resolved YAML text the driver writes
into the run dir, UTF-8): ``sha256sum <run>/config.yaml`` gives the same value. A resumed run's
driver rewrites ``config.yaml``, so checkpoints after a resume with other overrides carry
the hash of the config they were trained under. The git state is looked up once per run
where the :class:`~engine.train.loop.LoopSpec` is made (the driver), with one
``git status`` that takes no lock (``GIT_OPTIONAL_LOCKS=0``).

Checkpoints written before lineage existed have no such key; :func:`lineage_of` returns
None for them and loading them is unaffected.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from engine.runs.layout import CONFIG_FILE
from engine.runs.storage import Location

#: The key in a checkpoint's ``task.json`` (engine.runs.checkpoint writes it).
LINEAGE_KEY = "lineage"
#: The keys a sweep trial's ``LoopSpec.trial`` must have.
TRIAL_KEYS = ("sweep", "name", "values")
_GIT_TIMEOUT_S = 10.0


def config_hash(run_dir: str | Path | Location) -> str | None:
    """SHA-256 of ``<run_dir>/config.yaml``'s bytes; None when the run dir has none (a
    loop run by hand, without the driver) or it cannot be read."""
    try:
        data = (Location.parse(run_dir) / CONFIG_FILE).read_bytes()
    except (OSError, ValueError):  # missing, unreadable; a StorageError is an OSError too
        return None
    return hashlib.sha256(data).hexdigest()


def git_state(cwd: str | Path | None = None) -> dict[str, Any]:
    """``{"commit", "dirty"}`` of the git work tree holding ``cwd`` (default: this
    process's); both None when git is missing, ``cwd`` is in no repository, the
    repository has no commit yet, or git fails or hangs. Never raises."""
    unknown: dict[str, Any] = {"commit": None, "dirty": None}
    try:
        done = subprocess.run(
            ["git", "status", "--porcelain=v2", "--branch", "--untracked-files=no"],
            cwd=str(cwd) if cwd is not None else None,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            # No index.lock, no index refresh written: never in the way of the user's git.
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"},
            check=False,
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return unknown
    if done.returncode != 0:
        return unknown
    commit: str | None = None
    dirty = False
    for line in done.stdout.splitlines():
        if line.startswith("# branch.oid "):
            oid = line.split(" ", 2)[2].strip()
            commit = oid if oid != "(initial)" else None
        elif line and not line.startswith("#"):
            dirty = True
    if commit is None:
        return unknown
    return {"commit": commit, "dirty": dirty}


def check_trial(trial: dict[str, Any] | None) -> None:
    """A sweep trial's description has the contract's shape (a programming error if not)."""
    if trial is None:
        return
    missing = [k for k in TRIAL_KEYS if k not in trial]
    if missing or not isinstance(trial.get("values"), dict):
        raise ValueError(
            f"LoopSpec.trial must be {{'sweep': str, 'name': str, 'values': dict}}; got {trial!r}"
        )


def build_lineage(
    *,
    config_hash: str | None,
    git: dict[str, Any] | None,
    wandb_run_id: str | None,
    trial: dict[str, Any] | None,
) -> dict[str, Any]:
    """The ``lineage`` object a checkpoint records (see the module docstring)."""
    git = git or {}
    lineage: dict[str, Any] = {
        "config_hash": config_hash,
        "git_commit": git.get("commit"),
        "git_dirty": git.get("dirty") if git.get("commit") else None,
        "wandb_run_id": wandb_run_id,
    }
    if trial is not None:
        lineage["sweep"] = str(trial["sweep"])
        lineage["trial"] = str(trial["name"])
        lineage["values"] = _plain(trial["values"])
    return lineage


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """Swept values as plain JSON (a search algorithm may hand out numpy scalars)."""

    def default(value: Any) -> Any:
        item = getattr(value, "item", None)
        return item() if callable(item) else str(value)

    result: dict[str, Any] = json.loads(json.dumps(values, default=default))
    return result


def lineage_of(meta: dict[str, Any]) -> dict[str, Any] | None:
    """A ``task.json``'s lineage; None for a checkpoint from before lineage (or a damaged one:
    lineage is a record for people, never needed to load the checkpoint)."""
    lineage = meta.get(LINEAGE_KEY)
    return lineage if isinstance(lineage, dict) else None


def describe(lineage: dict[str, Any] | None) -> str:
    """One line for people: config hash, commit, W&B run, sweep trial and its values."""
    if lineage is None:
        return "not recorded (a checkpoint from an engine before lineage)"
    config = lineage.get("config_hash")
    commit = lineage.get("git_commit")
    parts = [
        f"config {config[:12]}" if isinstance(config, str) else "config -",
        (
            f"git {commit[:12]}{' (dirty)' if lineage.get('git_dirty') else ''}"
            if isinstance(commit, str)
            else "git -"
        ),
    ]
    if lineage.get("wandb_run_id"):
        parts.append(f"W&B {lineage['wandb_run_id']}")
    if lineage.get("sweep") is not None:
        values = lineage.get("values") or {}
        shown = ", ".join(f"{k}={v}" for k, v in values.items()) if isinstance(values, dict) else ""
        parts.append(
            f"sweep {lineage['sweep']} {lineage.get('trial')}" + (f" ({shown})" if shown else "")
        )
    return ", ".join(parts)
