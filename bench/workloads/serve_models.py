"""The models of the serving benchmark, and each predictor's compute-bound limit.

Trains each model one epoch in this process (``lepton train`` with ``scaling=inprocess``, no
Ray; accuracy does not matter here, only the weights' shapes), resolves its checkpoint the
way ``lepton serve`` does (:func:`engine.serve.models.resolve_models`), then measures what
the task predictor alone does with the checkpoint: images/s of
``load_model(ckpt).predictor().predict(batch)`` at each batch size, with the torch threads
a serving replica gets, on the very image the HTTP clients send (nested uint8 lists, so
the predictor's own decoding and preprocessing are in the figure, as they are when served).

Writes ``--out`` (JSON): per model its run dir, checkpoint, parameter count, training time
and images/s per batch size; the request image; the torch threads used.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

#: name -> the training overrides beyond the defaults (task=vision: digits, 8x8).
MODELS: dict[str, list[str]] = {
    "cnn": ["task=vision"],
    # At 32x32 (CIFAR's size; digits upsampled): at 8x8 ResNet-18 costs so little that
    # any server's per-request cost hides it.
    "resnet18": ["task=vision", "task.model.name=resnet18", "task.data.image_size=32"],
}
QUICK_TRAIN = [
    "scaling=inprocess",
    "scaling.cpus_per_worker=1",
    "trainer.epochs=1",
    "run.report=false",
]


def train_one(root: Path, name: str, overrides: list[str]) -> tuple[Path, float]:
    from engine.config.load import load_config
    from engine.train.driver import train

    started = time.perf_counter()
    loaded = load_config([*overrides, *QUICK_TRAIN, f"run.dir={root}", f"run.name={name}"])
    train(loaded.config, loaded.info, loaded.yaml, echo=lambda _: None)
    return root / name, time.perf_counter() - started


def digit_image() -> list[list[int]]:
    """One scikit-learn digit (8x8, values 0..16) as nested uint8 lists 0..255."""
    import numpy as np
    from sklearn.datasets import load_digits

    image = load_digits().images[0]
    return np.clip(np.round(image * 255.0 / 16.0), 0, 255).astype(np.uint8).tolist()


def images_per_s(predictor: Any, image: Any, batch: int, seconds: float) -> dict[str, Any]:
    inputs = [image] * batch
    for _ in range(2):  # warm-up: first calls allocate
        predictor.predict(inputs)
    calls, started = 0, time.perf_counter()
    while True:
        predictor.predict(inputs)
        calls += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and calls >= 3:
            break
    return {
        "batch": batch,
        "calls": calls,
        "seconds": elapsed,
        "images_per_s": calls * batch / elapsed,
        "ms_per_call": 1000.0 * elapsed / calls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, required=True, help="run dirs go here")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a replica's)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--seconds", type=float, default=1.5, help="timed seconds per size")
    parser.add_argument(
        "--models", nargs="+", choices=list(MODELS), default=list(MODELS), help="train only these"
    )
    args = parser.parse_args()

    import torch

    from engine.runs.checkpoint import load_model
    from engine.serve.models import resolve_models

    image = digit_image()
    out: dict[str, Any] = {"image": image, "threads": args.threads, "models": {}}
    for name, overrides in MODELS.items():
        if name not in args.models:
            continue
        run_dir, train_s = train_one(args.root, name, overrides)
        (source,) = resolve_models([f"{name}={run_dir}"])
        out["models"][name] = {
            "run_dir": str(run_dir),
            "checkpoint": source.checkpoint,
            "task": source.task,
            "overrides": overrides,
            "train_s": train_s,
        }
    torch.set_num_threads(args.threads)  # after training: the in-process loop sets its own
    for name, model in out["models"].items():
        loaded = load_model(model["checkpoint"])
        predictor = loaded.predictor("cpu")
        model["parameters"] = sum(p.numel() for p in loaded.model.parameters())
        model["image_size"] = getattr(predictor, "size", None)
        label = predictor.predict([image])[0]["label"]
        model["label"] = label
        model["limit"] = [images_per_s(predictor, image, b, args.seconds) for b in args.batch_sizes]
        best = max(model["limit"], key=lambda r: r["images_per_s"])
        model["best_batch"], model["best_images_per_s"] = best["batch"], best["images_per_s"]
        print(
            f"{name}: {model['parameters']:,} parameters, label {label!r}; images/s by batch: "
            + ", ".join(f"{r['batch']}: {r['images_per_s']:.0f}" for r in model["limit"]),
            flush=True,
        )
    args.out.write_text(json.dumps(out, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
