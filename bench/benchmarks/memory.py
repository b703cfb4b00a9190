"""4. Memory: peak RSS of the driver and of one worker, from the training runs."""

from __future__ import annotations

from collections.abc import Callable

from bench.benchmarks.runs import LEPTON, PLAIN, RAY_TRAIN, TrainRun, training_runs
from bench.core import BenchResult, Context, Row
from bench.registry import register

MiB = 1024 * 1024


def _role_peak(role: str) -> Callable[[TrainRun], float | None]:
    def get(run: TrainRun) -> float | None:
        peak = run.proc.peak_by_role().get(role)
        return peak / MiB if peak else None

    return get


def _ray_daemons(run: TrainRun) -> float | None:
    sums = run.proc.peak_sum_by_role()
    total = sums.get("ray_system", 0) + sums.get("ray_dashboard", 0)
    return total / MiB if total else None


def _tree_peak(run: TrainRun) -> float | None:
    return run.proc.tree_peak_rss / MiB if run.proc.tree_peak_rss else None


@register(4, "memory", "Memory: peak RSS of driver and workers")
def memory(ctx: Context) -> BenchResult:
    """Per-process peak RSS (kernel high-water mark) of (c) `lepton train` against (b) the
    hand-written Ray Train script, sampled over each run's whole process tree."""
    runs = training_runs(ctx)
    result = BenchResult()
    rows = result.rows
    rows.append(
        Row(
            "(a) plain PyTorch: process peak RSS",
            runs.median_of(PLAIN, _role_peak("driver")),
            "MiB",
        )
    )
    for label, role in (
        ("driver (the launched process)", "driver"),
        ("one Train worker (largest)", "train_worker"),
        ("Ray Train controller actor", "train_controller"),
    ):
        get = _role_peak(role)
        rows.append(
            Row(
                f"(c) lepton train: {label}",
                runs.median_of(LEPTON, get),
                "MiB",
                "(b) Ray Train script",
                runs.median_of(RAY_TRAIN, get),
                runs.median_ratio(LEPTON, RAY_TRAIN, get),
            )
        )
    rows.append(
        Row(
            "(c) lepton train: Ray daemons and dashboard (sum of per-process peaks)",
            runs.median_of(LEPTON, _ray_daemons),
            "MiB",
            "(b) Ray Train script",
            runs.median_of(RAY_TRAIN, _ray_daemons),
            runs.median_ratio(LEPTON, RAY_TRAIN, _ray_daemons),
        )
    )
    rows.append(
        Row(
            "(c) lepton train: whole process tree (sum of RSS)",
            runs.median_of(LEPTON, _tree_peak),
            "MiB",
            "(b) Ray Train script",
            runs.median_of(RAY_TRAIN, _tree_peak),
            runs.median_ratio(LEPTON, RAY_TRAIN, _tree_peak),
            note="shared pages count in every process that maps them",
        )
    )
    result.notes.append(
        "Peak RSS per process is the kernel's high-water mark (VmHWM), read about once a second "
        "while the run lives; the tree total is the largest sampled sum of RSS over the driver, "
        "Ray's daemons and workers. Medians over the training repetitions."
    )
    result.details = {
        "runs": [
            {
                "variant": r.variant,
                "rep": r.rep,
                "peak_rss_mib_by_role": {
                    k: round(v / MiB, 1) for k, v in r.proc.peak_by_role().items()
                },
                "peak_rss_mib_sum_by_role": {
                    k: round(v / MiB, 1) for k, v in r.proc.peak_sum_by_role().items()
                },
                "processes_by_role": r.proc.count_by_role(),
            }
            for r in runs.runs
        ]
    }
    return result
