"""Checking a Ray cluster launcher config (``cluster.yaml``) as ``ray up`` checks it.

``ray up`` does not validate the YAML as written: it first fills in its provider's
defaults (``prepare_config``: ``cluster_synced_files``, ``auth``, each node type's worker
counts...) and validates that against the JSON schema the installed Ray ships
(``validate_config``). So does :func:`validate_cluster_yaml`, with Ray's own two
functions; raw YAML alone would fail on the missing defaults. A failure becomes a
:class:`~engine.errors.ConfigError` naming the key (its dotted path and line), Ray's
message, and the closest allowed key for a misspelt one.

:func:`security_problems` adds this project's own rule for a cluster: token
authentication on every node and the dashboard (which is also the Jobs API) bound to
loopback, reached through ``ray dashboard cluster.yaml`` (an SSH tunnel).

``python -m engine.jobs.cluster_config cluster.yaml`` (``make check-cluster``) runs both.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.errors import ConfigError

#: Where ``ray up`` reads the cluster's token from on this machine (synced to each node).
DEFAULT_TOKEN_FILE = Path("~/.ray/auth_token")
_DASHBOARD_HOST = re.compile(r"--dashboard-host[= ](\S+)")
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "'127.0.0.1'", '"127.0.0.1"'}


def validate_cluster_yaml(path: str | Path) -> dict[str, Any]:
    """The config ``ray up`` would use (defaults filled in), or ConfigError saying what is wrong."""
    path = Path(path)
    text, raw = _load(path)
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    # Ray logs each default it fills in ("setting max workers for head node type to 0").
    quiet = logging.getLogger("ray.autoscaler")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        prepared = prepare_config(copy.deepcopy(raw))
    except NotImplementedError as exc:
        raise ConfigError(
            f"{path}: provider.type: {_reason(exc)}.",
            hint=f"Use one of Ray's providers: {', '.join(_providers())}.",
        ) from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(
            f"{path}: Ray cannot fill in its defaults for this config: {_reason(exc)}.",
            hint="Compare it with Ray's example for your provider (ray/autoscaler/<cloud>/"
            "example-full.yaml); `ray up` would fail the same way.",
        ) from None
    finally:
        quiet.setLevel(level)
    _check_head_node_type(path, text, prepared)
    try:
        validate_config(prepared)
    except jsonschema.ValidationError as exc:
        raise _schema_error(path, text, exc) from None
    except (ValueError, RuntimeError) as exc:
        raise ConfigError(
            f"{path}: {exc}",
            hint="Fix that in the file; `ray up` checks the same (ray.autoscaler's validate_config).",
        ) from None
    return prepared


def _providers() -> list[str]:
    try:
        from ray.autoscaler._private.providers import _DEFAULT_CONFIGS
    except ImportError:  # pragma: no cover - Ray moved it
        return ["aws", "gcp", "azure", "local"]
    return sorted(_DEFAULT_CONFIGS)


def _check_head_node_type(path: Path, text: str, config: dict[str, Any]) -> None:
    """Ray's own check says only "must be one of": name the value and the choices."""
    types, head = config.get("available_node_types"), config.get("head_node_type")
    if isinstance(types, dict) and head is not None and head not in types:
        close = difflib.get_close_matches(str(head), [str(t) for t in types], n=1)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"{path}{_line(text, ['head_node_type'])}: head_node_type {head!r} is not one of "
            f"available_node_types{guess}.",
            hint=f"The node types defined: {', '.join(map(str, types))}.",
        )


def _load(path: Path) -> tuple[str, dict[str, Any]]:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"Cluster config {path} does not exist.",
            hint="Pass the path of a Ray cluster launcher YAML, e.g. the repository's cluster.yaml.",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read cluster config {path}: {_reason(exc)}.") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"{path} is not valid YAML{where}: {problem}.",
            hint="Fix the indentation or quoting there (a value with ': ' or '#' needs quotes).",
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path} must be a mapping of Ray cluster launcher keys, not {type(raw).__name__}.",
            hint="Start from the repository's cluster.yaml (cluster_name, provider, "
            "available_node_types, ...).",
        )
    provider = raw.get("provider")
    if not isinstance(provider, dict) or not isinstance(provider.get("type"), str):
        raise ConfigError(
            f"{path}: `provider` with a `type` is required (e.g. provider: {{type: aws, "
            "region: us-west-2}}).",
            hint="Name the cloud the cluster runs on: aws, gcp, azure (or local).",
        )
    return text, raw


