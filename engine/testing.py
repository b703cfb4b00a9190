"""The contract kit: what the engine relies on a task for, as checks a plugin runs in its tests.

::

    from engine.testing import check_task_contract

    def test_contract(tmp_path):
        check_task_contract("vision", ["trainer.batch_size=16"], tmp_path)

or, in one line, ``test_contract = contract_test("vision", ["trainer.batch_size=16"])``.

Each contract point below is a separate check; the first one that fails raises an
``AssertionError`` that names the point (``[contract: data] ...``) and says what to fix:

``registered``  the task is installed (entry point ``lepton``), has every ``Task``
                attribute and method, and pickles (the engine ships it to Ray workers)
``config``      ``task=NAME`` plus the overrides composes and validates
``check``       ``task.check(cfg)`` accepts the configured data
``data``        ``build_data`` returns a ``DataBundle`` with non-empty train/val and
                JSON-ready artifacts, deterministically for a given seed (and, when it
                takes ``artifacts=``, encodes the same way from saved artifacts)
``training``    20 optimizer steps on one fixed training batch lower the loss
``metrics``     ``build_metrics`` is a torchmetrics ``MetricCollection``; after
                ``validation_step`` its keys, prefixed ``val/``, include the task's
                default metric
``predictor``   ``input_schema()`` is JSON Schema that accepts every example input and
                rejects a malformed one; ``predict`` returns one JSON-ready dict per
                input, the same for an input alone as in a batch
``summarize_input``   (when the task has it) a flat dict for every example input
``validation_inputs``  (when the task has it) up to ``limit`` JSON-ready ``(input, label)``
                pairs that ``predict`` takes
``write_training_data``  (when the task has it, with ``validation_inputs``) labelled
                validation inputs written, then read back by ``task.data.extra``, add
                exactly the rows written to the training split, none to validation
``checkpoint``  ``save_checkpoint`` then ``load_model`` predicts exactly as before

Overrides should make the data tiny: the kit is meant to run in seconds (on one CPU
thread, without Ray).

A task that streams (``task.data.streaming=true``, see docs/architecture.md) has one more
point, checked by :func:`check_streaming` (or ``test_streaming =
streaming_contract_test("NAME", overrides)``) inside a Ray cluster, the running one or a
local one it starts with two CPUs; a task whose config has no ``task.data.streaming`` is
skipped, with that reason:

``streaming``   with ``task.data.streaming=true`` the config composes, ``check`` accepts
                it, and ``build_data`` returns ``StreamingData``: Ray Data ``train``/``val``
                with rows (``train_rows``/``val_rows``, when given, their counts; as many
                rows as the map-style splits), a picklable ``to_batch``, and the map-style
                artifacts for the same config and seed (same keys, equal values, floats
                to 1e-9; a ``streaming`` entry of its own is allowed). Its first train batch (``iter_torch_batches`` + ``to_batch``)
                trains as in ``training``, and the trained model's validation metrics
                over the streamed split equal those over the map-style split (to 1e-4)
"""

from __future__ import annotations

import inspect
import itertools
import json
import math
import pickle
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.config.schema import LeptonConfig
    from engine.plugins import PluginRegistry
    from engine.task import DataBundle, TaskInfo
    from engine.testing_streaming import StreamingReport

#: Optimizer steps on one fixed batch in the ``training`` check.
TRAINING_STEPS = 20
#: Inputs a schema should refuse; at least one of them must be refused.
MALFORMED_INPUTS: tuple[Any, ...] = ({"__malformed__": True}, 12345.678)
_VAL_BATCHES = 4


class ContractError(AssertionError):
    """A contract point failed; the message names the point and the fix."""

    def __init__(self, point: str, problem: str, fix: str) -> None:
        self.point, self.problem, self.fix = point, problem, fix
        super().__init__(f"[contract: {point}] {problem}\n  fix: {fix}")


@dataclass
class ContractReport:
    """What the kit measured, for a test to print or assert on further."""

    task: str
    metric: str
    mode: str
    train_size: int
    val_size: int
    losses: list[float] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    example_inputs: list[Any] = field(default_factory=list)
    predictions: list[dict[str, Any]] = field(default_factory=list)
    rejected_input: Any = None
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        timing = ", ".join(f"{k} {v:.2f}s" for k, v in self.seconds.items())
        return (
            f"task {self.task!r} passes the contract: train/val {self.train_size}/{self.val_size}, "
            f"loss {self.losses[0]:.4f} -> {self.losses[-1]:.4f} in {len(self.losses) - 1} steps, "
            f"{self.metric} ({self.mode}) = {self.metrics.get(self.metric, float('nan')):.4f}; "
            f"{timing}"
        )


