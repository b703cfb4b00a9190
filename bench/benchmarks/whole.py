"""Whole-process runs as a new user makes them: ``lepton train`` and the hand-written
Ray Train script (and, for the fixed-cost breakdown, the same script with
``ray.init(include_dashboard=False)``), each a fresh subprocess from launch to exit, in
turn, ``pairs`` times with the order rotated every time.

Every line of each run's output is stamped with the wall clock when it arrived, and the
process tree is sampled every :data:`SAMPLE_S` seconds, so each run's phases can be read
off without touching the engine: launch, the ``Training ... in`` line, Ray's GCS up, the
Train controller actor, the worker group, the first training step (``progress.json`` /
``first_step.json``), each epoch's row (its own ``time`` field), the workers and then Ray
gone, ``result.json`` marked finished, the ``Report:`` line, exit.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil

from bench.benchmarks.runs import FileTimeProbe, last_row_per_epoch, read_json, run_error
from bench.core import Context, Row, median, ratio
from bench.proc import ProcRun, ProcSeen, run_monitored
from bench.spec import Workload

LEPTON, HAND, HAND_NO_DASH = "lepton", "ray_train", "ray_train_no_dashboard"
LEPTON_PIPE = "lepton_pipe"  # stdout a pipe without PYTHONUNBUFFERED (`| tee`, CI logs)
LABELS = {
    LEPTON: "`lepton train`",
    HAND: "hand-written Ray Train script",
    HAND_NO_DASH: "hand-written script, `include_dashboard=False`",
    LEPTON_PIPE: "`lepton train`, stdout a plain pipe (no PYTHONUNBUFFERED)",
}
SAMPLE_S = 0.25  # process-tree sampling: the resolution of the process events below

EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+)\b")
TRAINING_LINE = re.compile(r"^Training \S+ in ")
REPORT_LINE = re.compile(r"^Report:")
#: Train V2's placement-group cleaner, when it cannot use the state API (the dashboard's).
CLEANER_SIGNS = {
    "monitor thread crashed": "Exception in thread PlacementGroupCleanerMonitor",
    "state API unavailable": "Failed to query Ray Train Controller actor state",
    "controller taken for dead": "Detected that the Ray Train controller actor",
    "cleaner unavailable": "PlacementGroupCleaner not available",
    "cleaner not launched": "Failed to launch PlacementGroupCleaner",
}
MULTIPLE_CLUSTERS = "Found multiple active Ray instances"


@dataclass
class WholeRun:
    variant: str
    rep: int
    proc: ProcRun
    rows: list[dict[str, Any]] = field(default_factory=list)
    first_step_at: float | None = None
    result: dict[str, Any] | None = None  # lepton: result.json at the end
    marks: dict[str, float] = field(default_factory=dict)  # loop_entered, epochs_started, ...
    other_clusters: int = 0  # gcs_server processes of other Ray clusters at launch
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.proc.ok and self.error is None

    # -- events (wall clock, time.time()) ----------------------------------------------

    def line_at(self, pattern: re.Pattern[str]) -> float | None:
        return next((ln.time for ln in self.proc.lines if pattern.search(ln.text)), None)

    def epoch_lines(self) -> dict[int, float]:
        """Row epoch (0-based) -> when lepton printed its line (``epoch N/M``, 1-based)."""
        seen: dict[int, float] = {}
        for ln in self.proc.lines:
            m = EPOCH_LINE.match(ln.text)
            if m:
                seen.setdefault(int(m.group(1)) - 1, ln.time)
        return seen

    def _procs(self, role: str | None = None, exe: str | None = None) -> list[ProcSeen]:
        return [
            p
            for p in self.proc.processes
            if (role is None or role in p.roles_since) and (exe is None or p.executable == exe)
        ]

    def events(self) -> dict[str, float | None]:
        workers = self._procs("train_worker")
        controller = self._procs("train_controller")
        gcs = self._procs(exe="gcs_server")
        ray_procs = [p for p in self.proc.processes if p.role != "driver"]
        finished = None
        if self.result and self.result.get("status") == "finished":
            finished = self.result.get("updated")
        return {
            "launched": self.proc.launched_at,
            "training_line": self.line_at(TRAINING_LINE),
            "ray_gcs_up": min((p.first_seen for p in gcs), default=None),
            "controller_up": min(
                (p.roles_since["train_controller"] for p in controller), default=None
            ),
            "first_worker_up": min((p.roles_since["train_worker"] for p in workers), default=None),
            "workers_up": max((p.roles_since["train_worker"] for p in workers), default=None),
            "loop_entered": self.marks.get("loop_entered"),
            "epochs_started": self.marks.get("epochs_started"),
            "first_step": self.first_step_at,
            "first_row": _row_time(self.rows[0]) if self.rows else None,
            "last_row": _row_time(self.rows[-1]) if self.rows else None,
            "loop_ended": self.marks.get("loop_ended"),
            "workers_gone": max((p.last_seen for p in workers), default=None),
            "ray_gone": max((p.last_seen for p in ray_procs), default=None),
            "finished_recorded": float(finished) if finished is not None else None,
            "report_line": self.line_at(REPORT_LINE),
            "exit": self.proc.ended_at,
        }

    def span(self, start: str, end: str) -> float | None:
        ev = self.events()
        a, b = ev.get(start), ev.get(end)
        return b - a if a is not None and b is not None else None

    def epoch_line_delays(self) -> dict[int, float]:
        """Row epoch -> seconds from the row's own ``time`` to its line on stdout."""
        printed = self.epoch_lines()
        delays = {}
        for row in self.rows:
            epoch, at = int(row["epoch"]), _row_time(row)
            if at is not None and epoch in printed:
                delays[epoch] = printed[epoch] - at
        return delays

    def val_accuracy(self) -> float | None:
        if not self.rows:
            return None
        last = self.rows[-1]
        value = last.get("val/accuracy", last.get("val_accuracy"))
        return float(value) if isinstance(value, (int, float)) else None

    def cleaner_signs(self) -> dict[str, int]:
        counts = {k: 0 for k in CLEANER_SIGNS}
        counts["multiple Ray clusters seen"] = 0
        for ln in self.proc.lines:
            for key, sign in CLEANER_SIGNS.items():
                if sign in ln.text:
                    counts[key] += 1
            if MULTIPLE_CLUSTERS in ln.text:
                counts["multiple Ray clusters seen"] += 1
        return {k: v for k, v in counts.items() if v}

    def warning_lines(self) -> int:
        return sum(1 for ln in self.proc.lines if "WARNING" in ln.text or "Traceback" in ln.text)

    def summary(self) -> dict[str, Any]:
        launched = self.proc.launched_at
        return {
            "variant": self.variant,
            "rep": self.rep,
            "ok": self.ok,
            "error": self.error,
            "returncode": self.proc.returncode,
            "wall_s": self.proc.wall_s,
            "events_s_after_launch": {
                k: None if v is None else round(v - launched, 3) for k, v in self.events().items()
            },
            "epoch_line_delays_s": {
                str(k): round(v, 3) for k, v in self.epoch_line_delays().items()
            },
            "val_accuracy": self.val_accuracy(),
            "cleaner_signs": self.cleaner_signs(),
            "warning_lines": self.warning_lines(),
            "other_ray_clusters_at_launch": self.other_clusters,
            "processes": [
                {
                    "pid": p.pid,
                    "role": p.role,
                    "exe": p.executable,
                    "first_seen_s": round(p.first_seen - launched, 3),
                    "last_seen_s": round(p.last_seen - launched, 3),
                    "roles_since_s": {r: round(t - launched, 3) for r, t in p.roles_since.items()},
                }
                for p in self.proc.processes
            ],
            "cmd": self.proc.cmd,
            "log": self.proc.log_path,
            "log_tail": None if self.ok else self.proc.tail(),
        }


