"""What ``lepton serve`` does: deploy, run in the foreground, and act on a running app.

- :func:`serve_models`: checks the models and settings (before Ray starts), deploys the app
  (:mod:`engine.serve.app`) on an embedded cluster or the one ``ray.address`` names, prints
  its URLs and models. Embedded, it stays in the foreground until Ctrl-C, then shuts Serve
  down and stops its cluster (no Ray process left); on a cluster, it returns.
- :func:`status`, :func:`shutdown`, :func:`update`: join the cluster the app runs on (the
  one ``ray.address`` names, else the foreground service this machine runs, found through
  :mod:`engine.serve.local_service`) and act on the app named ``serve.app_name``.
- :func:`export`: a Ray Serve config file for ``serve deploy``.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from engine.errors import ConfigError, ServeError
from engine.serve.settings import ServeConfig, ServeSettings


def _say(text: str) -> None:
    print(text, flush=True)


def serve_models(config: ServeConfig, model_args: list[str]) -> int:
    from engine.serve import local_service
    from engine.serve.app import app_spec
    from engine.serve.models import resolve_models
    from engine.serve.settings import read_token
    from engine.train.cluster import ray_cluster

    s = config.serve
    sources = resolve_models(model_args)
    token = read_token(s)
    spec = app_spec(sources, s, token)
    if s.log.dir:  # before Ray starts: a log dir that cannot be written is named now
        from engine.serve.prediction_log import check_writable

        check_writable(s.log.dir)
    embedded = config.address is None
    if embedded:
        from engine.serve.serve_env import use_throughput_mode

        local_service.check_port_free(s.host, s.port)
        use_throughput_mode(s.throughput_optimized)
    with ray_cluster(config.address) as cluster:
        _check_fits(s, len(sources), strict=cluster.embedded)
        _deploy(spec, s)
        url = f"http://{_shown_host(s.host)}:{s.port}"
        _say(f"Serving {len(sources)} model version(s) at {url}")
        for src in sources:
            metric = ", ".join(
                f"{k} {v:.4g}"
                for k, v in (src.info.get("metrics") or {}).items()
                if k.startswith("val/") and isinstance(v, (int, float))
            )
            default = " (default)" if spec["defaults"][src.name] == src.version else ""
            _say(
                f"  {src.name} v{src.version}{default}: {src.task}, {src.checkpoint}{'; ' + metric if metric else ''}"
            )
        _say(f"  V1:   POST {url}/v1/models/<name>:predict   V2: POST {url}/v2/models/<name>/infer")
        _say(
            f"  docs: {url}/docs   models: {url}/v1/models"
            + ("   (bearer token required)" if token else "")
        )
        if s.log.dir:
            _say(
                f"  log:  {s.log.dir} ({s.log.sample:.0%} of requests)   feedback: POST "
                f"{url}/v1/models/<name>/feedback   then: lepton monitor {s.log.dir}"
            )
        if not embedded:
            _say(
                f"Deployed to {config.address}; `lepton serve status` / `lepton serve shutdown` (ray.address={config.address})."
            )
            return 0
        with local_service.registered(s.app_name, url):
            _say("Press Ctrl-C to stop.")
            try:
                _wait_for_a_stop_signal()
                _say("lepton: stopping the service")
            finally:
                _shutdown_serve()
    _say("lepton: service stopped")
    return 0


def _wait_for_a_stop_signal() -> None:
    """Until SIGINT or SIGTERM (also when the shell started this with SIGINT ignored, as
    it does for a background job); a second one during the shutdown exits at once."""
    import os
    import signal

    stopped = threading.Event()

    def handle(signum: int, _frame: Any) -> None:
        if stopped.is_set():
            os._exit(128 + signum)
        stopped.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handle)
    while not stopped.wait(3600):
        pass


def _deploy(spec: dict[str, Any], s: ServeSettings) -> None:
    from ray import serve

    from engine.serve.app import build_app

    serve.start(
        http_options={"host": s.host, "port": s.port, "request_timeout_s": s.request_timeout_s}
    )
    try:
        serve.run(build_app(spec), name=s.app_name, route_prefix="/", blocking=False)
    except Exception as exc:  # a replica that cannot start: say why, not Serve's traceback
        raise ServeError(
            f"The app did not start: {_first_line(exc)}",
            hint="See the replica's log above; `lepton evaluate PATH` checks a checkpoint loads.",
        ) from None


def _shutdown_serve() -> None:
    import contextlib

    from ray import serve

    with contextlib.suppress(Exception):
        serve.shutdown()


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    for line in reversed(lines):  # Ray puts the cause last
        if "Error" in line or "error" in line:
            return line.strip()[:500]
    return (lines[0] if lines else type(exc).__name__)[:500]


def _shown_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else (f"[{host}]" if ":" in host else host)


def _check_fits(s: ServeSettings, versions: int, *, strict: bool) -> None:
    import ray

    replicas = (
        s.replicas.autoscaling.min_replicas if s.replicas.autoscaling else s.replicas.num_replicas
    )
    need_cpu = versions * max(1, replicas) * s.replicas.num_cpus
    need_gpu = versions * max(1, replicas) * s.replicas.num_gpus
    have = ray.cluster_resources()
    cpu, gpu = have.get("CPU", 0.0), have.get("GPU", 0.0)
    if need_cpu <= cpu + 1e-9 and need_gpu <= gpu + 1e-9:
        return
    message = (
        f"{versions} model version(s) x {replicas} replica(s) need {need_cpu:g} CPU and "
        f"{need_gpu:g} GPU; the cluster has {cpu:g} CPU and {gpu:g} GPU."
    )
    if strict:
        raise ConfigError(message, hint="Lower serve.replicas.num_cpus (e.g. 0.5) or num_replicas.")
    print(f"lepton: {message} Replicas wait until the cluster grows.", file=sys.stderr)


def _target(config: ServeConfig) -> str | None:
    """The cluster an action on a running app goes to: ``ray.address``, else the
    foreground service this machine runs (its embedded cluster, on loopback), else None
    when the caller is connected to Ray already."""
    from engine.serve import local_service
    from engine.train.embedded import loopback_only

    if config.address is not None:
        return config.address
    # Not `import ray` to ask: joining a cluster on loopback needs Ray's loopback switch,
    # which Ray reads when it is imported.
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        return None
    address = local_service.address_of(config.serve.app_name)
    loopback_only()
    return address


@contextmanager
def _joined(address: str | None) -> Iterator[None]:
    from engine.train.cluster import ray_cluster

    with ray_cluster(address):
        logging.getLogger("ray.serve").setLevel(logging.WARNING)  # its INFO lines are noise here
        yield


def _word(state: Any) -> str:
    """``RUNNING`` for Serve's ``ApplicationStatus.RUNNING`` (an enum, or already a str)."""
    return str(getattr(state, "value", state))


