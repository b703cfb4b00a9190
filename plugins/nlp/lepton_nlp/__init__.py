"""Lepton NLP plugin: text classification (task ``nlp``)."""

__version__ = "0.1.0"
