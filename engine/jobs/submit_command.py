"""``lepton submit``: run ``train``, ``tune`` or ``evaluate`` on a Ray cluster as a job.

Everything that can be checked here is, before anything is uploaded: the command and its
overrides (the same typed config as ``lepton train``; a typo fails on the laptop),
``run.dir`` (a relative path would land in the job's temporary copy of the project; a
machine-local one is refused on a cluster of several machines, as ``lepton train`` does),
the upload (listed biggest first, refused over the Jobs API's 100 MiB), the address and
the token. The job then runs ``python -m engine.cli <command>`` in the uploaded project.

Whether the cluster has the engine and the plugin the job needs is checked on the
cluster, in the job, before the command starts: a stdlib-only check
(``python -m engine.jobs.submit_command --require NAME=VERSION ...``) chained before it in
the entrypoint. That runs in the very environment the job gets, costs one short Python
start and no second job (a separate probe job would cost a job's start-up, seconds), and
says what is missing in the job's log, which ``--wait`` prints when the job fails.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

COMMANDS = ("train", "tune", "evaluate")

DESCRIPTION = """\
Submit a lepton command to a Ray cluster through its Jobs API:

  lepton submit --wait -- train task=vision scaling.num_workers=4 run.dir=s3://bucket/runs
  lepton submit -- tune task=vision 'optimizer.lr=tag(log,interval(1e-4,1e-1))' run.dir=...
  lepton submit -- evaluate s3://bucket/runs/<run>

The current directory is the project: it is uploaded as the job's working directory
(its conf/, code and small data; not .venv, .git, runs, wandb, caches, nor what
.gitignore/.rayignore exclude), at most 100 MiB. The command is checked here first.
The address is the head node's dashboard (--address, else $RAY_ADDRESS), e.g.
http://127.0.0.1:8265; the token is Ray's (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
~/.ray/auth_token). With --wait the exit status is the job's: 0 succeeded, 1 failed,
143 stopped (130 when you stop following with Ctrl-C; the job keeps running)."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "submit",
        help="run train/tune/evaluate on a Ray cluster as a job (Ray Jobs API)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--address",
        metavar="URL",
        default=None,
        help="the cluster's Jobs API, http://<head>:8265 (default: $RAY_ADDRESS)",
    )
    parser.add_argument(
        "--wait",
        action="store_true",
        help="follow the job's log until it ends, then print the run's summary",
    )
    parser.add_argument(
        "--plugin-dir",
        dest="plugin_dirs",
        action="append",
        default=[],
        metavar="DIR",
        help="a local plugin's source directory to send with the job (repeatable)",
    )
    parser.add_argument(
        "job",
        nargs=argparse.REMAINDER,
        metavar="-- COMMAND ...",
        help="train|tune|evaluate and its arguments, after --",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from engine.jobs.client import api_errors, connect, entrypoint_for, prepare_auth, this_address
    from engine.jobs.upload import add_plugin, check_size, pack, plan_upload, use_plugin_here

    prepare_auth()  # before anything imports Ray (a plugin might)
    job = list(args.job[1:] if args.job[:1] == ["--"] else args.job)
    inner = _parse_command(job)
    project = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="lepton-submit-") as scratch:
        for plugin_dir in args.plugin_dirs:
            use_plugin_here(plugin_dir, Path(scratch))
        needs = _check_command(inner, project)
        plan = plan_upload(project, exclude=needs.inside_project)
        sent = dict(add_plugin(plan, d) for d in args.plugin_dirs)
        print(plan.describe(), flush=True)
        check_size(plan)
        conn = connect(args.address)
        job = _check_cluster(conn, needs, job, project)
        requires = {k: v for k, v in needs.requires.items() if k not in sent}
        package = pack(plan, scratch)
        with api_errors(conn), this_address(conn.url):
            job_id = _submit(
                conn.client,
                entrypoint=entrypoint_for(requires, job),
                runtime_env={"working_dir": str(package), "env_vars": {"PYTHONUNBUFFERED": "1"}},
                metadata={"lepton_command": job[0]},
            )
    print(f"Submitted job {job_id}")
    print(f"Dashboard:  {conn.job_url(job_id)}", flush=True)
    if not args.wait:
        print(f"Follow it:  lepton jobs logs {job_id} --follow   (or: lepton jobs status {job_id})")
        return 0
    from engine.jobs.jobs_command import follow_job

    return follow_job(conn, job_id)


#: How long to wait for a just-started cluster's job agent ("No available agent to submit
#: job, please try again later": the head's dashboard answers before any node's agent has
#: registered, for a few seconds after `ray start` / `make cluster-up`).
AGENT_WAIT_S = 60.0


