"""Lepton Engine benchmarks: ``python -m bench`` (or ``make bench``).

Every benchmark prints a ratio against a baseline measured in the same run, writes
JSON and Markdown to ``bench/results/`` and copies the Markdown to ``bench/RESULTS.md``.
The parent process imports only the standard library and psutil; everything that
needs torch or Ray runs in a subprocess (``bench.workloads``).
"""
