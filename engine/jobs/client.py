"""The cluster's Jobs API, reached as a user's laptop reaches it: address, token, errors.

**Address.** ``--address``, else ``RAY_ADDRESS``, in the dashboard's form
``http://<head>:8265`` (the Jobs API is served by the dashboard). A GCS address
(``<head>:6379``, what ``lepton train ray.address=`` takes) or a Ray Client one
(``ray://…``) is refused, naming the form to use. Ray's own client would let
``RAY_ADDRESS`` win over an explicit address; here the address named on the command
line is the one used.

**Token.** Ray's client sends ``authorization: Bearer <token>`` only when
``RAY_AUTH_MODE=token`` is set in this process, and finds the token in
``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token`` (that order). When
one is found, :func:`prepare_auth` sets ``RAY_AUTH_MODE=token`` (unless the user set
``RAY_AUTH_MODE`` themselves) before ``ray`` is imported, which is when Ray reads it. The server answers 401 to no token and 403 to a
wrong one: both become a :class:`~engine.errors.JobError` saying which, and where the
token was looked for.

**Errors.** Every call goes through :func:`api_errors`: an unreachable address is a
:class:`~engine.errors.ClusterError` naming it, an unknown job id a ``JobError`` (exit 2),
anything else the server says a ``JobError`` quoting it. No traceback for any of them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from engine.errors import ClusterError, JobError, clip

#: How long a TCP connect to the Jobs API may take before the address counts as unreachable
#: (Ray's client sets no timeout: a firewalled address would hang for minutes).
CONNECT_TIMEOUT_S = 5.0
DEFAULT_PORT = 8265
ADDRESS_HELP = (
    "Give the head node's dashboard address: --address http://<head>:8265, or export "
    "RAY_ADDRESS=http://<head>:8265 (`ray dashboard cluster.yaml` forwards it to "
    "http://127.0.0.1:8265; `make cluster-up` prints the local cluster's)."
)
TOKEN_HELP = (
    "Copy the cluster's token (~/.ray/auth_token on the head node) and export "
    "RAY_AUTH_TOKEN=<token>, or RAY_AUTH_TOKEN_PATH=<file holding it>."
)
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
#: The job's command follows this in its entrypoint (after the on-cluster requirements check).
COMMAND_PREFIX = "python -m engine.cli "
CHECK_PREFIX = "python -m engine.jobs.submit_command"
#: What the on-cluster check prints (and its exit status) when the engine or a plugin is
#: missing or of another series there.
MISSING_MARK = "lepton: cluster environment:"
MISSING_EXIT = 3


@dataclass(frozen=True)
class Token:
    value: str
    source: str  # where it was found, for messages: "RAY_AUTH_TOKEN", a file path


@dataclass
class Connection:
    """A connected client and what a message needs to say about it."""

    client: Any  # ray.job_submission.JobSubmissionClient
    url: str
    token: Token | None
    server_ray_version: str | None = None

    def job_url(self, job_id: str) -> str:
        return f"{self.url}/#/jobs/{job_id}"


def resolve_address(address: str | None) -> str:
    """The Jobs API URL from ``--address`` or ``RAY_ADDRESS``; a clear error for other forms."""
    where = "--address" if address else "RAY_ADDRESS"
    given = address or os.environ.get("RAY_ADDRESS")
    if not given:
        raise JobError(
            "No cluster address: lepton needs the cluster's Jobs API.", hint=ADDRESS_HELP
        )
    given = given.strip().rstrip("/")
    parts = urlsplit(given if "://" in given else f"none://{given}")
    host = parts.hostname if parts.hostname and given != "auto" else "<head>"
    if parts.scheme in ("http", "https") and parts.hostname:
        try:
            parts.port  # noqa: B018  (a bad port raises here)
        except ValueError:
            raise JobError(f"{where}={given} has a bad port.", hint=ADDRESS_HELP) from None
        return given
    if parts.scheme == "ray":
        what = "a Ray Client address (ray://)"
    elif given == "auto" or parts.scheme == "none":
        what = "a cluster (GCS) address, the form `lepton train ray.address=` takes"
    else:
        what = f"an address with scheme {parts.scheme}://"
    raise JobError(
        f"{where}={given} is {what}; lepton submit and lepton jobs talk to the Jobs API on the "
        f"head node's dashboard instead.",
        hint=f"Use {where}=http://{host}:{DEFAULT_PORT} (the dashboard's port, 8265 unless the "
        "head was started with --dashboard-port).",
    )


def entrypoint_for(requires: dict[str, str], command: list[str]) -> str:
    """``<requirements check> && python -m engine.cli <command>``, quoted for the shell."""
    import shlex

    check = " ".join(
        [CHECK_PREFIX, *(f"--require {shlex.quote(f'{k}={v}')}" for k, v in requires.items())]
    )
    return f"{check} && {COMMAND_PREFIX}{shlex.join(command)}"


def display_command(entrypoint: str) -> str:
    """``lepton <command>`` for a job lepton submitted; any other job's entrypoint as it is."""
    head, sep, rest = entrypoint.partition(COMMAND_PREFIX)
    if sep and (not head or head.startswith(CHECK_PREFIX)):
        return f"lepton {rest}"
    return entrypoint


