"""A hand-written Ray Tune sweep over Ray Train: what a user writes for `lepton tune`'s job
without Lepton (the baseline of ``python -m bench --only tune``).

Standalone: run it as ``python bench/workloads/ray_tune_train.py --out DIR``; it imports
nothing of the engine or the benchmark. The pattern is Ray 2.60's "Tune with Train V2": a
function trainable that builds a ``TorchTrainer`` with ``ScalingConfig(num_workers=1)`` and
``RunConfig(storage_path=<the Tune experiment dir>, name=<trial name>,
callbacks=[TuneReportCallback()])`` and calls ``fit()``.

Resources: the trial function reserves ``{"cpu": 0.01}`` and its one Train worker
``--worker-cpus`` (default 0.99), so that with ``--concurrency 2`` two trials fit on two
CPUs at once, as ``lepton tune`` runs them (one CPU per single-worker trial). With the
usual 1-CPU worker a trial needs 1.01 CPUs and a 2-CPU machine runs one at a time.

The job: a small CNN of the script's own on scikit-learn's digits (80/20 split), batch 32,
AdamW (weight decay 0.01) with a per-step cosine schedule, gradient clipping at 1.0, a
random 1-pixel shift as augmentation, one torch thread per worker, a checkpoint
(``torch.save``) reported every epoch. Search space: ``lr`` log-uniform in [1e-4, 3e-2],
``width`` one of 8, 16, 32, drawn by Tune's random search (seeded); FIFO.

For the benchmark, each trial writes ``<out>/trials/<trial>.json`` (when the trial function
was entered, when ``fit()`` was called and returned) and its worker appends one row per
epoch to ``<out>/trials/<trial>.jsonl`` (``train_time_s``, ``val_time_s``,
``epoch_time_s``, ``val_accuracy``, ``time``). ``<out>/sweep.json`` gets the best trial
and the wall time from the script's start.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

STARTED = time.time()

import torch  # noqa: E402  (after STARTED: the imports are part of the script's time)
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402


class DigitsCNN(nn.Module):
    """Two 3x3 conv stages (``width``, then ``2 * width`` channels) and a linear head."""

    def __init__(self, width: int, classes: int = 10) -> None:
        super().__init__()

        def stage(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]

        self.body = nn.Sequential(*stage(1, width), *stage(width, 2 * width))
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean(dim=(2, 3)))


def digits_split(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_val, y_val): 8x8 images scaled to [0, 1], then standardised
    with the train split's mean and std."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_val = int(round(0.2 * len(y)))
    val, train = order[:n_val], order[n_val:]
    mean, std = x[train].mean(), x[train].std()
    return (x[train] - mean) / std, y[train], (x[val] - mean) / std, y[val]


def shift(batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each image moved by up to one pixel in each direction (zero padding)."""
    n, _, h, w = batch.shape
    padded = F.pad(batch, (1, 1, 1, 1))
    dy = torch.randint(0, 3, (n,), generator=gen)
    dx = torch.randint(0, 3, (n,), generator=gen)
    rows = (dy.view(n, 1) + torch.arange(h)).view(n, 1, h, 1).expand(n, 1, h, w + 2)
    cols = (dx.view(n, 1) + torch.arange(w)).view(n, 1, 1, w).expand(n, 1, h, w)
    return padded.gather(2, rows).gather(3, cols)


