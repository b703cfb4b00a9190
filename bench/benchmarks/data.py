"""3. Data loading: the vision loader alone versus the training step alone."""

from __future__ import annotations

import json
from typing import Any

from bench.benchmarks.runs import LEPTON
from bench.core import BenchResult, Context, Row, ratio
from bench.proc import run_monitored
from bench.registry import register


@register(3, "data", "Data loading versus the training step (one worker)")
def data(ctx: Context) -> BenchResult:
    """Samples/s of the train DataLoader (default augmentations) alone, of the training
    step alone, and of both together, with one worker's threads."""
    s = ctx.settings
    w = s.workload
    base = s.workdir / "data"
    out = base / "loader.json"
    cmd = [
        s.python,
        "-m",
        "bench.workloads.loader",
        *w.script_args(),
        f"--passes={s.loader_passes}",
        f"--out={out}",
    ]
    ctx.log(f"data loader vs step, {s.loader_passes} timed pass(es) each")
    proc = run_monitored(
        cmd,
        log_path=base / "output.log",
        cwd=s.workdir,
        env=ctx.subprocess_env(),
        timeout_s=s.timeout_s,
        memory=False,
    )
    result = BenchResult()
    if not proc.ok or not out.is_file():
        result.status = "failed"
        why = "timed out" if proc.timed_out else f"exit status {proc.returncode}"
        result.error = f"loader benchmark failed ({why}): {proc.tail(1500)}".strip()
        return result
    m: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    loader = m["loader"]["samples_per_s"]
    plain = m["loader_no_augment"]["samples_per_s"]
    step = m["step"]["samples_per_s"]
    loop = m["loop"]["samples_per_s"]
    serial = 1.0 / (1.0 / loader + 1.0 / step)
    load_share = (1.0 / loader) / (1.0 / loader + 1.0 / step)
    bound = "loader-bound" if loader < step else "step-bound"
    rows = result.rows
    rows.append(Row("training step alone (batches preloaded)", step, "samples/s"))
    rows.append(
        Row(
            "train DataLoader alone, default augmentations",
            loader,
            "samples/s",
            "training step alone",
            step,
            ratio(loader, step),
            note=f"{bound}: <1x means loading is slower than stepping",
        )
    )
    rows.append(
        Row(
            "train DataLoader alone, no augmentation",
            plain,
            "samples/s",
            "with default augmentations",
            loader,
            ratio(plain, loader),
            note="what the batched augmentations (one grid_sample per batch) cost",
        )
    )
    rows.append(
        Row(
            "loading share of a serial step (data_workers=0)",
            100.0 * load_share,
            "%",
            note="(1/loader) / (1/loader + 1/step)",
        )
    )
    rows.append(
        Row(
            "loader + step in one loop (measured)",
            loop,
            "samples/s",
            "predicted 1/(1/loader + 1/step)",
            serial,
            ratio(loop, serial),
        )
    )
    runs = ctx.cached("training_runs")
    if runs is not None:
        c = runs.median_of(LEPTON, lambda r: r.steady_sps)
        if c is not None:
            rows.append(
                Row(
                    "lepton train, per worker (steady / workers)",
                    c / w.num_workers,
                    "samples/s",
                    "loader + step in one loop",
                    loop,
                    ratio(c / w.num_workers, loop),
                    note="DDP adds an all-reduce per step",
                )
            )
    result.notes.append(
        f"One process, {m['threads']} torch thread(s) (a worker's), batch {m['batch_size']}, "
        f"{m['train_samples']} train samples, num_workers=0 as trainer.data_workers=0; "
        f"samples/s over {s.loader_passes} timed pass(es) after a warm-up pass. "
        f"At the default config the loop is {bound}: loading takes "
        f"{100 * load_share:.0f}% of a serial step."
    )
    result.details = m
    return result