def span_of(start: str, end: str) -> Callable[[WholeRun], float | None]:
    """A getter for :meth:`WholeRun.span` (seconds between two events)."""
    return lambda run: run.span(start, end)


def _row_time(row: dict[str, Any]) -> float | None:
    value = row.get("time")
    return float(value) if isinstance(value, (int, float)) else None


@dataclass
class WholeRuns:
    runs: list[WholeRun]
    workload: Workload

    def of(self, variant: str) -> list[WholeRun]:
        return [r for r in self.runs if r.variant == variant and r.ok]

    def failed(self) -> list[WholeRun]:
        return [r for r in self.runs if not r.ok]

    def variants(self) -> set[str]:
        return {r.variant for r in self.runs}

    def median_of(self, variant: str, get: Callable[[WholeRun], float | None]) -> float | None:
        return median(get(r) for r in self.of(variant))

    def pairs(self, num: str, den: str) -> list[tuple[WholeRun, WholeRun]]:
        by_rep = {(r.variant, r.rep): r for r in self.runs if r.ok}
        reps = sorted({r.rep for r in self.runs})
        return [
            (by_rep[(num, k)], by_rep[(den, k)])
            for k in reps
            if (num, k) in by_rep and (den, k) in by_rep
        ]

    def median_ratio(
        self, num: str, den: str, get: Callable[[WholeRun], float | None]
    ) -> float | None:
        return median(ratio(get(a), get(b)) for a, b in self.pairs(num, den))

    def row(
        self,
        metric: str,
        num: str,
        den: str,
        get: Callable[[WholeRun], float | None],
        unit: str = "s",
        **more: Any,
    ) -> Row:
        """``num``'s median against ``den``'s, as one table row (the ratio is the median of
        the per-pair ratios); ``more``: Row's target, status and note."""
        return Row(
            metric,
            self.median_of(num, get),
            unit,
            LABELS[den],
            self.median_of(den, get),
            self.median_ratio(num, den, get),
            **more,
        )

    def median_delta(
        self, num: str, den: str, get: Callable[[WholeRun], float | None]
    ) -> float | None:
        deltas = []
        for a, b in self.pairs(num, den):
            x, y = get(a), get(b)
            if x is not None and y is not None:
                deltas.append(x - y)
        return median(deltas)

    def other_clusters(self) -> int:
        return max((r.other_clusters for r in self.runs), default=0)


