"""What is exported: the task's :class:`~engine.task.ExportSpec` for a batch (its
``export_spec`` hook), or the engine's default for models that take one tensor.

Batches come from the run's own data: the first samples of the validation split (the
fixed batch the export is checked on, and the latency batches), a seeded sample of the
training split (int8 calibration).
"""

from __future__ import annotations

from typing import Any

import torch

from engine.errors import ExportError
from engine.task import ExportSpec, TaskInfo

#: Samples in the fixed batch an export is checked on (more than 1: a batch dimension
#: of size 1 would be specialised away when tracing).
CHECK_BATCH = 8


def batch_of(dataset: Any, indices: list[int], collate_fn: Any) -> Any:
    from torch.utils.data import default_collate

    items = [dataset[i] for i in indices]
    return (collate_fn or default_collate)(items)


def first_batch(dataset: Any, size: int, collate_fn: Any) -> Any:
    n = min(size, len(dataset))
    if n == 0:
        raise ExportError(
            "The run's validation split is empty: there is nothing to check an export on."
        )
    return batch_of(dataset, list(range(n)), collate_fn)


def spec_for(
    info: TaskInfo, model: torch.nn.Module, batch: Any, cfg: Any, artifacts: Any
) -> ExportSpec:
    """The task's export spec for ``batch``, or the engine's default."""
    if info.features.export_spec:
        spec: ExportSpec = info.task.export_spec(model, batch, cfg, artifacts)  # type: ignore[attr-defined]
    else:
        spec = default_spec(info.name, model, batch)
    if len(spec.input_names) != len(spec.example_inputs):
        raise ExportError(
            f"Task {info.name!r}'s export_spec names {len(spec.input_names)} input(s) for "
            f"{len(spec.example_inputs)} example input(s)."
        )
    bad = [
        n
        for n, x in zip(spec.input_names, spec.example_inputs, strict=True)
        if not torch.is_tensor(x)
    ]
    if bad:
        raise ExportError(
            f"Task {info.name!r}'s export_spec gives input(s) {', '.join(bad)} that are not tensors.",
            hint="An exported graph takes tensors only: keep pre-processing in the predictor.",
        )
    return spec


def default_spec(task: str, model: torch.nn.Module, batch: Any) -> ExportSpec:
    """``model(x)`` for a batch ``x`` or ``(x, y, ...)``: one tensor in, one out."""
    x = batch[0] if isinstance(batch, (tuple, list)) and batch else batch
    if not torch.is_tensor(x):
        raise ExportError(
            f"Task {task!r}'s batches are {type(batch).__name__}s the engine cannot feed "
            "to its model: the default export covers models that take one tensor (batches "
            "x or (x, y)).",
            hint="Give the task an export_spec(model, batch, cfg, artifacts) method "
            "(engine.task.ExportsModel) that says which tensors the model takes.",
        )
    return ExportSpec(model, (x,), ("input",), ("output",), {"input": {0: "batch"}})


def axes_of(spec: ExportSpec) -> dict[str, dict[int, str]]:
    """Every input's varying axes (the batch axis when the spec names none)."""
    return {name: dict(spec.dynamic_axes.get(name) or {0: "batch"}) for name in spec.input_names}


def run_module(spec: ExportSpec) -> torch.Tensor:
    """The PyTorch module's output on the spec's inputs (eval mode, no grad)."""
    spec.module.eval()
    with torch.no_grad():
        out = spec.module(*spec.example_inputs)
    if not torch.is_tensor(out):
        raise ExportError(
            f"The exported module ({type(spec.module).__name__}) returns a "
            f"{type(out).__name__}, not one tensor.",
            hint="Return one tensor from the module export_spec names (wrap the model if needed).",
        )
    return out
