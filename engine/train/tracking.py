"""Experiment tracking on rank 0: Weights & Biases when ``logger=wandb``.

``metrics.jsonl`` in the run directory is always written (by the loop); this module
adds the optional external tracker. W&B runs offline unless ``WANDB_API_KEY`` is set
(or ``WANDB_MODE`` says otherwise), writes under ``<run_dir>/wandb`` (under
``~/.cache/lepton/wandb/<run>`` when the run lives in an object store), and gives the
W&B run a stable id so a resumed run appends to the same W&B run:

- a plain run: id and name are the run directory's name;
- a sweep trial (``LoopSpec.trial``): one W&B run per trial, name = the trial's name,
  group = the sweep's name (unless ``logger.group`` is set), job type ``trial``, and an id
  unique per (sweep, trial) — trials are named ``trial_00000``… in every sweep — made of
  both names and a digest of the pair (:func:`trial_run_id`).

Ray Train V2 ranks are not visible to ``setup_wandb(rank_zero_only=True)``, so the
loop creates a tracker on world rank 0 only and passes ``None`` elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config.schema import LoggerConfig
from engine.runs.local_copies import cache_dir
from engine.runs.storage import Location

#: W&B run ids: at most 64 characters of these.
_MAX_ID = 64


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", text)


def trial_run_id(sweep: str, trial: str) -> str:
    """A sweep trial's W&B run id: ``<sweep>-<trial>-<8 hex>``, cut to 64 characters; the
    digest of the (sweep, trial) pair keeps it unique where the names are cut or changed."""
    digest = hashlib.sha256(json.dumps([sweep, trial]).encode("utf-8")).hexdigest()[:8]
    return f"{_slug(f'{sweep}-{trial}')[: _MAX_ID - 9]}-{digest}"


@dataclass(frozen=True)
class WandbIdentity:
    """What ``wandb.init`` is told about the run besides its config."""

    id: str
    name: str
    group: str | None
    job_type: str | None = None


def wandb_identity(
    cfg: LoggerConfig, run_name: str, trial: dict[str, Any] | None = None
) -> WandbIdentity:
    """The W&B id, name, group and job type of a run (``run_name``: its directory's name)."""
    if trial is None:
        return WandbIdentity(id=_slug(run_name)[:_MAX_ID], name=run_name, group=cfg.group)
    sweep, name = str(trial["sweep"]), str(trial["name"])
    return WandbIdentity(
        id=trial_run_id(sweep, name),
        name=name,
        group=cfg.group if cfg.group is not None else sweep,
        job_type="trial",
    )


class Tracker:
    #: The external run's id (W&B), None without one.
    run_id: str | None = None

    def log(self, row: dict[str, Any]) -> None: ...

    def finish(self) -> None: ...


class WandbTracker(Tracker):
    def __init__(
        self, cfg: LoggerConfig, files_dir: Path, config: dict[str, Any], identity: WandbIdentity
    ) -> None:
        import wandb

        mode = os.environ.get("WANDB_MODE") or (
            "online" if os.environ.get("WANDB_API_KEY") else "offline"
        )
        files_dir.mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(
            project=cfg.project,
            group=identity.group,
            job_type=identity.job_type,
            tags=list(cfg.tags) or None,
            name=identity.name,
            id=identity.id,
            resume="allow",
            dir=str(files_dir),
            mode=mode,  # type: ignore[arg-type]
            config=config,
            settings=wandb.Settings(silent=True, console="off"),
        )
        self.run_id = str(self._run.id)

    def log(self, row: dict[str, Any]) -> None:
        numeric = {
            k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        self._run.log(numeric)

    def finish(self) -> None:
        self._run.finish()


def make_tracker(
    cfg: LoggerConfig,
    run_dir: str | Path,
    config: dict[str, Any],
    trial: dict[str, Any] | None = None,
) -> Tracker:
    """The run's tracker; ``trial``: the sweep trial it is (``LoopSpec.trial``), if any."""
    if cfg.name != "wandb":
        return Tracker()
    where = Location.parse(run_dir)
    identity = wandb_identity(cfg, where.name, trial)
    if where.is_local:
        return WandbTracker(cfg, where.local_path, config, identity)
    # W&B writes its files locally: for a run in an object store, under the cache dir
    # (a trial's under its sweep's name: every sweep has a trial_00000).
    local = cache_dir() / "wandb"
    if trial is not None:
        local = local / _slug(str(trial["sweep"]))
    return WandbTracker(cfg, local / where.name, config, identity)
