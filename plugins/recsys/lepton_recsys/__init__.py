"""Lepton Engine task plugin: recommendation from user-item interactions."""

__version__ = "0.1.0"
