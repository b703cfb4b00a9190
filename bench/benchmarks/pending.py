"""Benchmarks for parts of the engine not built yet, listed so the report shows them
(``register_pending(order, name, title, description)``). None at present: serving arrived
with `lepton serve` (``benchmarks/serve.py``)."""
