"""Writing results: a JSON document and a Markdown report (``bench/results/``), and the
latest Markdown copied to ``bench/RESULTS.md``."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.core import BenchResult, Row, Settings

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
LATEST_MD = BENCH_DIR / "RESULTS.md"


def document(
    machine: dict[str, Any], settings: Settings, results: list[BenchResult], duration_s: float
) -> dict[str, Any]:
    return {
        "machine": machine,
        "settings": settings.as_dict(),
        "duration_s": round(duration_s, 1),
        "targets": [asdict(r) | {"benchmark": b.name} for b, r in _targets(results)],
        "benchmarks": [asdict(r) for r in results],
    }


def write(
    doc: dict[str, Any],
    markdown: str,
    stem: str,
    out_dir: Path,
    copy_latest: bool,
    *,
    append: bool = False,
) -> Path:
    """The run's JSON and Markdown in ``out_dir``; the Markdown copied to RESULTS.md, or with
    ``append`` added after what RESULTS.md has (a benchmark rerun beside a full run)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(
        json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8"
    )
    md_path = out_dir / f"{stem}.md"
    md_path.write_text(markdown, encoding="utf-8")
    if copy_latest and append and LATEST_MD.is_file():
        earlier = LATEST_MD.read_text(encoding="utf-8").rstrip("\n")
        added = f"\n\n---\n\n**Added by a later run ({stem}.md):**\n\n{markdown}"
        LATEST_MD.write_text(earlier + added, encoding="utf-8")
    elif copy_latest:
        shutil.copyfile(md_path, LATEST_MD)
    return md_path


def _targets(results: list[BenchResult]) -> list[tuple[BenchResult, Row]]:
    return [(b, r) for b in results for r in b.rows if r.target]


# -- Markdown -------------------------------------------------------------------------


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit in ("samples/s", "req/s", "images/s"):
        return f"{value:,.0f} {unit}"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "MiB":
        return f"{value:,.0f} MiB"
    if unit == "%":
        return f"{value:.0f}%"
    if unit == "s":
        return f"{value:.3f} s" if abs(value) < 10 else f"{value:.1f} s"
    return f"{value:.3g} {unit}".strip()


def fmt_ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}x"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _machine_lines(m: dict[str, Any], settings: Settings, duration_s: float) -> list[str]:
    w = settings.workload
    mode = "quick smoke run" if settings.quick else "full run"
    rows = [
        ["Date (UTC)", m["date"]],
        ["CPU", f"{m['cpu_model']}"],
        [
            "Cores",
            f"{m['logical_cores']} logical, {m['physical_cores']} physical, "
            f"{m['usable_cores']} usable by this process",
        ],
        ["RAM", f"{m['ram_gib']} GiB"],
        ["OS", m["os"]],
        [
            "Versions",
            f"Python {m['python']}, torch {m['torch']}, ray {m['ray']}, "
            f"lepton-engine {m['lepton_engine']}",
        ],
        [
            "Load average (1/5/15 min)",
            f"start {m.get('load_average_at_start')}, end {m.get('load_average_at_end')}",
        ],
        [
            "Run",
            f"{mode}: {settings.reps} repetition(s), {w.epochs} epochs, "
            f"{settings.pairs} whole-run pair(s) of {settings.e2e_epochs} epochs, "
            f"{settings.cli_reps} runs per short command; took {duration_s:.0f} s",
        ],
    ]
    return _table(["Machine", ""], rows)


def markdown(doc: dict[str, Any], settings: Settings, results: list[BenchResult]) -> str:
    m = doc["machine"]
    lines = [
        "# Lepton Engine benchmarks",
        "",
        "Written by `python -m bench` (`make bench`); see `bench/README.md` for what each "
        "number means. Every ratio is against a baseline measured in the same run.",
        "",
        *_machine_lines(m, settings, doc["duration_s"]),
        "",
    ]
    for warning in doc.get("warnings", []):
        lines += [f"> **Warning:** {warning}", ""]

    lines += ["## Targets", ""]
    target_rows = [
        [
            r.metric + (f" vs {r.baseline}" if _ratio_target(r) else ""),
            _value_for_target(r),
            r.target or "",
            r.status or "n/a",
        ]
        for _, r in _targets(results)
    ]
    if target_rows:
        lines += _table(["Metric", "Measured", "Goal", "Status"], target_rows) + [""]
    else:
        lines += ["No benchmark with a target ran.", ""]

    for result in results:
        lines += [f"## {result.order}. {result.title}", ""]
        if result.status == "not available yet":
            lines += ["Not available yet. " + " ".join(result.notes), ""]
            continue
        if result.status == "failed":
            lines += [f"**FAILED** {result.error or ''}".rstrip(), ""]
        if result.rows:
            lines += _table(
                ["Metric", "Value", "Baseline", "Baseline value", "Ratio", "Target", "Status"],
                [
                    [
                        r.metric + (f" ({r.note})" if r.note else ""),
                        fmt_value(r.value, r.unit),
                        r.baseline or "",
                        fmt_value(r.baseline_value, r.unit) if r.baseline else "",
                        fmt_ratio(r.ratio),
                        r.target or "",
                        r.status,
                    ]
                    for r in result.rows
                ],
            )
            lines.append("")
        lines += [f"- {note}" for note in result.notes]
        lines += [f"- Took {result.duration_s:.0f} s.", ""]
    return "\n".join(lines).rstrip() + "\n"


def _ratio_target(row: Row) -> bool:
    return bool(row.target and row.target.rstrip().endswith("x") and row.baseline)


def _value_for_target(row: Row) -> str:
    return fmt_ratio(row.ratio) if _ratio_target(row) else fmt_value(row.value, row.unit)
