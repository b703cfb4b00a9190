"""Closed-loop HTTP load on one predict URL at one client concurrency.

``--concurrency`` threads, each with its own ``requests.Session`` (keep-alive), each sending
one request at a time: the same pre-encoded JSON body every time (``--body``: one image),
a new request as soon as the last one is answered. First one checked request (its JSON
parsed, its first prediction's label kept), then ``--warmup-s`` seconds of untimed load,
then the timed window: all threads start together and stop taking new requests after
``--requests`` requests in all or ``--seconds`` seconds, whichever comes first; the window
ends with the last answer. Requests/s counts answers with status 200 over the window;
latency is per request, send to answer read, of those.

With ``--server-pid`` it also reads the CPU seconds the server's process tree spent in the
window, by process (labelled from its command line: Ray names each actor's process), and
this client's own CPU seconds (``time.process_time``), so a report can tell a saturated
proxy from an idle replica. Writes ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

import requests

HEADERS = {"Content-Type": "application/json"}


def new_session() -> requests.Session:
    """Keep-alive, and straight to 127.0.0.1: no proxy from the environment."""
    session = requests.Session()
    session.trust_env = False
    return session


def percentile(ordered: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks; ``ordered`` sorted ascending."""
    if not ordered:
        return None
    k = (len(ordered) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def role_of(argv: list[str], is_root: bool) -> str:
    """A label for a process of the server's tree (Ray renames its actors' processes)."""
    if is_root:
        return "main process"
    head = argv[0] if argv else ""
    if head.startswith("ray::ServeReplica:"):
        parts = head.split(":")  # ray::ServeReplica:<app>:<deployment>[.<method>]
        deployment = parts[-1].split()[0].split(".")[0] if len(parts) >= 5 else ""
        return f"replica {deployment}".rstrip()
    if head.startswith("ray::ProxyActor"):
        return "Serve proxy"
    if head.startswith("ray::ServeController"):
        return "Serve controller"
    if head.startswith("ray::"):
        return "other Ray workers"
    return "Ray daemons and other"


def tree_cpu(pid: int | None) -> dict[str, float]:
    """CPU seconds (user + system) so far of each labelled part of ``pid``'s tree."""
    if pid is None:
        return {}
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return {}
    used: dict[str, float] = {}
    for proc in procs:
        try:
            times = proc.cpu_times()
            label = role_of(proc.cmdline() or [proc.name()], proc.pid == pid)
        except psutil.Error:
            continue
        used[label] = used.get(label, 0.0) + times.user + times.system
    return used


def send(session: requests.Session, url: str, body: bytes | None, timeout: float) -> Any:
    """POST ``body``; a GET without one."""
    if body is None:
        return session.get(url, timeout=timeout)
    return session.post(url, data=body, headers=HEADERS, timeout=timeout)


def check_once(url: str, body: bytes | None, timeout: float) -> dict[str, Any]:
    """One request, parsed: the first prediction's label, or why it failed."""
    try:
        with new_session() as session:
            response = send(session, url, body, timeout)
    except requests.RequestException as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
    if response.status_code != 200:
        return {"ok": False, "error": f"HTTP {response.status_code}: {response.text[:500]}"}
    predictions = (response.json().get("predictions") or [{}]) if body is not None else [{}]
    return {"ok": True, "label": predictions[0].get("label"), "bytes": len(response.content)}


def machine_cpu() -> tuple[float, float, float]:
    """(busy, steal, total) jiffies of all CPUs so far, from /proc/stat (zeros elsewhere)."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [float(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0, 0.0
    # user nice system idle iowait irq softirq steal guest guest_nice (guest is in user)
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    steal = fields[7] if len(fields) > 7 else 0.0
    total = sum(fields[:8])
    return total - idle - steal, steal, total


def load(
    url: str,
    body: bytes | None,
    sessions: list[requests.Session],
    *,
    seconds: float,
    budget: int,
    timeout: float,
    server_pid: int | None = None,
) -> dict[str, Any]:
    """One closed-loop window (see the module doc): the answers and their latencies."""
    lock = threading.Lock()
    left = [budget]
    go = threading.Barrier(len(sessions) + 1)
    state: dict[str, float] = {}
    records: list[list[tuple[float, int, float]]] = [[] for _ in sessions]
    errors: list[str] = []

    def worker(i: int) -> None:
        session, out = sessions[i], records[i]
        go.wait()
        deadline = state["deadline"]
        while True:
            with lock:
                if left[0] <= 0 or time.perf_counter() >= deadline:
                    return
                left[0] -= 1
            sent = time.perf_counter()
            try:
                response = send(session, url, body, timeout)
                status = response.status_code
                if status != 200 and len(errors) < 5:
                    errors.append(f"HTTP {status}: {response.text[:300]}")
            except requests.RequestException as exc:
                status = 0
                if len(errors) < 5:
                    errors.append(f"{type(exc).__name__}: {exc}"[:300])
            answered = time.perf_counter()
            out.append((answered - sent, status, answered))

    threads = [
        threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(sessions))
    ]
    for t in threads:
        t.start()
    server_before = tree_cpu(server_pid)
    machine_before = machine_cpu()
    client_before = time.process_time()
    started = time.perf_counter()
    state["deadline"] = started + seconds
    go.wait()
    for t in threads:
        t.join()
    flat = [r for rows in records for r in rows]
    ended = max((r[2] for r in flat), default=started)
    client_cpu = time.process_time() - client_before
    machine_after = machine_cpu()
    server_after = tree_cpu(server_pid)
    busy, steal, total = (a - b for a, b in zip(machine_after, machine_before, strict=True))
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    wall = max(ended - started, 1e-9)
    ok = sorted(1000.0 * lat for lat, status, _ in flat if status == 200)
    slowest = max(flat, key=lambda r: r[0], default=None)
    return {
        "concurrency": len(sessions),
        "requests": len(flat),
        "ok": len(ok),
        "errors": len(flat) - len(ok),
        "error_samples": errors,
        "wall_s": wall,
        "rps": len(ok) / wall,
        "p50_ms": percentile(ok, 0.50),
        "p90_ms": percentile(ok, 0.90),
        "p99_ms": percentile(ok, 0.99),
        "max_ms": ok[-1] if ok else None,
        "mean_ms": sum(ok) / len(ok) if ok else None,
        "slowest_at_s": None if slowest is None else slowest[2] - slowest[0] - started,
        "client_cpu_s": client_cpu,
        # every process on the machine, in CPU seconds: busy (not idle, not stolen), stolen
        "machine_busy_cpu_s": busy / hz if total else None,
        "machine_steal_cpu_s": steal / hz if total else None,
        "server_cpu_s": {
            k: server_after[k] - server_before.get(k, 0.0) for k in sorted(server_after)
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="the URL: POST --body to it, else GET")
    parser.add_argument("--body", type=Path, default=None, help="the request body (JSON)")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--requests", type=int, default=1000, help="timed requests, at most")
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds, at most")
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=60.0, help="per request")
    parser.add_argument("--server-pid", type=int, default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    body = None if args.body is None else args.body.read_bytes()
    result: dict[str, Any] = {"url": args.url, "body_bytes": None if body is None else len(body)}
    result["check"] = check_once(args.url, body, args.timeout)
    if result["check"]["ok"]:
        sessions = [new_session() for _ in range(args.concurrency)]
        result["warmup"] = load(
            args.url, body, sessions, seconds=args.warmup_s, budget=1 << 30, timeout=args.timeout
        )
        result["warmup"] = {k: result["warmup"][k] for k in ("requests", "errors", "rps")}
        result |= load(
            args.url,
            body,
            sessions,
            seconds=args.seconds,
            budget=max(args.requests, 2 * args.concurrency),
            timeout=args.timeout,
            server_pid=args.server_pid,
        )
        for session in sessions:
            session.close()
    args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
