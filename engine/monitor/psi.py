"""The population stability index (PSI) of ``lepton monitor --reference``.

For a reference sample with shares ``e_i`` per bin and a live sample with shares ``a_i``::

    PSI = sum_i (a_i - e_i) * ln(a_i / e_i)

with every share floored at :data:`FLOOR` (an empty bin would make it infinite). Bins:

- numbers: cut at the reference's deciles (the distinct ones), with open ends, so that
  each of the (up to) ten bins holds about a tenth of the reference;
- categories (strings, booleans): the reference's values, plus ``"(other)"`` for every
  live value the reference never had.

0 means the same distribution; by the usual reading below 0.1 is stable, 0.1-0.2 a
moderate shift and above 0.2 a significant one (:data:`DEFAULT_THRESHOLD`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

#: The least share a bin is given (a bin one side never fills).
FLOOR = 1e-4
DEFAULT_THRESHOLD = 0.2
#: The bin of the live categories the reference never had.
OTHER = "(other)"


def psi_from_shares(expected: Sequence[float], actual: Sequence[float]) -> float:
    """PSI of two share vectors over the same bins (each floored at :data:`FLOOR`)."""
    import numpy as np

    e = np.maximum(np.asarray(expected, dtype=np.float64), FLOOR)
    a = np.maximum(np.asarray(actual, dtype=np.float64), FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def decile_edges(reference: Sequence[float]) -> list[float]:
    """The distinct deciles (10%..90%) of ``reference``: the inner bin edges."""
    import numpy as np

    qs = np.quantile(np.asarray(reference, dtype=np.float64), np.linspace(0.1, 0.9, 9))
    return [float(q) for q in np.unique(qs)]


def numeric_shares(values: Sequence[float], edges: Sequence[float]) -> list[float]:
    """Shares of ``values`` in the bins ``(-inf, e0], (e0, e1], ..., (e_last, inf)``."""
    import numpy as np

    index = np.searchsorted(np.asarray(edges, dtype=np.float64), np.asarray(values), "left")
    counts = np.bincount(index, minlength=len(edges) + 1)
    return [float(c) / max(1, len(values)) for c in counts]


def numeric_psi(reference: Sequence[float], live: Sequence[float]) -> dict[str, Any]:
    edges = decile_edges(reference)
    expected, actual = numeric_shares(reference, edges), numeric_shares(live, edges)
    return {
        "type": "numeric",
        "psi": round(psi_from_shares(expected, actual), 6),
        "edges": [round(e, 6) for e in edges],
        "reference": [round(s, 6) for s in expected],
        "live": [round(s, 6) for s in actual],
    }


def categorical_psi(reference: Sequence[str], live: Sequence[str]) -> dict[str, Any]:
    """PSI over the reference's categories plus :data:`OTHER` (live values the reference
    never had; its reference share is 0, floored)."""
    ref_counts, live_counts = Counter(reference), Counter(live)
    bins = sorted(ref_counts)
    ref_n, live_n = max(1, len(reference)), max(1, len(live))
    expected = [ref_counts[b] / ref_n for b in bins] + [0.0]
    unseen = sum(n for v, n in live_counts.items() if v not in ref_counts)
    actual = [live_counts[b] / live_n for b in bins] + [unseen / live_n]
    return {
        "type": "categorical",
        "psi": round(psi_from_shares(expected, actual), 6),
        "bins": [*bins, OTHER],
        "reference": [round(s, 6) for s in expected],
        "live": [round(s, 6) for s in actual],
    }


def category(value: Any) -> str | None:
    """A categorical value as a bin name (booleans as ``true``/``false``); None for a
    number or a missing value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return None


def number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def feature_psi(reference: Sequence[Any], live: Sequence[Any]) -> dict[str, Any] | None:
    """PSI of one feature's values (None and unusable values left out): numeric when
    every reference value is a number, else categorical; None when either side has
    no values."""
    ref_numbers = [n for n in (number(v) for v in reference) if n is not None]
    ref_labels = [c for c in (category(v) for v in reference) if c is not None]
    if ref_numbers and not ref_labels:
        live_numbers = [n for n in (number(v) for v in live) if n is not None]
        if not live_numbers:
            return None
        return {**numeric_psi(ref_numbers, live_numbers), "count": len(live_numbers)}
    if not ref_labels:
        return None
    live_labels = [category(v) or str(v) for v in live if v is not None]
    if not live_labels:
        return None
    return {**categorical_psi(ref_labels, live_labels), "count": len(live_labels)}
