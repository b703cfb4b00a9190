"""The ``lepton`` command line.

Only the standard library is imported at start-up; each command imports what it
needs (Hydra for config, torch and Ray for training), so ``lepton --help`` is fast.
A :class:`~engine.errors.LeptonError` is printed as a short message with its fix and
exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from engine import __version__

EPILOG = """examples:
  lepton train task=vision                         digits, 2 Ray workers, embedded cluster
  lepton train task=vision trainer.epochs=3 scaling.num_workers=1
  lepton train task=vision --cfg job               print the composed config and exit
  lepton plugins                                   installed plugins and their tasks
  lepton runs                                      runs under ./runs with status and best metric
  lepton evaluate runs/<run>                       best checkpoint on the validation split
  lepton predict runs/<run> --input imgs/ -o preds.csv
  lepton report runs/<run>                         plots + report.md
  lepton plugin new churn                          a new task plugin in ./lepton-churn
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lepton",
        description="Lepton Engine: plugin-based distributed training on Ray.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lepton {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = sub.add_parser(
        "train",
        help="train a task on Ray Train",
        description="Train a task. Arguments are Hydra overrides: key=value, group=option, +key=value.",
    )
    train.add_argument(
        "overrides", nargs="*", metavar="OVERRIDE", help="e.g. task=vision trainer.epochs=3"
    )
    train.add_argument(
        "--cfg",
        "-c",
        choices=["job"],
        default=None,
        help="print the composed config (job) and exit",
    )

    plugins = sub.add_parser("plugins", help="list installed plugins, their tasks and config dirs")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")

    evaluate = sub.add_parser(
        "evaluate",
        help="evaluate a checkpoint on its validation split or new data",
        description="Evaluate a run's best checkpoint (or a checkpoint directory). task.* overrides "
        "point it at new data, e.g. task.data.path=new.csv.",
    )
    evaluate.add_argument("path", help="run directory or checkpoint directory")
    evaluate.add_argument("overrides", nargs="*", metavar="OVERRIDE", help="task.* overrides")
    evaluate.add_argument(
        "-o", "--output", help="where to write eval.json (default: beside the checkpoint)"
    )
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")

    predict = sub.add_parser("predict", help="batch prediction from a file or folder of inputs")
    predict.add_argument("path", help="run directory or checkpoint directory")
    predict.add_argument(
        "overrides",
        nargs="*",
        metavar="OVERRIDE",
        help="task.* overrides (e.g. task.data.text_column=body)",
    )
    predict.add_argument("--input", "-i", required=True, help="input file or folder")
    predict.add_argument("--output", "-o", help="output .jsonl or .csv (default: JSONL on stdout)")
    predict.add_argument("--batch-size", type=_positive_int, default=64)
    predict.add_argument(
        "--on-error",
        choices=["skip", "fail"],
        default="skip",
        help="an unusable input (e.g. a corrupt image): skip it and say so, or stop",
    )

    report = sub.add_parser("report", help="plots and report.md for a run")
    report.add_argument("run_dir", help="run directory")
    report.add_argument(
        "--no-evaluate",
        action="store_true",
        help="do not evaluate the best checkpoint first (no confusion matrix unless eval.json exists)",
    )

    plugin = sub.add_parser("plugin", help="write plugins: `lepton plugin new NAME`")
    plugin_sub = plugin.add_subparsers(dest="plugin_command", metavar="ACTION", required=True)
    new = plugin_sub.add_parser(
        "new",
        help="write a new task plugin (a working tabular task) to start from",
        description="Write lepton-NAME (package lepton_NAME, task NAME): a complete tabular "
        "task plugin with its config, tests running the contract kit, and a README.",
    )
    from engine.scaffold import add_arguments  # stdlib + engine.errors: --help stays fast

    add_arguments(new)

    runs = sub.add_parser("runs", help="list runs: name, task, status, best metric, epochs, age")
    runs.add_argument("dir", nargs="?", default="runs", help="run root (default: runs)")
    runs.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
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

    try:
        if args.command == "train":
            return cmd_train(args.overrides, args.cfg)
        if args.command == "plugin":
            from engine.scaffold import cmd_new

            return cmd_new(args.name, args.dir)
        if args.command == "plugins":
            return cmd_plugins(args.json)
        if args.command == "evaluate":
            return cmd_evaluate(args.path, args.overrides, args.output, args.json)
        if args.command == "predict":
            return cmd_predict(args)
        if args.command == "report":
            return cmd_report(args.run_dir, evaluate_first=not args.no_evaluate)
        if args.command == "runs":
            return cmd_runs(args.dir, args.json)
    except LeptonError as exc:
        print(f"lepton: error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("lepton: interrupted", file=sys.stderr)
        return 130
    parser.error(f"unknown command {args.command}")
    return 2


def load_config(overrides: Sequence[str]):  # type: ignore[no-untyped-def]
    """Compose and validate; returns (typed config, task info, resolved YAML, DictConfig)."""
    from engine.config import compose, to_typed, to_yaml
    from engine.plugins import get_registry

    registry = get_registry()
    raw = compose(list(overrides), registry)
    typed, info = to_typed(raw, registry)
    return typed, info, to_yaml(raw), raw


def cmd_train(overrides: Sequence[str], cfg_mode: str | None) -> int:
    typed, info, yaml_text, _ = load_config(overrides)
    if cfg_mode == "job":
        print(yaml_text, end="")
        return 0
    from engine.train import train

    summary = train(typed, info, yaml_text)
    if typed.run.report:
        from engine.report import write_report

        print(f"Report:          {write_report(summary.run_dir)}")
    print(f"Run directory:   {summary.run_dir}")
    if summary.best_value is not None:
        print(f"Best {summary.metric}: {summary.best_value:.4f} (epoch {summary.best_epoch})")
    print(f"Best checkpoint: {summary.best_checkpoint}")
    return 0


def cmd_evaluate(path: str, overrides: list[str], output: str | None, as_json: bool) -> int:
    import contextlib

    from engine.evaluate import evaluate, format_result

    # A task may print while it loads data; keep stdout for the result alone.
    with contextlib.redirect_stdout(sys.stderr):
        result = evaluate(path, overrides, output)
    print(json.dumps(result, indent=2) if as_json else format_result(result))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import contextlib

    from engine.predict import predict

    real_stdout = sys.stdout  # predictions go here; anything a task prints goes to stderr
    with contextlib.redirect_stdout(sys.stderr):
        counts = predict(
            args.path,
            args.input,
            args.output,
            overrides=args.overrides,
            batch_size=args.batch_size,
            on_error=args.on_error,
            stdout=real_stdout,
        )
    where = args.output or "stdout"
    print(
        f"lepton: {counts['predicted']} predictions to {where}, {counts['skipped']} skipped",
        file=sys.stderr,
    )
    return 0


def cmd_report(run_dir: str, evaluate_first: bool) -> int:
    from engine.evaluate import EVAL_FILE, evaluate, resolve_checkpoint
    from engine.report import write_report

    if evaluate_first:
        checkpoint = resolve_checkpoint(run_dir)
        if not (checkpoint / EVAL_FILE).is_file():
            evaluate(checkpoint, [])
    print(write_report(run_dir))
    return 0


def cmd_runs(root: str, as_json: bool) -> int:
    from engine.runs import format_runs, list_runs

    runs = list_runs(root)
    if as_json:
        print(json.dumps(runs, indent=2))
    elif runs:
        print(format_runs(runs))
    else:
        print(f"No runs under {root}.")
    return 0


def cmd_plugins(as_json: bool) -> int:
    from engine.plugins import get_registry

    registry = get_registry()
    rows = [
        {
            "plugin": p.name,
            "distribution": p.distribution,
            "version": p.version,
            "tasks": p.tasks,
            "config_dirs": [str(d) for d in p.config_dirs],
        }
        for p in registry.plugins.values()
    ]
    problems = [{"plugin": p.plugin, "error": p.reason} for p in registry.problems]
    if as_json:
        print(json.dumps({"plugins": rows, "problems": problems}, indent=2))
        return 0
    table = [("PLUGIN", "VERSION", "TASKS", "CONFIG DIR")]
    for p in registry.plugins.values():
        dirs = ",".join(str(d) for d in p.config_dirs)
        table.append((p.name, p.version or "-", ",".join(p.tasks) or "-", dirs or "-"))
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    for row in table:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3])
    if not rows:
        print("(no plugins installed)")
    for problem in registry.problems:
        print(f"BROKEN  {problem.plugin}: {problem.reason}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
