"""10. Export: CPU latency and throughput of the NLP models (the pretrained MiniLM, which
the goals are about, and the default bag and the cnn) and the vision CNN in eager
PyTorch (fp32) against ONNX Runtime fp32 and int8 exports of the same checkpoint, one
thread each, in the same process and the same run; with each export's size and validation
metric. ``bench/workloads/export_models.py`` trains, exports and times them."""

from __future__ import annotations

import json
from typing import Any

from bench.core import BenchResult, Context, Row, ratio, target_status
from bench.proc import run_monitored
from bench.registry import register

THROUGHPUT_GOAL = 2.0  # int8 / PyTorch fp32 throughput at batch 32, NLP model
POINTS_GOAL = 1.0  # at most this many points of the task's metric lost by int8
SMALLER_GOAL = 3.5  # PyTorch weights / int8 file, NLP model
#: The NLP model of the goals: the one a user quantizes (bag and cnn are informational:
#: ~10 elementwise ops / a 117 KiB file leave int8 little to save).
GOAL_MODELS = ("nlp_minilm",)
#: Workload runs, each its own subprocess (and timeout): MiniLM alone takes minutes.
GROUPS = (("nlp", "nlp_cnn", "vision"), ("nlp_minilm",))
LABELS = {
    "pytorch": "PyTorch fp32 (eager)",
    "ort_fp32": "ONNX Runtime fp32",
    "ort_int8": "ONNX Runtime int8",
}
TITLES = {
    "nlp_minilm": "NLP MiniLM (pretrained, fine-tuned)",
    "nlp": "NLP bag (default)",
    "nlp_cnn": "NLP cnn",
    "vision": "vision small CNN",
}


@register(10, "export", "Export: PyTorch fp32 vs ONNX Runtime fp32 / int8 on the CPU")
def export(ctx: Context) -> BenchResult:
    """Per-batch latency (batch 1 and 32) and throughput of eager PyTorch fp32, ONNX Runtime
    fp32 and ONNX Runtime int8 for the NLP models (MiniLM, bag, cnn) and the vision CNN, one
    CPU thread, as ratios to PyTorch; file sizes and the validation metric before and after
    int8."""
    s = ctx.settings
    base = s.workdir / "export"
    base.mkdir(parents=True, exist_ok=True)
    epochs = 2 if s.quick else 3
    rounds, seconds = (3, 0.3) if s.quick else (5, 0.6)
    ctx.log(
        f"training the NLP models ({epochs} epochs; MiniLM 1) and the vision CNN (in-process), "
        "exporting, timing"
    )
    result = BenchResult()
    data: dict[str, Any] = {"models": {}}
    for i, group in enumerate(GROUPS):
        out = base / f"export-{i}.json"
        out.unlink(missing_ok=True)
        proc = run_monitored(
            [
                s.python,
                "-m",
                "bench.workloads.export_models",
                f"--root={base / 'runs'}",
                f"--out={out}",
                f"--epochs={epochs}",
                f"--rounds={rounds}",
                f"--seconds={seconds}",
                f"--models={','.join(group)}",
            ],
            log_path=base / f"export-{i}.log",
            cwd=s.workdir,
            env=ctx.subprocess_env(),
            timeout_s=s.timeout_s,
            memory=False,
        )
        if not proc.ok or not out.is_file():
            why = "timed out" if proc.timed_out else f"exit status {proc.returncode}"
            result.status = "failed"
            result.error = f"the export workload ({', '.join(group)}) failed ({why}): "
            result.error = (result.error + proc.tail(1500)).strip()
            return result
        part = json.loads(out.read_text(encoding="utf-8"))
        data["threads"] = part["threads"]
        data["models"].update(part["models"])
    result.details = data
    models = {n: data["models"][n] for n in TITLES if n in data["models"]}
    for name, m in models.items():
        result.rows += _skipped(name, m) if "skipped" in m else _rows(name, m)
    for name, m in models.items():
        if "skipped" in m:
            result.notes.append(f"{TITLES[name]}: skipped, {m['skipped']}.")
        elif name in GOAL_MODELS:
            result.notes.append(
                f"{TITLES[name]}: fine-tuned {m['epochs']} epoch(s) in {m['train_s']:.0f} s "
                f"({' '.join(m['overrides'])}); {m['metric']} {m['metrics']['pytorch']:.4f} "
                "(PyTorch, validation split)."
            )
    models = {n: m for n, m in models.items() if "skipped" not in m}
    q = {n: m["quantization"]["method"] for n, m in models.items()}
    result.notes.append(
        f"{data['threads']} CPU thread for every variant (torch.set_num_threads and onnxruntime's "
        "intra-op threads); latency = median per-call time over alternating rounds; throughput = "
        "batch / latency. int8 methods: "
        + ", ".join(f"{TITLES[n]} {v}" for n, v in q.items())
        + " (onnxruntime.quantization: dynamic for linear/embedding layers, static with "
        "training-data calibration for convolutions)."
    )
    return result


