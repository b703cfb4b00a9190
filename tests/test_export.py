"""`lepton export`: ONNX and torch.export of every task plugin's model match PyTorch on a
fixed batch; an ONNX export is evaluated, predicted with and quantized (int8) like a
checkpoint; the mistakes a user can make are clear errors (exit 2).

The runs train in this process (``scaling=inprocess``, the tasks' built-in demo data, a
200-row table for the scaffolded tabular task): no Ray.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from serve_fixtures import QUICK, tabular_overrides, tabular_plugin

from engine.errors import ConfigError, ExportError, OutputError
from engine.export.exporter import ExportRequest, export
from engine.export.graph import TOLERANCE
from engine.export.report import format_report

TASKS = ("vision", "nlp", "recsys", "exporttab")
FAST = {"latency_budget_s": 0.02}


def _train(root: Path, name: str, *overrides: str, epochs: int = 1) -> Path:
    from engine.config.load import load_config
    from engine.train.driver import train

    loaded = load_config(
        [*overrides, *QUICK, f"trainer.epochs={epochs}", f"run.dir={root}", f"run.name={name}"]
    )
    train(loaded.config, loaded.info, loaded.yaml, echo=lambda _: None)
    return root / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One small trained run per task plugin (vision and NLP on their default data)."""
    root = tmp_path_factory.mktemp("export-runs")
    with tabular_plugin("exporttab", root) as table:
        yield {
            "vision": _train(root, "vision", "task=vision", epochs=2),
            "nlp": _train(root, "nlp", "task=nlp", epochs=2),
            "recsys": _train(root, "recsys", "task=recsys"),
            "exporttab": _train(
                root, "exporttab", *tabular_overrides("exporttab", table), "trainer.batch_size=32"
            ),
        }


@pytest.fixture(scope="module")
def bilstm(tmp_path_factory):
    root = tmp_path_factory.mktemp("bilstm")
    return _train(
        root, "bilstm", "task=nlp", "task.model.name=bilstm", "task.data.synthetic_size=200"
    )


@pytest.fixture(scope="module")
def onnx_exports(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx-exports")
    return {
        task: export(ExportRequest(str(run), "onnx", output=str(out / task), **FAST))
        for task, run in runs.items()
    }


def _close(a, b, path: str = "") -> None:
    """JSON-ready predictions equal, numbers within the export tolerance."""
    if isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-4), f"{path}: {a} != {b}"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def _same_predictions(run: Path, exported: Path) -> None:
    from engine.runs.checkpoint import load_model
    from engine.runs.layout import resolve_checkpoint

    original = load_model(resolve_checkpoint(run)).predictor()
    served = load_model(exported).predictor()
    inputs = original.example_inputs()
    assert served.example_inputs() == inputs
    _close(original.predict(inputs), served.predict(inputs))


def _check_layout(report: dict, fmt: str, precision: str) -> dict:
    dest = Path(report["written_to"])
    meta = json.loads((dest / "task.json").read_text())
    record = meta["export"]
    assert record["format"] == fmt and record["precision"] == precision
    assert set(meta["files"]) == {*record["files"], "export.json"}
    assert json.loads((dest / "export.json").read_text())["format"] == fmt
    assert not [p for p in dest.parent.iterdir() if ".partial-" in p.name]
    return record


@pytest.mark.parametrize("task", TASKS)
def test_onnx_export_matches_pytorch_and_evaluates_the_same(task, runs, onnx_exports):
    from engine.inference.evaluate import evaluate

    report = onnx_exports[task]
    record = _check_layout(report, "onnx", "fp32")
    assert isinstance(record["opset"], int) and record["opset"] >= 17
    assert report["validation"]["max_abs_diff"] <= TOLERANCE["atol"] * 10
    dest = Path(report["written_to"])
    _same_predictions(runs[task], dest)
    before = evaluate(runs[task], [])["metrics"]
    after = evaluate(dest, [])["metrics"]
    metric = report["metric"]
    assert abs(after[metric] - before[metric]) < 0.001  # 0.1 point
    assert report["before"]["metrics"][metric] == pytest.approx(before[metric])


