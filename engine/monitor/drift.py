"""Drift of each model version against a reference (:mod:`engine.monitor.reference`):
the PSI (:mod:`engine.monitor.psi`) of every input summary feature and of the predicted
label (or value), and the alerts: a feature whose PSI is above the threshold on at least
``min_count`` live values.

A version's ``drift`` in ``monitor.json``::

    {"threshold": 0.2, "min_count": 100, "count": 150, "max_psi": 3.1, "alert": true,
     "inputs": {"brightness": {"type": "numeric", "psi": 3.1, "count": 150, "alert": true,
                               "edges": [...], "reference": [...], "live": [...]}, ...},
     "outputs": {"label": {"type": "categorical", "psi": 0.4, "bins": [...], ...}}}

and each alert at the top: ``{"model", "version", "feature", "side": "input"|"output",
"psi", "threshold", "count"}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.errors import ConfigError
from engine.monitor.psi import DEFAULT_THRESHOLD, feature_psi
from engine.monitor.reference import DEFAULT_LIMIT, OUTPUT_KEYS

#: Below about 100 values, sampling noise alone gives a PSI near 9/n over ten bins.
DEFAULT_MIN_COUNT = 100
#: Summary keys that are not features of the input.
_SKIP = {"summary_error"}


@dataclass(frozen=True)
class DriftSettings:
    """The drift check's typed settings (``--psi-threshold``, ``--min-count``,
    ``--reference-limit``), validated here, at the edge."""

    threshold: float = DEFAULT_THRESHOLD
    min_count: int = DEFAULT_MIN_COUNT
    limit: int = DEFAULT_LIMIT

    def __post_init__(self) -> None:
        if not self.threshold > 0:
            raise ConfigError(
                f"The PSI threshold {self.threshold} (--psi-threshold, "
                "monitor.drift.psi_threshold) must be above 0.",
                hint="0.1 flags a moderate shift, 0.2 (the default) a significant one.",
            )
        if self.min_count < 1:
            raise ConfigError(
                f"The minimum count {self.min_count} (--min-count, monitor.drift.min_count) "
                "must be at least 1."
            )
        if self.limit < 1:
            raise ConfigError(
                f"The reference limit {self.limit} (--reference-limit, "
                "monitor.drift.reference_limit) must be at least 1."
            )


def version_drift(
    reference: dict[str, Any], records: list[dict[str, Any]], settings: DriftSettings
) -> dict[str, Any]:
    """One version's drift against an available reference."""
    summaries = [_dict(r.get("summary")) for r in records]
    predictions = [_dict(r.get("prediction")) for r in records]
    inputs = _sides(reference["inputs"], summaries, settings)
    outputs = _sides(reference["outputs"], predictions, settings, keys=OUTPUT_KEYS)
    values = [f["psi"] for f in [*inputs.values(), *outputs.values()]]
    return {
        "threshold": settings.threshold,
        "min_count": settings.min_count,
        "count": len(records),
        "max_psi": max(values) if values else None,
        "alert": any(f["alert"] for f in [*inputs.values(), *outputs.values()]),
        "inputs": inputs,
        "outputs": outputs,
    }


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _sides(
    reference: list[dict[str, Any]],
    live: list[dict[str, Any]],
    settings: DriftSettings,
    keys: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    names = sorted({k for row in reference for k in row} - _SKIP)
    if keys is not None:
        names = [n for n in names if n in keys]
    out: dict[str, Any] = {}
    for name in names:
        result = feature_psi([r.get(name) for r in reference], [r.get(name) for r in live])
        if result is None:
            continue
        result["alert"] = (
            result["count"] >= settings.min_count and result["psi"] > settings.threshold
        )
        out[name] = result
    return out


def alerts(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """Every feature over the threshold, per model version, highest PSI first."""
    found = []
    for model, m in stats["models"].items():
        for version, v in m["versions"].items():
            drift = v.get("drift") or {}
            for side, features in (
                ("input", drift.get("inputs", {})),
                ("output", drift.get("outputs", {})),
            ):
                for name, f in features.items():
                    if f["alert"]:
                        found.append(
                            {
                                "model": model,
                                "version": version,
                                "feature": name,
                                "side": side,
                                "psi": f["psi"],
                                "threshold": drift["threshold"],
                                "count": f["count"],
                            }
                        )
    return sorted(found, key=lambda a: -a["psi"])


def _norm(where: str) -> str:
    import os

    return where.rstrip("/") if "://" in where else os.path.realpath(where)


def served_from(checkpoints: set[str], reference: dict[str, Any]) -> bool:
    """Whether a version served the reference's checkpoint or one of its run."""
    ref = {_norm(str(reference.get(k) or "")) for k in ("checkpoint", "run")} - {""}
    for checkpoint in map(_norm, checkpoints):
        if any(checkpoint == r or checkpoint.startswith(r + "/") for r in ref):
            return True
    return False


def add_drift(
    stats: dict[str, Any],
    records: list[dict[str, Any]],
    reference: dict[str, Any],
    settings: DriftSettings,
) -> None:
    """Fill ``stats``' per-version ``drift``, ``reference`` and ``alerts``: for the
    versions that served a checkpoint of the reference run, or, when none did (a copied
    run, another path), for every version (``reference.compared`` names them)."""
    from engine.monitor.reference import describe

    stats["reference"] = {
        **describe(reference),
        "threshold": settings.threshold,
        "min_count": settings.min_count,
        "compared": [],
    }
    if not reference.get("available"):
        return
    by_version: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rec in records:
        by_version.setdefault((rec["model"], str(rec["version"])), []).append(rec)
    ours = [
        key
        for key, recs in by_version.items()
        if served_from({str(r.get("checkpoint")) for r in recs}, reference)
    ]
    for model, version in ours or list(by_version):
        version_stats = stats["models"].get(model, {}).get("versions", {}).get(version)
        if version_stats is not None:
            version_stats["drift"] = version_drift(
                reference, by_version[(model, version)], settings
            )
            stats["reference"]["compared"].append(f"{model} v{version}")
    stats["alerts"] = alerts(stats)
