"""7. Serving: `lepton serve` with and without dynamic batching, against a plain FastAPI +
uvicorn server on the same predictor and against the predictor alone, for the vision task's
small CNN and ResNet-18. Every server is a subprocess; the load comes from
``bench/workloads/http_load.py`` (one subprocess per point), over HTTP to 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.core import BenchResult, Context, Row, ratio, target_status
from bench.proc import TreeSampler, run_monitored
from bench.registry import register

BATCH_TARGET = 2.0  # batching on / off, requests/s at the highest concurrency
LIMIT_TARGET = 0.8  # served (batching on) / the predictor's compute-bound limit: ResNet-18
PLAIN_TARGET = 1.0  # served (batching on) / plain FastAPI: more than this
CONCURRENCY = (1, 8, 32)
TOP = CONCURRENCY[-1]
FLOOR_CONCURRENCY = (1, TOP)  # GET /v2/health/live: the HTTP path with no model call
#: The models (bench/workloads/serve_models.py trains them), as named in the URLs.
MODELS = {"cnn": "small CNN", "resnet18": "ResNet-18"}
LIMIT_GOAL_FOR = ("resnet18",)
BATCH_SIZES = (1, 8, 32, 64)
#: The servers, in the order they run.
SERVERS = {
    "batched": "`lepton serve`, batching on",
    "unbatched": "`lepton serve`, batching off",
    "plain": "plain FastAPI + uvicorn",
}
OTHER_BUSY = 0.25  # other processes' CPU in a point (cores) above which it is flagged noisy
REPLICA_CPUS = 1  # per model replica: both models' replicas fit the 2-CPU embedded cluster
THREADS = REPLICA_CPUS  # torch threads: what a replica sets (its CPUs), for every variant


@dataclass(frozen=True)
class Sizes:
    requests: int  # timed requests per point, at most
    seconds: float  # timed seconds per point, at most
    warmup_s: float  # untimed load before each point
    limit_seconds: float  # timed seconds per batch size of the predictor alone


FULL = Sizes(2000, 6.0, 1.0, 1.5)
QUICK = Sizes(300, 2.0, 0.5, 0.5)


@register(7, "serve", "Serving: `lepton serve` latency and throughput")
def serve(ctx: Context) -> BenchResult:
    """Requests/s and p50/p99 latency at client concurrency 1, 8 and 32 of `lepton serve`
    (batching on and off) and of a plain FastAPI + uvicorn server on the same predictor, and
    the predictor's own images/s at its best batch size, for the small CNN and ResNet-18."""
    s = ctx.settings
    z = QUICK if s.quick else FULL
    base = s.workdir / "serve"
    base.mkdir(parents=True, exist_ok=True)
    env = ctx.subprocess_env()
    env["LEPTON_HOME"] = str(base / "lepton-home")  # the foreground service's record
    result = BenchResult()

    models = _prepare(ctx, z, base, env)
    if "error" in models:
        result.status, result.error = "failed", models["error"]
        return result
    body = base / "body.json"
    body.write_text(json.dumps({"instances": [models["image"]]}), encoding="utf-8")

    servers: dict[str, Server] = {}
    points: dict[str, dict[str, dict[int, dict[str, Any]]]] = {}
    floors: dict[str, dict[int, dict[str, Any]]] = {}  # GET /v2/health/live: no model
    for kind in SERVERS:
        server = servers[kind] = _server(ctx, kind, models, base)
        points[kind] = {}
        try:
            if not server.start(env, s.workdir, timeout_s=min(240.0, s.timeout_s)):
                ctx.log(f"  {kind}: FAILED to start: {server.error} (log: {server.log_path})")
                continue
            ctx.log(f"  {kind}: ready in {server.ready_s:.1f} s at {server.url}")
            for name in MODELS:
                points[kind][name] = {}
                for c in CONCURRENCY:
                    point = _point(
                        ctx, server, f"{name}-c{c}", f"/v1/models/{name}:predict", body, c, z, env
                    )
                    points[kind][name][c] = point
                    ctx.log(f"  {kind:9} {name:8} c={c:<2} {_describe_point(point)}")
                if kind != "plain":
                    server.stats[name] = _http_json(f"{server.url}/v1/models/{name}")
            floors[kind] = {}
            for c in FLOOR_CONCURRENCY if kind != "unbatched" else ():  # same path as batched
                point = _point(ctx, server, f"live-c{c}", "/v2/health/live", None, c, z, env)
                floors[kind][c] = point
                ctx.log(f"  {kind:9} {'GET live':8} c={c:<2} {_describe_point(point)}")
        finally:
            server.stop()
            ctx.log(
                f"  {kind}: stopped in {server.stop_s:.1f} s (exit {server.returncode}), "
                f"{server.leftovers} process(es) left behind"
            )

    _rows(result, models, points)
    _floor_rows(result, floors)
    _notes(result, z, models, servers, points)
    result.details = {
        "sizes": z.__dict__,
        "models": {
            k: {x: v for x, v in m.items() if x != "image"} for k, m in models["models"].items()
        },
        "servers": {k: v.summary() for k, v in servers.items()},
        "points": {
            k: {m: {str(c): p for c, p in v.items()} for m, v in pm.items()}
            for k, pm in points.items()
        },
        "floors": {k: {str(c): p for c, p in v.items()} for k, v in floors.items()},
    }
    if not any(_ok(p) for pm in points.values() for v in pm.values() for p in v.values()):
        result.status, result.error = "failed", "no server answered a timed point"
    return result


