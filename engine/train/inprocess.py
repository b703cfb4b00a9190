"""``scaling=inprocess``: a run's loop in the ``lepton`` process itself, without Ray.

For quick local runs and debugging (as Ludwig's local backend is used): no cluster, no
worker processes, no ``import ray`` at all. :func:`run_in_process` takes the place of
the Ray cluster, ``build_trainer`` and ``fit()`` in :func:`engine.train.driver.train`;
everything around it is the driver's own, so a run gets the same run directory
(``config.yaml``, ``metrics.jsonl``, ``timing.json``, ``workers.json``, ``result.json``,
``report.md``, the cost section), the same epoch lines, the run lock, the same records
for a failure or a signal, and ``resume=true``.

What Ray Train does for a run, and how it is done here:

- **the worker**: one, this process, through :class:`InProcessContext` (a
  :class:`~engine.train.worker_context.LocalContext`). torch gets
  ``scaling.cpus_per_worker`` threads (a whole number: the schema checks it), restored
  afterwards; ``scaling.use_gpu`` trains on this process's current CUDA device.
  :func:`check_machine` refuses, before the run is written, what this machine cannot
  give (more CPUs than it has, a GPU without CUDA).
- **checkpoints**: written to a temporary dir, copied into the run under a hidden
  name and renamed into place (visible only once whole), named as Ray names them
  (``checkpoint_<date>_<time>.<µs>``); after each one :func:`prune_checkpoints` applies
  ``trainer.keep_checkpoints`` as Ray's ``CheckpointConfig(num_to_keep, score
  attribute, order)`` does (:func:`checkpoints_to_delete`).
- **failures**: up to ``trainer.max_failures`` restarts of the loop from the newest
  whole checkpoint (-1: no limit), for errors other than a ``LeptonError`` (a user's
  mistake, the same on every attempt); the last error goes to the driver, which maps it
  as it maps a Ray worker's. Its traceback is printed on stderr and kept in
  ``<run>/traceback.txt`` (a Ray run keeps its workers' logs in ``<run>/ray-logs/``).
- **signals**: the loop runs on the main thread, where the driver's armed
  :class:`~engine.train.interrupts.InterruptGuard` raises ``Interrupt`` wherever it is;
  the loop's own ``finally`` blocks remove its temporary checkpoint dir on the way out
  (:mod:`~engine.train.inprocess_signals`: the places that would drop it, forks and
  DataLoader workers).
- **reserved CPUs** (the cost section): ``cpus_per_worker`` (the torch threads) from
  the loop's start to its end, as a Ray worker's reservation runs from its process's
  start to the end of ``fit()``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import torch

from engine.config.schema import LeptonConfig, ScalingConfig
from engine.errors import ClusterError, LeptonError
from engine.runs.checkpoint import META_FILE
from engine.runs.clock import RunClock
from engine.runs.layout import checkpoints
from engine.runs.storage import Location, first_line
from engine.train.inprocess_signals import InProcessSignals
from engine.train.interrupts import InterruptGuard
from engine.train.loop import LoopSpec, run_loop
from engine.train.worker_context import LocalContext

#: A failed in-process run's traceback, in its run directory.
TRACEBACK_FILE = "traceback.txt"
#: Hidden names for a checkpoint being copied in (``.partial``) or removed (``.deleting``).
_HIDDEN_SUFFIXES = (".partial", ".deleting")


def checkpoints_to_delete(found: Sequence[tuple[str, Any]], keep: int, mode: str) -> list[str]:
    """The checkpoints that ``trainer.keep_checkpoints=keep`` removes, by name.

    ``found``: every whole checkpoint of the run as ``(name, score)``, oldest first (as
    :func:`engine.runs.layout.checkpoints` lists them); ``score`` is its value of the
    run's checkpoint metric (None when it has none). The rule is Ray Train's
    (``_CheckpointManager`` with ``CheckpointConfig(num_to_keep, checkpoint_score_attribute,
    checkpoint_score_order)``): rank by score, best last, for ``mode`` ``max`` or ``min``
    (NaN below everything, a missing or non-numeric score just above NaN; equal scores
    rank the newer higher); delete all but the best ``keep``, except the newest
    checkpoint, which is always kept: it is the one ``resume=true`` continues from.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep}")
    if len(found) <= keep:
        return []
    sign = 1.0 if mode == "max" else -1.0

    def rank(item: tuple[int, tuple[str, Any]]) -> tuple[int, float, int]:
        index, (_, score) = item
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            return (1, 0.0, index)
        if math.isnan(score):
            return (0, 0.0, index)
        return (2, sign * float(score), index)

    ranked = sorted(enumerate(found), key=rank)  # worst first
    newest = len(found) - 1
    return [name for index, (name, _) in ranked[:-keep] if index != newest]


