"""The models of the export benchmark, exported and timed side by side.

Trains the NLP task's default model (``bag``), its ``cnn`` and the pretrained MiniLM
(``task.model.name=pretrained``: the packaged all-MiniLM-L6-v2 encoder, fine-tuned for one
short epoch) on the demo tickets (its default data), and the vision small CNN (digits), in
this process (``scaling=inprocess``, no Ray), exports each with
``lepton export``'s own code (:func:`engine.export.exporter.export`) as ONNX fp32 and ONNX
int8, then times, on one CPU thread each and in alternating rounds (so a busy moment of the
machine hits every variant alike), the forward call of:

- ``pytorch``: the checkpoint's model in eager PyTorch (fp32);
- ``ort_fp32`` / ``ort_int8``: onnxruntime on the two exports,

on the same validation batches (batch 1 and 32, built as the export does). Also records
each export's file size and validation metric (the export's own figures, through the same
code as ``lepton evaluate``). ``--models`` picks which (all by default); a model whose
optional packages are missing (MiniLM: ``lepton-nlp[pretrained]``) is recorded as skipped.
Writes ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

MODELS: dict[str, list[str]] = {
    "nlp": ["task=nlp"],  # the default: bag of words and bigrams
    "nlp_cnn": ["task=nlp", "task.model.name=cnn"],
    "vision": ["task=vision"],
    # What a user would quantize: the pretrained encoder (22.7M parameters), fine-tuned on
    # the same tickets. Kept short for a 2-core machine: 1 epoch (--epochs is not used) on
    # 800 of the 3200 training rows, 32 word pieces (the tickets' median is 22), validated
    # on the same 800 rows as the other NLP models.
    "nlp_minilm": [
        "task=nlp",
        "task.model.name=pretrained",
        "task.data.max_train_samples=800",
        "task.data.max_length=32",
        "trainer.batch_size=16",
        "optimizer.lr=1e-4",
    ],
}
#: Epochs for a model whatever --epochs says.
EPOCHS = {"nlp_minilm": 1}
TRAIN = ["scaling=inprocess", "scaling.cpus_per_worker=1", "run.report=false"]
VARIANTS = ("pytorch", "ort_fp32", "ort_int8")
BATCHES = (1, 32)


def missing(name: str) -> str | None:
    """Why ``name`` cannot run here (an optional package absent), or None."""
    if name != "nlp_minilm":
        return None
    import importlib.util

    from lepton_nlp.pretrained import INSTALL_HINT, default_model_dir

    if importlib.util.find_spec("transformers") is None or default_model_dir() is None:
        return f"transformers or the packaged MiniLM is not installed ({INSTALL_HINT})"
    return None


def train_one(root: Path, name: str, overrides: list[str], epochs: int) -> Path:
    from engine.config.load import load_config
    from engine.train.driver import train

    loaded = load_config(
        [*overrides, *TRAIN, f"trainer.epochs={epochs}", f"run.dir={root}", f"run.name={name}"]
    )
    train(loaded.config, loaded.info, loaded.yaml, echo=lambda _: None)
    return root / name


def timed(call: Any, inputs: tuple[Any, ...], seconds: float) -> list[float]:
    """Per-call seconds of ``call(*inputs)`` for about ``seconds`` (at least 5 calls)."""
    import torch

    out: list[float] = []
    with torch.no_grad():
        started = time.perf_counter()
        while len(out) < 5 or time.perf_counter() - started < seconds:
            t = time.perf_counter()
            call(*inputs)
            out.append(time.perf_counter() - t)
    return out


def measure(run: Path, exports: dict[str, Path], rounds: int, seconds: float) -> dict[str, Any]:
    from engine.export.spec import first_batch, spec_for
    from engine.inference.evaluate import build_eval_data
    from engine.runs.checkpoint import load_model
    from engine.runs.layout import resolve_checkpoint

    loaded = load_model(resolve_checkpoint(run))
    bundle = build_eval_data(loaded, loaded.task_config, new_data=False)
    runtimes = {v: load_model(p).model for v, p in exports.items()}
    result: dict[str, Any] = {}
    for size in BATCHES:
        batch = first_batch(bundle.val, size, bundle.collate_fn)
        spec = spec_for(loaded.info, loaded.model, batch, loaded.task_config, loaded.artifacts)
        calls = {"pytorch": spec.module, **runtimes}
        samples: dict[str, list[float]] = {v: [] for v in calls}
        for call in calls.values():  # warm-up: sessions, allocations
            timed(call, spec.example_inputs, 0.05)
        for r in range(rounds):
            order = list(calls) if r % 2 == 0 else list(reversed(calls))
            for variant in order:
                samples[variant] += timed(calls[variant], spec.example_inputs, seconds)
        n = len(spec.example_inputs[0])
        result[str(size)] = {
            v: {"batch": n, "ms": 1000 * statistics.median(t), "calls": len(t)}
            for v, t in samples.items()
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, required=True, help="run dirs and exports go here")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.5, help="timed seconds per round")
    parser.add_argument(
        "--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}"
    )
    args = parser.parse_args()
    names = [n for n in args.models.split(",") if n]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; known: {', '.join(MODELS)}")

    import torch

    from engine.export.exporter import ExportRequest, export

    torch.set_num_threads(1)
    out: dict[str, Any] = {"threads": 1, "models": {}}
    for name in names:
        why = missing(name)
        if why is not None:
            print(f"{name}: skipped: {why}", flush=True)
            out["models"][name] = {"skipped": why}
            continue
        epochs = EPOCHS.get(name, args.epochs)
        started = time.perf_counter()
        run = train_one(args.root, name, MODELS[name], epochs)
        train_s = time.perf_counter() - started
        reports = {}
        for variant, quantize in (("ort_fp32", None), ("ort_int8", "int8")):
            dest = args.root / f"{name}-{variant}"
            reports[variant] = export(
                ExportRequest(str(run), "onnx", quantize=quantize, output=str(dest), force=True)
            )
        latency = measure(
            run, {v: Path(r["written_to"]) for v, r in reports.items()}, args.rounds, args.seconds
        )
        fp32 = reports["ort_fp32"]
        metric = fp32["metric"]
        print(
            f"{name}: trained {epochs} epoch(s) in {train_s:.0f} s; {metric} "
            f"{fp32['before']['metrics'][metric]:.4f} (PyTorch, validation split)",
            flush=True,
        )
        out["models"][name] = {
            "run": str(run),
            "train_s": train_s,
            "epochs": epochs,
            "overrides": MODELS[name],
            "metric": metric,
            "metrics": {
                "pytorch": fp32["before"]["metrics"][metric],
                **{v: r["after"]["metrics"][metric] for v, r in reports.items()},
            },
            "size_bytes": {
                "pytorch": fp32["before"]["size_bytes"],
                **{v: r["after"]["size_bytes"] for v, r in reports.items()},
            },
            "quantization": reports["ort_int8"]["quantization"],
            "runtime": {v: r["after"]["runtime"] for v, r in reports.items()},
            "latency": latency,
        }
    args.out.write_text(json.dumps(out, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
