"""Lepton vision plugin."""
