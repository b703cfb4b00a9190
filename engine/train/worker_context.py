"""Where the per-worker loop runs: inside Ray Train, or in this process.

The loop talks to a :class:`WorkerContext` only, so the same code trains on a Ray
Train worker (:class:`RayContext`) and in a plain process for unit tests and
debugging (:class:`LocalContext`).
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from engine.runs.storage import Location


class WorkerContext:
    world_rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    node_id: str = "local"
    #: Whether the loop prints each epoch row itself (the Ray driver prints them instead).
    prints_rows: bool = True

    @property
    def device(self) -> torch.device:
        raise NotImplementedError

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        raise NotImplementedError

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        """Every rank calls this once per epoch (a barrier under Ray Train)."""
        raise NotImplementedError

    @contextmanager
    def restored_checkpoint(self) -> Iterator[Path | None]:
        """The checkpoint this worker group was (re)started from, if any."""
        yield None

    def all_reduce_mean(self, value: float) -> float:
        return value

    def dataset_shard(self, name: str) -> Any:
        """This rank's ``DataIterator`` of the dataset ``name`` given to Ray Train
        (streamed data: :mod:`engine.train.streaming`); none outside Ray Train."""
        raise NotImplementedError("streamed datasets are read only on Ray Train workers")

    def all_gather_object(self, obj: Any) -> list[Any]:
        return [obj]

    @property
    def is_rank_zero(self) -> bool:
        return self.world_rank == 0


class LocalContext(WorkerContext):
    """One process, no Ray: checkpoints are copied into ``run_dir`` as Ray would, under
    Ray's kind of name (``checkpoint_<local date>_<time>.<µs>``), visible only once whole.

    ``prints_rows``: whether the loop prints each epoch's line itself (False where a
    driver follows the run, as ``scaling=inprocess`` does). Temporary checkpoint dirs
    are named after the run (see :func:`remove_orphan_checkpoint_dirs`).
    """

    def __init__(
        self, run_dir: str | Path, device: str = "cpu", *, prints_rows: bool = True
    ) -> None:
        from engine.runs.storage import Location

        self.run_dir = Location.parse(run_dir)
        self._device = torch.device(device)
        self.prints_rows = prints_rows
        self.reports: list[dict[str, Any]] = []
        _tag_checkpoint_dirs(self.run_dir.name)

    @property
    def device(self) -> torch.device:
        return self._device

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self._device)

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        if checkpoint_dir is not None:
            dest = self._new_checkpoint()
            if dest.is_local:
                # Hidden (not checkpoint_*) until renamed: never listed while partial.
                tmp = dest.local_path.with_name(f".{dest.name}.partial")
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.copytree(checkpoint_dir, tmp)
                tmp.rename(dest.local_path)  # visible only once whole
            else:  # like Ray: file by file; task.json's size list tells whole from cut short
                dest.upload(Path(checkpoint_dir))
            metrics = {**metrics, "checkpoint": str(dest)}
        self.reports.append(metrics)

    def _new_checkpoint(self) -> Location:
        """A checkpoint name not yet in the run, as Ray Train makes them."""
        while True:
            stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S.%f")
            dest = self.run_dir / f"checkpoint_{stamp}"
            if not dest.exists():
                return dest
            time.sleep(1e-6)


class RayContext(WorkerContext):
    """Inside a Ray Train worker (Train V2 API)."""

    prints_rows = False

    def __init__(self) -> None:
        import ray
        import ray.train

        from engine.train.orphan_guard import exit_with_raylet

        exit_with_raylet()  # no rows or checkpoints from a worker whose cluster is gone
        _quiet_report_log()
        ctx = ray.train.get_context()
        _tag_checkpoint_dirs(ctx.get_experiment_name())  # the run's name (RunConfig.name)
        self.world_rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        self.local_rank = ctx.get_local_rank()
        self.node_id = ray.get_runtime_context().get_node_id()

    @property
    def device(self) -> torch.device:
        import ray.train.torch

        return ray.train.torch.get_device()

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)

    @contextmanager
    def restored_checkpoint(self) -> Iterator[Path | None]:
        import ray.train

        with checkpoint_as_dir(ray.train.get_checkpoint()) as path:
            yield path

    def dataset_shard(self, name: str) -> Any:
        import ray.train

        return ray.train.get_dataset_shard(name)

    def all_reduce_mean(self, value: float) -> float:
        import torch.distributed as dist

        if self.world_size == 1 or not dist.is_initialized():
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def all_gather_object(self, obj: Any) -> list[Any]:
        import torch.distributed as dist

        if self.world_size == 1 or not dist.is_initialized():
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered


#: The one private Ray name the engine depends on (see :func:`_quiet_report_log`).
_RAY_REPORT_LOG_MODULE = "ray.train.v2._internal.execution.context"


def _quiet_report_log() -> None:
    """Keep only the warnings of the log line Ray Train writes on every ``report``.

    No public API reaches it: ``ray.train.LoggingConfig(log_level=...)`` filters the
    handlers of the ``ray.train`` logger tree, but that module logs through
    ``logging.getLogger(__file__)`` (a logger named after its file path, outside the
    tree, so its name differs per install) and no setting or environment variable
    quiets it. So the logger is taken from the module itself, already loaded on a Ray
    Train worker and looked up by name; a Ray without it simply stays verbose.
    """
    try:
        module = importlib.import_module(_RAY_REPORT_LOG_MODULE)
    except ImportError:
        return
    logger = getattr(module, "logger", None)
    if isinstance(logger, logging.Logger) and _warnings_only not in logger.filters:
        logger.addFilter(_warnings_only)


def _warnings_only(record: Any) -> bool:
    return bool(record.levelno >= logging.WARNING)


#: Temporary checkpoint dirs are ``lepton-ckpt-<run>-<pid>-<random>`` in the temp dir.
CHECKPOINT_TMP_PREFIX = "lepton-ckpt-"
_run_tag = "local"


def _tag_checkpoint_dirs(run_name: str) -> None:
    """Name this worker's temporary checkpoint dirs after its run (set once per worker)."""
    global _run_tag
    _run_tag = _safe_tag(run_name)


