"""(a) The baseline: a plain single-process PyTorch loop, no Ray, no engine.

Writes ``epochs.jsonl`` (one row per epoch: samples/s of the train split over that
epoch's train time, validation excluded) and ``first_step.json`` into ``--out``, and
saves a checkpoint each epoch as a user would (``torch.save``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from bench.spec import Workload
from bench.workloads import digits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    Workload.add_arguments(parser)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    w = Workload.from_args(args)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    torch.set_num_threads(w.threads)
    digits.seed_all(w.seed)
    data = digits.build_data(w.seed)
    model = digits.build_model(data)
    generator = torch.Generator().manual_seed(w.seed)
    train_loader = DataLoader(
        data.train, batch_size=w.batch_size, shuffle=True, generator=generator
    )
    val_loader = DataLoader(data.val, batch_size=w.batch_size)
    optimizer, scheduler = digits.build_optimizer(model, w, len(train_loader))
    marker = digits.FirstStepMarker(out / "first_step.json")

    for epoch in range(w.epochs):
        stats = digits.train_epoch(model, train_loader, optimizer, scheduler, w, marker)
        val_started = time.perf_counter()
        correct, total = digits.evaluate(model, val_loader)
        torch.save(
            {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch},
            out / "checkpoint.pt",
        )
        digits.append_row(
            out / "epochs.jsonl",
            {
                "epoch": epoch,
                "samples": stats.samples,
                "train_time_s": stats.train_time_s,
                "samples_per_s": stats.samples / stats.train_time_s,
                "val_time_s": time.perf_counter() - val_started,
                "train_loss": stats.loss,
                "val_accuracy": correct / max(1, total),
                "threads": torch.get_num_threads(),
            },
        )


if __name__ == "__main__":
    main()
