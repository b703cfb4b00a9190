"""One live driver per run: ``driver.lock`` in the run directory.

The driver takes the lock before it writes anything else into the run directory and
holds it until :func:`hold_run` ends. A second driver for the same run (two
``lepton train run.name=X`` started together, or ``resume=true`` on a run that is still
training) is refused with a :class:`~engine.errors.RunLockedError` naming the owner.

- **Local run directories** (a local disk or a shared mount): an OS lock,
  ``fcntl.flock`` on ``<run>/driver.lock``. The file records the owner (host, pid,
  start time, command) for the message; the lock itself is what counts, and the OS
  drops it when the driver dies, so it never goes stale.
- **Object-store run directories**: a lease object ``<run>/driver.lock`` (JSON: owner
  token, host, pid, started, heartbeat). It is written, read back after
  :data:`SETTLE_S` to confirm no other driver wrote over it (stores without
  conditional writes: the last writer wins, and both see who that was), refreshed by
  a daemon thread every :data:`HEARTBEAT_S`, and deleted on release. A lease whose
  heartbeat is older than :data:`STALE_AFTER_S` belongs to a dead driver and is taken
  over, with a message naming the old owner.

On release the lock file is removed; a run directory this driver created and left
empty (it lost a race, or failed a check before writing anything) is removed too.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from engine.errors import CheckpointError, RunLockedError, StorageError
from engine.runs.layout import CONFIG_FILE
from engine.runs.storage import Location

LOCK_FILE = "driver.lock"
#: How often a driver refreshes its object-store lease.
HEARTBEAT_S = 10.0
#: A lease not refreshed for this long belongs to a driver that is gone.
STALE_AFTER_S = 60.0
#: How long after writing its lease a driver reads it back to confirm it won.
SETTLE_S = 1.0
#: A local lock held for a moment (`lepton runs` probing it) is tried again this often.
_LOCAL_TRIES = 5


@dataclass(frozen=True)
class LockOwner:
    """Who holds (or last held) a run's lock, as its ``driver.lock`` records it."""

    host: str
    pid: int | None
    started: float | None
    command: str
    heartbeat: float | None
    token: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LockOwner:
        def number(key: str) -> float | None:
            value = data.get(key)
            return float(value) if isinstance(value, (int, float)) else None

        pid = data.get("pid")
        return cls(
            host=str(data.get("host") or "?"),
            pid=pid if isinstance(pid, int) else None,
            started=number("started"),
            command=str(data.get("command") or ""),
            heartbeat=number("heartbeat"),
            token=str(data.get("token") or ""),
        )

    def describe(self) -> str:
        since = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
            if self.started
            else "an unknown time"
        )
        text = f"pid {self.pid if self.pid is not None else '?'} on host {self.host}, since {since}"
        return f"{text} ({self.command})" if self.command else text


def _record(token: str, started: float) -> dict[str, Any]:
    argv = [os.path.basename(sys.argv[0]) if sys.argv else "python", *sys.argv[1:]]
    if argv[0] in ("cli.py", "__main__.py"):
        argv[0] = "lepton"
    return {
        "token": token,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": started,
        "heartbeat": time.time(),
        "command": " ".join(argv)[:500],
    }


def _parse(text: str) -> LockOwner | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return LockOwner.from_json(data) if isinstance(data, dict) else None


