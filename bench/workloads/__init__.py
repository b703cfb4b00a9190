"""Scripts the benchmarks run as subprocesses (they import torch; the parent does not)."""
