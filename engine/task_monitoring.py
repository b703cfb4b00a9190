"""The optional task methods of monitoring (re-exported by :mod:`engine.task`, where
:class:`engine.task.TaskFeatures` detects them): the prediction log's input summary and
the reference data of drift (docs/monitoring.md)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

__all__ = ["SummarizesInputs", "ValidationInputs"]


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
