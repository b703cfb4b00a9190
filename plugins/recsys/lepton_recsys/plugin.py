"""Entry point of the recsys plugin (group ``lepton``): registers the tasks and config dir."""

from __future__ import annotations

from pathlib import Path

from engine.hookspecs import hookimpl


@hookimpl
def lepton_register_tasks(register):  # type: ignore[no-untyped-def]
    from lepton_recsys.task import RecsysExplicitTask, RecsysTask

    register(RecsysTask())
    register(RecsysExplicitTask())


@hookimpl
def lepton_config_dirs():  # type: ignore[no-untyped-def]
    return [Path(__file__).parent / "conf"]
