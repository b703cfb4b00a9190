"""The contract kit itself: a sound task passes, and each kind of broken task fails at the
contract point that describes its bug, with a message that says what to fix."""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.hookspecs import hookimpl
from engine.plugins import PluginRegistry
from engine.task import DataBundle, StreamingData
from engine.testing import (
    ContractError,
    check_streaming,
    check_task_contract,
    contract_test,
    streaming_contract_test,
)
from lepton_vision.predictor import VisionPredictor
from lepton_vision.task import VisionTask

CONF = Path(__import__("lepton_vision").__file__).parent / "conf"
TINY = ["trainer.batch_size=16"]


def _registry(task: Any) -> PluginRegistry:
    """A registry holding only ``task`` (named "vision", so vision's config file applies)."""
    module = types.ModuleType("kit_under_test")
    module.lepton_register_tasks = hookimpl(lambda register: register(task))  # type: ignore[attr-defined]
    module.lepton_config_dirs = hookimpl(lambda: [CONF])  # type: ignore[attr-defined]
    registry = PluginRegistry()
    assert registry.add_plugin(module, "kit_under_test"), registry.problems
    assert "vision" in registry.tasks, registry.problems
    return registry


def _fails(task: Any, point: str, *phrases: str, overrides: list[str] = TINY) -> ContractError:
    with pytest.raises(ContractError) as info:
        check_task_contract("vision", overrides, None, registry=_registry(task))
    error = info.value
    assert error.point == point, str(error)
    text = str(error)
    assert text.startswith(f"[contract: {point}] ") and "\n  fix: " in text
    for phrase in phrases:
        assert phrase in text, text
    return error


# -- broken tasks, one bug each ------------------------------------------------------


class Unpicklable(VisionTask):
    def __init__(self) -> None:
        self.loader = lambda: None  # a live object on the task: cannot travel to workers


class NumpyArtifacts(VisionTask):
    def build_data(self, cfg: Any, *, seed: int) -> DataBundle:
        bundle = super().build_data(cfg, seed=seed)
        bundle.artifacts["mean"] = np.asarray(bundle.artifacts["mean"], dtype=np.float32)
        return bundle


class IntKeyArtifacts(VisionTask):
    def build_data(self, cfg: Any, *, seed: int) -> DataBundle:
        bundle = super().build_data(cfg, seed=seed)
        bundle.artifacts["index_to_class"] = dict(enumerate(bundle.artifacts["class_names"]))
        return bundle


class UnseededSplit(VisionTask):
    def build_data(self, cfg: Any, *, seed: int) -> DataBundle:
        return super().build_data(cfg, seed=int(torch.randint(0, 10**6, ()).item()))


class MisreadsSavedArtifacts(VisionTask):
    def build_data(self, cfg: Any, *, seed: int, artifacts: Any = None) -> DataBundle:
        if artifacts is not None:  # bug: shifts the saved normalisation
            artifacts = {**artifacts, "mean": [m + 0.5 for m in artifacts["mean"]]}
        return super().build_data(cfg, seed=seed, artifacts=artifacts)


class NotABundle(VisionTask):
    def build_data(self, cfg: Any, *, seed: int) -> Any:
        bundle = super().build_data(cfg, seed=seed)
        return bundle.train, bundle.val, bundle.artifacts


class EmptyVal(VisionTask):
    def build_data(self, cfg: Any, *, seed: int) -> DataBundle:
        bundle = super().build_data(cfg, seed=seed)
        bundle.val = torch.utils.data.Subset(bundle.val, [])
        return bundle


class DetachedLoss(VisionTask):
    def training_step(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x).detach(), y).requires_grad_()


class LossIgnoresTargets(VisionTask):
    def training_step(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        x, _ = batch
        return model(x).sum() * 0 + 1.0


class PerSampleLoss(VisionTask):
    def training_step(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x), y, reduction="none")


class MissingDefaultMetric(VisionTask):
    def build_metrics(self, cfg: Any, artifacts: Any) -> Any:
        from torchmetrics import MetricCollection

        kept = {k: m for k, m in super().build_metrics(cfg, artifacts).items() if k != "accuracy"}
        return MetricCollection(kept)


class DictMetrics(VisionTask):
    def build_metrics(self, cfg: Any, artifacts: Any) -> Any:
        return dict(super().build_metrics(cfg, artifacts).items())


class VectorMetric(VisionTask):
    def build_metrics(self, cfg: Any, artifacts: Any) -> Any:
        from torchmetrics import MetricCollection
        from torchmetrics.classification import MulticlassAccuracy

        n = len(artifacts["class_names"])
        return MetricCollection(
            {
                "accuracy": MulticlassAccuracy(n, average="micro"),
                "per_class": MulticlassAccuracy(n, average=None),
            }
        )


