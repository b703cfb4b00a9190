"""A small finished vision run without Ray, as ``lepton train`` leaves it, for tests of
what users do with run directories afterwards (copy, move, damage, evaluate)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

from test_loop_local import _spec

from engine.runs.layout import CONFIG_FILE, RESULT_FILE, summarize, write_json_atomic
from engine.train.loop import run_local

#: Ranked so that the best checkpoint is the *first* one: a silent fallback to the newest
#: checkpoint would then be visible.
METRIC, MODE = "val/accuracy", "min"


def train_run(run: Path, epochs: int = 3) -> Path:
    """The loop in this process, then config.yaml and result.json as the driver writes them."""
    from engine.config.load import load_config

    run_local(_spec(run, f"trainer.epochs={epochs}"))
    (run / CONFIG_FILE).write_text(load_config(["task=vision"]).yaml)
    write_result(run, "finished")
    return run


def write_result(run: Path, status: str, *, summary: bool = True) -> None:
    """result.json as engine.train.driver writes it (its summarize + as_dict helpers)."""
    data = {
        "status": status,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.time(),
        "metric": METRIC,
        "mode": MODE,
    }
    if summary:
        data["summary"] = summarize(run, METRIC, MODE, status).as_dict()
    write_json_atomic(run / RESULT_FILE, data)


def best_name(run: Path) -> str:
    return json.loads((run / RESULT_FILE).read_text())["summary"]["best_checkpoint"]


def newest_name(run: Path) -> str:
    return sorted(p.name for p in run.iterdir() if p.name.startswith("checkpoint_"))[-1]


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes: to show a directory was left untouched."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def flip_bytes(path: Path) -> None:
    """Same size, other bytes (inside the tensor data, past the safetensors header)."""
    data = bytearray(path.read_bytes())
    for i in range(len(data) - 64, len(data) - 32):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    assert path.stat().st_size == len(data)


def copy_run(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest)
    return dest
