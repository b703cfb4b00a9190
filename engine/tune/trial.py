"""One sweep trial: a full engine training run in its own directory under the sweep's.

The trial composes its own config from the plan's overrides and its sampled values,
exactly as ``lepton train`` would (:meth:`SweepPlan.trial_config_overrides`), and writes
a run directory like any run's (``config.yaml``, ``metrics.jsonl``, ``result.json``,
``checkpoint_*``). One report per epoch, so the scheduler's rungs are epochs
(``epochs_done``, which a restored trial keeps counting from its checkpoint).

- One worker (``scaling.num_workers=1``): the loop runs in the trial's own process
  through :class:`TrialContext`, reporting with ``ray.tune.report``; no worker group is
  started, so a trial pays no Ray Train start-up. Tune persists each checkpoint into the
  trial directory (``checkpoint_00000N``) and hands it back when the trial is restored.
- Several workers: the trial builds the engine's ``TorchTrainer``
  (:func:`~engine.train.trainer.build_trainer`) over the trial directory, with
  :class:`EpochReport` (Tune's ``TuneReportCallback``) made inside the trial, and
  reserves almost nothing itself: the Train workers reserve theirs. A restored trial runs
  the same Train run again, which resumes from its newest checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from ray.tune.integration.ray_train import TuneReportCallback

from engine.train.worker_context import LocalContext, checkpoint_as_dir
from engine.tune.plan import SweepPlan

#: The rung counter every report carries: epochs finished, counted from 1.
EPOCHS_DONE = "epochs_done"


def trial_dirname(trial: Any) -> str:
    """``trial_00003``: from Tune's trial index, so a restored trial keeps its directory."""
    return dirname_for(trial.trial_id)


def dirname_for(trial_id: str) -> str:
    """A trial's directory name from its Tune id (``<experiment>_<index>``)."""
    return "trial_" + str(trial_id).rsplit("_", 1)[-1]


class TrialContext(LocalContext):
    """The loop inside a Tune trial's own process: one rank, as in a plain process,
    reporting to Tune (which persists the checkpoints into the trial directory)."""

    def __init__(self, run_dir: str, device: str, threads: int) -> None:
        import logging

        from engine.train.orphan_guard import exit_with_raylet

        # The sweep prints a line per trial, not per epoch of every trial.
        super().__init__(run_dir, device, prints_rows=False)
        exit_with_raylet()  # a trial whose cluster is gone stops writing at once
        # "Checkpoint successfully created at ..." on the driver's terminal for every epoch.
        logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
        torch.set_num_threads(max(1, threads))

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        from ray import tune

        checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report(with_epochs_done(metrics), checkpoint=checkpoint)

    @contextmanager
    def restored_checkpoint(self) -> Iterator[Path | None]:
        from ray import tune

        with checkpoint_as_dir(tune.get_checkpoint()) as path:
            yield path


def with_epochs_done(metrics: dict[str, Any]) -> dict[str, Any]:
    return {**metrics, EPOCHS_DONE: int(metrics.get("epoch", -1)) + 1}


def run_trial(config: dict[str, Any], plan: SweepPlan) -> None:
    """Tune's function trainable: ``config`` holds this trial's sampled values."""
    from ray import tune

    from engine.config.load import checkpoint_metric, load_config
    from engine.runs.layout import (
        CONFIG_FILE,
        RESULT_FILE,
        latest_checkpoint,
        read_result,
        write_json_atomic,
    )
    from engine.runs.storage import Location
    from engine.train.loop import LoopSpec

    context = tune.get_context()
    name = dirname_for(context.get_trial_id())
    values = {key: config[key] for key in plan.params}
    loaded = load_config(plan.trial_config_overrides(values, name), config_dir=plan.config_dir)
    cfg, info = loaded.config, loaded.info
    run_dir = Location.parse(plan.sweep_dir) / name
    run_dir.mkdir()
    # A trial run again (its sweep resumed, or Tune retrying it) continues from its own
    # newest whole checkpoint, also one Tune's last saved state does not know of yet.
    cfg.resume = latest_checkpoint(run_dir) is not None
    (run_dir / CONFIG_FILE).write_text(loaded.yaml)
    metric, mode = checkpoint_metric(cfg, info)
    trial = {"sweep": plan.name, "name": name, "values": values}
    previous = read_result(run_dir) or {}
    now = time.time()
    started = previous.get("started") or now
    invocation = f"trial-{name}-{time.time_ns()}"
    # Each run of the trial function and its start: the trial's cost (engine.tune.sweep_cost).
    invocations = {**(previous.get("invocations") or {}), invocation: now}
    # Not the driver's status record (write_status): a trial's wall time is its rows' span.
    status = {"status": "running", "started": started, "metric": metric, "mode": mode}
    status["invocations"] = invocations
    write_json_atomic(run_dir / RESULT_FILE, {**status, "trial": trial, "updated": time.time()})
    spec = LoopSpec(
        info=info,
        config=cfg,
        run_dir=run_dir.uri,
        metric=metric,
        mode=mode,
        cwd=plan.cwd,
        invocation=invocation,
        trial=trial,
        git=plan.git,
    )
    if cfg.scaling.num_workers == 1:
        from engine.train.loop import run_loop

        device = "cuda" if cfg.scaling.use_gpu else "cpu"
        try:
            run_loop(spec, TrialContext(run_dir.uri, device, int(cfg.scaling.cpus_per_worker)))
        finally:
            # A trial the scheduler stops ends inside `tune.report`, before the loop
            # finishes its W&B run; the next trial in this (reused) process gets its own.
            _finish_wandb_run()
    else:
        from engine.train.trainer import build_trainer

        build_trainer(cfg, spec, run_dir, callbacks=[EpochReport()]).fit()


def _finish_wandb_run() -> None:
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.run.finish()


class EpochReport(TuneReportCallback):  # type: ignore[misc]
    """Tune's bridge from a Train run to its trial (made inside the trial, as Tune
    requires), with ``epochs_done`` added to every report."""

    def after_report(
        self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any
    ) -> None:
        super().after_report(run_context, [with_epochs_done(m) for m in metrics], checkpoint)