def prune_checkpoints(run_dir: Location, keep: int, metric: str, mode: str) -> list[str]:
    """Apply :func:`checkpoints_to_delete` to the run's whole checkpoints (this
    invocation's and earlier ones'); returns the names removed."""
    found = []
    for path in checkpoints(run_dir):
        meta = _read_meta(path)
        found.append((path.name, (meta.get("metrics") or {}).get(metric)))
    doomed = checkpoints_to_delete(found, keep, mode)
    for name in doomed:
        _remove_checkpoint(run_dir / name)
    return doomed


def _read_meta(path: Location) -> dict[str, Any]:
    data = json.loads((path / META_FILE).read_text())
    return data if isinstance(data, dict) else {}


def _remove_checkpoint(path: Location) -> None:
    """Remove a checkpoint so that no reader ever sees part of it as a whole one."""
    if path.is_local:
        hidden = path.local_path.with_name(f".{path.name}.deleting")
        os.rename(path.local_path, hidden)  # gone from the listing at once
        shutil.rmtree(hidden, ignore_errors=True)
    else:  # without task.json it is not whole (engine.runs.checkpoint.is_complete)
        (path / META_FILE).delete_file()
        path.delete_tree()


def remove_hidden_leftovers(run_dir: Location) -> None:
    """Checkpoints cut short while being copied in or removed (a signal, a crash)."""
    if not run_dir.is_local or not run_dir.local_path.is_dir():
        return
    for path in run_dir.local_path.iterdir():
        if path.name.startswith(".checkpoint_") and path.name.endswith(_HIDDEN_SUFFIXES):
            shutil.rmtree(path, ignore_errors=True)


class InProcessContext(LocalContext):
    """This process as the run's one worker; checkpoints kept as ``keep_checkpoints`` says.

    The epoch lines are the driver's (:class:`~engine.train.progress.DriverProgress`),
    as in a Ray run, so the loop prints none itself.
    """

    def __init__(
        self, run_dir: str | Location, device: torch.device, *, keep: int, metric: str, mode: str
    ) -> None:
        super().__init__(str(run_dir), device=str(device), prints_rows=False)
        self.keep, self.metric, self.mode = keep, metric, mode

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        super().report(metrics, checkpoint_dir)
        if checkpoint_dir is not None:
            prune_checkpoints(self.run_dir, self.keep, self.metric, self.mode)


def threads_for(scaling: ScalingConfig) -> int:
    """The torch threads of an in-process run: ``scaling.cpus_per_worker``, at least 1."""
    return max(1, int(scaling.cpus_per_worker))


def machine_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def check_machine(scaling: ScalingConfig) -> None:
    """Refuse what this machine cannot give the run (as ``check_fits`` does on Ray)."""
    cpus, threads = machine_cpus(), threads_for(scaling)
    if threads > cpus:
        raise ClusterError(
            f"scaling.cpus_per_worker={threads} but this machine has {cpus} CPUs "
            "(scaling.in_process=true trains in this process).",
            hint=f"Use scaling.cpus_per_worker={cpus} or fewer.",
        )
    device_for(scaling)