# -- the models and the predictor alone -------------------------------------------------


def _prepare(ctx: Context, z: Sizes, base: Path, env: dict[str, str]) -> dict[str, Any]:
    ctx.log(
        "training the small CNN and ResNet-18 one epoch each (in-process), then "
        f"predict() alone at batch {', '.join(map(str, BATCH_SIZES))}"
    )
    models = train_models(ctx, base, env, batch_sizes=BATCH_SIZES, seconds=z.limit_seconds)
    if "error" in models:
        return models
    for name, m in models["models"].items():
        ctx.log(
            f"  {name}: {m['parameters']:,} parameters, trained in {m['train_s']:.1f} s; "
            + ", ".join(f"batch {r['batch']} {r['images_per_s']:.0f}" for r in m["limit"])
            + " images/s"
        )
    return models


def train_models(
    ctx: Context,
    base: Path,
    env: dict[str, str],
    *,
    batch_sizes: Sequence[int],
    seconds: float,
    names: Sequence[str] = (),
) -> dict[str, Any]:
    """``bench/workloads/serve_models.py`` in a child process: the models (``names``, or
    all) trained one epoch, and ``predict()`` timed alone at ``batch_sizes``; its JSON,
    with ``wall_s``, or ``{"error": ...}``."""
    s = ctx.settings
    out = base / "models.json"
    proc = run_monitored(
        [
            s.python,
            "-m",
            "bench.workloads.serve_models",
            f"--root={base / 'runs'}",
            f"--out={out}",
            f"--threads={THREADS}",
            *(["--models", *names] if names else []),
            "--batch-sizes",
            *map(str, batch_sizes),
            f"--seconds={seconds}",
        ],
        log_path=base / "models.log",
        cwd=s.workdir,
        env=env,
        timeout_s=s.timeout_s,
        memory=False,
    )
    if not proc.ok or not out.is_file():
        why = "timed out" if proc.timed_out else f"exit status {proc.returncode}"
        return {"error": f"training the models failed ({why}): {proc.tail(1500)}".strip()}
    models: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    models["wall_s"] = proc.wall_s
    return models


# -- the servers ------------------------------------------------------------------------


