"""9. Cluster submission: `lepton submit` against `ray job submit` of the same command line,
from the submit command's start to the job's first training step, on the local multi-node
cluster (``python -m engine.jobs.local_cluster``: a head and two worker nodes, token auth).

Both variants run ``python -m engine.cli train ...`` with the same arguments (only
``run.name`` differs) in the same uploaded project directory; ``lepton submit`` adds what
it always does (the overrides checked on this machine, the upload pre-flight, the
cluster's Ray version and nodes asked, the on-cluster requirements check before the
command). Both are started without waiting (``lepton submit`` without ``--wait``, ``ray
job submit --no-wait``) and their jobs followed the same way from here: the Jobs API's
``GET /api/jobs/<id>/logs`` (what ``JobSubmissionClient.get_job_logs`` calls) every 0.2 s,
with the token, by the standard library, so that the observer costs both the same."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil

from bench.core import BenchResult, Context, Row, median, target_status
from bench.proc import stop_group
from bench.registry import register

GOAL_S = 1.0  # lepton − ray, submit command start to first training step
POLL_S = 0.2  # the job's log, polled as `lepton jobs logs --follow` / a user would
STATUS_EVERY = 5  # polls between two status checks before the first step (1 s)
NO_AGENT = "No available agent to submit job"  # the Jobs API's 500 before its agent is up
AGENT_WAIT_S = 60.0  # how long the warm-up retries such a refusal
SETTLE_S = 2.0  # after a job ends, before the next submission (its workers go)
LEPTON, RAY, WARMUP = "lepton", "ray", "warmup"
LABELS = {LEPTON: "`lepton submit`", RAY: "`ray job submit`"}
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
#: What the submit command prints once the Jobs API accepted the job.
SUBMITTED = {
    LEPTON: re.compile(r"Submitted job (\S+)"),
    RAY: re.compile(r"Job '([^']+)' submitted successfully"),
}
#: Lines of the job's log, in the order they come: `lepton train`'s start line (driver),
#: rank 0's line at its first optimizer step (`trainer.log_every_n_steps=1`, forwarded by
#: Ray from the Train worker: `(RayTrainWorker pid=...) [lepton] epoch 1 step 1 loss ...`),
#: the driver's epoch line (`epoch 1/1  train/loss ...`).
MARKS = {
    "training_line": re.compile(r"^Training \S+ in ", re.M),
    "first_step": re.compile(r"\[lepton\] epoch 1 step 1 loss"),
    "epoch_line": re.compile(r"^epoch 1/1\b", re.M),
}
#: The project uploaded as the job's working directory (both variants): as a user's.
PROJECT_FILES = {"notes.txt": "a small project: the job's working directory\n"}
#: The job's environment: what `lepton submit` sends, given to `ray job submit` too. Without
#: it the job's driver (stdout a file) holds the worker lines Ray forwards in its buffer.
RUNTIME_ENV = {"env_vars": {"PYTHONUNBUFFERED": "1"}}
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class SubmitRun:
    variant: str
    pair: int
    position: int  # 0: first of its pair
    cmd: list[str]
    log_path: Path
    run_dir: Path
    started: float = 0.0  # time.time() just before the submit command was launched
    job_id: str | None = None
    id_line_at: float | None = None  # the submit command printed the job id
    exited_at: float | None = None  # the submit command exited
    returncode: int | None = None
    created_at: float | None = None  # the job's start_time on the server (it was accepted)
    ended_at: float | None = None  # the job's end_time
    status: str | None = None
    seen: dict[str, float] = field(default_factory=dict)  # MARKS key -> poll that saw it
    late: list[str] = field(default_factory=list)  # marks first seen after the job ended
    epochs_started: float | None = None  # the run's timing.json: rank 0 starts the epochs
    polls: int = 0
    error: str | None = None
    marks: dict[str, re.Pattern[str]] = field(default_factory=lambda: dict(MARKS))

    @property
    def ok(self) -> bool:
        return self.error is None and self.status == "SUCCEEDED" and "first_step" in self.seen

    def look(self, text: str, at: float, late: bool = False) -> None:
        """Stamp the marks first found in ``text`` (the whole log so far) with ``at``."""
        for name, pattern in self.marks.items():
            if name not in self.seen and pattern.search(text):
                self.seen[name] = at
                if late:
                    self.late.append(name)

    def since(self, at: float | None) -> float | None:
        return None if at is None or not self.started else at - self.started

    def span(self, start: str, end: str) -> float | None:
        a, b = self.point(start), self.point(end)
        return None if a is None or b is None else b - a

    def point(self, name: str) -> float | None:
        if name == "start":
            return self.started or None
        if name in MARKS:
            return self.seen.get(name)
        value = getattr(self, name)
        return float(value) if value is not None else None

    def summary(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "pair": self.pair,
            "position": self.position,
            "cmd": self.cmd,
            "log": str(self.log_path),
            "run_dir": str(self.run_dir),
            "job_id": self.job_id,
            "status": self.status,
            "returncode": self.returncode,
            "polls": self.polls,
            "error": self.error,
            "late": self.late,
            "since_start_s": {
                name: self.since(self.point(name))
                for name in (
                    "id_line_at",
                    "exited_at",
                    "created_at",
                    *MARKS,
                    "epochs_started",
                    "ended_at",
                )
            },
        }


#: (metric, start point, end point, note): phases shown for both variants.
PHASES = (
    (
        "submit start to the job accepted",
        "start",
        "created_at",
        "this machine: checks, packing, upload; the job's `start_time` on the server",
    ),
    (
        "submit start to the job id printed",
        "start",
        "id_line_at",
        "the submit command's own output",
    ),
    ("submit start to the submit command's exit", "start", "exited_at", ""),
    (
        "job accepted to `Training ... in` seen",
        "created_at",
        "training_line",
        "the cluster: runtime env, the job's driver (for lepton the requirements check "
        "first), `lepton train` to its run dir",
    ),
    (
        "job accepted to the first step seen",
        "created_at",
        "first_step",
        "the cluster's share of the total",
    ),
    (
        "submit start to the epochs started (run dir)",
        "start",
        "epochs_started",
        "rank 0's `epochs_started` in the run's timing.json: no log forwarding involved",
    ),
    (
        "submit start to the `epoch 1/1` line seen",
        "start",
        "epoch_line",
        "the driver's epoch line, after the epoch",
    ),
    ("job accepted to the job's end", "created_at", "ended_at", "the whole job on the cluster"),
)


@register(9, "submit", "Cluster jobs: `lepton submit` against `ray job submit`, to first step")
def submit(ctx: Context) -> BenchResult:
    """Time from the submit command's start to the job's first training step (its line in
    the job's log, polled every 0.2 s) on the local 3-node cluster, `lepton submit -- train
    ...` against `ray job submit -- python -m engine.cli train ...` with the same arguments
    and working directory, in alternating pairs; goal: lepton within 1 s of Ray."""
    s = ctx.settings
    base = s.workdir / "submit"
    project, runs, state_dir = base / "project", base / "runs", base / "cluster"
    (project / "conf").mkdir(parents=True, exist_ok=True)
    for name, text in PROJECT_FILES.items():
        (project / name).write_text(text, encoding="utf-8")
    runs.mkdir(parents=True, exist_ok=True)
    env = _client_base_env(ctx)
    result = BenchResult()
    done: list[SubmitRun] = []
    cluster: dict[str, Any] = {}
    warmup: dict[str, Any] = {}
    job_timeout = min(300.0, s.timeout_s)
    try:
        cluster = _cluster_up(ctx, state_dir, env, base)
        if "error" in cluster:
            result.status, result.error = "failed", cluster["error"]
            return result
        env.update(
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN_PATH=cluster["token_path"],
        )
        url, token = cluster["url"], cluster["token"]
        warmup = _warmup(ctx, url, token, project, env, base, job_timeout)
        for pair in range(s.pairs):
            order = (LEPTON, RAY) if pair % 2 == 0 else (RAY, LEPTON)
            for position, variant in enumerate(order):
                run = _make_run(ctx, variant, pair, position, url, base)
                _submit_and_follow(run, url, token, project, env, job_timeout)
                done.append(run)
                ctx.log(f"  pair {pair + 1} {variant:6} {_describe(run)}")
                time.sleep(SETTLE_S)
    finally:
        cluster["down"] = _cluster_down(ctx, state_dir, env, cluster.get("temp_dir"))

    _rows(result, done)
    _notes(ctx, result, done, cluster, warmup)
    result.details = {
        "cluster": {k: v for k, v in cluster.items() if k != "token"},
        "warmup": warmup,
        "runs": [r.summary() for r in done],
        "training": _training_overrides(ctx),
        "runtime_env": RUNTIME_ENV,
    }
    if not _pairs(done):
        result.status = "failed"
        result.error = "no pair of successful submissions: " + "; ".join(
            f"{r.variant} pair {r.pair + 1}: {r.error or r.status}" for r in done if not r.ok
        )
    return result


# -- the cluster ----------------------------------------------------------------------


def _client_base_env(ctx: Context) -> dict[str, str]:
    """A client that knows only what this benchmark gives it: no other cluster's address or
    token (the cluster's token is added once it is up)."""
    env = {k: v for k, v in ctx.subprocess_env().items() if not k.startswith("RAY_")}
    env.pop("LEPTON_CONFIG_DIR", None)
    return env


def _cluster_up(ctx: Context, state_dir: Path, env: dict[str, str], base: Path) -> dict[str, Any]:
    s = ctx.settings
    ctx.log(
        f"starting the local cluster (python -m engine.jobs.local_cluster up --dir {state_dir})"
    )
    # The nodes' environment is what every job inherits: not the benchmark's PYTHONPATH nor
    # its PYTHONUNBUFFERED (a job gets that only from its runtime_env, as on a real cluster).
    nodes_env = {k: v for k, v in env.items() if k not in ("PYTHONPATH", "PYTHONUNBUFFERED")}
    started = time.perf_counter()
    try:
        out = subprocess.run(
            [s.python, "-m", "engine.jobs.local_cluster", "up", "--dir", str(state_dir)],
            cwd=base,
            env=nodes_env,
            capture_output=True,
            text=True,
            timeout=min(300.0, s.timeout_s),
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": "`local_cluster up` did not finish in time"}
    took = time.perf_counter() - started
    (base / "cluster-up.log").write_text(out.stdout + out.stderr, encoding="utf-8")
    state_path = state_dir / "cluster.json"
    if out.returncode != 0 or not state_path.is_file():
        tail = (out.stdout + out.stderr).strip()[-1500:]
        return {"error": f"`local_cluster up` failed (exit {out.returncode}): {tail}"}
    state = json.loads(state_path.read_text(encoding="utf-8"))
    token = Path(state["token_path"]).read_text(encoding="utf-8").strip()
    nodes = ", ".join(f"{n['name']} {n['cpus']} CPU" for n in state.get("nodes", []))
    ctx.log(f"  up in {took:.1f} s: {nodes}; Jobs API {state['dashboard_url']}")
    return {
        "url": state["dashboard_url"],
        "token": token,
        "token_path": state["token_path"],
        "temp_dir": state["temp_dir"],
        "nodes": state.get("nodes", []),
        "up_s": took,
    }


def _cluster_down(
    ctx: Context, state_dir: Path, env: dict[str, str], temp_dir: str | None
) -> dict[str, Any]:
    """Stop the cluster (its own processes only); what still names its temp dir after."""
    s = ctx.settings
    if not (state_dir / "cluster.json").is_file():
        return {"skipped": "no state file"}
    started = time.perf_counter()
    clean = {k: v for k, v in env.items() if not k.startswith("RAY_")}
    try:
        out = subprocess.run(
            [s.python, "-m", "engine.jobs.local_cluster", "down", "--dir", str(state_dir)],
            env=clean,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        text, code = (out.stdout + out.stderr).strip(), out.returncode
    except subprocess.TimeoutExpired:
        text, code = "timed out", None
    left = _naming(temp_dir) if temp_dir else []
    took = time.perf_counter() - started
    ctx.log(
        f"  cluster down in {took:.1f} s (exit {code}): {text.splitlines()[-1] if text else ''}"
        + (f"; {len(left)} process(es) still name its temp dir" if left else "")
    )
    return {"down_s": took, "returncode": code, "output": text[-1000:], "left": left[:10]}


def _naming(temp_dir: str) -> list[str]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            cmd = " ".join(proc.info.get("cmdline") or [])
            if temp_dir in cmd:
                found.append(f"{proc.pid}: {cmd[:160]}")
    return found


# -- one submission -------------------------------------------------------------------


def _training_overrides(ctx: Context) -> list[str]:
    """Tiny training: the benchmark workload, 1 epoch, 1 worker, rank 0's line per step."""
    w = replace(ctx.settings.workload, epochs=1, num_workers=1)
    return [*w.lepton_overrides(), "trainer.log_every_n_steps=1"]


def _make_run(
    ctx: Context, variant: str, pair: int, position: int, url: str, base: Path
) -> SubmitRun:
    name = f"{variant}-{pair + 1}"
    cmd = _command(ctx, variant, url, base, name)
    return SubmitRun(variant, pair, position, cmd, base / f"{name}.log", base / "runs" / name)


def _command(ctx: Context, variant: str, url: str, base: Path, name: str) -> list[str]:
    """The submit command line of ``variant`` for the run named ``name``."""
    s = ctx.settings
    project, runs = base / "project", base / "runs"
    train = ["train", *_training_overrides(ctx), f"run.dir={runs}", f"run.name={name}"]
    if variant == LEPTON:
        return [*s.lepton, "submit", "--address", url, "--", *train]
    ray = Path(s.python).parent / "ray"
    return [
        str(ray) if ray.exists() else "ray",
        "job",
        "submit",
        "--address",
        url,
        "--working-dir",
        str(project),  # the project: lepton's is the directory it runs in, this one
        "--runtime-env-json",
        json.dumps(RUNTIME_ENV),
        "--no-wait",
        "--",
        "python",
        "-m",
        "engine.cli",
        *train,
    ]


def _submit_and_follow(
    run: SubmitRun,
    url: str,
    token: str,
    project: Path,
    env: dict[str, str],
    timeout_s: float,
) -> None:
    """Launch the submit command; follow the job's log until its first step, then to its end."""
    got_id = threading.Event()
    run.started = time.time()
    deadline = time.monotonic() + timeout_s
    log = open(run.log_path, "w", encoding="utf-8")  # noqa: SIM115 (closed by the reader)
    try:
        proc = subprocess.Popen(
            run.cmd,
            cwd=project,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
    except OSError as exc:
        log.close()
        run.error = f"could not start {run.cmd[0]}: {exc}"
        return
    reader = threading.Thread(target=_read_output, args=(run, proc, log, got_id), daemon=True)
    reader.start()
    try:
        while not got_id.wait(0.05):
            if proc.poll() is not None:
                reader.join(5)
                if run.job_id is None:
                    tail = " | ".join(_tail(run.log_path, 6))
                    run.error = f"the submit command exited ({proc.returncode}), no job id: {tail}"
                    return
                break
            if time.monotonic() > deadline:
                run.error = "no job id before the timeout"
                return
        assert run.job_id is not None
        _follow(run, url, token, deadline)
    finally:
        _end(proc)
        reader.join(5)
        run.returncode = proc.returncode
        if run.exited_at is None:
            run.exited_at = time.time()
        _read_epochs_started(run)


def _read_output(
    run: SubmitRun, proc: subprocess.Popen[str], log: Any, got_id: threading.Event
) -> None:
    pattern = SUBMITTED[LEPTON if run.variant == LEPTON else RAY]  # the warm-up: Ray's CLI
    with log:
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.time()
            log.write(f"[+{now - run.started:7.3f}] {line}")
            if run.job_id is None and (found := pattern.search(line)):
                run.job_id, run.id_line_at = found.group(1), now
                got_id.set()
        proc.wait()
        run.exited_at = time.time()
        log.write(f"[+{run.exited_at - run.started:7.3f}] (exit {proc.returncode})\n")


def _tail(path: Path, lines: int) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [line.strip()[:300] for line in text.strip().splitlines()[-lines:]]


def _end(proc: subprocess.Popen[str]) -> None:
    """The submit command has exited by now (neither waits on the job); else it is ended."""
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        stop_group(proc)


def _follow(run: SubmitRun, url: str, token: str, deadline: float) -> None:
    """Poll the job's log every POLL_S until every mark was seen (each stamped with the
    answer's arrival), then its status until it ends."""
    job = f"{url}/api/jobs/{run.job_id}"
    status = None
    while len(run.seen) < len(run.marks):
        tick = time.monotonic()
        text = _logs(job, token)
        run.polls += 1
        run.look(text, time.time())
        if run.polls % STATUS_EVERY == 0:
            status = _status(run, job, token)
            if status in TERMINAL:
                run.look(_logs(job, token), time.time(), late=True)  # what came with the end
                break
        if time.monotonic() > deadline:
            run.error = "the job did not reach its first step before the timeout"
            _stop_job(job, token)
            break
        time.sleep(max(0.0, POLL_S - (time.monotonic() - tick)))
    while status not in TERMINAL:
        if time.monotonic() > deadline:
            run.error = run.error or "the job did not end before the timeout"
            _stop_job(job, token)
            break
        time.sleep(0.5)
        status = _status(run, job, token)
    if status is not None and status != "SUCCEEDED" and run.error is None:
        text = _logs(job, token)
        run.error = f"job {status}: " + " | ".join(text.strip().splitlines()[-5:])[-600:]


def _logs(job: str, token: str) -> str:
    """The job's whole log so far (``JobSubmissionClient.get_job_logs``'s request)."""
    return str((_get_json(f"{job}/logs", token) or {}).get("logs") or "")


def _status(run: SubmitRun, job: str, token: str) -> str | None:
    info = _get_json(job, token)
    if not info:
        return None
    run.status = str(info.get("status"))
    if info.get("start_time"):
        run.created_at = float(info["start_time"]) / 1000.0
    if info.get("end_time"):
        run.ended_at = float(info["end_time"]) / 1000.0
    return run.status


def _read_epochs_started(run: SubmitRun) -> None:
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError, IndexError):
        data = json.loads((run.run_dir / "timing.json").read_text(encoding="utf-8"))
        run.epochs_started = float(data["attempts"][0]["epochs_started"])


def _get_json(url: str, token: str, timeout: float = 10.0) -> dict[str, Any] | None:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with _NO_PROXY.open(request, timeout=timeout) as response:
            data: dict[str, Any] = json.loads(response.read())
            return data
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _stop_job(job: str, token: str) -> None:
    request = urllib.request.Request(
        f"{job}/stop", data=b"", method="POST", headers={"Authorization": f"Bearer {token}"}
    )
    with contextlib.suppress(urllib.error.URLError, OSError):
        _NO_PROXY.open(request, timeout=10).close()


def _warmup(
    ctx: Context,
    url: str,
    token: str,
    project: Path,
    env: dict[str, str],
    base: Path,
    timeout_s: float,
) -> dict[str, Any]:
    """One untimed job first, the baseline's command line (run.name=warmup-1): the first
    training job of a fresh cluster took about 1.4 s more from its acceptance to its first
    step than the ones after it (whichever variant it was), which would otherwise fall on
    the first variant of pair 1. A fresh cluster's Jobs API may also refuse a job (500, no
    agent) for a moment after ``local_cluster up`` returns: the warm-up retries that."""
    cmd = _command(ctx, RAY, url, base, f"{WARMUP}-1")
    started = time.perf_counter()
    tries = 0
    while True:  # a fresh cluster's Jobs API may refuse a job until its agent has registered
        tries += 1
        log = base / f"warmup-{tries}.log"
        run = SubmitRun(WARMUP, -1, 0, cmd, log, base / "runs" / f"{WARMUP}-{tries}", marks={})
        cmd = [*cmd[:-1], f"run.name={WARMUP}-{tries + 1}"]  # a retry: a fresh run name
        _submit_and_follow(run, url, token, project, env, timeout_s)  # no marks: only its end
        refused = run.job_id is None and any(NO_AGENT in line for line in _tail(log, 40))
        if not refused or time.perf_counter() - started > AGENT_WAIT_S:
            break
        time.sleep(1.0)
    took = time.perf_counter() - started
    ctx.log(
        f"  warm-up job (`ray job submit`, the same training): {run.status or run.error} in "
        f"{took:.1f} s" + (f", after {tries - 1} refusal(s): {NO_AGENT!r}" if tries > 1 else "")
    )
    return {
        "status": run.status,
        "error": run.error,
        "s": took,
        "job_id": run.job_id,
        "refused": tries - 1,
    }


# -- results --------------------------------------------------------------------------


def _of(runs: list[SubmitRun], variant: str) -> list[SubmitRun]:
    return [r for r in runs if r.variant == variant and r.ok]


def _pairs(runs: list[SubmitRun]) -> list[tuple[SubmitRun, SubmitRun]]:
    by = {(r.variant, r.pair): r for r in runs if r.ok}
    pairs = sorted({r.pair for r in runs})
    return [(by[(LEPTON, p)], by[(RAY, p)]) for p in pairs if (LEPTON, p) in by and (RAY, p) in by]


def _first_step(run: SubmitRun) -> float | None:
    return run.since(run.seen.get("first_step"))


def _rows(result: BenchResult, runs: list[SubmitRun]) -> None:
    pairs = _pairs(runs)
    lepton = median(_first_step(r) for r in _of(runs, LEPTON))
    ray = median(_first_step(r) for r in _of(runs, RAY))
    deltas = [d for a, b in pairs if (d := _delta(_first_step(a), _first_step(b))) is not None]
    diff = median(deltas)
    result.rows.append(
        Row(
            "`lepton submit`: submit start to the job's first training step",
            lepton,
            "s",
            "`ray job submit`, same command line",
            ray,
            None if lepton is None or not ray else lepton / ray,
            note=f"medians over {len(_of(runs, LEPTON))} / {len(_of(runs, RAY))} runs; rank 0's "
            "`epoch 1 step 1` line seen in the job's log (polled every 0.2 s)",
        )
    )
    result.rows.append(
        Row(
            "first training step: `lepton submit` − `ray job submit`",
            diff,
            "s",
            target=f"<= {GOAL_S:g} s",
            status=target_status(None if diff is None else diff <= GOAL_S),
            note=f"median of {len(deltas)} per-pair difference(s): "
            + ", ".join(f"{d:+.2f}" for d in deltas),
        )
    )
    for metric, start, end, note in PHASES:
        a = median(r.span(start, end) for r in _of(runs, LEPTON))
        b = median(r.span(start, end) for r in _of(runs, RAY))
        per_pair = [
            d for x, y in pairs if (d := _delta(x.span(start, end), y.span(start, end))) is not None
        ]
        d = median(per_pair)
        result.rows.append(
            Row(
                metric,
                a,
                "s",
                LABELS[RAY],
                b,
                None if a is None or not b else a / b,
                note=("" if d is None else f"lepton − ray {d:+.2f} s (median per pair)")
                + ("; " if d is not None and note else "")
                + note,
            )
        )


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _describe(run: SubmitRun) -> str:
    if not run.ok:
        return f"FAILED: {run.error or run.status} (log: {run.log_path})"
    parts = [
        f"first step {_first_step(run):.2f} s",
    ]
    if (t := run.since(run.created_at)) is not None:
        parts.append(f"accepted {t:.2f} s")
    if (t := run.since(run.seen.get("training_line"))) is not None:
        parts.append(f"`Training` line {t:.2f} s")
    if (t := run.since(run.epochs_started)) is not None:
        parts.append(f"epochs started (run dir) {t:.2f} s")
    if (t := run.since(run.ended_at)) is not None:
        parts.append(f"job ended {t:.1f} s")
    return ", ".join(parts) + f" ({run.job_id})"


def _notes(
    ctx: Context,
    result: BenchResult,
    runs: list[SubmitRun],
    cluster: dict[str, Any],
    warmup: dict[str, Any],
) -> None:
    notes = result.notes
    pairs = _pairs(runs)
    lepton = median(_first_step(r) for r in _of(runs, LEPTON))
    ray = median(_first_step(r) for r in _of(runs, RAY))
    deltas = [d for a, b in pairs if (d := _delta(_first_step(a), _first_step(b))) is not None]
    diff = median(deltas)
    if diff is not None and lepton is not None and ray is not None:
        met = "met" if diff <= GOAL_S else "MISSED"
        notes.append(
            f"Goal (`lepton submit` within {GOAL_S:g} s of `ray job submit`, submit start to "
            f"the first training step): {met}; median difference {diff:+.2f} s over "
            f"{len(deltas)} pair(s); medians lepton {lepton:.2f} s, ray {ray:.2f} s."
        )
    shown = []
    for p in sorted({r.pair for r in runs}):
        cells = []
        for r in sorted((r for r in runs if r.pair == p), key=lambda r: r.position):
            value = _first_step(r) if r.ok else None
            cells.append(f"{r.variant} {'FAILED' if value is None else f'{value:.2f} s'}")
        pair = next(((a, b) for a, b in pairs if a.pair == p), None)
        d = None if pair is None else _delta(_first_step(pair[0]), _first_step(pair[1]))
        shown.append(
            f"pair {p + 1}: " + ", ".join(cells) + ("" if d is None else f" (diff {d:+.2f} s)")
        )
    if shown:
        notes.append(
            "Submit start to first step, per pair, in run order: " + "; ".join(shown) + "."
        )
    overrides = " ".join(_training_overrides(ctx))
    notes.append(
        "Commands (run in the project directory, a `conf/` and a text file): `lepton submit "
        "--address URL -- train ARGS` against `ray job submit --address URL --working-dir DIR "
        f"--runtime-env-json '{json.dumps(RUNTIME_ENV)}' --no-wait -- python -m engine.cli train "
        f"ARGS`, ARGS = `{overrides} run.dir=<absolute> run.name=<variant>-<pair>`. Lepton's "
        "job runs `python -m engine.jobs.submit_command --require ... && python -m engine.cli "
        "train ARGS`. The same PYTHONUNBUFFERED=1 in both jobs' environment (lepton sends it; "
        "without it the job's driver, whose stdout is a file, holds the worker lines Ray "
        "forwards in its buffer). Neither command waits on the job: both jobs are followed "
        "from here the same way, GET /api/jobs/<id>/logs every 0.2 s with the token (what "
        "JobSubmissionClient.get_job_logs calls), a line stamped when the answer that first "
        "holds it arrives."
    )
    nodes = ", ".join(f"{n['name']} {n['cpus']} CPU" for n in cluster.get("nodes", []))
    down = cluster.get("down") or {}
    notes.append(
        f"Cluster: `python -m engine.jobs.local_cluster up` ({nodes or 'n/a'}; token auth; "
        f"up in {cluster.get('up_s', 0):.1f} s, down in {down.get('down_s', 0):.1f} s, "
        f"{len(down.get('left') or [])} process(es) naming its temp dir left after). One "
        "untimed warm-up job first (the `ray job submit` command line, run.name=warmup-1; "
        f"{warmup.get('status')} in "
        f"{warmup.get('s', 0):.1f} s"
        + (
            f", after {warmup['refused']} refusal(s) by the fresh cluster: {NO_AGENT!r}"
            if warmup.get("refused")
            else ""
        )
        + f"). Pairs alternate the order (lepton first in odd pairs); "
        f"{SETTLE_S:g} s pause after each job ends. Every process (the cluster's three nodes, "
        f"the job, the submit command, this poller) shares this machine's {os.cpu_count()} "
        "cores."
    )
    late = [f"{r.variant} pair {r.pair + 1}: {', '.join(r.late)}" for r in runs if r.late]
    if late:
        notes.append("Seen only after the job had ended: " + "; ".join(late) + ".")
    for r in runs:
        if not r.ok:
            notes.append(
                f"FAILED: {LABELS.get(r.variant, r.variant)} pair {r.pair + 1}: "
                f"{r.error or r.status} (log: {r.log_path})"
            )
