"""Data loading alone versus the training step alone, in one process, one worker's threads.

Four measurements over the train split (batch size and shuffling as in training, the
demo's default augmentations, ``num_workers=0`` like ``trainer.data_workers=0``), each
as samples/s over ``--passes`` timed passes after one warm-up pass:

- ``loader``: iterate the DataLoader, nothing else;
- ``loader_no_augment``: the same without augmentation (what the augmentations cost);
- ``step``: forward, backward, clipping and optimizer step on batches taken from the
  loader beforehand (no loading inside the timed part; no DDP all-reduce either);
- ``loop``: loader and step together, as the training loop runs them.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from bench.spec import Workload
from bench.workloads import digits


def timed_passes(run_pass: Callable[[], int], passes: int) -> dict[str, Any]:
    run_pass()  # warm-up
    samples, seconds, per_pass = 0, 0.0, []
    for _ in range(passes):
        started = time.perf_counter()
        n = run_pass()
        elapsed = time.perf_counter() - started
        samples, seconds = samples + n, seconds + elapsed
        per_pass.append(n / elapsed)
    return {"samples_per_s": samples / seconds, "per_pass": per_pass, "samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    Workload.add_arguments(parser)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    w = Workload.from_args(args)
    torch.set_num_threads(w.threads)
    digits.seed_all(w.seed)

    data = digits.build_data(w.seed)
    plain = digits.build_data(w.seed, augment=False)
    generator = torch.Generator().manual_seed(w.seed)

    def loader_of(dataset: Any) -> DataLoader[Any]:
        return DataLoader(dataset, batch_size=w.batch_size, shuffle=True, generator=generator)

    def iterate(loader: DataLoader[Any]) -> Callable[[], int]:
        def run() -> int:
            return sum(int(y.shape[0]) for _, y in loader)

        return run

    loader = loader_of(data.train)
    model = digits.build_model(data)
    optimizer, scheduler = digits.build_optimizer(model, w, len(loader))
    batches = list(loader)

    def step_only() -> int:
        stats = digits.train_epoch(model, batches, optimizer, scheduler, w)  # type: ignore[arg-type]
        return stats.samples

    def loop() -> int:
        return digits.train_epoch(model, loader, optimizer, scheduler, w).samples

    results = {
        "threads": torch.get_num_threads(),
        "train_samples": len(data.train),  # type: ignore[arg-type]
        "batch_size": w.batch_size,
        "loader": timed_passes(iterate(loader), args.passes),
        "loader_no_augment": timed_passes(iterate(loader_of(plain.train)), args.passes),
        "step": timed_passes(step_only, args.passes),
        "loop": timed_passes(loop, args.passes),
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