def contract_test(
    task: str, overrides: Sequence[str] = (), *, registry: PluginRegistry | None = None
) -> Callable[[Path], None]:
    """A pytest test function running the kit: ``test_contract = contract_test("vision")``."""

    def test_task_contract(tmp_path: Path) -> None:
        report = check_task_contract(task, list(overrides), tmp_path, registry=registry)
        print(report.summary())

    test_task_contract.__name__ = test_task_contract.__qualname__ = f"test_{task}_contract"
    return test_task_contract


def streaming_contract_test(
    task: str, overrides: Sequence[str] = (), *, registry: PluginRegistry | None = None
) -> Callable[[], None]:
    """A pytest test running :func:`check_streaming`; it is skipped, with the reason, for
    a task that does not stream: ``test_streaming = streaming_contract_test("vision", ...)``."""

    def test_task_streaming() -> None:
        import pytest

        report = check_streaming(task, list(overrides), registry=registry)
        if report.skipped:
            pytest.skip(report.summary())
        print(report.summary())

    test_task_streaming.__name__ = test_task_streaming.__qualname__ = f"test_{task}_streaming"
    return test_task_streaming


def check_task_contract(
    task: str | TaskInfo,
    overrides: Sequence[str] = (),
    tmp_path: str | Path | None = None,
    *,
    registry: PluginRegistry | None = None,
    steps: int = TRAINING_STEPS,
) -> ContractReport:
    """Run every contract check on ``task``; raise :class:`ContractError` at the first failure.

    ``task`` is a task name (or a registered ``TaskInfo``); ``overrides`` are Hydra
    overrides like on the command line (point the task at tiny data); ``tmp_path``
    receives the checkpoint. ``registry`` defaults to the installed plugins. Runs on
    one CPU thread (restored after).
    """
    import torch

    from engine.plugins import get_registry

    registry = registry or get_registry()
    name = task if isinstance(task, str) else task.task.name
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add contention on a busy CI box
    try:
        return _run_checks(name, overrides, tmp_path, registry, steps)
    finally:
        torch.set_num_threads(threads)


def _run_checks(
    name: str,
    overrides: Sequence[str],
    tmp_path: str | Path | None,
    registry: PluginRegistry,
    steps: int,
) -> ContractReport:
    import tempfile

    import torch

    seconds: dict[str, float] = {}
    with _timed(seconds, "registered"):
        info = _check_registered(name, registry)
    with _timed(seconds, "config"):
        cfg = _check_config(name, overrides, registry)
    with _timed(seconds, "check"):
        _guard("check", "task.check(cfg) raised on the configured data", info.task.check, cfg.task)
    metric, mode = _task_metric(info, cfg.task)
    report = ContractReport(task=name, metric=metric, mode=mode, train_size=0, val_size=0)
    with _timed(seconds, "data"):
        bundle = _check_data(info, cfg)
    report.train_size, report.val_size = _length(bundle.train) or 0, _length(bundle.val) or 0

    torch.manual_seed(cfg.seed)
    with _timed(seconds, "training"):
        model = _guard(
            "training", "build_model raised", info.task.build_model, cfg.task, bundle.artifacts
        )
        report.losses = _check_training(info, cfg, bundle, model, steps)
    with _timed(seconds, "metrics"):
        report.metrics = _check_metrics(info, cfg, bundle, model, metric)
    if tmp_path is None:
        with tempfile.TemporaryDirectory(prefix="lepton-contract-") as tmp:
            _check_serving(info, cfg, bundle, model, registry, Path(tmp), report, seconds)
    else:
        _check_serving(info, cfg, bundle, model, registry, Path(tmp_path), report, seconds)
    report.seconds = seconds
    return report


def check_streaming(
    task: str | TaskInfo,
    overrides: Sequence[str] = (),
    *,
    registry: PluginRegistry | None = None,
    steps: int = TRAINING_STEPS,
) -> StreamingReport:
    """The ``streaming`` point: ``task``'s data with ``task.data.streaming=true`` against
    the map-style data of the same overrides and seed. Raises :class:`ContractError`
    (point ``streaming``) naming what differs; returns a report, whose ``skipped`` says
    why when the task's config has no ``task.data.streaming``. Runs inside a Ray cluster
    (:func:`engine.testing_streaming.ray_session`), on one CPU thread."""
    import torch

    from engine.plugins import get_registry
    from engine.testing_streaming import StreamingReport, ray_session

    registry = registry or get_registry()
    name = task if isinstance(task, str) else task.task.name
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        info = _check_registered(name, registry)
        plain = _check_config(name, _stream_overrides(overrides, None), registry)
        if not _has_streaming_key(plain.task):
            return StreamingReport(
                task=name, skipped="its config has no task.data.streaming: it does not stream"
            )
        with ray_session():
            return _run_streaming_checks(info, name, overrides, registry, steps)
    finally:
        torch.set_num_threads(threads)


