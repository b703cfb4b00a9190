"""The ``lepton`` command line: a thin registry of command modules.

Each command module offers ``add_parser(subparsers)`` (which registers its sub-command
and returns its parser) and ``run(args) -> int``; this module builds ``lepton`` from
:data:`COMMANDS` and is the one place that prints a :class:`~engine.errors.LeptonError`
(message, hint, exit status 2). Anything else is a bug and keeps its traceback.

Command modules import only the standard library at module level; each ``run``
imports what it needs (Hydra for config, torch and Ray for training), so
``lepton --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from engine import __version__

if TYPE_CHECKING:
    from engine.errors import LeptonError

#: The command modules, in the order ``lepton --help`` lists them.
COMMANDS = (
    "engine.train.train_command",
    "engine.tune.tune_command",
    "engine.jobs.submit_command",
    "engine.jobs.jobs_command",
    "engine.serve.serve_command",
    "engine.plugins_command",
    "engine.runs.runs_command",
    "engine.inference.evaluate_command",
    "engine.inference.predict_command",
    "engine.runs.report_command",
    "engine.export.export_command",
    "engine.monitor.monitor_command",
    "engine.scaffold.plugin_command",
)

EPILOG = """examples:
  lepton train task=vision                         digits, 2 Ray workers, embedded cluster
  lepton train task=vision trainer.epochs=3 scaling.num_workers=1
  lepton train experiment=digits_resnet            a preset from conf/experiment/
  lepton train task=vision --cfg job               print the composed config and exit
  lepton train --from runs/<run> optimizer.lr=3e-4 a new run from an earlier run's config
  lepton tune task=vision 'optimizer.lr=tag(log,interval(1e-4,1e-1))' scaling.num_workers=1
                                                   a sweep (ASHA), best config and checkpoint
  lepton submit --wait -- train task=vision run.dir=s3://bucket/runs
                                                   the same as a job on a Ray cluster
  lepton jobs list                                 the cluster's jobs (status, logs ID, stop ID)
  lepton serve runs/<run>                          the best checkpoint over HTTP (KServe V1 + V2)
  lepton plugins                                   installed plugins and their tasks
  lepton runs                                      runs under ./runs with status and best metric
  lepton evaluate runs/<run>                       best checkpoint on the validation split
  lepton predict runs/<run> --input imgs/ -o preds.csv
  lepton report runs/<run>                         plots + report.md
  lepton export runs/<run> --format onnx --quantize int8
                                                   int8 ONNX + task.json; size/metric/latency table
  lepton monitor logs/ --since 1d                  volume, latency, live accuracy from serve.log.dir
  lepton monitor logs/ --reference runs/<run>      + drift vs its validation split (1: alert)
  lepton monitor export logs/ -o fb/               labelled inputs as training data (task.data.extra)
  lepton plugin new churn                          a new task plugin in ./lepton-churn
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lepton",
        description="Lepton Engine: plugin-based distributed training on Ray.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lepton {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(name)
        command = module.add_parser(sub)
        command.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may follow options (`lepton evaluate RUN -o out.json task.data.path=x`):
    # argparse leaves those as extras, which join the command's overrides.
    args, extras = parser.parse_known_args(argv)
    bad = [e for e in extras if e.startswith("-") or "=" not in e or not hasattr(args, "overrides")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    if extras:
        args.overrides = [*args.overrides, *extras]
    if args.command is None:
        parser.print_help()
        return 0
    from engine.errors import LeptonError
    from engine.runs.clock import command_clock

    try:
        # The command's start, for a run's cost: the process's own when it is `lepton`.
        with command_clock(whole_process=argv is None):
            code: int = args.run(args)
        return code
    except LeptonError as exc:
        return print_error(exc)
    except KeyboardInterrupt:
        print("lepton: interrupted", file=sys.stderr)
        return 130


def print_error(exc: LeptonError, prog: str = "lepton") -> int:
    """A user mistake as people read it (what is wrong, then how to fix it); its exit code."""
    print(f"{prog}: {exc.kind}: {exc.message}", file=sys.stderr)
    if exc.hint:
        print(f"  {exc.hint}", file=sys.stderr)
    return exc.exit_code


def entry() -> None:
    """The ``lepton`` console script (and ``python -m engine.cli``).

    After a run stopped by a signal (exit 130/143) everything is recorded, but the thread
    that ran ``fit()`` may still be blocked inside Ray's core library: the interpreter's
    normal shutdown can then crash in Ray's C++ code (SIGSEGV instead of 130). So that
    case leaves at once, once the output is flushed.
    """
    code = main()
    if code in (130, 143):
        import os
        import threading

        if threading.active_count() > 1:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
