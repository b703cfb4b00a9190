"""Where ``lepton evaluate`` reads its validation data from: map-style, or streamed.

A checkpoint whose task config streams (``task.data.streaming=true``, as trained, or as
an override) is evaluated through Ray Data: :func:`evaluation_data` starts (or joins) a
Ray cluster, asks the task for its :class:`~engine.task.StreamingData` with the model's
artifacts, and iterates the validation dataset in this process with the same
``to_batch`` the workers used (the reading and ``map_batches`` preprocessing run on the
cluster's CPUs, block by block), so no process holds the whole evaluation set. A task
whose ``build_data`` answers a streaming config with map-style data (it cannot stream
that data with a trained model's artifacts) is evaluated map-style, as are all others.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from engine.errors import CheckpointError
from engine.task import StreamingData, wants_streaming

#: The validation rows of each batch evaluated (map-style and streamed alike).
EVAL_BATCH = 256


@dataclass
class EvaluationData:
    """An iterable of validation batches (as ``validation_step`` takes them), its size,
    and whether it streams."""

    loader: Any
    samples: int
    streamed: bool


def map_style_loader(bundle: Any, batch_size: int = EVAL_BATCH) -> Any:
    from torch.utils.data import DataLoader

    return DataLoader(
        bundle.val, batch_size=batch_size, shuffle=False, collate_fn=bundle.collate_fn
    )


def build_eval_data(loaded: Any, task_cfg: Any, new_data: bool) -> Any:
    info = loaded.info
    seed = int(loaded.meta.get("seed") or 0)
    if new_data and not info.features.data_from_artifacts:
        raise CheckpointError(
            f"Task {info.name!r} cannot evaluate a trained model on new data "
            "(its build_data takes no artifacts).",
            hint="Evaluate on the run's own validation split (no task.* overrides).",
        )
    return info.build_data(task_cfg, seed=seed, artifacts=loaded.artifacts)


@contextmanager
def evaluation_data(
    loaded: Any,
    task_cfg: Any,
    *,
    new_data: bool,
    batch_size: int = EVAL_BATCH,
    address: str | None = None,
) -> Iterator[EvaluationData]:
    """The validation data of ``loaded`` under ``task_cfg``, held open while evaluating
    (a streamed one needs its Ray cluster until the last batch is read)."""
    if not (wants_streaming(task_cfg) and loaded.info.features.data_from_artifacts):
        bundle = build_eval_data(loaded, task_cfg, new_data=new_data)
        yield EvaluationData(map_style_loader(bundle, batch_size), len(bundle.val), False)
        return
    from engine.train.cluster import ray_cluster
    from engine.train.streaming import StreamLoader, _quiet

    info = loaded.info
    seed = int(loaded.meta.get("seed") or 0)
    with ray_cluster(address):
        data = info.task.build_data(task_cfg, seed=seed, artifacts=loaded.artifacts)
        if not isinstance(data, StreamingData):  # the task's answer: map-style here
            yield EvaluationData(map_style_loader(data, batch_size), len(data.val), False)
            return
        _quiet(data.val)
        rows = data.val_rows if data.val_rows is not None else int(data.val.count())
        loader = StreamLoader(
            data.val,
            batch_size=batch_size,
            to_batch=data.to_batch,
            steps=-(-rows // batch_size),
            device="cpu",
        )
        yield EvaluationData(loader, rows, True)