def _run_streaming_checks(
    info: TaskInfo, name: str, overrides: Sequence[str], registry: PluginRegistry, steps: int
) -> StreamingReport:
    import pickle

    import torch

    from engine import testing_streaming as ts
    from engine.task import StreamingData

    point, seconds = "streaming", dict[str, float]()
    try:
        cfg = _check_config(name, _stream_overrides(overrides, True), registry)
    except ContractError as exc:
        raise ContractError(
            point, f"with task.data.streaming=true: {exc.problem}", exc.fix
        ) from None
    with _timed(seconds, "data"):
        _guard(point, "task.check(cfg) raised on the streaming config", info.task.check, cfg.task)
        data = _guard(point, "build_data raised", info.task.build_data, cfg.task, seed=cfg.seed)
        if not isinstance(data, StreamingData):
            raise ContractError(
                point,
                f"with task.data.streaming=true build_data returned {type(data).__name__}, "
                "not engine.task.StreamingData",
                "return StreamingData(train=<ray.data.Dataset>, val=..., to_batch=...) when "
                "cfg.data.streaming is set",
            )
        for split in ("train", "val"):
            problem = ts.dataset_problem(split, getattr(data, split))
            if problem:
                raise ContractError(
                    point, problem, "read the data with ray.data (read_*, map_batches)"
                )
            ts.quiet(getattr(data, split))
        try:
            pickle.loads(pickle.dumps(data.to_batch))
        except Exception as exc:
            raise ContractError(
                point,
                f"StreamingData.to_batch does not pickle ({_describe(exc)}); it runs on "
                "every worker",
                "make to_batch a module-level function or an instance of a module-level class",
            ) from None
        _check_artifacts(data.artifacts, point)
        rows = {}
        for split in ("train", "val"):
            dataset, given = getattr(data, split), getattr(data, f"{split}_rows")
            rows[split] = _guard(point, f"counting the {split} rows raised", ts.count_rows, dataset)
            if rows[split] == 0:
                raise ContractError(
                    point,
                    f"the streamed {split} dataset holds no rows",
                    "check the data path and split options in the overrides the kit was given",
                )
            if given is not None and given != rows[split]:
                raise ContractError(
                    point,
                    f"StreamingData.{split}_rows={given}, but the {split} dataset holds "
                    f"{rows[split]} rows",
                    f"set {split}_rows to the dataset's row count, or leave it None (the "
                    "engine counts)",
                )
        bundle = _guard(
            point, "build_data raised map-style", info.build_data, cfg.task, seed=cfg.seed
        )
        difference = ts.artifact_difference(bundle.artifacts, data.artifacts)
        if difference:
            raise ContractError(
                point,
                f"the streamed artifacts differ from the map-style ones for the same config "
                f"and seed: {difference}",
                "fit the encodings (statistics, vocabulary, classes) as build_data does "
                "map-style: a streamed run's checkpoint must predict like a map-style one",
            )
        for split in ("train", "val"):
            expected = _length(getattr(bundle, split))
            if expected is not None and expected != rows[split]:
                raise ContractError(
                    point,
                    f"the streamed {split} split holds {rows[split]} rows, the map-style one "
                    f"{expected} (same config and seed)",
                    "split the data as the map-style path does: the same rows on each side",
                )
    metric, _ = _task_metric(info, cfg.task)
    report = ts.StreamingReport(task=name, train_rows=rows["train"], val_rows=rows["val"])
    with _timed(seconds, "training"):
        first = _guard(
            point,
            "the first train batch (iter_torch_batches, then to_batch) raised",
            next,
            ts.batches(data.train, cfg.trainer.batch_size, data.to_batch),
        )
        torch.manual_seed(cfg.seed)
        model = _guard(point, "build_model raised", info.task.build_model, cfg.task, data.artifacts)
        on = " on the first streamed train batch (iter_torch_batches, then to_batch)"
        report.losses = _train_on_batch(info, cfg, first, model, steps, point, on)
    with _timed(seconds, "metrics"):
        val = ts.batches(data.val, cfg.trainer.batch_size, data.to_batch)
        report.metrics = _validate(info, cfg, data.artifacts, model, metric, val, None, point)
        loader = _val_loader(bundle, cfg)
        report.map_metrics = _validate(
            info, cfg, bundle.artifacts, model, metric, loader, None, point
        )
    differences = ts.metric_differences(report.metrics, report.map_metrics)
    if differences:
        raise ContractError(
            point,
            "with the same model, validation over the streamed split differs from validation "
            f"over the map-style split: {'; '.join(differences)}",
            "stream the map-style validation rows, encoded the same way: to_batch must give "
            "validation_step what the map-style loader gives it",
        )
    report.seconds = seconds
    return report


def _stream_overrides(overrides: Sequence[str], on: bool | None) -> list[str]:
    from engine.testing_streaming import streaming_overrides

    return streaming_overrides(overrides, on)


