"""int8 through onnxruntime's quantization tools, on the ONNX graph.

- A graph with convolutions (the vision CNNs) is quantized *statically*
  (``quantize_static``): weights int8 per channel, activations uint8 with ranges
  calibrated on a seeded sample of the run's training data, QDQ format (which onnxruntime
  fuses into integer kernels on the CPU).
- Any other graph (linear and recurrent layers, embeddings) is quantized *dynamically*
  (``quantize_dynamic``): weights int8, activations quantized at run time from their own
  range, no calibration data needed.

Why not ``torch.ao.quantization``: it is deprecated in this torch, and quantized tensors
cannot be stored as safetensors; an int8 ONNX graph is a file any onnxruntime runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engine.errors import ExportError
from engine.export.deps import require
from engine.runs.storage import first_line

#: Ops each method turns into int8 (onnxruntime's registries, the ones our models have).
DYNAMIC_OPS = ("MatMul", "Gather", "LSTM", "GRU", "Attention")
STATIC_OPS = ("Conv", "MatMul", "Gemm", "Gather")
#: Ops an int8 graph has (what shows that something was quantized).
INT8_OPS = frozenset(
    {
        "DynamicQuantizeLinear",
        "MatMulInteger",
        "ConvInteger",
        "QuantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "DynamicQuantizeLSTM",
        "DequantizeLinear",
    }
)


def method_for(op_types: Iterable[str]) -> str:
    """``"static"`` for a graph with convolutions, else ``"dynamic"``."""
    return "static" if "Conv" in set(op_types) else "dynamic"


def _gemm_as_matmul(model: Any) -> int:
    """Rewrite plain ``Gemm`` nodes (``alpha = beta = 1``, no ``transA``, constant weight)
    as ``MatMul`` + ``Add``, which dynamic quantization covers (it has no int8 Gemm)."""
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    nodes, rewritten = [], 0
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        weight = inits.get(node.input[1]) if node.op_type == "Gemm" else None
        if (
            weight is None
            or attrs.get("transA", 0)
            or attrs.get("alpha", 1.0) != 1.0
            or attrs.get("beta", 1.0) != 1.0
        ):
            nodes.append(node)
            continue
        w = numpy_helper.to_array(weight)
        name = node.input[1]
        if attrs.get("transB", 0):
            name = f"{node.input[1]}__t{rewritten}"
            model.graph.initializer.append(numpy_helper.from_array(w.T.copy(), name))
        product = f"{node.output[0]}__matmul"
        has_bias = len(node.input) > 2 and node.input[2]
        nodes.append(
            helper.make_node(
                "MatMul", [node.input[0], name], [product if has_bias else node.output[0]]
            )
        )
        if has_bias:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]]))
        rewritten += 1
    if rewritten:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return rewritten


class _Feeds:
    """onnxruntime's CalibrationDataReader protocol over a list of input dicts."""

    def __init__(self, feeds: list[dict[str, Any]]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, Any] | None:
        return next(self._feeds, None)


def _pre_process(source: Path, dest: Path, *, optimize: bool) -> None:
    """onnxruntime's pre-quantization step (graph optimization, shape inference); its
    symbolic shape inference fails on some graphs with symbolic dims (then ONNX's own
    shape inference alone)."""
    import contextlib
    import os
    import tempfile

    from onnxruntime import quantization as q

    source, dest = source.resolve(), dest.resolve()
    # A failing symbolic shape inference first saves its model, weights and all, as
    # sym_shape_infer_temp.onnx + <uuid>.data in the working directory: do it in a scratch
    # directory, removed after, not in the user's.
    with tempfile.TemporaryDirectory(prefix="lepton-quantize-") as scratch:
        here = os.getcwd()
        os.chdir(scratch)
        try:
            try:
                q.quant_pre_process(str(source), str(dest), skip_optimization=not optimize)
            except Exception:  # onnxruntime's SymbolicShapeInference raises plain exceptions
                q.quant_pre_process(
                    str(source),
                    str(dest),
                    skip_optimization=not optimize,
                    skip_symbolic_shape=True,
                )
        finally:
            with contextlib.suppress(OSError):
                os.chdir(here)


def quantize(
    source: Path, dest: Path, op_types: Iterable[str], feeds: list[dict[str, Any]] | None
) -> dict[str, Any]:
    """Write the int8 version of the ONNX model ``source`` to ``dest``; return what
    ``task.json`` records of it. ``feeds``: calibration inputs (static method only)."""
    onnx, _ = require("onnx", "onnxruntime", why="--quantize int8")
    from onnxruntime import quantization as q

    ops = set(op_types)
    method = method_for(ops)
    candidates = STATIC_OPS if method == "static" else (*DYNAMIC_OPS, "Gemm")
    present = sorted(ops & set(candidates))
    if not present:
        raise ExportError(
            f"The model has no layer int8 quantization applies to (its graph has "
            f"{', '.join(sorted(ops)) or 'no'} operators; {method} quantization covers "
            f"{', '.join(candidates)}).",
            hint="Export it without --quantize.",
        )
    work = dest.with_name(dest.name + ".prep.onnx")
    try:
        if method == "static":
            if not feeds:
                raise ExportError(
                    "Static int8 quantization needs calibration data; the run's training split is empty."
                )
            _pre_process(source, work, optimize=True)
            q.quantize_static(
                str(work),
                str(dest),
                _Feeds(feeds),
                quant_format=q.QuantFormat.QDQ,
                per_channel=True,
                activation_type=q.QuantType.QUInt8,
                weight_type=q.QuantType.QInt8,
                calibrate_method=q.CalibrationMethod.MinMax,
            )
            record: dict[str, Any] = {
                "method": "static",
                "format": "QDQ",
                "per_channel": True,
                "calibration": {
                    "method": "MinMax",
                    "samples": sum(len(next(iter(f.values()))) for f in feeds),
                },
            }
        else:
            model = onnx.load(str(source))
            rewritten = _gemm_as_matmul(model)
            onnx.save(model, str(work))
            # Shape inference only: the optimizer would fuse MatMul + Add back into Gemm.
            _pre_process(work, work, optimize=False)
            q.quantize_dynamic(
                str(work),
                str(dest),
                weight_type=q.QuantType.QInt8,
                op_types_to_quantize=[
                    op for op in DYNAMIC_OPS if op in ops or (op == "MatMul" and rewritten)
                ],
            )
            record = {"method": "dynamic", "gemm_as_matmul": rewritten}
    except ExportError:
        raise
    except ImportError:
        raise
    except Exception as exc:  # onnxruntime.quantization raises plain exceptions
        raise ExportError(
            f"int8 quantization failed: {type(exc).__name__}: {first_line(exc)}"
        ) from None
    finally:
        work.unlink(missing_ok=True)
    quantized = {n.op_type for n in onnx.load(str(dest), load_external_data=False).graph.node}
    if not quantized & INT8_OPS:
        dest.unlink(missing_ok=True)
        raise ExportError(
            f"int8 quantization changed no layer of the model (operators {', '.join(present)} "
            "were candidates, none was quantized).",
            hint="Export it without --quantize.",
        )
    record.update(weight_type="int8", activation_type="uint8", op_types=present)
    return record