def _submit(client: Any, **job: Any) -> str:
    import time

    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            return str(client.submit_job(**job))
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)


class _Needs:
    """What the command needs of the cluster, found while checking it here."""

    def __init__(self, project: Any) -> None:
        self.project = project
        self.run_dir: str | None = None
        self.shared_fs = False
        self.requires: dict[str, str] = {}
        #: Local paths inside the project: left out of the upload (a run root, say).
        self.inside_project: list[Any] = []
        #: (what, value) of relative local paths: fine only on a cluster on this machine.
        self.relative: list[tuple[str, str]] = []

    def path(self, value: str, what: str) -> None:
        """A path the job reads or writes: a URI, or a local path that must mean the same
        on the cluster (absolute; a relative one only when the cluster is this machine)."""
        import os

        from engine.runs.storage import Location

        if not Location.parse(value).is_local:
            return
        if not os.path.isabs(value):
            self.relative.append((what, value))
        path = self.project / value
        if path.resolve().is_relative_to(self.project):
            self.inside_project.append(path)


def _parse_command(job: list[str]) -> argparse.Namespace:
    from engine.errors import JobError

    if not job or job[0] not in COMMANDS:
        given = f"`{job[0]}`" if job else "nothing"
        raise JobError(
            f"lepton submit runs one of {', '.join(COMMANDS)}; it was given {given}.",
            hint="e.g. lepton submit --wait -- train task=vision run.dir=s3://bucket/runs",
        )
    from engine.cli import build_parser

    parser = build_parser()
    inner, extras = parser.parse_known_args(job)
    bad = [e for e in extras if e.startswith("-") or "=" not in e]
    if bad:
        raise JobError(
            f"`lepton {job[0]}` does not take {' '.join(bad)}.",
            hint=f"`lepton {job[0]} --help` lists what it takes.",
        )
    if extras:
        inner.overrides = [*inner.overrides, *extras]
    if getattr(inner, "cfg", None) or getattr(inner, "info", None):
        raise JobError(
            f"lepton {job[0]} --cfg/--info prints and exits: it has nothing to run on a cluster.",
            hint=f"Run `lepton {' '.join(job)}` here.",
        )
    return inner


def _check_command(inner: argparse.Namespace, project: Any) -> _Needs:
    """Check the command as it will run on the cluster; what it needs from the cluster."""
    import os

    from engine import __version__

    needs = _Needs(project)
    needs.requires["lepton-engine"] = __version__
    config_dir = getattr(inner, "config_dir", None)
    if config_dir is not None:
        _inside_project(config_dir, project, "--config-dir")
    saved = os.environ.pop("LEPTON_CONFIG_DIR", None)  # not sent: the job would not see it
    if saved is not None:
        print(
            "Note: LEPTON_CONFIG_DIR is not sent with the job; the command is checked as the "
            "cluster will run it (./conf, or --config-dir in the command).",
            file=sys.stderr,
        )
    try:
        config, info = _typed_config(inner, needs)
    finally:
        if saved is not None:
            os.environ["LEPTON_CONFIG_DIR"] = saved
    if config is not None:
        needs.run_dir, needs.shared_fs = str(config.run.dir), bool(config.run.shared_fs)
        needs.path(needs.run_dir, "run.dir")
    if info is not None and info.distribution:
        needs.requires[info.distribution] = info.version or "0"
    return needs


def _typed_config(inner: argparse.Namespace, needs: _Needs) -> tuple[Any, Any]:
    """(typed config, task info) of a train or tune command; (None, task info or None) for
    evaluate, whose run is read on the cluster."""
    if inner.command == "train":
        if inner.from_run is not None:
            from engine.config.from_run import load_config_from_run

            needs.path(inner.from_run, "--from")
            loaded = load_config_from_run(inner.from_run, inner.overrides)
        else:
            from engine.config.load import load_config

            loaded = load_config(inner.overrides, config_dir=inner.config_dir)
        return loaded.config, loaded.info
    if inner.command == "tune":
        from engine.tune.plan import plan_sweep

        _, cfg, info = plan_sweep(inner.overrides, config_dir=inner.config_dir)
        return cfg, info
    needs.path(inner.path, "the run to evaluate")
    if inner.output is not None:
        needs.path(inner.output, "-o")
    return None, _evaluated_task(inner.path)


def _evaluated_task(path: str) -> Any:
    """The task of the run to evaluate when it can be read from here (else the job finds out)."""
    try:
        from engine.plugins import get_registry
        from engine.runs.layout import read_config

        task = (read_config(path).get("task") or {}).get("name")
        return get_registry().get_task(str(task)) if task else None
    except Exception:  # not reachable from here, or not a run: the cluster says
        return None


