"""The Ray Tune ``Tuner`` for a :class:`~engine.tune.plan.SweepPlan`: scheduler,
searcher, trial resources, the trial-end lines, and restoring an interrupted sweep.

- Scheduler: ASHA (``grace_period``, ``reduction_factor``, ``max_t`` = ``trainer.epochs``
  unless set), FIFO, or the median stopping rule; all count ``epochs_done``.
- Search: random (Tune's variant generator, seeded), grid (choices and ranges as grid
  axes; ``num_samples`` repeats the grid), or Optuna's TPE (the ``tune`` extra).
- Resources: a one-worker trial reserves that worker's CPUs (and GPUs) and trains in
  its own process; a multi-worker trial reserves no CPU (:data:`TRIAL_DRIVER`) and its
  Train workers reserve theirs. ``max_concurrent_trials`` defaults to what the cluster holds.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

from engine.config.schema import ScalingConfig
from engine.train.cluster import ClusterResources, check_fits
from engine.tune.plan import SweepPlan
from engine.tune.space import grid_size, to_search_space
from engine.tune.trial import EPOCHS_DONE, run_trial, trial_dirname

#: What a multi-worker trial's own process reserves: no CPU (its Train workers reserve
#: theirs; even 0.01 CPU would keep a 2-worker trial off a 2-CPU cluster), and as Tune
#: refuses a trial that reserves nothing, 1 MiB of Ray's ``memory`` resource, which every
#: node has.
TRIAL_DRIVER = {"cpu": 0.0, "memory": float(1 << 20)}


def trial_resources(scaling: ScalingConfig) -> dict[str, float]:
    """What one trial reserves (its trial process; Train workers reserve their own)."""
    if scaling.num_workers == 1:
        out = {"cpu": float(scaling.cpus_per_worker)}
        if scaling.use_gpu:
            out["gpu"] = float(scaling.gpus_per_worker)
        return out
    return dict(TRIAL_DRIVER)


def trials_at_once(plan: SweepPlan, scaling: ScalingConfig, res: ClusterResources) -> int:
    """``tune.max_concurrent_trials``, or as many trials as the cluster holds; a sweep
    whose one trial cannot be placed is refused (as ``lepton train`` refuses a run)."""
    check_fits(scaling, res)
    fit = math.floor(res.total_cpus / (scaling.num_workers * scaling.cpus_per_worker) + 1e-9)
    if scaling.use_gpu:
        gpus = scaling.num_workers * scaling.gpus_per_worker
        fit = min(fit, math.floor(res.total_gpus / gpus + 1e-9))
    chosen = plan.settings.max_concurrent_trials
    return max(1, min(chosen, fit) if chosen else fit)


def _scheduler(plan: SweepPlan) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule

    s = plan.settings
    if s.scheduler == "fifo":
        return FIFOScheduler()
    if s.scheduler == "median":
        return MedianStoppingRule(time_attr=EPOCHS_DONE, grace_period=s.grace_period)
    max_t = s.max_t or plan.epochs  # grace_period <= max_t: checked by the plan
    return ASHAScheduler(
        time_attr=EPOCHS_DONE,
        max_t=max_t,
        grace_period=s.grace_period,
        reduction_factor=s.reduction_factor,
    )


def _searcher(plan: SweepPlan, concurrent: int) -> Any:
    """Optuna's TPE, or Tune's variant generator (random and grid; seeded, and capped at
    ``concurrent`` trials itself: TuneConfig's cap applies to searchers only)."""
    s = plan.settings
    if s.search == "optuna":  # installed: checked by the plan
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(seed=s.seed)
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(random_state=s.seed, max_concurrent=concurrent)


def build_tuner(
    plan: SweepPlan,
    scaling: ScalingConfig,
    keep_checkpoints: int,
    checkpoint_metric: tuple[str, str],
    concurrent: int,
    echo: Callable[[str], None],
) -> Any:
    """A new Tuner, or one restored from the sweep directory (``plan.resume``)."""
    from ray import tune

    from engine.runs.storage import Location
    from engine.tune.progress import TrialLines

    grid = plan.settings.search == "grid"
    space = to_search_space(plan.params, grid=grid)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, plan=plan), trial_resources(scaling)
    )
    lines = TrialLines(plan, echo=echo, interactive=sys.stdout.isatty())
    sweep = Location.parse(plan.sweep_dir)
    run_config = tune.RunConfig(
        name=plan.name,
        storage_path=sweep.parent.uri,
        verbose=0,
        callbacks=[lines],
        failure_config=tune.FailureConfig(max_failures=plan.settings.max_failures),
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=keep_checkpoints,
            checkpoint_score_attribute=checkpoint_metric[0],
            checkpoint_score_order=checkpoint_metric[1],
        ),
    )
    if plan.resume and tune.Tuner.can_restore(sweep.uri):
        tuner = tune.Tuner.restore(
            sweep.uri,
            trainable=trainable,
            param_space=space,
            resume_unfinished=True,
            resume_errored=False,
            restart_errored=False,
        )
        return tuner
    tune_config = tune.TuneConfig(
        metric=plan.metric,
        mode=plan.mode,
        num_samples=plan.settings.samples(),
        max_concurrent_trials=concurrent if plan.settings.search == "optuna" else None,
        scheduler=_scheduler(plan),
        search_alg=_searcher(plan, concurrent),
        # A one-worker trial's process is reused by the next trial (no second start-up);
        # a Train trial's is not: Tune waits only 2 s for the last trial's fit() to end.
        reuse_actors=scaling.num_workers == 1,
        trial_dirname_creator=trial_dirname,
        trial_name_creator=trial_dirname,
        time_budget_s=plan.settings.time_budget_s,
    )
    return tune.Tuner(trainable, param_space=space, tune_config=tune_config, run_config=run_config)


def trial_count(plan: SweepPlan) -> int:
    samples = plan.settings.samples()
    return samples * grid_size(plan.params) if plan.settings.search == "grid" else samples


def statuses_of(results: Any, epochs: int) -> dict[str, str]:
    """finished | stopped | failed per trial directory, as Tune ended each trial."""
    out: dict[str, str] = {}
    for result in results:
        path = getattr(result, "path", None)
        if not path:
            continue
        name = str(path).rstrip("/").rsplit("/", 1)[-1]
        done = int((result.metrics or {}).get(EPOCHS_DONE, 0) or 0)
        if result.error is not None:
            out[name] = "failed"
        else:
            out[name] = "finished" if done >= epochs else "stopped"
    return out
