"""The sweeps benchmark 8 runs, each a whole process with its own fresh Ray: ``lepton tune``
(ASHA or FIFO) and the hand-written Ray Tune + Ray Train script
(``bench/workloads/ray_tune_train.py``), and what is read back from each afterwards.

Everything comes from outside the engine: the process's wall time (launch to exit), the
files a sweep leaves (``trials.csv``, ``sweep.json``, each trial's ``metrics.jsonl``; the
script's own ``trials/<trial>.jsonl`` and ``.json``), and Ray Tune's experiment state,
which both write the same way (``experiment_state-*.json``: for every trial, when Tune
started it and when the last result reached the driver).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.benchmarks.runs import last_row_per_epoch, read_json
from bench.core import ROOT, Context, median
from bench.machine import load_average
from bench.proc import ProcRun, run_monitored

#: The issue's search space, as `lepton tune` overrides and as the script draws it.
SPACE = ("optimizer.lr=tag(log,interval(1e-4,3e-2))", "task.model.width=choice(8,16,32)")
SEED = 0
SCRIPT = ROOT / "bench" / "workloads" / "ray_tune_train.py"
CONCURRENCY_LINE = re.compile(r"^Sweeping \S+ in .*?: \d+ trial\(s\), (\d+) at a time")
SCRIPT_CONCURRENCY = 2  # two 0.01-CPU trials, each with a 0.99-CPU worker, on 2 CPUs


@dataclass
class Trial:
    name: str
    values: dict[str, Any]
    best: float | None  # best value of the sweep's metric over the trial's epochs
    epochs: int
    status: str
    epoch_s: float  # sum of the trial's epoch times (train + validation)
    tune_span_s: float | None = None  # Tune's start of the trial to its last result
    after_last_s: float | None = None  # last result to the trial function's return (script)

    @property
    def fixed_s(self) -> float | None:
        """Tune's span of the trial less its epochs: what the trial costs besides training."""
        return None if self.tune_span_s is None else self.tune_span_s - self.epoch_s


@dataclass
class SweepRun:
    kind: str  # "lepton" or "script"
    label: str
    proc: ProcRun
    out: Path
    trials: list[Trial] = field(default_factory=list)
    concurrency: int | None = None
    own_wall_s: float | None = None  # the sweep's own record: sweep.json wall_s
    load: tuple[Any, Any] = (None, None)  # 1-min load average before and after
    #: Wall-clock events: first trial entered, first epoch started, last epoch ended (and
    #: for lepton: the first trial process started); see :meth:`timeline`.
    events: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.proc.ok and self.error is None and bool(self.trials)

    @property
    def trial_epochs(self) -> int:
        return sum(t.epochs for t in self.trials)

    @property
    def best(self) -> float | None:
        values = [t.best for t in self.trials if t.best is not None]
        return max(values) if values else None

    @property
    def epoch_s(self) -> float:
        return sum(t.epoch_s for t in self.trials)

    @property
    def amortised_fixed_s(self) -> float | None:
        """(wall x trials at once - time in epochs) / trials: each trial's share of
        everything that is not training, process start and Ray start included."""
        if not self.trials or not self.concurrency:
            return None
        return (self.proc.wall_s * self.concurrency - self.epoch_s) / len(self.trials)

    @property
    def median_fixed_s(self) -> float | None:
        return median(t.fixed_s for t in self.trials)

    def timeline(self) -> dict[str, float]:
        """Seconds from launch to each event, and to exit."""
        out = {k: v - self.proc.launched_at for k, v in sorted(self.events.items(), key=_second)}
        return {**out, "exit": self.proc.ended_at - self.proc.launched_at}

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "label": self.label,
            "ok": self.ok,
            "error": self.error,
            "wall_s": self.proc.wall_s,
            "own_wall_s": self.own_wall_s,
            "concurrency": self.concurrency,
            "trial_epochs": self.trial_epochs,
            "best": self.best,
            "epoch_s": self.epoch_s,
            "amortised_fixed_s": self.amortised_fixed_s,
            "median_fixed_s": self.median_fixed_s,
            "load_1min_before_after": list(self.load),
            "timeline": self.timeline(),
            "trials": [t.__dict__ for t in self.trials],
            "cmd": self.proc.cmd,
            "log": self.proc.log_path,
            "log_tail": None if self.ok else self.proc.tail(),
        }