class _Predictor(VisionPredictor):
    pass


class PermissiveSchema(VisionTask):
    class Pred(_Predictor):
        def input_schema(self) -> dict[str, Any]:
            return {"description": "anything goes"}

    def build_predictor(self, model: Any, cfg: Any, artifacts: Any, device: Any) -> Any:
        return self.Pred(model, artifacts, device)


class SchemaRejectsExamples(VisionTask):
    class Pred(_Predictor):
        def input_schema(self) -> dict[str, Any]:
            return {"type": "string"}

    def build_predictor(self, model: Any, cfg: Any, artifacts: Any, device: Any) -> Any:
        return self.Pred(model, artifacts, device)


class NoExamples(VisionTask):
    class Pred(_Predictor):
        def example_inputs(self) -> list[Any]:
            return []

    def build_predictor(self, model: Any, cfg: Any, artifacts: Any, device: Any) -> Any:
        return self.Pred(model, artifacts, device)


class OneOutputForAll(VisionTask):
    class Pred(_Predictor):
        def predict(self, inputs: Any) -> list[dict[str, Any]]:
            return super().predict(inputs)[:1]

    def build_predictor(self, model: Any, cfg: Any, artifacts: Any, device: Any) -> Any:
        return self.Pred(model, artifacts, device)


class TensorOutputs(VisionTask):
    class Pred(_Predictor):
        def predict(self, inputs: Any) -> list[dict[str, Any]]:
            return [{**out, "raw": torch.tensor(out["score"])} for out in super().predict(inputs)]

    def build_predictor(self, model: Any, cfg: Any, artifacts: Any, device: Any) -> Any:
        return self.Pred(model, artifacts, device)


class BatchDependent(VisionTask):
    class Pred(_Predictor):
        def predict(self, inputs: Any) -> list[dict[str, Any]]:
            return [{**out, "batch_size": len(inputs)} for out in super().predict(inputs)]

    def build_predictor(self, model: Any, cfg: Any, artifacts: Any, device: Any) -> Any:
        return self.Pred(model, artifacts, device)


class NestedSummary(VisionTask):
    """The optional summarize_input hook, returning a nested value."""

    def summarize_input(self, input: Any, artifacts: Any) -> dict[str, Any]:
        return {"size": [8, 8]}


class TensorValidationInputs(VisionTask):
    """The optional validation_inputs hook, yielding tensors instead of request inputs."""

    def validation_inputs(self, cfg: Any, artifacts: Any, *, seed: int, limit: int) -> Any:
        from lepton_vision.data import load_images

        val = load_images(cfg.data, seed).val
        for i in range(limit):
            yield val.images[i], str(val.labels[i])


class UnlimitedValidationInputs(VisionTask):
    """validation_inputs ignoring its limit."""

    def validation_inputs(self, cfg: Any, artifacts: Any, *, seed: int, limit: int) -> Any:
        pairs = super().validation_inputs(cfg, artifacts, seed=seed, limit=limit + 5)
        yield from pairs


class _Shifted(torch.nn.Module):
    """Keeps a random value outside the state dict: it is lost by a checkpoint."""

    def __init__(self, inner: torch.nn.Module, classes: int) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("shift", 3 * torch.randn(classes), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) + self.shift


class StateOutsideStateDict(VisionTask):
    def build_model(self, cfg: Any, artifacts: Any) -> torch.nn.Module:
        return _Shifted(super().build_model(cfg, artifacts), len(artifacts["class_names"]))


