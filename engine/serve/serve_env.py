"""Ray Serve's throughput mode for the cluster ``lepton serve`` starts itself
(``serve.throughput_optimized``, default true).

Ray 2.60 reads these switches from the environment when each Serve process imports it
(proxy, controller, replicas), so they are set in this process before the embedded
cluster starts, and its processes inherit them. ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``
runs user code and the request router on each replica's own event loop (no thread hop),
buffers the request-path logs and writes them to the log files only (not to stderr),
sends requests from the proxy to replicas over gRPC and freezes the garbage collector
after start-up. Its direct-ingress part (replicas listening on ports of their own) needs
a front proxy such as HAProxy, so it stays off. A variable the user has set is left as
it is. On a cluster ``lepton serve`` joins, the cluster's own environment decides (set
them on its nodes, docs/serving.md).
"""

from __future__ import annotations

import os

#: The variables and the values the throughput mode sets (unless already set).
THROUGHPUT_ENV = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
}


def use_throughput_mode(enabled: bool) -> dict[str, str]:
    """Set :data:`THROUGHPUT_ENV` in this process's environment (where unset) when
    ``enabled``; the variables it set."""
    if not enabled:
        return {}
    changed = {}
    for key, value in THROUGHPUT_ENV.items():
        if key not in os.environ:
            os.environ[key] = value
            changed[key] = value
    return changed
