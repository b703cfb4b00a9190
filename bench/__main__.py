"""``python -m bench``: run the registered benchmarks."""

from bench.cli import main

raise SystemExit(main())
