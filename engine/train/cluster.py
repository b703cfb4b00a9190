"""Getting a Ray cluster for a command, and checking the job fits it before starting.

No address (and no ``RAY_ADDRESS``): an embedded local cluster is started for the
command and stopped after it, bound to loopback, its session directory removed at the
end (:mod:`engine.train.embedded`). With an address, the command joins that cluster
(token authentication is Ray's: ``RAY_AUTH_MODE=token`` and the token in the
environment). A cluster already initialised in this process (tests) is reused.

After a run that finished, the embedded cluster is stopped on a thread
(:func:`wait_for_teardown` joins it; the process, whose thread it is, never exits
before): the run is recorded, the summary printed and the report rendered meanwhile.
After a failure or an interrupt it is stopped before anything is recorded, as the
workers must be gone (and the logs kept) first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from engine.config.schema import ScalingConfig
from engine.errors import ClusterError
from engine.runs.storage import Location, first_line
from engine.train.embedded import (
    LOOPBACK,
    end_autoscaler_monitor,
    init_kwargs,
    loopback_only,
    remove_session,
)


@dataclass
class ClusterResources:
    total_cpus: float
    total_gpus: float
    nodes: int
    max_node_cpus: float
    max_node_gpus: float
    hosts: int = 1  # distinct node addresses: nodes on one machine share a filesystem


@dataclass
class Cluster:
    """The Ray cluster a command runs on, as :func:`ray_cluster` got it."""

    #: This command connected to Ray (started or joined) and disconnects at the end; False
    #: for a cluster initialised before (tests), which is left as it was found.
    owned: bool = False
    #: Started by this command on this machine: its workers share this process's disk.
    embedded: bool = False
    #: The embedded cluster's session directory, removed at the end.
    session_dir: Path | None = None
    #: Set by the driver when the run failed: the session's logs are copied there first.
    keep_logs_in: Path | None = None


#: How often Ray Train V2's controller polls the workers (``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``;
#: Ray's default is 2 s). A worker's ``report`` waits in a queue of one until a poll
#: takes it, and the controller sees the training function return only at the poll
#: after that: at 2 s an epoch shorter than 2 s waits for the poll, and every run ended
#: 4-6 s after its last epoch (docs/architecture.md, *Fixed costs*). A poll is one
#: small actor call per worker; one not answered within the interval is retried, not
#: an error (a worker is declared dead after Train's 10-minute health-check timeout).
TRAIN_POLL_S = "0.1"

#: The embedded cluster being stopped on a thread after a finished run (see the module doc).
_teardown: threading.Thread | None = None


def wait_for_teardown() -> None:
    """Return once the cluster this process is stopping in the background is stopped."""
    if _teardown is not None:
        _teardown.join()


@contextmanager
def ray_cluster(address: str | None) -> Iterator[Cluster]:
    global _teardown
    wait_for_teardown()  # a cluster still stopping is gone before another one starts
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address.startswith(("http://", "https://")):
        raise ClusterError(
            f"{address} is a Jobs API (dashboard) URL, which `lepton submit` and `lepton jobs` "
            "take; this command joins a cluster by its GCS address.",
            hint="Pass ray.address=HOST:6379 (the address `ray status` shows; RAY_ADDRESS set "
            "for lepton submit is ignored then), or send the command with "
            "`lepton submit -- <command>`.",
        )
    if not address:
        loopback_only()  # before `import ray`: Ray reads the switch at import
    import ray

    # Read by the driver when fit() starts Train's controller, on any cluster.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", TRAIN_POLL_S)
    if ray.is_initialized():
        yield Cluster()
        return
    prepare_worker_environment()
    kwargs = dict(logging_level=logging.WARNING, log_to_driver=True, configure_logging=True)
    # Ray Train's print patch would echo every worker line twice through its logger.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    cluster = Cluster(owned=True, embedded=not address)
    try:
        if address:
            ray.init(address=address, **kwargs)  # type: ignore[arg-type]
        else:
            # One machine cannot be preempted node by node: skip Ray Train's watcher actor.
            os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
            # Ray turns token authentication on for a new local cluster and warns about it
            # on every start; for a cluster of this command's own that is noise. The only
            # public switch (setting RAY_AUTH_MODE) would also pin the auth mode, so the
            # warning's logger is quieted by name instead. That is a logger name, not an
            # import of Ray's private module: if Ray renames it, nothing breaks and the
            # warning simply comes back.
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
                logging.ERROR
            )
            context = ray.init(**init_kwargs(os.cpu_count() or 1), **kwargs)  # type: ignore[arg-type]
            # ray.init returns a RayContext here (a local cluster, not a Ray Client one).
            info = getattr(context, "address_info", {})
            cluster.session_dir = Path(info["session_dir"]) if info.get("session_dir") else None
            if info.get("node_ip_address") != LOOPBACK:  # `ray` was imported too early
                logging.getLogger(__name__).warning(
                    "The embedded Ray cluster listens on %s, not only on %s: ray was imported "
                    "before it started (see engine/train/embedded.py).",
                    info.get("node_ip_address"),
                    LOOPBACK,
                )
    except ConnectionError as exc:
        raise ClusterError(
            f"Cannot connect to the Ray cluster at {address}: {exc}",
            hint="Check the address (ray status), and for a token-authenticated cluster set "
            "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH).",
        ) from None
    except BaseException:  # stopped part-way (Ctrl-C): end what had started
        ray.shutdown()
        raise
    finished = False
    try:
        yield cluster
        finished = True
    finally:
        if finished and cluster.session_dir is not None:
            # Not a daemon: the interpreter waits for it at exit, and the session dir goes.
            _teardown = threading.Thread(target=_stop, args=(cluster,), name="lepton-ray-stop")
            _teardown.start()
        else:
            _stop(cluster)


def _stop(cluster: Cluster) -> None:
    """Leave the cluster; an embedded one's processes end, then its session dir goes."""
    import ray

    from engine.train.interrupts import fit_still_running

    if not cluster.embedded and fit_still_running():
        # Interrupted on a joined cluster: leaving Ray under the thread still waiting in
        # it can crash this process; the job ends with the process (interrupts.py).
        return
    if cluster.session_dir is not None:
        end_autoscaler_monitor(cluster.session_dir)  # else the shutdown waits a second for it
    # Waiting for Ray's processes to end lets nothing write into the session dir after.
    ray.shutdown(wait_for_processes=cluster.session_dir is not None)
    if cluster.session_dir is not None:
        remove_session(cluster.session_dir, cluster.keep_logs_in)


