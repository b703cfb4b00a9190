"""The foreground services this machine runs, so ``lepton serve status|update|shutdown``
in another terminal find the embedded cluster an app runs on.

``lepton serve`` without ``ray.address`` records ``<state dir>/<app>.json`` (the cluster's
GCS address, its pid, the URL) while it runs and removes it when it stops; the state dir is
``$LEPTON_HOME/serve`` (default ``~/.lepton/serve``). A record whose process is gone is
stale and ignored.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from engine.errors import ConfigError, ServeError


def state_dir() -> Path:
    return Path(os.environ.get("LEPTON_HOME") or Path.home() / ".lepton") / "serve"


@contextmanager
def registered(app_name: str, url: str) -> Iterator[Path]:
    import ray

    path = state_dir() / f"{app_name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"address": ray.get_runtime_context().gcs_address, "pid": os.getpid(), "url": url}
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)
    try:
        yield path
    finally:
        with suppress(OSError):
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()


def address_of(app_name: str) -> str:
    """The GCS address of the foreground service running ``app_name`` here."""
    path = state_dir() / f"{app_name}.json"
    try:
        record = json.loads(path.read_text())
        pid, address = int(record["pid"]), str(record["address"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ServeError(
            f"No service named {app_name!r} runs on this machine.",
            hint="Start one with lepton serve PATH; for one on a cluster, pass ray.address=ADDR "
            "(or set RAY_ADDRESS); another app: serve.app_name=NAME.",
        ) from None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        with suppress(OSError):
            path.unlink()
        raise ServeError(
            f"The service {app_name!r} recorded in {path} is gone (process {pid} ended).",
            hint="Start it again with lepton serve PATH.",
        ) from None
    except PermissionError:
        pass  # alive, another user's
    os.environ.setdefault("RAY_AUTH_MODE", "token")  # the embedded cluster uses Ray's token
    return address


def check_port_free(host: str, port: int) -> None:
    """A ConfigError now rather than a Serve proxy that fails to bind later."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"Cannot listen on {host}:{port}: {exc.strerror or exc}.",
                hint="Another service holds the port: pick another one with serve.port=PORT "
                "(or stop it: lepton serve shutdown).",
            ) from None