def status_of(info: Any) -> str:
    return str(getattr(info.status, "value", info.status))


def find_token() -> Token | None:
    """The token Ray's client will send, looked up in Ray's own order."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return Token(os.environ["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN")
    path_env = os.environ.get("RAY_AUTH_TOKEN_PATH", "").strip()
    if path_env:
        path = Path(path_env).expanduser()
        if not path.is_file():
            raise JobError(
                f"RAY_AUTH_TOKEN_PATH={path_env} is not a file.",
                hint="Point it at the file holding the cluster's token, or unset it.",
            )
        return Token(path.read_text().strip(), str(path))
    default = Path.home() / ".ray" / "auth_token"
    if default.is_file() and default.read_text().strip():
        return Token(default.read_text().strip(), str(default))
    return None


def prepare_auth() -> Token | None:
    """Find the token and, when there is one, set ``RAY_AUTH_MODE=token`` for this process.

    Ray reads ``RAY_AUTH_MODE`` once, when ``ray`` is imported: a command calls this first,
    before anything it does can import Ray.
    """
    token = find_token()
    if token is not None:
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    return token


@contextlib.contextmanager
def this_address(url: str) -> Iterator[None]:
    """Ray's client takes ``RAY_API_SERVER_ADDRESS`` / ``RAY_ADDRESS`` over its argument:
    while it resolves the address, the one this command was given is the only one set."""
    names = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
    saved = {name: os.environ.get(name) for name in names}
    os.environ["RAY_API_SERVER_ADDRESS"] = url
    os.environ.pop("RAY_ADDRESS", None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _check_reachable(url: str) -> None:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=CONNECT_TIMEOUT_S):
            return
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise _unreachable(url, reason) from None


def _unreachable(url: str, reason: str) -> ClusterError:
    return ClusterError(
        f"Cannot reach the Ray Jobs API at {url}: {reason}.",
        hint="Is the cluster up (ray status on the head), and is the dashboard port reachable "
        "from here (for a cloud cluster: `ray dashboard cluster.yaml` in another terminal)? "
        + ADDRESS_HELP,
    )


def connect(address: str | None) -> Connection:
    """Connect to the Jobs API; :class:`ClusterError` / :class:`JobError` when that fails."""
    url = resolve_address(address)
    token = prepare_auth()
    _check_reachable(url)
    # Ray warns on its logger when the mode is token but no token is found: the 401 that
    # follows is explained below, once.
    logging.getLogger("ray._private.authentication.http_token_authentication").setLevel(
        logging.ERROR
    )
    from ray.job_submission import JobSubmissionClient

    # Ray's client logs each upload and each closed log stream at INFO; what this command
    # does is said in its own lines.
    for name in ("ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk"):
        logging.getLogger(name).setLevel(logging.WARNING)  # Ray sets INFO on them by name

    conn = Connection(client=None, url=url, token=token)
    with api_errors(conn), this_address(url):
        conn.client = JobSubmissionClient(url)
    conn.server_ray_version = getattr(conn.client, "_server_ray_version", None)
    return conn


@contextlib.contextmanager
def api_errors(conn: Connection, job_id: str | None = None) -> Iterator[None]:
    """Turn what Ray's client raises into a message naming the problem and the fix."""
    import requests
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError as exc:
        raise _auth_error(conn, str(exc)) from None
    except (ConnectionError, requests.exceptions.ConnectionError) as exc:
        raise _unreachable(conn.url, clip(str(exc).splitlines()[0] if str(exc) else "")) from None
    except RuntimeError as exc:
        text = str(exc)
        if job_id is not None and ("404" in text or "does not exist" in text):
            raise JobError(
                f"No job {job_id} on the cluster at {conn.url}.",
                hint="`lepton jobs list` shows the jobs it knows (ids look like raysubmit_…).",
            ) from None
        if "404" in text and conn.client is None:
            raise ClusterError(
                f"{conn.url} answers, but not as a Ray dashboard with the Jobs API.",
                hint=ADDRESS_HELP,
            ) from None
        raise JobError(f"The Jobs API at {conn.url} refused the request: {clip(text)}") from None


