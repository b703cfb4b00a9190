"""The ``export`` action of ``lepton monitor``: argument checks and the printed result of
:func:`engine.monitor.feedback_export.export_feedback`."""

from __future__ import annotations

import argparse
import json

from engine.errors import ConfigError


def run_export(args: argparse.Namespace) -> int:
    from engine.monitor.feedback_export import ExportRequest, export_feedback

    if not args.output:
        raise ConfigError(
            "lepton monitor export needs -o DIR: the folder the training data is written to.",
            hint="lepton monitor export LOG_DIR -o feedback/",
        )
    if args.overrides:
        raise ConfigError(
            f"lepton monitor export takes no config overrides (got {args.overrides[0]!r}).",
            hint="monitor.* settings are for drift and --watch; export reads the log only.",
        )
    given = [
        flag
        for flag, value in (("--reference", args.reference), ("--watch", args.watch))
        if value is not None
    ]
    if given:
        raise ConfigError(
            f"lepton monitor export does not take {', '.join(given)}.",
            hint="Export and monitor in two commands.",
        )
    manifest = export_feedback(
        ExportRequest(
            log_dir=args.export_log_dir,
            output=args.output,
            model=args.model,
            version=args.version,
            since=args.since,
            force=args.force,
        )
    )
    if args.json:
        print(json.dumps(manifest, indent=2))
        return 0
    skipped = manifest["skipped"]
    print(
        f"{manifest['model']} (task {manifest['task']}, versions "
        f"{', '.join(manifest['versions'])}): wrote {manifest['rows']} labelled example(s) "
        f"to {manifest['output']}"
    )
    for reason, count in skipped.items():
        print(f"  skipped {count}: {reason}")
    print(
        f"train with them: lepton train task={manifest['task']} task.data.extra={manifest['extra']}"
    )
    print("  (plus the served run's own overrides: its config.yaml; compare with lepton evaluate)")
    return 0