@pytest.mark.parametrize("task", TASKS)
def test_torch_export_matches_pytorch(task, runs, tmp_path):
    report = export(
        ExportRequest(str(runs[task]), "torch-export", output=str(tmp_path / "x"), **FAST)
    )
    _check_layout(report, "torch-export", "fp32")
    assert report["validation"]["max_abs_diff"] <= TOLERANCE["atol"]
    _same_predictions(runs[task], tmp_path / "x")


def test_safetensors_export_is_the_weights_alone(runs, tmp_path):
    report = export(
        ExportRequest(str(runs["vision"]), "safetensors", output=str(tmp_path / "w"), **FAST)
    )
    _check_layout(report, "safetensors", "fp32")
    assert not (tmp_path / "w" / "training_state.safetensors").exists()
    metric = report["metric"]
    assert report["after"]["metrics"][metric] == report["before"]["metrics"][metric]
    _same_predictions(runs["vision"], tmp_path / "w")


@pytest.mark.parametrize(("task", "method"), [("nlp", "dynamic"), ("vision", "static")])
def test_int8_loses_under_a_point_and_is_smaller(task, method, runs, tmp_path, capsys):
    report = export(
        ExportRequest(str(runs[task]), "onnx", quantize="int8", output=str(tmp_path / "q"))
    )
    record = _check_layout(report, "onnx", "int8")
    assert record["quantization"]["method"] == method
    metric = report["metric"]
    drop = report["before"]["metrics"][metric] - report["after"]["metrics"][metric]
    assert drop < 0.01, f"int8 {task} lost {100 * drop:.2f} points of {metric}"
    assert report["after"]["size_bytes"] < report["before"]["size_bytes"] / 2
    table = format_report(report)
    assert "x smaller" in table and "latency, batch 32" in table and "onnxruntime" in table
    with capsys.disabled():
        print(f"\n{table}")


