"""Experiment tracking on rank 0: Weights & Biases when ``logger=wandb``.

``metrics.jsonl`` in the run directory is always written (by the loop); this module
adds the optional external tracker. W&B runs offline unless ``WANDB_API_KEY`` is set
(or ``WANDB_MODE`` says otherwise), writes under ``<run_dir>/wandb`` (under
``~/.cache/lepton/wandb/<run>`` when the run lives in an object store), and uses the
run name as its id so a resumed run appends to the same W&B run.

Ray Train V2 ranks are not visible to ``setup_wandb(rank_zero_only=True)``, so the
loop creates a tracker on world rank 0 only and passes ``None`` elsewhere.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from engine.config.schema import LoggerConfig
from engine.runs.local_copies import cache_dir
from engine.runs.storage import Location


class Tracker:
    def log(self, row: dict[str, Any]) -> None: ...

    def finish(self) -> None: ...


class WandbTracker(Tracker):
    def __init__(self, cfg: LoggerConfig, run_dir: Path, config: dict[str, Any]) -> None:
        import wandb

        mode = os.environ.get("WANDB_MODE") or (
            "online" if os.environ.get("WANDB_API_KEY") else "offline"
        )
        run_id = re.sub(r"[^A-Za-z0-9_-]", "-", run_dir.name)[:64]
        self._run = wandb.init(
            project=cfg.project,
            group=cfg.group,
            tags=list(cfg.tags) or None,
            name=run_dir.name,
            id=run_id,
            resume="allow",
            dir=str(run_dir),
            mode=mode,  # type: ignore[arg-type]
            config=config,
            settings=wandb.Settings(silent=True, console="off"),
        )

    def log(self, row: dict[str, Any]) -> None:
        numeric = {
            k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        self._run.log(numeric)

    def finish(self) -> None:
        self._run.finish()


def make_tracker(cfg: LoggerConfig, run_dir: str | Path, config: dict[str, Any]) -> Tracker:
    if cfg.name != "wandb":
        return Tracker()
    where = Location.parse(run_dir)
    if where.is_local:
        return WandbTracker(cfg, where.local_path, config)
    # W&B writes its files locally: for a run in an object store, under the cache dir.
    local = cache_dir() / "wandb" / where.name
    local.mkdir(parents=True, exist_ok=True)
    return WandbTracker(cfg, local, config)
