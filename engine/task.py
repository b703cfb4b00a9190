"""The ``Task`` protocol: what a plugin's task object must do, and where each part runs.

A task is a small, picklable object. The engine sends it to every Ray Train worker,
so it must not hold open files, live models or data; build those in the methods.

Where each method runs:

============================  ==========================================================
``check(cfg)``                driver, before Ray starts: refuse bad paths/columns early
``build_data(cfg, seed=)``    every worker (and the driver for ``evaluate``); streaming:
                              the driver of ``lepton train``, once
``build_model(cfg, art)``     every worker, and whoever loads a checkpoint
``training_step``             every worker, inside the engine's loop (autocast active)
``build_metrics``             every worker; torchmetrics sync across ranks on compute
``validation_step``           every worker, under ``torch.no_grad()``
``build_predictor``           wherever a checkpoint is used: predict, evaluate, serving
``export_spec`` (optional)    the driver of ``lepton export``: what is exported
``exported_model`` (opt.)     wherever an export is loaded: wraps its runtime module
``summarize_input`` (opt.)    serving replicas (the prediction log's thread)
``validation_inputs`` (opt.)  the driver of ``lepton monitor --reference``
``write_training_data`` (o.)  the driver of ``lepton monitor export``
``inputs_from_rows`` (opt.)   ``map_batches`` actors of ``lepton predict -o OUT.parquet``
============================  ==========================================================

``cfg`` is always the validated instance of the task's ``config_class`` (a dataclass
describing the ``task:`` node of the Hydra config). ``artifacts`` is the JSON-ready
dict that ``build_data`` returned (class names, vocabulary, id maps, ...); it is
saved in the checkpoint's ``task.json`` and handed back on load, so a model can be
rebuilt without the training data.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from engine.errors import ConfigError
from engine.task_monitoring import SummarizesInputs, ValidationInputs, WritesTrainingData
from engine.task_streaming import ReadsRows, without_streaming
from engine.task_streaming import StreamingData as StreamingData  # re-exported
from engine.task_streaming import wants_streaming as wants_streaming  # re-exported

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset


@dataclass
class DataBundle:
    """What ``Task.build_data`` returns.

    ``train`` and ``val`` are map-style torch datasets, built on every worker; a task
    may instead return :class:`StreamingData` when its config streams.
    ``artifacts`` must be JSON-serialisable.
    """

    train: Dataset[Any]
    val: Dataset[Any]
    artifacts: dict[str, Any] = field(default_factory=dict)
    collate_fn: Callable[[list[Any]], Any] | None = None


@runtime_checkable
class Predictor(Protocol):
    """Turns raw inputs into JSON-ready predictions. Serving and ``lepton predict``
    both go through this object, so what works offline works behind HTTP.

    An *input* is one item of a request's ``inputs`` list: a text for NLP, a user id
    (or ``{"user": id, "k": 5}``) for recommendation, an image (path, base64 PNG or
    nested uint8 lists) for vision. ``input_schema()`` describes one input as JSON
    Schema; the engine validates requests against it before calling ``predict``.
    """

    def input_schema(self) -> dict[str, Any]:
        """JSON Schema of one input item (what a request's ``inputs`` list holds)."""
        ...

    def example_inputs(self) -> list[Any]:
        """A few valid, JSON-ready inputs (used by docs, the contract kit and serving)."""
        ...

    def predict(self, inputs: Sequence[Any]) -> list[dict[str, Any]]:
        """Predict a batch of inputs; one JSON-ready dict per input, in order.

        Raise ``engine.errors.DataError`` for an input that is well-formed but
        unusable (unknown id, unreadable image): serving turns it into a 4xx.
        """
        ...


@runtime_checkable
class Task(Protocol):
    """A trainable task. See the module docstring for where each method runs."""

    #: Unique task name, used as ``task=<name>`` and stored in checkpoints.
    name: str
    #: Dataclass describing the ``task:`` config node (``data``, ``model``, ...).
    config_class: type
    #: The metric that picks the best checkpoint, e.g. ``"val/accuracy"``.
    default_metric: str
    #: ``"max"`` or ``"min"``: whether a higher ``default_metric`` is better.
    metric_mode: str

    # Optional methods: see the protocols below (ConfigDependentMetric, ...). The engine
    # checks for them in one place, :class:`TaskFeatures`, and reads them through
    # :class:`TaskInfo`.

    def check(self, cfg: Any) -> None:
        """Validate data paths and columns in the driver; raise ``DataError``/``ConfigError``."""
        ...

    def build_data(self, cfg: Any, *, seed: int) -> DataBundle:
        """Build the train and validation datasets (deterministic for a given seed)."""
        ...

    def build_model(self, cfg: Any, artifacts: Mapping[str, Any]) -> torch.nn.Module:
        """Build an untrained model; ``artifacts`` come from ``build_data`` or a checkpoint."""
        ...

    def training_step(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        """Return the scalar loss for one batch (already on the worker's device)."""
        ...

    def build_metrics(self, cfg: Any, artifacts: Mapping[str, Any]) -> Any:
        """Return a ``torchmetrics.MetricCollection`` (names without the ``val/`` prefix)."""
        ...

    def validation_step(self, model: torch.nn.Module, batch: Any, metrics: Any) -> torch.Tensor:
        """Update ``metrics`` with one batch and return its scalar loss."""
        ...

    def build_predictor(
        self,
        model: torch.nn.Module,
        cfg: Any,
        artifacts: Mapping[str, Any],
        device: torch.device,
    ) -> Predictor:
        """Wrap a trained model (in eval mode, on ``device``) for prediction."""
        ...


# -- optional task methods ------------------------------------------------------------


@runtime_checkable
class ConfigDependentMetric(Protocol):
    """A task whose ranking metric depends on its config (rmse for explicit ratings,
    NDCG for implicit feedback). Runs in the driver."""

    def metric_for(self, cfg: Any) -> tuple[str, str]:
        """``(metric, mode)`` for this config, e.g. ``("val/rmse", "min")``."""
        ...


@runtime_checkable
class KnownMetricModes(Protocol):
    """A task that says which way its other metrics point, so that
    ``trainer.checkpoint_metric`` can name one of them without ``trainer.checkpoint_mode``.
    Runs in the driver."""

    def metric_mode_for(self, metric: str, cfg: Any) -> str | None:
        """``"max"`` or ``"min"`` for ``metric`` (with its ``val/`` prefix), or ``None``
        when the task does not know it."""
        ...


class DataFromArtifacts(Protocol):
    """``build_data`` that accepts a trained model's artifacts: ``lepton evaluate`` can then
    run the model on new data, reusing the saved vocabulary / label names / id maps /
    normalisation instead of fitting new ones. (Detected from the signature: every task
    has a ``build_data``.)"""

    def build_data(
        self, cfg: Any, *, seed: int, artifacts: Mapping[str, Any] | None = None
    ) -> DataBundle: ...


@runtime_checkable
class ReadsInputs(Protocol):
    """A task that ``lepton predict`` can feed from a file or folder."""

    def read_inputs(self, path: Path, cfg: Any) -> Iterator[tuple[str, Any]]:
        """``(id, input)`` pairs read lazily from ``path``; raise ``DataError`` for a missing
        file or column, and yield inputs the predictor accepts."""
        ...


@runtime_checkable
class EvaluationExtras(Protocol):
    """A task that adds JSON-ready extras to ``lepton evaluate`` (confusion matrix,
    per-class scores, baselines)."""

    def evaluation_extras(
        self,
        model: torch.nn.Module,
        loader: Any,
        cfg: Any,
        artifacts: Mapping[str, Any],
        device: torch.device,
    ) -> dict[str, Any]: ...


@dataclass
class ExportSpec:
    """What ``lepton export`` writes of a task's model (see :class:`ExportsModel`).

    ``module``'s ``forward`` takes ``example_inputs`` (tensors only, in that order) and
    returns one tensor; ``input_names`` / ``output_names`` name them in the exported
    graph. ``dynamic_axes`` says, per input name, which axes vary (``{0: "batch"}``);
    an input left out varies on its first axis only, named ``batch``.
    """

    module: Any
    example_inputs: tuple[Any, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...] = ("output",)
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)


@runtime_checkable
class ExportsModel(Protocol):
    """A task that says what ``lepton export`` writes of its model: needed when the model
    takes more than one tensor, or anything but tensors (the engine's default exports
    ``model(x)`` for a batch ``x`` or ``(x, y)``). Runs in the driver of ``lepton export``."""

    def export_spec(
        self, model: torch.nn.Module, batch: Any, cfg: Any, artifacts: Mapping[str, Any]
    ) -> ExportSpec:
        """The module to export and its inputs, taken from ``batch`` (a collated
        validation or training batch, on the CPU). Called once per batch: it must be cheap."""
        ...


@runtime_checkable
class WrapsExportedModel(Protocol):
    """A task whose ``build_predictor`` / ``validation_step`` need more of a model than
    the exported module's ``forward`` (methods, attributes): it wraps the exported runtime
    (a ``torch.nn.Module`` whose ``forward`` runs the exported graph) in what they need.
    Runs wherever an export is loaded (evaluate, predict, serving)."""

    def exported_model(
        self, runtime: torch.nn.Module, cfg: Any, artifacts: Mapping[str, Any]
    ) -> torch.nn.Module: ...


@dataclass(frozen=True)
class TaskFeatures:
    """Which optional methods a task has: the one place the engine looks."""

    config_dependent_metric: bool
    known_metric_modes: bool
    data_from_artifacts: bool
    reads_inputs: bool
    evaluation_extras: bool
    export_spec: bool = False
    exported_model: bool = False
    summarize_input: bool = False
    validation_inputs: bool = False
    write_training_data: bool = False
    reads_rows: bool = False

    @classmethod
    def of(cls, task: object) -> TaskFeatures:
        build_data = getattr(task, "build_data", None)
        try:
            takes_artifacts = callable(build_data) and (
                "artifacts" in inspect.signature(build_data).parameters
            )
        except (TypeError, ValueError):  # a builtin or C callable: no signature to read
            takes_artifacts = False
        return cls(
            config_dependent_metric=isinstance(task, ConfigDependentMetric),
            known_metric_modes=isinstance(task, KnownMetricModes),
            data_from_artifacts=takes_artifacts,
            reads_inputs=isinstance(task, ReadsInputs),
            evaluation_extras=isinstance(task, EvaluationExtras),
            export_spec=isinstance(task, ExportsModel),
            exported_model=isinstance(task, WrapsExportedModel),
            summarize_input=isinstance(task, SummarizesInputs),
            validation_inputs=isinstance(task, ValidationInputs),
            write_training_data=isinstance(task, WritesTrainingData),
            reads_rows=isinstance(task, ReadsRows),
        )


#: Metrics the engine itself computes for every task: lower is better.
ENGINE_METRIC_MODES = {"val/loss": "min", "train/loss": "min"}


@dataclass(frozen=True)
class TaskInfo:
    """A registered task and the plugin it came from (what ``lepton plugins`` shows)."""

    task: Task
    plugin: str
    distribution: str | None
    version: str | None
    features: TaskFeatures = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", TaskFeatures.of(self.task))

    @property
    def name(self) -> str:
        return self.task.name

    def metric(self, cfg: Any) -> tuple[str, str]:
        """The task's ranking metric and mode for config ``cfg``."""
        if self.features.config_dependent_metric:
            metric, mode = self.task.metric_for(cfg)  # type: ignore[attr-defined]
            return str(metric), str(mode)
        return self.task.default_metric, self.task.metric_mode

    def checkpoint_metric(
        self, cfg: Any, chosen: str | None = None, chosen_mode: str | None = None
    ) -> tuple[str, str]:
        """The metric and mode that rank checkpoints: the task's own, or ``chosen``
        (``trainer.checkpoint_metric``) with ``chosen_mode``, the task's declared mode
        for it, or the engine's for its losses. A mode is never guessed from a name."""
        default, mode = self.metric(cfg)
        if chosen is None or chosen == default:
            return default, chosen_mode or mode
        if chosen_mode:
            return chosen, chosen_mode
        known = ENGINE_METRIC_MODES.get(chosen)
        if known is None and self.features.known_metric_modes:
            known = self.task.metric_mode_for(chosen, cfg)  # type: ignore[attr-defined]
        if known in ("max", "min"):
            return chosen, str(known)
        raise ConfigError(
            f"trainer.checkpoint_metric={chosen} has no known direction: task "
            f"{self.name!r} does not say whether higher or lower is better.",
            hint="Add trainer.checkpoint_mode=max (higher is better) or "
            "trainer.checkpoint_mode=min.",
        )

    def build_data(
        self, cfg: Any, *, seed: int, artifacts: Mapping[str, Any] | None = None
    ) -> DataBundle:
        """The task's data, map-style (a streaming config is read map-style here: see
        :func:`without_streaming`); with ``artifacts``, encoded as a trained model saw its
        own."""
        cfg = without_streaming(cfg)
        if artifacts is not None and self.features.data_from_artifacts:
            build: Any = self.task.build_data
            bundle: DataBundle = build(cfg, seed=seed, artifacts=artifacts)
            return bundle
        return self.task.build_data(cfg, seed=seed)