def _reason(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"missing key {exc.args[0]!r}" if exc.args else "a key is missing"
    return str(exc).rstrip(".") or type(exc).__name__


def _dotted(parts: Sequence[Any]) -> str:
    return ".".join(str(p) for p in parts) or "(top level)"


def _schema_error(path: Path, text: str, exc: Any) -> ConfigError:
    """A jsonschema error as a message naming the key, its line and what is allowed."""
    where = list(exc.absolute_path)
    if exc.validator == "additionalProperties" and isinstance(exc.instance, dict):
        allowed = sorted((exc.schema.get("properties") or {}).keys())
        unknown = [k for k in exc.instance if k not in allowed]
        key = unknown[0] if unknown else "?"
        full = [*where, key]
        close = difflib.get_close_matches(str(key), allowed, n=1)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        return ConfigError(
            f"{path}{_line(text, full)}: unknown key {_dotted(full)!r}{guess}. "
            f"Ray's schema says: {exc.message}.",
            hint=f"Allowed keys in {_dotted(where)}: {', '.join(allowed)}.",
        )
    if exc.validator == "required":
        return ConfigError(
            f"{path}{_line(text, where)}: {_dotted(where)}: {exc.message}.",
            hint="Add that key; Ray's example for your provider shows its usual value.",
        )
    return ConfigError(
        f"{path}{_line(text, where)}: {_dotted(where)}: {exc.message}.",
        hint="Fix that value; `ray up` checks the same schema (ray/autoscaler/ray-schema.json).",
    )


def _line(text: str, parts: Sequence[Any]) -> str:
    """`` (line N)`` of the key at ``parts`` in the YAML text, or its deepest parent's; ``''``."""
    import yaml

    try:
        node: Any = yaml.compose(text)
    except yaml.YAMLError:
        return ""
    line = None
    for part in parts:
        if isinstance(node, yaml.MappingNode):
            match = next((kv for kv in node.value if str(kv[0].value) == str(part)), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return f" (line {line})" if line else ""


def _commands(config: dict[str, Any], key: str) -> str:
    value = config.get(key) or []
    return "\n".join(str(c) for c in value) if isinstance(value, list) else str(value)


def security_problems(config: dict[str, Any]) -> list[str]:
    """This project's rule for a cluster, checked on a prepared config: what breaks it."""
    problems = []
    head, workers = (
        _commands(config, "head_start_ray_commands"),
        _commands(config, "worker_start_ray_commands"),
    )
    for name, commands in (
        ("head_start_ray_commands", head),
        ("worker_start_ray_commands", workers),
    ):
        if "RAY_AUTH_MODE=token" not in commands:
            problems.append(
                f"{name} does not set RAY_AUTH_MODE=token: that node's Ray would run "
                "without token authentication (anyone reaching it runs code). Export "
                "RAY_AUTH_MODE=token before `ray start` and sync ~/.ray/auth_token in file_mounts."
            )
    hosts = _DASHBOARD_HOST.findall(head)
    if "ray start" in head and not hosts:
        problems.append(
            "head_start_ray_commands' `ray start --head` has no --dashboard-host: say "
            "--dashboard-host=127.0.0.1 (reached through `ray dashboard cluster.yaml`)."
        )
    for host in hosts:
        if host not in _LOOPBACK:
            problems.append(
                f"the dashboard (and Jobs API) binds to {host}: use --dashboard-host=127.0.0.1 "
                "and reach it through `ray dashboard cluster.yaml` (an SSH tunnel), never "
                "an address open to the internet."
            )
    return problems


def summary(config: dict[str, Any]) -> str:
    """One paragraph: provider, head and worker node types with their instance types."""
    provider = config.get("provider", {})
    where = provider.get("region") or provider.get("location") or provider.get("project_id")
    lines = [f"provider {provider.get('type')}" + (f" ({where})" if where else "")]
    head = config.get("head_node_type")
    for name, spec in (config.get("available_node_types") or {}).items():
        node = spec.get("node_config") or {}
        kind = (
            node.get("InstanceType")
            or node.get("machineType")
            or node.get("azure_arm_parameters", {}).get("vmSize", "")
        )
        count = (
            "head"
            if name == head
            else f"{spec.get('min_workers', 0)}..{spec.get('max_workers')} workers"
        )
        lines.append(f"  {name}: {count}" + (f", {kind}" if kind else ""))
    lines.append(f"  max_workers {config.get('max_workers')} in all")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m engine.jobs.cluster_config",
        description="Check a Ray cluster launcher YAML as `ray up` does, plus token auth "
        "on every node and a loopback-only dashboard.",
    )
    parser.add_argument("path", nargs="?", default="cluster.yaml")
    args = parser.parse_args(argv)
    try:
        config = validate_cluster_yaml(args.path)
    except ConfigError as exc:
        print(f"check-cluster: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  {exc.hint}", file=sys.stderr)
        return exc.exit_code
    import ray

    problems = security_problems(config)
    for problem in problems:
        print(f"check-cluster: {args.path}: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(
        f"{args.path}: valid for `ray up` (Ray {ray.__version__}'s schema), token auth on every node, dashboard on loopback"
    )
    print(summary(config))
    mounts = config.get("file_mounts") or {}
    token = next((src for dst, src in mounts.items() if str(dst).endswith("auth_token")), None)
    if token and not Path(str(token)).expanduser().is_file():
        print(
            f"note: {token} does not exist yet: create it with `ray get-auth-token --generate` before `ray up`"
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
