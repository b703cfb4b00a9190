"""Which validation metrics share a panel of a report's metrics plot.

A metric named ``val/baseline_X`` or ``val/baseline_<name>_X`` is a baseline's value of
``val/X`` (the recsys task's most-popular, item-kNN and EASE rankings score the same
split with the same code): it is drawn in ``val/X``'s panel, dashed and labelled, so the
model is seen against it. Every other metric has a panel of its own, as has a baseline
whose metric the rows do not have.
"""

from __future__ import annotations

PREFIX = "val/"
BASELINE = "baseline_"


def panels(keys: list[str]) -> dict[str, list[str]]:
    """``{metric: [its baselines]}`` in the rows' order."""
    own = [k for k in keys if not k.startswith(PREFIX + BASELINE)]
    out: dict[str, list[str]] = {k: [] for k in own}
    for key in keys:
        if key in out:
            continue
        target = _metric_of(key, own)
        if target is None:
            out[key] = []
        else:
            out[target].append(key)
    return out


def baseline_label(baseline: str, metric: str) -> str:
    """``knn`` for ``val/baseline_knn_ndcg@10`` of ``val/ndcg@10``; ``baseline`` for the
    unnamed one (``val/baseline_ndcg@10``)."""
    rest = baseline[len(PREFIX + BASELINE) :]
    name = rest[: len(rest) - len(metric[len(PREFIX) :])].rstrip("_")
    return name or "baseline"


def _metric_of(key: str, own: list[str]) -> str | None:
    rest = key[len(PREFIX + BASELINE) :]
    if PREFIX + rest in own:
        return PREFIX + rest
    if "_" in rest:
        metric = PREFIX + rest.split("_", 1)[1]
        if metric in own:
            return metric
    return None
