"""``lepton evaluate``: a checkpoint's metrics on its validation split or new data."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "evaluate",
        help="evaluate a checkpoint on its validation split or new data",
        description="Evaluate a run's best checkpoint (or a checkpoint directory). task.* overrides "
        "point it at new data, e.g. task.data.path=new.csv.",
    )
    parser.add_argument("path", help="run, sweep (its best trial) or checkpoint directory")
    parser.add_argument("overrides", nargs="*", metavar="OVERRIDE", help="task.* overrides")
    parser.add_argument(
        "-o",
        "--output",
        help="where to write eval.json (default: beside the checkpoint; for a sweep, in its best trial)",
    )
    parser.add_argument("--force", action="store_true", help="replace the -o file if it exists")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def run(args: argparse.Namespace) -> int:
    from engine.inference.evaluate import evaluate, format_result

    # A task may print while it loads data; keep stdout for the result alone.
    with contextlib.redirect_stdout(sys.stderr):
        result = evaluate(args.path, args.overrides, args.output, force=args.force)
    print(json.dumps(result, indent=2) if args.json else format_result(result))
    return 0
