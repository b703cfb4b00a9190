"""Speed and cost of a run: where its wall time went, and what it reserved and used.

The driver keeps a :class:`RunClock` (when ``lepton`` started, when ``fit()`` started
and ended, when the run was recorded); the loop adds per-epoch timings to each row of
``metrics.jsonl`` (``train_time_s``, ``val_time_s``, ``cpu_s``, ``samples``,
``gpu_util``) and one record per worker-group attempt to ``timing.json``
(:mod:`engine.train.timing`). :func:`run_cost` turns them into a :class:`RunCost`,
which ``result.json`` keeps under ``"cost"`` and ``report.md`` shows.

Definitions (all wall-clock seconds, ``time.time()`` on driver and workers alike):

- **wall**: from the ``lepton`` process's start (:mod:`engine.runs.clock`; a
  ``train()`` called in-process counts from that call) to the moment the cost is
  computed, just before the final ``result.json`` is written (what the process does
  after that, the report for one, is not in it).
- **phases**: ``startup_driver`` (process start → ``fit()``: config, plugins, the Ray
  cluster, pre-flight), ``startup_workers`` (``fit()`` → the first rank enters the
  training function: Ray Train's controller, placement, worker processes, process
  group), ``startup_prepare`` (→ rank 0 begins the first epoch: data, model, optimizer,
  resume), ``training`` / ``validation`` (the rows' ``train_time_s`` / ``val_time_s``),
  ``checkpointing`` (every epoch's save and ``report``, which persists the checkpoint
  and waits for all ranks), ``shutdown_workers`` (rank 0's last report → ``fit()``
  returns: ``workers.json``, Ray Train ending the workers), ``shutdown_driver`` (→ the
  end: the progress follower's last rows, removing leftover temporary checkpoint dirs
  (up to 10 s for just-stopped workers), reading the run's summary, and the cluster's
  stop where it is not left to a background thread, as an embedded cluster's is after
  a finished run) and ``other`` (the rest: row writes, restarted attempts).
- **reserved window**: from the first worker's start to ``fit()``'s end. The first
  worker's start is the earliest start of a worker *process* of this invocation's
  attempts (``/proc``; Ray starts them once their resources are reserved), but not
  before ``fit()`` started; without ``/proc``, the earliest entry into the training
  function; ``fit()``'s start when no worker got that far. Reserved CPU-h =
  ``num_workers × cpus_per_worker × window / 3600``; GPU-h likewise with
  ``gpus_per_worker`` when ``use_gpu``.
- **used**: the workers' own CPU time (``getrusage``: the process, plus its ended and
  waited-for children such as DataLoader workers), from the start of the training
  function to its end, summed over ranks. GPU-h used = GPU-h reserved × the mean
  ``torch.cuda.utilization()`` sampled on the workers (null, with the reason, without
  pynvml or a GPU).
- **money**: reserved hours × the price per hour (``cost.cpu_hour`` / ``cost.gpu_hour``,
  or ``cost.node_types[cost.node_type]``); null when no price is set.

Multi-machine clusters: worker timestamps come from each node's clock (NTP-synced
clocks agree within milliseconds); a negative difference counts as zero.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Any

from engine.runs.clock import RunClock

#: The loop's record of each worker-group attempt, in the run directory.
TIMING_FILE = "timing.json"

PHASES = (
    "startup_driver",
    "startup_workers",
    "startup_prepare",
    "training",
    "validation",
    "checkpointing",
    "shutdown_workers",
    "shutdown_driver",
    "other",
)


@dataclass
class Prices:
    """The prices that apply to a run (per hour of one CPU / one GPU)."""

    cpu_hour: float | None = None
    gpu_hour: float | None = None
    currency: str = "USD"
    node_type: str | None = None


def prices_for(cost_cfg: Any) -> Prices:
    """The run's prices: the node type's (``cost.node_types[cost.node_type]``), each one
    it leaves null taken from ``cost.cpu_hour`` / ``cost.gpu_hour``."""
    cpu, gpu = cost_cfg.cpu_hour, cost_cfg.gpu_hour
    if cost_cfg.node_type is not None:
        node = (cost_cfg.node_types or {})[cost_cfg.node_type]
        cpu = node.cpu_hour if node.cpu_hour is not None else cpu
        gpu = node.gpu_hour if node.gpu_hour is not None else gpu
    return Prices(cpu, gpu, cost_cfg.currency, cost_cfg.node_type)


def _sum_known(*values: float | None) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


@dataclass
class RunCost:
    """What one run (or, summed with :meth:`add`, several) took and cost."""

    wall_s: float = 0.0
    phases: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    samples: int = 0
    workers: int | None = None
    cpus_per_worker: float | None = None
    gpus_per_worker: float | None = None
    reserved_window_s: float = 0.0
    cpu_h_reserved: float = 0.0
    cpu_h_used: float | None = None
    gpu_h_reserved: float = 0.0
    gpu_h_used: float | None = None
    gpu_util: float | None = None
    gpu_note: str | None = None
    cpu_hour: float | None = None
    gpu_hour: float | None = None
    currency: str = "USD"
    node_type: str | None = None
    money_cpu: float | None = None
    money_gpu: float | None = None
    runs: int = 1
    #: The timestamps it was computed from (one run only; a sum has none).
    clock: dict[str, float | None] | None = None

    @property
    def money(self) -> float | None:
        return _sum_known(self.money_cpu, self.money_gpu)

    @property
    def samples_per_s(self) -> float | None:
        """Training throughput: samples over the training phase."""
        return _ratio(float(self.samples), self.phases.get("training"))

    @property
    def run_samples_per_s(self) -> float | None:
        """Throughput over the whole wall time."""
        return _ratio(float(self.samples), self.wall_s)

    @property
    def cpu_utilisation(self) -> float | None:
        return _ratio(self.cpu_h_used, self.cpu_h_reserved)

    def as_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data.update(
            money=self.money,
            samples_per_s=self.samples_per_s,
            run_samples_per_s=self.run_samples_per_s,
            cpu_utilisation=self.cpu_utilisation,
        )
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunCost:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def add(self, other: RunCost) -> RunCost:
        """The two together (a resumed run's invocations, a sweep's trials)."""

        def same(a: Any, b: Any) -> Any:
            return a if a == b else None

        gpu_h = self.gpu_h_reserved + other.gpu_h_reserved
        gpu_used = _sum_known(self.gpu_h_used, other.gpu_h_used)
        return RunCost(
            wall_s=self.wall_s + other.wall_s,
            phases={p: self.phases.get(p, 0.0) + other.phases.get(p, 0.0) for p in PHASES},
            samples=self.samples + other.samples,
            workers=same(self.workers, other.workers),
            cpus_per_worker=same(self.cpus_per_worker, other.cpus_per_worker),
            gpus_per_worker=same(self.gpus_per_worker, other.gpus_per_worker),
            reserved_window_s=self.reserved_window_s + other.reserved_window_s,
            cpu_h_reserved=self.cpu_h_reserved + other.cpu_h_reserved,
            cpu_h_used=_sum_known(self.cpu_h_used, other.cpu_h_used),
            gpu_h_reserved=gpu_h,
            gpu_h_used=gpu_used,
            gpu_util=100.0 * gpu_used / gpu_h if gpu_used is not None and gpu_h else None,
            gpu_note=same(self.gpu_note, other.gpu_note),
            cpu_hour=same(self.cpu_hour, other.cpu_hour),
            gpu_hour=same(self.gpu_hour, other.gpu_hour),
            currency=self.currency,
            node_type=same(self.node_type, other.node_type),
            money_cpu=_sum_known(self.money_cpu, other.money_cpu),
            money_gpu=_sum_known(self.money_gpu, other.money_gpu),
            runs=self.runs + other.runs,
        )


def attempts_of(timing: dict[str, Any] | None, invocation: str) -> list[dict[str, Any]]:
    """This invocation's worker-group attempts from ``timing.json``, oldest first."""
    attempts = (timing or {}).get("attempts") or []
    mine = [a for a in attempts if isinstance(a, dict) and a.get("invocation") == invocation]
    return sorted(mine, key=lambda a: float(a.get("worker_started") or 0.0))


