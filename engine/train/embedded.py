"""The embedded cluster's footprint: bound to loopback, and no session directory left.

A cluster ``lepton`` starts for one command serves that command only, so (Ray 2.60):

- **Loopback only.** Ray binds its gRPC servers, agents and dashboard to the node IP,
  and resolves ``127.0.0.1`` to the machine's routable address unless
  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` is off (``ray._private.services.get_node_ip_address``:
  it is what keeps Ray on macOS and Windows on loopback). Ray reads it once, when
  ``ray`` is imported, so it is set before that (:func:`loopback_only`); the workers
  inherit it. Then every listener of Ray's is on 127.0.0.1 (torch.distributed's
  rendezvous store on rank 0 is not Ray's: it binds every interface, with no setting).
- **No metrics page.** The dashboard agent serves Prometheus metrics over HTTP with no
  authentication (the dashboard's API and the runtime-env agent answer 401 without Ray's
  token); ``enable_metrics_collection`` off removes that listener. Nothing in training
  reads it.
- **The dashboard stays, on 127.0.0.1 behind the token.** Train V2's placement-group
  cleaner asks the dashboard's state API whether the controller is alive; without the
  dashboard it logs a warning on the terminal every second. It costs ``ray.init`` about
  0.8 s and 11 processes (docs/architecture.md, *Fixed costs*).
- **No idle workers started in advance.** Ray starts one Python worker per CPU when the
  first driver connects (``prestart_worker_first_driver``), for tasks without a runtime
  environment. Nothing of a run can use them: Train's controller (and every actor it
  creates) has a runtime environment of its own (the environment variables Train
  passes on), so its processes are started afresh anyway. Not starting them saves their
  start-up (``import ray`` and the connection: 0.3 CPU-seconds each, measured) right
  when the cluster and the controller start.
- **The autoscaler monitor ends first.** ``ray.shutdown()`` stops the GCS before the
  monitor, whose SIGTERM handler then tries to report its own end to the GCS that is
  gone, and blocks until Ray's one-second grace runs out and SIGKILLs it: every shutdown
  waits that second. A one-machine cluster that never scales has no use for the monitor
  (and ``ray.init`` has no switch to not start it; ``ray start --no-monitor`` has), so
  :func:`end_autoscaler_monitor` SIGKILLs it just before, as Ray does a second later.
- **The session directory goes.** Each ``ray.init`` writes ``<ray temp>/session_<time>_<pid>``
  (about 2 MB: logs, the dashboard's Grafana files, sockets); :func:`remove_session` deletes this
  command's own one (its path comes from ``ray.init()``'s ``address_info``) after
  ``ray.shutdown()``, first copying its logs into the run when the run failed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

#: Ray's switch for "this machine only" (read when ``ray`` is imported).
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
LOOPBACK = "127.0.0.1"
#: Where a failed run keeps the Ray logs of its embedded cluster: ``<run>/ray-logs/<session>/``.
RAY_LOGS_DIR = "ray-logs"
#: Parts of ``<session>/logs`` not worth keeping (old rotations, profiler output).
_SKIP_LOGS = ("old", "nsight", "profiles", "export_events")


def loopback_only() -> bool:
    """Make the next embedded cluster bind to loopback; False if it is too late.

    Too late means ``ray`` was imported already (Ray has read the switch): the cluster
    then binds where Ray decides, as before.
    """
    if "ray" in sys.modules:
        return os.environ.get(LOOPBACK_ENV) == "0"
    os.environ[LOOPBACK_ENV] = "0"
    return True


def init_kwargs(num_cpus: int) -> dict[str, Any]:
    """``ray.init`` arguments of an embedded cluster (besides logging)."""
    return {
        "num_cpus": num_cpus,
        "dashboard_host": LOOPBACK,
        "_system_config": {
            # The agent's Prometheus page answers without Ray's token; nothing here reads it.
            "enable_metrics_collection": False,
            # Idle workers nothing of a run can use (see the module doc).
            "prestart_worker_first_driver": False,
        },
    }


#: The autoscaler monitor's script, as its command line names it.
_MONITOR_SCRIPT = "autoscaler/_private/monitor.py"


def end_autoscaler_monitor(session_dir: Path) -> bool:
    """SIGKILL the embedded cluster's autoscaler monitor (before ``ray.shutdown()``).

    It is found among this process's children (``ray.init`` starts it) by its script and
    by this session's log dir in its command line; True if it was. If Ray renames either,
    nothing is found and the shutdown takes its second, as before.
    """
    try:
        import psutil  # Ray's own dependency (bundled with it)
    except ImportError:
        return False
    logs_dir = f"--logs-dir={session_dir / 'logs'}"
    found = False
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            args = child.cmdline()
            if logs_dir in args and any(
                a.replace(os.sep, "/").endswith(_MONITOR_SCRIPT) for a in args
            ):
                child.kill()  # Ray's shutdown then finds it ended and reaps it
                found = True
    return found


def _not_worth_keeping(directory: str, names: list[str]) -> set[str]:
    """Old rotations, profiler output and the many empty files of Ray's log dir."""
    skip = {n for n in names if n in _SKIP_LOGS}
    for name in names:
        with contextlib.suppress(OSError):
            path = Path(directory, name)
            if path.is_file() and path.stat().st_size == 0:
                skip.add(name)
    return skip


def remove_session(session_dir: Path, keep_logs_in: Path | None = None) -> None:
    """Delete an embedded cluster's session dir (after ``ray.shutdown()``).

    With ``keep_logs_in``, ``<session>/logs`` is first copied to
    ``keep_logs_in/<session name>/`` (a failed run keeps the workers' errors). Ray's
    ``session_latest`` link goes too when it points at this session. Processes of the
    cluster still exiting may add a file while the tree is removed, so it is tried a
    few times; what cannot be removed is left (best effort, never an error).
    """
    if keep_logs_in is not None:
        with contextlib.suppress(OSError, shutil.Error):
            shutil.copytree(
                session_dir / "logs",
                keep_logs_in / session_dir.name,
                ignore=_not_worth_keeping,
                dirs_exist_ok=True,
            )
    latest = session_dir.parent / "session_latest"
    with contextlib.suppress(OSError):
        if latest.is_symlink() and Path(os.readlink(latest)).name == session_dir.name:
            latest.unlink()
    for attempt in range(10):
        shutil.rmtree(session_dir, ignore_errors=True)
        if not session_dir.exists():
            return
        time.sleep(0.1 * (attempt + 1))
