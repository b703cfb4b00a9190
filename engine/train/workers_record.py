"""``workers.json``: where each rank ran, and whether their final weights agree."""

from __future__ import annotations

import hashlib
import os

import torch

from engine.runs.layout import write_json_atomic
from engine.runs.storage import Location
from engine.train.worker_context import WorkerContext


def weights_digest(model: torch.nn.Module) -> str:
    """A hash of every parameter: equal on all ranks when DDP kept gradients in sync.

    (Buffers such as BatchNorm running statistics are per rank by design: DDP
    broadcasts rank 0's before each forward, and checkpoints take rank 0's.)
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def record_workers(run_dir: str, ctx: WorkerContext, model: torch.nn.Module) -> None:
    """Every rank gathers its record; rank 0 writes ``workers.json`` into ``run_dir``."""
    mine = {
        "rank": ctx.world_rank,
        "local_rank": ctx.local_rank,
        "node_id": ctx.node_id,
        "hostname": os.uname().nodename,
        "pid": os.getpid(),
        "device": str(ctx.device),
        "weights_sha256": weights_digest(model),
    }
    everyone = ctx.all_gather_object(mine)
    if ctx.is_rank_zero:
        digests = {w["weights_sha256"] for w in everyone}
        write_json_atomic(
            Location.parse(run_dir) / "workers.json",
            {
                "world_size": ctx.world_size,
                "weights_in_sync": len(digests) == 1,
                "workers": everyone,
            },
        )
