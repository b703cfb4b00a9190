"""``lepton jobs``: the cluster's jobs (list, status, logs, stop), as tables or ``--json``.

The jobs are the Jobs API's, so ``ray job list`` / ``ray job logs`` show the same ones;
a job ``lepton submit`` sent is shown as its ``lepton`` command. Exit status: 0, or 2
for an unknown job id, an unreachable cluster or a refused token; ``logs --follow``
ends with the job's own status (0 succeeded, 1 failed, 143 stopped), as
``lepton submit --wait`` does.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

DESCRIPTION = """\
The cluster's jobs, through its Jobs API (--address, else $RAY_ADDRESS, e.g.
http://127.0.0.1:8265; the token is Ray's: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
~/.ray/auth_token). Ray's own `ray job` sees the same jobs.

  lepton jobs list                    every job, oldest first (--json for scripts)
  lepton jobs status ID               status, command, times; a failed job's last log lines
  lepton jobs logs ID [--follow]      the log; --follow exits with the job's status
  lepton jobs stop ID [--wait]        stop it (--wait: until it has ended)

Exit status: 0; 2 for an unknown id, an unreachable cluster or a refused token;
logs --follow: 0 succeeded, 1 failed, 143 stopped."""

#: Log lines shown with a failed job.
TAIL_LINES = 20
#: The summary lines ``lepton train``/``tune``/``evaluate`` print last, picked from the log.
SUMMARY_KEYS = ("Run directory", "Sweep directory", "Best ", "Report", "Next")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--address",
        metavar="URL",
        default=None,
        help="the cluster's Jobs API, http://<head>:8265 (default: $RAY_ADDRESS)",
    )
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "jobs",
        help="the cluster's jobs: list, status, logs, stop",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", parents=[common], help="every job the cluster knows, oldest first")
    status = actions.add_parser("status", parents=[common], help="one job's status")
    status.add_argument("job_id", metavar="ID", help="the job's id (raysubmit_…)")
    logs = actions.add_parser("logs", parents=[common], help="one job's log")
    logs.add_argument("job_id", metavar="ID")
    logs.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="follow until the job ends; exit with its status",
    )
    stop = actions.add_parser("stop", parents=[common], help="stop a job")
    stop.add_argument("job_id", metavar="ID")
    stop.add_argument("--wait", action="store_true", help="return once the job has ended")
    return parser


def run(args: argparse.Namespace) -> int:
    from engine.jobs.client import connect

    conn = connect(args.address)
    if args.action == "list":
        return _list(conn, args.json)
    if args.action == "status":
        return _status(conn, args.job_id, args.json)
    if args.action == "logs":
        return _logs(conn, args.job_id, args.follow, args.json)
    return _stop(conn, args.job_id, args.wait, args.json)


def _row(info: Any) -> dict[str, Any]:
    from engine.jobs.client import display_command, status_of

    start, end = info.start_time, info.end_time
    return {
        "job_id": info.submission_id or info.job_id,
        "status": status_of(info),
        "command": display_command(info.entrypoint or ""),
        "entrypoint": info.entrypoint,
        "message": info.message,
        "start_time": _iso(start),
        "end_time": _iso(end),
        "duration_s": round(((end or _now_ms()) - start) / 1000, 1) if start else None,
        "driver_node_id": getattr(info, "driver_node_id", None),
    }


def _iso(ms: int | None) -> str | None:
    import datetime as dt

    if not ms:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="seconds")


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def _list(conn: Any, as_json: bool) -> int:
    import json

    from engine.jobs.client import list_jobs

    rows = [_row(info) for info in list_jobs(conn)]
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"No jobs on the cluster at {conn.url}.")
        return 0
    table = [("JOB ID", "STATUS", "STARTED (UTC)", "TIME", "COMMAND")]
    for r in rows:
        started = (r["start_time"] or "-").replace("T", " ")[:19]
        took = f"{r['duration_s']:.0f} s" if r["duration_s"] is not None else "-"
        table.append((r["job_id"], r["status"], started, took, _clip(r["command"], 70)))
    widths = [max(len(str(row[i])) for row in table) for i in range(4)]
    for row in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[4])
    return 0


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _status(conn: Any, job_id: str, as_json: bool) -> int:
    import json

    from engine.jobs.client import job_info, job_logs

    row = _row(job_info(conn, job_id))
    row["dashboard"] = conn.job_url(row["job_id"])
    tail = _tail(job_logs(conn, job_id)) if row["status"] == "FAILED" else []
    if as_json:
        print(json.dumps({**row, "log_tail": tail} if tail else row, indent=2))
        return 0
    took = f"  ({row['duration_s']:.1f} s)" if row["duration_s"] is not None else ""
    print(f"Job:        {row['job_id']}")
    print(
        f"Status:     {row['status']}" + (f" ({_short(row['message'])})" if row["message"] else "")
    )
    print(f"Command:    {row['command']}")
    print(f"Started:    {(row['start_time'] or '-').replace('T', ' ')}{took}")
    print(f"Dashboard:  {row['dashboard']}")
    if tail:
        print(f"Last {len(tail)} log lines:")
        print("\n".join(f"  {line}" for line in tail))
    return 0


def _logs(conn: Any, job_id: str, follow: bool, as_json: bool) -> int:
    import json

    from engine.jobs.client import job_info, job_logs, status_of

    if follow:
        return follow_job(conn, job_id)
    text = job_logs(conn, job_id)
    if as_json:
        status = status_of(job_info(conn, job_id))
        print(json.dumps({"job_id": job_id, "status": status, "logs": text}, indent=2))
    else:
        sys.stdout.write(text)
    return 0


def _stop(conn: Any, job_id: str, wait: bool, as_json: bool) -> int:
    import json

    from engine.jobs.client import job_info, status_of, stop_job, wait_terminal

    was_running = stop_job(conn, job_id)
    info = wait_terminal(conn, job_id, timeout_s=120) if wait else job_info(conn, job_id)
    status = status_of(info)
    if as_json:
        print(json.dumps({"job_id": job_id, "was_running": was_running, "status": status}))
    elif not was_running:
        print(f"Job {job_id} had already ended: {status}.")
    else:
        print(f"Stop requested for job {job_id}; it is {status}.")
    return 0


def _short(message: str) -> str:
    """Ray's message of a failed job repeats the log's end after its first line; the tail
    is shown on its own."""
    lines = message.split(", last available logs")[0].strip().splitlines()
    return lines[0] if lines else message.strip()[:200]


def _tail(text: str, n: int = TAIL_LINES) -> list[str]:
    return text.rstrip("\n").splitlines()[-n:] if text.strip() else []


def follow_job(conn: Any, job_id: str) -> int:
    """Stream the job's log until it ends; its summary or failure; exit status by its end."""
    from engine.jobs.client import follow_logs, job_logs, wait_terminal

    print(f"Following {job_id} (Ctrl-C stops following; the job keeps running).", flush=True)

    def sink(chunk: str) -> None:
        sys.stdout.write(chunk)
        sys.stdout.flush()

    try:
        follow_logs(conn, job_id, sink)
        info = wait_terminal(conn, job_id)
    except KeyboardInterrupt:
        print(
            f"\nlepton: stopped following {job_id}; it keeps running on the cluster.\n"
            f"  lepton jobs logs {job_id} --follow   |   lepton jobs stop {job_id}",
            file=sys.stderr,
        )
        return 130
    row = _row(info)
    lines = job_logs(conn, job_id).rstrip("\n").splitlines()
    took = f" in {row['duration_s']:.1f} s" if row["duration_s"] is not None else ""
    if row["status"] == "SUCCEEDED":
        print(f"\nJob {job_id} SUCCEEDED{took}.")
        summary = [ln for ln in lines[-60:] if ln.startswith(SUMMARY_KEYS) and ":" in ln]
        print("\n".join(summary) if summary else "(the job printed no run summary)")
        return 0
    if row["status"] == "STOPPED":
        print(f"lepton: job {job_id} was stopped{took}.", file=sys.stderr)
        return 143
    message = f": {_short(row['message'])}" if row["message"] else ""
    print(f"\nlepton: job {job_id} {row['status']}{took}{message}", file=sys.stderr)
    tail = _tail("\n".join(lines))
    if tail:
        print(f"  last {len(tail)} log lines:", file=sys.stderr)
        print("\n".join(f"    {line}" for line in tail), file=sys.stderr)
    hint = _hint(lines)
    if hint:
        print(f"  {hint}", file=sys.stderr)
    print(f"  whole log: lepton jobs logs {job_id}", file=sys.stderr)
    return 1


def _hint(lines: list[str]) -> str | None:
    """A setup problem the log shows, said in a line: the cluster lacks what the job needs."""
    from engine.jobs.client import MISSING_MARK

    text = "\n".join(lines[-40:])
    if MISSING_MARK in text:
        return "The cluster lacks what the job needs (above); nothing ran."
    if "No module named engine" in text or "No module named 'engine'" in text:
        return (
            "The cluster's python has no Lepton Engine: install it on every node "
            "(cluster.yaml's setup_commands)."
        )
    if "python: not found" in text or "python: command not found" in text:
        return "The head node has no `python` on its PATH: the environment with Lepton Engine."
    return None
