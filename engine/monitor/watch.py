"""``lepton monitor LOG_DIR --watch [SECONDS]``: the summary redrawn in the terminal every
SECONDS from the log as it grows, until Ctrl-C; then the outputs (monitor.json, report.md,
PNGs) of the last look are written once and the exit status is that look's (1: an alert).

``--since`` is fixed when the command starts (a duration counts back from then).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from engine.errors import ConfigError

Look = Callable[[argparse.Namespace], tuple[dict[str, Any], Any]]
Lines = Callable[[dict[str, Any]], list[str]]
_CLEAR = "\x1b[H\x1b[2J"


def watch(args: argparse.Namespace, look: Look, lines: Lines) -> int:
    if args.watch <= 0:
        raise ConfigError(
            f"--watch {args.watch:g}: the refresh interval must be positive.",
            hint="Give seconds, e.g. --watch 10.",
        )
    if args.json:
        raise ConfigError(
            "--watch redraws a summary; --json prints monitor.json once.",
            hint="Drop one of them.",
        )
    clear = sys.stdout.isatty()
    stats: dict[str, Any] | None = None
    out: Any = None
    try:
        while True:
            stats, out = look(args)
            now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
            header = f"lepton monitor {args.log_dir}  ({now}; every {args.watch:g} s, Ctrl-C stops)"
            text = "\n".join([header, "", *lines(stats)])
            print((_CLEAR if clear else "") + text, flush=True)
            time.sleep(args.watch)
    except KeyboardInterrupt:
        pass
    if stats is None:
        return 130
    from engine.monitor.report import write_outputs

    written = write_outputs(stats, out)
    print(f"\nwrote {', '.join(w.name for w in written)} to {out}", flush=True)
    return 1 if stats["alerts"] else 0
