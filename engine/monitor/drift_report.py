"""The drift part of ``lepton monitor``'s files: ``drift.png`` (the PSI of each feature
per model version, against the threshold) and the report's drift section."""

from __future__ import annotations

import io
from typing import Any

DRIFT_PNG = "drift.png"


def _rows(stats: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(version label, feature label, feature drift)`` for every version with drift."""
    out = []
    for model, m in stats["models"].items():
        for version, v in m["versions"].items():
            drift = v.get("drift")
            if not drift:
                continue
            for side, key in (("input", "inputs"), ("prediction", "outputs")):
                for name, feature in drift[key].items():
                    label = name if side == "input" else f"prediction: {name}"
                    out.append((f"{model} v{version}", label, feature))
    return out


def drift_plot(stats: dict[str, Any]) -> dict[str, bytes]:
    """``{"drift.png": PNG}`` when some version has drift, else ``{}``."""
    rows = _rows(stats)
    if not rows:
        return {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    threshold = stats["reference"]["threshold"]
    versions = list(dict.fromkeys(r[0] for r in rows))
    features = list(dict.fromkeys(r[1] for r in rows))
    values = {(r[0], r[1]): r[2]["psi"] for r in rows}
    width = 0.8 / len(versions)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(features) + 2), 3.8))
    x = np.arange(len(features))
    for i, version in enumerate(versions):
        heights = [values.get((version, f), 0.0) for f in features]
        ax.bar(x + i * width - 0.4 + width / 2, heights, width, label=version)
    ax.axhline(threshold, color="red", linestyle="--", linewidth=1, label=f"threshold {threshold}")
    ax.set_xticks(x, features, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("PSI")
    ax.set_title("Drift against the reference (population stability index)")
    top = max([threshold, *values.values()])
    if top > 20 * threshold:  # one huge shift would flatten every other bar
        ax.set_yscale("symlog", linthresh=threshold)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return {DRIFT_PNG: buffer.getvalue()}


def drift_markdown(stats: dict[str, Any]) -> list[str]:
    """The report's drift section (no lines without ``--reference``)."""
    ref = stats.get("reference")
    if not ref:
        return []
    lines = ["## Drift against the reference", ""]
    if not ref.get("available"):
        return [*lines, f"Not available for `{ref['run']}`: {ref.get('reason')}.", ""]
    metric = f"; its {ref['metric']} there {ref['value']:.4g}" if ref.get("metric") else ""
    lines += [
        f"Reference: `{ref['run']}` (checkpoint `{ref['checkpoint']}`), {ref['count']} "
        f"validation inputs{metric}. PSI threshold {ref['threshold']}, at least "
        f"{ref['min_count']} live values.",
        "",
        "| model version | feature | PSI | live values | alert |",
        "|---|---|---|---|---|",
    ]
    for version, feature, drift in _rows(stats):
        flag = "**yes**" if drift["alert"] else "no"
        lines.append(f"| {version} | {feature} | {drift['psi']:.4g} | {drift['count']} | {flag} |")
    alerts = stats.get("alerts") or []
    lines += ["", f"Alerts: {len(alerts)}." if alerts else "No alert.", ""]
    return lines
