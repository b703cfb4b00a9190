"""7. Benchmarks for parts of the engine not built yet: listed so the report shows them."""

from bench.registry import register_pending

register_pending(
    7,
    "serving",
    "Serving: `lepton serve` latency and throughput",
    "Requests/s and p50/p99 latency of the Ray Serve app against a bare FastAPI + torch "
    "server on the same checkpoint; arrives with `lepton serve`.",
)
