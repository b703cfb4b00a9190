"""An export directory as a model: what :func:`engine.runs.checkpoint.load_model` calls
when a ``task.json`` carries an ``export`` record.

``onnx`` → :class:`~engine.export.runtime.OnnxRuntimeModule`, ``torch-export`` → the
program's module, each wrapped by the task's ``exported_model`` hook when it has one;
``safetensors`` is a plain weights checkpoint, loaded as every checkpoint is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.errors import CheckpointError
from engine.task import TaskInfo

EXPORT_KEY = "export"
RUNTIME_FORMATS = ("onnx", "torch-export")


def export_record(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The ``export`` record of a ``task.json``, or None for a checkpoint."""
    record = meta.get(EXPORT_KEY)
    return record if isinstance(record, dict) else None


def format_and_precision(meta: dict[str, Any]) -> tuple[str, str]:
    """What is served: (``onnx`` / ``torch-export`` / ``safetensors`` / ``checkpoint``,
    ``fp32`` / ``int8``)."""
    record = export_record(meta)
    if record is None:
        return "checkpoint", "fp32"
    return str(record.get("format")), str(record.get("precision", "fp32"))


def is_runtime_export(meta: dict[str, Any]) -> bool:
    record = export_record(meta)
    return record is not None and record.get("format") in RUNTIME_FORMATS


def runtime_module(path: Path, record: dict[str, Any]) -> Any:
    """The exported graph as a ``torch.nn.Module`` (no task wrapping)."""
    from engine.export.runtime import OnnxRuntimeModule, load_program

    fmt, file = record.get("format"), record.get("file")
    if not isinstance(file, str) or not (path / file).is_file():
        raise CheckpointError(
            f"Export {path}: its task.json names no model file that exists ({file!r})."
        )
    if fmt == "onnx":
        return OnnxRuntimeModule(
            path / file, list(record["input_names"]), list(record["output_names"])
        )
    return load_program(path / file)


def exported_model(info: TaskInfo, task_cfg: Any, meta: dict[str, Any], path: Path) -> Any:
    """The model a task's predictor and validation step run on, for an export directory."""
    record = export_record(meta)
    assert record is not None
    return wrap_runtime(info, runtime_module(path, record), task_cfg, meta["artifacts"])


def wrap_runtime(info: TaskInfo, runtime: Any, task_cfg: Any, artifacts: Any) -> Any:
    """``runtime`` as the task's code needs it: its ``exported_model`` hook, if any."""
    if info.features.exported_model:
        return info.task.exported_model(runtime, task_cfg, artifacts)  # type: ignore[attr-defined]
    return runtime
