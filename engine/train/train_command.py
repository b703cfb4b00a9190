"""``lepton train``: compose the config, train on Ray Train, print where the run is."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import sys
from typing import Any

from engine.argtypes import add_config_dir

DESCRIPTION = """\
Train a task. Arguments are Hydra overrides: key=value, group=option, +key=value.

Configs are looked up in the project config dir first (--config-dir, else
$LEPTON_CONFIG_DIR, else ./conf if it exists), then the engine's packaged tree, then
each plugin's dirs; `--info searchpath` prints the order. experiment=NAME picks
experiment/NAME.yaml from there."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "train",
        help="train a task on Ray Train",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="OVERRIDE",
        help="e.g. task=vision trainer.epochs=3, or experiment=digits_resnet",
    )
    add_config_dir(parser)
    parser.add_argument(
        "--from",
        dest="from_run",
        metavar="RUN_DIR",
        default=None,
        help="start from RUN_DIR/config.yaml (a path or s3:// URI); "
        "overrides then are key=value only, run.name and resume start afresh",
    )
    show = parser.add_mutually_exclusive_group()
    show.add_argument(
        "--cfg",
        "-c",
        choices=["job"],
        default=None,
        help="print the composed config (job) and exit",
    )
    show.add_argument(
        "--info",
        choices=["searchpath", "defaults"],
        default=None,
        help="print the config search path, or each group's chosen option and its file, and exit",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    if args.info is not None:
        print(_info(args), end="")
        return 0
    if args.from_run is not None:
        from engine.config.from_run import load_config_from_run

        _no_config_dir_with_from(args)
        loaded = load_config_from_run(args.from_run, args.overrides)
    else:
        from engine.config.load import load_config

        loaded = load_config(args.overrides, config_dir=args.config_dir)
    if args.cfg == "job":
        print(loaded.yaml, end="")
        return 0
    from engine.runs.layout import display_epoch
    from engine.train.cluster import wait_for_teardown
    from engine.train.driver import train
    from engine.train.interrupts import InterruptGuard

    _line_buffered(sys.stdout)  # each line out as it is printed, into a pipe too
    # When the process ends, Python's last garbage collections walk every object torch,
    # Ray, Hydra and matplotlib left in it: 0.5-1.5 s after the last line (measured).
    # By then nothing is left whose collection matters (files written and closed, the
    # cluster stopped, threads joined), so at exit the objects are moved out of the
    # collector's sight (gc.freeze); reference counting still frees them.
    atexit.register(gc.freeze)
    try:
        summary = train(loaded.config, loaded.info, loaded.yaml)
        # Recorded. Left: the summary, then the report, rendered while the embedded cluster
        # stops on a thread; a first signal meanwhile lets that end, a second exits at once.
        with InterruptGuard() as guard:
            guard.arm()
            guard.finished = True
            print(f"Run directory:   {summary.run_dir}")
            if summary.best_value is not None:
                print(
                    f"Best {summary.metric}: {summary.best_value:.4f} "
                    f"(epoch {display_epoch(summary.best_epoch)})"
                )
            print(f"Best checkpoint: {summary.best_checkpoint}")
            if loaded.config.run.report:
                from engine.runs.report import write_report

                print(f"Report:          {write_report(summary.run_dir)}")
            wait_for_teardown()
    finally:
        wait_for_teardown()  # after a failure too: the process's cluster is gone on return
    return 0


def _line_buffered(stream: Any) -> None:
    """Flush ``stream`` at every newline: Python buffers a pipe's output in blocks, so the
    epoch lines would reach a log or ``| tee`` only at exit."""
    with contextlib.suppress(AttributeError, ValueError, OSError):  # not a TextIOWrapper
        stream.reconfigure(line_buffering=True)


def _info(args: argparse.Namespace) -> str:
    from engine.config.project import describe_defaults, describe_searchpath, search_dirs
    from engine.plugins import get_registry

    if args.from_run is not None:
        _no_config_dir_with_from(args)
        return (
            f"--from {args.from_run}: the run's resolved config.yaml is the only source; "
            "no config groups or search path apply.\n"
        )
    registry = get_registry()
    dirs = search_dirs(registry, args.config_dir)
    if args.info == "searchpath":
        return describe_searchpath(dirs)
    from engine.config.compose import compose_over

    raw = compose_over(dirs, list(args.overrides), registry, hydra_node=True)
    # Hydra records the choices leaves first; reversed, they follow the defaults list.
    choices = dict(reversed(list(raw.hydra.runtime.choices.items())))
    return describe_defaults(choices, dirs)


def _no_config_dir_with_from(args: argparse.Namespace) -> None:
    if args.config_dir is not None:
        from engine.errors import ConfigError

        raise ConfigError(
            "--config-dir does not apply with --from: the run's config.yaml is the whole "
            "starting point.",
            hint="Drop --config-dir, or compose afresh without --from.",
        )
