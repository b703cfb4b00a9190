"""``lepton runs``: the runs and sweeps under a run root, one line each."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "runs",
        help="list runs and sweeps: name, kind, task, status, best metric, epochs, trials, age",
    )
    parser.add_argument("dir", nargs="?", default="runs", help="run root (default: runs)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def run(args: argparse.Namespace) -> int:
    from engine.runs.listing import format_runs, list_runs

    runs = list_runs(args.dir)
    if args.json:
        print(json.dumps(runs, indent=2))
    elif runs:
        print(format_runs(runs))
    else:
        print(f"No runs or sweeps under {args.dir}.")
    return 0