def _rows_of(rows: list[dict[str, Any]], attempt: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows an attempt wrote: rank 0's pid, at or after its start."""
    since = float(attempt.get("worker_started") or 0.0) - 1.0
    return [r for r in rows if r.get("pid") == attempt.get("pid") and r.get("time", 0) >= since]


def _num(row: dict[str, Any], key: str) -> float:
    value = row.get(key)
    return float(value) if isinstance(value, (int, float)) else 0.0


def run_cost(
    clock: RunClock,
    scaling: Any,
    cost_cfg: Any,
    rows: list[dict[str, Any]],
    timing: dict[str, Any] | None,
    *,
    now: float | None = None,
) -> RunCost:
    """The cost of one invocation from its clock, every row of ``metrics.jsonl``
    (``dedupe=False``) and ``timing.json``; ``scaling`` / ``cost_cfg`` are the config's
    sections."""
    end = time.time() if now is None else now
    fit_started = clock.fit_started if clock.fit_started is not None else end
    fit_ended = clock.fit_ended if clock.fit_ended is not None else end
    attempts = attempts_of(timing, clock.invocation)
    if attempts:
        mine = [r for a in attempts for r in _rows_of(rows, a)]
    else:
        mine = [r for r in rows if r.get("time", 0) >= fit_started]

    phases = dict.fromkeys(PHASES, 0.0)
    phases["startup_driver"] = max(0.0, fit_started - clock.process_started)
    first = attempts[0] if attempts else {}
    entered = first.get("worker_started")
    if entered is not None:
        phases["startup_workers"] = max(0.0, float(entered) - fit_started)
        if first.get("epochs_started") is not None:
            phases["startup_prepare"] = max(0.0, float(first["epochs_started"]) - float(entered))
    phases["training"] = sum(_num(r, "train_time_s") for r in mine)
    phases["validation"] = sum(_num(r, "val_time_s") for r in mine)
    phases["checkpointing"] = sum(_num(a, "checkpoint_s") for a in attempts)
    last_end = attempts[-1].get("loop_ended") if attempts else None
    if last_end is not None:
        phases["shutdown_workers"] = max(0.0, fit_ended - float(last_end))
    phases["shutdown_driver"] = max(0.0, end - fit_ended)
    wall = max(0.0, end - clock.process_started)
    phases["other"] = max(0.0, wall - sum(phases.values()))

    reserved_from = _reserved_from(attempts, fit_started)
    window = max(0.0, fit_ended - reserved_from)
    workers, cpus = int(scaling.num_workers), float(scaling.cpus_per_worker)
    gpus = float(scaling.gpus_per_worker) if scaling.use_gpu else 0.0
    cpu_h = workers * cpus * window / 3600
    gpu_h = workers * gpus * window / 3600

    used_s: float | None = 0.0
    for a in attempts:
        cpu_s = a.get("cpu_s")
        used_s = (used_s or 0.0) + (
            float(cpu_s) if cpu_s is not None else sum(_num(r, "cpu_s") for r in _rows_of(rows, a))
        )
    if not attempts:
        used_s = sum(_num(r, "cpu_s") for r in mine) if any("cpu_s" in r for r in mine) else None

    gpu_util, gpu_note = _gpu_util(attempts, mine, use_gpu=bool(scaling.use_gpu))
    prices = prices_for(cost_cfg)
    samples = sum(
        int(r["samples"])
        if isinstance(r.get("samples"), (int, float))
        else round(_num(r, "samples_per_s") * _num(r, "train_time_s"))
        for r in mine
    )
    return RunCost(
        wall_s=wall,
        phases=phases,
        samples=samples,
        workers=workers,
        cpus_per_worker=cpus,
        gpus_per_worker=gpus,
        reserved_window_s=window,
        cpu_h_reserved=cpu_h,
        cpu_h_used=used_s / 3600 if used_s is not None else None,
        gpu_h_reserved=gpu_h,
        gpu_h_used=gpu_h * gpu_util / 100 if gpu_util is not None else None,
        gpu_util=gpu_util,
        gpu_note=gpu_note,
        cpu_hour=prices.cpu_hour,
        gpu_hour=prices.gpu_hour,
        currency=prices.currency,
        node_type=prices.node_type,
        money_cpu=cpu_h * prices.cpu_hour if prices.cpu_hour is not None else None,
        money_gpu=gpu_h * prices.gpu_hour if prices.gpu_hour is not None and gpu_h else None,
        clock={
            "process_started": clock.process_started,
            "fit_started": clock.fit_started,
            "reserved_from": reserved_from,
            "fit_ended": clock.fit_ended,
            "ended": end,
        },
    )


def _reserved_from(attempts: list[dict[str, Any]], fit_started: float) -> float:
    """The first worker's start: its process's start (when Ray placed it), not before
    ``fit()`` (Ray may hand out a process it started earlier); else its entry into the
    training function; else ``fit()``'s start."""
    processes = [float(a["process_started"]) for a in attempts if a.get("process_started")]
    if processes:
        return max(fit_started, min(processes))
    entries = [float(a["worker_started"]) for a in attempts if a.get("worker_started")]
    return min(entries) if entries else fit_started


def _gpu_util(
    attempts: list[dict[str, Any]], rows: list[dict[str, Any]], *, use_gpu: bool
) -> tuple[float | None, str | None]:
    """The mean GPU utilisation (%) and, when there is none, why."""
    if not use_gpu:
        return None, "no GPU reserved (scaling.use_gpu=false)"
    values = [float(a["gpu_util"]) for a in attempts if a.get("gpu_util") is not None]
    if not values:
        values = [float(r["gpu_util"]) for r in rows if r.get("gpu_util") is not None]
    if values:
        return sum(values) / len(values), None
    notes = [str(a["gpu_note"]) for a in attempts if a.get("gpu_note")]
    return None, notes[0] if notes else "no utilisation sample was recorded"


def record_cost(
    run_dir: Any, cfg: Any, clock: RunClock, earlier: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The cost for ``result.json``: this invocation's, added to ``earlier`` (the cost a
    resumed run's ``result.json`` had); None when the run's files cannot give it."""
    from engine.errors import LeptonError
    from engine.runs.layout import read_json, read_metrics
    from engine.runs.storage import Location

    run_dir = Location.parse(run_dir)
    try:
        cost = run_cost(
            clock,
            cfg.scaling,
            cfg.cost,
            read_metrics(run_dir, dedupe=False),
            read_json(run_dir / TIMING_FILE),
        )
        if isinstance(earlier, dict):
            cost = RunCost.from_dict(earlier).add(cost)
    except (LeptonError, OSError, ValueError, TypeError, KeyError):  # the run's record counts
        return None
    return cost.as_dict()
