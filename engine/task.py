"""The ``Task`` protocol: what a plugin's task object must do, and where each part runs.

A task is a small, picklable object. The engine sends it to every Ray Train worker,
so it must not hold open files, live models or data; build those in the methods.

Where each method runs:

============================  ==========================================================
``check(cfg)``                driver, before Ray starts: refuse bad paths/columns early
``build_data(cfg, seed=)``    every worker (and the driver for ``evaluate``)
``build_model(cfg, art)``     every worker, and whoever loads a checkpoint
``training_step``             every worker, inside the engine's loop (autocast active)
``build_metrics``             every worker; torchmetrics sync across ranks on compute
``validation_step``           every worker, under ``torch.no_grad()``
``build_predictor``           wherever a checkpoint is used: predict, evaluate, serving
============================  ==========================================================

``cfg`` is always the validated instance of the task's ``config_class`` (a dataclass
describing the ``task:`` node of the Hydra config). ``artifacts`` is the JSON-ready
dict that ``build_data`` returned (class names, vocabulary, id maps, ...); it is
saved in the checkpoint's ``task.json`` and handed back on load, so a model can be
rebuilt without the training data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset


@dataclass
class DataBundle:
    """What ``Task.build_data`` returns.

    ``train`` and ``val`` are map-style torch datasets (the seam where Ray Data
    streaming will plug in later). ``artifacts`` must be JSON-serialisable.
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

    # Optional methods (the engine checks with ``getattr``):
    #
    # ``metric_for(cfg) -> (metric, mode)``: when the metric that ranks checkpoints
    #     depends on the task config (rmse for explicit ratings, ndcg for implicit).
    # ``build_data(cfg, *, seed, artifacts=None)``: accepting ``artifacts`` lets
    #     ``lepton evaluate`` run a trained model on new data, reusing the saved
    #     vocabulary / label names / id maps / normalisation instead of fitting new ones.
    # ``read_inputs(path, cfg) -> Iterator[tuple[str, Any]]``: (id, input) pairs read
    #     lazily from a file or folder, for ``lepton predict``; raise ``DataError`` for
    #     a missing file or column, and yield inputs the predictor accepts.
    # ``evaluation_extras(model, loader, cfg, artifacts, device) -> dict``: JSON-ready
    #     extras for ``lepton evaluate`` (confusion matrix, per-class scores, baselines).

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


@dataclass(frozen=True)
class TaskInfo:
    """A registered task and the plugin it came from (what ``lepton plugins`` shows)."""

    task: Task
    plugin: str
    distribution: str | None
    version: str | None
