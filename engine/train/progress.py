"""What the driver shows while Ray Train runs: epoch lines and a live progress line.

Rank 0 keeps two files in the run directory: ``metrics.jsonl`` (a row per epoch) and
``progress.json`` (rewritten about once a second: epoch, step, throughput, loss).
:class:`DriverProgress` follows both from a thread on the driver: it prints each new
epoch row as one clean line, and, only when stdout is a terminal, a live line that
is rewritten in place. Output that is not a terminal (CI, logs, pipes) gets the
epoch lines and nothing else.

Each line is flushed when printed: to a pipe Python buffers stdout in blocks, so the
lines would otherwise come out together whenever Ray happened to flush (a worker's log
line) or at exit. A local run dir is looked at every 0.25 s, so a line appears within
about that of the row's ``time`` (the end of its epoch); when ``fit()`` returns, the
rows not yet shown are printed at once.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from engine.errors import LeptonError
from engine.runs.layout import METRICS_FILE, parse_metrics, write_json_atomic
from engine.runs.storage import REMOTE_POLL_S, Location

PROGRESS_FILE = "progress.json"


class ProgressWriter:
    """Rank 0's side: throttled, atomic writes of ``progress.json``.

    Locally the write happens in place (a small file, about once a second). For a run
    in an object store an upload would stall the training step (and every DDP peer
    with it), so a background thread uploads the newest fields instead.
    """

    def __init__(self, run_dir: str | Path | Location, every_s: float = 1.0) -> None:
        self.path = Location.parse(run_dir) / PROGRESS_FILE
        self.every_s = every_s if self.path.is_local else max(every_s, REMOTE_POLL_S)
        self._last = 0.0
        self._pending: dict[str, Any] | None = None
        self._wake = threading.Event()
        if not self.path.is_local:
            threading.Thread(
                target=self._upload_newest, name="lepton-progress", daemon=True
            ).start()

    def update(self, force: bool = False, **fields: Any) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        data = {**fields, "time": time.time()}
        if self.path.is_local:
            self._write(data)
        else:
            self._pending = data
            self._wake.set()

    def _write(self, data: dict[str, Any]) -> None:
        with contextlib.suppress(OSError, LeptonError):  # best effort; metrics.jsonl is the record
            write_json_atomic(self.path, data)

    def _upload_newest(self) -> None:
        while self._wake.wait():
            self._wake.clear()
            data, self._pending = self._pending, None
            if data is not None:
                self._write(data)


def format_row(row: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {row['epoch'] + 1}/{epochs}"]
    for key, value in row.items():
        if key.startswith(("train/", "val/")) and isinstance(value, (int, float)):
            parts.append(f"{key} {value:.4f}")
    parts.append(f"{row.get('samples_per_s', 0):.0f} samples/s")
    if row.get("resumed_from"):
        parts.append(f"(resumed from {Path(row['resumed_from']).name})")
    return "  ".join(parts)


class DriverProgress:
    """Follows a run directory from the driver while ``fit()`` blocks."""

    def __init__(
        self,
        run_dir: str | Path | Location,
        epochs: int,
        *,
        echo: Callable[[str], None] = print,
        stream: TextIO | None = None,
        interval_s: float = 0.25,
    ) -> None:
        self.run_dir = Location.parse(run_dir)
        self.epochs = epochs
        self.echo = echo
        self.stream = stream or sys.stdout
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval_s = interval_s if self.run_dir.is_local else max(interval_s, REMOTE_POLL_S)
        self._offset = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live_width = 0
        self._lock = threading.Lock()  # the thread's poll and the last one never interleave

    def __enter__(self) -> DriverProgress:
        try:
            self._offset = (self.run_dir / METRICS_FILE).size()
        except (OSError, LeptonError):
            self._offset = 0
        self._thread = threading.Thread(target=self._run, name="lepton-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Training has ended (``fit()`` returned or raised): the rest of the rows, now."""
        self._stop.set()  # wakes the thread from its wait; it ends after any poll under way
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.poll()  # rows that landed after the last tick
        with self._lock:
            self._clear_live()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def poll(self) -> None:
        with self._lock:
            rows = self._new_rows()
            for row in rows:
                self._clear_live()
                self.echo(format_row(row, self.epochs))
            if rows:
                _flush(self.stream, sys.stdout)  # echo prints to stdout: out now, not at exit
            if self.live:
                self._show_live()

    def _new_rows(self) -> list[dict[str, Any]]:
        try:
            chunk = (self.run_dir / METRICS_FILE).read_bytes(self._offset).decode("utf-8")
        except (OSError, UnicodeDecodeError, LeptonError):
            return []
        complete, _, _ = chunk.rpartition("\n")
        if not complete:
            return []
        self._offset += len(complete.encode("utf-8")) + 1
        return parse_metrics(complete, dedupe=False)

    def _show_live(self) -> None:
        try:
            data = json.loads((self.run_dir / PROGRESS_FILE).read_text())
        except (OSError, ValueError, LeptonError):
            return
        text = (
            f"epoch {data.get('epoch', 0) + 1}/{self.epochs}  step {data.get('step_in_epoch', 0)}"
            f"/{data.get('steps_per_epoch', '?')}  loss {data.get('loss', float('nan')):.4f}  "
            f"{data.get('samples_per_s', 0):.0f} samples/s"
        )
        pad = max(0, self._live_width - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._live_width = len(text)

    def _clear_live(self) -> None:  # with the lock held
        if self.live and self._live_width:
            self.stream.write("\r" + " " * self._live_width + "\r")
            self.stream.flush()
            self._live_width = 0


def _flush(*streams: TextIO) -> None:
    for stream in dict.fromkeys(streams):  # each once
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
