"""Running ``lepton train`` for the streaming benchmark while reading its workers' memory.

:func:`run_watched` launches the command in its own session and, every
:data:`SAMPLE_S` seconds until it exits, reads ``/proc/<pid>/status`` of every process
in its tree whose title is a Ray one (``ray::<Actor or task>``): the kernel's peak
resident set (``VmHWM``) and the current ``VmRSS`` split into ``RssAnon`` (private heap),
``RssFile`` (mapped files: torch's and Ray's shared libraries) and ``RssShmem`` (shared
memory: pages of Ray's object store the process has mapped and touched). A process is
put in a role from its title: the Train workers (``ray::RayTrainWorker``), Ray Data's
tasks and actors (titles naming a read, ``MapBatches`` or the split coordinator; a pooled
worker that ran one stays in that role), the rest. Standard library and psutil only.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

SAMPLE_S = 0.25
FIELDS = ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem")
DATA_TITLES = ("Read", "MapBatches", "SplitCoordinator", "StreamSplit", "Map(", "MapRows")
MiB = 1024 * 1024


@dataclass
class ProcMemory:
    pid: int
    role: str
    title: str
    peak: dict[str, int] = field(default_factory=dict)  # field -> max bytes seen
    samples: int = 0

    def update(self, values: Mapping[str, int]) -> None:
        self.samples += 1
        for k, v in values.items():
            self.peak[k] = max(self.peak.get(k, 0), v)

    def mib(self, key: str) -> float:
        return self.peak.get(key, 0) / MiB

    def as_dict(self) -> dict[str, object]:
        return {
            "pid": self.pid,
            "role": self.role,
            "title": self.title,
            "samples": self.samples,
            **{f"peak_{k}_mib": round(self.mib(k), 1) for k in FIELDS},
        }


@dataclass
class WatchedRun:
    cmd: list[str]
    returncode: int | None
    wall_s: float
    timed_out: bool
    log_path: Path
    processes: dict[int, ProcMemory]
    object_store_bytes: int | None  # from the raylet's command line

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def of_role(self, role: str) -> list[ProcMemory]:
        return sorted((p for p in self.processes.values() if p.role == role), key=lambda p: p.pid)

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""


def role_of(title: str) -> str:
    if title.startswith("ray::RayTrainWorker"):
        return "train_worker"
    if any(t in title for t in DATA_TITLES):
        return "ray_data"
    return "other_ray"


def read_status(pid: int) -> dict[str, int]:
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in FIELDS:
                values[key] = int(rest.split()[0]) * 1024
    return values


def _object_store_bytes(argv: Sequence[str]) -> int | None:
    for arg in argv:
        m = re.match(r"--object_store_memory=(\d+)", arg)
        if m:
            return int(m.group(1))
    return None


def run_watched(
    cmd: Sequence[str], *, log_path: Path, cwd: Path, env: Mapping[str, str], timeout_s: float
) -> WatchedRun:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    seen: dict[int, ProcMemory] = {}
    store: int | None = None
    with open(log_path, "w", encoding="utf-8") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        timed_out = False
        while proc.poll() is None:
            store = _sample(proc.pid, seen) or store
            if time.perf_counter() - t0 > timeout_s:
                timed_out = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                break
            time.sleep(SAMPLE_S)
        wall = time.perf_counter() - t0
    return WatchedRun(list(cmd), proc.returncode, wall, timed_out, log_path, seen, store)


def _sample(root_pid: int, seen: dict[int, ProcMemory]) -> int | None:
    store = None
    try:
        root = psutil.Process(root_pid)
        procs = root.children(recursive=True)
    except psutil.Error:
        return None
    for p in procs:
        try:
            argv = p.cmdline()
            title = argv[0] if argv else p.name()
            if os.path.basename(title) == "raylet":
                store = _object_store_bytes(argv)
                continue
            if not title.startswith("ray::"):
                continue
            values = read_status(p.pid)
        except (psutil.Error, OSError, ValueError):
            continue
        entry = seen.get(p.pid)
        role = role_of(title)
        if entry is None:
            entry = seen[p.pid] = ProcMemory(p.pid, role, title[:80])
        elif entry.role == "other_ray" and role != "other_ray":
            entry.role, entry.title = role, title[:80]  # a pooled worker took on a role
        entry.update(values)
    return store
