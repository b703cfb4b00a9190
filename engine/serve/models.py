"""Which models ``lepton serve`` publishes: ``[NAME[:VERSION]=]PATH`` arguments, checked.

PATH is a checkpoint, a run directory (its best checkpoint), a sweep directory (its best
trial's best checkpoint) or a ``lepton export`` directory (which has a checkpoint's
``task.json``): :func:`engine.runs.layout.resolve_checkpoint` decides. Without a
NAME the model is named after its task; versions count up from ``1`` per name in the order
given. Every checkpoint is verified (sizes and SHA-256 of every file against its
``task.json``) and its task's plugin must be installed, all before Ray starts, so a typo or a
damaged checkpoint is a clear error, not a replica that fails to start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from engine.errors import CheckpointError, ConfigError

#: Model names and versions appear in URL paths: keep them to URL-safe characters.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class ModelSource:
    """One model version to serve."""

    name: str
    version: str
    #: The checkpoint (a local path or an object-store URI), as resolved from PATH.
    checkpoint: str
    task: str
    #: What the checkpoint records: metrics at training time, plugin version, lineage.
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def deployment_name(self) -> str:
        return f"{self.name}--v{self.version}"


def split_arg(arg: str) -> tuple[str | None, str | None, str]:
    """``NAME[:VERSION]=PATH`` → (name, version, path); a bare PATH → (None, None, PATH)."""
    head, sep, path = arg.partition("=")
    if not sep or "/" in head or head.startswith(("s3:", "gs:", ".")):
        return None, None, arg
    name, _, version = head.partition(":")
    for what, value in (("model name", name), ("version", version or "1")):
        if not NAME_RE.fullmatch(value):
            raise ConfigError(
                f"Invalid {what} {value!r} in {arg!r}.",
                hint="Names and versions use letters, digits, '.', '_' and '-' "
                "(e.g. digits:2=runs/digits-b).",
            )
    if not path:
        raise ConfigError(f"No path after '=' in {arg!r}.", hint="Write NAME[:VERSION]=PATH.")
    return name, version or None, path


def model_info(meta: dict[str, Any], checkpoint: str) -> dict[str, Any]:
    """What ``GET /v1/models`` says about a checkpoint: where it is, what trained it, how
    well it scored, its lineage (as the training loop recorded it), and which format and
    precision is served (``checkpoint`` / ``fp32``, or a ``lepton export``'s)."""
    from engine.export.loading import format_and_precision

    fmt, precision = format_and_precision(meta)
    return {
        "checkpoint": checkpoint,
        "format": fmt,
        "precision": precision,
        "task": meta.get("task"),
        "plugin": meta.get("distribution") or meta.get("plugin"),
        "plugin_version": meta.get("plugin_version"),
        "engine_version": meta.get("engine_version"),
        "epoch": meta.get("epoch"),
        "metrics": meta.get("metrics") or {},
        "lineage": meta.get("lineage") or {},
    }


def resolve_models(args: list[str]) -> list[ModelSource]:
    """The model versions named by ``args``, each checkpoint verified; a ConfigError or
    CheckpointError naming the argument at fault."""
    from engine.errors import UnknownTaskError
    from engine.plugins import get_registry
    from engine.runs.checkpoint import read_meta, verify_files
    from engine.runs.layout import resolve_checkpoint

    if not args:
        raise ConfigError(
            "Name at least one model to serve.",
            hint="lepton serve runs/<run> (a run, checkpoint or sweep directory), or NAME=PATH.",
        )
    registry = get_registry()
    sources: list[ModelSource] = []
    counts: dict[str, int] = {}
    for arg in args:
        name, version, path = split_arg(arg)
        where = resolve_checkpoint(path)
        meta = read_meta(where)
        if where.is_local:
            verify_files(where.local_path, meta)
        try:
            registry.get_task(meta["task"])
        except UnknownTaskError:
            raise CheckpointError(
                f"{arg}: the checkpoint is for task {meta['task']!r}, which no installed plugin provides.",
                hint=f"Install {meta.get('distribution') or 'its plugin'} and try again.",
            ) from None
        name = name or str(meta["task"])
        if version is None:
            counts[name] = counts.get(name, 0) + 1
            version = str(counts[name])
            while any(s.name == name and s.version == version for s in sources):
                counts[name] += 1
                version = str(counts[name])
        if any(s.name == name and s.version == version for s in sources):
            raise ConfigError(
                f"Model {name} version {version} is named twice.",
                hint="Give each path its own version: NAME:1=PATH NAME:2=PATH.",
            )
        # Absolute: replicas (and a serve.yaml) do not share this command's working dir.
        checkpoint = str(where.local_path.resolve()) if where.is_local else str(where)
        sources.append(
            ModelSource(name, version, checkpoint, str(meta["task"]), model_info(meta, checkpoint))
        )
    return sources


def default_versions(
    sources: list[ModelSource], chosen: dict[str, str] | None = None
) -> dict[str, str]:
    """Each model's default version: the one ``chosen`` names, else its highest."""
    chosen = chosen or {}
    versions = versions_by_name(sources)
    for name, version in chosen.items():
        if name not in versions:
            raise ConfigError(
                f"serve.default_version names model {name!r}, which is not served.",
                hint=f"Served: {', '.join(sorted(versions))}.",
            )
        if str(version) not in versions[name]:
            raise ConfigError(
                f"serve.default_version: model {name} has no version {version!r}.",
                hint=f"Its versions: {', '.join(versions[name])}.",
            )
    return {
        name: str(chosen[name]) if name in chosen else max(vs, key=version_key)
        for name, vs in versions.items()
    }


def check_traffic(sources: list[ModelSource], traffic: dict[str, dict[str, float]]) -> None:
    versions = versions_by_name(sources)
    for name, split in traffic.items():
        if name not in versions:
            raise ConfigError(
                f"serve.traffic names model {name!r}, which is not served.",
                hint=f"Served: {', '.join(sorted(versions))}.",
            )
        unknown = [v for v in map(str, split) if v not in versions[name]]
        if unknown:
            raise ConfigError(
                f"serve.traffic.{name} names version {unknown[0]!r}, which is not served.",
                hint=f"Versions of {name}: {', '.join(versions[name])}.",
            )


def versions_by_name(sources: list[ModelSource]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for s in sources:
        out.setdefault(s.name, []).append(s.version)
    return {name: sorted(vs, key=version_key) for name, vs in out.items()}


def version_key(version: str) -> tuple[int, int | str]:
    """Numeric versions in number order, before any other, which sort by name."""
    return (0, int(version)) if version.isdigit() else (1, version)