def whole_runs(ctx: Context, *, without_dashboard: bool = False) -> WholeRuns:
    """The shared whole-process runs; with ``without_dashboard`` they include the
    no-dashboard script. A set made without it is reused when it is not asked for."""
    have: WholeRuns | None = ctx.cached("whole_runs")
    if have is not None and (not without_dashboard or HAND_NO_DASH in have.variants()):
        return have
    variants = [LEPTON, HAND] + ([HAND_NO_DASH] if without_dashboard else [])
    runs = _run_all(ctx, variants)
    ctx.store("whole_runs", runs)
    return runs


def e2e_workload(ctx: Context) -> Workload:
    return replace(ctx.settings.workload, epochs=ctx.settings.e2e_epochs)


def _run_all(ctx: Context, variants: list[str]) -> WholeRuns:
    s = ctx.settings
    w = e2e_workload(ctx)
    runs = []
    for rep in range(s.pairs):
        k = rep % len(variants)
        for variant in variants[k:] + variants[:k]:
            runs.append(_logged_run(ctx, variant, rep))
    return WholeRuns(runs, w)


def _fmt(value: float | None, digits: int = 1) -> str:
    return "?" if value is None else f"{value:.{digits}f}"


def lepton_pipe_run(ctx: Context) -> WholeRun:
    """One `lepton train` run whose stdout is a plain pipe: what `| tee` and CI logs get."""
    run: WholeRun = ctx.once("lepton_pipe_run", lambda: _logged_run(ctx, LEPTON_PIPE, 0))
    return run


