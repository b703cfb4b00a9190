"""``lepton export``: the flow from a run (or checkpoint, sweep, URI) to an export
directory, with the numbers of its trade.

1. The checkpoint is resolved and loaded as ``lepton evaluate`` does; its validation split
   (and, for static int8, a seeded sample of its training split) built from its task config.
2. The task's export spec (its ``export_spec`` hook, or the engine's default) on a fixed
   validation batch says what is exported; the graph is written into a staging directory and
   checked against the PyTorch model on that batch (an error beyond the tolerance).
3. int8 (ONNX only): onnxruntime's quantization of that graph (:mod:`engine.export.quantize`).
4. The export is loaded back as evaluate/predict/serve load it; the task's metrics before and
   after (the same code as ``lepton evaluate``), CPU latency at batch 1 and 32 and the file
   sizes go into ``export.json``; ``task.json`` is written last and the directory renamed
   into place (:mod:`engine.export.record`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ConfigError, ExportError
from engine.export import record as rec
from engine.export.deps import NEEDS, require
from engine.export.measure import LATENCY_BATCHES, files_size, latency_ms, torch_threads
from engine.export.spec import CHECK_BATCH, batch_of, first_batch, spec_for
from engine.runs.storage import Location
from engine.task_monitoring import without_extra

FORMATS = ("onnx", "torch-export", "safetensors")
QUANTIZE = ("int8",)
#: Training samples the static int8 ranges are calibrated on, and per calibration batch.
CALIBRATION_SAMPLES = 256
CALIBRATION_BATCH = 32


@dataclass(frozen=True)
class ExportRequest:
    path: str
    fmt: str
    quantize: str | None = None
    output: str | None = None
    force: bool = False
    threads: int = 1
    calibration_samples: int = CALIBRATION_SAMPLES
    #: Seconds of timed calls per latency figure (at least 10 calls each).
    latency_budget_s: float = 0.5


def check_request(req: ExportRequest) -> None:
    if req.fmt not in FORMATS:
        raise ConfigError(f"--format {req.fmt} is unknown; allowed: {', '.join(FORMATS)}.")
    if req.quantize is not None and req.quantize not in QUANTIZE:
        raise ConfigError(f"--quantize {req.quantize} is unknown; allowed: {', '.join(QUANTIZE)}.")
    if req.quantize and req.fmt != "onnx":
        why = (
            "quantized tensors cannot be stored as safetensors"
            if req.fmt == "safetensors"
            else "int8 programs need torch.ao.quantization, which is deprecated in this torch"
        )
        raise ConfigError(
            f"--quantize {req.quantize} works with --format onnx only ({why}).",
            hint=f"lepton export PATH --format onnx --quantize {req.quantize}",
        )
    if req.threads < 1 or req.calibration_samples < 1:
        raise ConfigError("--threads and --calibration-samples must be at least 1.")
    if NEEDS[req.fmt]:
        require(*NEEDS[req.fmt], why=f"--format {req.fmt}")


def export(req: ExportRequest) -> dict[str, Any]:
    """Export the checkpoint ``req.path`` resolves to; return ``export.json``'s contents
    (with ``written_to``)."""
    import shutil

    import torch

    from engine.export.loading import export_record
    from engine.inference.evaluate_data import build_eval_data
    from engine.runs.checkpoint import MODEL_FILE, load_model
    from engine.runs.layout import resolve_checkpoint

    check_request(req)
    started = time.perf_counter()
    checkpoint = resolve_checkpoint(req.path)
    dest = (
        Location.parse(req.output)
        if req.output
        else rec.default_output(checkpoint, req.fmt, req.quantize)
    )
    rec.check_output(dest, force=req.force)
    loaded = load_model(checkpoint)
    already = export_record(loaded.meta)
    if already is not None:
        raise ExportError(
            f"{checkpoint} is already an export ({already.get('format')}, "
            f"{already.get('precision')}).",
            hint="Export the run or checkpoint it came from.",
        )
    info, cfg, artifacts = loaded.info, without_extra(loaded.task_config), loaded.artifacts
    info.task.check(cfg)  # the run's data is still there (it is evaluated and calibrated on)
    torch.manual_seed(0)
    bundle = build_eval_data(loaded, cfg, new_data=False)
    spec = spec_for(
        info, loaded.model, first_batch(bundle.val, CHECK_BATCH, bundle.collate_fn), cfg, artifacts
    )
    staging = rec.staging_dir(dest)
    try:
        with torch_threads(req.threads):
            record, model, runtime = _write(req, spec, staging, loaded, bundle)
            report = _trade(req, loaded, bundle, model, runtime)
        report.update(
            source={
                "checkpoint": str(checkpoint),
                "task": info.name,
                "epoch": loaded.meta.get("epoch"),
            },
            format=req.fmt,
            precision=record["precision"],
            opset=record.get("opset"),
            validation=record.get("validation"),
            quantization=record.get("quantization"),
            files={n: (staging / n).stat().st_size for n in record["files"]},
            threads=req.threads,
            seconds=round(time.perf_counter() - started, 2),
        )
        report["before"]["size_bytes"] = files_size(loaded.path, [MODEL_FILE])
        report["after"]["size_bytes"] = files_size(staging, record["files"])
        record["source"] = {
            "checkpoint": str(checkpoint),
            "files": loaded.meta.get("files", {}).get(MODEL_FILE),
        }
        rec.finish(staging, dest, rec.export_meta(loaded.meta, record), report)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    report["written_to"] = str(dest)
    return report


def _write(
    req: ExportRequest, spec: Any, staging: Path, loaded: Any, bundle: Any
) -> tuple[dict[str, Any], Any, Any]:
    """The exported files in ``staging``: (their record, the model the task's code runs
    on, loaded back from them as evaluate/serve load it, and the runtime module that runs
    the exported graph, None for safetensors)."""
    record, runtime = _write_files(req, spec, staging, loaded, bundle)
    if runtime is None:
        from engine.runs.checkpoint import load_weights

        model = loaded.info.task.build_model(loaded.task_config, loaded.artifacts)
        load_weights(model, staging)
        return record, model.eval(), None
    from engine.export.loading import wrap_runtime

    return record, wrap_runtime(loaded.info, runtime, loaded.task_config, loaded.artifacts), runtime


def _write_files(
    req: ExportRequest, spec: Any, staging: Path, loaded: Any, bundle: Any
) -> tuple[dict[str, Any], Any]:
    import torch

    from engine.export.graph import check_outputs, export_onnx, export_program, outputs_of
    from engine.export.runtime import OnnxRuntimeModule, load_program

    if req.fmt == "safetensors":
        from safetensors.torch import save_model

        from engine.runs.checkpoint import MODEL_FILE

        save_model(loaded.model, str(staging / MODEL_FILE))
        record: dict[str, Any] = {
            "format": "safetensors",
            "file": MODEL_FILE,
            "files": [MODEL_FILE],
            "precision": "fp32",
        }
        return record, None
    if req.fmt == "torch-export":
        record = export_program(spec, staging)
        runtime = load_program(staging / record["file"])
        record["validation"] = check_outputs(spec, runtime, "torch.export")
        record.update(
            format="torch-export",
            precision="fp32",
            files=[record["file"]],
            torch_version=torch.__version__,
        )
        return record, runtime
    record = export_onnx(spec, staging)
    path = staging / record["file"]
    onnx_runtime = OnnxRuntimeModule(path, record["input_names"], record["output_names"])
    record["validation"] = check_outputs(spec, onnx_runtime, "ONNX")
    record.update(format="onnx", precision="fp32", torch_version=torch.__version__)
    if req.quantize and record["external_data"]:
        raise ExportError(
            "int8 quantization of an ONNX model with external data (over 1 GiB of "
            "weights) is not supported.",
            hint="Export it as fp32 (no --quantize).",
        )
    if req.quantize:
        from engine.export.quantize import method_for, quantize

        feeds = None
        if method_for(record["op_types"]) == "static":
            feeds = _calibration_feeds(req, loaded, bundle, record["input_names"])
        fp32 = path.with_name("model.fp32.onnx")
        path.rename(fp32)
        try:
            record["quantization"] = quantize(fp32, path, record["op_types"], feeds)
        finally:
            fp32.unlink(missing_ok=True)
        record["precision"] = req.quantize
        onnx_runtime = OnnxRuntimeModule(path, record["input_names"], record["output_names"])
        # Not held to the fp32 tolerance: the metric before/after is the int8 check.
        record["quantization"]["max_abs_diff"] = outputs_of(spec, onnx_runtime, "int8 ONNX")[2]
    record["runtime"] = onnx_runtime.runtime
    return record, onnx_runtime


def _calibration_feeds(
    req: ExportRequest, loaded: Any, bundle: Any, names: list[str]
) -> list[dict[str, Any]]:
    """Input dicts from a seeded sample of the training split, through the export spec."""
    import numpy as np

    n = min(req.calibration_samples, len(bundle.train))
    order = np.random.default_rng(0).permutation(len(bundle.train))[:n].tolist()
    feeds = []
    for start in range(0, n, CALIBRATION_BATCH):
        batch = batch_of(bundle.train, order[start : start + CALIBRATION_BATCH], bundle.collate_fn)
        spec = spec_for(loaded.info, loaded.model, batch, loaded.task_config, loaded.artifacts)
        feeds.append(
            {
                k: x.detach().cpu().contiguous().numpy()
                for k, x in zip(names, spec.example_inputs, strict=True)
            }
        )
    return feeds


def _trade(
    req: ExportRequest, loaded: Any, bundle: Any, model: Any, runtime: Any
) -> dict[str, Any]:
    """Metrics (the task's, on the validation split) and CPU latency at batch 1 and 32, of
    the PyTorch model (before) and of the export (after)."""
    from engine.inference.evaluate import validation_metrics

    info, cfg, artifacts = loaded.info, without_extra(loaded.task_config), loaded.artifacts
    metric, mode = info.metric(cfg)
    sides: dict[str, dict[str, Any]] = {}
    for side, net in (("before", loaded.model), ("after", model)):
        values, _ = validation_metrics(info.task, net, bundle, cfg, artifacts)
        sides[side] = {"metrics": values, "latency_ms": {}}
    for size in LATENCY_BATCHES:
        batch = first_batch(bundle.val, size, bundle.collate_fn)
        spec = spec_for(info, loaded.model, batch, cfg, artifacts)
        after = (
            runtime if runtime is not None else spec_for(info, model, batch, cfg, artifacts).module
        )
        n = len(spec.example_inputs[0])
        for side, call in (("before", spec.module), ("after", after)):
            sides[side]["latency_ms"][str(size)] = {
                "batch": n,
                "ms": latency_ms(call, spec.example_inputs, budget_s=req.latency_budget_s),
            }
    import torch

    sides["before"]["runtime"] = f"torch {torch.__version__} (eager, fp32)"
    sides["after"]["runtime"] = (
        runtime.runtime if runtime is not None else f"torch {torch.__version__} (eager, fp32)"
    )
    return {"metric": metric, "mode": mode, **sides}
