"""``lepton plugins``: installed plugins, their versions, tasks and config dirs."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "plugins", help="list installed plugins, their tasks and config dirs"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def run(args: argparse.Namespace) -> int:
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
    if args.json:
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
