"""The prediction log: what each served model version answered, for ``lepton monitor``
and for joining feedback labels (``serve.log``).

Layout under ``serve.log.dir`` (a local path or an object-store URI, as ``run.dir``)::

    predictions/<model>/<version>/<UTC time>-<writer>-<seq>.jsonl   written by the replicas
    feedback/<model>/<UTC time>-<writer>-<seq>.jsonl                written by the ingress

Every file is written once, whole (:meth:`Location.write_bytes`: a temporary file renamed
into place locally, a single upload on an object store) and never appended to: a reader
sees a file complete or not at all, and skips anything not named ``*.jsonl`` (the
temporary file a crash mid-write leaves). The time in a name is when the file was
written: every record in it is older.

A prediction record (one per input of a request; a request is logged whole or not at
all, ``serve.log.sample`` of them)::

    {"request_id": "...", "index": 0, "instances": 1, "time": "2026-12-01T18:00:00.123456Z",
     "model": "digits", "version": "1", "checkpoint": "...", "latency_ms": 3.1,
     "prediction": {...as answered...}, "summary": {...}, "input": ... (serve.log.inputs)}

:class:`PredictionLog` runs on each replica: :meth:`PredictionLog.add` (on the request
path) only draws the sample and puts the request on a bounded queue (full: the request
is dropped from the log and counted, never waited for); a thread builds the records
(input summaries included) and writes a new file every ``flush_s`` seconds or ``batch``
records, on reconfigure and on shutdown. A crash (the replica's process killed) loses
the records not written yet: at most the last ``flush_s`` seconds / ``batch`` records.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from engine.runs.storage import Location

log = logging.getLogger("lepton.serve")

PREDICTIONS = "predictions"
FEEDBACK = "feedback"
SUFFIX = ".jsonl"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def utc_iso(ts: float) -> str:
    """``2026-12-01T18:00:00.123456Z``."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def file_name(ts: float, writer: str, seq: int) -> str:
    """``<UTC time>-<writer>-<seq>.jsonl``: sorts by time; unique per writer."""
    stamp = datetime.fromtimestamp(ts, timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{stamp}-{safe_part(writer)}-{seq:06d}{SUFFIX}"


def file_time(name: str) -> float | None:
    """The write time in a log file's name (None for a name not made by :func:`file_name`)."""
    try:
        stamp = datetime.strptime(name.split("-", 1)[0], "%Y%m%dT%H%M%S.%fZ")
    except ValueError:
        return None
    return stamp.replace(tzinfo=timezone.utc).timestamp()


def safe_part(text: str) -> str:
    """``text`` as one path part: letters, digits, ``_ . -`` (others become ``_``)."""
    return _UNSAFE.sub("_", text).strip(".") or "_"


def jsonl(records: Sequence[Mapping[str, Any]]) -> bytes:
    return "".join(json_line(r) + "\n" for r in records).encode()


def json_line(record: Mapping[str, Any]) -> str:
    """One record as strict JSON: NaN and infinities (which JSON lacks) become null, and
    anything not JSON-ready its ``str``, so no record can stop the log."""
    try:
        return json.dumps(record, allow_nan=False, default=str)
    except ValueError:
        return json.dumps(_finite(record), allow_nan=False, default=str)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_file(directory: Location, writer: str, seq: int, records: Sequence[Any]) -> Location:
    """One new whole JSONL file of ``records`` in ``directory``."""
    target = directory / file_name(time.time(), writer, seq)
    target.write_bytes(jsonl(records))
    return target


@dataclass
class _Pending:
    """One logged request, as :meth:`PredictionLog.add` queued it."""

    request_id: str
    ts: float
    inputs: Sequence[Any]
    predictions: Sequence[Any]
    latency_ms: float
    checkpoint: str
    summarize: Callable[[Any, Mapping[str, Any]], dict[str, Any]] | None


@dataclass
class _Control:
    """A flush (or close) asked of the writer thread; ``done`` is set once it is written."""

    close: bool
    done: threading.Event = field(default_factory=threading.Event)


class PredictionLog:
    """One model version's log on one replica (see the module doc)."""

    def __init__(
        self,
        root: str | Location,
        model: str,
        version: str,
        *,
        writer: str,
        sample: float = 1.0,
        inputs: bool = False,
        flush_s: float = 10.0,
        batch: int = 1000,
        queue_size: int = 2000,
        max_file_bytes: int = 16 * 2**20,
    ) -> None:
        self.directory = Location.parse(root) / PREDICTIONS / safe_part(model) / safe_part(version)
        self.model, self.version, self.writer = model, version, writer
        self.sample, self.inputs = sample, inputs
        self.flush_s, self.batch, self.max_file_bytes = flush_s, batch, max_file_bytes
        self._queue: queue.Queue[_Pending | _Control] = queue.Queue(maxsize=queue_size)
        self._records: list[bytes] = []  # built and encoded (JSON lines), not written yet
        self._bytes = 0  # their size
        self._max_records = max(batch, queue_size)
        self._seq = 0
        self._closed = False
        self._lock = threading.Lock()  # one writer at a time (thread, or a late add)
        #: Requests left out of the log because the queue was full / records lost to
        #: failed writes; files written; records written.
        self.dropped = 0
        self.lost = 0
        self.files = 0
        self.written = 0
        self._thread = threading.Thread(
            target=self._loop, name="lepton-prediction-log", daemon=True
        )
        self._thread.start()

    # -- the request path ----------------------------------------------------------

    def add(
        self,
        request_id: str,
        inputs: Sequence[Any],
        predictions: Sequence[Any],
        latency_s: float,
        checkpoint: str = "",
        summarize: Callable[[Any, Mapping[str, Any]], dict[str, Any]] | None = None,
    ) -> bool:
        """Queue one answered request (all its inputs); True when it will be logged."""
        if self.sample < 1 and random.random() >= self.sample:
            return False
        item = _Pending(
            request_id, time.time(), inputs, predictions, latency_s * 1000, checkpoint, summarize
        )
        if self._closed:  # after shutdown began: written at once, there is no thread
            with self._lock:
                self._keep(item)
                self._write()
            return True
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning(
                    "prediction log of %s v%s is behind: %d request(s) left out so far",
                    self.model,
                    self.version,
                    self.dropped,
                )
            return False
        return True

    # -- flushing --------------------------------------------------------------------

    def flush(self, timeout: float = 30.0) -> None:
        """Write everything queued so far now (returns once it is written)."""
        self._ask(_Control(close=False), timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued and stop the thread (later adds are written at once)."""
        if self._closed:
            return
        self._closed = True  # adds from now on are written at once
        self._ask(_Control(close=True), timeout)
        with self._lock:  # an add that queued just before the thread stopped
            self._drain()
            self._write()

    def _ask(self, control: _Control, timeout: float) -> None:
        if not self._thread.is_alive():
            with self._lock:
                self._drain()
                self._write()
            return
        try:
            self._queue.put(control, timeout=timeout)  # the thread is draining: room comes
        except queue.Full:
            log.warning("prediction log of %s v%s: flush timed out", self.model, self.version)
            return
        control.done.wait(timeout)

    # -- the writer thread -------------------------------------------------------------

    def _loop(self) -> None:
        next_flush = time.monotonic() + self.flush_s
        while True:
            try:
                item = self._queue.get(timeout=max(0.0, next_flush - time.monotonic()))
            except queue.Empty:
                item = None
            with self._lock:
                due = item is None or time.monotonic() >= next_flush
                if isinstance(item, _Pending):
                    self._keep(item)
                    if not self._full() and not due:
                        continue
                elif isinstance(item, _Control):
                    self._drain()
                    due = True
                self._write(whole_batches=not due)
            if due:
                next_flush = time.monotonic() + self.flush_s
            if isinstance(item, _Control):
                item.done.set()
                if item.close:
                    return

    def _drain(self) -> None:
        """Build the records of every request queued now (a control message's flush)."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Pending):
                self._keep(item)
            else:
                item.done.set()  # an earlier flush: this one covers it

    def _keep(self, item: _Pending) -> None:
        for record in self._build(item):
            line = (json_line(record) + "\n").encode()
            self._records.append(line)
            self._bytes += len(line)

    def _full(self) -> bool:
        """Enough for a file: ``batch`` records or ``max_file_bytes``."""
        return len(self._records) >= self.batch or self._bytes >= self.max_file_bytes

    def _next_file(self) -> int:
        """How many of the kept records the next file holds: at most ``batch`` and
        ``max_file_bytes`` (but at least one: a record is never split)."""
        size = 0
        for count, line in enumerate(self._records[: self.batch]):
            size += len(line)
            if count and size > self.max_file_bytes:
                return count
        return min(len(self._records), self.batch)

    def _build(self, item: _Pending) -> list[dict[str, Any]]:
        time_text = utc_iso(item.ts)
        records = []
        for index, (value, prediction) in enumerate(
            zip(item.inputs, item.predictions, strict=False)
        ):
            record: dict[str, Any] = {
                "request_id": item.request_id,
                "index": index,
                "instances": len(item.inputs),
                "time": time_text,
                "model": self.model,
                "version": self.version,
                "checkpoint": item.checkpoint,
                "latency_ms": round(item.latency_ms, 3),
                "prediction": prediction,
                "summary": item.summarize(value, prediction) if item.summarize else {},
            }
            if self.inputs:
                record["input"] = value
            records.append(record)
        return records

    def _write(self, whole_batches: bool = False) -> None:
        """Write the built records as files of at most ``batch`` records and
        ``max_file_bytes`` (only full ones with ``whole_batches``), each a new file; on a
        storage error keep them for the next try (up to the queue's size)."""
        while self._records and (not whole_batches or self._full()):
            count = self._next_file()
            chunk = self._records[:count]
            try:
                target = self.directory / file_name(time.time(), self.writer, self._seq)
                target.write_bytes(b"".join(chunk))
            except Exception as exc:  # storage down: keep the records, say so, go on
                over = len(self._records) - self._max_records
                if over > 0:
                    self._bytes -= sum(len(line) for line in self._records[:over])
                    del self._records[:over]
                    self.lost += over
                log.warning(
                    "prediction log of %s v%s: cannot write %s (%s); %d record(s) kept for "
                    "the next try",
                    self.model,
                    self.version,
                    self.directory,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                    len(self._records),
                )
                return
            self._seq += 1
            self.files += 1
            self.written += count
            self._bytes -= sum(len(line) for line in chunk)
            del self._records[:count]


def check_writable(root: str | Location) -> None:
    """A StorageError naming ``serve.log.dir`` when this process cannot write a file
    there (a probe file, written whole and removed)."""
    import uuid

    from engine.errors import StorageError

    where = Location.parse(root)
    probe = where / f".lepton-write-check-{uuid.uuid4().hex[:8]}"
    try:
        probe.write_bytes(b"")
        probe.delete_file()
    except StorageError as exc:
        raise StorageError(
            f"serve.log.dir={where}: {exc.message}", hint=exc.hint or "Name a writable dir."
        ) from None
    except OSError as exc:
        raise StorageError(
            f"serve.log.dir={where} cannot be written: {exc.strerror or exc}.",
            hint="Name a directory this user can create and write (or an object-store URI "
            "with credentials in the environment).",
        ) from None


def open_log(settings: Mapping[str, Any] | None, model: str, version: str) -> PredictionLog | None:
    """The replica's log for ``settings`` (``serve.log`` as a dict), or None when it is off."""
    if not settings or not settings.get("dir"):
        return None
    return PredictionLog(
        settings["dir"],
        model,
        version,
        writer=replica_tag(),
        sample=float(settings.get("sample", 1.0)),
        inputs=bool(settings.get("inputs", False)),
        flush_s=float(settings.get("flush_s", 10.0)),
        batch=int(settings.get("batch", 1000)),
        queue_size=int(settings.get("queue", 2000)),
        max_file_bytes=int(float(settings.get("max_file_mb", 16.0)) * 2**20),
    )


def replica_tag() -> str:
    """This Serve replica's unique id (a random one outside Serve)."""
    import uuid

    try:
        from ray import serve

        return str(serve.get_replica_context().replica_tag)
    except Exception:  # not in a replica (a test, a local service)
        return uuid.uuid4().hex[:12]
