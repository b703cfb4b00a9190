"""How large a catalogue one worker handles: time and memory of full-catalogue scoring.

    python -m lepton_recsys.bench [--items 10000 100000] [--dim 64] [--batch 256]

For each catalogue size (in a fresh subprocess, so peak memory is its own) it builds a
``bpr`` model over random weights, then measures one validation batch (score every
item for ``batch`` users, mask ~30 known items each, rank the held-out items), one
predictor call (top-10 for one user) and the peak resident memory. Numbers go into
plugins/recsys/README.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from lepton_recsys.config import RecsysConfig, RecsysModelConfig
from lepton_recsys.interactions import SeenItems
from lepton_recsys.models import build
from lepton_recsys.predictor import RecsysPredictor
from lepton_recsys.ranking import known_coords, rank_targets

SEEN_PER_USER = 30


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(num_items: int, dim: int, batch: int, num_users: int = 10_000) -> dict[str, float]:
    torch.set_num_threads(1)  # a Train worker's default (one CPU)
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(num_users), SEEN_PER_USER)
    seen = SeenItems.from_pairs(users, rng.integers(0, num_items, len(users)), num_users, num_items)
    artifacts = {
        "num_users": num_users,
        "num_items": num_items,
        "seen_indptr": seen.indptr.tolist(),
        "seen_indices": seen.indices.tolist(),
        "popularity": rng.integers(0, 100, num_items).tolist(),
        "user_ids": list(range(num_users)),
        "item_ids": list(range(num_items)),
    }
    model = build(RecsysConfig(model=RecsysModelConfig(name="bpr", dim=dim)), artifacts).eval()
    params_mib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    base = _peak_mib()
    u = torch.as_tensor(rng.integers(0, num_users, batch))
    t = torch.as_tensor(rng.integers(0, num_items, batch))
    times = []
    with torch.no_grad():
        for _ in range(3):
            started = time.perf_counter()
            rank_targets(model, u, t, known_coords(seen, u))
            times.append(time.perf_counter() - started)
    batch_peak = _peak_mib() - base
    predictor = RecsysPredictor(model, artifacts, torch.device("cpu"))
    started = time.perf_counter()
    for user in range(20):
        predictor.predict([{"user": user, "k": 10}])
    predict_ms = (time.perf_counter() - started) / 20 * 1000
    return {
        "items": num_items,
        "dim": dim,
        "batch": batch,
        "val_batch_ms": min(times) * 1000,
        "val_users_per_s": batch / min(times),
        "val_batch_extra_mib": batch_peak,
        "predict_top10_ms": predict_ms,
        "params_mib": params_mib,
        "train_state_mib": 4 * params_mib,  # weights + grads + two Adam moments
        "peak_rss_mib": _peak_mib(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.items[0], args.dim, args.batch)))
        return
    for n in args.items:
        cmd = [sys.executable, "-m", "lepton_recsys.bench", "--one", "--items", str(n)]
        cmd += ["--dim", str(args.dim), "--batch", str(args.batch)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            "  ".join(
                f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
            )
        )


if __name__ == "__main__":
    main()