def _auth_error(conn: Connection, text: str) -> JobError:
    mode = os.environ.get("RAY_AUTH_MODE", "")
    if "Authentication failed" in text or "403" in text:
        source = conn.token.source if conn.token else "RAY_AUTH_TOKEN"
        return JobError(
            f"The cluster at {conn.url} refused the token (from {source}): it is not this "
            "cluster's token (HTTP 403).",
            hint=TOKEN_HELP,
        )
    if conn.token is not None and mode != "token":
        found = f"A token was found ({conn.token.source}) but RAY_AUTH_MODE={mode}"
        return JobError(
            f"The cluster at {conn.url} requires a token (HTTP 401). {found}, so it was not sent.",
            hint="Unset RAY_AUTH_MODE (lepton sets it to token when it finds a token), or "
            "export RAY_AUTH_MODE=token.",
        )
    return JobError(
        f"The cluster at {conn.url} requires a token and none was sent (HTTP 401): no "
        "RAY_AUTH_TOKEN, no RAY_AUTH_TOKEN_PATH, no ~/.ray/auth_token here.",
        hint=TOKEN_HELP,
    )


def job_info(conn: Connection, job_id: str) -> Any:
    """The job's ``JobDetails``."""
    with api_errors(conn, job_id):
        return conn.client.get_job_info(job_id)


def job_logs(conn: Connection, job_id: str) -> str:
    with api_errors(conn, job_id):
        return str(conn.client.get_job_logs(job_id))


def list_jobs(conn: Connection) -> list[Any]:
    with api_errors(conn):
        jobs = list(conn.client.list_jobs())
    return sorted(jobs, key=lambda j: j.start_time or 0)


def stop_job(conn: Connection, job_id: str) -> bool:
    with api_errors(conn, job_id):
        return bool(conn.client.stop_job(job_id))


def node_ips(conn: Connection) -> list[str] | None:
    """The addresses of the cluster's alive nodes, or None when the server does not say.

    Nodes on one machine share its disk (the rule :func:`engine.train.cluster.check_storage`
    applies); the job checks again on the cluster, so not knowing here only means a
    machine-local ``run.dir`` is refused there rather than here.
    """
    try:
        from ray.util.state import list_nodes

        with api_errors(conn), this_address(conn.url):
            nodes = list_nodes(address=conn.url, limit=1000, raise_on_missing_output=False)
    except (JobError, ClusterError):
        raise
    except Exception:  # an older server, a state API switched off: the job checks itself
        return None
    return [
        str(getattr(n, "node_ip", "")) for n in nodes if str(getattr(n, "state", "")) == "ALIVE"
    ]


def on_this_machine(ips: list[str] | None) -> bool:
    """Every node is this machine (a cluster from ``make cluster-up``): it shares our disk.

    A cloud cluster reached through ``ray dashboard``'s tunnel is on 127.0.0.1:8265 too; its
    nodes' addresses are not this machine's, which is what is compared.
    """
    if not ips:
        return False
    local = {"127.0.0.1", "::1"}
    with contextlib.suppress(OSError):
        local.update(socket.gethostbyname_ex(socket.gethostname())[2])
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("10.255.255.255", 1))  # no packet is sent: it picks the outgoing address
        local.add(s.getsockname()[0])
    return all(ip in local for ip in ips)


def follow_logs(conn: Connection, job_id: str, sink: Any, poll_s: float = 1.0) -> None:
    """Stream the job's log into ``sink(chunk)`` until the job ends (the server closes).

    If the stream breaks before the job ends (a proxy timing the socket out, a restarted
    dashboard), the rest of the log is polled instead, so nothing is shown twice or lost.
    """
    import asyncio
    import time

    import aiohttp

    sent = 0

    async def tail() -> None:
        nonlocal sent
        async for chunk in conn.client.tail_job_logs(job_id):
            sink(chunk)
            sent += len(chunk)

    try:
        asyncio.run(tail())
        return
    except aiohttp.WSServerHandshakeError as exc:
        if exc.status in (401, 403):
            raise _auth_error(conn, f"{exc.status}") from None
        if exc.status == 404:
            raise JobError(f"No job {job_id} on the cluster at {conn.url}.") from None
    except (RuntimeError, aiohttp.ClientError, ConnectionError):
        pass
    while True:  # the stream broke: poll the whole log and show what is new
        text = job_logs(conn, job_id)
        if len(text) > sent:
            sink(text[sent:])
            sent = len(text)
        if status_of(job_info(conn, job_id)) in TERMINAL:
            return
        time.sleep(poll_s)


def wait_terminal(conn: Connection, job_id: str, timeout_s: float = 30.0) -> Any:
    """The job's info once its status is terminal (the log can close a moment before)."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        info = job_info(conn, job_id)
        if str(info.status) in TERMINAL or time.monotonic() > deadline:
            return info
        time.sleep(0.2)
