"""The driver's progress display: epoch lines always, a live line only on a terminal."""

from __future__ import annotations

import io
import json
import time

from engine.runs.layout import append_metrics
from engine.train.progress import DriverProgress, ProgressWriter


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _row(epoch: int) -> dict:
    return {"epoch": epoch, "train/loss": 0.5, "val/accuracy": 0.9, "samples_per_s": 1000.0}


def test_not_a_terminal_gets_epoch_lines_only(tmp_path):
    stream, lines = io.StringIO(), []
    ProgressWriter(tmp_path).update(
        force=True, epoch=0, step_in_epoch=3, steps_per_epoch=10, loss=0.7, samples_per_s=5.0
    )
    with DriverProgress(tmp_path, 2, echo=lines.append, stream=stream, interval_s=0.05) as progress:
        append_metrics(tmp_path, _row(0))
        progress.poll()
        append_metrics(tmp_path, _row(1))
    assert lines == [
        "epoch 1/2  train/loss 0.5000  val/accuracy 0.9000  1000 samples/s",
        "epoch 2/2  train/loss 0.5000  val/accuracy 0.9000  1000 samples/s",
    ]
    assert stream.getvalue() == ""


def test_terminal_gets_a_live_line_rewritten_in_place(tmp_path):
    stream, lines = _Terminal(), []
    writer = ProgressWriter(tmp_path)
    writer.update(
        force=True, epoch=0, step_in_epoch=3, steps_per_epoch=10, loss=0.7, samples_per_s=5.0
    )
    progress = DriverProgress(tmp_path, 2, echo=lines.append, stream=stream)
    progress.poll()
    assert "\repoch 1/2  step 3/10  loss 0.7000  5 samples/s" in stream.getvalue()
    append_metrics(tmp_path, _row(0))
    progress.poll()
    assert lines and lines[0].startswith("epoch 1/2")


def test_rows_written_before_start_are_not_repeated(tmp_path):
    append_metrics(tmp_path, _row(0))  # e.g. the epochs of the run this one resumes
    append_metrics(tmp_path, _row(1))
    lines: list[str] = []
    # a long interval: the thread never ticks, so every poll below is ours
    with DriverProgress(
        tmp_path, 3, echo=lines.append, stream=io.StringIO(), interval_s=60
    ) as progress:
        progress.poll()
        assert lines == []  # nothing new since start
        append_metrics(tmp_path, _row(2))
        progress.poll()
        progress.poll()  # a second look finds nothing new
    # __exit__ polls once more: the one row written after start, echoed once, and only it
    assert lines == ["epoch 3/3  train/loss 0.5000  val/accuracy 0.9000  1000 samples/s"]


def test_writer_throttles(tmp_path):
    writer = ProgressWriter(tmp_path, every_s=60)
    writer.update(epoch=0, step_in_epoch=1)
    writer.update(epoch=0, step_in_epoch=2)
    assert json.loads((tmp_path / "progress.json").read_text())["step_in_epoch"] == 1


class _Counting(io.StringIO):
    flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_epoch_lines_are_flushed_as_printed(tmp_path):
    """Into a pipe Python buffers stdout in blocks: without a flush the lines would come out
    together, whenever something else flushed, or at exit."""
    stream = _Counting()
    progress = DriverProgress(
        tmp_path, 2, echo=lambda line: stream.write(line + "\n"), stream=stream
    )
    progress.poll()
    assert stream.flushes == 0  # nothing new, nothing to flush
    append_metrics(tmp_path, _row(0))
    progress.poll()
    assert stream.getvalue().startswith("epoch 1/2") and stream.flushes == 1


def test_training_end_prints_the_last_rows_without_waiting_for_a_tick(tmp_path):
    lines: list[str] = []
    started = time.monotonic()
    with DriverProgress(tmp_path, 1, echo=lines.append, stream=io.StringIO(), interval_s=60):
        append_metrics(tmp_path, _row(0))
    assert lines == ["epoch 1/1  train/loss 0.5000  val/accuracy 0.9000  1000 samples/s"]
    assert time.monotonic() - started < 2  # not the 60 s interval
