"""A local multi-node Ray cluster on this machine, to try multi-node runs and submission.

``python -m engine.jobs.local_cluster up|down|status [--dir DIR]`` (``make cluster-up``):
a head and two worker nodes started as on real machines (``ray start --head``, then
``ray start --address``), each with its CPU count and a custom resource naming it
(``lepton_head``, ``lepton_worker_1``, ...) to show where work was placed.

- **Token authentication on.** A fresh token in ``DIR/auth_token`` (mode 0600), every
  node started with ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN_PATH`` naming it: a
  client without the token gets 401, one with another token 403.
- **Dashboard and Jobs API on 127.0.0.1** (port 8265, or a free one when 8265 is taken).
- **Its own processes only.** All under a private ``--temp-dir``; ``down`` stops the
  processes naming it or this cluster's GCS port, and their children (never ``ray
  stop``: it stops every Ray on the machine).
- **A state file**, ``DIR/cluster.json`` (default ``./.lepton-cluster``, git-ignored):
  addresses, token path, temp dir, nodes and pids.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ClusterError

DEFAULT_DIR = ".lepton-cluster"
STATE_FILE = "cluster.json"
TOKEN_FILE = "auth_token"
LOOPBACK = "127.0.0.1"
DASHBOARD_PORT = 8265
#: Environment a node must not inherit: another cluster's address or token, and the
#: embedded cluster's loopback switch (with it, `ray start --address` refuses to join).
_FOREIGN_ENV = ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
#: How a process of a joining node names the head's GCS (``--gcs-address=10.0.0.5:6380``).
_ADDRESS_FLAGS = ("--address", "--gcs-address", "--gcs_address")


@dataclass
class ClusterState:
    """What ``up`` started, as written to ``DIR/cluster.json``."""

    gcs_address: str
    dashboard_url: str
    token_path: str
    temp_dir: str
    nodes: list[dict[str, Any]]
    pids: list[dict[str, Any]] = field(default_factory=list)
    started_at: float = 0.0

    def client_env(self) -> dict[str, str]:
        """The variables a client (``lepton submit``, ``ray job``) needs to reach the cluster."""
        token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": self.token_path}
        return {"RAY_ADDRESS": self.dashboard_url, **token}

    @property
    def gcs_port(self) -> int:
        return int(self.gcs_address.rpartition(":")[2])


def _psutil() -> Any:
    """psutil: installed, or the copy Ray ships in ``ray/thirdparty_files`` (no ``import ray``)."""
    try:
        import psutil
    except ImportError:
        import importlib.util

        spec = importlib.util.find_spec("ray")
        if spec is None or spec.origin is None:
            raise
        sys.path.append(str(Path(spec.origin).parent / "thirdparty_files"))
        import psutil
    return psutil


def free_port(preferred: int = 0) -> int:
    """``preferred`` if nothing listens there on loopback, else a free port."""
    with socket.socket() as s:
        try:
            s.bind((LOOPBACK, preferred))
        except OSError:
            s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def read_state(directory: str | Path = DEFAULT_DIR) -> ClusterState | None:
    path = Path(directory) / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ClusterState(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        hint = "Its processes run under /tmp/lepton-cluster-*: stop them by pid, then remove it."
        raise ClusterError(
            f"The local cluster's state file {path} is damaged ({exc}).", hint=hint
        ) from None


def _node_env(token_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_ENV}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_path))
    # A job's `python ...` entrypoint is this environment's, as on a node with it activated.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _ray_start(args: list[str], env: dict[str, str], node: dict[str, Any]) -> None:
    what = f"{node['name']} node"
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray is None:
        raise ClusterError("No `ray` command here.", hint="Install the project: `make install`.")
    try:
        out = subprocess.run(
            [ray, "start", *args, "--disable-usage-stats"],
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
        )
    except subprocess.TimeoutExpired:
        raise ClusterError(f"`ray start` for the {what} did not finish in 180 s.") from None
    if out.returncode != 0:
        tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-15:])
        raise ClusterError(f"`ray start` for the {what} failed:\n{tail}")


def _get(url: str, token: str, timeout: float = 5.0) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read().decode())


def _wait_for(what: str, check: Any, timeout: float) -> Any:
    deadline, last = time.monotonic() + timeout, "no answer"
    while True:
        try:
            result = check()
            if result:
                return result
        except (OSError, ValueError) as exc:  # URLError is an OSError
            last = str(exc)
        if time.monotonic() > deadline:
            raise ClusterError(f"The local cluster's {what} within {timeout:.0f} s ({last}).")
        time.sleep(0.5)


def list_nodes(state: ClusterState, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The cluster's nodes from the dashboard's state API (with the token)."""
    token = Path(state.token_path).read_text().strip()
    url = f"{state.dashboard_url}/api/v0/nodes?limit=100&detail=true&timeout=10"
    reply = _get(url, token, timeout)
    return list(reply["data"]["result"]["result"])


