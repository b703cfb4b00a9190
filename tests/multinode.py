"""A real multi-node Ray cluster on this machine, started as a user would.

``ray start --head`` (token authentication on, as Ray 2.60 does by default) plus
joining nodes started with ``ray start --address`` and ``RAY_AUTH_MODE=token``, each
with its own CPU count. Everything lives under one private ``--temp-dir``, which is
how :meth:`stop` finds exactly this cluster's processes: ``ray stop`` would also stop
every other Ray on the machine (the shared test cluster, a user's own).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalMultiNodeCluster:
    def __init__(
        self,
        head_cpus: int = 1,
        worker_cpus: tuple[int, ...] = (1,),
        worker_env: dict[str, str] | None = None,
    ):
        # Short on purpose: Ray's unix socket paths must stay under ~107 characters.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="lepton-ray-", dir="/tmp"))
        self.head_cpus = head_cpus
        self.worker_cpus = worker_cpus
        self.worker_env = worker_env or {}  # extra environment of the joining nodes
        self.port = free_port()
        self.address = ""

    def _ray(self, *args: str, env: dict[str, str] | None = None) -> None:
        out = subprocess.run(
            [RAY, *args, "--disable-usage-stats"],
            capture_output=True,
            text=True,
            # A real multi-node cluster: never the embedded cluster's loopback-only switch.
            env={
                **{k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"},
                **(env or {}),
            },
            timeout=180,
        )
        if out.returncode != 0:
            raise RuntimeError(
                f"ray {' '.join(args)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
            )

    def start(self) -> LocalMultiNodeCluster:
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        self._ray(
            "start",
            "--head",
            f"--port={self.port}",
            f"--num-cpus={self.head_cpus}",
            f"--temp-dir={self.temp_dir}",
            f"--dashboard-port={free_port()}",
            f"--ray-client-server-port={free_port()}",
            # Not the default (52365): the session's own cluster, started with a dashboard,
            # holds it, and a node whose agent cannot bind has no job agent ("No available
            # agent to submit job").
            f"--dashboard-agent-listen-port={free_port()}",
            "--node-ip-address=127.0.0.1",
        )
        self.address = f"127.0.0.1:{self.port}"
        for cpus in self.worker_cpus:
            self._ray(
                "start",
                f"--address={self.address}",
                f"--num-cpus={cpus}",
                f"--dashboard-agent-listen-port={free_port()}",
                "--node-ip-address=127.0.0.1",
                env={"RAY_AUTH_MODE": "token", **self.worker_env},
            )
        return self

    def client_env(self) -> dict[str, str]:
        return {"RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "token"}

    def processes(self) -> list[psutil.Process]:
        mine = []
        me = psutil.Process()
        spared = {me.pid, *(p.pid for p in me.parents())}
        for proc in psutil.process_iter(["cmdline"]):
            if proc.pid in spared:
                continue
            cmd = " ".join(proc.info.get("cmdline") or [])
            if str(self.temp_dir) in cmd or f"--address={self.address}" in cmd:
                mine.append(proc)
        return mine

    def stop(self) -> None:
        procs = self.processes()
        family = {p.pid: p for p in procs}
        for p in procs:
            try:
                for child in p.children(recursive=True):
                    family[child.pid] = child
            except psutil.NoSuchProcess:
                pass
        for p in family.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGKILL)
        psutil.wait_procs(list(family.values()), timeout=10)
        time.sleep(0.5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
