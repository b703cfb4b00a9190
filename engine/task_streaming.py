"""The streaming side of the task contract (re-exported by :mod:`engine.task`, where
:class:`engine.task.TaskFeatures` detects the optional method): what ``build_data``
returns when a config streams, and how ``lepton predict`` feeds a task from a table
streamed through Ray Data (docs/architecture.md, *Streaming with Ray Data*)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "ID_COLUMN",
    "ReadsRows",
    "StreamingData",
    "column_of",
    "row_ids",
    "wants_streaming",
    "without_streaming",
]


@dataclass
class StreamingData:
    """What ``Task.build_data`` returns when its config says ``task.data.streaming=true``:
    the data as Ray Data datasets, read and preprocessed on the cluster's CPUs instead
    of held whole by every worker (docs/architecture.md, *Streaming with Ray Data*).

    Built once, in the driver of ``lepton train`` (inside the Ray cluster), and handed
    to Ray Train: ``train`` is split across the workers, ``val`` is read whole by rank 0.
    ``train`` / ``val`` are ``ray.data.Dataset`` s whose rows are already preprocessed
    (decoding and augmentation in ``map_batches``: it runs again each epoch, so random
    augmentations differ per epoch). ``to_batch`` runs on the worker: it turns a batch
    as ``iter_torch_batches`` gives it (a dict of tensors already on the worker's
    device) into what ``training_step`` / ``validation_step`` take (normalisation on
    the device belongs here); it must be picklable (a module-level function or an
    object). ``train_rows`` / ``val_rows``: the row counts when known (else the engine
    counts once); ``shuffle_buffer``: rows of each worker's local shuffle buffer
    (``iter_torch_batches(local_shuffle_buffer_size=...)``; 0 for none).
    ``train_bytes`` / ``val_bytes``: see the fields.
    """

    train: Any
    val: Any
    to_batch: Callable[[dict[str, Any]], Any]
    artifacts: dict[str, Any] = field(default_factory=dict)
    train_rows: int | None = None
    val_rows: int | None = None
    shuffle_buffer: int = 0
    #: The preprocessed split's size in bytes (an estimate is fine) when its preprocessing
    #: is deterministic (no random augmentation), else None: a split that fits a share of
    #: the object store is then preprocessed once and kept there (engine.train.streaming).
    train_bytes: int | None = None
    val_bytes: int | None = None


def wants_streaming(task_cfg: Any) -> bool:
    """Whether a task config asks for streaming (``task.data.streaming=true``, the one
    key every streaming task uses)."""
    return bool(getattr(getattr(task_cfg, "data", None), "streaming", False))


def without_streaming(task_cfg: Any) -> Any:
    """``task_cfg`` with ``task.data.streaming`` off (a copy; ``task_cfg`` itself when it
    does not stream): the map-style data of a streaming run, for the paths that do not
    stream yet (``lepton evaluate``)."""
    import dataclasses

    is_dataclass = dataclasses.is_dataclass(task_cfg)  # (not a type guard here)
    if not wants_streaming(task_cfg) or not is_dataclass:
        return task_cfg
    return dataclasses.replace(task_cfg, data=dataclasses.replace(task_cfg.data, streaming=False))


@runtime_checkable
class ReadsRows(Protocol):
    """A task that ``lepton predict`` can feed from a table (a Parquet file or folder)
    streamed through Ray Data: the rows are read and predicted in ``map_batches`` on the
    cluster's CPUs and the predictions written as Parquet, so no process holds the whole
    input. Runs in those ``map_batches`` workers, once per batch of rows."""

    def inputs_from_rows(self, rows: Mapping[str, Any], cfg: Any) -> list[tuple[str, Any]]:
        """``(id, input)`` pairs, one per row of ``rows`` (column name → numpy array, as
        ``map_batches(batch_format="numpy")`` gives a batch), in the rows' order, each
        input one the task's predictor accepts. Ids come from the table (an ``id``
        column, say) or from the row itself; raise ``DataError`` naming a missing column
        and the columns there are."""
        ...


#: The column ``inputs_from_rows`` takes row ids from when a table has it.
ID_COLUMN = "id"


def row_ids(rows: Mapping[str, Any], inputs: list[Any]) -> list[str]:
    """Ids for a batch of table rows: the ``id`` column's values when the table has one,
    else a digest of each row's input (a row of a streamed table knows no position: the
    same input gets the same id; give the table an ``id`` column to tell repeats apart)."""
    import hashlib

    if ID_COLUMN in rows:
        return [str(v) for v in rows[ID_COLUMN]]
    return [hashlib.sha1(repr(x).encode()).hexdigest()[:12] for x in inputs]


def column_of(rows: Mapping[str, Any], column: str, what: str) -> Any:
    """``rows[column]``, or a ``DataError`` naming the column, the config key that names it
    (``what``) and the columns there are."""
    from engine.errors import DataError

    if column not in rows:
        raise DataError(
            f"The input table has no column {column!r} ({what}); its columns: "
            f"{', '.join(map(str, rows)) or 'none'}.",
            hint=f"Pass the column's name as a task override ({what}=NAME).",
        )
    return rows[column]
