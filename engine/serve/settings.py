"""The ``serve`` config node, typed and checked (``conf/serve/default.yaml`` documents it).

``lepton serve`` composes its own root config (``conf/serving.yaml``: the ``serve`` group
and ``ray.address``), so serving needs no task or trainer config. Ray Serve accepts
unknown keys in its own config without a word; here every key is a dataclass field, and a
misspelt one is a :class:`~engine.errors.ConfigError` naming the keys allowed.

The bearer token is never part of the config: it comes from ``LEPTON_SERVE_TOKEN`` or the
file ``serve.token_file`` names (:func:`read_token`), so it shows in no command line,
config dump or log.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ConfigError

TOKEN_ENV = "LEPTON_SERVE_TOKEN"
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class BatchSettings:
    enabled: bool = True
    max_batch_size: int = 32
    wait_timeout_s: float = 0.005


@dataclass
class AutoscalingSettings:
    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 2.0


@dataclass
class ReplicaSettings:
    num_replicas: int = 1
    autoscaling: AutoscalingSettings | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0


@dataclass
class LimitSettings:
    max_instances: int = 256
    max_body_bytes: int = 8 * 1024 * 1024
    max_image_bytes: int = 4 * 1024 * 1024
    max_image_pixels: int = 4 * 1024 * 1024


@dataclass
class LogSettings:
    """The prediction log (:mod:`engine.serve.prediction_log`); ``dir`` None: off."""

    #: A local path or an object-store URI (as ``run.dir``); None: no log, no feedback.
    dir: str | None = None
    #: The fraction of requests logged (each request whole, or not at all).
    sample: float = 1.0
    #: Also log each raw input (images as sent: base64); off by default.
    inputs: bool = False
    #: A replica writes a new file every ``flush_s`` seconds, ``batch`` records or
    #: ``max_file_mb`` MiB of JSON lines, whichever comes first.
    flush_s: float = 10.0
    batch: int = 1000
    max_file_mb: float = 16.0
    #: Requests waiting for the log's thread per replica (their inputs held in memory);
    #: beyond it requests are left out of the log (counted in the replica's log lines),
    #: never held on the request path.
    queue: int = 2000
    #: Recent logged request ids the ingress remembers for feedback (older ones are
    #: looked up in the log's files).
    index_size: int = 100000


@dataclass
class ServeSettings:
    app_name: str = "lepton"
    host: str = "127.0.0.1"
    port: int = 8000
    allow_unauthenticated: bool = False
    token_file: str | None = None
    device: str = "auto"
    batch: BatchSettings = field(default_factory=BatchSettings)
    replicas: ReplicaSettings = field(default_factory=ReplicaSettings)
    max_queued_requests: int = 100
    backpressure_status: int = 503
    retry_after_s: float = 1.0
    limits: LimitSettings = field(default_factory=LimitSettings)
    request_timeout_s: float = 60.0
    # None in the YAML (a value Hydra lets an override replace with a map), {} after check.
    traffic: dict[str, dict[Any, Any]] | None = None
    default_version: dict[str, str] | None = None
    log: LogSettings = field(default_factory=LogSettings)
    #: Ray Serve's throughput mode on the cluster `lepton serve` starts itself
    #: (engine/serve/serve_env.py); a joined cluster keeps its own environment.
    throughput_optimized: bool = True

    @property
    def max_ongoing_requests(self) -> int:
        """Per replica: enough for a full batch to gather (Serve's default of 5 would cap
        every batch at 5), one more batch queued behind the running one, and at least 32."""
        # Without batching too: requests beyond it wait in the caller's router, which
        # retries with a growing back-off (up to 0.5 s) rather than queue at the replica.
        return max(32, 2 * self.batch.max_batch_size) if self.batch.enabled else 32


@dataclass
class ServeConfig:
    serve: ServeSettings
    #: ``ray.address`` (or ``RAY_ADDRESS``): deploy there and return; None: embedded.
    address: str | None


def load_serve_config(overrides: list[str], config_dir: str | None = None) -> ServeConfig:
    """Compose ``conf/serving.yaml`` with ``overrides`` and check every ``serve.*`` key."""
    from omegaconf import OmegaConf

    from engine.config.compose import compose_over
    from engine.config.load import _merge_into
    from engine.config.project import search_dirs
    from engine.plugins import get_registry

    registry = get_registry()
    bad = [o for o in overrides if not _serve_key(o)]
    if bad:
        raise ConfigError(
            f"lepton serve takes serve.* and ray.address overrides only, not {bad[0]!r}.",
            hint="e.g. serve.port=8100 serve.batch.max_batch_size=16 (see conf/serve/default.yaml).",
        )
    for override in overrides:
        _check_key(override.lstrip("+~").split("=", 1)[0])
    cfg = compose_over(
        search_dirs(registry, config_dir), overrides, registry, config_name="serving"
    )
    extra = sorted(set(map(str, cfg)) - {"serve", "ray"})
    if extra:
        raise ConfigError(f"Unknown config key {extra[0]!r} for lepton serve.")
    settings: ServeSettings = _merge_into(ServeSettings, cfg.get("serve") or {}, "serve.")
    check(settings)
    ray_node: Any = OmegaConf.to_container(cfg.get("ray") or {}) or {}
    unknown = sorted(set(ray_node) - {"address"})
    if unknown:
        raise ConfigError(f"Unknown config key 'ray.{unknown[0]}'.", hint="Allowed: ray.address.")
    address = ray_node.get("address") or os.environ.get("RAY_ADDRESS") or None
    return ServeConfig(settings, address)


def _check_key(dotted: str) -> None:
    """A ConfigError naming the allowed keys for an override of a key ServeSettings lacks
    (Hydra's own message would point at the training config)."""
    import dataclasses
    import typing

    from engine.config.load import _allowed_keys, _without_none

    if not dotted.startswith("serve."):
        return
    parts = dotted.split(".")[1:]
    cls: Any = ServeSettings
    for i, part in enumerate(parts):
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            return  # inside a dict field (traffic, default_version): the user's own keys
        hints = typing.get_type_hints(cls)
        if part not in hints:
            parent = ".".join(["serve", *parts[:i]])
            raise ConfigError(
                f"Unknown config key {'.'.join(['serve', *parts[: i + 1]])!r}.",
                hint=f"Allowed keys under {parent!r}: "
                f"{_allowed_keys(ServeSettings, '.'.join(parts[:i]))}.",
            )
        cls = _without_none(hints[part])


def _serve_key(override: str) -> bool:
    key = override.lstrip("+~").split("=", 1)[0]
    return key in ("serve", "ray.address") or key.startswith("serve.")


def check(s: ServeSettings) -> None:
    """Every value in range (ConfigError naming ``serve.<key>``); fills traffic and
    default_version with their string-keyed forms."""

    def bad(key: str, value: object, hint: str) -> ConfigError:
        return ConfigError(f"Invalid value for 'serve.{key}': {value!r}.", hint=hint)

    for model, split in (s.traffic or {}).items():
        if not isinstance(split, dict) or not all(
            isinstance(w, (int, float)) and not isinstance(w, bool) for w in split.values()
        ):
            raise bad(f"traffic.{model}", split, "Map versions to weights: e.g. {1: 90, 2: 10}.")
    s.traffic = {
        str(m): {str(v): float(w) for v, w in split.items()}
        for m, split in (s.traffic or {}).items()
    }
    s.default_version = {str(m): str(v) for m, v in (s.default_version or {}).items()}

    if not s.app_name or not s.app_name.replace("-", "").replace("_", "").isalnum():
        raise bad("app_name", s.app_name, "Use letters, digits, '-' and '_'.")
    if not 1 <= s.port <= 65535:
        raise bad("port", s.port, "Use a TCP port, 1-65535.")
    if s.device not in DEVICES:
        raise bad("device", s.device, f"Allowed: {', '.join(DEVICES)}.")
    if s.batch.max_batch_size < 1:
        raise bad("batch.max_batch_size", s.batch.max_batch_size, "Use >= 1.")
    if s.batch.wait_timeout_s < 0:
        raise bad("batch.wait_timeout_s", s.batch.wait_timeout_s, "Use >= 0 seconds.")
    r = s.replicas
    if r.num_replicas < 1:
        raise bad("replicas.num_replicas", r.num_replicas, "Use >= 1 (or replicas.autoscaling).")
    if r.num_cpus < 0 or r.num_gpus < 0:
        raise bad("replicas.num_cpus", (r.num_cpus, r.num_gpus), "CPUs and GPUs are >= 0.")
    a = r.autoscaling
    if a is not None:
        if a.min_replicas < 0 or a.max_replicas < max(1, a.min_replicas):
            raise bad(
                "replicas.autoscaling",
                {"min_replicas": a.min_replicas, "max_replicas": a.max_replicas},
                "Use 0 <= min_replicas <= max_replicas, max_replicas >= 1.",
            )
        if a.target_ongoing_requests <= 0:
            raise bad(
                "replicas.autoscaling.target_ongoing_requests",
                a.target_ongoing_requests,
                "Use > 0.",
            )
    if s.max_queued_requests < -1 or s.max_queued_requests == 0:
        raise bad(
            "max_queued_requests", s.max_queued_requests, "Use a positive limit, or -1 (none)."
        )
    if s.backpressure_status not in (503, 429):
        raise bad("backpressure_status", s.backpressure_status, "Allowed: 503, 429.")
    if s.retry_after_s < 0:
        raise bad("retry_after_s", s.retry_after_s, "Use >= 0 seconds.")
    for name in ("max_instances", "max_body_bytes", "max_image_bytes", "max_image_pixels"):
        if getattr(s.limits, name) < 1:
            raise bad(f"limits.{name}", getattr(s.limits, name), "Use >= 1.")
    if s.request_timeout_s <= 0:
        raise bad("request_timeout_s", s.request_timeout_s, "Use > 0 seconds.")
    _check_log(s.log, bad)
    for model, split in s.traffic.items():
        if not split or any(w < 0 for w in split.values()) or sum(split.values()) <= 0:
            raise bad(
                f"traffic.{model}",
                split,
                "Give each version a weight >= 0, at least one > 0: e.g. {'1': 90, '2': 10}.",
            )
    token = read_token(s)  # a token_file that cannot be read is an error wherever it listens
    if not _is_loopback(s.host) and not s.allow_unauthenticated and token is None:
        raise ConfigError(
            f"serve.host={s.host} would publish the models to the network without a token.",
            hint=f"Set {TOKEN_ENV} (or serve.token_file=PATH) to require a bearer token, or "
            "say serve.allow_unauthenticated=true to serve without one.",
        )


def _check_log(log: LogSettings, bad: Any) -> None:
    from engine.errors import StorageError
    from engine.runs.storage import Location

    if log.dir is not None:
        if not isinstance(log.dir, str) or not log.dir.strip():
            raise bad("log.dir", log.dir, "A local path or an object-store URI, or null (off).")
        try:
            log.dir = Location.parse(log.dir).uri  # absolute: replicas run in other dirs
        except StorageError as exc:
            raise bad("log.dir", log.dir, exc.hint or exc.message) from None
    if not 0 <= log.sample <= 1:
        raise bad("log.sample", log.sample, "A fraction of requests, 0..1.")
    if log.flush_s <= 0:
        raise bad("log.flush_s", log.flush_s, "Use > 0 seconds.")
    if not log.max_file_mb > 0:
        raise bad("log.max_file_mb", log.max_file_mb, "Use > 0 MiB.")
    for name in ("batch", "queue", "index_size"):
        if getattr(log, name) < 1:
            raise bad(f"log.{name}", getattr(log, name), "Use >= 1.")
    if log.queue < log.batch:
        raise bad("log.queue", log.queue, f"Use >= serve.log.batch ({log.batch}).")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(s: ServeSettings) -> str | None:
    """The bearer token (``LEPTON_SERVE_TOKEN``, else ``serve.token_file``), or None."""
    token = os.environ.get(TOKEN_ENV)
    if token is None and s.token_file:
        path = Path(s.token_file).expanduser()
        try:
            token = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"Cannot read serve.token_file {path}: {exc.strerror or exc}.",
                hint="Name a file that holds the token (one line), readable by this user.",
            ) from None
    if token is None:
        return None
    token = token.strip()
    if len(token) < 16:
        raise ConfigError(
            "The serving token is shorter than 16 characters.",
            hint="Use a long random token, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'.",
        )
    return token
