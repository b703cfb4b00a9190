"""``lepton monitor LOG_DIR``: per model version, request volume and latency percentiles
over time, and the live metric (accuracy for a label) on the predictions that have
feedback; writes ``monitor.json``, ``report.md`` and PNGs into ``-o DIR`` (default
``LOG_DIR/monitor``). With ``--reference RUN``, the drift of each version's inputs and
predictions against the run's validation split (:mod:`engine.monitor.drift`); exit status
1 when an alert fires, 2 for bad input (a :class:`LeptonError`), else 0."""

from __future__ import annotations

import argparse
import re
import time
from typing import Any

from engine.errors import ConfigError
from engine.monitor.drift import DEFAULT_MIN_COUNT, DriftSettings
from engine.monitor.psi import DEFAULT_THRESHOLD
from engine.monitor.reference import DEFAULT_LIMIT

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration_s(text: str) -> float:
    """``90s``, ``15m``, ``2h``, ``1d``, ``1w`` as seconds."""
    found = _DURATION.match(text.strip().lower())
    if not found or float(found.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 30m, 2h or 1d")
    return float(found.group(1)) * _UNITS[found.group(2)]


def since_time(text: str) -> float:
    """An ISO 8601 time (no zone: UTC) or a duration back from now, as epoch seconds."""
    from datetime import datetime, timezone

    if _DURATION.match(text.strip().lower()):
        return time.time() - duration_s(text)
    try:
        stamp = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an ISO time (2026-12-01T18:00Z) nor a duration (30m, 2h, 1d)"
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "monitor",
        help="volume, latency and live accuracy of served models, from their prediction log",
        description="Read a prediction log (serve.log.dir of lepton serve, local or s3://) and "
        "its feedback; write monitor.json, report.md and PNGs.",
    )
    parser.add_argument(
        "log_dir",
        metavar="[export] LOG_DIR",
        help="the serve.log.dir of a service; `lepton monitor export LOG_DIR -o DIR` writes "
        "the inputs that have feedback as the task's training data (task.data.extra=...)",
    )
    parser.add_argument("export_log_dir", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument(
        "--since",
        type=since_time,
        metavar="TIME",
        help="only records from then on: an ISO time (UTC if no zone) or a duration back "
        "from now (30m, 2h, 7d)",
    )
    parser.add_argument(
        "--bucket",
        type=duration_s,
        metavar="DURATION",
        help="time bucket of the series (default: picked from the span, at most 60 buckets)",
    )
    parser.add_argument(
        "-o", "--output", metavar="DIR", help="where the files go (default: LOG_DIR/monitor)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print monitor.json instead of the summary"
    )
    drift = parser.add_argument_group(
        "drift", "against a training run's validation split; exit status 1 when an alert fires"
    )
    drift.add_argument(
        "--reference",
        metavar="RUN_DIR",
        help="the run (or sweep, or checkpoint) directory of the served model: PSI of every "
        "input feature and of the predictions against its validation split",
    )
    drift.add_argument(
        "--psi-threshold",
        type=float,
        metavar="PSI",
        help="alert above this population stability index (default: "
        f"monitor.drift.psi_threshold, {DEFAULT_THRESHOLD})",
    )
    drift.add_argument(
        "--min-count",
        type=int,
        metavar="N",
        help="alert only on features with at least N live values (default: "
        f"monitor.drift.min_count, {DEFAULT_MIN_COUNT})",
    )
    drift.add_argument(
        "--reference-limit",
        type=int,
        metavar="N",
        help="validation inputs in the reference, at most (default: "
        f"monitor.drift.reference_limit, {DEFAULT_LIMIT})",
    )
    parser.add_argument(
        "--watch",
        type=float,
        nargs="?",
        const="config",  # no value given: monitor.watch_s
        metavar="SECONDS",
        help="refresh the summary in the terminal every SECONDS (default: monitor.watch_s, "
        "10) until Ctrl-C",
    )
    parser.set_defaults(overrides=[])
    export = parser.add_argument_group(
        "export", "lepton monitor export LOG_DIR -o DIR: the feedback loop's training data"
    )
    export.add_argument("--model", metavar="NAME", help="the served model to export")
    export.add_argument("--version", metavar="V", help="only predictions of this version")
    export.add_argument("--force", action="store_true", help="replace a non-empty -o DIR")
    parser.epilog = (
        "exit status: 0 no alert; 1 a drift alert fired (see monitor.json alerts); "
        "2 bad input (no log there, a reference that is not a run)"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    if args.export_log_dir is not None and "=" in args.export_log_dir:
        args.overrides = [args.export_log_dir, *args.overrides]  # LOG_DIR key=value
        args.export_log_dir = None
    if args.log_dir == "export" and args.export_log_dir is None:
        import os

        if not os.path.exists("export"):  # `lepton monitor export` without its LOG_DIR
            raise ConfigError(
                "lepton monitor export needs LOG_DIR: the serve.log.dir to read.",
                hint="lepton monitor export LOG_DIR -o DIR",
            )
    if args.log_dir == "export" and args.export_log_dir is not None:
        from engine.monitor.export_command import run_export

        return run_export(args)
    if args.export_log_dir is not None:
        raise ConfigError(
            f"lepton monitor takes one LOG_DIR (got {args.log_dir} and {args.export_log_dir}).",
            hint="Read one log at a time, or `lepton monitor export LOG_DIR -o DIR`.",
        )
    _apply_config(args)
    if args.watch is not None:
        from engine.monitor.watch import watch

        return watch(args, look, lambda stats: summary_lines(stats) + drift_lines(stats))
    return report_once(args)


def _apply_config(args: argparse.Namespace) -> None:
    """Fill the flags not given from the config (``monitor.*``)."""
    from engine.monitor.settings import load_monitor_config

    config = load_monitor_config(list(args.overrides))
    if args.psi_threshold is None:
        args.psi_threshold = config.drift.psi_threshold
    if args.min_count is None:
        args.min_count = config.drift.min_count
    if args.reference_limit is None:
        args.reference_limit = config.drift.reference_limit
    if args.watch == "config":
        args.watch = config.watch_s


def report_once(args: argparse.Namespace) -> int:
    """Read the log, write the outputs, print the summary: the exit status of one look."""
    import json

    from engine.monitor.report import write_outputs

    stats, out = look(args)
    written = write_outputs(stats, out)
    code = 1 if stats["alerts"] else 0
    if args.json:
        print(json.dumps(stats, indent=2))
        return code
    for line in summary_lines(stats) + drift_lines(stats):
        print(line)
    print(f"wrote {', '.join(w.name for w in written)} to {out}")
    return code


def look(args: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    """monitor.json's numbers now, and where the outputs go (a Location)."""
    from engine.monitor.logs import read_log
    from engine.monitor.stats import monitor_stats
    from engine.runs.storage import Location

    settings = DriftSettings(args.psi_threshold, args.min_count, args.reference_limit)
    log = read_log(args.log_dir, since=args.since)
    bucket = int(args.bucket) if args.bucket else None
    stats = monitor_stats(log, since=args.since, bucket_s=bucket, now=time.time())
    if args.reference:
        from engine.monitor.drift import add_drift
        from engine.monitor.reference import load_reference

        reference = load_reference(args.reference, limit=settings.limit)
        add_drift(stats, log.predictions, reference, settings)
    out = Location.parse(args.output) if args.output else log.root / "monitor"
    return stats, out


def drift_lines(stats: dict[str, Any]) -> list[str]:
    ref = stats.get("reference")
    if not ref:
        return []
    if not ref.get("available"):
        return [f"drift: not available ({ref.get('reason')})"]
    lines = []
    for model, m in stats["models"].items():
        for version, v in m["versions"].items():
            drift = v["drift"]
            if drift is None:
                continue
            top = sorted(
                [
                    *drift["inputs"].items(),
                    *(("prediction " + k, f) for k, f in drift["outputs"].items()),
                ],
                key=lambda kv: -kv[1]["psi"],
            )
            shown = ", ".join(f"{k} {f['psi']:.3g}" for k, f in top[:6])
            lines.append(f"{model} v{version} drift (PSI, threshold {drift['threshold']}): {shown}")
    for alert in stats["alerts"]:
        lines.append(
            f"ALERT {alert['model']} v{alert['version']}: {alert['side']} {alert['feature']} "
            f"PSI {alert['psi']:.3g} > {alert['threshold']} on {alert['count']} values"
        )
    return lines


def summary_lines(stats: dict[str, Any]) -> list[str]:
    lines = []
    if not stats["models"]:
        lines.append("no predictions in this window")
    for model, m in stats["models"].items():
        for version, v in m["versions"].items():
            lat, fb = v["latency_ms"], v["feedback"]
            text = (
                f"{model} v{version}: {v['requests']} requests ({v['predictions']} predictions), "
                f"latency p50 {lat['p50']} ms, p90 {lat['p90']} ms, p99 {lat['p99']} ms"
            )
            if fb["metric"]:
                text += f"; {fb['metric']} {fb['value']:.4f} on {fb['count']} with feedback"
            else:
                text += "; no feedback yet"
            lines.append(text)
    if stats["feedback"]["unmatched"]:
        lines.append(
            f"{stats['feedback']['unmatched']} feedback record(s) have no prediction in this window"
        )
    return lines
