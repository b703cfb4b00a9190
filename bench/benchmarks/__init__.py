"""Importing this package registers every benchmark, in report order."""

from bench.benchmarks import data, memory, pending, startup, training  # noqa: F401
