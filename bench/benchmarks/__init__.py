"""Importing this package registers every benchmark, in report order."""

from bench.benchmarks import (  # noqa: F401
    data,
    e2e,
    export,
    memory,
    monitor,
    pending,
    phases,
    serve,
    startup,
    stream,
    submit,
    training,
    tune,
)
