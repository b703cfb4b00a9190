"""A run's own records (config.yaml, result.json, metrics.jsonl) that are damaged are
reported with file and line, never misread (unit tier, no Ray)."""

from __future__ import annotations

import json

import pytest
from run_fixtures import copy_run, train_run

from engine.cli import main
from engine.errors import RunFileError
from engine.runs.layout import (
    CONFIG_FILE,
    METRICS_FILE,
    RESULT_FILE,
    append_metrics,
    load_result,
    parse_metrics,
    read_config,
    read_metrics,
)
from engine.runs.listing import format_runs, run_status


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LEPTON_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_run(tmp_path_factory.mktemp("template") / "run", epochs=2)


@pytest.fixture
def run(trained, tmp_path):
    return copy_run(trained, tmp_path / "runs" / "vision-run")


def _runs_json(capsys, root):
    assert main(["runs", str(root), "--json"]) == 0
    return {r["name"]: r for r in json.loads(capsys.readouterr().out)}


def test_a_healthy_run_has_no_problem(run, capsys):
    listed = _runs_json(capsys, run.parent)["vision-run"]
    assert listed["status"] == "finished" and listed["problem"] is None


def test_a_broken_config_yaml_is_a_clear_report_error(run, capsys):
    text = (run / CONFIG_FILE).read_text().splitlines()
    text[2] = text[2] + " ]: ["  # line 3
    (run / CONFIG_FILE).write_text("\n".join(text) + "\n")
    code = main(["report", str(run), "--no-evaluate"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"lepton: error: {run / CONFIG_FILE} is damaged: not valid YAML (line 3, column" in err
    assert "Traceback" not in err and not (run / "report.md").exists()
    with pytest.raises(RunFileError, match="line 3, column"):
        read_config(run)
    listed = _runs_json(capsys, run.parent)["vision-run"]
    assert listed["status"] == "damaged" and "config.yaml is damaged" in listed["problem"]


def test_a_config_yaml_that_is_not_a_run_config_is_named(run, capsys):
    (run / CONFIG_FILE).write_text("task:\n  name: vision\n")  # valid YAML, keys gone
    assert main(["report", str(run), "--no-evaluate"]) == 2
    err = capsys.readouterr().err
    assert f"{run / CONFIG_FILE} is damaged: it has no " in err and "Traceback" not in err


def test_a_broken_result_json_shows_the_run_as_damaged(run, capsys):
    (run / RESULT_FILE).write_text('{"status": "finished",\n "summary": {oops}\n}\n')
    listed = _runs_json(capsys, run.parent)["vision-run"]
    assert listed["status"] == "damaged"
    assert listed["problem"].startswith(f"{run / RESULT_FILE} is damaged: not valid JSON (line 2,")
    assert run_status(run) == "damaged"
    assert main(["runs", str(run.parent)]) == 0
    table = capsys.readouterr().out
    assert "damaged" in table and f"vision-run: {run / RESULT_FILE} is damaged" in table
    # evaluate cannot tell the best checkpoint: an error, not a guess
    assert main(["evaluate", str(run)]) == 2
    assert "result.json is damaged" in capsys.readouterr().err
    with pytest.raises(RunFileError):
        load_result(run)


def test_a_corrupt_metrics_line_mid_file_is_reported(run, capsys):
    lines = (run / METRICS_FILE).read_text().splitlines()
    lines.insert(1, '{"epoch": 0, "val/accuracy": 0.5')  # line 2 of 3
    (run / METRICS_FILE).write_text("\n".join(lines) + "\n")
    listed = _runs_json(capsys, run.parent)["vision-run"]
    assert listed["status"] == "damaged" and listed["epochs"] == 2
    assert listed["problem"].startswith(f"{run / METRICS_FILE} line 2: not valid JSON")

    assert main(["report", str(run), "--no-evaluate"]) == 0  # still rendered, with a warning
    err = capsys.readouterr().err
    assert f"lepton: warning: {run / METRICS_FILE} line 2: not valid JSON" in err
    assert (run / "report.md").is_file()


def test_a_line_cut_short_at_the_end_is_skipped_silently(run, capsys):
    with open(run / METRICS_FILE, "a") as fh:
        fh.write('{"epoch": 2, "train/lo')  # a crash mid-append
    listed = _runs_json(capsys, run.parent)["vision-run"]
    assert listed["status"] == "finished" and listed["problem"] is None
    assert main(["report", str(run), "--no-evaluate"]) == 0
    assert "warning" not in capsys.readouterr().err

    # The next append (a resumed run) drops the cut-short tail instead of joining it.
    append_metrics(run, {"epoch": 2, "val/accuracy": 0.9})
    problems: list[str] = []
    rows = read_metrics(run, problems=problems)
    assert problems == [] and [r["epoch"] for r in rows] == [0, 1, 2]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"epoch": 0}\n[1, 2]\n{"epoch": 1}\n', "line 2: a JSON list, not an object"),
        ('{"epoch": 0}\n{"epoch": "x"}\n', 'line 2: epoch is "x", not an integer'),
        ('{"epoch": 0}\n{"epoch": 1\n', "line 2: not valid JSON (column 12"),
    ],
)
def test_parse_metrics_describes_bad_lines(text, problem):
    problems: list[str] = []
    rows = parse_metrics(text, problems=problems)
    assert rows[0]["epoch"] == 0
    assert len(problems) == 1 and problems[0].startswith(f"{METRICS_FILE} {problem}"), problems


def test_format_runs_lists_the_problems_below_the_table():
    runs = [
        {
            "name": "r1",
            "task": "vision",
            "status": "damaged",
            "metric": None,
            "best": None,
            "epochs": 1,
            "age_s": 5.0,
            "problem": "r1/result.json is damaged: not valid JSON (line 1, column 1: x)",
        }
    ]
    text = format_runs(runs)
    assert (
        text.splitlines()[-1]
        == "r1: r1/result.json is damaged: not valid JSON (line 1, column 1: x)"
    )
