"""Shared helpers for the recsys plugin's tests (a unique module name: no conftest clash)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.config.load import checkpoint_metric, load_config
from engine.train.loop import LoopSpec, run_local


def typed_config(*overrides: str, task: str = "recsys") -> tuple[Any, Any]:
    """The typed config and task info, composed exactly like the CLI does."""
    loaded = load_config([f"task={task}", *overrides])
    typed, info = loaded.config, loaded.info
    return typed, info


def train_local(run_dir: Path, *overrides: str, task: str = "recsys") -> list[dict[str, Any]]:
    """Train in this process (no Ray) through the engine's loop; returns the epoch rows."""
    typed, info = typed_config(*overrides, f"run.dir={run_dir}", task=task)
    metric, mode = checkpoint_metric(typed, info)
    spec = LoopSpec(info=info, config=typed, run_dir=str(run_dir), metric=metric, mode=mode)
    return run_local(spec).reports


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
