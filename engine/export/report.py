"""The table ``lepton export`` prints: size, metric, latency and runtime, before and after."""

from __future__ import annotations

from typing import Any

from engine.export.measure import human_size


def _metric_change(before: float, after: float, metric: str) -> str:
    if metric.removeprefix("val/") in ("loss", "rmse", "mae"):
        return f"{after - before:+.4f}"
    return f"{100 * (after - before):+.2f} points"


def _times(before: float, after: float, better: str, worse: str) -> str:
    """``2.50x smaller`` / ``1.20x larger``: the ratio, always at least 1, and its sense."""
    if not before or not after:
        return ""
    r = before / after
    return f"{r:.2f}x {better}" if r >= 1 else f"{1 / r:.2f}x {worse}"


def format_report(report: dict[str, Any]) -> str:
    before, after = report["before"], report["after"]
    metric = report["metric"]
    label = f"{report['format']} {report['precision']}"
    rows = [("", "checkpoint (PyTorch)", f"export ({label})", "change")]
    b, a = before["size_bytes"], after["size_bytes"]
    rows.append(("file size", human_size(b), human_size(a), _times(b, a, "smaller", "larger")))
    mb, ma = before["metrics"].get(metric), after["metrics"].get(metric)
    if mb is not None and ma is not None:
        rows.append((metric, f"{mb:.4f}", f"{ma:.4f}", _metric_change(mb, ma, metric)))
    for size, lb in before["latency_ms"].items():
        la = after["latency_ms"][size]
        rows.append(
            (
                f"latency, batch {lb['batch']}",
                f"{lb['ms']:.3f} ms",
                f"{la['ms']:.3f} ms",
                _times(lb["ms"], la["ms"], "faster", "slower"),
            )
        )
    rows.append(("runtime", before["runtime"], after["runtime"], ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        f"Exported {report['source']['checkpoint']} (task {report['source']['task']}) as "
        f"{label} in {report['seconds']:.1f} s; CPU, {report['threads']} thread(s)."
    ]
    validation = report.get("validation")
    if validation:
        lines.append(
            f"Checked against PyTorch on a fixed batch of {validation['batch']}: largest "
            f"difference {validation['max_abs_diff']:.2g} (atol {validation['tolerance']['atol']}, "
            f"rtol {validation['tolerance']['rtol']})."
        )
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.append(f"Written to: {report['written_to']}")
    return "\n".join(lines)
