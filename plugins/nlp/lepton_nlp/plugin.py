"""Entry point of the NLP plugin (group ``lepton``): registers the task and its config dir."""

from __future__ import annotations

from pathlib import Path

from engine.hookspecs import hookimpl


@hookimpl
def lepton_register_tasks(register):  # type: ignore[no-untyped-def]
    from lepton_nlp.task import NLPTask

    register(NLPTask())


@hookimpl
def lepton_config_dirs():  # type: ignore[no-untyped-def]
    return [Path(__file__).parent / "conf"]