def prepare_worker_environment() -> None:
    """What workers of an embedded cluster inherit from this process's environment.

    torchmetrics imports ``matplotlib.pyplot`` at import time whenever matplotlib is
    installed, so every training worker loads it. Workers get the headless backend, and
    the font cache is built here, once, if it is missing: otherwise each worker builds
    its own and prints ``generated new fontManager``.
    """
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        import matplotlib
    except ImportError:  # nothing to prepare
        return
    cache = Path(matplotlib.get_cachedir())
    if not any(cache.glob("fontlist-*.json")):
        import matplotlib.font_manager  # noqa: F401  (builds and writes the cache)


def cluster_resources() -> ClusterResources:
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpus = [float(n.get("Resources", {}).get("CPU", 0)) for n in nodes]
    gpus = [float(n.get("Resources", {}).get("GPU", 0)) for n in nodes]
    hosts = len({n.get("NodeManagerAddress") for n in nodes}) or 1
    return ClusterResources(
        sum(cpus), sum(gpus), len(nodes), max(cpus, default=0), max(gpus, default=0), hosts
    )


def check_storage(run_dir: str | Location, shared_fs: bool, res: ClusterResources) -> None:
    """Refuse a machine-local run directory on a cluster that spans several machines.

    Checkpoints written on one node must be readable by every other node (to resume
    after a failure) and by the driver. Nodes on one machine share its disk; an
    object store is reachable from every node.
    """
    if res.hosts <= 1 or shared_fs or not Location.parse(run_dir).is_local:
        return
    raise ClusterError(
        f"run.dir={run_dir} is a local path, but the cluster spans {res.hosts} machines: "
        "checkpoints written on one node would be invisible to the others.",
        hint="Point run.dir at an object store (run.dir=s3://<bucket>/<path> or gs://…), or at "
        "storage every node mounts (an NFS path) and add run.shared_fs=true.",
    )


PROBE_DIR = ".lepton-preflight"


