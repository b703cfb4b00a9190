"""``lepton plugin new NAME``: write a new task-plugin distribution to start from."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "plugin", help="write plugins: `lepton plugin new NAME`"
    )
    actions = parser.add_subparsers(dest="plugin_command", metavar="ACTION", required=True)
    new = actions.add_parser(
        "new",
        help="write a new task plugin (a working tabular task) to start from",
        description="Write lepton-NAME (package lepton_NAME, task NAME): a complete tabular "
        "task plugin with its config, tests running the contract kit, and a README.",
    )
    new.add_argument("name", metavar="NAME", help="task name; the package is lepton_NAME")
    new.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="directory to create (must be new or empty unless --force; default ./lepton-NAME)",
    )
    new.add_argument(
        "--force",
        action="store_true",
        help="write into a non-empty --dir: the template's files replace files of the same "
        "name, nothing else is touched",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from engine.scaffold.plugin import new_plugin, next_steps

    target = new_plugin(args.name, args.dir, force=args.force)
    print(next_steps(args.name, target))
    return 0
