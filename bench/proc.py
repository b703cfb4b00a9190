"""Running a command as a subprocess while watching it: wall time, first step, memory.

:func:`run_monitored` launches the command in its own session, polls a caller-given
"first step" probe every 50 ms, and about once a second walks the process tree
(the command plus every descendant: for ``lepton train`` that is the driver, Ray's
own daemons and the Train workers) reading each process's peak resident set size
(``VmHWM`` on Linux, else the sampled RSS). Sampling is light on purpose: it runs
while throughput is being measured, and costs every variant the same.

Each process seen also gets a timeline: when it was first seen in each role (Ray
renames a pooled worker when it starts an actor) and when it was last seen alive, so
a run's phases (Ray's daemons up, the Train controller, the worker group, its end)
can be read off without touching the code under test. With ``stamp_lines`` the
command's output is read line by line and each line stamped with the wall clock when
it arrived (``ProcRun.lines``); the log then carries ``[+seconds]`` prefixes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import psutil

FirstStepProbe = Callable[[], float | None]  # wall time (time.time()) of the first step, or None

# Ray renames its worker processes (setproctitle) to ``ray::<Actor>.<method>``.
ACTOR_ROLES: tuple[tuple[str, str], ...] = (
    ("ray::RayTrainWorker", "train_worker"),
    ("ray::TrainController", "train_controller"),
    ("ray::IDLE", "ray_idle_worker"),
    ("ray::DashboardAgent", "ray_system"),
    ("ray::RuntimeEnvAgent", "ray_system"),
    ("ray::", "ray_actor_other"),
)
SYSTEM_EXECUTABLES = ("gcs_server", "raylet")
SYSTEM_SCRIPTS = ("monitor.py", "log_monitor.py")
STICKY_ROLES = ("train_worker", "train_controller")


@dataclass
class ProcSeen:
    pid: int
    role: str
    cmd: str
    peak_rss: int = 0  # bytes
    first_seen: float = 0.0  # time.time() of the first sample that saw it
    last_seen: float = 0.0  # time.time() of the last sample that saw it alive
    roles_since: dict[str, float] = field(default_factory=dict)  # role -> first seen as it

    @property
    def executable(self) -> str:
        return os.path.basename(self.cmd.split(" ", 1)[0]) if self.cmd else ""


@dataclass(frozen=True)
class StampedLine:
    time: float  # time.time() when the line was read
    text: str


@dataclass
class ProcRun:
    cmd: list[str]
    returncode: int | None
    wall_s: float
    launched_at: float  # time.time() just before launch
    first_step_s: float | None
    timed_out: bool
    log_path: str
    processes: list[ProcSeen] = field(default_factory=list)
    tree_peak_rss: int = 0  # bytes: max over samples of the sum of RSS across the tree
    leftovers: int = 0  # descendants still alive 10 s after the command exited
    ended_at: float = 0.0  # time.time() when the exit was seen
    lines: list[StampedLine] = field(default_factory=list)  # with stamp_lines only
    sample_every_s: float = 1.0  # the process-tree sampling interval (timeline resolution)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def peak_by_role(self) -> dict[str, int]:
        peaks: dict[str, int] = {}
        for p in self.processes:
            peaks[p.role] = max(peaks.get(p.role, 0), p.peak_rss)
        return peaks

    def peak_sum_by_role(self) -> dict[str, int]:
        sums: dict[str, int] = {}
        for p in self.processes:
            sums[p.role] = sums.get(p.role, 0) + p.peak_rss
        return sums

    def count_by_role(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for p in self.processes:
            counts[p.role] = counts.get(p.role, 0) + 1
        return counts

    def tail(self, chars: int = 3000) -> str:
        try:
            return Path(self.log_path).read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""


def classify(argv: Sequence[str], is_root: bool) -> str:
    """The role of a process in a run's tree, from its command line."""
    if is_root:
        return "driver"
    head = argv[0] if argv else ""
    for prefix, role in ACTOR_ROLES:
        if head.startswith(prefix):
            return role
    if head.startswith("ray-dashboard-") or any(a.endswith("dashboard.py") for a in argv[:3]):
        return "ray_dashboard"
    if os.path.basename(head) in SYSTEM_EXECUTABLES:
        return "ray_system"
    scripts = [os.path.basename(a) for a in argv[1:3]]
    if any(name in SYSTEM_SCRIPTS for name in scripts):
        return "ray_system"
    if any(a.endswith("default_worker.py") for a in argv[:3]):
        return "ray_worker_starting"  # renamed once it runs something
    if "multiprocessing" in " ".join(argv[:4]):
        return "ray_dashboard"  # the dashboard's forkserver and resource tracker
    return "other"


def _peak_rss(proc: psutil.Process) -> tuple[int, int, bool]:
    """(peak RSS, current RSS) in bytes, and whether the process is a zombie; peak is the
    kernel's high-water mark where available."""
    try:
        with open(f"/proc/{proc.pid}/status", encoding="ascii", errors="replace") as fh:
            hwm = rss = 0
            zombie = False
            for line in fh:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
                elif line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("State:"):
                    zombie = line.split()[1:2] == ["Z"]
            return max(hwm, rss), rss, zombie
    except (OSError, ValueError):
        rss = proc.memory_info().rss
        return rss, rss, proc.status() == psutil.STATUS_ZOMBIE