def processes(state: ClusterState) -> list[Any]:
    """This cluster's processes: those naming its temp dir or GCS port, and their children."""
    psutil = _psutil()
    me = psutil.Process()
    spared = {me.pid, *(p.pid for p in me.parents())}
    gcs = f":{state.gcs_port}"
    recorded = {(p["pid"], p["create_time"]) for p in state.pids}
    found: dict[int, Any] = {}
    for proc in psutil.process_iter(["cmdline", "create_time"]):
        if proc.pid in spared:
            continue
        cmd = " ".join(proc.info.get("cmdline") or [])
        ours = state.temp_dir in cmd or (proc.pid, proc.info.get("create_time")) in recorded
        ours = ours or any(
            word.split("=", 1)[0] in _ADDRESS_FLAGS and word.endswith(gcs) for word in cmd.split()
        )
        if ours:
            found[proc.pid] = proc
    for proc in list(found.values()):
        with contextlib.suppress(psutil.Error):
            for child in proc.children(recursive=True):
                if child.pid not in spared:
                    found.setdefault(child.pid, child)
    return list(found.values())


def up(
    directory: str | Path = DEFAULT_DIR,
    head_cpus: int = 1,
    worker_cpus: Sequence[int] = (1, 1),
    dashboard_port: int = DASHBOARD_PORT,
    object_store_mb: int = 512,
) -> tuple[ClusterState, bool]:
    """Start the cluster (or find it running); returns its state and whether it was started."""
    directory = Path(directory).resolve()
    state = read_state(directory)
    if state is not None:
        if processes(state):
            return state, False
        _cleanup(state, directory)  # left over from a machine restart or a kill
    directory.mkdir(parents=True, exist_ok=True)
    token_path = directory / TOKEN_FILE
    token_path.touch(mode=0o600)
    token_path.chmod(0o600)  # before the token is in it
    token_path.write_text(secrets.token_hex(32))
    # Short on purpose: Ray's unix socket paths must stay under ~107 characters.
    temp_dir = tempfile.mkdtemp(prefix="lepton-cluster-", dir="/tmp")
    dashboard_port, gcs_port = free_port(dashboard_port), free_port()
    nodes: list[dict[str, Any]] = [
        {"name": "head", "cpus": head_cpus, "resources": {"lepton_head": 1}}
    ] + [
        {"name": f"worker-{i}", "cpus": cpus, "resources": {f"lepton_worker_{i}": 1}}
        for i, cpus in enumerate(worker_cpus, start=1)
    ]
    state = ClusterState(
        gcs_address=f"{LOOPBACK}:{gcs_port}",
        dashboard_url=f"http://{LOOPBACK}:{dashboard_port}",
        token_path=str(token_path),
        temp_dir=temp_dir,
        nodes=nodes,
        started_at=time.time(),
    )
    _write_state(directory, state)  # first, so that `down` finds a half-started cluster
    env = _node_env(token_path)
    token = token_path.read_text().strip()
    mib = 1024 * 1024
    common = f"--node-ip-address={LOOPBACK} --object-store-memory={object_store_mb * mib}"
    try:
        for node in nodes:
            where = (
                f"--head --port={gcs_port} --temp-dir={temp_dir} --dashboard-host={LOOPBACK} "
                f"--dashboard-port={dashboard_port} --ray-client-server-port={free_port()}"
                if node["name"] == "head"
                else f"--address={state.gcs_address}"
            )
            resources = json.dumps(node["resources"], separators=(",", ":"))
            args = f"{where} {common} --num-cpus={node['cpus']} --resources={resources}"
            _ray_start([*args.split(), f"--dashboard-agent-listen-port={free_port()}"], env, node)
            if node["name"] == "head":
                version = functools.partial(_get, f"{state.dashboard_url}/api/version", token)
                _wait_for("Jobs API did not answer", version, 60)
        _wait_for(
            f"{len(nodes)} nodes were not all alive",
            lambda: sum(n.get("state") == "ALIVE" for n in list_nodes(state)) >= len(nodes),
            90,
        )
    except BaseException:
        with contextlib.suppress(ClusterError):
            down(directory)
        raise
    procs = [p for p in processes(state) if p.is_running()]
    state.pids = [{"pid": p.pid, "create_time": p.create_time(), "name": p.name()} for p in procs]
    _write_state(directory, state)
    return state, True