def _has_streaming_key(task_cfg: Any) -> bool:
    from engine.testing_streaming import has_streaming_key

    return has_streaming_key(task_cfg)


# -- the checks --------------------------------------------------------------------


def _check_registered(name: str, registry: PluginRegistry) -> TaskInfo:
    from engine.errors import LeptonError
    from engine.plugins import _task_problem

    try:
        info = registry.get_task(name)
    except LeptonError as exc:
        raise ContractError(
            "registered",
            str(exc),
            "install the plugin (pip install -e <plugin dir>) so its `lepton` entry point "
            "registers the task; `lepton plugins` shows what is installed",
        ) from None
    problem = _task_problem(info.task)
    if problem:
        raise ContractError("registered", problem, "implement the engine.task.Task protocol")
    try:
        pickle.loads(pickle.dumps(info.task))
    except Exception as exc:
        raise ContractError(
            "registered",
            f"the task object does not pickle ({_describe(exc)}); the engine sends it to "
            "every Ray worker",
            "keep only plain attributes on the task; build models, data and open files "
            "inside its methods",
        ) from None
    return info


def _check_config(name: str, overrides: Sequence[str], registry: PluginRegistry) -> LeptonConfig:
    from engine.config.compose import compose
    from engine.config.load import to_typed
    from engine.errors import LeptonError

    args = [f"task={name}", *overrides]
    try:
        typed, _ = to_typed(compose(args, registry), registry)
    except LeptonError as exc:
        raise ContractError(
            "config",
            f"`{' '.join(args)}` does not compose and validate: {exc}",
            f"ship conf/task/{name}.yaml (starting `# @package _global_`, with task.name: "
            f"{name}) in a directory returned by lepton_config_dirs, matching the task's "
            "config_class",
        ) from None
    try:
        pickle.loads(pickle.dumps(typed))
    except Exception as exc:
        raise ContractError(
            "config",
            f"the typed task config does not pickle ({_describe(exc)})",
            "make config_class a plain dataclass of str/int/float/bool/list/dataclass fields",
        ) from None
    return typed


def _check_data(info: TaskInfo, cfg: LeptonConfig) -> DataBundle:
    from engine.task import DataBundle

    bundle = _guard("data", "build_data raised", info.task.build_data, cfg.task, seed=cfg.seed)
    if not isinstance(bundle, DataBundle):
        raise ContractError(
            "data",
            f"build_data returned {type(bundle).__name__}, not engine.task.DataBundle",
            "return DataBundle(train=..., val=..., artifacts={...})",
        )
    for split in ("train", "val"):
        dataset = getattr(bundle, split)
        size = _length(dataset)
        if size is None:
            raise ContractError(
                "data",
                f"the {split} dataset has no len()",
                "return map-style datasets (torch.utils.data.Dataset with __len__/__getitem__)",
            )
        if size == 0:
            raise ContractError(
                "data",
                f"the {split} dataset is empty",
                "check the data path and split options in the overrides the kit was given",
            )
    _check_artifacts(bundle.artifacts)
    again = _guard("data", "build_data raised", info.task.build_data, cfg.task, seed=cfg.seed)
    if _normalised(again.artifacts) != _normalised(bundle.artifacts) or _length(
        again.val
    ) != _length(bundle.val):
        raise ContractError(
            "data",
            "build_data with the same seed gave different artifacts or split sizes",
            "derive every random choice (shuffles, splits) from the seed argument",
        )
    first, second = _first_item(bundle.val), _first_item(again.val)
    if not _same(first, second):
        raise ContractError(
            "data",
            "build_data with the same seed gave a different first validation item",
            "derive the validation split from the seed argument and keep it free of "
            "random augmentation",
        )
    if "artifacts" in inspect.signature(info.task.build_data).parameters:
        saved = json.loads(json.dumps(bundle.artifacts))  # what a checkpoint hands back
        reused = _guard(
            "data",
            "build_data(cfg, seed=..., artifacts=<the saved artifacts>) raised",
            info.task.build_data,
            cfg.task,
            seed=cfg.seed,
            artifacts=saved,
        )
        if not _same(_first_item(reused.val), first):
            raise ContractError(
                "data",
                "build_data given the saved artifacts encodes the validation data "
                "differently from training",
                "reuse the given artifacts' encodings (vocabulary, statistics, classes): "
                "lepton evaluate relies on it",
            )
    return bundle


