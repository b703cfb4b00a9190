"""Runs: where they live (:mod:`~engine.runs.storage`), what a run directory holds
(:mod:`~engine.runs.layout`), checkpoints (:mod:`~engine.runs.checkpoint`), listing
(:mod:`~engine.runs.listing`) and the report (:mod:`~engine.runs.report`)."""
