"""Importing this package registers every benchmark, in report order."""

from bench.benchmarks import data, e2e, memory, pending, phases, startup, training, tune  # noqa: F401
