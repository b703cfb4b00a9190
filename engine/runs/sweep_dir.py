"""The sweep directory (``lepton tune``) as readers find it: which files say what.

::

    <run.dir>/<sweep name>/
        sweep.json          kind "sweep", status, task, metric, mode, params, epochs, pid, host
        trial_00000/ ...    one whole run directory per trial (config.yaml, metrics.jsonl, ...)
        trials.csv          one row per trial        } written by engine.tune.results
        best.json           the best trial and its   } from the trials, at the end of a
                            checkpoint               } sweep and by ``lepton report``
        best.yaml           the best trial's config.yaml, as it is
        plots/*.png

``best.json`` names its trial and checkpoint relative to the sweep directory, so a copied
or moved sweep uses its own files. This module only reads; it sits below
:mod:`engine.runs.layout` (whose ``resolve_checkpoint`` takes a sweep directory too), so
it imports nothing from it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

from engine.errors import CheckpointError, RunFileError
from engine.runs.checkpoint import META_FILE
from engine.runs.storage import Location, first_line

SWEEP_FILE = "sweep.json"
BEST_JSON = "best.json"
BEST_YAML = "best.yaml"
TRIALS_CSV = "trials.csv"
PLOTS_DIR = "plots"
TRIAL_PREFIX = "trial_"


def is_sweep_dir(where: str | os.PathLike[str] | Location) -> bool:
    return (Location.parse(where) / SWEEP_FILE).is_file()


def trial_dirs(sweep_dir: Location) -> list[Location]:
    """The sweep's trial directories, in trial order (their names are zero-padded)."""
    return [p for p in sweep_dir.children() if p.name.startswith(TRIAL_PREFIX) and p.is_dir()]


def load_json_record(
    target: Location, damaged: Callable[[Location, str], RunFileError] | None = None
) -> dict[str, Any] | None:
    """A JSON object the engine wrote whole-or-nothing; None when missing, a RunFileError
    naming the file (and line) when damaged (``damaged`` makes it: its hint says what
    the file belongs to; a sweep's by default)."""
    bad = damaged or _sweep_file_damaged
    try:
        text = target.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise bad(target, f"cannot be read ({first_line(exc)})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise bad(
            target, f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    if not isinstance(data, dict):
        raise bad(target, f"a JSON {type(data).__name__}, not an object (line 1)")
    return data


def load_sweep(sweep_dir: Location) -> dict[str, Any]:
    """``sweep.json``: an error naming the file when it is damaged or lacks metric/mode."""
    target = sweep_dir / SWEEP_FILE
    data = load_json_record(target)
    if data is None:
        raise CheckpointError(f"{sweep_dir} is not a sweep directory (no {SWEEP_FILE}).")
    if not isinstance(data.get("metric"), str) or data.get("mode") not in ("max", "min"):
        raise _sweep_file_damaged(target, "it names no metric and mode (max or min)")
    if not isinstance(data.get("params") or {}, dict):
        raise _sweep_file_damaged(target, "its params is not an object")
    return data


def _sweep_file_damaged(target: Location, why: str) -> RunFileError:
    return RunFileError(
        f"{target} is damaged: {why}.",
        hint=f"Fix or restore {target.name} (e.g. from a copy of the sweep); "
        "the trials' own run directories are not affected.",
    )


def inside(sweep_dir: Location, relative: Any, source: Location, key: str) -> Location:
    """``relative`` (a path inside the sweep, as best.json writes it) under ``sweep_dir``."""
    parts = [p for p in str(relative).replace("\\", "/").split("/") if p not in ("", ".")]
    if not isinstance(relative, str) or not parts or ".." in parts:
        raise _sweep_file_damaged(source, f"its {key} is {json.dumps(relative)}")
    where = sweep_dir
    for part in parts:
        where = where / part
    return where


def _no_best_yet(sweep_dir: Location, what: str) -> CheckpointError:
    return CheckpointError(
        f"Sweep {sweep_dir} has no {what} yet: no trial results have been collected.",
        hint=f"Wait for the sweep to finish, or run `lepton report {sweep_dir}` to collect "
        "the trials so far; a trial directory inside it can be used as a run.",
    )


def sweep_checkpoint(sweep_dir: Location) -> Location:
    """The best trial's checkpoint that ``best.json`` names, inside this sweep directory."""
    source = sweep_dir / BEST_JSON
    best = load_json_record(source)
    if best is None:
        raise _no_best_yet(sweep_dir, BEST_JSON)
    trial = best.get("trial", "?")
    if not best.get("checkpoint"):
        raise CheckpointError(
            f"Sweep {sweep_dir}: its best trial, {trial}, has no whole checkpoint "
            f"({BEST_JSON} names none).",
            hint=f"Pass a checkpoint of another trial explicitly ({sweep_dir}/trial_*/checkpoint_*).",
        )
    checkpoint = inside(sweep_dir, best["checkpoint"], source, "checkpoint")
    if not (checkpoint / META_FILE).is_file():
        raise CheckpointError(
            f"The best checkpoint of sweep {sweep_dir}, {best['checkpoint']} (named in "
            f"{BEST_JSON}), is missing or not whole: {checkpoint / META_FILE} does not exist.",
            hint=f"Restore it from a copy of the sweep, or run `lepton report {sweep_dir}` to "
            "pick the best of the trials as they are now.",
        )
    print(
        f"lepton: {sweep_dir} is a sweep; using its best trial {trial} "
        f"({best.get('metric')} {_value(best.get('value'))}): {best['checkpoint']}",
        file=sys.stderr,
    )
    return checkpoint


def best_config_file(sweep_dir: Location) -> Location:
    """``best.yaml``: the best trial's config (``lepton train --from SWEEP_DIR``)."""
    target = sweep_dir / BEST_YAML
    if not target.is_file():
        raise _no_best_yet(sweep_dir, BEST_YAML)
    return target


def _value(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
