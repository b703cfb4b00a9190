"""Requests, errors and latency percentiles of one model version since the app started."""

from __future__ import annotations

from collections import deque
from typing import Any

#: Latencies kept for the percentiles: the most recent ones.
WINDOW = 10_000


class LatencyStats:
    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self._ms: deque[float] = deque(maxlen=WINDOW)

    def add(self, seconds: float, *, ok: bool) -> None:
        self.requests += 1
        self.errors += 0 if ok else 1
        self._ms.append(seconds * 1000)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self._ms)

        def pct(q: float) -> float | None:
            if not ordered:
                return None
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

        return {
            "requests": self.requests,
            "errors": self.errors,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
        }
