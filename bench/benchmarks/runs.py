"""The training runs three benchmarks share: (a) plain PyTorch, (b) a hand-written
Ray Train script, (c) ``lepton train``, each a fresh subprocess (so (b) and (c) each
start their own Ray), repeated ``reps`` times with the order rotated every repetition.

Each run yields steady-state samples/s (epochs after the first: total train-split
samples / total train time, validation excluded), end-to-end wall time, time from
launch to the first training step, and the peak RSS of every process in its tree.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core import Context, harmonic_mean, median, ratio
from bench.proc import ProcRun, run_monitored

PLAIN, RAY_TRAIN, LEPTON = "plain", "ray_train", "lepton"
LABELS = {
    PLAIN: "(a) plain PyTorch loop",
    RAY_TRAIN: "(b) hand-written Ray Train script",
    LEPTON: "(c) lepton train",
}


@dataclass
class TrainRun:
    variant: str
    rep: int
    proc: ProcRun
    epochs: list[dict[str, Any]] = field(default_factory=list)
    first_seen: dict[str, Any] | None = None  # the first-step file as first seen
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.proc.ok and self.error is None

    @property
    def steady_sps(self) -> float | None:
        rows = [r for r in self.epochs if int(r["epoch"]) >= 1] or self.epochs
        return harmonic_mean([float(r["samples_per_s"]) for r in rows])

    def summary(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "rep": self.rep,
            "ok": self.ok,
            "error": self.error,
            "returncode": self.proc.returncode,
            "timed_out": self.proc.timed_out,
            "wall_s": self.proc.wall_s,
            "first_step_s": self.proc.first_step_s,
            "first_step_seen": self.first_seen,
            "steady_samples_per_s": self.steady_sps,
            "epoch_samples_per_s": [r.get("samples_per_s") for r in self.epochs],
            "peak_rss_by_role": self.proc.peak_by_role(),
            "processes_by_role": self.proc.count_by_role(),
            "tree_peak_rss": self.proc.tree_peak_rss,
            "leftover_processes": self.proc.leftovers,
            "cmd": self.proc.cmd,
            "log": self.proc.log_path,
            "log_tail": None if self.ok else self.proc.tail(),
        }


@dataclass
class TrainRuns:
    runs: list[TrainRun]

    def of(self, variant: str) -> list[TrainRun]:
        return [r for r in self.runs if r.variant == variant and r.ok]

    def failed(self) -> list[TrainRun]:
        return [r for r in self.runs if not r.ok]

    def median_of(self, variant: str, get: Callable[[TrainRun], float | None]) -> float | None:
        return median(get(r) for r in self.of(variant))

    def median_ratio(
        self, num: str, den: str, get: Callable[[TrainRun], float | None]
    ) -> float | None:
        """Median over repetitions of (num / den) within the same repetition."""
        by_rep = {(r.variant, r.rep): r for r in self.runs if r.ok}
        reps = sorted({r.rep for r in self.runs})
        return median(
            ratio(get(by_rep[(num, k)]), get(by_rep[(den, k)]))
            for k in reps
            if (num, k) in by_rep and (den, k) in by_rep
        )

    def median_delta(
        self, num: str, den: str, get: Callable[[TrainRun], float | None]
    ) -> float | None:
        by_rep = {(r.variant, r.rep): r for r in self.runs if r.ok}
        deltas = []
        for (variant, k), run in by_rep.items():
            other = by_rep.get((den, k))
            if variant == num and other is not None:
                a, b = get(run), get(other)
                if a is not None and b is not None:
                    deltas.append(a - b)
        return median(deltas)


def training_runs(ctx: Context) -> TrainRuns:
    """Run (a), (b), (c) once per repetition; cached so later benchmarks reuse them."""
    return ctx.once("training_runs", lambda: _run_all(ctx))


def _run_all(ctx: Context) -> TrainRuns:
    s = ctx.settings
    order = [PLAIN, RAY_TRAIN, LEPTON]
    runs = []
    for rep in range(s.reps):
        for variant in order[rep % 3 :] + order[: rep % 3]:
            ctx.log(f"training rep {rep + 1}/{s.reps}: {LABELS[variant]}")
            run = _run_one(ctx, variant, rep)
            sps = run.steady_sps
            ctx.log(
                f"  -> {'ok' if run.ok else 'FAILED'}  wall {run.proc.wall_s:.1f}s  "
                f"first step {_fmt(run.proc.first_step_s)}s  steady {_fmt(sps, 0)} samples/s"
                + (f"  ({run.error})" if run.error else "")
            )
            runs.append(run)
    return TrainRuns(runs)


def _fmt(value: float | None, digits: int = 1) -> str:
    return "?" if value is None else f"{value:.{digits}f}"


def _run_one(ctx: Context, variant: str, rep: int) -> TrainRun:
    s = ctx.settings
    base = s.workdir / f"train-{variant}-{rep}"
    base.mkdir(parents=True, exist_ok=True)
    w = s.workload
    if variant == LEPTON:
        run_dir = base / "run"
        cmd = [*s.lepton, "train", *w.lepton_overrides(), f"run.dir={base}", "run.name=run"]
        metrics_file, probe = run_dir / "metrics.jsonl", FileTimeProbe(run_dir / "progress.json")
    else:
        out = base / "out"
        module = "bench.workloads.plain_torch" if variant == PLAIN else "bench.workloads.ray_train"
        args = w.script_args()
        if variant == PLAIN:
            args = [a for a in args if not a.startswith("--threads=")]
            args.append(f"--threads={s.plain_threads}")
        cmd = [s.python, "-m", module, *args, f"--out={out}"]
        metrics_file, probe = out / "epochs.jsonl", FileTimeProbe(out / "first_step.json")
    proc = run_monitored(
        cmd,
        log_path=base / "output.log",
        cwd=base,
        env=ctx.subprocess_env(),
        timeout_s=s.timeout_s,
        first_step=probe,
    )
    run = TrainRun(variant, rep, proc, last_row_per_epoch(metrics_file), first_seen=probe.first)
    run.error = run_error(proc, len(run.epochs), w.epochs, s.timeout_s)
    return run


def run_error(proc: ProcRun, epochs_recorded: int, epochs: int, timeout_s: float) -> str | None:
    """Why a timed training process does not count, or None when it does."""
    if proc.timed_out:
        return f"timed out after {timeout_s:.0f}s"
    if proc.returncode != 0:
        return f"exit status {proc.returncode}"
    if epochs_recorded != epochs:
        return f"{epochs_recorded} of {epochs} epochs recorded"
    return None


def last_row_per_epoch(path: Path) -> list[dict[str, Any]]:
    rows: dict[int, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            rows[int(row["epoch"])] = row
    return [rows[k] for k in sorted(rows)]


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return data
    except (OSError, ValueError):
        return None


class FileTimeProbe:
    """Polls a JSON file holding ``"time"`` (wall clock); remembers the first version seen.

    (b) and (a) write ``first_step.json`` once at their first step. The engine's rank 0
    writes ``progress.json`` at its first step (the first write is not throttled) and
    then about once a second, so the first version seen carries the first step's time
    (``first`` shows which step it was).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.first: dict[str, Any] | None = None

    def __call__(self) -> float | None:
        data = read_json(self.path)
        if not data or "time" not in data:
            return None
        self.first = data
        return float(data["time"])
