"""Ray start-up and shutdown in a fresh process, step by step.

``--mode default``: ``ray.init()`` as a user writes it (the dashboard starts when
``ray[default]`` is installed, as here); ``--mode no-dashboard``:
``ray.init(include_dashboard=False)``; ``--mode lepton``: the engine's own embedded
cluster, ``engine.train.cluster.ray_cluster(None)`` (loopback, metrics page off,
``ray.shutdown(wait_for_processes=True)`` and the session dir removed on exit).

Steps, each timed with ``time.perf_counter()`` and written as JSON to ``--out``:
``import_s`` (``import ray``), ``init_s`` (``ray.init`` until it returns),
``first_task_s`` (one no-op task: a worker process starts), ``state_api_s`` (from
``ray.init`` returning until the state API answers, which Train V2's placement-group
cleaner relies on; ``state_api_error`` when it never does), ``shutdown_s`` (until the
call returns) and ``stopped_s`` (until Ray is stopped: the engine may stop its cluster on
a thread). The parent measures the whole process (interpreter start to exit) around it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

MODES = ("default", "no-dashboard", "lepton")


def _noop() -> int:
    return os.getpid()


def _state_api(deadline_s: float) -> tuple[float | None, str | None]:
    """Seconds until the state API lists this cluster's own node, or (None, the last error).

    The address is this cluster's own, and the answer must name this node: with other
    Ray clusters on the machine (CI, tests) a look-up can reach another one's dashboard."""
    import ray
    from ray.util.state import list_nodes

    address = ray.get_runtime_context().gcs_address
    node_id = ray.get_runtime_context().get_node_id()
    started = time.perf_counter()
    error = None
    while time.perf_counter() - started < deadline_s:
        try:
            nodes = list_nodes(address=address, timeout=5)
            if any(n.node_id == node_id for n in nodes):
                return time.perf_counter() - started, None
            error = "answered without this cluster's node (another cluster's dashboard)"
        except Exception as exc:  # any failure: not answering (yet)
            error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
        time.sleep(0.2)
    return None, error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=MODES, default="default")
    parser.add_argument("--num-cpus", type=int, default=None)
    parser.add_argument("--state-api-deadline", type=float, default=15.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result: dict[str, Any] = {"mode": args.mode}
    t = time.perf_counter()

    cluster: AbstractContextManager[Any] = nullcontext()
    if args.mode == "lepton":
        from engine.train.cluster import ray_cluster
        from engine.train.embedded import loopback_only

        loopback_only()  # what ray_cluster does first: before `import ray`
    import ray

    result["import_s"] = time.perf_counter() - t

    t = time.perf_counter()
    if args.mode == "lepton":
        cluster = ray_cluster(None)
        cluster.__enter__()
    else:
        kwargs: dict[str, Any] = {"logging_level": logging.WARNING}
        if args.num_cpus:
            kwargs["num_cpus"] = args.num_cpus
        if args.mode == "no-dashboard":
            kwargs["include_dashboard"] = False
        ray.init(**kwargs)
    init_done = time.perf_counter()
    result["init_s"] = init_done - t

    t = time.perf_counter()
    ray.get(ray.remote(_noop).remote())
    result["first_task_s"] = time.perf_counter() - t

    state_s, error = _state_api(args.state_api_deadline)
    result["state_api_s"] = None if state_s is None else time.perf_counter() - init_done
    result["state_api_error"] = error

    t = time.perf_counter()
    if args.mode == "lepton":
        cluster.__exit__(None, None, None)
        result["shutdown_s"] = time.perf_counter() - t
        # The engine may stop the cluster on a thread after a finished run: wait for it.
        import engine.train.cluster as engine_cluster

        wait = getattr(engine_cluster, "wait_for_teardown", None)
        if callable(wait):
            wait()
    else:
        ray.shutdown()
        result["shutdown_s"] = time.perf_counter() - t
    result["stopped_s"] = time.perf_counter() - t
    result["finished_at"] = time.time()  # the parent takes process exit minus this
    args.out.write_text(json.dumps(result) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
