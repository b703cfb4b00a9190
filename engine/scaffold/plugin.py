"""``lepton plugin new NAME``: write a new plugin distribution from the bundled template.

The template (``engine/scaffold/templates/plugin/``) is a complete tabular task plugin: a
distribution ``lepton-NAME`` with package ``lepton_NAME``, its entry point in group
``lepton``, a config file, a real task (an MLP over CSV/Parquet tables, read whole or
streamed through Ray Data with ``task.data.streaming=true``), tests that run the contract
kit (:mod:`engine.testing`, its streaming check too) and a README. Files end in ``.tmpl`` in the
engine (so the engine's linters and test runs skip them); ``{{name}}`` and the other
placeholders below are replaced in file contents and paths.
"""

from __future__ import annotations

import importlib.util
import keyword
import re
import shutil
from pathlib import Path

from engine import __version__
from engine.errors import LeptonError

TEMPLATE_DIR = Path(__file__).parent / "templates" / "plugin"
TEMPLATE_SUFFIX = ".tmpl"
_NAME = re.compile(r"[a-z][a-z0-9_]*")
#: Longer names would push template lines past the generated code's 100 columns.
MAX_NAME_LENGTH = 24


class ScaffoldError(LeptonError):
    """The plugin cannot be written as asked (bad name, occupied directory)."""


def placeholders(name: str) -> dict[str, str]:
    """What each ``{{key}}`` in the template becomes for plugin ``name``."""
    return {
        "{{name}}": name,
        "{{Name}}": "".join(part.capitalize() for part in name.split("_")),
        "{{dist}}": f"lepton-{name.replace('_', '-')}",
        "{{engine_version}}": __version__,
    }


def check_name(name: str) -> None:
    """Refuse a name that cannot be a task, a package ``lepton_NAME`` or a new plugin."""
    if not name.isidentifier() or not name.isascii() or keyword.iskeyword(name):
        why = "is a Python keyword" if keyword.iskeyword(name) else "is not a Python identifier"
        raise ScaffoldError(
            f"Plugin name {name!r} {why}.",
            hint="Use lowercase letters, digits and underscores, starting with a letter "
            "(e.g. churn, house_prices).",
        )
    if not _NAME.fullmatch(name):
        raise ScaffoldError(
            f"Plugin name {name!r} must be lowercase ASCII, starting with a letter.",
            hint=f"Try {name.lower().lstrip('_') or 'mytask'!r}.",
        )
    if len(name) > MAX_NAME_LENGTH:
        raise ScaffoldError(
            f"Plugin name {name!r} is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}.",
            hint="A task name is typed on every command line: keep it short.",
        )
    from engine.plugins import get_registry

    registry = get_registry()
    if name in registry.tasks:
        owner = registry.tasks[name]
        dist = owner.distribution or owner.plugin
        raise ScaffoldError(
            f"A task named {name!r} is already installed (plugin {owner.plugin!r}, "
            f"distribution {dist}).",
            hint="Pick another name; task names are unique across installed plugins.",
        )
    if importlib.util.find_spec(f"lepton_{name}") is not None:
        raise ScaffoldError(
            f"A Python package lepton_{name} is already importable.",
            hint=f"Pick another name, or uninstall it first (pip uninstall lepton-{name}).",
        )


def render(name: str) -> dict[Path, str]:
    """Relative path -> text of every file of the new plugin (nothing written yet)."""
    if not TEMPLATE_DIR.is_dir():
        raise ScaffoldError(f"The plugin template is missing from the engine ({TEMPLATE_DIR}).")
    subs = placeholders(name)
    files: dict[Path, str] = {}
    for source in sorted(TEMPLATE_DIR.rglob(f"*{TEMPLATE_SUFFIX}")):
        relative = str(source.relative_to(TEMPLATE_DIR))[: -len(TEMPLATE_SUFFIX)]
        text = source.read_text(encoding="utf-8")
        for key, value in subs.items():
            relative = relative.replace(key, value)
            text = text.replace(key, value)
        files[Path(relative)] = text
    return files


def new_plugin(name: str, directory: Path | None = None, *, force: bool = False) -> Path:
    """Write plugin ``name`` into ``directory`` (default ``./lepton-NAME``); returns it.

    Raises :class:`ScaffoldError` for an invalid or taken name, or a target that is a
    file or (unless ``force``) a non-empty directory. With ``force`` the template's files
    are written over files of the same name; nothing else in the directory is touched.
    """
    check_name(name)
    target = (directory or Path.cwd() / placeholders(name)["{{dist}}"]).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise ScaffoldError(f"{target} exists and is not a directory.")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise ScaffoldError(
            f"{target} is not empty; refusing to write the plugin over its files.",
            hint="Choose a new or empty directory with --dir, or pass --force to write the "
            "template's files over it (other files stay).",
        )
    files = render(name)
    created = not target.exists()
    try:
        for relative, text in files.items():
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    except OSError as exc:
        if created:  # leave no half-written plugin behind
            shutil.rmtree(target, ignore_errors=True)
        raise ScaffoldError(
            f"Cannot write the plugin into {target}: {exc.strerror or exc}.",
            hint="Choose a directory you can write to with --dir.",
        ) from None
    return target


def next_steps(name: str, target: Path) -> str:
    dist = placeholders(name)["{{dist}}"]
    return "\n".join(
        [
            f"Created plugin {dist} (package lepton_{name}, task {name!r}) in {target}",
            "Next steps (see its README.md):",
            f"  pip install -e {target}",
            "  lepton plugins",
            f"  lepton train task={name} task.data.path=table.csv task.data.target_column=label",
            f"  pytest {target / 'tests'}",
        ]
    )