def lepton_sweep(
    ctx: Context,
    tag: str,
    *,
    scheduler: str,
    epochs: int,
    samples: int,
    grace_period: int = 1,
    reduction_factor: int = 3,
) -> SweepRun:
    s = ctx.settings
    base = s.workdir / f"tune-{tag}"
    base.mkdir(parents=True, exist_ok=True)
    asha = (
        [f"tune.grace_period={grace_period}", f"tune.reduction_factor={reduction_factor}"]
        if scheduler == "asha"
        else []
    )
    cmd = [
        *s.lepton,
        "tune",
        "task=vision",
        "scaling.num_workers=1",
        "scaling.cpus_per_worker=1",
        f"trainer.epochs={epochs}",
        *SPACE,
        f"tune.num_samples={samples}",
        f"tune.seed={SEED}",
        f"tune.scheduler={scheduler}",
        *asha,
        f"run.dir={base}",
        "run.name=sweep",
    ]
    run = _launch(ctx, "lepton", f"`lepton tune` ({scheduler})", cmd, base, base / "sweep")
    if run.proc.ok:
        try:
            _read_lepton(run)
        except (OSError, ValueError, KeyError) as exc:
            run.error = f"cannot read the sweep: {type(exc).__name__}: {exc}"
    return run


def script_sweep(ctx: Context, tag: str, *, epochs: int, trials: int) -> SweepRun:
    s = ctx.settings
    base = s.workdir / f"tune-{tag}"
    out = base / "out"
    cmd = [
        s.python,
        str(SCRIPT),
        f"--out={out}",
        f"--trials={trials}",
        f"--epochs={epochs}",
        f"--seed={SEED}",
        f"--concurrency={SCRIPT_CONCURRENCY}",
        "--worker-cpus=0.99",
    ]
    run = _launch(ctx, "script", "hand-written Ray Tune + Train script", cmd, base, out)
    run.concurrency = SCRIPT_CONCURRENCY
    if run.proc.ok:
        try:
            _read_script(run)
        except (OSError, ValueError, KeyError) as exc:
            run.error = f"cannot read the script's records: {type(exc).__name__}: {exc}"
    return run


def _launch(ctx: Context, kind: str, label: str, cmd: list[str], base: Path, out: Path) -> SweepRun:
    base.mkdir(parents=True, exist_ok=True)
    before = load_average()
    ctx.log(f"{label}: {' '.join(cmd[1:])}")
    proc = run_monitored(
        cmd,
        log_path=base / "output.log",
        cwd=base,
        env=ctx.subprocess_env(),
        timeout_s=ctx.settings.timeout_s,
        memory=False,  # wall time only: no process-tree sampling competing for 2 cores
    )
    run = SweepRun(kind, label, proc, out, load=(_one_min(before), _one_min(load_average())))
    if proc.timed_out:
        run.error = f"timed out after {ctx.settings.timeout_s:.0f}s"
    elif proc.returncode != 0:
        run.error = f"exit status {proc.returncode}"
    return run


def _one_min(load: Any) -> Any:
    return load[0] if isinstance(load, (list, tuple)) and load else load