def _skipped(name: str, m: dict[str, Any]) -> list[Row]:
    """A goal model that could not run here: its goal rows, unmeasured."""
    if name not in GOAL_MODELS:
        return []
    title = TITLES[name]
    return [
        Row(
            f"{title}: {LABELS['ort_int8']} throughput, batch 32",
            None,
            "samples/s",
            LABELS["pytorch"],
            target=f">= {THROUGHPUT_GOAL:g}x",
            note=f"skipped: {m['skipped']}",
        )
    ]


def _rows(name: str, m: dict[str, Any]) -> list[Row]:
    title, rows = TITLES.get(name, name), []
    goal = name in GOAL_MODELS
    for size, by_variant in m["latency"].items():
        base = by_variant["pytorch"]
        n = base["batch"]
        for variant in ("ort_fp32", "ort_int8"):
            v = by_variant[variant]
            speedup = ratio(base["ms"], v["ms"])
            is_goal = goal and variant == "ort_int8" and size == "32"
            rows.append(
                Row(
                    f"{title}: {LABELS[variant]} throughput, batch {n}",
                    1000 * n / v["ms"] if v["ms"] else None,
                    "samples/s",
                    LABELS["pytorch"],
                    1000 * n / base["ms"] if base["ms"] else None,
                    speedup,
                    target=f">= {THROUGHPUT_GOAL:g}x" if is_goal else None,
                    status=target_status(
                        None if not is_goal or speedup is None else speedup >= THROUGHPUT_GOAL
                    ),
                    note=f"latency {v['ms']:.3f} ms vs {base['ms']:.3f} ms per batch",
                )
            )
    sizes = m["size_bytes"]
    unit, scale = ("MiB", 1 << 20) if sizes["pytorch"] >= 10 << 20 else ("KiB", 1 << 10)
    smaller = ratio(sizes["pytorch"], sizes["ort_int8"])
    rows.append(
        Row(
            f"{title}: int8 file size",
            sizes["ort_int8"] / scale,
            unit,
            "PyTorch safetensors weights",
            sizes["pytorch"] / scale,
            ratio(sizes["ort_int8"], sizes["pytorch"]),
            target=f">= {SMALLER_GOAL:g}x smaller" if goal else None,
            status=target_status(None if not goal or smaller is None else smaller >= SMALLER_GOAL),
            note=f"{smaller:.2f}x smaller; ONNX fp32 {sizes['ort_fp32'] / scale:.1f} {unit}"
            if smaller
            else "",
        )
    )
    metrics, metric = m["metrics"], m["metric"]
    lost = 100 * (metrics["pytorch"] - metrics["ort_int8"])
    rows.append(
        Row(
            f"{title}: {metric} points lost by int8",
            lost,
            "points",
            target=f"<= {POINTS_GOAL:g}" if goal else "< 1",
            status=target_status(lost <= POINTS_GOAL if goal else lost < POINTS_GOAL),
            note=f"PyTorch {metrics['pytorch']:.4f}, ORT fp32 {metrics['ort_fp32']:.4f}, "
            f"ORT int8 {metrics['ort_int8']:.4f} (validation split)",
        )
    )
    return rows