def device_for(scaling: ScalingConfig) -> torch.device:
    """CPU, or with ``scaling.use_gpu`` this process's current CUDA device."""
    if not scaling.use_gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        why = (
            f"this torch ({torch.__version__}) is built without CUDA"
            if torch.version.cuda is None
            else f"torch (CUDA {torch.version.cuda}) sees no CUDA device"
        )
        raise ClusterError(
            f"scaling.use_gpu=true but CUDA is not available to this process: {why}.",
            hint="Set scaling.use_gpu=false, or run on a machine with a CUDA GPU "
            "(check nvidia-smi and CUDA_VISIBLE_DEVICES).",
        )
    count = torch.cuda.device_count()
    if scaling.gpus_per_worker > count:
        raise ClusterError(
            f"scaling.gpus_per_worker={scaling.gpus_per_worker:g} but this machine has "
            f"{count} CUDA device(s).",
            hint=f"Use scaling.gpus_per_worker={count} or fewer.",
        )
    return torch.device("cuda", torch.cuda.current_device())


def run_in_process(
    spec: LoopSpec,
    run_dir: Location,
    *,
    guard: InterruptGuard,
    clock: RunClock,
    echo: Callable[[str], None] = print,
) -> None:
    """The run's loop in this process, where Ray runs ``fit()``: the driver's
    ``DriverProgress`` prints the epoch lines, ``clock`` gets the loop's start and end,
    and ``guard`` (armed by the driver) stops the loop at the first signal."""
    from engine.train.progress import DriverProgress

    cfg = spec.config
    ctx = InProcessContext(
        run_dir,
        device_for(cfg.scaling),
        keep=cfg.trainer.keep_checkpoints,
        metric=spec.metric,
        mode=spec.mode,
    )
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads_for(cfg.scaling))  # the loop's prepare() sets it too
    remove_hidden_leftovers(run_dir)
    try:
        with (
            InProcessSignals(guard) as signals,
            DriverProgress(run_dir, cfg.trainer.epochs, echo=echo),
        ):
            spec = dataclasses.replace(spec, callbacks=[*spec.callbacks, signals.callback()])
            clock.fit_started = time.time()
            _attempts(spec, ctx)
            signals.check()  # a signal whose Interrupt went astray
            clock.fit_ended = time.time()
            guard.finished = True  # a signal from now on is only noted: the run is done
    finally:
        torch.set_num_threads(threads_before)
        remove_hidden_leftovers(run_dir)


def _attempts(spec: LoopSpec, ctx: InProcessContext) -> None:
    """Run the loop; after a failure, again from the newest whole checkpoint, up to
    ``trainer.max_failures`` times (as Ray Train restarts its worker group)."""
    limit = spec.config.trainer.max_failures
    failures = 0
    attempt = spec
    while True:
        try:
            run_loop(attempt, ctx)
            return
        except LeptonError:
            raise
        except Exception as exc:
            if limit != -1 and failures >= limit:
                _keep_traceback(Location.parse(spec.run_dir), exc)
                raise
            failures += 1
            of = "no limit" if limit == -1 else f"{failures} of {limit}"
            print(
                f"lepton: training failed ({type(exc).__name__}: {first_line(exc)}); "
                f"restarting from the newest checkpoint (retry {of})",
                file=sys.stderr,
                flush=True,
            )
            attempt = dataclasses.replace(spec, config=_resuming(spec.config))


def _resuming(cfg: LeptonConfig) -> LeptonConfig:
    return dataclasses.replace(cfg, resume=True)


def _keep_traceback(run_dir: Location, exc: BaseException) -> None:
    """The error's traceback on stderr and in ``<run>/traceback.txt``."""
    text = "".join(traceback.format_exception(exc))
    sys.stderr.write(text)
    sys.stderr.flush()
    with contextlib.suppress(LeptonError, OSError):
        (run_dir / TRACEBACK_FILE).write_text(text)


__all__ = [
    "TRACEBACK_FILE",
    "InProcessContext",
    "check_machine",
    "checkpoints_to_delete",
    "device_for",
    "prune_checkpoints",
    "run_in_process",
    "threads_for",
]
