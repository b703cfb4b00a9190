"""A run refers to its own files by name: a copied or moved run uses the copy's files.

Unit tier: the loop runs in this process (no Ray); the CLI runs in-process
(``engine.cli.main``), so exit status and stderr are what a user sees.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
from run_fixtures import (
    best_name,
    copy_run,
    flip_bytes,
    newest_name,
    snapshot,
    train_run,
    write_result,
)
from test_loop_local import _spec

from engine.cli import main
from engine.errors import CheckpointError
from engine.runs.layout import EVAL_FILE, RESULT_FILE, read_metrics, resolve_checkpoint
from engine.runs.storage import Location
from engine.train.loop import run_local, run_loop
from engine.train.worker_context import LocalContext


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LEPTON_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_run(tmp_path_factory.mktemp("template") / "run")


@pytest.fixture
def original(trained, tmp_path):
    """A finished run of its own for each test (a copy of one trained once)."""
    run = copy_run(trained, tmp_path / "runs" / "vision-original")
    assert best_name(run) != newest_name(run), "the fixture's best must not be the newest"
    return run


def _evaluate(capsys, *args):
    code = main(["evaluate", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_result_json_names_the_best_checkpoint_inside_the_run(original):
    summary = json.loads((original / RESULT_FILE).read_text())["summary"]
    assert summary["best_checkpoint"] == best_name(original)
    assert (
        "/" not in summary["best_checkpoint"] and (original / summary["best_checkpoint"]).is_dir()
    )
    assert str(original) not in (original / RESULT_FILE).read_text()
    assert str(original) not in (original / "workers.json").read_text()


def test_a_damaged_copy_is_refused_and_the_original_is_untouched(original, tmp_path, capsys):
    before = snapshot(original)
    copy = copy_run(original, tmp_path / "elsewhere" / "vision-copy")
    damaged = copy / best_name(copy) / "model.safetensors"
    flip_bytes(damaged)

    code, _, err = _evaluate(capsys, copy)
    assert code == 2, err
    assert (
        f"Checkpoint {copy / best_name(copy)} is damaged: model.safetensors does not match" in err
    )
    assert "Traceback" not in err

    images = tmp_path / "imgs"
    images.mkdir()
    code = main(["predict", str(copy), "--input", str(images)])
    err = capsys.readouterr().err
    assert code == 2 and str(copy / best_name(copy)) in err and "model.safetensors" in err

    assert snapshot(original) == before, "the original run was read or written"
    assert not list(original.rglob(EVAL_FILE))


def test_an_undamaged_copy_and_a_moved_run_evaluate_from_their_own_files(
    original, tmp_path, capsys
):
    before = snapshot(original)
    copy = copy_run(original, tmp_path / "elsewhere" / "vision-copy")
    code, out, err = _evaluate(capsys, copy, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["checkpoint"] == str(copy / best_name(copy))
    written = json.loads((copy / best_name(copy) / EVAL_FILE).read_text())
    assert written["checkpoint"] == best_name(copy), "eval.json names its checkpoint relatively"

    assert main(["report", str(copy)]) == 0
    capsys.readouterr()
    report = (copy / "report.md").read_text()
    assert f"`{copy / best_name(copy)}`" in report and str(original) not in report

    moved = tmp_path / "moved" / "vision-moved"
    moved.parent.mkdir()
    os.rename(copy, moved)
    code, out, err = _evaluate(capsys, moved, "--json")
    assert code == 0, err
    assert json.loads(out)["checkpoint"] == str(moved / best_name(moved))
    assert snapshot(original) == before
    assert not list(original.rglob(EVAL_FILE)) and not (original / "report.md").exists()


def test_a_missing_best_checkpoint_is_an_error_not_the_newest(original, capsys):
    best, newest = best_name(original), newest_name(original)
    shutil.rmtree(original / best)
    code, _, err = _evaluate(capsys, original)
    assert code == 2, err
    assert (
        f"The best checkpoint of run {original}, {best} (named in result.json), is missing" in err
    )
    assert newest in err  # offered in the hint, never used
    assert not (original / newest / EVAL_FILE).exists()
    with pytest.raises(CheckpointError, match="is missing"):
        resolve_checkpoint(original)
    assert main(["report", str(original), "--no-evaluate"]) == 2
    assert best in capsys.readouterr().err


def test_an_old_absolute_best_checkpoint_is_looked_up_in_the_given_run(original, tmp_path, capsys):
    best = best_name(original)
    result = json.loads((original / RESULT_FILE).read_text())
    result["summary"]["best_checkpoint"] = str(original / best)  # as runs were written before
    result["summary"]["run_dir"] = str(original)
    (original / RESULT_FILE).write_text(json.dumps(result))
    copy = copy_run(original, tmp_path / "elsewhere" / "vision-copy")
    assert resolve_checkpoint(copy) == Location.parse(copy / best)
    flip_bytes(copy / best / "model.safetensors")
    code, _, err = _evaluate(capsys, copy)
    assert code == 2 and f"Checkpoint {copy / best} is damaged" in err


def test_a_run_without_a_summary_uses_its_newest_checkpoint_and_says_so(original, capsys):
    write_result(original, "running", summary=False)
    code, out, err = _evaluate(capsys, original, "--json")
    assert code == 0, err
    assert "has no result summary yet (status running)" in err
    assert f"using its newest whole checkpoint, {newest_name(original)}" in err
    assert json.loads(out)["checkpoint"] == str(original / newest_name(original))


def test_resume_of_a_copy_continues_from_the_copy(original, tmp_path):
    before = snapshot(original)
    copy = copy_run(original, tmp_path / "elsewhere" / "vision-copy")
    run_local(_spec(copy, "trainer.epochs=4", "resume=true"))
    rows = read_metrics(copy)
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert rows[3]["resumed_from"] == str(copy / newest_name(original))
    assert snapshot(original) == before


class _RestoredFrom(LocalContext):
    """Ray Train handing over a pointer into the run's old place."""

    def __init__(self, run_dir, restored):
        super().__init__(run_dir)
        self._restored = restored

    def restored_checkpoint(self):
        from contextlib import nullcontext

        return nullcontext(self._restored)


def test_a_ray_pointer_into_the_original_is_taken_from_the_copy(original, tmp_path):
    copy = copy_run(original, tmp_path / "elsewhere" / "vision-copy")
    run_loop(_spec(copy, "trainer.epochs=4"), _RestoredFrom(copy, original / newest_name(original)))
    assert read_metrics(copy)[3]["resumed_from"] == str(copy / newest_name(original))

    # The original trained on after the copy was made: Ray's pointer to its newer
    # checkpoint is not this run's, and is not used.
    other = copy_run(original, tmp_path / "elsewhere" / "vision-copy-2")
    run_local(_spec(original, "trainer.epochs=4", "resume=true"))
    ahead = original / newest_name(original)
    assert not (other / ahead.name).exists()
    with pytest.raises(CheckpointError, match="which is not in run"):
        run_loop(_spec(other, "trainer.epochs=5"), _RestoredFrom(other, ahead))


def test_resume_from_a_damaged_checkpoint_stops_naming_the_file(original):
    flip_bytes(original / newest_name(original) / "training_state.safetensors")
    with pytest.raises(CheckpointError) as err:
        run_local(_spec(original, "trainer.epochs=4", "resume=true"))
    assert "training_state.safetensors does not match the SHA-256" in err.value.message
    assert str(original / newest_name(original)) in err.value.message
