"""The benchmark registry: each benchmark is a function ``Context -> BenchResult``.

A new benchmark (serving, sweeps) registers with :func:`register`; one not built yet
is listed with :func:`register_pending` and shows in the output as "not available yet".
Each names its position in the report.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from bench.core import BenchResult, Context

BenchFunc = Callable[[Context], BenchResult]


@dataclass(frozen=True)
class Benchmark:
    order: int  # position in the report
    name: str
    title: str
    description: str
    func: BenchFunc | None = None  # None: not available yet

    @property
    def available(self) -> bool:
        return self.func is not None

    def run(self, ctx: Context) -> BenchResult:
        if self.func is None:
            return BenchResult(
                self.name,
                self.title,
                self.order,
                status="not available yet",
                notes=[self.description],
            )
        started = time.monotonic()
        try:
            result = self.func(ctx)
        except Exception as exc:  # one broken benchmark must not lose the others' results
            result = BenchResult(
                self.name,
                self.title,
                status="failed",
                error=f"{type(exc).__name__}: {exc}",
                details={"traceback": traceback.format_exc()},
            )
        result.name, result.title, result.order = self.name, self.title, self.order
        result.duration_s = time.monotonic() - started
        return result


REGISTRY: dict[str, Benchmark] = {}


def register(
    order: int, name: str, title: str, description: str = ""
) -> Callable[[BenchFunc], BenchFunc]:
    """Register ``func`` as benchmark ``name``; ``order`` places it in the report."""

    def decorate(func: BenchFunc) -> BenchFunc:
        doc = " ".join((func.__doc__ or "").split())
        _add(Benchmark(order, name, title, description or doc, func))
        return func

    return decorate


def register_pending(order: int, name: str, title: str, description: str) -> None:
    """List a benchmark that is not built yet; the report shows it as not available."""
    _add(Benchmark(order, name, title, description, None))


def _add(bench: Benchmark) -> None:
    if bench.name in REGISTRY:
        raise ValueError(f"benchmark {bench.name!r} is registered twice")
    REGISTRY[bench.name] = bench


def benchmarks() -> list[Benchmark]:
    import bench.benchmarks  # noqa: F401  (registers everything, in report order)

    return sorted(REGISTRY.values(), key=lambda b: (b.order, b.name))