def read_owner(run_dir: Location) -> LockOwner | None:
    """The owner ``driver.lock`` records, or None (no lock file, or one being written)."""
    try:
        return _parse((run_dir / LOCK_FILE).read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None


def live_owner(run_dir: Location, *, stale_after_s: float = STALE_AFTER_S) -> LockOwner | None:
    """The driver holding the run now, or None; the lock is probed, never kept."""
    if not run_dir.is_local:
        owner = read_owner(run_dir)
        fresh = owner is not None and time.time() - (owner.heartbeat or 0.0) < stale_after_s
        return owner if fresh else None
    import fcntl

    try:
        fd = os.open(run_dir.local_path / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_owner(run_dir) or LockOwner("?", None, None, "", None, "")
    finally:
        os.close(fd)  # closing drops the probe's shared lock
    return None


class RunLock:
    """The lock of one run directory for this driver; :meth:`acquire`, then :meth:`release`."""

    def __init__(
        self,
        run_dir: Location,
        *,
        resume: bool = False,
        heartbeat_s: float = HEARTBEAT_S,
        stale_after_s: float = STALE_AFTER_S,
        settle_s: float = SETTLE_S,
        echo: Callable[[str], None] = print,
    ) -> None:
        self.run_dir = run_dir
        self.resume = resume
        self.heartbeat_s, self.stale_after_s, self.settle_s = heartbeat_s, stale_after_s, settle_s
        self.echo = echo
        self.token = uuid.uuid4().hex
        self.started = time.time()
        #: Set when the heartbeat found another driver's lease in place of this one's.
        self.lost = False
        self._fd: int | None = None
        self._created_dir = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def path(self) -> Location:
        return self.run_dir / LOCK_FILE

    def acquire(self) -> RunLock:
        if self.run_dir.is_local:
            self._acquire_local()
        else:
            self._acquire_lease()
        return self

    def release(self) -> None:
        if self.run_dir.is_local:
            if self._fd is not None:
                # Unlink while still holding it: a driver that opened the old file finds
                # it no longer at the path and tries again (see _acquire_local).
                self.path.delete_file()
                os.close(self._fd)
                self._fd = None
            self._remove_dir_if_empty()
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        with contextlib.suppress(Exception):  # best effort: a lease left behind goes stale
            current = read_owner(self.run_dir)
            if current is not None and current.token == self.token:
                self.path.delete_file()

    # -- local: an OS lock ----------------------------------------------------------------

    def _acquire_local(self) -> None:
        import fcntl

        root = self.run_dir.local_path
        try:
            root.parent.mkdir(parents=True, exist_ok=True)
            root.mkdir()
            self._created_dir = True
        except FileExistsError:
            pass
        except OSError as exc:  # /proc/x, a read-only mount, a file where a dir should be
            raise StorageError(
                f"Cannot create the run directory {root}: {exc.strerror or exc}.",
                hint="Set run.dir to a directory you can write (or an s3:// / gs:// URI).",
            ) from None
        path = root / LOCK_FILE
        busy = 0
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                busy += 1
                if busy >= _LOCAL_TRIES:
                    break
                time.sleep(0.1)
                continue
            try:
                here = os.stat(path)
                mine = os.fstat(fd)
                current = (here.st_ino, here.st_dev) == (mine.st_ino, mine.st_dev)
            except FileNotFoundError:
                current = False
            if not current:  # the file was released and unlinked after we opened it
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(_record(self.token, self.started)) + "\n").encode())
            os.fsync(fd)
            self._fd = fd
            return
        owner = None
        for _ in range(10):  # the owner writes its record just after it locks
            owner = read_owner(self.run_dir)
            if owner is not None:
                break
            time.sleep(0.05)
        self._remove_dir_if_empty()
        raise self._refusal(owner)

    def _remove_dir_if_empty(self) -> None:
        if self._created_dir:
            with contextlib.suppress(OSError):
                self.run_dir.local_path.rmdir()  # only ever removes an empty directory
            self._created_dir = False

    # -- object store: a lease with a heartbeat -------------------------------------------

    def _acquire_lease(self) -> None:
        for _ in range(3):
            previous = read_owner(self.run_dir)
            if previous is not None and previous.token != self.token:
                age = time.time() - (previous.heartbeat or 0.0)
                if age < self.stale_after_s:
                    raise self._refusal(previous)
            self._write_lease()
            time.sleep(self.settle_s)
            confirmed = read_owner(self.run_dir)
            if confirmed is None:
                continue  # written over and already released by another driver: try again
            if confirmed.token != self.token:
                raise self._refusal(confirmed)
            if previous is not None and previous.token != self.token:
                self.echo(
                    f"Taking over {self.run_dir} from a driver that stopped "
                    f"{time.time() - (previous.heartbeat or 0.0):.0f} s ago: "
                    f"{previous.describe()}."
                )
            self._thread = threading.Thread(
                target=self._heartbeat, name="lepton-run-lease", daemon=True
            )
            self._thread.start()
            return
        raise self._refusal(read_owner(self.run_dir))

    def _write_lease(self) -> None:
        self.path.write_text(json.dumps(_record(self.token, self.started)) + "\n")

    def _heartbeat(self) -> None:
        warned = False
        while not self._stop.wait(self.heartbeat_s):
            try:
                current = read_owner(self.run_dir)
                if current is None or current.token != self.token:
                    self.lost = True
                    whom = current.describe() if current else "nobody (it was deleted)"
                    print(
                        f"lepton: warning: the lease on {self.run_dir} is now held by {whom}; "
                        "this driver no longer owns the run.",
                        file=sys.stderr,
                    )
                    return
                self._write_lease()
                warned = False
            except Exception as exc:  # a network blip: keep the thread, try again later
                if not warned:
                    print(
                        f"lepton: warning: cannot refresh the lease on {self.run_dir}: {exc}",
                        file=sys.stderr,
                    )
                    warned = True

    # -- the refusal -----------------------------------------------------------------------

    def _refusal(self, owner: LockOwner | None) -> RunLockedError:
        who = owner.describe() if owner else "a driver that has not recorded itself yet"
        message = f"Run {self.run_dir} is in use by another driver: {who}."
        if self.resume:
            hint = (
                "resume=true continues a run whose driver has stopped; this one is still "
                "training. Wait for it to finish, or stop that process first, then resume."
            )
        else:
            hint = "Wait for it to finish, or pick another run.name."
        if not self.run_dir.is_local:
            hint += (
                f" A driver that died loses the run {self.stale_after_s:.0f} s after its "
                "last heartbeat."
            )
        return RunLockedError(message, hint=hint)


@contextlib.contextmanager
def hold_run(
    run_dir: Location, *, resume: bool, echo: Callable[[str], None] = print
) -> Iterator[RunLock]:
    """Hold ``run_dir``'s lock for the ``with`` block; a new run must still be unstarted.

    Two drivers of one new run can both pass :func:`engine.train.driver.resolve_run_dir`;
    whichever takes the lock second finds the other's ``config.yaml`` and is refused.
    """
    lock = RunLock(run_dir, resume=resume, echo=echo).acquire()
    try:
        if not resume and (run_dir / CONFIG_FILE).exists():
            raise CheckpointError(
                f"Run {run_dir} already exists.",
                hint="Add resume=true to continue it, or pick another run.name.",
            )
        yield lock
    finally:
        lock.release()
