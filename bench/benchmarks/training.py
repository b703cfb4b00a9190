"""1. Training overhead: the same job as plain PyTorch, hand-written Ray Train, and Lepton."""

from __future__ import annotations

from bench.benchmarks.runs import LABELS, LEPTON, PLAIN, RAY_TRAIN, TrainRun, training_runs
from bench.core import BenchResult, Context, Row, target_status
from bench.registry import register

THROUGHPUT_TARGET = 0.97  # lepton train / hand-written Ray Train, steady state


def _sps(run: TrainRun) -> float | None:
    return run.steady_sps


def _wall(run: TrainRun) -> float | None:
    return run.proc.wall_s


@register(1, "training", "Training overhead (vision small_cnn on digits)")
def training(ctx: Context) -> BenchResult:
    """Steady-state samples/s and end-to-end wall time of (a) plain PyTorch, (b) a
    hand-written Ray Train script and (c) `lepton train`, same model/data/optimizer."""
    s = ctx.settings
    w = s.workload
    runs = training_runs(ctx)
    result = BenchResult()
    rows = result.rows

    a_sps, b_sps, c_sps = (runs.median_of(v, _sps) for v in (PLAIN, RAY_TRAIN, LEPTON))
    c_over_b = runs.median_ratio(LEPTON, RAY_TRAIN, _sps)
    rows.append(Row("(a) plain PyTorch: steady throughput", a_sps, "samples/s"))
    rows.append(
        Row(
            "(b) Ray Train script: steady throughput",
            b_sps,
            "samples/s",
            LABELS[PLAIN],
            a_sps,
            runs.median_ratio(RAY_TRAIN, PLAIN, _sps),
        )
    )
    rows.append(
        Row(
            "(c) lepton train: steady throughput",
            c_sps,
            "samples/s",
            LABELS[RAY_TRAIN],
            b_sps,
            c_over_b,
            f">= {THROUGHPUT_TARGET}x",
            target_status(None if c_over_b is None else c_over_b >= THROUGHPUT_TARGET),
        )
    )
    rows.append(
        Row(
            "(c) lepton train: steady throughput",
            c_sps,
            "samples/s",
            LABELS[PLAIN],
            a_sps,
            runs.median_ratio(LEPTON, PLAIN, _sps),
        )
    )
    a_wall, b_wall, c_wall = (runs.median_of(v, _wall) for v in (PLAIN, RAY_TRAIN, LEPTON))
    rows.append(Row("(a) plain PyTorch: wall time", a_wall, "s"))
    rows.append(
        Row(
            "(b) Ray Train script: wall time",
            b_wall,
            "s",
            LABELS[PLAIN],
            a_wall,
            runs.median_ratio(RAY_TRAIN, PLAIN, _wall),
        )
    )
    rows.append(
        Row(
            "(c) lepton train: wall time",
            c_wall,
            "s",
            LABELS[RAY_TRAIN],
            b_wall,
            runs.median_ratio(LEPTON, RAY_TRAIN, _wall),
        )
    )
    rows.append(
        Row(
            "(c) lepton train: wall time",
            c_wall,
            "s",
            LABELS[PLAIN],
            a_wall,
            runs.median_ratio(LEPTON, PLAIN, _wall),
        )
    )

    result.notes.append(
        f"{w.epochs} epochs, batch {w.batch_size} per worker; (b) and (c) use {w.num_workers} "
        f"workers x {w.threads} torch thread(s) (DDP, gloo); (a) is one process with "
        f"{s.plain_threads} thread(s). Steady state = epochs 2..{w.epochs}: train-split samples "
        "/ train time, validation excluded. Values are medians over "
        f"{s.reps} repetition(s); ratios are medians of per-repetition ratios."
    )
    for run in runs.failed():
        result.notes.append(
            f"FAILED: {LABELS[run.variant]} repetition {run.rep + 1}: {run.error} "
            f"(log: {run.proc.log_path})"
        )
    if runs.failed():
        result.status = "failed" if not all(runs.of(v) for v in LABELS) else "ok"
    result.details = {
        "workload": w.as_dict(),
        "plain_threads": s.plain_threads,
        "runs": [r.summary() for r in runs.runs],
    }
    return result