def _check_artifacts(artifacts: Any, point: str = "data") -> None:
    if not isinstance(artifacts, dict):
        raise ContractError(
            point,
            f"artifacts is a {type(artifacts).__name__}, not a dict",
            "return a dict of JSON-ready values (lists, str, int, float, bool, None, dicts)",
        )
    try:
        text = json.dumps(artifacts, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ContractError(
            point,
            f"artifacts are not JSON-serialisable: {exc}",
            "convert numpy/torch values with .tolist() or float(); replace NaN/inf; they are "
            "stored in the checkpoint's task.json",
        ) from None
    if _normalised(json.loads(text)) != _normalised(artifacts):
        raise ContractError(
            point,
            "artifacts change when written to JSON and read back (e.g. int dict keys "
            "become strings)",
            "use string keys; build_model and build_predictor receive the JSON round trip "
            "when a checkpoint is loaded",
        )


def _check_training(
    info: TaskInfo, cfg: LeptonConfig, bundle: DataBundle, model: Any, steps: int
) -> list[float]:
    batch = _first_batch(bundle, "train", cfg.trainer.batch_size)
    return _train_on_batch(info, cfg, batch, model, steps, "training")


def _train_on_batch(
    info: TaskInfo,
    cfg: LeptonConfig,
    batch: Any,
    model: Any,
    steps: int,
    point: str,
    on: str = "",
) -> list[float]:
    """``steps`` optimizer steps on one fixed batch (``on``: which, for messages); the
    losses (the last must be lower)."""
    import torch

    from engine.train.loop import move_to_device
    from engine.train.optim import build_optimizer

    if not isinstance(model, torch.nn.Module):
        raise ContractError(
            point,
            f"build_model returned {type(model).__name__}, not torch.nn.Module",
            "return an untrained torch.nn.Module",
        )
    batch = move_to_device(batch, torch.device("cpu"))
    optimizer = build_optimizer(model.parameters(), cfg.optimizer)
    model.train()
    losses: list[float] = []
    for step in range(steps + 1):
        optimizer.zero_grad(set_to_none=True)
        loss = _guard(point, f"training_step{on} raised", info.task.training_step, model, batch)
        _check_scalar_loss(point, "training_step", loss)
        losses.append(float(loss.detach()))
        if step == steps:
            break
        loss.backward()
        if step == 0 and not any(p.grad is not None for p in model.parameters()):
            raise ContractError(
                point,
                "no model parameter received a gradient from the training_step loss",
                "compute the loss from model(batch) without .detach(), .item() or no_grad",
            )
        if cfg.trainer.grad_clip_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.trainer.grad_clip_norm)
        optimizer.step()
    if not losses[-1] < losses[0]:
        raise ContractError(
            point,
            f"{steps} optimizer steps on one fixed training batch did not lower the loss "
            f"({losses[0]:.5f} -> {losses[-1]:.5f})",
            "check that training_step's loss depends on the model's output and targets, "
            "that labels line up with inputs, and that the task's optimizer.lr suits it",
        )
    return losses


def _check_metrics(
    info: TaskInfo,
    cfg: LeptonConfig,
    bundle: DataBundle,
    model: Any,
    metric: str,
    batches: int | None = _VAL_BATCHES,
) -> dict[str, float]:
    """The metrics after ``validation_step`` on the first ``batches`` validation batches
    (None: all of them)."""
    return _validate(
        info, cfg, bundle.artifacts, model, metric, _val_loader(bundle, cfg), batches, "metrics"
    )


def _val_loader(bundle: DataBundle, cfg: LeptonConfig) -> Any:
    from torch.utils.data import DataLoader

    return DataLoader(
        bundle.val, batch_size=cfg.trainer.batch_size, shuffle=False, collate_fn=bundle.collate_fn
    )


def _validate(
    info: TaskInfo,
    cfg: LeptonConfig,
    artifacts: Any,
    model: Any,
    metric: str,
    loader: Any,
    batches: int | None,
    point: str,
) -> dict[str, float]:
    import torch
    from torchmetrics import MetricCollection

    from engine.train.loop import move_to_device

    metrics = _guard(point, "build_metrics raised", info.task.build_metrics, cfg.task, artifacts)
    if not isinstance(metrics, MetricCollection):
        raise ContractError(
            point,
            f"build_metrics returned {type(metrics).__name__}, not a torchmetrics MetricCollection",
            "return MetricCollection({'accuracy': ..., ...}) with names without 'val/'",
        )
    model.eval()
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if i == batches:
                break
            batch = move_to_device(batch, torch.device("cpu"))
            loss = _guard(
                point, "validation_step raised", info.task.validation_step, model, batch, metrics
            )
            _check_scalar_loss(point, "validation_step", loss)
    raw = _guard(point, "MetricCollection.compute() raised", metrics.compute)
    computed: dict[str, float] = {}
    for key, value in raw.items():
        try:
            computed[f"val/{key}"] = float(value)
        except (TypeError, ValueError, RuntimeError):
            raise ContractError(
                point,
                f"metric {key!r} computes to {type(value).__name__}, not a scalar "
                "(the engine logs float(value))",
                "give every metric a scalar result (e.g. average='macro'/'micro')",
            ) from None
    if metric not in computed:
        raise ContractError(
            point,
            f"the task's default metric {metric!r} is not among the computed metrics "
            f"{sorted(computed)}",
            f"add {metric.removeprefix('val/')!r} to build_metrics, or change "
            "default_metric / metric_for",
        )
    if any(k.startswith("val/val/") for k in computed):
        raise ContractError(
            point,
            "metric names already carry the 'val/' prefix",
            "name metrics without 'val/'; the engine adds it",
        )
    return computed