def _probe_write(run_dir: str, marker: str) -> tuple[str, str | None]:
    """Runs on one node: write a marker into the run directory; (hostname, error or None)."""
    import socket

    try:
        (Location.parse(run_dir) / PROBE_DIR / marker).write_text(socket.gethostname())
        return socket.gethostname(), None
    except Exception as exc:  # any failure is the answer, sent back to the driver
        return socket.gethostname(), first_line(exc)


def check_nodes_reach_storage(run_dir: str | Location, timeout_s: float = 120) -> None:
    """Every alive node with CPUs writes a marker into ``run_dir``; the driver must see all.

    Catches, before training starts, a node without credentials or endpoint for an object
    store, and a "shared" mount that is not shared (the driver cannot see a node's marker).
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    where = Location.parse(run_dir)
    nodes = [
        n for n in ray.nodes() if n.get("Alive") and float(n.get("Resources", {}).get("CPU", 0)) > 0
    ]
    probe = ray.remote(num_cpus=0, max_retries=0)(_probe_write)
    refs = {
        n["NodeID"]: probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote(where.uri, n["NodeID"])
        for n in nodes
    }
    address = {n["NodeID"]: n.get("NodeManagerAddress", "?") for n in nodes}
    try:
        results = dict(zip(refs, ray.get(list(refs.values()), timeout=timeout_s), strict=True))
    except ray.exceptions.GetTimeoutError:
        raise ClusterError(
            f"Not every node answered the storage check for run.dir={where} in {timeout_s:.0f} s.",
            hint="Check that every node is healthy (ray status) and can reach the storage.",
        ) from None
    try:
        problems = [
            f"node {address[node]} ({host}) cannot write there: {error}"
            for node, (host, error) in results.items()
            if error is not None
        ]
        if not problems:
            problems = [
                f"node {address[node]} ({host}) wrote a file the driver cannot see"
                for node, (host, _) in results.items()
                if not (where / PROBE_DIR / node).is_file()
            ]
    finally:
        # A leftover marker folder is harmless; never let cleaning up mask the answer.
        with contextlib.suppress(Exception):
            (where / PROBE_DIR).delete_tree()
    if problems:
        raise ClusterError(
            f"run.dir={where} is not reachable from every node: " + "; ".join(problems) + ".",
            hint="Give every node the same access: for an object store the credentials and "
            "endpoint (AWS_* / GOOGLE_APPLICATION_CREDENTIALS, or an instance role) in the "
            "nodes' environment; for a path, a mount every node shares.",
        )


def check_fits(scaling: ScalingConfig, res: ClusterResources) -> None:
    """Refuse a job the cluster can never place (Ray would wait for it forever)."""
    n, cpu = scaling.num_workers, scaling.cpus_per_worker
    if cpu > res.max_node_cpus:
        raise ClusterError(
            f"scaling.cpus_per_worker={cpu:g} but the largest node has {res.max_node_cpus:g} CPUs.",
            hint="Lower scaling.cpus_per_worker.",
        )
    if n * cpu > res.total_cpus:
        raise ClusterError(
            f"scaling.num_workers={n} × scaling.cpus_per_worker={cpu:g} needs {n * cpu:g} CPUs, "
            f"but the cluster has {res.total_cpus:g} in total ({res.nodes} node(s)).",
            hint=f"Use at most scaling.num_workers={max(1, int(res.total_cpus // cpu))}, lower "
            "scaling.cpus_per_worker, or run on a larger cluster (ray.address=...).",
        )
    if scaling.use_gpu:
        g = scaling.gpus_per_worker
        if res.total_gpus == 0:
            raise ClusterError(
                "scaling.use_gpu=true but the cluster has no GPUs.",
                hint="Set scaling.use_gpu=false, or join a cluster with GPU nodes (ray.address=...).",
            )
        if n * g > res.total_gpus or g > res.max_node_gpus:
            raise ClusterError(
                f"scaling.num_workers={n} × scaling.gpus_per_worker={g:g} needs {n * g:g} GPUs, "
                f"but the cluster has {res.total_gpus:g} (at most {res.max_node_gpus:g} per node).",
                hint="Lower scaling.num_workers or scaling.gpus_per_worker.",
            )
    if scaling.placement_strategy == "STRICT_SPREAD" and n > res.nodes:
        raise ClusterError(
            f"scaling.placement_strategy=STRICT_SPREAD puts each of {n} workers on its own node, "
            f"but the cluster has {res.nodes} node(s).",
            hint="Use SPREAD (best effort) or fewer workers.",
        )
