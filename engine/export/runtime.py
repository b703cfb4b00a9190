"""Exported models as ``torch.nn.Module``: the task's own ``build_predictor`` and
``validation_step`` run on them unchanged.

:class:`OnnxRuntimeModule`'s ``forward`` feeds its tensors to an onnxruntime session and
returns the first output as a tensor on the inputs' device. The session is made on first
use with as many intra-op threads as torch has then (a serving replica sets torch's threads
to its CPUs before it predicts), and made again if that number changes.
A ``torch.export`` program (``.pt2``) loads with :func:`load_program`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from engine.errors import CheckpointError
from engine.runs.storage import first_line


class OnnxRuntimeModule(torch.nn.Module):
    """An ONNX model run by onnxruntime, called like the PyTorch module it came from."""

    def __init__(self, path: str | Path, input_names: list[str], output_names: list[str]) -> None:
        super().__init__()
        self.path = str(path)
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self._session: Any = None
        self._threads = 0

    @property
    def runtime(self) -> str:
        from engine.export.deps import onnxruntime

        return f"onnxruntime {onnxruntime().__version__} (CPUExecutionProvider)"

    def session(self) -> Any:
        threads = torch.get_num_threads()
        if self._session is None or threads != self._threads:
            from engine.export.deps import onnxruntime

            ort = onnxruntime()
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            try:
                self._session = ort.InferenceSession(
                    self.path, options, providers=["CPUExecutionProvider"]
                )
            except Exception as exc:  # onnxruntime's own error types (Fail, InvalidGraph)
                raise CheckpointError(
                    f"onnxruntime cannot load {self.path}: {first_line(exc)}",
                    hint="Export the model again with this engine's lepton export.",
                ) from None
            self._threads = threads
        return self._session

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if len(inputs) != len(self.input_names):
            raise TypeError(
                f"the exported model takes {len(self.input_names)} input(s) "
                f"({', '.join(self.input_names)}), got {len(inputs)}"
            )
        feeds = {
            name: t.detach().to("cpu").contiguous().numpy()
            for name, t in zip(self.input_names, inputs, strict=True)
        }
        (out,) = self.session().run(self.output_names[:1], feeds)
        device = inputs[0].device if inputs else torch.device("cpu")
        return torch.from_numpy(out).to(device)

    def __getstate__(self) -> dict[str, Any]:  # a session does not pickle: make it again
        state = self.__dict__.copy()
        state["_session"], state["_threads"] = None, 0
        return state


class ProgramModule(torch.nn.Module):
    """A saved ``torch.export`` program, called like the module it came from.

    The program's own module refuses ``eval()`` / ``train()`` (it has no modes: it was
    exported in eval mode), which every caller of a model uses; so it is held outside
    this module's children, and runs on the CPU (outputs go back to the inputs' device).
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = str(path)
        try:
            program = torch.export.load(self.path)
        except Exception as exc:  # torch raises many types for a file it cannot read
            raise CheckpointError(
                f"{path} is not a torch.export program this torch can load: {first_line(exc)}.",
                hint="Export the model again with this torch version (lepton export "
                "--format torch-export).",
            ) from None
        self.__dict__["_program"] = program.module()  # not a child: see the class doc

    @property
    def runtime(self) -> str:
        return f"torch {torch.__version__} (torch.export program)"

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        program: Any = self.__dict__["_program"]
        out: torch.Tensor = program(*(t.to("cpu") for t in inputs))
        return out.to(inputs[0].device) if inputs else out


def load_program(path: str | Path) -> ProgramModule:
    """The module of a saved ``torch.export`` program."""
    return ProgramModule(path)