@pytest.mark.parametrize(
    ("task", "point", "phrases"),
    [
        (Unpicklable(), "registered", ["does not pickle", "Ray worker"]),
        (NumpyArtifacts(), "data", ["not JSON-serialisable", ".tolist()"]),
        (IntKeyArtifacts(), "data", ["JSON and read back", "int dict keys"]),
        (UnseededSplit(), "data", ["same seed", "seed argument"]),
        (MisreadsSavedArtifacts(), "data", ["given the saved artifacts", "lepton evaluate"]),
        (NotABundle(), "data", ["returned tuple, not engine.task.DataBundle"]),
        (EmptyVal(), "data", ["val dataset is empty"]),
        (DetachedLoss(), "training", ["no model parameter received a gradient"]),
        (LossIgnoresTargets(), "training", ["did not lower the loss (1.00000 -> 1.00000)"]),
        (PerSampleLoss(), "training", ["training_step returned (16,), not a scalar tensor"]),
        (MissingDefaultMetric(), "metrics", ["default metric 'val/accuracy' is not among"]),
        (DictMetrics(), "metrics", ["returned dict, not a torchmetrics MetricCollection"]),
        (VectorMetric(), "metrics", ["metric 'per_class' computes to Tensor, not a scalar"]),
        (PermissiveSchema(), "predictor", ["accepts every malformed input", "__malformed__"]),
        (SchemaRejectsExamples(), "predictor", ["rejects example input 0", "is not of type"]),
        (NoExamples(), "predictor", ["example_inputs() returned [], not a non-empty list"]),
        (OneOutputForAll(), "predictor", ["predict() on 2 inputs returned"]),
        (TensorOutputs(), "predictor", ["prediction 0 is not JSON-ready", "Tensor"]),
        (BatchDependent(), "predictor", ["input 0 predicts", "alone but", "in a batch"]),
        (NestedSummary(), "summarize_input", ["returned {'size': [8, 8]}", "flat dict"]),
        (TensorValidationInputs(), "validation_inputs", ["not JSON-ready", "Tensor"]),
        (UnlimitedValidationInputs(), "validation_inputs", ["validation_inputs(limit=3) gave"]),
        (StateOutsideStateDict(), "checkpoint", ["after save_checkpoint + load_model"]),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, VisionTask) else None,
)
def test_each_broken_task_fails_at_its_contract_point(task, point, phrases):
    _fails(task, point, *phrases)


def test_bad_overrides_fail_the_config_point():
    _fails(VisionTask(), "config", "task.data.nope", overrides=["task.data.nope=1"])
    _fails(VisionTask(), "config", "val_fraction", overrides=["task.data.val_fraction=2"])


def test_check_failure_is_reported_with_the_task_message(tmp_path):
    overrides = ["task.data.format=imagefolder", f"task.data.path={tmp_path / 'absent'}"]
    error = _fails(VisionTask(), "check", "does not exist", overrides=overrides)
    assert error.__cause__ is not None  # the task's own exception stays attached


def test_unknown_task_says_how_to_install():
    with pytest.raises(ContractError, match=r"(?s)\[contract: registered\].*pip install -e"):
        check_task_contract("no_such_task", [], None, registry=PluginRegistry())


# -- a sound task --------------------------------------------------------------------


def test_vision_passes_and_reports_what_it_measured(tmp_path):
    report = check_task_contract("vision", TINY, tmp_path, registry=_registry(VisionTask()))
    assert report.losses[-1] < report.losses[0] and len(report.losses) == 21
    assert report.metric == "val/accuracy" and report.mode == "max"
    assert {"val/accuracy", "val/f1"} <= set(report.metrics)
    assert report.rejected_input == {"__malformed__": True}
    assert len(report.predictions) == len(report.example_inputs) == 2
    assert (tmp_path / "contract-checkpoint" / "task.json").is_file()
    assert set(report.seconds) >= {"data", "training", "metrics", "predictor", "checkpoint"}
    assert "passes the contract" in report.summary()


class RanksByF1(VisionTask):
    def metric_for(self, cfg: Any) -> tuple[str, str]:
        return "val/f1", "max"


class RanksByMissing(VisionTask):
    def metric_for(self, cfg: Any) -> tuple[str, str]:
        return "val/auroc", "max"


def test_metric_for_decides_the_expected_metric():
    registry = _registry(RanksByF1())
    assert check_task_contract("vision", TINY, None, registry=registry).metric == "val/f1"
    _fails(RanksByMissing(), "metrics", "'val/auroc' is not among")


test_contract_test_builds_a_pytest_function = contract_test("vision", TINY)


def test_contract_test_function_is_named_for_the_task():
    assert test_contract_test_builds_a_pytest_function.__name__ == "test_vision_contract"


# -- the streaming point (check_streaming) --------------------------------------------


def _write_image_folder(root: Path) -> Path:
    """Two classes of random 8x8 grey images, as ``root/{train,val}/<class>/<i>.png``."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("val", 8)):
        for name in ("a", "b"):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (8, 8), dtype=np.uint8)
                Image.fromarray(pixels, mode="L").save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> list[str]:
    root = _write_image_folder(tmp_path_factory.mktemp("kit_images"))
    return [
        "task.data.format=imagefolder",
        f"task.data.path={root}",
        "task.data.image_size=8",
        "trainer.batch_size=16",
    ]


class _Flatten:
    """A to_batch wrapper with a bug: images flattened to vectors."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, batch: dict[str, Any]) -> Any:
        x, y = self.inner(batch)
        return x.flatten(1), y


