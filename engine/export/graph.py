"""Writing the graph: ONNX through ``torch.onnx.export(..., dynamo=True)`` and
``torch.export`` programs (``.pt2``), each checked against the PyTorch module on a fixed
batch after it is written. An export that does not match is an error, not a warning.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import torch

from engine.errors import ExportError
from engine.export.deps import require
from engine.export.spec import axes_of, run_module
from engine.runs.storage import first_line
from engine.task import ExportSpec

#: How close an fp32 export's outputs must be to the PyTorch model's (``numpy.allclose``).
TOLERANCE = {"atol": 1e-4, "rtol": 1e-3}
#: One self-contained ONNX file up to this many bytes of weights (protobuf's 2 GiB limit).
SINGLE_FILE_BYTES = 1 << 30

ONNX_FILE = "model.onnx"
PROGRAM_FILE = "model.pt2"


def dynamic_shapes(spec: ExportSpec) -> tuple[dict[int, Any], ...]:
    """``torch.export`` dims per input, one ``Dim`` per axis name (shared names: equal sizes)."""
    dims: dict[str, Any] = {}
    out = []
    for axes in axes_of(spec).values():
        out.append(
            {axis: dims.setdefault(name, torch.export.Dim(name)) for axis, name in axes.items()}
        )
    return tuple(out)


def _innermost(exc: BaseException) -> BaseException:
    """The exception at the root of ``exc``'s chain (torch.onnx wraps torch.export's)."""
    seen = {id(exc)}
    while (nxt := exc.__cause__ or exc.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        exc = nxt
    return exc


def _where(exc: BaseException, root: torch.nn.Module) -> str | None:
    """Where in the model tracing failed: the innermost module of ``root`` on the stack
    (its name in the model and class), and the torch function it called there."""
    names = {id(m): n for n, m in root.named_modules()}
    module, call = None, None
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        owner = frame.f_locals.get("self")
        if isinstance(owner, torch.nn.Module) and id(owner) in names:
            name = names[id(owner)]
            module = f"{type(owner).__name__}" + (f" ({name})" if name else "")
            call = None
        elif module is not None and call is None and "torch" in frame.f_code.co_filename:
            mod = frame.f_globals.get("__name__", "")
            if not mod.startswith(("torch._", "torch.fx", "torch.export")):
                call = f"{mod}.{frame.f_code.co_name}"
        tb = tb.tb_next
    if module is None:
        return None
    return f"module {module}" + (f", in {call}" if call else "")


def _unexportable(fmt: str, spec: ExportSpec, exc: BaseException) -> ExportError:
    """The error for a model the format cannot express: the operator or module at fault."""
    root = _innermost(exc)
    text = f"{exc}\n{root}"
    found = re.findall(r"\baten(?:::|\.)([A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?)", text)
    where = _where(root, spec.module)
    op = f"operator aten::{found[0]}" if found else None
    what = f"{where} ({op})" if where and op else where or op
    kind = type(spec.module).__name__
    detail = f": {what} cannot be exported" if what else ""
    reason = " ".join(first_line(root).split())[:300]
    return ExportError(
        f"The {kind} model cannot be exported to {fmt}{detail} ({type(root).__name__}: {reason}).",
        hint="Choose another task.model for this format, or export with another --format "
        "(safetensors always works).",
    )


def _strip_debug_info(onnx: Any, path: Path) -> None:
    """Drop what the exporter records per node for debugging (the PyTorch stack trace,
    the FX node's name and meta, as ``metadata_props`` and doc strings): about a tenth
    of a small model's file, and nothing a runtime reads."""
    model = onnx.load(str(path), load_external_data=False)
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    onnx.save(model, str(path))


def export_onnx(spec: ExportSpec, directory: Path) -> dict[str, Any]:
    """Write ``model.onnx`` into ``directory``; check it (onnx.checker, onnxruntime against
    PyTorch on the spec's batch) and return what ``task.json`` records of it."""
    onnx, _, _ = require("onnx", "onnxscript", "onnxruntime", why="--format onnx")
    path = directory / ONNX_FILE
    weights = sum(p.numel() * p.element_size() for p in spec.module.parameters())
    external = weights > SINGLE_FILE_BYTES
    spec.module.eval()
    with warnings.catch_warnings():
        # Inputs sharing an axis name (input_ids and attention_mask: batch, sequence) make
        # torch warn that the name is "not used" for the second; the graph has it.
        warnings.filterwarnings("ignore", message=".*axis name.*will not be used")
        try:
            program = torch.onnx.export(
                spec.module,
                spec.example_inputs,
                dynamo=True,
                input_names=list(spec.input_names),
                output_names=list(spec.output_names),
                dynamic_shapes=dynamic_shapes(spec),
                external_data=external,
                optimize=True,
                verbose=False,
            )
        except Exception as exc:  # torch.export / the ONNX translator: many error types
            raise _unexportable("ONNX", spec, exc) from None
    if program is None:  # only the deprecated TorchScript path returns None
        raise ExportError("torch.onnx.export returned no program.")
    program.save(str(path), external_data=external)
    if not external:  # (an external-data model keeps them: re-saving would move its data)
        _strip_debug_info(onnx, path)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # onnx.checker.ValidationError, shape inference errors
        raise ExportError(f"The ONNX model fails onnx.checker: {first_line(exc)}") from None
    model = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return {
        "file": ONNX_FILE,
        "files": sorted(p.name for p in directory.iterdir() if p.is_file()),
        "opset": opset,
        "external_data": external,
        "input_names": list(spec.input_names),
        "output_names": list(spec.output_names),
        "dynamic_axes": {k: {str(a): n for a, n in v.items()} for k, v in axes_of(spec).items()},
        "onnx_version": onnx.__version__,
        "op_types": sorted({node.op_type for node in model.graph.node}),
    }


def export_program(spec: ExportSpec, directory: Path) -> dict[str, Any]:
    """Write ``model.pt2`` (``torch.export``) into ``directory``; return its record."""
    spec.module.eval()
    try:
        program = torch.export.export(
            spec.module, spec.example_inputs, dynamic_shapes=dynamic_shapes(spec)
        )
    except Exception as exc:  # torch.export's UserError, Unsupported, guard failures
        raise _unexportable("torch.export", spec, exc) from None
    path = directory / PROGRAM_FILE
    torch.export.save(program, str(path))
    return {
        "file": PROGRAM_FILE,
        "input_names": list(spec.input_names),
        "output_names": list(spec.output_names),
        "dynamic_axes": {k: {str(a): n for a, n in v.items()} for k, v in axes_of(spec).items()},
    }


def outputs_of(spec: ExportSpec, runtime: torch.nn.Module, what: str) -> tuple[Any, Any, float]:
    """(PyTorch's output, the export's, their largest absolute difference) on the spec's
    batch, as numpy arrays; an ExportError when their shapes differ."""
    import numpy as np

    expected = run_module(spec).detach().float().cpu().numpy()
    with torch.no_grad():
        got = runtime(*spec.example_inputs).detach().float().cpu().numpy()
    if got.shape != expected.shape:
        raise ExportError(
            f"The {what} export's output has shape {list(got.shape)}; the PyTorch model's "
            f"has {list(expected.shape)}."
        )
    return expected, got, float(np.max(np.abs(got - expected))) if got.size else 0.0


def check_outputs(spec: ExportSpec, runtime: torch.nn.Module, what: str) -> dict[str, Any]:
    """Run ``runtime`` and the PyTorch module on the spec's batch: an ExportError when the
    outputs differ beyond :data:`TOLERANCE`; else the largest difference."""
    import numpy as np

    expected, got, diff = outputs_of(spec, runtime, what)
    if not np.allclose(got, expected, atol=TOLERANCE["atol"], rtol=TOLERANCE["rtol"]):
        raise ExportError(
            f"The {what} export does not match the PyTorch model on a fixed batch of "
            f"{len(expected)}: largest difference {diff:.3g} (tolerance: atol "
            f"{TOLERANCE['atol']}, rtol {TOLERANCE['rtol']}).",
            hint="The export is not written. Report the model and torch version; "
            "--format safetensors keeps the PyTorch model.",
        )
    return {"batch": len(expected), "max_abs_diff": diff, "tolerance": dict(TOLERANCE)}
