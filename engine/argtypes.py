"""Small ``argparse`` value types and options shared by command modules (standard library
only)."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def add_config_dir(parser: argparse.ArgumentParser) -> None:
    """``--config-dir DIR``: the project config dir, searched before the engine's and the
    plugins' (engine/config/project.py)."""
    parser.add_argument(
        "--config-dir",
        metavar="DIR",
        default=None,
        help="project config dir searched first (default: $LEPTON_CONFIG_DIR, else ./conf)",
    )
