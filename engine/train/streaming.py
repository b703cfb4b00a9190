"""Training data streamed through Ray Data (``task.data.streaming=true``).

The driver builds the task's :class:`~engine.task.StreamingData` once, inside the Ray
cluster (:func:`build_streams`), and hands its datasets to the ``TorchTrainer``
(``datasets=``, with :func:`data_config`); the workers get a :class:`StreamPlan` (what
they need besides the datasets: artifacts, the batch conversion, row counts) through
the ``LoopSpec`` and read their shards as loaders the loop iterates like a
``DataLoader`` (:func:`stream_loaders`).

- **train** is split across the workers by Ray Train (``streaming_split(equal=True)``:
  every rank gets the same number of rows, so DDP's steps match; up to
  ``world_size - 1`` rows of an epoch are left out to even the shards).
- **val** is not split: rank 0 reads it whole and the other ranks none, and the task's
  torchmetrics sync on ``compute`` as for map-style data. Ray Train's split is the
  equal one, which would drop rows, so splitting validation would not count every
  sample exactly once; reading it whole on one rank does.
- An **epoch** is one pass over the train shard; its preprocessing (``map_batches``)
  runs again, on the cluster's CPUs, each epoch. Resuming restarts the current epoch
  from its beginning: a stream has no position to save, and exactly-once within an
  epoch is not promised.

Not streamed yet: ``scaling=inprocess``, ``lepton tune``. ``lepton evaluate`` streams
through :mod:`engine.inference.evaluate_data`, ``lepton predict`` to Parquet through
:mod:`engine.inference.predict_table`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from engine.errors import ConfigError
from engine.task import StreamingData, TaskInfo, wants_streaming

#: The names the datasets have in Ray Train (``get_dataset_shard(name)``).
TRAIN, VAL = "train", "val"


@dataclass
class StreamPlan:
    """What a worker needs of the streaming data besides the datasets (picklable)."""

    artifacts: dict[str, Any]
    to_batch: Callable[[dict[str, Any]], Any]
    train_rows: int
    val_rows: int
    shuffle_buffer: int = 0
    seed: int = 0

    def train_steps(self, world_size: int, batch_size: int) -> int:
        """Batches per epoch on each rank: the equal split gives every rank
        ``train_rows // world_size`` rows."""
        rows = self.train_rows // max(1, world_size)
        return max(1, -(-rows // batch_size))


def refuse_streaming(where: str, hint: str) -> ConfigError:
    return ConfigError(
        f"task.data.streaming=true is not supported {where}: streamed data is read "
        "through Ray Train's dataset shards.",
        hint=hint,
    )


def build_streams(info: TaskInfo, task_cfg: Any, seed: int) -> tuple[dict[str, Any], StreamPlan]:
    """The task's streaming datasets (by Ray Train name) and the workers' plan; in the
    driver, with Ray initialised."""
    data: Any = info.task.build_data(task_cfg, seed=seed)
    if not isinstance(data, StreamingData):
        raise ConfigError(
            f"task.data.streaming=true, but task {info.name!r} returned "
            f"{type(data).__name__} from build_data, not engine.task.StreamingData.",
            hint="This task does not stream its data: drop task.data.streaming.",
        )
    for ds in (data.train, data.val):
        _quiet(ds)
    train_rows = data.train_rows if data.train_rows is not None else int(data.train.count())
    val_rows = data.val_rows if data.val_rows is not None else int(data.val.count())
    train, val = cached(data.train, data.train_bytes, seed), cached(data.val, data.val_bytes)
    plan = StreamPlan(
        artifacts=dict(data.artifacts),
        to_batch=data.to_batch,
        train_rows=train_rows,
        val_rows=val_rows,
        shuffle_buffer=int(data.shuffle_buffer),
        seed=seed,
    )
    return {TRAIN: train, VAL: val}, plan


#: The share of the cluster's object store a split may take to be kept there once
#: preprocessed (:func:`cached`).
CACHE_SHARE = 0.25


def cached(ds: Any, size: int | None, seed: int | None = None) -> Any:
    """``ds`` preprocessed once and kept in the object store, when the task says its
    preprocessing is deterministic (``size`` given) and the result fits
    :data:`CACHE_SHARE` of the store: epochs then read the cached blocks instead of
    reading and preprocessing again (a set that fits in memory streams as fast as it
    loads map-style; a larger one streams). Train blocks are read in a new seeded order
    each epoch (``seed``), on top of the workers' local shuffle."""
    import logging

    import ray
    from ray.data import RandomSeedConfig

    store = float(ray.cluster_resources().get("object_store_memory", 0.0))
    if size is None or size > CACHE_SHARE * store:
        return ds
    logging.getLogger(__name__).info(
        "caching a split of %.1f MiB in the object store (%.0f MiB)", size / 2**20, store / 2**20
    )
    kept = ds.materialize()
    _quiet(kept)
    if seed is None:
        return kept
    return kept.randomize_block_order(seed=RandomSeedConfig(seed=seed, reseed_after_execution=True))


#: CPUs a streaming run leaves free for Ray Data's read and ``map_batches`` tasks
#: (each takes one CPU by default: with none free they never start, and training waits).
DATA_CPUS = 1.0


def check_room_for_data(scaling: Any, res: Any) -> None:
    """Refuse a streaming run whose workers would take every CPU of the cluster."""
    from engine.errors import ClusterError

    taken = scaling.num_workers * scaling.cpus_per_worker
    if res.total_cpus - taken < DATA_CPUS:
        raise ClusterError(
            f"task.data.streaming=true: the {scaling.num_workers} worker(s) take "
            f"{taken:g} of the cluster's {res.total_cpus:g} CPUs, leaving fewer than "
            f"{DATA_CPUS:g} for Ray Data to read and preprocess with.",
            hint="Lower scaling.num_workers or scaling.cpus_per_worker (fractions are "
            "allowed: 0.5), or run on a larger cluster (ray.address=...).",
        )


def _quiet(ds: Any) -> None:
    """No progress bars or start-of-execution lines from a dataset's executions: they run
    on the workers every epoch, and Ray forwards their output to the driver's terminal
    between the epoch lines (Ray Data's own log file keeps the details)."""
    context = getattr(ds, "context", None)
    if context is not None:
        context.enable_progress_bars = False
        context.print_on_execution_start = False


def data_config() -> Any:
    """Ray Train's ``DataConfig``: train split across workers, validation not (see above)."""
    from ray.train import DataConfig

    return DataConfig(datasets_to_split=[TRAIN])


#: Rows fetched from Ray Data per ``iter_torch_batches`` batch, split into training
#: batches on the worker: Ray Data's per-batch cost (the local shuffle buffer, the
#: conversion to tensors) is about 1.5 ms whatever the batch size, as long as a step of
#: batch 32 on half a CPU; fetching 256 rows at a time cuts it about fivefold.
FETCH_ROWS = 256


def fetch_rows(batch_size: int, shuffle_buffer: int = 0) -> int:
    """Rows per fetch: a whole number of batches near :data:`FETCH_ROWS`, never more than
    the shuffle buffer holds (when there is one), at least one batch."""
    batches = max(1, FETCH_ROWS // batch_size)
    if shuffle_buffer:
        batches = max(1, min(batches, shuffle_buffer // batch_size))
    return batches * batch_size


def _rows(batch: dict[str, Any]) -> int:
    return len(next(iter(batch.values()))) if batch else 0


def _concat(pieces: list[dict[str, Any]]) -> dict[str, Any]:
    import numpy as np
    import torch

    if len(pieces) == 1:
        return pieces[0]
    out: dict[str, Any] = {}
    for key, first in pieces[0].items():
        parts = [p[key] for p in pieces]
        if isinstance(first, torch.Tensor):
            out[key] = torch.cat(parts)
        elif isinstance(first, np.ndarray):
            out[key] = np.concatenate(parts)
        else:
            out[key] = [x for part in parts for x in part]
    return out


def rebatch(fetched: Iterator[dict[str, Any]], size: int) -> Iterator[dict[str, Any]]:
    """Batches of exactly ``size`` rows (the last one may be shorter) from fetched batches
    of any size: Ray Data's local shuffle buffer yields some short batches mid-epoch, and
    a step's batch must not depend on where blocks end."""
    pending: list[dict[str, Any]] = []
    rows = 0
    for batch in fetched:
        pending.append(batch)
        rows += _rows(batch)
        if rows < size:
            continue
        whole = _concat(pending)
        cut = rows - rows % size
        for start in range(0, cut, size):
            yield {k: v[start : start + size] for k, v in whole.items()}
        pending = [{k: v[cut:] for k, v in whole.items()}] if cut < rows else []
        rows -= cut
    if rows:
        yield _concat(pending)


class StreamLoader:
    """One rank's batches of a Ray Data shard, iterated as the loop iterates a
    ``DataLoader``: ``len`` is the number of batches per epoch, ``set_epoch`` picks the
    epoch's local shuffle (as a ``DistributedSampler``'s does)."""

    def __init__(
        self,
        shard: Any,
        *,
        batch_size: int,
        to_batch: Callable[[dict[str, Any]], Any],
        steps: int,
        shuffle_buffer: int = 0,
        seed: int = 0,
        device: Any = "auto",
    ) -> None:
        self.shard, self.batch_size, self.to_batch = shard, batch_size, to_batch
        self.steps, self.shuffle_buffer, self.seed = steps, shuffle_buffer, seed
        self.device = device
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[Any]:
        if self.shard is None:  # a rank that reads nothing of this split
            return
        shuffle: dict[str, Any] = {}
        if self.shuffle_buffer:
            shuffle = {
                "local_shuffle_buffer_size": self.shuffle_buffer,
                "local_shuffle_seed": self.seed + 1_000_003 * self.epoch,
            }
        fetched = self.shard.iter_torch_batches(
            batch_size=fetch_rows(self.batch_size, self.shuffle_buffer),
            device=self.device,
            **shuffle,
        )
        for batch in rebatch(fetched, self.batch_size):
            yield self.to_batch(batch)


def stream_loaders(
    plan: StreamPlan, ctx: Any, batch_size: int
) -> tuple[StreamLoader, StreamLoader]:
    """This rank's train and validation loaders over its dataset shards."""
    rank, world = ctx.world_rank, ctx.world_size
    train = StreamLoader(
        ctx.dataset_shard(TRAIN),
        batch_size=batch_size,
        to_batch=plan.to_batch,
        steps=plan.train_steps(world, batch_size),
        shuffle_buffer=plan.shuffle_buffer,
        seed=plan.seed + rank,
    )
    val = StreamLoader(
        ctx.dataset_shard(VAL) if rank == 0 else None,
        batch_size=batch_size,
        to_batch=plan.to_batch,
        steps=-(-plan.val_rows // batch_size) if rank == 0 else 0,
    )
    return train, val


def check_streaming_path(task_cfg: Any, plan: StreamPlan | None) -> None:
    """Refuse a streaming config on a path that was given no datasets (a one-worker
    sweep trial, a loop run without Ray Train)."""
    if plan is None and wants_streaming(task_cfg):
        raise refuse_streaming(
            "here (a one-worker lepton tune trial, or a loop run without Ray Train)",
            hint="Train with `lepton train` on Ray (scaling=local or a cluster), or drop "
            "task.data.streaming.",
        )