def train_loop(config: dict[str, Any]) -> None:
    """Ray Train's training function: one worker, ``config['epochs']`` epochs."""
    import ray.train
    import ray.train.torch

    torch.set_num_threads(1)
    seed, epochs, batch = int(config["seed"]), int(config["epochs"]), int(config["batch_size"])
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x_train, y_train, x_val, y_val = digits_split(seed)
    model = ray.train.torch.prepare_model(DigitsCNN(int(config["width"])))
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(config["lr"]), weight_decay=0.01)
    steps = math.ceil(len(y_train) / batch) * epochs
    cosine = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / steps)))
    )
    rows_file = Path(config["out"]) / "trials" / f"{config['trial']}.jsonl"
    for epoch in range(epochs):
        started = time.perf_counter()
        model.train()
        loss_sum, n_steps = 0.0, 0
        for idx in torch.randperm(len(y_train), generator=gen).split(batch):
            loss = F.cross_entropy(model(shift(x_train[idx], gen)), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            cosine.step()
            loss_sum, n_steps = loss_sum + loss.item(), n_steps + 1
        trained = time.perf_counter()
        model.eval()
        with torch.no_grad():
            correct = sum(
                int((model(x_val[i : i + 256]).argmax(1) == y_val[i : i + 256]).sum())
                for i in range(0, len(y_val), 256)
            )
        done = time.perf_counter()
        metrics = {
            "epoch": epoch,
            "train_loss": loss_sum / max(1, n_steps),
            "val_accuracy": correct / len(y_val),
            "train_time_s": trained - started,
            "val_time_s": done - trained,
            "epoch_time_s": done - started,
            "time": time.time(),
        }
        with rows_file.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(metrics) + "\n")
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(
                {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch},
                os.path.join(tmp, "checkpoint.pt"),
            )
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def make_trainable(
    out: Path, experiment_dir: Path, epochs: int, seed: int, worker_cpus: float
) -> Callable[[dict[str, Any]], None]:
    """Tune's function trainable: one Ray Train run per trial."""

    def trainable(config: dict[str, Any]) -> None:
        entered = time.time()
        from ray import tune
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer
        from ray.tune.integration.ray_train import TuneReportCallback

        trial = tune.get_context().get_trial_name()
        trainer = TorchTrainer(
            train_loop,
            train_loop_config={
                **config,
                "epochs": epochs,
                "seed": seed,
                "batch_size": 32,
                "out": str(out),
                "trial": trial,
            },
            scaling_config=ScalingConfig(
                num_workers=1, use_gpu=False, resources_per_worker={"CPU": worker_cpus}
            ),
            run_config=RunConfig(
                storage_path=str(experiment_dir),
                name=trial,
                callbacks=[TuneReportCallback()],  # type: ignore[list-item]
            ),
        )
        fit_called = time.time()
        trainer.fit()
        marks = {"entered": entered, "fit_called": fit_called, "ended": time.time()}
        (out / "trials" / f"{trial}.json").write_text(json.dumps(marks) + "\n", encoding="utf-8")

    return trainable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=2, help="trials at once")
    parser.add_argument("--worker-cpus", type=float, default=0.99, help="CPUs per Train worker")
    args = parser.parse_args()
    out: Path = args.out.resolve()
    (out / "trials").mkdir(parents=True, exist_ok=True)

    import ray
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    ray.init()
    storage, name = out / "ray_results", "hand-sweep"
    trainable = make_trainable(out, storage / name, args.epochs, args.seed, args.worker_cpus)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 0.01}),
        param_space={"lr": tune.loguniform(1e-4, 3e-2), "width": tune.choice([8, 16, 32])},
        tune_config=tune.TuneConfig(
            metric="val_accuracy",
            mode="max",
            num_samples=args.trials,
            scheduler=FIFOScheduler(),
            # The cap goes on the generator: Tune ignores TuneConfig(max_concurrent_trials)
            # when a BasicVariantGenerator is passed (it only warns), and every trial would
            # start at once, its Train worker group waiting for CPUs.
            search_alg=BasicVariantGenerator(
                random_state=args.seed, max_concurrent=args.concurrency
            ),
        ),
        run_config=tune.RunConfig(storage_path=str(storage), name=name, verbose=1),
    )
    results = tuner.fit()
    best = results.get_best_result()
    summary = {
        "trials": len(results),
        "errors": len(results.errors),
        "best_val_accuracy": best.metrics.get("val_accuracy") if best.metrics else None,
        "best_config": best.config,
        "wall_s": time.time() - STARTED,
    }
    (out / "sweep.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"finished: {json.dumps(summary)}", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