@dataclass
class Server:
    kind: str
    cmd: list[str]
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    sampler: TreeSampler | None = None
    ready_s: float | None = None
    stop_s: float = 0.0
    returncode: int | None = None
    signalled: str = ""  # how it was stopped: SIGINT, or SIGTERM/SIGKILL when it would not
    leftovers: int = 0  # its processes still alive after it exited (then ended here)
    port_free_after: bool | None = None
    error: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)  # GET /v1/models/<name>, after the load

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(self, env: dict[str, str], cwd: Path, timeout_s: float) -> bool:
        """Launch; True once ``/v2/health/ready`` answers 200 (every model loaded)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own session: Ray's daemons too, for the clean-up
            )
        self.sampler = TreeSampler(self.proc.pid)
        while True:
            if self.proc.poll() is not None:
                self.error = f"exited with status {self.proc.returncode} before it was ready"
                return False
            if _http_status(f"{self.url}/v2/health/ready") == 200:
                self.ready_s = time.perf_counter() - started
                self.sampler.sample()
                return True
            if time.perf_counter() - started > timeout_s:
                self.error = f"not ready after {timeout_s:.0f} s"
                return False
            time.sleep(0.25)

    def stop(self, grace_s: float = 60.0) -> None:
        """SIGINT, as Ctrl-C: `lepton serve` shuts Serve down and stops its Ray, uvicorn
        exits. Then anything of its tree or session still alive is ended and counted."""
        if self.proc is None:
            return
        started = time.perf_counter()
        if self.sampler is not None:
            self.sampler.sample()  # every process of its tree, for the leftover check
        if self.proc.poll() is None:
            self.signalled = "SIGINT"
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.signalled = "SIGTERM to its group"
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.signalled = "SIGKILL to its group"
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=10)
        self.stop_s = time.perf_counter() - started
        self.returncode = self.proc.returncode
        self.leftovers = _end_leftovers(self.proc.pid, self.sampler)
        self.port_free_after = _port_free(self.port)

    def log_says(self, text: str) -> bool:
        try:
            return text in self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False

    def log_lines(self) -> int:
        try:
            with open(self.log_path, "rb") as fh:
                return sum(1 for _ in fh)
        except OSError:
            return 0

    def summary(self) -> dict[str, Any]:
        return {
            "cmd": self.cmd,
            "log": str(self.log_path),
            "ready_s": self.ready_s,
            "stop_s": self.stop_s,
            "returncode": self.returncode,
            "signalled": self.signalled,
            "leftovers": self.leftovers,
            "port_free_after": self.port_free_after,
            "error": self.error,
            "stats": self.stats,
        }


def _server(ctx: Context, kind: str, models: dict[str, Any], base: Path) -> Server:
    s = ctx.settings
    port = _free_port()
    named = [f"{name}={models['models'][name]['checkpoint']}" for name in MODELS]
    if kind == "plain":
        cmd = [
            s.python,
            "-m",
            "bench.workloads.plain_fastapi",
            *[arg for m in named for arg in ("--model", m)],
            f"--port={port}",
            f"--threads={THREADS}",
        ]
    else:
        cmd = [
            *s.lepton,
            "serve",
            *named,
            f"serve.port={port}",
            f"serve.replicas.num_cpus={REPLICA_CPUS}",
            f"serve.batch.enabled={'true' if kind == 'batched' else 'false'}",
        ]
    shown = [a for a in cmd[1:] if not a.startswith(tuple(f"{n}=" for n in MODELS))]
    ctx.log(f"{kind}: {SERVERS[kind]}: {Path(cmd[0]).name} {' '.join(shown)} (both models)")
    return Server(kind, cmd, port, base / f"{kind}.log")


def _end_leftovers(pid: int, sampler: TreeSampler | None) -> int:
    """End what the server left running: its tree's processes seen while it ran, and any
    other process of its session (it was started in one of its own). Those still alive 10 s
    after it exited are ended here and counted."""
    found: dict[int, psutil.Process] = {}
    if sampler is not None:
        for proc in sampler.alive_descendants():
            found[proc.pid] = proc
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if proc.pid != pid and os.getsid(proc.pid) == pid and proc.status() != "zombie":
                found[proc.pid] = proc
    if not found:
        return 0
    _, alive = psutil.wait_procs(list(found.values()), timeout=10)  # Ray may be stopping still
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, still = psutil.wait_procs(alive, timeout=5)
    for proc in still:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    return len(alive)


# -- one point --------------------------------------------------------------------------


def _point(
    ctx: Context,
    server: Server,
    key: str,
    path: str,
    body: Path | None,
    c: int,
    z: Sizes,
    env: dict[str, str],
) -> dict[str, Any]:
    """One client run (``bench/workloads/http_load.py``): POST ``body`` to ``path``, or GET
    it without one; for a GET, half the timed seconds."""
    s = ctx.settings
    out = server.log_path.parent / "points" / f"{server.kind}-{key}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    seconds = z.seconds if body is not None else z.seconds / 2
    cmd = [
        s.python,
        "-m",
        "bench.workloads.http_load",
        f"--url={server.url}{path}",
        f"--concurrency={c}",
        f"--requests={z.requests}",
        f"--seconds={seconds}",
        f"--warmup-s={z.warmup_s}",
        f"--out={out}",
    ]
    if body is not None:
        cmd.append(f"--body={body}")
    if server.pid is not None:
        cmd.append(f"--server-pid={server.pid}")
    try:
        done = subprocess.run(
            cmd,
            cwd=s.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=z.warmup_s + seconds + 120,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": "the client timed out"}
    if done.returncode != 0 or not out.is_file():
        tail = done.stdout.decode("utf-8", "replace")[-1500:]
        return {"error": f"the client failed (exit status {done.returncode}): {tail}"}
    point: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    if not point["check"]["ok"]:
        point["error"] = point["check"]["error"]
    return point


def _ok(point: dict[str, Any] | None) -> bool:
    return point is not None and "error" not in point and point.get("ok", 0) > 0


def _describe_point(p: dict[str, Any]) -> str:
    if not _ok(p):
        return f"FAILED: {p.get('error') or 'no answer'}"[:300]
    errors = f", {p['errors']} ERRORS ({p['error_samples'][:1]})" if p["errors"] else ""
    other = _other_share(p)
    busy = "" if other is None else f", other processes {100 * other:.0f}% of a core"
    return (
        f"{p['rps']:7.1f} req/s  p50 {p['p50_ms']:6.1f} ms  p99 {p['p99_ms']:6.1f} ms  "
        f"max {p['max_ms']:6.1f} ms  ({p['ok']} requests in {p['wall_s']:.1f} s{errors}{busy})"
    )


def _other_share(p: dict[str, Any]) -> float | None:
    """CPU the rest of the machine (not the server's tree, not the client) used in the
    window, in cores: another job on the machine shows here."""
    busy = p.get("machine_busy_cpu_s")
    if busy is None:
        return None
    return max(0.0, busy - sum(p["server_cpu_s"].values()) - p["client_cpu_s"]) / p["wall_s"]


# -- rows and notes ---------------------------------------------------------------------


def _get(points: dict[str, Any], kind: str, name: str, c: int, key: str) -> float | None:
    p = points.get(kind, {}).get(name, {}).get(c)
    return p.get(key) if _ok(p) else None


def _rows(result: BenchResult, models: dict[str, Any], points: dict[str, Any]) -> None:
    rows = result.rows
    for name, label in MODELS.items():
        m = models["models"][name]

        def rps(kind: str, c: int = TOP, name: str = name) -> float | None:
            return _get(points, kind, name, c, "rps")

        batched, unbatched, plain = rps("batched"), rps("unbatched"), rps("plain")
        limit, best = m["best_images_per_s"], m["best_batch"]

        r = ratio(batched, unbatched)
        rows.append(
            Row(
                f"{label}: `lepton serve` batching on, c={TOP}",
                batched,
                "req/s",
                f"batching off, c={TOP}",
                unbatched,
                r,
                f">= {BATCH_TARGET:g}x",
                target_status(None if r is None else r >= BATCH_TARGET),
            )
        )
        r = ratio(batched, limit)
        goal = name in LIMIT_GOAL_FOR
        rows.append(
            Row(
                f"{label}: `lepton serve` batching on, c={TOP}",
                batched,
                "images/s",
                f"predict() alone, batch {best} (compute-bound limit)",
                limit,
                r,
                f">= {LIMIT_TARGET:g}x" if goal else None,
                target_status(None if r is None or not goal else r >= LIMIT_TARGET),
                note="one image per request",
            )
        )
        r = ratio(batched, plain)
        rows.append(
            Row(
                f"{label}: `lepton serve` batching on, c={TOP}",
                batched,
                "req/s",
                f"plain FastAPI + uvicorn, c={TOP}",
                plain,
                r,
                f"> {PLAIN_TARGET:g}x",
                target_status(None if r is None else r > PLAIN_TARGET),
            )
        )
        for kind in ("batched", "unbatched"):
            a, b = (_get(points, k, name, 1, "p50_ms") for k in (kind, "plain"))
            rows.append(
                Row(
                    f"{label}: p50 latency at c=1, {SERVERS[kind]}",
                    a,
                    "ms",
                    "plain FastAPI + uvicorn, c=1",
                    b,
                    ratio(a, b),
                    note="a lone request's fixed cost",
                )
            )
        for kind, server_label in SERVERS.items():
            for c in CONCURRENCY:
                p = points.get(kind, {}).get(name, {}).get(c)
                rows.append(
                    Row(
                        f"{label}: {server_label}, c={c}",
                        p["rps"] if _ok(p) else None,
                        "req/s",
                        note=_latency_note(p),
                    )
                )
        shown = ", ".join(f"{x['batch']}: {x['images_per_s']:,.0f}" for x in m["limit"])
        rows.append(
            Row(
                f"{label}: predict() alone, best batch ({best})",
                limit,
                "images/s",
                note=f"images/s by batch size {shown}; {models['threads']} torch thread(s)",
            )
        )


def _floor_rows(result: BenchResult, floors: dict[str, dict[int, dict[str, Any]]]) -> None:
    """GET /v2/health/live: what a request costs each server with no model involved."""
    for kind, label in SERVERS.items():
        if kind == "unbatched":
            continue  # the same HTTP path as batching on: nothing of batching is involved
        for c in FLOOR_CONCURRENCY:
            p = floors.get(kind, {}).get(c)
            plain = floors.get("plain", {}).get(c)
            value = p["rps"] if p is not None and _ok(p) else None
            base = plain["rps"] if kind != "plain" and plain is not None and _ok(plain) else None
            result.rows.append(
                Row(
                    f"GET /v2/health/live (no model): {label}, c={c}",
                    value,
                    "req/s",
                    "plain FastAPI + uvicorn, same route" if kind != "plain" else None,
                    base,
                    ratio(value, base),
                    note=_latency_note(p),
                )
            )


def _latency_note(p: dict[str, Any] | None) -> str:
    if p is None:
        return "not measured"
    if not _ok(p):
        return f"FAILED: {p.get('error') or 'no answer'}"[:200]
    text = f"p50 {p['p50_ms']:.1f} ms, p99 {p['p99_ms']:.1f} ms, {p['ok']} requests"
    return text + (f", {p['errors']} errors" if p["errors"] else "")


def _notes(
    result: BenchResult,
    z: Sizes,
    models: dict[str, Any],
    servers: dict[str, Server],
    points: dict[str, Any],
) -> None:
    notes = result.notes
    for name, label in MODELS.items():
        m = models["models"][name]
        parts = []
        for what, kind, goal, op in (
            ("batching on / off", "unbatched", BATCH_TARGET, ">="),
            (
                "served / predict() alone",
                None,
                LIMIT_TARGET if name in LIMIT_GOAL_FOR else None,
                ">=",
            ),
            ("served / plain FastAPI", "plain", PLAIN_TARGET, ">"),
        ):
            top = _get(points, "batched", name, TOP, "rps")
            base = m["best_images_per_s"] if kind is None else _get(points, kind, name, TOP, "rps")
            r = ratio(top, base)
            if r is None:
                parts.append(f"{what} n/a")
            elif goal is None:
                parts.append(f"{what} {r:.2f}x (no goal for this model)")
            else:
                met = r >= goal if op == ">=" else r > goal
                parts.append(f"{what} {r:.2f}x ({op} {goal:g}x: {'met' if met else 'MISSED'})")
        notes.append(f"Goals, {label} at c={TOP}: " + "; ".join(parts) + ".")
    for name, label in MODELS.items():
        notes.extend(_collapse_note(label, name, points))
    notes.append(
        f"Models: task=vision on digits ({models['models']['cnn'].get('image_size')}x"
        f"{models['models']['cnn'].get('image_size')}), trained 1 epoch in-process "
        "(scaling=inprocess); "
        + ", ".join(
            f"{MODELS[n]} {m['parameters']:,} parameters" for n, m in models["models"].items()
        )
        + ". Both are served by each server (one `lepton serve` app with both models, "
        f"serve.replicas.num_cpus={REPLICA_CPUS} each, the ingress 0: the 2-CPU embedded "
        "cluster holds both), and loaded one after the other by the client."
    )
    notes.append(
        f"Load: closed loop, C client threads (C = {', '.join(map(str, CONCURRENCY))}), each "
        "with its own keep-alive `requests` session, one request at a time: POST "
        "/v1/models/<name>:predict with the same pre-encoded body for every server, "
        '{"instances": [<one digit, nested uint8 lists>]}. Each point: one checked request, '
        f"{z.warmup_s:g} s untimed warm-up, then at most {z.requests} requests or {z.seconds:g} s; "
        "requests/s = answers with status 200 / the window. The client runs on the same 2 "
        "cores as the server (its CPU share is below)."
    )
    notes.append(
        f"Torch threads: {THREADS} everywhere (a replica sets its CPUs, {REPLICA_CPUS}; the plain "
        "server and predict() alone are given the same). The plain server runs each request's "
        "predict() on its own in FastAPI's threadpool (no batching); `lepton serve` batching "
        "off runs them one at a time on its replica (serve.batch.max_batch_size 1)."
    )
    for name, label in MODELS.items():
        notes.append(_cpu_note(label, name, points))
    notes.append(_replica_cost_note(models, points))
    for kind, server in servers.items():
        notes.append(_server_note(kind, server, points))
    labels = {
        kind: {p["check"].get("label") for v in pm.values() for p in v.values() if _ok(p)}
        for kind, pm in points.items()
    }
    expected = {m["label"] for m in models["models"].values()}
    seen = set().union(*labels.values()) if labels else set()
    if seen and not seen <= expected:
        notes.append(
            f"Labels differ: predict() alone gave {sorted(expected)}, the servers {labels}."
        )
    busy = [
        f"{kind} {name} c={c} {100 * share:.0f}%"
        for kind, pm in points.items()
        for name, v in pm.items()
        for c, p in v.items()
        if _ok(p) and (share := _other_share(p)) is not None and share > OTHER_BUSY
    ]
    if busy:
        notes.append(
            "WARNING: other processes on the machine used more than "
            f"{100 * OTHER_BUSY:.0f}% of a core during {len(busy)} point(s) (those points "
            "are noisy): " + ", ".join(busy) + "."
        )
    slow = [
        f"{kind} {name} c={c}: max {p['max_ms']:.0f} ms vs p99 {p['p99_ms']:.0f} ms"
        for kind, pm in points.items()
        for name, v in pm.items()
        for c, p in v.items()
        if _ok(p) and p["max_ms"] > max(5 * p["p99_ms"], p["p99_ms"] + 100)
    ]
    if slow:
        notes.append("Latency spikes (slowest request > 5x p99): " + "; ".join(slow) + ".")


def _collapse_note(label: str, name: str, points: dict[str, Any]) -> list[str]:
    """Say so when a server answers fewer requests/s at the highest concurrency than at the
    one below it with its CPU mostly idle: then a ratio against it at c=32 flatters the other
    side, and the same ratio one step down is given too."""
    out = []
    below = CONCURRENCY[-2]
    for kind in SERVERS:
        top, lower = (points.get(kind, {}).get(name, {}).get(c) for c in (TOP, below))
        if top is None or lower is None or not (_ok(top) and _ok(lower)):
            continue
        if top["rps"] >= 0.7 * lower["rps"]:
            continue
        busy = top.get("machine_busy_cpu_s")
        idle = "" if busy is None else f", the machine {100 * busy / top['wall_s']:.0f}% busy"
        text = (
            f"{label}, {SERVERS[kind]}: throughput falls from {lower['rps']:.0f} req/s at c={below} "
            f"to {top['rps']:.0f} at c={TOP} (p50 {top['p50_ms']:.0f} ms, p99 "
            f"{top['p99_ms']:.0f} ms{idle}): requests wait rather than work"
        )
        if kind == "unbatched":
            on = _get(points, "batched", name, below, "rps")
            r = ratio(on, lower["rps"])
            if r is not None:
                text += f"; batching on / off at c={below} is {r:.2f}x"
        out.append(text + ".")
    return out


def _cpu_note(label: str, name: str, points: dict[str, Any]) -> str:
    """Where the CPU went at the highest concurrency, % of one core, by process."""
    parts = []
    for kind in SERVERS:
        p = points.get(kind, {}).get(name, {}).get(TOP)
        if not _ok(p):
            continue
        wall = p["wall_s"]
        used = {k: v for k, v in p["server_cpu_s"].items() if v / wall >= 0.02}
        shown = ", ".join(f"{k} {100 * v / wall:.0f}%" for k, v in sorted(used.items()))
        text = f"{kind}: {shown}; client {100 * p['client_cpu_s'] / wall:.0f}%"
        busy, other = p.get("machine_busy_cpu_s"), _other_share(p)
        if busy is not None and other is not None:
            text += f"; machine busy {100 * busy / wall:.0f}% (other processes {100 * other:.0f}%"
            steal = p.get("machine_steal_cpu_s") or 0.0
            text += f", stolen {100 * steal / wall:.0f}%)" if steal / wall >= 0.02 else ")"
        parts.append(text)
    return (
        f"CPU at c={TOP}, {label} (% of one core, by process; the machine has "
        f"{os.cpu_count()}): " + " | ".join(parts) + "."
    )


def _replica_cost_note(models: dict[str, Any], points: dict[str, Any]) -> str:
    """The model replica's CPU per request against predict()'s time per image: close to the
    best batch's when batches fill, close to batch 1's when they do not."""
    parts = []
    for name, label in MODELS.items():
        m = models["models"][name]
        by_batch = {x["batch"]: 1000.0 / x["images_per_s"] for x in m["limit"]}
        cells = []
        for kind in ("batched", "unbatched"):
            p = points.get(kind, {}).get(name, {}).get(TOP)
            if not _ok(p):
                continue
            cpu = p["server_cpu_s"].get(f"replica {name}--v1")
            if cpu is not None:
                cells.append(f"{kind} {1000.0 * cpu / max(1, p['requests']):.2f} ms")
        per = ", ".join(f"batch {b} {ms:.2f} ms" for b, ms in by_batch.items())
        parts.append(
            f"{label}: replica CPU per request {', '.join(cells) or 'n/a'}; predict() per image {per}"
        )
    return f"Model replica at c={TOP}: " + " | ".join(parts) + "."


def _server_note(kind: str, server: Server, points: dict[str, Any]) -> str:
    if server.ready_s is None:
        return f"FAILED: {SERVERS[kind]} did not start: {server.error} (log: {server.log_path})."
    text = (
        f"{SERVERS[kind]}: launch to ready {server.ready_s:.1f} s; stopped with "
        f"{server.signalled or 'nothing (it had exited)'} in {server.stop_s:.1f} s, exit status "
        f"{server.returncode}, {server.leftovers} process(es) left behind"
        + ("" if server.port_free_after else ", its port STILL IN USE")
    )
    lines = server.log_lines()
    if lines:
        text += f"; {lines} line(s) on its stdout/stderr"
    if kind != "plain":
        stopped = server.log_says("lepton: service stopped")
        text += "; Serve shut down and Ray stopped" if stopped else "; NO 'service stopped' line"
        served = []
        for name, stats in server.stats.items():
            summary = ((stats or {}).get("versions") or {}).get("1", {}).get("requests") or {}
            sent = sum(
                1 + p.get("warmup", {}).get("requests", 0) + p.get("requests", 0)
                for p in points.get(kind, {}).get(name, {}).values()
                if "check" in p
            )
            if summary:
                served.append(
                    f"{name} {summary.get('requests')} answered of {sent} sent, "
                    f"{summary.get('errors')} errors, ingress to replica p50 "
                    f"{summary.get('p50_ms')} ms / p99 {summary.get('p99_ms')} ms"
                )
        if served:
            text += "; the app's own count (GET /v1/models/<name>): " + "; ".join(served)
    failed = [
        f"{name} c={c}: {p.get('error') or p.get('error_samples')}"
        for name, v in points.get(kind, {}).items()
        for c, p in v.items()
        if not _ok(p) or p.get("errors")
    ]
    if failed:
        text += ". Errors: " + "; ".join(failed)[:800]
    return text + "."


# -- small helpers ------------------------------------------------------------------------

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http_status(url: str, timeout: float = 2.0) -> int:
    try:
        with _NO_PROXY.open(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0


def _http_json(url: str, timeout: float = 30.0) -> dict[str, Any] | None:
    try:
        with _NO_PROXY.open(url, timeout=timeout) as response:
            data: dict[str, Any] = json.loads(response.read())
            return data
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) != 0
