"""The Ray Serve application of ``lepton serve``: its spec, its deployments, and the builder
a Serve config file (``serve deploy serve.yaml``) names.

:func:`app_spec` is everything the app is built from, as JSON: the models (name, version,
checkpoint), the checked ``serve`` settings, and the token's SHA-256 (never the token).
:func:`build_app` turns a spec into the bound application; ``lepton serve``, ``lepton serve
update`` and :func:`build_from_args` (the ``import_path`` of an exported serve.yaml) all go
through it, so each builds the very same deployments: an update that changes one model's
checkpoint changes only that deployment's user config, which Serve applies in place.

For that, every deployment gets a version of its own (:func:`code_version`): with
``serve.run`` Ray otherwise draws a random version per call and replaces every replica.
Ray keeps the ``version`` option for its own use (``Deployment.options(_internal=True,
version=...)``); it is the one private switch the engine uses here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from engine.serve.models import ModelSource, check_traffic, default_versions
from engine.serve.settings import ServeSettings, check, read_token

INGRESS = "ingress"
#: ``import_path`` of the builder, for a Serve config file.
BUILDER = "engine.serve.app:build_from_args"


def app_spec(
    sources: list[ModelSource], settings: ServeSettings, token: str | None
) -> dict[str, Any]:
    check_traffic(sources, settings.traffic or {})
    return {
        "app_name": settings.app_name,
        "models": [
            {"name": s.name, "version": s.version, "checkpoint": s.checkpoint, "task": s.task}
            for s in sources
        ],
        "serve": dataclasses.asdict(settings),
        "defaults": default_versions(sources, settings.default_version),
        "traffic": {
            name: {str(v): float(w) for v, w in split.items()}
            for name, split in (settings.traffic or {}).items()
        },
        "token_sha256": hashlib.sha256(token.encode()).hexdigest() if token else None,
    }


def settings_of(spec: dict[str, Any]) -> ServeSettings:
    from engine.config.load import _merge_into

    settings: ServeSettings = _merge_into(ServeSettings, spec["serve"], "serve.")
    return settings


def build_app(spec: dict[str, Any]) -> Any:
    """The bound Serve application for ``spec``."""
    from ray import serve

    from engine.serve.deployment import ModelServer
    from engine.serve.ingress import Ingress

    s = settings_of(spec)
    backpressure = {"status_code": s.backpressure_status, "retry_after_s": s.retry_after_s}
    queued = s.max_queued_requests
    handles: dict[str, dict[str, Any]] = {}
    for model in spec["models"]:
        scaling: dict[str, Any] = (
            {"autoscaling_config": dataclasses.asdict(s.replicas.autoscaling)}
            if s.replicas.autoscaling is not None
            else {"num_replicas": s.replicas.num_replicas}
        )
        batch = s.batch.max_batch_size if s.batch.enabled else 1
        wait = s.batch.wait_timeout_s if s.batch.enabled else 0.0
        log_settings = dataclasses.asdict(s.log) if s.log.dir else None
        init_args = (model["name"], str(model["version"]), s.device, batch, wait, log_settings)
        deployment = serve.deployment(ModelServer).options(  # type: ignore[attr-defined]
            name=f"{model['name']}--v{model['version']}",
            # A version of our own, not Serve's random one per serve.run: redeploying with
            # only the user config changed (a new checkpoint) then reconfigures the running
            # replicas in place. Ray accepts it only with _internal=True (see module doc).
            _internal=True,
            version=code_version(init_args),
            ray_actor_options={"num_cpus": s.replicas.num_cpus, "num_gpus": s.replicas.num_gpus},
            max_ongoing_requests=s.max_ongoing_requests,
            max_queued_requests=queued,
            backpressure_config=backpressure,
            user_config={"checkpoint": model["checkpoint"]},
            graceful_shutdown_timeout_s=5,
            graceful_shutdown_wait_loop_s=0.5,
            health_check_period_s=2,
            **scaling,
        )
        handles.setdefault(model["name"], {})[str(model["version"])] = deployment.bind(*init_args)
    ingress_spec = {
        "app_name": spec["app_name"],
        "models": [{k: m[k] for k in ("name", "version", "task")} for m in spec["models"]],
        "serve": spec["serve"],
        "defaults": spec["defaults"],
        "traffic": spec["traffic"],
        "tasks": {m["name"]: m["task"] for m in spec["models"]},
        "limits": dataclasses.asdict(s.limits),
        "token_sha256": spec.get("token_sha256"),
        "retry_after_s": s.retry_after_s,
        "backpressure_status": s.backpressure_status,
        "auth": bool(spec.get("token_sha256")),
    }
    ingress = serve.deployment(Ingress).options(  # type: ignore[attr-defined]
        name=INGRESS,
        _internal=True,
        version=code_version(ingress_spec),
        num_replicas=1,
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=max(256, 4 * s.max_ongoing_requests),
        max_queued_requests=queued,
        backpressure_config=backpressure,
        graceful_shutdown_timeout_s=5,
        graceful_shutdown_wait_loop_s=0.5,
    )
    return ingress.bind(handles, ingress_spec)


def code_version(args: Any) -> str:
    """A deployment's version: the engine's version, the serving code and the deployment's
    init arguments (never a checkpoint path: that is user config)."""
    from pathlib import Path

    from engine import __version__

    digest = hashlib.sha256(__version__.encode())
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.read_bytes())
    digest.update(json.dumps(args, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def spec_from_running(ingress_spec: dict[str, Any], checkpoints: dict[str, str]) -> dict[str, Any]:
    """The full spec of a running app: its ingress's spec plus each model deployment's
    current checkpoint (``checkpoints``: deployment name → checkpoint)."""
    models = [
        {**m, "checkpoint": checkpoints[f"{m['name']}--v{m['version']}"]}
        for m in ingress_spec["models"]
    ]
    keys = ("app_name", "serve", "defaults", "traffic", "token_sha256")
    return {**{k: ingress_spec.get(k) for k in keys}, "models": models}


def build_from_args(args: dict[str, Any]) -> Any:
    """The application builder a Serve config file names (``lepton serve --export``):
    ``args`` = ``{"models": ["NAME:VERSION=PATH", ...], "serve": {...}}``. The token, if
    any, is read where the app is built (``LEPTON_SERVE_TOKEN`` or ``serve.token_file`` on
    the cluster), never written into the file."""
    from engine.serve.models import resolve_models

    settings = settings_of({"serve": args.get("serve") or {}})
    check(settings)
    sources = resolve_models([str(m) for m in args.get("models") or []])
    return build_app(app_spec(sources, settings, read_token(settings)))
