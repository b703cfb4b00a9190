"""The loop's side of a run's speed and cost (:mod:`engine.runs.cost` has the definitions).

:class:`LoopTiming` lives on every rank for one worker-group attempt. It adds the epoch's
timings to the row (``train_time_s``, ``val_time_s``, ``cpu_s`` summed over ranks,
``samples`` over ranks, ``gpu_util`` averaged over ranks) and has rank 0 record the
attempt in ``timing.json``: once when the first epoch begins (the first worker's start,
the first worker process's start, rank 0's start of the epochs) and once at the end (the checkpointing total, the CPU
seconds of all ranks, the mean GPU utilisation). The CPU and GPU readings are the
workers' own: ``getrusage`` and ``torch.cuda.utilization()``.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import torch

from engine.runs.clock import process_start_time
from engine.runs.cost import TIMING_FILE
from engine.runs.layout import read_json, write_json_atomic
from engine.runs.storage import Location, first_line
from engine.train.worker_context import WorkerContext

#: Seconds between two GPU utilisation samples.
GPU_SAMPLE_S = 1.0


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its ended, waited-for children."""
    try:
        import resource
    except ImportError:  # not on Unix
        return time.process_time()
    me, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


class GpuSampler:
    """``torch.cuda.utilization()`` of this rank's GPU, sampled from a daemon thread.

    ``note`` says why there are no samples (not a CUDA device; pynvml missing: the call
    needs it). The reading is the whole device's, whoever else uses it.
    """

    def __init__(self, device: torch.device, every_s: float = GPU_SAMPLE_S) -> None:
        self.device, self.every_s = device, every_s
        self.note: str | None = None
        self._epoch: list[float] = []
        self._all: list[float] = []
        self._stop = threading.Event()
        if device.type != "cuda":
            self.note = f"not a CUDA device ({device.type})"
            return
        if self._sample() is None:
            return
        threading.Thread(target=self._run, name="lepton-gpu-util", daemon=True).start()

    def _sample(self) -> float | None:
        try:
            value = float(torch.cuda.utilization(self.device))
        except Exception as exc:  # ModuleNotFoundError (pynvml), NVML errors
            self.note = f"torch.cuda.utilization() failed: {first_line(exc)}"
            return None
        self._epoch.append(value)
        self._all.append(value)
        return value

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            if self._sample() is None:
                return

    def take_epoch(self) -> float | None:
        """The mean since the last call (None without samples)."""
        samples, self._epoch = self._epoch, []
        return sum(samples) / len(samples) if samples else None

    def overall(self) -> float | None:
        return sum(self._all) / len(self._all) if self._all else None

    def stop(self) -> None:
        self._stop.set()


class LoopTiming:
    """One attempt's timings on one rank; every method is called on every rank."""

    def __init__(self, run_dir: str, ctx: WorkerContext, invocation: str | None) -> None:
        self.run_dir, self.ctx, self.invocation = run_dir, ctx, invocation
        self.started = time.time()
        self.process_started = process_start_time()  # Ray's worker process, on Linux
        self._cpu_started = cpu_seconds()
        self._epoch_cpu = self._cpu_started
        self.checkpoint_s = 0.0
        self.loop_ended: float | None = None
        self.gpu = GpuSampler(ctx.device)
        self._record: dict[str, Any] = {}

    def epochs_begin(self, start_epoch: int) -> None:
        """After preparing: rank 0 records the attempt (the first rank's start)."""
        starts = self.ctx.all_gather_object((self.started, self.process_started))
        processes = [float(p) for _, p in starts if p is not None]
        self._epoch_cpu = cpu_seconds()
        self.gpu.take_epoch()
        if self.ctx.is_rank_zero:
            self._record = {
                "id": f"{os.getpid()}-{self.started:.6f}",
                "invocation": self.invocation,
                "pid": os.getpid(),
                "world_size": self.ctx.world_size,
                "start_epoch": start_epoch,
                "worker_started": min(float(s) for s, _ in starts),
                "process_started": min(processes) if processes else None,
                "epochs_started": time.time(),
                "loop_ended": None,
                "cpu_s": None,
                "checkpoint_s": None,
                "gpu_util": None,
                "gpu_note": self.gpu.note,
            }
            self._write()

    def epoch_keys(self, samples: int, train_time: float, val_time: float) -> dict[str, Any]:
        """The row's timing keys for the epoch just validated (a collective)."""
        now_cpu = cpu_seconds()
        cpu, self._epoch_cpu = now_cpu - self._epoch_cpu, now_cpu
        n = self.ctx.world_size
        utils = [u for u in self.ctx.all_gather_object(self.gpu.take_epoch()) if u is not None]
        keys = {
            "train_time_s": train_time,
            "val_time_s": val_time,
            "cpu_s": self.ctx.all_reduce_mean(cpu) * n,
            "samples": round(self.ctx.all_reduce_mean(float(samples)) * n),
        }
        if utils:  # GPU workers with pynvml only
            keys["gpu_util"] = sum(utils) / len(utils)
        return keys

    def checkpointed(self, seconds: float) -> None:
        self.checkpoint_s += seconds

    def epochs_end(self) -> None:
        self.loop_ended = time.time()

    def finish(self) -> None:
        """At the very end: the CPU seconds of every rank; rank 0 completes the record."""
        self.gpu.stop()
        cpu = self.ctx.all_reduce_mean(cpu_seconds() - self._cpu_started) * self.ctx.world_size
        utils = [u for u in self.ctx.all_gather_object(self.gpu.overall()) if u is not None]
        if self.ctx.is_rank_zero and self._record:
            self._record.update(
                loop_ended=self.loop_ended,
                ended=time.time(),
                cpu_s=cpu,
                checkpoint_s=self.checkpoint_s,
                gpu_util=sum(utils) / len(utils) if utils else None,
                gpu_note=self.gpu.note,
            )
            self._write()

    def _write(self) -> None:
        """Rank 0: this attempt's record into ``timing.json`` beside the earlier ones."""
        path = Location.parse(self.run_dir) / TIMING_FILE
        attempts = [
            a
            for a in (read_json(path) or {}).get("attempts", [])
            if isinstance(a, dict) and a.get("id") != self._record["id"]
        ]
        write_json_atomic(path, {"attempts": [*attempts, self._record]})
