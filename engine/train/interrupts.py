"""Ctrl-C and SIGTERM while ``lepton train`` runs: stop the run, record it, say how to resume.

What Ray does on its own (Ray 2.60): ``ray.init`` installs a SIGTERM handler that calls
``sys.exit(15)``; ``DataParallelTrainer.fit()``, called on the main thread, installs a
SIGINT handler that asks the Train controller to abort and then calls ``sys.exit(0)``
(the process still ends with status 1, and a second Ctrl-C does nothing). Neither lets
the driver record the run. Ray's own processes block SIGINT, so a terminal's Ctrl-C
(sent to the whole foreground group) reaches only the driver.

So the driver holds an :class:`InterruptGuard` around the cluster: once armed (before
``ray.init``, and again after it, as it sets its own SIGTERM handler), the first SIGINT
or SIGTERM raises :class:`Interrupt` in the main thread,
and ``fit()`` runs on a helper thread (where Train installs no handler of its own, as it
does under Tune), so the main thread is free to take the signal. The driver then leaves
the cluster (``ray.shutdown()``: the workers end with it), records the run and raises
:class:`~engine.errors.RunInterrupted`. A second signal ends the process at once.

On a cluster the driver joined, ``ray.shutdown()`` is not called while ``fit()`` is still
blocked inside Ray on its thread: tearing down Ray's core worker under a thread waiting in
it crashes the process (SIGSEGV) now and then. The job there ends with the driver's
process instead (the ``lepton`` entry leaves with ``os._exit`` once the run is recorded),
and Ray's GCS then ends the job's controller and workers.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any, TypeVar

T = TypeVar("T")

#: The signals the guard takes over.
SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: The name of the helper thread :meth:`InterruptGuard.run` runs ``fit()`` on.
FIT_THREAD = "lepton-fit"


def exit_status(signum: int) -> int:
    """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + signum


class Interrupt(BaseException):
    """The first SIGINT/SIGTERM, raised in the main thread.

    A ``BaseException``, like ``KeyboardInterrupt``: no ``except Exception`` on the way
    out (a pre-flight check, a best-effort cleanup) swallows it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        #: The job's workers run on until this process ends (a joined cluster, left as is).
        self.workers_live_on = False

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


class InterruptGuard:
    """Within ``with``: after :meth:`arm`, the first SIGINT or SIGTERM raises
    :class:`Interrupt` (once :meth:`run`'s function has returned it is only noted: the
    run is done, its record is being written); any later one ends the process at once
    with ``128 + signum``.

    The handlers that were there before ``with`` are put back when it ends. Off the main
    thread (where Python allows no handlers) arming does nothing and :meth:`run` calls
    its function directly.
    """

    def __init__(self) -> None:
        self.armed = False
        self.signum: int | None = None
        #: ``run``'s function has returned: a first signal no longer stops anything.
        self.finished = False
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> InterruptGuard:
        if _on_main_thread():
            self._saved = {s: signal.getsignal(s) for s in SIGNALS}
        return self

    def arm(self) -> None:
        """Take over SIGINT and SIGTERM (again after ``ray.init``, which sets its own)."""
        if not self._saved:
            return
        for s in SIGNALS:
            signal.signal(s, self._handle)
        self.armed = True

    def disarm(self) -> None:
        """Put the handlers from before ``with`` back (e.g. on a cluster of the caller's)."""
        for s, handler in self._saved.items():
            signal.signal(s, handler)
        self.armed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            exit_now(signum)
        self.signum = signum
        name = signal.Signals(signum).name
        again = "Ctrl-C" if signum == signal.SIGINT else name
        if self.finished:  # only the record is left to write: let it be written
            _say(f"lepton: {name}: training has finished, recording it ({again} again exits)\n")
            return
        _say(f"lepton: {name}: stopping the run ({again} again exits at once)\n")
        raise Interrupt(signum)

    def run(self, fn: Callable[[], T]) -> T:
        """``fn()``; when armed, on a helper thread while this one waits for signals."""
        if not self.armed:
            return fn()
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # handed to the waiting main thread
                box["error"] = exc

        worker = threading.Thread(target=target, name=FIT_THREAD, daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(0.5)
        if "error" in box:
            raise box["error"]
        self.finished = True
        return box["value"]  # type: ignore[no-any-return]

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.disarm()


def fit_still_running() -> bool:
    """Whether a ``fit()`` that :meth:`InterruptGuard.run` left behind (on an interrupt) is
    still inside Ray on its helper thread."""
    return any(t.name == FIT_THREAD and t.is_alive() for t in threading.enumerate())


def exit_now(signum: int) -> None:
    """The second signal: end the process now, whatever is left undone."""
    _say(f"lepton: {signal.Signals(signum).name} again: exiting now\n")
    os._exit(exit_status(signum))


def _say(text: str) -> None:
    # os.write, not print: the main thread may be inside a print to stderr right now.
    with contextlib.suppress(OSError):
        os.write(2, text.encode())


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def resume_command(run_name: str) -> str:
    """The command that continues this run: this ``lepton train`` command line when that
    is what is running, with ``run.name=<run> resume=true`` in place of its own."""
    argv = sys.argv[1:]
    if argv[:1] == ["train"]:
        keep = [a for a in argv[1:] if not a.lstrip("+").startswith(("run.name=", "resume="))]
        args = shlex.join(keep)
    else:
        args = "..."
    return f"lepton train {args} run.name={run_name} resume=true".replace("  ", " ")
