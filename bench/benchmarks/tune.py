"""8. Sweeps: `lepton tune` with ASHA against FIFO on the same search space and budget, and
a FIFO sweep's wall time against a hand-written Ray Tune script that runs a Ray Train
``TorchTrainer`` per trial. Every sweep is a whole process with its own fresh Ray."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.benchmarks.sweeps import SCRIPT_CONCURRENCY, SPACE, SweepRun, lepton_sweep, script_sweep
from bench.core import BenchResult, Context, Row, median, ratio, target_status
from bench.registry import register

EPOCHS_TARGET = 0.40  # ASHA's trial-epochs / FIFO's
POINTS_TARGET = 1.0  # ASHA's best at most this many accuracy points below FIFO's
WALL_TARGET = 0.5  # lepton tune / hand-written script, whole process


@dataclass(frozen=True)
class Sizes:
    epochs: int  # ASHA vs FIFO: trainer.epochs (ASHA's max_t)
    samples: int  # ASHA vs FIFO: trials drawn
    grace_period: int
    reduction_factor: int
    wall_trials: int  # lepton vs script: trials
    wall_epochs: int  # lepton vs script: epochs per trial
    wall_pairs: int  # lepton vs script: whole-process runs of each, in turn


#: 9 epochs, reduction factor 3: ASHA's rungs at 1, 3 and 9 epochs. 24 trials: async ASHA
#: promotes the first trials to reach a rung while it has few results to compare them with, so
#: at 12 trials 5 of them ran all 9 epochs (52% of FIFO's trial-epochs); a sweep of 24 is closer
#: to what ASHA is for.
FULL = Sizes(9, 24, 1, 3, 8, 4, 2)
QUICK = Sizes(3, 6, 1, 3, 4, 2, 1)


@register(8, "tune", "Sweeps: `lepton tune`, ASHA against FIFO, and against Ray Tune + Train")
def tune(ctx: Context) -> BenchResult:
    """`lepton tune` with ASHA and with FIFO (same space, seed, trials and epochs): trial-epochs
    used and best val accuracy; then 8 single-worker FIFO trials with `lepton tune` against
    `bench/workloads/ray_tune_train.py` (Ray Tune, a TorchTrainer per trial): whole-process
    wall time and the fixed cost per trial."""
    sizes = QUICK if ctx.settings.quick else FULL
    result = BenchResult()
    asha, fifo = _asha_vs_fifo(ctx, sizes, result)
    pairs = _lepton_vs_script(ctx, sizes, result)
    result.details = {
        "sizes": sizes.__dict__,
        "space": list(SPACE),
        "asha_vs_fifo": [r.summary() for r in (asha, fifo)],
        "lepton_vs_script": [[r.summary() for r in pair] for pair in pairs],
    }
    if not (asha.ok and fifo.ok) and not any(a.ok and b.ok for a, b in pairs):
        result.status, result.error = "failed", "no sweep pair completed"
    return result


def _asha_vs_fifo(ctx: Context, z: Sizes, result: BenchResult) -> tuple[SweepRun, SweepRun]:
    def one(scheduler: str) -> SweepRun:
        return lepton_sweep(
            ctx,
            scheduler,
            scheduler=scheduler,
            epochs=z.epochs,
            samples=z.samples,
            grace_period=z.grace_period,
            reduction_factor=z.reduction_factor,
        )

    fifo = one("fifo")
    _log_run(ctx, fifo)
    asha = one("asha")
    _log_run(ctx, asha)
    rows, ok = result.rows, asha.ok and fifo.ok
    fifo_label = "FIFO, same space, seed, trials, epochs"
    epochs_ratio = ratio(asha.trial_epochs, fifo.trial_epochs) if ok else None
    rows.append(
        Row(
            "ASHA: trial-epochs used (sum of trials.csv's epochs)",
            asha.trial_epochs if asha.ok else None,
            "trial-epochs",
            fifo_label,
            fifo.trial_epochs if fifo.ok else None,
            epochs_ratio,
            f"<= {EPOCHS_TARGET}x",
            target_status(None if epochs_ratio is None else epochs_ratio <= EPOCHS_TARGET),
            note=f"{z.samples} trials x {z.epochs} epochs at most",
        )
    )
    best_a, best_f = (asha.best, fifo.best) if ok else (None, None)
    rows.append(
        Row("ASHA: best val/accuracy", best_a, "", fifo_label, best_f, ratio(best_a, best_f))
    )
    points = None if best_a is None or best_f is None else round((best_a - best_f) * 100, 4) + 0.0
    rows.append(
        Row(
            "best val/accuracy: ASHA − FIFO",
            points,
            "points",
            target=f">= -{POINTS_TARGET:g} point",
            status=target_status(None if points is None else points >= -POINTS_TARGET),
            note="accuracy points",
        )
    )
    rows.append(
        Row(
            "ASHA: sweep wall time, launch to exit",
            asha.proc.wall_s if asha.ok else None,
            "s",
            fifo_label,
            fifo.proc.wall_s if fifo.ok else None,
            ratio(asha.proc.wall_s, fifo.proc.wall_s) if ok else None,
        )
    )
    stopped = sum(t.status.startswith("stopped") for t in asha.trials)
    rows.append(Row("ASHA: trials stopped early", stopped if asha.ok else None, "trials"))
    for run in (fifo, asha):
        if not run.ok:
            result.notes.append(f"FAILED: {run.label}: {run.error} (log: {run.proc.log_path})")
    if epochs_ratio is not None and points is not None:
        met = epochs_ratio <= EPOCHS_TARGET and points >= -POINTS_TARGET
        result.notes.append(
            f"Goal: ASHA within {POINTS_TARGET:g} point of FIFO's best at <= "
            f"{EPOCHS_TARGET:.0%} of its trial-epochs: {'met' if met else 'MISSED'} "
            f"({epochs_ratio:.0%} of the trial-epochs, {points:+.2f} points)."
        )
        same = [t.values for t in asha.trials] == [t.values for t in fifo.trials]
        result.notes.append(
            f"ASHA: grace_period={z.grace_period}, reduction_factor={z.reduction_factor}, "
            f"max_t={z.epochs}; both sweeps {asha.concurrency} trial(s) at a time, tune.seed=0: "
            + ("the same configs drawn." if same else "the configs drawn DIFFER.")
            + " Epochs per ASHA trial: "
            + " ".join(str(t.epochs) for t in asha.trials)
            + "."
        )
    return asha, fifo


def _lepton_vs_script(
    ctx: Context, z: Sizes, result: BenchResult
) -> list[tuple[SweepRun, SweepRun]]:
    pairs = []
    for k in range(z.wall_pairs):
        runs: dict[str, SweepRun] = {}
        for kind in ("lepton", "script") if k % 2 == 0 else ("script", "lepton"):
            if kind == "lepton":
                runs[kind] = lepton_sweep(
                    ctx,
                    f"wall-lepton-{k}",
                    scheduler="fifo",
                    epochs=z.wall_epochs,
                    samples=z.wall_trials,
                )
            else:
                runs[kind] = script_sweep(
                    ctx, f"wall-script-{k}", epochs=z.wall_epochs, trials=z.wall_trials
                )
            _log_run(ctx, runs[kind])
        pairs.append((runs["lepton"], runs["script"]))
    good = [(a, b) for a, b in pairs if a.ok and b.ok]
    script_label = "hand-written Ray Tune + TorchTrainer script"

    def row(
        metric: str, get: Callable[[SweepRun], float | None], unit: str = "s", **kw: str
    ) -> Row:
        return Row(
            metric,
            median(get(a) for a, _ in good),
            unit,
            script_label,
            median(get(b) for _, b in good),
            median(ratio(get(a), get(b)) for a, b in good),
            **kw,
        )

    wall = row(
        f"`lepton tune`: {z.wall_trials} trials x {z.wall_epochs} epochs, launch to exit",
        lambda r: r.proc.wall_s,
        target=f"<= {WALL_TARGET}x",
        note="median of per-pair ratios",
    )
    wall.status = target_status(None if wall.ratio is None else wall.ratio <= WALL_TARGET)
    result.rows += [
        wall,
        row("the sweep's own wall time (sweep.json / the script's record)", lambda r: r.own_wall_s),
        row(
            "per-trial fixed cost, amortised",
            lambda r: r.amortised_fixed_s,
            note="(wall x trials at once − time in epochs) / trials",
        ),
        row(
            "per-trial fixed cost, median trial",
            lambda r: r.median_fixed_s,
            note="Tune's trial start to its last result − the trial's epochs",
        ),
        row("time in epochs, all trials (train + val)", lambda r: r.epoch_s),
        row("best val accuracy", lambda r: r.best, unit=""),
    ]
    teardown = median(t.after_last_s for _, b in good for t in b.trials)
    first = median(min((t.fixed_s or 0.0) for t in a.trials) for a, _ in good)
    result.notes.append(
        f"{len(good)} of {len(pairs)} pair(s) completed, order alternated. Both sides run "
        f"{SCRIPT_CONCURRENCY} trials at a time on 2 CPUs: `lepton tune` reserves 1 CPU per "
        "single-worker trial (in-process, no Train worker group); the script's trial function "
        "reserves {'cpu': 0.01} and its one Train worker 0.99 CPU (with the usual 1-CPU worker a "
        "trial needs 1.01 CPUs and only one fits). Same space and seed: Tune draws the same "
        "configs for both. The script's model is its own small CNN (no rotation augmentation), "
        "so the epochs row is shown apart from the fixed costs."
    )
    if teardown is not None and first is not None:
        result.notes.append(
            f"Script: last result to the trial function's return (Train's shutdown, not in the "
            f"median-trial row above) {teardown:.2f} s per trial (median). `lepton tune`: the "
            f"cheapest trial's fixed cost {first:.2f} s (actors are reused after the first)."
        )
    for side, side_runs in (
        ("`lepton tune`", [a for a, _ in good]),
        ("script", [b for _, b in good]),
    ):
        names = list(side_runs[0].timeline()) if side_runs else []
        at = {name: median(r.timeline().get(name) for r in side_runs) for name in names}
        shown = ", ".join(f"{name} {t:.1f}" for name, t in at.items() if t is not None)
        if shown:
            result.notes.append(f"Timeline, {side} (s from launch, median over pairs): {shown}.")
    for a, b in pairs:
        result.notes.append(
            f"Load (1-min) before/after: lepton {a.load[0]}/{a.load[1]}, script "
            f"{b.load[0]}/{b.load[1]}; walls {a.proc.wall_s:.1f} s / {b.proc.wall_s:.1f} s."
        )
    for run in [r for pair in pairs for r in pair]:
        if not run.ok:
            result.notes.append(f"FAILED: {run.label}: {run.error} (log: {run.proc.log_path})")
    return pairs


def _log_run(ctx: Context, run: SweepRun) -> None:
    ctx.log(
        f"  -> {'ok' if run.ok else 'FAILED'}  wall {run.proc.wall_s:.1f}s  "
        f"{len(run.trials)} trials, {run.trial_epochs} trial-epochs, best {run.best}, "
        f"{run.epoch_s:.1f}s in epochs" + (f"  ({run.error})" if run.error else "")
    )