def _check_serving(
    info: TaskInfo,
    cfg: LeptonConfig,
    bundle: DataBundle,
    model: Any,
    registry: PluginRegistry,
    tmp_path: Path,
    report: ContractReport,
    seconds: dict[str, float],
) -> None:
    import torch

    from engine.runs.checkpoint import load_model, save_checkpoint
    from engine.task import Predictor

    device = torch.device("cpu")
    model.eval()
    with _timed(seconds, "predictor"):
        predictor = _guard(
            "predictor",
            "build_predictor raised",
            info.task.build_predictor,
            model,
            cfg.task,
            bundle.artifacts,
            device,
        )
        if not isinstance(predictor, Predictor):
            missing = [
                m
                for m in ("input_schema", "example_inputs", "predict")
                if not callable(getattr(predictor, m, None))
            ]
            raise ContractError(
                "predictor",
                f"build_predictor returned {type(predictor).__name__}, which lacks "
                f"{', '.join(missing)}",
                "return an object implementing engine.task.Predictor",
            )
        examples = _check_examples(predictor)
        report.rejected_input = _check_schema(predictor, examples)
        report.example_inputs = examples
        report.predictions = _check_predictions(predictor, examples)
        if info.features.summarize_input:
            _check_summaries(info, examples, bundle.artifacts)
        if info.features.validation_inputs:
            _check_validation_inputs(info, cfg, bundle.artifacts, predictor)
            if info.features.write_training_data:
                _check_training_data(info, cfg, bundle, tmp_path / "contract-training-data")

    with _timed(seconds, "checkpoint"):
        path = tmp_path / "contract-checkpoint"
        try:
            save_checkpoint(
                path,
                info=info,
                model=model,
                task_config=cfg.task,
                artifacts=bundle.artifacts,
                epoch=0,
                metrics=dict(report.metrics),
            )
        except Exception as exc:
            raise ContractError(
                "checkpoint",
                f"save_checkpoint failed: {_describe(exc)}",
                "keep model state in parameters/buffers (safetensors) and the task config "
                "a plain dataclass",
            ) from None
        loaded = _guard("checkpoint", "load_model raised", load_model, path, registry)
        reloaded = _guard(
            "checkpoint", "build_predictor on the loaded model raised", loaded.predictor
        )
        again = _guard(
            "checkpoint", "predict on the loaded model raised", reloaded.predict, examples
        )
        if not isinstance(again, list) or len(again) != len(examples):
            raise ContractError(
                "checkpoint",
                f"after save_checkpoint + load_model, predict() on {len(examples)} inputs "
                f"returned {_short(again)}",
                "rebuild the model only from (cfg, artifacts) so the reloaded predictor "
                "behaves like the trained one",
            )
        for i, (before, after) in enumerate(zip(report.predictions, again, strict=True)):
            if not _close(before, after):
                raise ContractError(
                    "checkpoint",
                    f"after save_checkpoint + load_model, example input {i} predicts "
                    f"{_short(after)} instead of {_short(before)}",
                    "rebuild the model only from (cfg, artifacts) and keep every learned value "
                    "in state_dict (persistent buffers, not plain attributes)",
                )


def _check_summaries(info: TaskInfo, examples: list[Any], artifacts: Any) -> None:
    """The optional ``summarize_input`` (the prediction log's input summary): a flat dict
    of numbers, strings, booleans or None for every example input."""
    for i, example in enumerate(examples):
        summary = _guard(
            "summarize_input",
            f"summarize_input raised on example input {i}",
            info.task.summarize_input,  # type: ignore[attr-defined]
            example,
            artifacts,
        )
        flat = isinstance(summary, dict) and all(
            isinstance(k, str) and (v is None or isinstance(v, (bool, int, float, str)))
            for k, v in summary.items()
        )
        if not flat:
            raise ContractError(
                "summarize_input",
                f"summarize_input returned {_short(summary)} for example input {i}",
                "return a flat dict: feature name -> number, string, boolean or None",
            )


