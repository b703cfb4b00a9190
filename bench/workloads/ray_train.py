"""(b) A hand-written Ray Train script: what a user writes for this job without Lepton.

``ray.init()``, a ``TorchTrainer`` with DDP over ``--num-workers`` CPU workers, a
``DistributedSampler``, and ``ray.train.report(metrics, checkpoint=...)`` every epoch
(rank 0 saves the checkpoint with ``torch.save``). Rank 0 also writes
``epochs.jsonl``, ``first_step.json`` and ``marks.json`` (when its training function was
entered, its epochs started, its loop ended) into ``--out`` for the benchmark.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.spec import Workload


def train_func(config: dict[str, Any]) -> None:
    entered = time.time()
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist
    from torch.utils.data import DataLoader, DistributedSampler, Subset

    from bench.workloads import digits

    w = Workload(**config["workload"])
    out = Path(config["out"])
    torch.set_num_threads(w.threads)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()

    digits.seed_all(w.seed)
    data = digits.build_data(w.seed)
    plain_model = digits.build_model(data)
    model = ray.train.torch.prepare_model(plain_model)  # DDP when world > 1
    sampler: DistributedSampler[Any] = DistributedSampler(
        data.train, num_replicas=world, rank=rank, seed=w.seed
    )
    train_loader = DataLoader(data.train, batch_size=w.batch_size, sampler=sampler)
    val_shard = Subset(data.val, list(range(rank, len(data.val), world)))  # type: ignore[arg-type]
    val_loader = DataLoader(val_shard, batch_size=w.batch_size)
    optimizer, scheduler = digits.build_optimizer(model, w, len(train_loader))
    marker = digits.FirstStepMarker(out / "first_step.json") if rank == 0 else None
    marks = {"loop_entered": entered, "epochs_started": time.time()}
    if rank == 0:
        digits.write_json(out / "marks.json", marks)

    for epoch in range(w.epochs):
        sampler.set_epoch(epoch)
        stats = digits.train_epoch(model, train_loader, optimizer, scheduler, w, marker)
        val_started = time.perf_counter()
        correct, total = digits.evaluate(model, val_loader)
        counts = torch.tensor([correct, total], dtype=torch.float64)
        if world > 1:
            dist.all_reduce(counts)
        metrics = {
            "epoch": epoch,
            "samples": stats.samples * world,
            "train_time_s": stats.train_time_s,
            "samples_per_s": stats.samples * world / stats.train_time_s,
            "val_time_s": time.perf_counter() - val_started,
            "train_loss": stats.loss,
            "val_accuracy": float(counts[0] / counts[1].clamp_min(1)),
            "threads": torch.get_num_threads(),
            "time": time.time(),  # the epoch's end, as lepton's metrics.jsonl rows have it
        }
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                torch.save(
                    {
                        "model": plain_model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "epoch": epoch,
                    },
                    os.path.join(tmp, "checkpoint.pt"),
                )
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)
        if rank == 0:
            digits.append_row(out / "epochs.jsonl", metrics)
    if rank == 0:
        digits.write_json(out / "marks.json", {**marks, "loop_ended": time.time()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    Workload.add_arguments(parser)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--no-dashboard",
        action="store_true",
        help="ray.init(include_dashboard=False) (for the benchmark of what the dashboard costs)",
    )
    args = parser.parse_args()
    w = Workload.from_args(args)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    import ray
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if args.no_dashboard:
        ray.init(include_dashboard=False)
    else:
        ray.init()
    trainer = TorchTrainer(
        train_func,
        train_loop_config={"workload": w.as_dict(), "out": str(out)},
        scaling_config=ScalingConfig(
            num_workers=w.num_workers, resources_per_worker={"CPU": w.threads}
        ),
        run_config=RunConfig(
            name="bench-ray-train",
            storage_path=str(out / "ray_results"),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    result = trainer.fit()
    print(f"finished: {result.metrics}", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