class TreeSampler:
    def __init__(self, root_pid: int) -> None:
        self.root_pid = root_pid
        self.seen: dict[int, ProcSeen] = {}
        self._procs: dict[int, psutil.Process] = {}
        self.tree_peak = 0

    def sample(self) -> None:
        try:
            root = psutil.Process(self.root_pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        total = 0
        now = time.time()
        for proc in procs:
            try:
                entry = self.seen.get(proc.pid)
                if entry is None or entry.role not in STICKY_ROLES:
                    # Pooled Ray workers are renamed when they start an actor: look again.
                    argv = proc.cmdline() or [proc.name()]
                    role = classify(argv, proc.pid == self.root_pid)
                    if entry is None:
                        entry = self.seen[proc.pid] = ProcSeen(proc.pid, role, "", first_seen=now)
                        self._procs[proc.pid] = proc
                    entry.role, entry.cmd = role, " ".join(argv)[:200]
                    entry.roles_since.setdefault(role, now)
                peak, rss, zombie = _peak_rss(proc)
            except psutil.Error:
                continue
            entry.peak_rss = max(entry.peak_rss, peak)
            if not zombie:
                entry.last_seen = now
            total += rss
        self.tree_peak = max(self.tree_peak, total)

    def alive_descendants(self) -> list[psutil.Process]:
        alive = []
        for pid, proc in self._procs.items():
            if pid == self.root_pid:
                continue
            with contextlib.suppress(psutil.Error):
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
        return alive


def run_monitored(
    cmd: Sequence[str],
    *,
    log_path: Path,
    cwd: Path,
    env: Mapping[str, str],
    timeout_s: float,
    first_step: FirstStepProbe | None = None,
    memory: bool = True,
    poll_s: float = 0.05,
    memory_every_s: float = 1.0,
    stamp_lines: bool = False,
) -> ProcRun:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    lines: list[StampedLine] = []
    with open(log_path, "w", encoding="utf-8") as log:
        launched_at = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=dict(env),
            stdout=subprocess.PIPE if stamp_lines else log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        reader = None
        if stamp_lines:
            reader = threading.Thread(
                target=_read_lines, args=(proc, log, lines, launched_at), daemon=True
            )
            reader.start()
        sampler = TreeSampler(proc.pid)
        first_step_at: float | None = None
        next_sample = 0.0
        timed_out = False
        while True:
            now = time.perf_counter()
            if memory and now >= next_sample:
                sampler.sample()
                next_sample = now + memory_every_s
            if first_step is not None and first_step_at is None:
                first_step_at = first_step()
            if proc.poll() is not None:
                break
            if now - t0 > timeout_s:
                timed_out = True
                stop_group(proc)
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=poll_s)  # returns as soon as the command exits
        wall = time.perf_counter() - t0
        ended_at = time.time()
        if first_step is not None and first_step_at is None:
            first_step_at = first_step()  # a run shorter than one poll
        leftovers = _reap(sampler.alive_descendants())
        if reader is not None:  # EOF once every process holding the pipe has gone
            reader.join(timeout=5)
    return ProcRun(
        cmd=list(cmd),
        returncode=proc.returncode,
        wall_s=wall,
        launched_at=launched_at,
        first_step_s=None if first_step_at is None else first_step_at - launched_at,
        timed_out=timed_out,
        log_path=str(log_path),
        processes=list(sampler.seen.values()),
        tree_peak_rss=sampler.tree_peak,
        leftovers=leftovers,
        ended_at=ended_at,
        lines=list(lines),
        sample_every_s=memory_every_s,
    )


def _read_lines(
    proc: subprocess.Popen[bytes], log: TextIO, lines: list[StampedLine], launched_at: float
) -> None:
    """Stamp each line of the command's output as it arrives; copy it to the log."""
    assert proc.stdout is not None
    for raw in iter(proc.stdout.readline, b""):
        now = time.time()
        text = raw.decode("utf-8", "replace").rstrip("\r\n")
        lines.append(StampedLine(now, text))
        with contextlib.suppress(ValueError):  # the log is closed after a late line
            log.write(f"[+{now - launched_at:8.3f}s] {text}\n")
    proc.stdout.close()


def time_command(
    cmd: Sequence[str], *, reps: int, cwd: Path, env: Mapping[str, str], timeout_s: float = 120
) -> tuple[list[float], str | None]:
    """Wall times of ``reps`` runs of a short command after one untimed warm-up run;
    the error (exit status and stderr tail) of the first failing run, if any."""
    times: list[float] = []
    for i in range(reps + 1):
        started = time.perf_counter()
        done = subprocess.run(
            list(cmd),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout_s,
            check=False,
        )
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            tail = done.stderr.decode("utf-8", "replace").strip()[-1500:]
            return times, f"exit status {done.returncode}: {tail}"
        if i:
            times.append(elapsed)
    return times, None


def stop_group(proc: subprocess.Popen[Any]) -> None:
    """Stop the command we started, and its session (Ray's daemons started under it)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _reap(descendants: list[psutil.Process], grace_s: float = 10.0) -> int:
    """Let the command's own descendants exit (Ray shuts down after the driver); stop
    any still there after ``grace_s`` so they do not load the next measurement."""
    if not descendants:
        return 0
    _, alive = psutil.wait_procs(descendants, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    psutil.wait_procs(alive, timeout=5)
    return len(alive)
