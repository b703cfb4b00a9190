"""The ``export`` extra (onnx, onnxscript, onnxruntime): imported where needed, and a
clear error naming what to install when it is missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from engine.errors import ExportError

INSTALL_HINT = "Install the export extra: pip install 'lepton-engine[export]' (or make install)."

#: What each format needs, beside torch.
NEEDS = {
    "onnx": ("onnx", "onnxscript", "onnxruntime"),
    "torch-export": (),
    "safetensors": (),
}


def require(*modules: str, why: str) -> list[ModuleType]:
    """The modules, imported; an ExportError naming the missing ones and the extra."""
    found, missing = [], []
    for name in modules:
        try:
            found.append(importlib.import_module(name))
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportError(
            f"{why} needs {', '.join(missing)}, which is not installed.", hint=INSTALL_HINT
        )
    return found


def onnxruntime() -> ModuleType:
    """onnxruntime, for running an ONNX export (evaluate, predict, serving)."""
    (ort,) = require("onnxruntime", why="Running an ONNX export")
    return ort
