"""``lepton tune``: a hyperparameter sweep on Ray Tune over the engine's training loop."""

from __future__ import annotations

import argparse
import atexit
import gc
from typing import Any

from engine.argtypes import add_config_dir

DESCRIPTION = """\
Sweep hyperparameters. Arguments are Hydra overrides; those in Hydra's sweep syntax
are the search space, the rest apply to every trial:

  'optimizer.lr=tag(log,interval(1e-4,1e-1))'   log-uniform float
  'task.model.width=choice(32,64,128)'          one of (also: key=32,64,128)
  'trainer.batch_size=range(16,65,16)'          16, 32, 48, 64 (end-exclusive)
  'task.model.dropout=interval(0,0.3)'          uniform float
  sweep=NAME                                    a search space kept as sweep/NAME.yaml

tune.* keys (conf/tune/default.yaml): num_samples, max_concurrent_trials,
scheduler=asha|fifo|median, grace_period, reduction_factor, max_t,
search=random|grid|optuna, metric, mode, seed, time_budget_s, max_failures.
Each trial is a run directory inside the sweep's; the sweep ends with trials.csv,
best.yaml (lepton train --from SWEEP_DIR), best.json (lepton evaluate/predict SWEEP_DIR)
and plots. Resume an interrupted sweep: the same command with run.name=NAME resume=true.
Ray Tune keeps its state in the sweep directory as pickle: resume only sweeps you trust."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "tune",
        help="sweep hyperparameters on Ray Tune (ASHA, grid, Optuna)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="OVERRIDE",
        help="e.g. task=vision 'optimizer.lr=tag(log,interval(1e-4,1e-1))' tune.num_samples=8",
    )
    add_config_dir(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    import sys

    from engine.train.cluster import wait_for_teardown
    from engine.train.train_command import _line_buffered
    from engine.tune.plan import plan_sweep
    from engine.tune.sweep import run_sweep

    plan, cfg, info = plan_sweep(args.overrides, config_dir=args.config_dir)
    _line_buffered(sys.stdout)
    atexit.register(gc.freeze)  # as lepton train: no last collections at exit
    try:
        outcome = run_sweep(plan, cfg, info)
        print(outcome.table)
        print(f"Sweep directory: {outcome.sweep_dir}")
        if outcome.best:
            print(
                f"Next: lepton train --from {outcome.sweep_dir}  |  lepton evaluate {outcome.sweep_dir}"
            )
    finally:
        wait_for_teardown()
    return 0
