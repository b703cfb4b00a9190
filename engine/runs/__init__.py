"""Runs: where they live (:mod:`~engine.runs.storage`, with local copies of remote ones in
:mod:`~engine.runs.local_copies`), what a run directory holds
(:mod:`~engine.runs.layout`), checkpoints (:mod:`~engine.runs.checkpoint`), listing
(:mod:`~engine.runs.listing`) and the report (:mod:`~engine.runs.report`)."""