def _app_status(app_name: str) -> Any:
    from ray import serve

    app = serve.status().applications.get(app_name)
    if app is None:
        raise ServeError(
            f"No Serve app named {app_name!r} runs on this cluster.",
            hint="Start one with lepton serve PATH, or name it: serve.app_name=NAME.",
        )
    return app


def status(config: ServeConfig) -> int:
    with _joined(_target(config)):
        app = _app_status(config.serve.app_name)
        _say(f"app {config.serve.app_name}: {_word(app.status)}")
        for name, dep in sorted(app.deployments.items()):
            replicas = ", ".join(
                f"{n} {_word(state)}" for state, n in sorted(dep.replica_states.items())
            )
            _say(
                f"  {name}: {_word(dep.status)} ({replicas or 'no replicas'}){' ' + dep.message if dep.message else ''}"
            )
        for model in _running_models(config.serve.app_name):
            _say(f"  model {model['name']} v{model['version']}: {model['checkpoint']}")
    return 0


def _running_models(app_name: str) -> list[dict[str, Any]]:
    from engine.serve.app import spec_from_running

    return list(spec_from_running(*_running_parts(app_name))["models"])


def _running_parts(app_name: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The running app's spec and each version's checkpoint, asked of its replicas."""
    from ray import serve

    spec = _sync(serve.get_app_handle(app_name)).app_spec.remote().result(timeout_s=30)
    checkpoints = {}
    for m in spec["models"]:
        name = f"{m['name']}--v{m['version']}"
        handle = _sync(serve.get_deployment_handle(name, app_name=app_name))
        checkpoints[name] = handle.describe.remote().result(timeout_s=60)["info"]["checkpoint"]
    return spec, checkpoints


def _sync(handle: Any) -> Any:
    """``handle`` for blocking calls from this (loop-less) process: its router on a loop
    of its own, as Serve's throughput mode (serve_env.py) would otherwise run it on the
    caller's loop, which a command line does not have."""
    handle._init(_run_router_in_separate_loop=True)
    return handle


def shutdown(config: ServeConfig) -> int:
    with _joined(_target(config)):
        from ray import serve

        _app_status(config.serve.app_name)
        serve.delete(config.serve.app_name)
        _say(f"app {config.serve.app_name}: deleted")
    return 0


def update(config: ServeConfig, rest: list[str]) -> int:
    """Point one running model version at a new checkpoint of the same task, in place."""
    from engine.serve.app import build_app, spec_from_running
    from engine.serve.models import NAME_RE, resolve_models

    if len(rest) != 2:
        raise ConfigError(
            "lepton serve update takes NAME[:VERSION] and PATH.",
            hint="e.g. lepton serve update digits:2 runs/digits-b (a run, checkpoint or sweep dir).",
        )
    target, path = rest
    name, _, version = target.partition(":")
    if not NAME_RE.fullmatch(name) or (version and not NAME_RE.fullmatch(version)):
        raise ConfigError(f"Invalid model {target!r}.", hint="Write NAME or NAME:VERSION.")
    address = _target(config)  # first: before resolving the path imports Ray
    (source,) = resolve_models([f"{name}:{version or '0'}={path}"])
    with _joined(address):
        from ray import serve

        app_name = config.serve.app_name
        _app_status(app_name)
        spec = spec_from_running(*_running_parts(app_name))
        versions = [m for m in spec["models"] if m["name"] == name]
        if not versions:
            served = sorted({m["name"] for m in spec["models"]})
            raise ConfigError(
                f"App {app_name} serves no model {name!r}.", hint=f"It serves: {', '.join(served)}."
            )
        version = version or spec["defaults"][name]
        entry = next((m for m in versions if m["version"] == version), None)
        if entry is None:
            raise ConfigError(
                f"Model {name} has no version {version!r}.",
                hint=f"Its versions: {', '.join(m['version'] for m in versions)}.",
            )
        if entry["task"] != source.task:
            raise ConfigError(
                f"{path} is a {source.task} model; {name} v{version} serves {entry['task']}.",
                hint="A swap keeps the task: serve the new model under a name of its own.",
            )
        old = entry["checkpoint"]
        entry["checkpoint"] = source.checkpoint
        started = time.perf_counter()
        serve.run(build_app(spec), name=app_name, route_prefix="/", blocking=False)
        _say(
            f"{name} v{version}: {old} -> {source.checkpoint} ({time.perf_counter() - started:.1f} s)"
        )
    return 0


def export(config: ServeConfig, model_args: list[str], output: str, *, force: bool) -> int:
    from engine.serve.export import write_serve_config

    path = write_serve_config(config, model_args, output, force=force)
    _say(
        f"Wrote {path}: deploy it with `serve deploy {path}` (the token, if any, from "
        "LEPTON_SERVE_TOKEN or serve.token_file where the app runs)."
    )
    return 0
