"""6. Whole runs as a new user makes them: `lepton train` against the hand-written Ray
Train script, each a whole process (launch to exit), in turn."""

from __future__ import annotations

from bench.benchmarks.whole import (
    HAND,
    LABELS,
    LEPTON,
    LEPTON_PIPE,
    SAMPLE_S,
    WholeRun,
    lepton_pipe_run,
    span_of,
    whole_runs,
)
from bench.core import BenchResult, Context, Row, median, target_status
from bench.registry import register

WALL_TARGET = 1.0  # lepton train / hand-written script, whole process
ACCURACY_TOLERANCE = 0.03  # |lepton - hand-written| final val accuracy (about 11 of 359 images)
EPOCH_LINE_TARGET_S = 1.0  # a row's own time to its line on lepton's stdout
END_TARGET_S = 2.0  # last epoch's end to process exit


def _wall(run: WholeRun) -> float | None:
    return run.proc.wall_s


def _acc(run: WholeRun) -> float | None:
    return run.val_accuracy()


def _worst_delay(run: WholeRun) -> float | None:
    delays = run.epoch_line_delays()
    return max(delays.values()) if delays else None


def _first_delay(run: WholeRun) -> float | None:
    return run.epoch_line_delays().get(0)


def _median_delay(run: WholeRun) -> float | None:
    return median(run.epoch_line_delays().values())


def _missing_lines(run: WholeRun) -> int:
    return len(run.rows) - len(run.epoch_line_delays())


@register(6, "e2e", "Whole runs: `lepton train` against the hand-written Ray Train script")
def e2e(ctx: Context) -> BenchResult:
    """`lepton train` and `python bench/workloads/ray_train.py` on the same model, data, batch,
    epochs and workers, each a whole process in turn: the wall-time ratio, final val accuracy,
    each epoch line's delay on lepton's stdout, and last epoch to exit."""
    runs = whole_runs(ctx)
    w = runs.workload
    result = BenchResult()
    rows = result.rows
    lab = LABELS[HAND]

    wall_ratio = runs.median_ratio(LEPTON, HAND, _wall)
    rows.append(
        Row(
            "`lepton train`: whole process, launch to exit",
            runs.median_of(LEPTON, _wall),
            "s",
            lab,
            runs.median_of(HAND, _wall),
            wall_ratio,
            f"<= {WALL_TARGET}x",
            target_status(None if wall_ratio is None else wall_ratio <= WALL_TARGET),
            note="median of per-pair ratios",
        )
    )
    for start, end, label in (
        ("launched", "first_step", "launch to first training step"),
        ("first_step", "last_row", "first step to the last epoch's end (training)"),
    ):
        get = span_of(start, end)
        delta = runs.median_delta(LEPTON, HAND, get)
        rows.append(
            runs.row(
                f"`lepton train`: {label}",
                LEPTON,
                HAND,
                get,
                note="" if delta is None else f"lepton − script {delta:+.2f} s",
            )
        )
    to_exit = span_of("last_row", "exit")
    end_s = runs.median_of(LEPTON, to_exit)
    rows.append(
        Row(
            "`lepton train`: last epoch's end to process exit",
            end_s,
            "s",
            lab,
            runs.median_of(HAND, to_exit),
            runs.median_ratio(LEPTON, HAND, to_exit),
            f"<= {END_TARGET_S} s",
            target_status(None if end_s is None else end_s <= END_TARGET_S),
            note="last row's `time` to exit",
        )
    )
    rows.append(runs.row("final val accuracy", LEPTON, HAND, _acc, unit=""))
    diff = runs.median_delta(LEPTON, HAND, _acc)
    diff = None if diff is None else round(diff, 6) + 0.0  # no -0
    rows.append(
        Row(
            "final val accuracy: lepton − script",
            diff,
            "",
            target=f"within ±{ACCURACY_TOLERANCE}",
            status=target_status(None if diff is None else abs(diff) <= ACCURACY_TOLERANCE),
            note="median of per-pair differences",
        )
    )
    worst = runs.median_of(LEPTON, _worst_delay)
    rows.append(
        Row(
            "epoch line delay, worst epoch of a run",
            worst,
            "s",
            target=f"<= {EPOCH_LINE_TARGET_S} s",
            status=target_status(None if worst is None else worst <= EPOCH_LINE_TARGET_S),
            note="row's own `time` to its `epoch N/M` line on stdout; median over runs",
        )
    )
    rows.append(Row("epoch line delay, first epoch", runs.median_of(LEPTON, _first_delay), "s"))
    rows.append(Row("epoch line delay, median epoch", runs.median_of(LEPTON, _median_delay), "s"))
    pipe = lepton_pipe_run(ctx)
    rows.append(
        Row(
            "epoch line delay, worst epoch, stdout a plain pipe (no PYTHONUNBUFFERED)",
            _worst_delay(pipe) if pipe.ok else None,
            "s",
            "PYTHONUNBUFFERED=1",
            worst,
            note="what `| tee` and CI logs see; one run",
        )
    )

    missing = sum(_missing_lines(r) for r in runs.of(LEPTON))
    if missing:
        result.notes.append(f"{missing} epoch row(s) had no `epoch N/M` line on lepton's stdout.")
    per_run = []
    for r in [*runs.of(LEPTON), *([pipe] if pipe.ok else [])]:
        delays = r.epoch_line_delays()
        shown = " ".join(f"{e + 1}:{d:.2f}" for e, d in sorted(delays.items()))
        per_run.append(shown + (" (plain pipe)" if r.variant == LEPTON_PIPE else ""))
    if per_run:
        result.notes.append("Epoch line delays per run (epoch:s): " + "; ".join(per_run) + ".")
    result.notes.append(
        f"{ctx.settings.pairs} pair(s), order rotated each pair; {w.epochs} epochs, batch "
        f"{w.batch_size} per worker, {w.num_workers} workers x {w.threads} thread(s), seed "
        f"{w.seed}. Each a fresh process with its own Ray; stdout is a pipe read line by line "
        f"(PYTHONUNBUFFERED=1), the process tree sampled every {SAMPLE_S:g} s for both."
    )
    for run in [*runs.failed(), *([] if pipe.ok else [pipe])]:
        result.notes.append(
            f"FAILED: {LABELS[run.variant]} run {run.rep + 1}: {run.error} (log: {run.proc.log_path})"
        )
    if not runs.pairs(LEPTON, HAND):
        result.status = "failed"
        result.error = "no successful pair of whole-process runs"
    result.details = {
        "workload": w.as_dict(),
        "runs": [r.summary() for r in runs.runs if r.variant in (LEPTON, HAND)],
        "plain_pipe_run": pipe.summary(),
    }
    return result
