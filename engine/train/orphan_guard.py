"""A training worker does not outlive its node's Ray.

Ray starts each worker process from the node's raylet, in a process group of its own,
so killing the driver's process group (``kill -9 -PGID``, a closed terminal, an OOM kill
of the driver and the cluster it embedded) ends the raylet but not the workers. Ray
lets such a worker carry on until its next call into the raylet fails, and a training
loop makes none for a whole epoch: measured here, an orphaned worker trained three more
epochs (and wrote their rows and checkpoints into the run directory) after its driver
was gone, racing the driver that resumed the run.

:func:`exit_with_raylet` starts a daemon thread that polls the process's parent: when
the raylet that started the worker is gone, the worker's parent changes (it is
re-parented) and the thread ends the process at once. What the worker was writing is
left as a crash leaves it: a metrics row is one appended line, and a checkpoint is whole
only once every file ``task.json`` lists has its size, so a cut-short one is never
taken for whole.
"""

from __future__ import annotations

import os
import threading
import time

#: How often the parent is looked at (a ``getppid`` call: no measurable cost).
POLL_S = 0.2
#: The exit status of a worker whose raylet is gone.
ORPHAN_EXIT = 75

_started = False
_lock = threading.Lock()


def exit_with_raylet(poll_s: float = POLL_S) -> bool:
    """End this process when its parent (the raylet that started it) goes away.

    Once per process; True when the watch runs (False under init, where there is no
    parent to watch).
    """
    global _started
    with _lock:
        if _started:
            return True
        parent = os.getppid()
        if parent <= 1:
            return False
        threading.Thread(
            target=_watch, args=(parent, poll_s), name="lepton-raylet-watch", daemon=True
        ).start()
        _started = True
        return True


def _watch(parent: int, poll_s: float) -> None:
    while os.getppid() == parent:
        time.sleep(poll_s)
    os._exit(ORPHAN_EXIT)