def _check_validation_inputs(
    info: TaskInfo, cfg: LeptonConfig, artifacts: Any, predictor: Any
) -> None:
    """The optional ``validation_inputs`` (``lepton monitor --reference``'s data): at most
    ``limit`` ``(input, label)`` pairs, JSON-ready inputs that ``predict`` takes."""
    limit = 3
    pairs = _guard(
        "validation_inputs",
        "validation_inputs raised",
        lambda: list(
            itertools.islice(
                info.task.validation_inputs(  # type: ignore[attr-defined]
                    cfg.task, artifacts, seed=cfg.seed, limit=limit
                ),
                limit + 1,
            )
        ),
    )
    shaped = all(isinstance(p, tuple) and len(p) == 2 for p in pairs)
    if not pairs or len(pairs) > limit or not shaped:
        raise ContractError(
            "validation_inputs",
            f"validation_inputs(limit={limit}) gave {_short(pairs)}",
            "yield 1 to limit (input, label) pairs of the validation split",
        )
    inputs = [p[0] for p in pairs]
    try:
        json.dumps([[p[0], str(p[1])] for p in pairs], allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ContractError(
            "validation_inputs",
            f"validation_inputs are not JSON-ready: {exc}",
            "yield inputs as a client would send them in a request (JSON values)",
        ) from None
    answers = _guard(
        "validation_inputs", "predict raised on validation_inputs", predictor.predict, inputs
    )
    if not isinstance(answers, list) or len(answers) != len(inputs):
        raise ContractError(
            "validation_inputs",
            f"predict() on {len(inputs)} validation inputs returned {_short(answers)}",
            "yield inputs in the predictor's input format (what a request's inputs hold)",
        )


def _check_training_data(
    info: TaskInfo, cfg: LeptonConfig, bundle: DataBundle, directory: Path
) -> None:
    """The optional ``write_training_data`` (``lepton monitor export``): validation inputs
    with their labels, written and read back through ``task.data.extra``, add exactly the
    rows it says it wrote to the training split and nothing to validation."""
    import copy

    from engine.task_monitoring import LabelledInput, TrainingDataWritten

    point = "write_training_data"
    pairs = list(
        itertools.islice(
            info.task.validation_inputs(  # type: ignore[attr-defined]
                cfg.task, bundle.artifacts, seed=cfg.seed, limit=3
            ),
            3,
        )
    )
    examples = [
        LabelledInput(f"contract-{i}", x, y, ts=1.0e9 + i) for i, (x, y) in enumerate(pairs)
    ]
    directory.mkdir(parents=True, exist_ok=True)
    written = _guard(
        point,
        "write_training_data raised on validation inputs",
        info.task.write_training_data,  # type: ignore[attr-defined]
        cfg.task,
        bundle.artifacts,
        examples,
        directory,
    )
    if not isinstance(written, TrainingDataWritten):
        raise ContractError(
            point,
            f"write_training_data returned {_short(written)}",
            "return engine.task_monitoring.TrainingDataWritten(extra=<path>, rows=n)",
        )
    inside = Path(written.extra).resolve().is_relative_to(directory.resolve())
    counted = written.rows + sum(written.skipped.values()) == len(examples)
    if not inside or not counted or written.rows < 1:
        raise ContractError(
            point,
            f"on {len(examples)} labelled validation inputs it returned {_short(written)}",
            "write under `directory`, return its path as `extra`, and count every example "
            "as written (rows) or skipped (by reason)",
        )
    data = getattr(cfg.task, "data", None)
    if data is None or not hasattr(data, "extra"):
        raise ContractError(
            point,
            "the task writes training data but its config has no task.data.extra to read it",
            "add `extra: str | None = None` to the data config and add its rows to the "
            "training split in build_data",
        )
    task_cfg = copy.deepcopy(cfg.task)
    task_cfg.data.extra = written.extra
    more = _guard(
        point,
        "build_data with task.data.extra raised",
        info.task.build_data,
        task_cfg,
        seed=cfg.seed,
    )
    grew = (_length(more.train) or 0) - (_length(bundle.train) or 0)
    if grew != written.rows or _length(more.val) != _length(bundle.val):
        raise ContractError(
            point,
            f"with task.data.extra the training split grew by {grew} (wrote {written.rows}) "
            f"and validation went from {_length(bundle.val)} to {_length(more.val)}",
            "add every written row to the training split, and none to validation",
        )


def _check_examples(predictor: Any) -> list[Any]:
    examples = _guard("predictor", "example_inputs() raised", predictor.example_inputs)
    if not isinstance(examples, list) or not examples:
        raise ContractError(
            "predictor",
            f"example_inputs() returned {_short(examples)}, not a non-empty list",
            "return a few valid inputs, e.g. rows or images stored in the artifacts",
        )
    try:
        json.dumps(examples, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ContractError(
            "predictor",
            f"example_inputs() are not JSON-ready: {exc}",
            "return inputs as a client would send them in a request (JSON values)",
        ) from None
    return examples


def _check_schema(predictor: Any, examples: list[Any]) -> Any:
    import jsonschema

    schema = _guard("predictor", "input_schema() raised", predictor.input_schema)
    if not isinstance(schema, dict):
        raise ContractError(
            "predictor",
            f"input_schema() returned {type(schema).__name__}, not a dict",
            "return a JSON Schema dict describing one input",
        )
    validator_class = jsonschema.validators.validator_for(schema)
    try:
        validator_class.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ContractError(
            "predictor",
            f"input_schema() is not valid JSON Schema: {exc.message}",
            "see https://json-schema.org/understanding-json-schema/",
        ) from None
    validator = validator_class(schema)
    for i, example in enumerate(examples):
        errors = sorted(validator.iter_errors(example), key=lambda e: list(e.path))
        if errors:
            raise ContractError(
                "predictor",
                f"input_schema() rejects example input {i} ({_short(example)}): {errors[0].message}",
                "make the schema and example_inputs() agree",
            )
    for bad in MALFORMED_INPUTS:
        if not validator.is_valid(bad):
            return bad
    raise ContractError(
        "predictor",
        f"input_schema() accepts every malformed input tried: {list(MALFORMED_INPUTS)}",
        "give the schema a type (and required keys) so a request with the wrong shape is "
        "refused before predict",
    )


def _check_predictions(predictor: Any, examples: list[Any]) -> list[dict[str, Any]]:
    outputs = _guard("predictor", "predict(example_inputs()) raised", predictor.predict, examples)
    if not isinstance(outputs, list) or len(outputs) != len(examples):
        raise ContractError(
            "predictor",
            f"predict() on {len(examples)} inputs returned {_short(outputs)}",
            "return a list with one dict per input, in order",
        )
    for i, out in enumerate(outputs):
        if not isinstance(out, dict):
            raise ContractError(
                "predictor",
                f"predict() returned {type(out).__name__} for input {i}, not a dict",
                "return one JSON-ready dict per input",
            )
        try:
            json.dumps(out, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ContractError(
                "predictor",
                f"prediction {i} is not JSON-ready: {exc}",
                "convert tensors/numpy values with float()/int()/.tolist()",
            ) from None
    for i, example in enumerate(examples):
        alone = _guard(
            "predictor", "predict() on a single input raised", predictor.predict, [example]
        )
        if not isinstance(alone, list) or len(alone) != 1 or not _close(alone[0], outputs[i]):
            raise ContractError(
                "predictor",
                f"input {i} predicts {_short(alone)} alone but {_short(outputs[i])} in a batch",
                "make predictions independent of the other inputs in a batch (serving "
                "batches requests dynamically)",
            )
    return outputs


# -- helpers -----------------------------------------------------------------------


@contextmanager
def _timed(seconds: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started


def _guard(point: str, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn``; turn an exception into a ContractError for ``point``."""
    try:
        return fn(*args, **kwargs)
    except ContractError:
        raise
    except Exception as exc:
        raise ContractError(
            point,
            f"{what}: {_describe(exc)}",
            "see the traceback above this error (exception chaining) for where it came from",
        ) from exc


def _check_scalar_loss(point: str, method: str, loss: Any) -> None:
    import torch

    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ContractError(
            point,
            f"{method} returned {shape}, not a scalar tensor",
            "return the mean loss of the batch as a 0-d tensor",
        )
    if not torch.isfinite(loss.detach()).all():
        raise ContractError(
            point,
            f"{method} returned a non-finite loss ({float(loss.detach())})",
            "check inputs for NaN and the scale of features/targets",
        )


def _first_batch(bundle: DataBundle, split: str, batch_size: int) -> Any:
    from torch.utils.data import DataLoader

    loader = DataLoader(
        getattr(bundle, split), batch_size=batch_size, shuffle=False, collate_fn=bundle.collate_fn
    )
    return _guard("training", f"loading the first {split} batch raised", next, iter(loader))


def _first_item(dataset: Any) -> Any:
    return _guard("data", "val[0] raised", dataset.__getitem__, 0)


def _length(dataset: Any) -> int | None:
    try:
        return len(dataset)
    except TypeError:
        return None


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _normalised(value: Any) -> Any:
    """Tuples as lists, so a JSON round trip compares equal."""
    if isinstance(value, Mapping):
        return {k: _normalised(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalised(v) for v in value]
    return value


def _same(a: Any, b: Any) -> bool:
    """Exact equality through tensors, arrays, mappings and sequences."""
    import numpy as np
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.shape == b.shape
            and bool(torch.equal(a, b))
        )
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _close(a: Any, b: Any, rel: float = 1e-4, abs_: float = 1e-5) -> bool:
    """Equality of JSON-like predictions, with a float tolerance."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rel, abs_) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y, rel, abs_) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _task_metric(info: TaskInfo, task_cfg: Any) -> tuple[str, str]:
    """The task's own ranking metric (``metric_for(cfg)`` when it has one)."""
    result: tuple[str, str] = _guard("config", "metric_for(cfg) raised", info.metric, task_cfg)
    return result
