"""``lepton train``: compose the config, train on Ray Train, print where the run is."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "train",
        help="train a task on Ray Train",
        description="Train a task. Arguments are Hydra overrides: key=value, group=option, +key=value.",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="OVERRIDE", help="e.g. task=vision trainer.epochs=3"
    )
    parser.add_argument(
        "--cfg",
        "-c",
        choices=["job"],
        default=None,
        help="print the composed config (job) and exit",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from engine.config.load import load_config

    loaded = load_config(args.overrides)
    if args.cfg == "job":
        print(loaded.yaml, end="")
        return 0
    from engine.train.driver import train

    summary = train(loaded.config, loaded.info, loaded.yaml)
    if loaded.config.run.report:
        from engine.runs.report import write_report

        print(f"Report:          {write_report(summary.run_dir)}")
    print(f"Run directory:   {summary.run_dir}")
    if summary.best_value is not None:
        print(f"Best {summary.metric}: {summary.best_value:.4f} (epoch {summary.best_epoch})")
    print(f"Best checkpoint: {summary.best_checkpoint}")
    return 0
