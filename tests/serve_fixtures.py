"""Small trained models and one served app, for the serving tests.

Models train in this process (``scaling=inprocess``, one epoch, the tasks' built-in demo
data: digits, the NLP demo tickets, synthetic interactions; the scaffolded plugin's table is
written here). The app is deployed on the session's Ray cluster with
:func:`engine.serve.app.build_app`, exactly as ``lepton serve`` builds it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

QUICK = ["scaling=inprocess", "scaling.cpus_per_worker=1", "trainer.epochs=1", "run.report=false"]


def train_inprocess(root: Path, name: str, *overrides: str) -> Path:
    from engine.config.load import load_config
    from engine.train.driver import train

    loaded = load_config([*overrides, *QUICK, f"run.dir={root}", f"run.name={name}"])
    train(loaded.config, loaded.info, loaded.yaml, echo=lambda _: None)
    return root / name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def install_editable(path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-e",
            str(path),
        ],
        check=True,
        capture_output=True,
    )


def uninstall(dist: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "uninstall", "-y", "-q", dist], capture_output=True
    )


#: The overrides that point a scaffolded tabular task at the table of :func:`tabular_plugin`.
def tabular_overrides(name: str, table: Path) -> list[str]:
    return [f"task={name}", f"task.data.path={table}", "task.data.categorical_columns=[plan]"]


@contextlib.contextmanager
def tabular_plugin(name: str, root: Path) -> Iterator[Path]:
    """A plugin made by ``lepton plugin new NAME``, installed (editable) for the block, and a
    200-row CSV for its tabular task (``root/table.csv``, yielded)."""
    import importlib

    import numpy as np
    import pandas as pd

    from engine.plugins import reset_registry
    from engine.scaffold.plugin import new_plugin

    plugin = new_plugin(name, root / f"lepton-{name}")
    install_editable(plugin)
    try:
        sys.path.insert(0, str(plugin))  # this process predates the install's .pth file
        importlib.invalidate_caches()
        reset_registry()
        rng = np.random.default_rng(0)
        table = pd.DataFrame(
            {
                "tenure": rng.integers(1, 72, 200),
                "charges": rng.uniform(20, 120, 200).round(2),
                "plan": rng.choice(["basic", "pro"], 200),
            }
        )
        table["target"] = np.where(table.charges / 25 - table.tenure / 20 > 0.5, "y", "n")
        table.to_csv(root / "table.csv", index=False)
        yield root / "table.csv"
    finally:
        uninstall(f"lepton-{name}")
        sys.path.remove(str(plugin))
        reset_registry()


@contextlib.contextmanager
def served_app(
    model_args: list[str], overrides: list[str], *, name: str = "lepton", prefix: str = "/"
) -> Iterator[dict[str, Any]]:
    """Deploy an app on the running Serve instance; yield its spec; delete it after."""
    from ray import serve

    from engine.serve.app import app_spec, build_app
    from engine.serve.models import resolve_models
    from engine.serve.settings import load_serve_config, read_token

    config = load_serve_config([f"serve.app_name={name}", *overrides])
    spec = app_spec(resolve_models(model_args), config.serve, read_token(config.serve))
    serve.run(build_app(spec), name=name, route_prefix=prefix, blocking=False)
    try:
        yield spec
    finally:
        serve.delete(name)


def wait_ready(url: str, timeout: float = 120, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if (
                requests.get(f"{url}/v2/health/ready", timeout=5, headers=headers).status_code
                == 200
            ):
                return
        time.sleep(0.5)
    raise AssertionError(f"{url} did not become ready in {timeout} s")


def predict_offline(run: Path, inputs_file: Path, tmp: Path) -> list[dict[str, Any]]:
    """What `lepton predict RUN --input FILE -o out.jsonl` writes, without the ids."""
    from engine.inference.predict import predict

    out = tmp / f"{run.name}-predictions.jsonl"
    predict(run, inputs_file, out, force=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "id"} for row in rows]


@contextlib.contextmanager
def token_service(
    name: str, model_args: list[str], overrides: list[str], token: str
) -> Iterator[str]:
    """An app on a Serve instance of its own (127.0.0.1, a free port) whose routes, but the
    V2 health ones, need ``token`` (``LEPTON_SERVE_TOKEN``, restored after); yields its
    URL once ready; deletes the app and shuts Serve down after."""
    import os

    from ray import serve

    old = os.environ.get("LEPTON_SERVE_TOKEN")
    os.environ["LEPTON_SERVE_TOKEN"] = token
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}"
    try:
        with served_app(model_args, [*overrides, "serve.replicas.num_cpus=0.25"], name=name):
            wait_ready(url, headers={"Authorization": f"Bearer {token}"})
            yield url
    finally:
        serve.shutdown()
        if old is None:
            os.environ.pop("LEPTON_SERVE_TOKEN", None)
        else:
            os.environ["LEPTON_SERVE_TOKEN"] = old


def wait_logged(log_dir: Path, model: str, expected: int, timeout: float = 60) -> int:
    """Wait until ``expected`` records of ``model`` v1 are in the prediction log's files;
    the count (an AssertionError after ``timeout`` seconds)."""
    folder = log_dir / "predictions" / model / "1"
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        count = sum(1 for f in folder.glob("*.jsonl") for _ in f.open())
        if count >= expected:
            return count
        time.sleep(0.2)
    raise AssertionError(f"{model}: {count} of {expected} records logged")
