"""End to end through the real ``lepton`` CLI (subprocesses; the slow tier)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nlp_testdata import write_csv

from conftest import ROOT, run_lepton

pytestmark = pytest.mark.slow

PREDICT_SCRIPT = """
import json, sys
from engine.runs.checkpoint import load_model
predictor = load_model(sys.argv[1]).predictor()
print(json.dumps(predictor.predict(json.loads(sys.argv[2]))))
"""


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (overrides, strings the error must contain)."""
    wrong_col = write_csv(
        tmp / "wrong_column.csv", ["body", "label"], [["hello", "a"], ["bye", "b"]]
    )
    latin = tmp / "latin1.csv"
    latin.write_bytes("text,label\ncaf\xe9,a\nna\xefve,b\n".encode("latin-1"))
    empty = tmp / "empty.jsonl"
    empty.write_bytes(b"")
    return {
        "missing column": (
            ["task.data.format=csv", f"task.data.path={wrong_col}"],
            [str(wrong_col), "no column 'text'", "task.data.text_column", "body"],
        ),
        "not utf-8": (
            ["task.data.format=csv", f"task.data.train={latin}"],
            [str(latin), "(task.data.train) is not UTF-8 text", "byte 0xe9"],
        ),
        "empty file": (
            ["task.data.format=jsonl", f"task.data.path={empty}"],
            [str(empty), "is empty", "task.data.path"],
        ),
        "missing file": (
            ["task.data.format=parquet", f"task.data.train={tmp / 'nope.parquet'}"],
            [str(tmp / "nope.parquet"), "does not exist", "task.data.train"],
        ),
    }


@pytest.mark.parametrize("case", ["missing column", "not utf-8", "empty file", "missing file"])
def test_bad_input_exits_2_with_a_clear_message(tmp_path: Path, case: str) -> None:
    overrides, expected = _bad_inputs(tmp_path)[case]
    runs = tmp_path / "runs"
    proc = run_lepton("train", "task=nlp", *overrides, f"run.dir={runs}", timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "lepton: error:" in proc.stderr
    for text in expected:
        assert text in proc.stderr, (text, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert not runs.exists() or not any(runs.iterdir())  # refused before any run started


def test_default_demo_trains_with_two_workers_and_reloads_elsewhere(tmp_path: Path) -> None:
    started = time.perf_counter()
    proc = run_lepton("train", "task=nlp", f"run.dir={tmp_path}", timeout=600)
    elapsed = time.perf_counter() - started
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = [p for p in tmp_path.iterdir() if p.name.startswith("nlp-")]
    result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    summary = result["summary"]
    print(f"lepton train task=nlp: {elapsed:.1f} s, best val/f1 {summary['best_value']:.4f}")
    assert summary["metric"] == "val/f1" and summary["best_value"] >= 0.90
    assert elapsed < 180
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {r["world_size"] for r in rows} == {2}
    assert "Best val/f1" in proc.stdout

    texts = [
        "hello, my package has not arrived yet. thanks",
        "i cannot log in to my account",
        "the invoice shows the wrong amount",
        "the screen goes black randomly",
        "",
        "zorblax quuxified the flimflam",  # words the tokenizer never saw
    ]
    # A fresh interpreter: nothing from training is in memory there.
    reload = subprocess.run(
        [
            sys.executable,
            "-c",
            PREDICT_SCRIPT,
            str(run_dir / summary["best_checkpoint"]),  # named inside the run
            json.dumps(texts),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert reload.returncode == 0, reload.stderr
    out = json.loads(reload.stdout.strip().splitlines()[-1])
    assert [o["label"] for o in out[:4]] == ["shipping", "account", "billing", "technical"]
    assert len(out) == 6 and all(
        sum(o["probabilities"].values()) == pytest.approx(1, abs=1e-4) for o in out
    )


def test_cfg_job_prints_the_nlp_defaults() -> None:
    proc = run_lepton("train", "task=nlp", "--cfg", "job", timeout=120)
    assert proc.returncode == 0, proc.stderr
    for line in ("name: nlp", "format: synthetic", "text_column: text", "kind: auto"):
        assert line in proc.stdout