def _read_lepton(run: SweepRun) -> None:
    sweep = run.out
    record = read_json(sweep / "sweep.json") or {}
    metric = str(record.get("metric") or "val/accuracy")
    run.own_wall_s = record.get("wall_s")
    log = Path(run.proc.log_path).read_text(encoding="utf-8", errors="replace")
    found = next((CONCURRENCY_LINE.match(ln) for ln in log.splitlines() if "at a time" in ln), None)
    run.concurrency = int(found.group(1)) if found else None
    times = {t["logdir"]: t for t in tune_trial_times(sweep).values()}
    first_rows: list[dict[str, Any]] = []
    for trial_dir in sweep.glob("trial_*"):
        result = read_json(trial_dir / "result.json") or {}
        attempts = (read_json(trial_dir / "timing.json") or {}).get("attempts") or [{}]
        _earliest(run.events, "trial process started", attempts[0].get("process_started"))
        _earliest(run.events, "first trial entered", result.get("started"))
        _earliest(run.events, "first epoch started", attempts[0].get("epochs_started"))
        first_rows += last_row_per_epoch(trial_dir / "metrics.jsonl")
    _latest_row(run.events, first_rows)
    params = list((record.get("params") or {}).keys())
    with open(sweep / "trials.csv", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            name = row["trial"]
            rows = last_row_per_epoch(sweep / name / "metrics.jsonl")
            best = row.get(f"best {metric}")
            seen = times.get(name, {})
            run.trials.append(
                Trial(
                    name=name,
                    values={k: row.get(k) for k in params},
                    best=float(best) if best not in (None, "") else None,
                    epochs=int(row["epochs"] or 0),
                    status=row["status"],
                    epoch_s=sum(_epoch_s(r) for r in rows),
                    tune_span_s=_span(seen),
                )
            )


def _read_script(run: SweepRun) -> None:
    out = run.out
    summary = read_json(out / "sweep.json") or {}
    run.own_wall_s = summary.get("wall_s")
    times = tune_trial_times(out / "ray_results" / "hand-sweep")
    all_rows: list[dict[str, Any]] = []
    for trial_id, seen in sorted(times.items()):
        rows_file = next((out / "trials").glob(f"*{trial_id}.jsonl"), None)
        rows = last_row_per_epoch(rows_file) if rows_file else []
        marks = read_json(rows_file.with_suffix(".json")) if rows_file else None
        last = seen.get("last_result")
        after = None
        if marks and marks.get("ended") is not None and last is not None:
            after = float(marks["ended"]) - float(last)
        accuracies = [float(r["val_accuracy"]) for r in rows if "val_accuracy" in r]
        _earliest(run.events, "first trial entered", (marks or {}).get("entered"))
        if rows:
            first = float(rows[0]["time"]) - _epoch_s(rows[0])
            _earliest(run.events, "first epoch started", first)
        all_rows += rows
        run.trials.append(
            Trial(
                name=trial_id,
                values=dict(seen.get("config") or {}),
                best=max(accuracies) if accuracies else None,
                epochs=len(rows),
                status=str(seen.get("status", "")).lower(),
                epoch_s=sum(_epoch_s(r) for r in rows),
                tune_span_s=_span(seen),
                after_last_s=after,
            )
        )
    _latest_row(run.events, all_rows)


def _second(item: tuple[str, float]) -> float:
    return item[1]


def _earliest(events: dict[str, float], name: str, value: Any) -> None:
    if isinstance(value, (int, float)):
        events[name] = min(float(value), events.get(name, float("inf")))


def _latest_row(events: dict[str, float], rows: list[dict[str, Any]]) -> None:
    ends = [float(r["time"]) for r in rows if isinstance(r.get("time"), (int, float))]
    if ends:
        events["last epoch ended"] = max(ends)


def _epoch_s(row: dict[str, Any]) -> float:
    if row.get("epoch_time_s") is not None:
        return float(row["epoch_time_s"])
    return float(row.get("train_time_s") or 0.0) + float(row.get("val_time_s") or 0.0)


def _span(seen: dict[str, Any]) -> float | None:
    start, last = seen.get("start"), seen.get("last_result")
    return float(last) - float(start) if start is not None and last is not None else None


def tune_trial_times(experiment_dir: Path) -> dict[str, dict[str, Any]]:
    """Per trial id, from Ray Tune's newest ``experiment_state-*.json``: when Tune started
    the trial (``start``), when its last result reached the driver (``last_result``),
    its directory name, config and status."""
    states = sorted(experiment_dir.glob("experiment_state-*.json"))
    if not states:
        return {}
    doc = json.loads(states[-1].read_text(encoding="utf-8"))
    out: dict[str, dict[str, Any]] = {}
    for entry in doc.get("trial_data", []):
        parts = [json.loads(p) if isinstance(p, str) else p for p in entry]
        trial, runtime = parts[0], parts[1] if len(parts) > 1 else {}
        out[str(trial["trial_id"])] = {
            "logdir": trial.get("relative_logdir"),
            "config": trial.get("config"),
            "status": trial.get("status"),
            "start": runtime.get("start_time"),
            "last_result": runtime.get("last_result_time"),
        }
    return out