def test_predict_reads_an_export_and_a_changed_file_is_refused(runs, onnx_exports, tmp_path):
    import shutil

    from engine.errors import CheckpointError
    from engine.inference.predict import predict

    texts = tmp_path / "texts.txt"
    texts.write_text("my invoice was charged twice\nthe app crashes on login\n")
    out = {}
    for name, path in (("checkpoint", runs["nlp"]), ("onnx", onnx_exports["nlp"]["written_to"])):
        predict(path, texts, tmp_path / f"{name}.jsonl")
        out[name] = [
            json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()
        ]
    _close(out["onnx"], out["checkpoint"])
    damaged = shutil.copytree(onnx_exports["nlp"]["written_to"], tmp_path / "damaged")
    data = bytearray((damaged / "model.onnx").read_bytes())
    data[-20] ^= 0xFF
    (damaged / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.onnx does not match the SHA-256"):
        predict(damaged, texts, tmp_path / "damaged.jsonl")


def test_serve_info_says_format_and_precision(onnx_exports, runs):
    from engine.serve.models import resolve_models

    (checkpoint,) = resolve_models([str(runs["nlp"])])
    (exported,) = resolve_models([onnx_exports["nlp"]["written_to"]])
    assert (checkpoint.info["format"], checkpoint.info["precision"]) == ("checkpoint", "fp32")
    assert (exported.info["format"], exported.info["precision"]) == ("onnx", "fp32")


# -- mistakes ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["safetensors", "torch-export"])
def test_int8_needs_onnx(fmt, tmp_path):
    with pytest.raises(ConfigError, match="--format onnx only"):
        export(ExportRequest(str(tmp_path), fmt, quantize="int8"))


def test_an_existing_export_is_replaced_only_with_force(runs, tmp_path):
    import dataclasses

    request = ExportRequest(
        str(runs["exporttab"]), "safetensors", output=str(tmp_path / "e"), **FAST
    )
    export(request)
    with pytest.raises(OutputError, match="--force"):
        export(request)
    report = export(dataclasses.replace(request, fmt="onnx", force=True))
    _check_layout(report, "onnx", "fp32")
    # Not a directory that holds something else, nor the run's own checkpoint, --force or not.
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not an earlier export"):
        export(dataclasses.replace(request, output=str(tmp_path / "other"), force=True))
    checkpoint = next(runs["exporttab"].glob("checkpoint_*"))
    with pytest.raises(OutputError, match="checkpoint"):
        export(dataclasses.replace(request, output=str(checkpoint), force=True))


def test_exporting_an_export_is_refused(onnx_exports, tmp_path):
    with pytest.raises(ExportError, match="already an export"):
        export(ExportRequest(onnx_exports["nlp"]["written_to"], "onnx", output=str(tmp_path / "y")))


def test_a_model_without_quantizable_layers_is_refused(tmp_path):
    import torch

    from engine.export.graph import export_onnx
    from engine.export.quantize import quantize
    from engine.task import ExportSpec

    class Scale(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x) * 2.0 + 1.0

    spec = ExportSpec(Scale(), (torch.randn(4, 3),), ("input",))
    record = export_onnx(spec, tmp_path)
    with pytest.raises(ExportError, match="no layer int8 quantization applies to"):
        quantize(tmp_path / record["file"], tmp_path / "q.onnx", record["op_types"], None)
    assert not (tmp_path / "q.onnx").exists()


@pytest.mark.parametrize("fmt", ["onnx", "torch-export"])
def test_an_unexportable_plugin_model_names_the_module_and_leaves_nothing(fmt, bilstm, tmp_path):
    """The NLP plugin's BiLSTM packs its sequences by length: torch.export cannot trace it."""
    dest = tmp_path / "lstm"
    with pytest.raises(ExportError, match=r"BiLSTMClassifier model .* module LSTM \(lstm\)"):
        export(ExportRequest(str(bilstm), fmt, output=str(dest), **FAST))
    assert not dest.exists() and not list(tmp_path.iterdir())


def test_an_unexportable_model_names_the_module_at_fault(tmp_path):
    import torch

    from engine.export.graph import export_program
    from engine.task import ExportSpec

    class DataDependent(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nonzero(x > 0).float().sum(0)[None] if x.sum() > 0 else x

    spec = ExportSpec(DataDependent(), (torch.randn(4, 3),), ("input",))
    with pytest.raises(ExportError, match="DataDependent model .*: module DataDependent cannot"):
        export_program(spec, tmp_path)


def test_a_missing_extra_names_the_install(tmp_path):
    """With onnxscript not importable, `lepton export --format onnx` says what to install."""
    code = (
        "import sys; sys.modules['onnxscript'] = None\n"
        "from engine.cli import main\n"
        f"sys.exit(main(['export', {str(tmp_path)!r}, '--format', 'onnx']))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "onnxscript" in done.stderr and "pip install 'lepton-engine[export]'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_cli_exports_prints_the_table_and_evaluates_it(runs, tmp_path, lepton):
    dest = tmp_path / "cli-export"
    done = lepton("export", str(runs["vision"]), "--format", "onnx", "-o", str(dest))
    assert done.returncode == 0, done.stderr
    assert "file size" in done.stdout and "val/accuracy" in done.stdout
    assert f"Written to: {dest}" in done.stdout
    done = lepton("evaluate", str(dest))
    assert done.returncode == 0, done.stderr
    assert "val/accuracy" in done.stdout
    done = lepton("export", str(runs["vision"]), "--format", "safetensors", "--quantize", "int8")
    assert (
        done.returncode == 2 and "quantized tensors cannot be stored as safetensors" in done.stderr
    )


@pytest.mark.slow
def test_an_object_store_run_exports_to_an_object_store(runs, object_store, tmp_path):
    """PATH and -o as s3:// URIs (a real S3-API server on 127.0.0.1): the export is uploaded
    with task.json last, and loads from there like a checkpoint."""
    from engine.runs.storage import Location

    bucket = object_store.new_bucket()
    Location.parse(f"{bucket}/runs/nlp").upload(runs["nlp"])
    dest = f"{bucket}/exports/nlp-int8"
    report = export(
        ExportRequest(f"{bucket}/runs/nlp", "onnx", quantize="int8", output=dest, **FAST)
    )
    assert report["written_to"] == dest
    keys = object_store.keys(dest)
    assert {k.rsplit("/", 1)[-1] for k in keys} == {"model.onnx", "export.json", "task.json"}
    from engine.runs.checkpoint import load_model

    loaded = load_model(dest)
    assert loaded.meta["export"]["precision"] == "int8"
    texts = ["my invoice was charged twice", "the app crashes on login"]
    local = load_model(
        runs["nlp"]
        / json.loads((runs["nlp"] / "result.json").read_text())["summary"]["best_checkpoint"]
    )
    assert [p["label"] for p in loaded.predictor().predict(texts)] == [
        p["label"] for p in local.predictor().predict(texts)
    ]