def _inside_project(value: str, project: Any, what: str) -> None:
    import os
    from pathlib import Path

    from engine.errors import JobError

    if os.path.isabs(value) or not (project / value).resolve().is_relative_to(project):
        raise JobError(
            f"{what} {value} must be a relative path inside the project ({project}): only the "
            "project directory is sent with the job.",
            hint=f"Move the config dir into the project and name it relative to it "
            f"(e.g. {what} conf).",
        )
    if not Path(project / value).is_dir():
        raise JobError(f"{what} {value} is not a directory in {project}.")


def _check_cluster(conn: Any, needs: _Needs, job: list[str], project: Any) -> list[str]:
    """Refuse what the cluster cannot run, from what its Jobs API tells (no job started);
    the command to send (relative paths made absolute on a cluster on this machine)."""
    import ray

    from engine.errors import JobError
    from engine.jobs.client import node_ips, on_this_machine

    server = conn.server_ray_version
    if server and server.split(".")[:2] != ray.__version__.split(".")[:2]:
        raise JobError(
            f"The cluster at {conn.url} runs Ray {server}; this machine has Ray "
            f"{ray.__version__}. Lepton Engine needs the same Ray {ray.__version__} on both.",
            hint=f"pip install 'ray[default]=={server}' here, or set up the cluster with "
            f"Ray {ray.__version__} (cluster.yaml).",
        )
    ips = node_ips(conn) if needs.run_dir is not None or needs.relative else None
    if needs.relative:
        job = _absolute(job, needs, project, on_this_machine(ips))
    if needs.run_dir is not None and ips:
        from engine.train.cluster import ClusterResources, check_storage

        hosts = len(set(ips))
        check_storage(needs.run_dir, needs.shared_fs, ClusterResources(0, 0, len(ips), 0, 0, hosts))
    return job


def _absolute(job: list[str], needs: _Needs, project: Any, same_machine: bool) -> list[str]:
    """On a cluster on this machine a relative path means what it means here: it is sent
    absolute. Anywhere else it would be inside the job's temporary copy of the project."""
    import os

    from engine.errors import JobError

    what, value = needs.relative[0]
    if not same_machine:
        raise JobError(
            f"{what}={value} is a relative path: on the cluster it would be inside the job's "
            "temporary copy of this project, and what the job writes there is lost with it.",
            hint=f"Give {what} an object-store URI every node reaches (s3://<bucket>/runs, "
            "gs://…), or an absolute path on storage every node mounts.",
        )
    out = list(job)
    for what, value in needs.relative:
        absolute = os.path.normpath(os.path.join(project, value))
        if what == "run.dir":
            out = [t for t in out if not t.startswith("run.dir=")] + [f"run.dir={absolute}"]
            needs.run_dir = absolute
        else:
            at = next((i for i, t in enumerate(out) if i and t in (value, f"{what}={value}")), None)
            if at is not None:
                out[at] = absolute if out[at] == value else f"{what}={absolute}"
        print(f"Note: the cluster is this machine; {what} {value} is sent as {absolute}.")
    return out


def _series(version: str) -> tuple[str, ...]:
    """The compatible series: major.minor (0.x minors break, as semantic versioning has it)."""
    return tuple(version.split("+")[0].split(".")[:2])


def check_requirements(specs: list[str]) -> list[str]:
    """What this environment lacks of ``NAME=VERSION`` specs (same major.minor wanted)."""
    import importlib.metadata as md

    problems = []
    for spec in specs:
        name, _, want = spec.partition("=")
        try:
            have = md.version(name)
        except md.PackageNotFoundError:
            problems.append(f"{name} is not installed (the job needs {'.'.join(_series(want))}.x)")
            continue
        if _series(have) != _series(want):
            problems.append(
                f"{name} {have} is installed, but the job was checked against {want} "
                f"(needs {'.'.join(_series(want))}.x)"
            )
    return problems


def _main(argv: list[str]) -> int:
    """On the cluster, before the command: ``--require NAME=VERSION ...``."""
    from engine.jobs.client import MISSING_EXIT, MISSING_MARK

    parser = argparse.ArgumentParser(prog="python -m engine.jobs.submit_command")
    parser.add_argument("--require", action="append", default=[], metavar="NAME=VERSION")
    problems = check_requirements(parser.parse_args(argv).require)
    if not problems:
        return 0
    print(f"{MISSING_MARK} " + "; ".join(problems) + ".", file=sys.stderr)
    print(
        "  Install the same versions on every node (cluster.yaml's setup_commands), or send a "
        "local plugin with lepton submit --plugin-dir DIR.",
        file=sys.stderr,
    )
    return MISSING_EXIT


if __name__ == "__main__":  # pragma: no cover (runs on the cluster)
    sys.exit(_main(sys.argv[1:]))
