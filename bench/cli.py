"""``python -m bench [--quick] [--reps N] [--only NAME ...] [--list]``."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from bench import report
from bench.core import BenchResult, Context, Settings
from bench.machine import load_average, machine_info
from bench.registry import Benchmark, benchmarks
from bench.spec import Workload

QUICK_EPOCHS = 2
E2E_EPOCHS = 4  # the whole-process comparison: the 4 epochs


def _parser(names: list[str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Lepton Engine benchmarks: each prints ratios against a baseline measured "
        "in the same run, and writes JSON + Markdown to bench/results/ (the Markdown is also "
        "copied to bench/RESULTS.md).",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: 1 repetition and 1 pair, {QUICK_EPOCHS} epochs, 3 runs per short command",
    )
    p.add_argument("--reps", type=int, help="repetitions of each training run (default 3)")
    p.add_argument("--epochs", type=int, help="training epochs (default: the demo's 10)")
    p.add_argument("--cli-reps", type=int, help="timed runs per short command (default 7)")
    p.add_argument(
        "--pairs",
        type=int,
        help="whole-process runs of `lepton train` and the hand-written script, in turn "
        "(default 3)",
    )
    p.add_argument(
        "--e2e-epochs",
        type=int,
        help=f"epochs of those whole-process runs (default {E2E_EPOCHS}; quick {QUICK_EPOCHS})",
    )
    p.add_argument("--loader-passes", type=int, help="timed passes in the data benchmark")
    p.add_argument(
        "--plain-threads",
        type=int,
        help="torch threads of the plain PyTorch loop (default: threads per worker)",
    )
    p.add_argument(
        "--only", nargs="+", choices=names, metavar="NAME", help=f"run only: {', '.join(names)}"
    )
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    p.add_argument("--out", type=Path, default=report.RESULTS_DIR, help="results directory")
    p.add_argument(
        "--no-copy", action="store_true", help="do not copy the Markdown to bench/RESULTS.md"
    )
    p.add_argument(
        "--append",
        action="store_true",
        help="add this run's Markdown after bench/RESULTS.md's (rerun a benchmark beside a full run)",
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch directory (run dirs)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per subprocess")
    return p


def settings_from(args: argparse.Namespace, workdir: Path) -> Settings:
    quick = bool(args.quick)
    workload = Workload()
    epochs = args.epochs or (QUICK_EPOCHS if quick else workload.epochs)
    if epochs < 2:
        raise SystemExit("--epochs must be at least 2 (steady state excludes the first epoch)")
    workload = replace(workload, epochs=epochs)
    e2e_epochs = args.e2e_epochs or (QUICK_EPOCHS if quick else E2E_EPOCHS)
    if e2e_epochs < 1:
        raise SystemExit("--e2e-epochs must be at least 1")
    return Settings(
        quick=quick,
        reps=max(1, args.reps or (1 if quick else 3)),
        cli_reps=max(1, args.cli_reps or (3 if quick else 7)),
        loader_passes=max(1, args.loader_passes or (2 if quick else 5)),
        workload=workload,
        plain_threads=args.plain_threads or workload.threads,
        timeout_s=args.timeout,
        workdir=workdir,
        pairs=max(1, args.pairs or (1 if quick else 3)),
        e2e_epochs=e2e_epochs,
    )


def list_benchmarks(items: Sequence[Benchmark]) -> None:
    for b in items:
        state = "" if b.available else "  (not available yet)"
        print(f"{b.name:10} {b.title}{state}")
        print(f"{'':10} {b.description}")


def warnings_for(machine: dict[str, object], settings: Settings) -> list[str]:
    found = []
    load = machine.get("load_average_at_start")
    cores = machine.get("usable_cores") or 1
    if isinstance(load, list) and isinstance(cores, int) and load[0] > 0.5 * cores:
        found.append(
            f"the machine was busy when the run started (1-min load average {load[0]} on "
            f"{cores} cores): timings are noisy."
        )
    if machine.get("ray_current_cluster"):
        found.append(
            "/tmp/ray/ray_current_cluster exists (a `ray start` cluster on this machine): "
            "`ray.init()` without an address may join it instead of starting a fresh Ray."
        )
    if settings.quick:
        found.append(
            "quick smoke run (1 repetition, 1 pair, 2 epochs): numbers validate the harness, "
            "not the engine."
        )
    return found


def main(argv: Sequence[str] | None = None) -> int:
    items = benchmarks()
    args = _parser([b.name for b in items]).parse_args(argv)
    if args.list:
        list_benchmarks(items)
        return 0
    selected = [b for b in items if not args.only or b.name in args.only]

    workdir = Path(tempfile.mkdtemp(prefix="lepton-bench-"))
    settings = settings_from(args, workdir)
    ctx = Context(settings, log=lambda line: print(line, flush=True))
    machine = machine_info()
    ctx.log(
        f"{machine['cpu_model']}, {machine['usable_cores']} cores, {machine['ram_gib']} GiB; "
        f"torch {machine['torch']}, ray {machine['ray']}; scratch {workdir}"
    )
    started = time.monotonic()
    results: list[BenchResult] = []
    try:
        for bench in selected:
            if bench.available:
                ctx.log(f"== {bench.name}: {bench.title}")
            result = bench.run(ctx)
            if result.status == "failed":
                ctx.log(f"{bench.name} FAILED: {result.error}")
            results.append(result)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    machine["load_average_at_end"] = load_average()

    doc = report.document(machine, settings, results, time.monotonic() - started)
    doc["warnings"] = warnings_for(machine, settings)
    text = report.markdown(doc, settings, results)
    stem = time.strftime("%Y%m%d-%H%M%S") + ("-quick" if settings.quick else "")
    md_path = report.write(
        doc, text, stem, args.out, copy_latest=not args.no_copy, append=args.append
    )
    print()
    print(text)
    print(f"Results: {md_path} and {md_path.with_suffix('.json')}", end="")
    copied = "added to" if args.append else "copied to"
    print("" if args.no_copy else f"; {copied} {report.LATEST_MD}")
    if args.keep:
        print(f"Run directories kept in {workdir}")
    failed = [r.name for r in results if r.status == "failed"]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0
