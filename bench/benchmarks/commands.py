"""Short commands timed as whole processes, shared by the benchmarks that use them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench.core import Context, median
from bench.proc import time_command


@dataclass
class Timed:
    label: str
    times: list[float]
    error: str | None

    @property
    def median(self) -> float | None:
        return median(self.times)


def timed(ctx: Context, key: str, label: str, cmd: Sequence[str]) -> Timed:
    """Median-ready wall times of ``cmd`` (``cli_reps`` runs after one warm-up), measured
    once per bench run under ``key``: the startup and phases benchmarks share them."""

    def measure() -> Timed:
        s = ctx.settings
        ctx.log(f"timing {label} x{s.cli_reps}")
        times, error = time_command(cmd, reps=s.cli_reps, cwd=s.workdir, env=ctx.subprocess_env())
        return Timed(label, times, error)

    result: Timed = ctx.once(f"command:{key}", measure)
    return result


def python_pass(ctx: Context) -> Timed:
    s = ctx.settings
    return timed(ctx, "python", "`python -c pass`", [s.python, "-c", "pass"])


def lepton_cfg(ctx: Context) -> Timed:
    s = ctx.settings
    return timed(
        ctx,
        "cfg",
        "`lepton train task=vision --cfg job` (config only, no Ray)",
        [*s.lepton, "train", *s.workload.lepton_overrides(), "--cfg", "job"],
    )
