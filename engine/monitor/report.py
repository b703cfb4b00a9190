"""``lepton monitor``'s files: ``monitor.json``, ``report.md`` and the PNGs (requests,
latency and the feedback metric over time, one line per model version), written whole
into the output directory (local or an object store: :class:`Location`)."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone
from typing import Any

from engine.monitor.drift_report import drift_markdown, drift_plot
from engine.runs.storage import Location

JSON_FILE = "monitor.json"
REPORT_FILE = "report.md"
PLOTS = ("volume.png", "latency.png", "metric.png", "drift.png")


def _series(stats: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    return [
        (f"{model} v{version}", v["buckets"])
        for model, m in stats["models"].items()
        for version, v in m["versions"].items()
    ]


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def _png(
    title: str, ylabel: str, lines: list[tuple[str, list[Any], list[Any]]], bucket_s: int
) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for label, xs, ys in lines:
        ax.plot(xs, ys, marker="o", markersize=3, label=label)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("time (UTC)")
    times = [x for _, xs, _ in lines for x in xs]
    if times:  # a bucket's width of margin: one bucket alone would span years otherwise
        margin = timedelta(seconds=bucket_s)
        low, high = min(times) - margin, max(times) + margin
        ax.set_xlim(low, high)  # type: ignore[arg-type]
        span = high - low
        fmt = (
            "%H:%M:%S"
            if span <= timedelta(hours=2)
            else "%H:%M"
            if span <= timedelta(days=1)
            else "%m-%d %H:%M"
        )
        ax.xaxis.set_major_formatter(mdates.DateFormatter(fmt))
    fig.autofmt_xdate()
    ax.grid(alpha=0.3)
    if lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _plots(stats: dict[str, Any]) -> dict[str, bytes]:
    series = _series(stats)
    bucket = stats["bucket_s"]
    Line = tuple[str, list[Any], list[Any]]
    volume: list[Line] = []
    p50: list[Line] = []
    p99: list[Line] = []
    metric: list[Line] = []
    names = sorted(
        {
            v["feedback"]["metric"]
            for m in stats["models"].values()
            for v in m["versions"].values()
            if v["feedback"]["metric"]
        }
    )
    for label, buckets in series:
        xs = [_when(b["start"]) for b in buckets]
        volume.append((label, xs, [b["requests"] for b in buckets]))
        p50.append((f"{label} p50", xs, [b["latency_ms"]["p50"] for b in buckets]))
        p99.append((f"{label} p99", xs, [b["latency_ms"]["p99"] for b in buckets]))
        with_fb = [b for b in buckets if b["metric"] is not None]
        if with_fb:
            metric.append(
                (label, [_when(b["start"]) for b in with_fb], [b["metric"] for b in with_fb])
            )
    out = {
        "volume.png": _png(f"Requests per {bucket} s", "requests", volume, bucket),
        "latency.png": _png("Latency at the replica (p50, p99)", "ms", p50 + p99, bucket),
    }
    if metric:
        out["metric.png"] = _png(
            f"{', '.join(names) or 'metric'} on requests with feedback", "value", metric, bucket
        )
    return out


def _g(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown(stats: dict[str, Any], plots: list[str]) -> str:
    lines = [
        "# Monitoring report",
        "",
        f"Log: `{stats['log_dir']}`; since {stats['since'] or 'the start'}; generated "
        f"{stats['generated_at']}; buckets of {stats['bucket_s']} s.",
        "",
        "| model | version | requests | predictions | p50 ms | p90 ms | p99 ms | feedback | metric |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model, m in stats["models"].items():
        for version, v in m["versions"].items():
            lat, fb = v["latency_ms"], v["feedback"]
            metric = f"{fb['metric']} {_g(fb['value'])}" if fb["metric"] else "-"
            lines.append(
                f"| {model} | {version} | {v['requests']} | {v['predictions']} | "
                f"{_g(lat['p50'])} | {_g(lat['p90'])} | {_g(lat['p99'])} | {fb['count']} | "
                f"{metric} |"
            )
    fb = stats["feedback"]
    lines += [
        "",
        f"Feedback records: {fb['records']}; without a prediction record in this window: "
        f"{fb['unmatched']}. Files read: {stats['files']}"
        + (
            f"; damaged lines skipped: {stats['damaged_lines']}." if stats["damaged_lines"] else "."
        ),
        "",
    ]
    for model, m in stats["models"].items():
        for version, v in m["versions"].items():
            if not v["inputs"]:
                continue
            lines += [
                f"## Inputs of {model} v{version}",
                "",
                "| feature | count | summary |",
                "|---|---|---|",
            ]
            for name, feature in v["inputs"].items():
                if "top" in feature:
                    text = ", ".join(f"{k}: {n}" for k, n in list(feature["top"].items())[:5])
                else:
                    text = (
                        f"mean {_g(feature['mean'])}, min {_g(feature['min'])}, "
                        f"median {_g(feature['p50'])}, max {_g(feature['max'])}"
                    )
                lines.append(f"| {name} | {feature['count']} | {text} |")
            lines.append("")
    lines += drift_markdown(stats)
    for name in plots:
        lines += [f"![{name[:-4]}]({name})", ""]
    return "\n".join(lines)


def write_outputs(stats: dict[str, Any], out: Location) -> list[Location]:
    """``monitor.json``, the PNGs and ``report.md`` in ``out``; the files written."""
    out.mkdir()
    written = []
    plots = _plots(stats) if stats["models"] else {}
    plots.update(drift_plot(stats))
    for name in PLOTS:
        if name in plots:
            (out / name).write_bytes(plots[name])
            written.append(out / name)
    stats["plots"] = [p.name for p in written]
    (out / JSON_FILE).write_text(json.dumps(stats, indent=2, allow_nan=False) + "\n")
    (out / REPORT_FILE).write_text(markdown(stats, stats["plots"]) + "\n")
    return [out / JSON_FILE, out / REPORT_FILE, *written]
