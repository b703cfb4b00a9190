"""11. Monitoring: what the prediction log (``serve.log``) costs a served model. `lepton
serve` with the small CNN, the log off and on (``serve.log.flush_s=1``: a new file every
second, so writing falls inside the timed window), started in turn (off, on, off, on, ...);
requests/s and p99 at client concurrency 8 from ``bench/workloads/http_load.py``, as
``benchmarks/serve.py`` measures them (its server and client code, reused)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from bench.benchmarks.serve import REPLICA_CPUS, Server, Sizes, _describe_point, _ok, train_models
from bench.benchmarks.serve import _free_port as free_port
from bench.benchmarks.serve import _point as load_point
from bench.core import BenchResult, Context, Row, ratio, target_status
from bench.registry import register

CONCURRENCY = 8
RPS_GOAL = 0.95  # log on / off, requests/s: within 5 %
P99_GOAL = 1.05  # log on / off, p99 latency: within 5 %
FULL = Sizes(2000, 6.0, 1.0, 0.2)
QUICK = Sizes(400, 3.0, 0.5, 0.2)
PATH = "/v1/models/cnn:predict"


@register(11, "monitor", "Monitoring: serving with the prediction log on vs off")
def monitor(ctx: Context) -> BenchResult:
    """Requests/s and p99 latency at concurrency 8 of `lepton serve` (small CNN, batching
    on) with the prediction log off and on, servers started in turn; the log's records and
    files afterwards."""
    s = ctx.settings
    z = QUICK if s.quick else FULL
    pairs = 1 if s.quick else max(2, s.pairs)
    base = s.workdir / "monitor"
    base.mkdir(parents=True, exist_ok=True)
    env = ctx.subprocess_env()
    env["LEPTON_HOME"] = str(base / "lepton-home")
    result = BenchResult()
    model = _prepare(ctx, base, env)
    if "error" in model:
        result.status, result.error = "failed", model["error"]
        return result
    body = base / "body.json"
    body.write_text(json.dumps({"instances": [model["image"]]}), encoding="utf-8")

    points: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    logs: list[dict[str, Any]] = []
    for i in range(pairs):
        for kind in ("off", "on"):
            log_dir = base / f"log-{i}"
            server = _server(ctx, kind, model["checkpoint"], base, log_dir, i)
            try:
                if not server.start(env, s.workdir, timeout_s=min(240.0, s.timeout_s)):
                    ctx.log(f"  {kind}: FAILED to start: {server.error} ({server.log_path})")
                    continue
                point = load_point(ctx, server, f"{kind}-{i}", PATH, body, CONCURRENCY, z, env)
                points[kind].append(point)
                ctx.log(f"  log {kind:3} #{i + 1} c={CONCURRENCY} {_describe_point(point)}")
            finally:
                server.stop()
            if kind == "on":
                logs.append(_log_summary(log_dir))
                last = points["on"][-1] if points["on"] else {}
                logs[-1]["timed_ok"] = last.get("ok") if _ok(last) else None
                ctx.log(
                    f"  log on #{i + 1}: {logs[-1]['records']} records in {logs[-1]['files']} files"
                )

    _rows(result, points, logs)
    result.notes.append(
        f"{pairs} server(s) per variant, started in turn; each figure is the median over them. "
        "`serve.log.flush_s=1`, `serve.log.batch` 1000 (the default): the log thread writes "
        "a new file every second or 1000 records, inside the timed window; image summaries "
        "(size, brightness, contrast) are computed on that thread."
    )
    result.details = {"sizes": z.__dict__, "points": points, "logs": logs, "model": model}
    if not any(_ok(p) for ps in points.values() for p in ps):
        result.status, result.error = "failed", "no server answered a timed point"
    return result


def _prepare(ctx: Context, base: Path, env: dict[str, str]) -> dict[str, Any]:
    """The small CNN of the serving benchmark (``bench/workloads/serve_models.py``)."""
    ctx.log("training the small CNN one epoch (in-process)")
    models = train_models(ctx, base, env, batch_sizes=[1], seconds=0.2, names=["cnn"])
    if "error" in models:
        return models
    return {"image": models["image"], "checkpoint": models["models"]["cnn"]["checkpoint"]}


def _server(ctx: Context, kind: str, checkpoint: str, base: Path, log_dir: Path, i: int) -> Server:
    port = free_port()
    cmd = [
        *ctx.settings.lepton,
        "serve",
        f"cnn={checkpoint}",
        f"serve.port={port}",
        f"serve.replicas.num_cpus={REPLICA_CPUS}",
    ]
    if kind == "on":
        cmd += [f"serve.log.dir={log_dir}", "serve.log.flush_s=1"]
    return Server(f"log-{kind}-{i}", cmd, port, base / f"log-{kind}-{i}.log")


def _log_summary(log_dir: Path) -> dict[str, Any]:
    files = sorted((log_dir / "predictions").rglob("*.jsonl"))
    records = sum(len(f.read_text(encoding="utf-8").splitlines()) for f in files)
    return {"dir": str(log_dir), "files": len(files), "records": records}


def _median(points: list[dict[str, Any]], key: str) -> float | None:
    values = [p[key] for p in points if _ok(p)]
    return statistics.median(values) if values else None


def _rows(result: BenchResult, points: dict[str, Any], logs: list[dict[str, Any]]) -> None:
    on_rps, off_rps = _median(points["on"], "rps"), _median(points["off"], "rps")
    r = ratio(on_rps, off_rps)
    result.rows.append(
        Row(
            f"`lepton serve` small CNN, log on, c={CONCURRENCY}",
            on_rps,
            "req/s",
            f"log off, c={CONCURRENCY}",
            off_rps,
            r,
            f">= {RPS_GOAL:g}x",
            target_status(None if r is None else r >= RPS_GOAL),
        )
    )
    on_p99, off_p99 = _median(points["on"], "p99_ms"), _median(points["off"], "p99_ms")
    r = ratio(on_p99, off_p99)
    result.rows.append(
        Row(
            f"`lepton serve` small CNN, log on, p99 at c={CONCURRENCY}",
            on_p99,
            "ms",
            f"log off, p99 at c={CONCURRENCY}",
            off_p99,
            r,
            f"<= {P99_GOAL:g}x",
            target_status(None if r is None else r <= P99_GOAL),
        )
    )
    on_p50, off_p50 = _median(points["on"], "p50_ms"), _median(points["off"], "p50_ms")
    result.rows.append(
        Row(
            f"`lepton serve` small CNN, log on, p50 at c={CONCURRENCY}",
            on_p50,
            "ms",
            f"log off, p50 at c={CONCURRENCY}",
            off_p50,
            ratio(on_p50, off_p50),
        )
    )
    if logs:
        result.rows.append(
            Row(
                "prediction records written (per server with the log on, median)",
                statistics.median(log["records"] for log in logs),
                "records",
                note="after the server's graceful stop; the timed requests answered were "
                + ", ".join(str(log.get("timed_ok")) for log in logs)
                + " (warm-up and the check request are logged too)",
            )
        )
