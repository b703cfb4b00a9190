"""The optional task methods of monitoring (re-exported by :mod:`engine.task`, where
:class:`engine.task.TaskFeatures` detects them): the prediction log's input summary and
the reference data of drift (docs/monitoring.md)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "LabelledInput",
    "SummarizesInputs",
    "TrainingDataWritten",
    "ValidationInputs",
    "WritesTrainingData",
    "without_extra",
]


@runtime_checkable
class SummarizesInputs(Protocol):
    """A task that describes one input for the prediction log (``serve.log``), beyond the
    engine's defaults for its input kind (:mod:`engine.serve.input_summary`): e.g. the
    share of unknown tokens under its vocabulary. Runs on the serving replicas, on the
    log's thread (off the request path)."""

    def summarize_input(
        self, input: Any, artifacts: Mapping[str, Any]
    ) -> dict[str, float | int | str | bool | None]:
        """A flat dict of feature values for one predictor input (as ``predict`` takes
        it); cheap, and never reading a file the input names."""
        ...


@runtime_checkable
class ValidationInputs(Protocol):
    """A task whose validation split can be read back as predictor inputs: the reference
    of ``lepton monitor --reference RUN`` (the drift of a served model's inputs and
    predictions against what it was validated on). Runs in the driver of ``lepton
    monitor``, with a trained model's config and artifacts."""

    def validation_inputs(
        self, cfg: Any, artifacts: Mapping[str, Any], *, seed: int, limit: int
    ) -> Iterator[tuple[Any, Any]]:
        """At most ``limit`` ``(input, label)`` pairs of the validation split made with
        ``seed``: each input as a request's ``inputs`` hold it (what ``predict`` takes,
        JSON-ready), each label as a prediction names it (a class name, an item id)."""
        ...


@dataclass(frozen=True)
class LabelledInput:
    """One served input whose true label came back as feedback (``lepton monitor
    export``'s unit)."""

    #: ``<request id>-<index>``: unique in a log, safe as a file-name stem or a row id.
    id: str
    #: The input as the request sent it (what ``predict`` takes; JSON, images as base64
    #: or nested uint8 lists), from a log written with ``serve.log.inputs=true``.
    input: Any
    #: The label as the feedback gave it (a class name, an item id, a number).
    label: Any
    #: The request's time, UTC epoch seconds (an interaction log's timestamp).
    ts: float = 0.0


@dataclass(frozen=True)
class TrainingDataWritten:
    """What :meth:`WritesTrainingData.write_training_data` wrote."""

    #: The value for ``task.data.extra`` that reads it back: a path inside the directory
    #: it was given (a file or a folder), absolute.
    extra: str
    #: Examples written.
    rows: int
    #: Examples left out, counted by reason (e.g. ``"label is not a class of the model"``).
    skipped: dict[str, int] = field(default_factory=dict)


@runtime_checkable
class WritesTrainingData(Protocol):
    """A task that writes labelled served inputs as its own training data (an image
    folder, a CSV/JSONL with its columns, an interaction log), which ``lepton train``
    then reads beside the original data through ``task.data.extra=<path>`` (training
    split only, never validation, so ``lepton evaluate`` stays comparable). Runs in the
    driver of ``lepton monitor export``, with the served model's config and artifacts."""

    def write_training_data(
        self,
        cfg: Any,
        artifacts: Mapping[str, Any],
        examples: Sequence[LabelledInput],
        directory: Path,
    ) -> TrainingDataWritten:
        """Write ``examples`` under ``directory`` (an empty local folder; the engine
        renames it into place once this returns, so a crash leaves nothing half-written)
        in the format ``task.data.extra`` reads. An example it cannot use (a label the
        model does not know, an undecodable input) is skipped and counted, not raised."""
        ...


def without_extra(task_cfg: Any) -> Any:
    """``task_cfg`` with ``task.data.extra`` off (a copy; ``task_cfg`` itself without one):
    for the paths that read a trained model's validation data only (``lepton evaluate``,
    ``lepton export``), which extra data never enters; its files may be gone by then."""
    import dataclasses

    data = getattr(task_cfg, "data", None)
    if not getattr(data, "extra", None) or not dataclasses.is_dataclass(task_cfg):
        return task_cfg
    return dataclasses.replace(task_cfg, data=dataclasses.replace(data, extra=None))  # type: ignore[type-var]