def _safe_tag(run_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", run_name)[:80] or "run"


@contextmanager
def checkpoint_as_dir(checkpoint: Any | None) -> Iterator[Path | None]:
    """A Ray checkpoint (Train's or Tune's) as a local directory for the block; None for none."""
    if checkpoint is None:
        yield None
        return
    with checkpoint.as_directory() as path:
        yield Path(path)


@contextmanager
def temporary_checkpoint_dir() -> Iterator[str]:
    """A temp dir for one checkpoint, removed afterwards.

    A worker killed hard (the driver interrupted, the worker group torn down) never
    runs the ``finally``, and the dir is as large as the model; its name carries the
    run and the creating process, so :func:`remove_orphan_checkpoint_dirs` can find it.
    """
    path = tempfile.mkdtemp(prefix=f"{CHECKPOINT_TMP_PREFIX}{_run_tag}-{os.getpid()}-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def remove_orphan_checkpoint_dirs(
    run_name: str,
    temp_dir: str | Path | None = None,
    *,
    wait_s: float = 0.0,
    ended: Collection[int] = (),
) -> list[Path]:
    """Remove the temporary checkpoint dirs of ``run_name`` whose process is gone.

    Only dirs of this run's name, and only those whose creating process no longer runs
    on this machine: a live worker (of this run on a shared cluster, or another run of
    the same name elsewhere) keeps its dir. ``wait_s``: how long to wait for such a
    process to end first (the driver has just stopped its workers, which a loaded
    machine may take a few seconds to reap). ``ended``: live processes known to be done
    with their dirs (this one, after its in-process run). Returns the dirs removed.
    """
    root = Path(temp_dir or tempfile.gettempdir())
    pattern = re.compile(
        re.escape(f"{CHECKPOINT_TMP_PREFIX}{_safe_tag(run_name)}-") + r"(\d+)-[^-]+"
    )
    pending: dict[Path, int] = {}
    with contextlib.suppress(OSError):
        for path in root.iterdir():
            match = pattern.fullmatch(path.name)
            if match and path.is_dir():
                pending[path] = int(match.group(1))
    removed = []
    deadline = time.monotonic() + wait_s
    while pending:
        for path, pid in list(pending.items()):
            if pid in ended or not _process_alive(pid):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
                del pending[path]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True
