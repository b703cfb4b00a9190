"""Ctrl-C and SIGTERM while an in-process run trains (``scaling=inprocess``).

The loop runs on the main thread, so the driver's :class:`~engine.train.interrupts.
InterruptGuard` raises its ``Interrupt`` wherever the loop is: out of a step, a
validation pass, a checkpoint save, each ``finally`` on the way cleaning up. A few
places drop an exception raised in them, though: Python's at-fork hooks (a DataLoader
starting its workers forks; ``logging``'s hook would then also keep its lock), a
``__del__`` (a DataLoader iterator shutting its workers down), a weakref callback.
:class:`InProcessSignals` covers those for the run:

- while the process forks, a signal is only noted and handed to the guard at the next
  :meth:`~InProcessSignals.check`;
- an ``Interrupt`` dropped anyway is not printed as "Exception ignored" (it is raised
  again at the next check);
- :meth:`~InProcessSignals.check` runs at every step end, epoch end and start of the
  loop (:meth:`~InProcessSignals.callback`) and once after it;
- a process forked during the run (a DataLoader worker) ignores SIGINT and SIGTERM, as
  Ray's worker processes block SIGINT: a terminal's Ctrl-C reaches the whole group, and
  the run's own process stops the run; the loader workers end with it (else they die of
  the guard's handler they inherit, and torch's SIGCHLD handler raises in the middle of
  recording the run).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import Any

from engine.train.interrupts import SIGNALS, Interrupt, InterruptGuard
from engine.train.loop import LoopCallback

#: The in-process run's signal handling now in force in this process, if any.
_active: InProcessSignals | None = None


class InProcessSignals:
    """Within ``with``: the guard's handlers wrapped as the module doc says."""

    def __init__(self, guard: InterruptGuard) -> None:
        self.guard = guard
        self.forking = False
        self.deferred: list[int] = []
        self._inner: dict[int, Any] = {}
        self._hook: Any = None

    def __enter__(self) -> InProcessSignals:
        global _active
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                handler = signal.getsignal(s)
                if callable(handler):  # the guard's, armed by the driver
                    self._inner[s] = handler
                    signal.signal(s, self._handle)
        self._hook = sys.unraisablehook
        sys.unraisablehook = self._unraisable
        _active = self
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        global _active
        _active = None
        sys.unraisablehook = self._hook
        for s, handler in self._inner.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.forking:  # inside fork's hooks: an exception raised here is lost
            self.deferred.append(signum)
            return
        self._inner[signum](signum, frame)

    def _unraisable(self, unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, Interrupt):
            return  # dropped where it was raised; check() raises it again
        self._hook(unraisable)

    def check(self) -> None:
        """Raise the ``Interrupt`` of a signal taken but not (or not yet) raised."""
        while self.deferred:
            signum = self.deferred.pop(0)
            self._inner[signum](signum, None)  # the guard's: raises, or exits on a second
        if self.guard.signum is not None and not self.guard.finished:
            raise Interrupt(self.guard.signum)

    def callback(self) -> LoopCallback:
        """The loop callback that calls :meth:`check` at every step, epoch and start."""
        return _Check(self)


class _Check(LoopCallback):
    def __init__(self, signals: InProcessSignals) -> None:
        self.signals = signals

    def on_train_start(self, ctx: Any, start_epoch: int) -> None:
        self.signals.check()

    def on_step_end(self, ctx: Any, epoch: int, step: int) -> None:
        self.signals.check()

    def on_epoch_end(self, ctx: Any, epoch: int, row: dict[str, Any]) -> None:
        self.signals.check()


def _before_fork() -> None:
    if _active is not None:
        _active.forking = True


def _after_fork_in_parent() -> None:
    if _active is not None:
        _active.forking = False


def _after_fork_in_child() -> None:
    if _active is not None:
        for s in SIGNALS:
            signal.signal(s, signal.SIG_IGN)


# Registered last, so around every other hook: ``before`` hooks run newest first,
# ``after`` hooks oldest first.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
