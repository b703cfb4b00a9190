"""``lepton report``: plots and ``report.md`` for a run (evaluating its best checkpoint
first, for the confusion matrix, unless told not to); for a sweep directory, its results
rewritten from the trials (``trials.csv``, ``best.json``, ``best.yaml``, ``plots/``)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report", help="plots and report.md for a run; a sweep's results rewritten"
    )
    parser.add_argument("run_dir", help="run directory or sweep directory")
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
    from engine.runs.sweep_dir import is_sweep_dir

    if is_sweep_dir(args.run_dir):
        return _sweep(args)
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


def _sweep(args: argparse.Namespace) -> int:
    """A sweep's results, rewritten from its trials as they are now (no evaluation)."""
    from engine.errors import OutputError

    if args.output is not None:
        raise OutputError(
            f"-o copies a run's report.md; {args.run_dir} is a sweep, whose results are "
            "its own trials.csv, best.json, best.yaml and plots/.",
            hint=f"Drop -o, or report one trial: lepton report {args.run_dir}/trial_NNNNN -o FILE",
        )
    from engine.tune.results import format_table, write_sweep_results

    results = write_sweep_results(args.run_dir)
    print(format_table(results))
    for plot in results.plots:
        print(f"plot: {plot}")
    return 0