def _write_state(directory: Path, state: ClusterState) -> None:
    path = directory / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def down(directory: str | Path = DEFAULT_DIR) -> int | None:
    """Stop the cluster in ``directory``; the number of processes stopped, None if none was there."""
    directory = Path(directory).resolve()
    state = read_state(directory)
    if state is None:
        return None
    psutil = _psutil()
    stopped: set[int] = set()
    # SIGTERM first (Ray's processes clean up after themselves), SIGKILL what is left;
    # several rounds, as a raylet may start a worker while the others go.
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0), (signal.SIGKILL, 10.0)):
        procs = processes(state)
        if not procs:
            break
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)
                stopped.add(proc.pid)
        psutil.wait_procs(procs, timeout=wait)
    if left := processes(state):
        pids = ", ".join(str(p.pid) for p in left[:10])
        raise ClusterError(f"Processes of the local cluster still run: {pids}; `kill -9` them.")
    _cleanup(state, directory)
    return len(stopped)


def _cleanup(state: ClusterState, directory: Path) -> None:
    shutil.rmtree(state.temp_dir, ignore_errors=True)
    for name in (STATE_FILE, TOKEN_FILE):
        with contextlib.suppress(FileNotFoundError):
            (directory / name).unlink()
    with contextlib.suppress(OSError):
        directory.rmdir()  # only when empty


def describe(state: ClusterState, started: bool, directory: str) -> str:
    env = " ".join(f"{k}={v}" for k, v in state.client_env().items())
    nodes = ", ".join(f"{n['name']} {n['cpus']} CPU" for n in state.nodes)
    head = "Started" if started else "Running:"
    return "\n".join(
        [
            f"{head} a local Ray cluster of {len(state.nodes)} nodes ({nodes}), token auth on.",
            f"  Jobs API + dashboard: {state.dashboard_url}",
            f"  GCS address:          {state.gcs_address}",
            f"  token:                {state.token_path}",
            f"  Ray temp dir:         {state.temp_dir}",
            "",
            "Point lepton (and Ray's own `ray job`) at it:",
            f"  export {env}",
            "  lepton submit --wait -- train task=vision scaling.num_workers=2",
            "  lepton jobs list",
            f"Or join it directly: lepton train task=vision ray.address={state.gcs_address}",
            f"Stop it: make cluster-down (python -m engine.jobs.local_cluster down --dir {directory})",
        ]
    )


def _status(state: ClusterState) -> str:
    alive = processes(state)
    try:
        nodes = list_nodes(state)
    except (OSError, ValueError, KeyError) as exc:
        return f"{len(alive)} process(es) running, but the dashboard does not answer ({exc})."
    rows = []
    for n in nodes:
        res = n.get("resources_total") or {}
        mine = ", ".join(k for k in sorted(res) if k.startswith("lepton_"))
        rows.append(
            f"{mine:<16} {n['node_id'][:16]:<18} {n.get('state', '?'):<6} {res.get('CPU', 0):>4g}"
        )
    head = f"{'node':<16} {'node id':<18} {'state':<6} {'CPU':>4}"
    return f"{len(alive)} processes, {len(nodes)} node(s):\n" + "\n".join([head, *sorted(rows)])


def _cpus(text: str, least: int = 1) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < least for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give CPU counts of at least {least}, e.g. 1,1")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m engine.jobs.local_cluster",
        description="A local multi-node Ray cluster on this machine (head + workers, token auth).",
    )
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("--dir", default=DEFAULT_DIR, help="state dir (default ./.lepton-cluster)")
    parser.add_argument("--head-cpus", type=lambda v: _cpus(v, 0)[0], default=1, help="default 1")
    parser.add_argument("--worker-cpus", type=_cpus, default=[1, 1], help="per worker: 1,1")
    parser.add_argument("--dashboard-port", type=int, default=DASHBOARD_PORT)
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            state, started = up(args.dir, args.head_cpus, args.worker_cpus, args.dashboard_port)
            print(describe(state, started, args.dir))
            return 0
        if args.action == "down":
            count = down(args.dir)
            what = "nothing to stop" if count is None else f"stopped, {count} processes"
            print(f"Local cluster in {args.dir}: {what}.")
            return 0
        found = read_state(args.dir)
        if found is None or not processes(found):
            print(f"No local cluster running in {args.dir}: start one with `make cluster-up`.")
            return 1
        print(describe(found, False, args.dir).split("\n\n")[0])
        print(_status(found))
        return 0
    except ClusterError as exc:
        from engine.cli import print_error

        return print_error(exc, prog="local cluster")
    except KeyboardInterrupt:
        print("local cluster: interrupted (what was started is stopped)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
