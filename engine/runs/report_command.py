"""``lepton report``: plots and ``report.md`` for a run (evaluating its best checkpoint
first, for the confusion matrix, unless told not to)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report", help="plots and report.md for a run"
    )
    parser.add_argument("run_dir", help="run directory")
    parser.add_argument(
        "--no-evaluate",
        action="store_true",
        help="do not evaluate the best checkpoint first (no confusion matrix unless eval.json exists)",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="also write a copy of report.md to FILE (its plots stay in the run's report/)",
    )
    parser.add_argument("--force", action="store_true", help="replace the -o file if it exists")
    return parser


def run(args: argparse.Namespace) -> int:
    from engine.runs.layout import EVAL_FILE, resolve_checkpoint
    from engine.runs.outputs import check_output_path
    from engine.runs.report import copy_report, write_report

    if args.output is not None:  # before any work
        check_output_path(args.output, force=args.force)
    if not args.no_evaluate:
        checkpoint = resolve_checkpoint(args.run_dir)
        if not (checkpoint / EVAL_FILE).is_file():
            from engine.inference.evaluate import evaluate

            evaluate(checkpoint, [])
    report = write_report(args.run_dir)
    print(report)
    if args.output is not None:
        print(copy_report(report, args.output))
    return 0
