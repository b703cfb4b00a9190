"""``lepton predict``: batch prediction from a file or folder, JSONL or CSV out."""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

from engine.argtypes import positive_int


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "predict", help="batch prediction from a file or folder of inputs"
    )
    parser.add_argument("path", help="run, sweep (its best trial) or checkpoint directory")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="OVERRIDE",
        help="task.* overrides (e.g. task.data.text_column=body)",
    )
    parser.add_argument("--input", "-i", required=True, help="input file or folder")
    parser.add_argument(
        "--output",
        "-o",
        help="output .jsonl or .csv (default: JSONL on stdout); .parquet: a folder of Parquet "
        "files, predicted from Parquet input through Ray Data",
    )
    parser.add_argument("--force", action="store_true", help="replace the -o file if it exists")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument(
        "--on-error",
        choices=["skip", "fail"],
        default="skip",
        help="an unusable input (e.g. a corrupt image): skip it and say so, or stop",
    )
    table = parser.add_argument_group("Parquet output (-o NAME.parquet, through Ray Data)")
    table.add_argument(
        "--workers", type=positive_int, default=1, help="predictor actors (1 CPU each)"
    )
    table.add_argument(
        "--keep",
        action="append",
        default=[],
        metavar="COLUMN",
        help="copy this input column into the output (repeatable)",
    )
    table.add_argument(
        "--address", help="a Ray cluster to run on (default: RAY_ADDRESS or a local one)"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from engine.inference.predict import predict

    real_stdout = sys.stdout  # predictions go here; anything a task prints goes to stderr
    with contextlib.redirect_stdout(sys.stderr):
        counts = predict(
            args.path,
            args.input,
            args.output,
            overrides=args.overrides,
            batch_size=args.batch_size,
            on_error=args.on_error,
            force=args.force,
            stdout=real_stdout,
            workers=args.workers,
            keep=args.keep,
            address=args.address,
        )
    where = args.output or "stdout"
    print(
        f"lepton: {counts['predicted']} predictions to {where}, {counts['skipped']} skipped",
        file=sys.stderr,
    )
    return 0