def _logged_run(ctx: Context, variant: str, rep: int) -> WholeRun:
    w = e2e_workload(ctx)
    ctx.log(f"whole run {rep + 1}/{ctx.settings.pairs}: {LABELS[variant]} ({w.epochs} epochs)")
    run = _run_one(ctx, w, variant, rep)
    ctx.log(
        f"  -> {'ok' if run.ok else 'FAILED'}  wall {run.proc.wall_s:.1f}s  "
        f"first step {_fmt(run.span('launched', 'first_step'))}s  "
        f"last epoch -> exit {_fmt(run.span('last_row', 'exit'))}s  "
        f"val acc {_fmt(run.val_accuracy(), 4)}" + (f"  ({run.error})" if run.error else "")
    )
    return run


def _run_one(ctx: Context, w: Workload, variant: str, rep: int) -> WholeRun:
    s = ctx.settings
    base = s.workdir / f"whole-{variant}-{rep}"
    base.mkdir(parents=True, exist_ok=True)
    env = ctx.subprocess_env()
    if variant == LEPTON_PIPE:
        env.pop("PYTHONUNBUFFERED", None)
    if variant in (LEPTON, LEPTON_PIPE):
        run_dir = base / "run"
        cmd = [*s.lepton, "train", *w.lepton_overrides(), f"run.dir={base}", "run.name=run"]
        metrics_file, probe = run_dir / "metrics.jsonl", FileTimeProbe(run_dir / "progress.json")
    else:
        run_dir = base / "out"
        cmd = [s.python, "-m", "bench.workloads.ray_train", *w.script_args(), f"--out={run_dir}"]
        if variant == HAND_NO_DASH:
            cmd.append("--no-dashboard")
        metrics_file, probe = run_dir / "epochs.jsonl", FileTimeProbe(run_dir / "first_step.json")
    others = count_ray_clusters()
    proc = run_monitored(
        cmd,
        log_path=base / "output.log",
        cwd=base,
        env=env,
        timeout_s=s.timeout_s,
        first_step=probe,
        memory_every_s=SAMPLE_S,
        stamp_lines=True,
    )
    lepton = variant in (LEPTON, LEPTON_PIPE)
    run = WholeRun(
        variant,
        rep,
        proc,
        last_row_per_epoch(metrics_file),
        first_step_at=None if proc.first_step_s is None else proc.launched_at + proc.first_step_s,
        result=read_json(run_dir / "result.json") if lepton else None,
        marks=_engine_marks(run_dir) if lepton else _script_marks(run_dir),
        other_clusters=others,
    )
    run.error = run_error(proc, len(run.rows), w.epochs, s.timeout_s)
    return run


def _times(data: dict[str, Any] | None, keys: tuple[str, ...]) -> dict[str, float]:
    data = data or {}
    return {k: float(data[k]) for k in keys if isinstance(data.get(k), (int, float))}


def _script_marks(out: Path) -> dict[str, float]:
    """The hand-written script's ``marks.json`` (rank 0's own times)."""
    return _times(read_json(out / "marks.json"), ("loop_entered", "epochs_started", "loop_ended"))


def _engine_marks(run_dir: Path) -> dict[str, float]:
    """The same moments from the engine's ``timing.json``, where the run writes one: the
    first attempt's ``worker_started`` (the first rank's entry into the loop) and
    ``epochs_started``, the last attempt's ``loop_ended``. Missing or another shape: none."""
    attempts = (read_json(run_dir / "timing.json") or {}).get("attempts")
    if not isinstance(attempts, list) or not attempts or not isinstance(attempts[0], dict):
        return {}
    first = _times(attempts[0], ("worker_started", "epochs_started"))
    marks = {"epochs_started": first["epochs_started"]} if "epochs_started" in first else {}
    if "worker_started" in first:
        marks["loop_entered"] = first["worker_started"]
    last = attempts[-1] if isinstance(attempts[-1], dict) else {}
    marks.update(_times(last, ("loop_ended",)))
    return marks


def count_ray_clusters() -> int:
    """GCS servers running on this machine now (other users' clusters, CI, tests)."""
    count = 0
    for proc in psutil.process_iter(["name"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["name"] == "gcs_server":
                count += 1
    return count
