"""Shared pytest fixtures for the engine's and every built-in plugin's tests.

Tiers: unmarked tests never start Ray; ``@pytest.mark.ray`` tests share one local
cluster per session (the ``ray_cluster`` fixture); ``@pytest.mark.slow`` tests run a
real ``lepton`` command in a subprocess (``run_lepton``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent
LEPTON = [sys.executable, "-m", "engine.cli"]

#: The distributions of the task plugins that ship in this repository (plugins/*/). Engine
#: tests iterate over their tasks only: another installed plugin (say one from
#: ``lepton plugin new``) must not change what the engine's own tests check.
BUILTIN_DISTRIBUTIONS = frozenset(
    re.search(r'^name\s*=\s*"([^"]+)"', p.read_text(encoding="utf-8"), flags=re.M).group(1)  # type: ignore[union-attr]
    for p in sorted((ROOT / "plugins").glob("*/pyproject.toml"))
)

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")


@pytest.fixture(scope="session")
def object_store():
    """A real S3-API server on 127.0.0.1 for the session (tests/object_store.py).

    This process's AWS_* variables point at it, and so do those of the Ray workers
    started after it (``ray_cluster`` depends on it): ``s3://`` run dirs work in-process.
    """
    if str(ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(ROOT / "tests"))
    from object_store import s3_server

    with s3_server() as store:
        yield store


@pytest.fixture(scope="session")
def ray_cluster(object_store):
    """One local Ray cluster for the whole test session (2 CPUs, this machine only)."""
    import ray

    if not ray.is_initialized():
        from engine.serve.serve_env import use_throughput_mode

        use_throughput_mode(True)  # Serve as `lepton serve` runs it (serve.throughput_optimized)
        ray.init(num_cpus=2, include_dashboard=True, logging_level="WARNING")
    yield ray
    ray.shutdown()


def builtin_tasks(registry) -> list[str]:
    """The names of the tasks in ``registry`` that this repository's plugins provide."""
    return sorted(
        name for name, info in registry.tasks.items() if info.distribution in BUILTIN_DISTRIBUTIONS
    )


def run_lepton(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str | None] | None = None,
    timeout: float = 600,
):
    """Run the real CLI in a subprocess; returns the CompletedProcess (text mode).

    ``env`` adds to this process's environment; a ``None`` value removes that variable.
    """
    merged = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env = {k: v for k, v in merged.items() if v is not None}
    return subprocess.run(
        [*LEPTON, *args],
        cwd=cwd or ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def lepton():
    return run_lepton
