"""``lepton tune``'s driver: the sweep directory, its lock and record, the cluster, the
Tuner, and the results at the end (or at an interrupt).

A sweep directory is ``<run.dir>/<run.name>`` (default name ``<task>-sweep-<time>``);
``sweep.json`` is its record (status, task, metric, the swept keys, ...), and each trial
is a run directory inside it (:mod:`engine.tune.trial`). One live driver per sweep: the
same lock as a run's (:func:`engine.runs.lock.hold_run`).

Ray Tune keeps its own state in the sweep directory as pickle (``tuner.pkl``, the
searcher's state): resuming unpickles it, so only resume a sweep directory you trust,
as the Ray docs say.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.config.schema import LeptonConfig
from engine.errors import CheckpointError, ConfigError, LeptonError, RunInterrupted, TrainingFailed
from engine.runs.layout import new_run_name, read_json, write_status
from engine.runs.lock import LOCK_FILE, hold_run
from engine.runs.storage import Location
from engine.runs.sweep_dir import BEST_JSON, SWEEP_FILE
from engine.task import TaskInfo
from engine.train.interrupts import Interrupt, InterruptGuard
from engine.tune.plan import SweepPlan

#: Ray Tune's switches for a sweep (unless the environment sets them):
TUNE_ENV = {
    # Its experiment state at least this often (s): a driver killed mid-sweep loses at
    # most this much of the record (Ray's default adapts, >= 10 s).
    "TUNE_GLOBAL_CHECKPOINT_S": "2",
    # No result.json / progress.csv / TensorBoard files of Tune's in the trial dirs: a
    # trial's result.json is the engine's own, and metrics.jsonl its record.
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    # Frequent snapshots are intended (above): no warning about them.
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_AIR_NEW_OUTPUT": "0",
}


@dataclass
class SweepOutcome:
    sweep_dir: Location
    status: str
    table: str
    best: dict[str, Any] | None
    cost: dict[str, Any] | None = None


def resolve_sweep_dir(plan: SweepPlan, cfg: LeptonConfig) -> Location:
    root = Location.parse(cfg.run.dir)
    if cfg.run.name:
        where = root / cfg.run.name
    elif plan.resume:
        raise CheckpointError(
            "resume=true needs the sweep's name.",
            hint="Add run.name=<sweep> (see `lepton runs`).",
        )
    else:
        where = root / new_run_name(f"{plan.task}-sweep")
    record = read_json(where / SWEEP_FILE)
    started = where.is_dir() and any(p.name != LOCK_FILE for p in where.children())
    if plan.resume and record is None:
        raise CheckpointError(
            f"resume=true but {where} is not a sweep ({SWEEP_FILE} is missing).",
            hint="Check run.name and run.dir; `lepton runs` lists sweeps.",
        )
    if not plan.resume and started:
        raise CheckpointError(
            f"{where} already exists.",
            hint="Add resume=true to continue it, or pick another run.name.",
        )
    if plan.resume and record and record.get("params") != plan.describe():
        raise ConfigError(
            f"Sweep {where.name} was started over {record.get('params')}, not {plan.describe()}.",
            hint="Resume with the sweep's own overrides (they are in its sweep.json).",
        )
    return where


def run_sweep(
    plan: SweepPlan, cfg: LeptonConfig, info: TaskInfo, *, echo: Callable[[str], None] = print
) -> SweepOutcome:
    sweep_dir = resolve_sweep_dir(plan, cfg)
    plan.sweep_dir, plan.name = sweep_dir.uri, sweep_dir.name
    with hold_run(sweep_dir, resume=True, echo=echo):
        record = read_json(sweep_dir / SWEEP_FILE) or {}
        if plan.resume and record.get("status") == "finished":
            echo(f"Sweep {sweep_dir} already finished; nothing to do.")
            return _results(sweep_dir, plan, None, "finished", echo=None)
        info.task.check(cfg.task)  # data problems surface before Ray starts
        sweep_dir.mkdir()
        started = record.get("started") or time.time()
        _record(sweep_dir, plan, "running", started)
        return _tune(sweep_dir, plan, cfg, info, started, echo)


def _tune(
    sweep_dir: Location,
    plan: SweepPlan,
    cfg: LeptonConfig,
    info: TaskInfo,
    started: float,
    echo: Callable[[str], None],
) -> SweepOutcome:
    from engine.config.load import checkpoint_metric
    from engine.train.cluster import check_storage, cluster_resources, ray_cluster

    for key, value in TUNE_ENV.items():
        os.environ.setdefault(key, value)
    # Tune's result analysis reads each trial's result.json as its own JSON-lines log;
    # that file is the engine's record here, and its warning about it is noise.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    statuses: dict[str, str] | None = None
    with InterruptGuard() as guard:
        try:
            guard.arm()
            with ray_cluster(cfg.ray.address) as cluster:
                guard.arm() if cluster.owned else guard.disarm()
                # Ray Tune is imported once the cluster is up (it imports ray, which must
                # see the embedded cluster's loopback switch first: engine/train/embedded.py).
                from engine.tune.tuner import build_tuner, statuses_of, trial_count, trials_at_once

                resources = cluster_resources()
                concurrent = trials_at_once(plan, cfg.scaling, resources)
                check_storage(sweep_dir.parent, cfg.run.shared_fs, resources)
                tuner = build_tuner(
                    plan,
                    cfg.scaling,
                    cfg.trainer.keep_checkpoints,
                    checkpoint_metric(cfg, info),
                    concurrent,
                    echo,
                )
                echo(
                    f"Sweeping {plan.task} in {sweep_dir}: {trial_count(plan)} trial(s), "
                    f"{concurrent} at a time, {plan.settings.scheduler} / {plan.settings.search}, "
                    f"by {plan.metric} ({plan.mode})" + (" (resumed)" if plan.resume else "")
                )
                results = guard.run(tuner.fit)
                statuses = statuses_of(results, plan.epochs)
        except Interrupt as stop:
            # Marked first: the results read a sweep that is no longer live.
            _record(sweep_dir, plan, "interrupted", started)
            outcome = _results(sweep_dir, plan, statuses, "interrupted", echo=None)
            _record(sweep_dir, plan, "interrupted", started, best=outcome.best, cost=outcome.cost)
            raise RunInterrupted(
                f"{stop.name}: sweep {sweep_dir} is marked interrupted",
                hint=f"To resume: lepton tune <the same overrides> run.name={sweep_dir.name} "
                "resume=true",
                signum=stop.signum,
            ) from None
        except LeptonError:
            _record(sweep_dir, plan, "failed", started)
            raise
        except Exception as exc:
            _record(sweep_dir, plan, "failed", started, error=str(exc).splitlines()[0])
            raise TrainingFailed(
                f"Sweep failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                hint=f"Trials so far are in {sweep_dir}; resume with run.name={sweep_dir.name} "
                "resume=true.",
            ) from exc
    outcome = _results(sweep_dir, plan, statuses, "finished", echo=echo)
    _record(sweep_dir, plan, "finished", started, best=outcome.best, cost=outcome.cost)
    return outcome


def _results(
    sweep_dir: Location,
    plan: SweepPlan,
    statuses: dict[str, str] | None,
    status: str,
    *,
    echo: Callable[[str], None] | None,
) -> SweepOutcome:
    from engine.tune.finalize import finalize_trials
    from engine.tune.results import format_table, write_sweep_results

    finalize_trials(sweep_dir, statuses or {}, report=status == "finished")
    results = write_sweep_results(sweep_dir, statuses=statuses)
    best = read_json(sweep_dir / BEST_JSON)
    return SweepOutcome(sweep_dir, status, format_table(results), best, results.cost)


def _record(
    sweep_dir: Location, plan: SweepPlan, status: str, started: float, **extra: Any
) -> None:
    write_status(
        sweep_dir / SWEEP_FILE,
        status,
        started=started,
        kind="sweep",
        task=plan.task,
        metric=plan.metric,
        mode=plan.mode,
        params=plan.describe(),
        overrides=plan.trial_overrides,
        scheduler=plan.settings.scheduler,
        search=plan.settings.search,
        num_samples=plan.settings.samples(),
        epochs=plan.epochs,
        **extra,
    )
