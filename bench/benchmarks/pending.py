"""7, 8. Benchmarks for parts of the engine not built yet: listed so the report shows them."""

from bench.registry import register_pending

register_pending(
    7,
    "serving",
    "Serving: `lepton serve` latency and throughput",
    "Requests/s and p50/p99 latency of the Ray Serve app against a bare FastAPI + torch "
    "server on the same checkpoint; arrives with `lepton serve`.",
)
register_pending(
    8,
    "sweeps",
    "Sweeps: `lepton tune` overhead",
    "Trials/hour and per-trial overhead of `lepton tune` against a hand-written Ray Tune "
    "script on the same search space; arrives with `lepton tune`.",
)
