"""When a ``lepton train`` invocation's steps happened, for its cost (:mod:`engine.runs.cost`).

The start of a run is the start of the ``lepton`` process: :func:`engine.cli.main`
marks it with :func:`command_clock` (the process's own start time from ``/proc`` on
Linux when ``main()`` is the program; the call's time when ``main([...])`` runs
in-process, as in tests, or where ``/proc`` is missing). ``train()`` called directly
counts from its call. Standard library only: ``lepton`` imports it on every command.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

_command_started: float | None = None


def process_start_time() -> float | None:
    """When this process started (Linux: ``/proc/self/stat``), as ``time.time()``; None
    where that is not readable."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            stat = f.read()
        # Field 22 (starttime, clock ticks after boot); the name in (...) may hold spaces.
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        since_boot = ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - since_boot)
    except (OSError, ValueError, IndexError, AttributeError):
        return None


@contextlib.contextmanager
def command_clock(whole_process: bool) -> Iterator[None]:
    """Mark the start of a ``lepton`` command for :func:`command_started` while it runs.

    ``whole_process``: the command is the program itself (``lepton ...``), so its start is
    the process's; otherwise (``main([...])`` called in-process, as tests do) it is now.
    """
    global _command_started
    now = time.time()
    started = process_start_time() if whole_process else None
    _command_started = started if started is not None and started <= now else now
    try:
        yield
    finally:
        _command_started = None


def command_started() -> float | None:
    """The start of the running ``lepton`` command (:func:`command_clock`), if any."""
    return _command_started


@dataclass
class RunClock:
    """The driver's timestamps of one ``lepton train`` invocation."""

    process_started: float
    invocation: str = ""
    fit_started: float | None = None
    fit_ended: float | None = None

    @classmethod
    def start(cls) -> RunClock:
        now = time.time()
        started = command_started() or now
        return cls(process_started=started, invocation=f"{os.getpid()}-{now:.6f}")