class FlatToBatch(VisionTask):
    def build_data(self, cfg: Any, *, seed: int, artifacts: Any = None) -> Any:
        data = super().build_data(cfg, seed=seed, artifacts=artifacts)
        if isinstance(data, StreamingData):
            data.to_batch = _Flatten(data.to_batch)
        return data


class RefitsWhenStreaming(VisionTask):
    def build_data(self, cfg: Any, *, seed: int, artifacts: Any = None) -> Any:
        data = super().build_data(cfg, seed=seed, artifacts=artifacts)
        if isinstance(data, StreamingData):  # bug: other statistics than map-style's
            data.artifacts = {**data.artifacts, "mean": [m + 0.1 for m in data.artifacts["mean"]]}
        return data


@pytest.mark.ray
def test_streaming_vision_passes_against_its_map_style_path(ray_cluster, image_folder):
    report = check_streaming("vision", image_folder, registry=_registry(VisionTask()))
    print(report.summary())
    assert report.skipped is None
    assert (report.train_rows, report.val_rows) == (48, 16)
    assert report.losses[-1] < report.losses[0] and len(report.losses) == 21
    assert report.metrics == pytest.approx(report.map_metrics, abs=1e-4)
    assert "val/accuracy" in report.metrics and "streams as it trains" in report.summary()


@pytest.mark.ray
@pytest.mark.parametrize(
    ("task", "phrases"),
    [
        (
            FlatToBatch(),
            [
                "training_step on the first streamed train batch (iter_torch_batches, then "
                "to_batch) raised",
                "RuntimeError",
            ],
        ),
        (
            RefitsWhenStreaming(),
            ["streamed artifacts differ from the map-style ones", "artifacts['mean'][0]"],
        ),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, VisionTask) else None,
)
def test_a_broken_streaming_path_fails_the_streaming_point(
    ray_cluster, image_folder, task, phrases
):
    with pytest.raises(ContractError) as info:
        check_streaming("vision", image_folder, registry=_registry(task))
    text = str(info.value)
    assert info.value.point == "streaming", text
    assert text.startswith("[contract: streaming] ") and "\n  fix: " in text
    for phrase in phrases:
        assert phrase in text, text


@dataclass
class _PlainData:
    path: str | None = None


@dataclass
class _PlainConfig:
    data: _PlainData = field(default_factory=_PlainData)


class NoStreamingKey(VisionTask):
    name = "plain_kit"
    config_class = _PlainConfig


def test_a_task_without_streaming_is_skipped_with_the_reason(tmp_path):
    conf = tmp_path / "conf" / "task"
    conf.mkdir(parents=True)
    (conf / "plain_kit.yaml").write_text(
        "# @package _global_\ntask:\n  name: plain_kit\n  data:\n    path: null\n"
    )
    module = types.ModuleType("kit_plain")
    module.lepton_register_tasks = hookimpl(lambda register: register(NoStreamingKey()))  # type: ignore[attr-defined]
    module.lepton_config_dirs = hookimpl(lambda: [tmp_path / "conf"])  # type: ignore[attr-defined]
    registry = PluginRegistry()
    assert registry.add_plugin(module, "kit_plain"), registry.problems
    report = check_streaming("plain_kit", [], registry=registry)
    assert report.skipped == "its config has no task.data.streaming: it does not stream"
    assert "streaming check skipped" in report.summary()
    test = streaming_contract_test("plain_kit", [], registry=registry)
    assert test.__name__ == "test_plain_kit_streaming"
    with pytest.raises(pytest.skip.Exception, match="does not stream"):
        test()


def test_artifact_differences_name_the_place():
    from engine.testing_streaming import artifact_difference

    saved = {"mean": [0.5, 0.25], "classes": ["a", "b"], "size": 8}
    assert artifact_difference(saved, {**saved, "streaming": {"fit_rows": 3}}) is None
    assert artifact_difference(saved, {**saved, "mean": [0.5, 0.25 + 1e-12]}) is None
    moved = artifact_difference(saved, {**saved, "mean": [0.5, 0.3]})
    assert moved == "artifacts['mean'][1]: 0.3 != 0.25 (map-style)"
    assert "lacks ['size']" in str(artifact_difference(saved, {"mean": [], "classes": []}))
    assert "has 1 items, not 2" in str(artifact_difference(saved, {**saved, "classes": ["a"]}))
    assert (
        artifact_difference(saved, {**saved, "size": "8"})
        == "artifacts['size']: '8' != 8 (map-style)"
    )
