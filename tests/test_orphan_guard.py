"""A training worker ends when the process that started it (the raylet) is gone."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

CHILD = textwrap.dedent(
    """
    import sys, time
    from engine.train.orphan_guard import exit_with_raylet
    assert exit_with_raylet(poll_s=0.05)
    print("watching", flush=True)
    time.sleep(60)
    """
)
# The "raylet": starts the worker, waits for it to watch, then dies without a word.
PARENT = textwrap.dedent(
    """
    import os, subprocess, sys
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "watching"
    print(child.pid, flush=True)
    os._exit(0)
    """
)


def _running(pid: int) -> bool:
    """Alive and not a zombie (a re-parented child may wait a while to be reaped)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return "Z" not in state.split()[1]


def test_a_worker_whose_parent_dies_ends_at_once():
    out = subprocess.run(
        [sys.executable, "-c", PARENT, CHILD], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout.strip())
    deadline = time.monotonic() + 10
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(pid), "the orphaned worker kept running"
