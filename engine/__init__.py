"""Lepton Engine: a plugin-based distributed training engine on Ray.

Importing this package is cheap on purpose: torch and ray are imported only by the
modules (and CLI commands) that need them.
"""

__version__ = "0.1.0"
