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
"""


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from engine.errors import LeptonError

    try:
        if args.command == "train":
            return cmd_train(args.overrides, args.cfg)
        if args.command == "plugins":
            return cmd_plugins(args.json)
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
    print(f"Run directory:   {summary.run_dir}")
    if summary.best_value is not None:
        print(f"Best {summary.metric}: {summary.best_value:.4f} (epoch {summary.best_epoch})")
    print(f"Best checkpoint: {summary.best_checkpoint}")
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
