"""What a sweep took and cost: each trial's speed-and-cost record, their sum, and what
early stopping saved.

A trial is costed like a run (:func:`engine.runs.cost.run_cost`), once per invocation of
its trial function (a restored trial has several, each in ``result.json``'s
``invocations``: its id and when it started), and the invocations are added up. An
invocation runs from its start to its end: the end of its loop (``timing.json``), or its
last row when the scheduler stopped it (Tune ends a stopped trial right after the report
that stopped it). What it reserved is what the trial asked Tune (or its Train workers)
for: ``num_workers × cpus_per_worker`` (and GPUs) over that window.

The sweep's cost is the sum over its trials (trials reserve resources only while they
run, so the sum is what the sweep held of the cluster), beside the sweep's own wall time.
*Saved by early stopping* is an estimate: each stopped trial's remaining epochs (up to
the sweep's ``epochs``) at that trial's own mean reserved time per epoch (training,
validation and checkpointing), priced like the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.runs.clock import RunClock
from engine.runs.cost import TIMING_FILE, RunCost, run_cost
from engine.runs.layout import read_json, read_metrics
from engine.runs.storage import Location

if TYPE_CHECKING:
    from engine.tune.results import SweepResults

#: How results.py shows a trial the scheduler stopped.
STOPPED = "stopped early"
#: The sections of a trial's config.yaml its cost needs, as typed config.
_SECTIONS = ("scaling", "cost")


@dataclass
class Saved:
    """What the scheduler's early stops saved (an estimate; see the module docstring)."""

    trials_stopped: int = 0
    trial_epochs: int = 0
    cpu_h: float = 0.0
    gpu_h: float = 0.0
    money: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def trial_cost(
    trial_dir: Location, config: dict[str, Any], result: dict[str, Any]
) -> RunCost | None:
    """The trial's cost over all its invocations; None when it never reached its loop."""
    scaling, cost_cfg = _typed_sections(config)
    timing = read_json(trial_dir / TIMING_FILE) or {}
    rows = read_metrics(trial_dir, dedupe=False)
    attempts = [a for a in timing.get("attempts") or [] if isinstance(a, dict)]
    found = result.get("invocations")
    starts: dict[str, Any] = found if isinstance(found, dict) else {}
    total: RunCost | None = None
    for invocation in dict.fromkeys(str(a.get("invocation")) for a in attempts):
        mine = [a for a in attempts if str(a.get("invocation")) == invocation]
        entered = [float(a["worker_started"]) for a in mine if a.get("worker_started")]
        if not entered:
            continue
        start = float(starts.get(invocation) or min(entered))
        pids = {a.get("pid") for a in mine}
        times = [float(r["time"]) for r in rows if r.get("pid") in pids and r.get("time")]
        ended = [float(a["loop_ended"]) for a in mine if a.get("loop_ended")]
        end = max([*times, *ended, start])
        clock = RunClock(start, invocation, fit_started=start, fit_ended=end)
        cost = run_cost(clock, scaling, cost_cfg, rows, timing, now=end)
        total = cost if total is None else total.add(cost)
    return total


def epoch_seconds(cost: RunCost, epochs: int) -> float | None:
    """The trial's mean time per epoch in its loop (train + validation + checkpoints)."""
    if epochs <= 0:
        return None
    busy = sum(cost.phases.get(p, 0.0) for p in ("training", "validation", "checkpointing"))
    return busy / epochs


def saved_by_stopping(stopped: list[tuple[RunCost, int]], planned_epochs: int | None) -> Saved:
    """``stopped``: (cost, epochs run) of each trial the scheduler stopped; priced at each
    trial's own prices."""
    saved = Saved()
    money: list[float] = []
    for cost, epochs in stopped:
        per_epoch = epoch_seconds(cost, epochs)
        left = max(0, (planned_epochs or 0) - epochs)
        if per_epoch is None or not left:
            continue
        saved.trials_stopped += 1
        saved.trial_epochs += left
        workers = cost.workers or 1
        cpu_h = workers * (cost.cpus_per_worker or 0.0) * per_epoch * left / 3600
        gpu_h = workers * (cost.gpus_per_worker or 0.0) * per_epoch * left / 3600
        if not cost.gpu_h_reserved:
            gpu_h = 0.0  # gpus_per_worker is set but the trial ran on CPUs
        saved.cpu_h += cpu_h
        saved.gpu_h += gpu_h
        money += [
            h * p for h, p in ((cpu_h, cost.cpu_hour), (gpu_h, cost.gpu_hour)) if p is not None
        ]
    saved.money = sum(money) if money else None
    return saved


def sweep_cost(results: SweepResults, started: float | None, ended: float) -> dict[str, Any]:
    """The sweep's ``cost`` record (``sweep.json``): its trials' costs summed, the
    trial-epochs used of the budget, and what early stopping saved."""
    total: RunCost | None = None
    stopped: list[tuple[RunCost, int]] = []
    for trial in results.trials:
        data = trial.result.get("cost")
        if not isinstance(data, dict):
            continue
        cost = RunCost.from_dict(data)
        total = cost if total is None else total.add(cost)
        if trial.status == STOPPED:
            stopped.append((cost, trial.epochs))
    planned = results.epochs
    used = sum(t.epochs for t in results.trials)
    return {
        "wall_s": max(0.0, ended - started) if started else None,
        "trials": len(results.trials),
        "trials_costed": total.runs if total is not None else 0,
        "trial_epochs": used,
        "trial_epochs_budget": planned * len(results.trials) if planned else None,
        "trials_total": total.as_dict() if total is not None else None,
        "saved_by_early_stopping": saved_by_stopping(stopped, planned).as_dict(),
    }


def _typed_sections(config: dict[str, Any]) -> tuple[Any, Any]:
    """The trial's ``scaling`` and ``cost`` sections as the typed config has them."""
    from omegaconf import OmegaConf

    from engine.config.schema import CostSection, ScalingConfig

    out = []
    for name, schema in zip(_SECTIONS, (ScalingConfig, CostSection), strict=True):
        node = config.get(name) if isinstance(config.get(name), dict) else {}
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
        out.append(OmegaConf.to_object(merged))
    return out[0], out[1]
