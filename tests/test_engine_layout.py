"""The engine's shape: no import cycle, no oversized module, a light and fast ``lepton``.

Unit tier: no Ray, no torch. The two subprocess checks are ``slow``-marked.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENGINE = REPO / "engine"
MAX_LINES = 400
#: Modules allowed past MAX_LINES: the contract kit is one file plugin authors read whole.
LONG_MODULES = {"engine/testing.py"}
HEAVY = ("torch", "ray", "hydra", "omegaconf")


def _module_files() -> dict[str, Path]:
    """Every engine module by dotted name (a package's ``__init__`` is the package)."""
    modules = {}
    for path in sorted(ENGINE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Import statements anywhere (functions included), except under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _deepest_module(name: str, modules: dict[str, Path]) -> str | None:
    """``name`` or its longest prefix that is an engine module."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _import_graph() -> dict[str, set[str]]:
    modules = _module_files()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                # `from engine.x import y` means engine.x.y when that is a module.
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            for target in targets:
                if target == "engine" or target.startswith("engine."):
                    resolved = _deepest_module(target, modules)
                    if resolved is not None and resolved != name:
                        graph[name].add(resolved)
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None."""
    done: set[str] = set()
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> list[str] | None:
        stack.append(node)
        on_stack.add(node)
        for dep in sorted(graph[node]):
            if dep in on_stack:
                return [*stack[stack.index(dep) :], dep]
            if dep not in done:
                cycle = visit(dep)
                if cycle:
                    return cycle
        stack.pop()
        on_stack.discard(node)
        done.add(node)
        return None

    for node in sorted(graph):
        if node not in done:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_imports_include_lazy_ones_and_skip_type_checking_ones():
    source = (
        "from typing import TYPE_CHECKING\n"
        "import engine.a\n"
        "if TYPE_CHECKING:\n"
        "    from engine import hidden\n"
        "else:\n"
        "    from engine import shown\n"
        "def f():\n"
        "    from engine.b import c\n"
    )
    found = [
        node.module or "" if isinstance(node, ast.ImportFrom) else node.names[0].name
        for node in _imports(ast.parse(source))
    ]
    names = [a.name for node in _imports(ast.parse(source)) for a in node.names]
    assert "hidden" not in names and {"shown", "c"} <= set(names)
    assert "engine.a" in found and "engine.b" in found
    graph = _import_graph()
    assert "engine.train.loop" in graph["engine.train.trainer"]  # module level
    assert "engine.train.driver" in graph["engine.train.train_command"]  # inside run()
    assert "engine.runs.storage" in graph["engine.train.worker_context"]  # inside a method
    assert "engine.runs" in graph and "engine" in graph  # packages are modules too
    assert "engine" in graph["engine.cli"]  # `from engine import __version__`


def test_cycle_finder_reports_the_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _find_cycle(graph) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_engine_has_no_import_cycle():
    cycle = _find_cycle(_import_graph())
    assert cycle is None, "import cycle in engine/: " + " -> ".join(cycle or [])


def test_no_engine_module_is_too_long():
    too_long = {}
    for path in sorted(ENGINE.rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES and rel not in LONG_MODULES:
            too_long[rel] = lines
    assert not too_long, f"modules over {MAX_LINES} lines (split them): {too_long}"


def _command_names() -> dict[str, list[str]]:
    """Each module in engine.cli.COMMANDS and the sub-command(s) it registers."""
    from engine import cli

    names = {}
    for module_name in cli.COMMANDS:
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(module_name).add_parser(sub)
        names[module_name] = list(sub.choices)
    return names


@pytest.mark.slow
def test_help_lists_every_command_and_is_fast():
    times, out = [], ""
    for _ in range(3):
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "engine.cli", "--help"],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        )
        times.append(time.perf_counter() - started)
        out = done.stdout
    missing = {
        module: name
        for module, names in _command_names().items()
        for name in names
        if not re.search(rf"^\s+{re.escape(name)}\b", out, re.MULTILINE)
    }
    assert not missing, f"lepton --help does not list {missing}:\n{out}"
    assert min(times) < 0.3, f"lepton --help took {min(times):.2f}s at best (of {times})"


@pytest.mark.slow
def test_importing_the_cli_imports_nothing_heavy():
    code = (
        "import json, sys\n"
        "import engine.cli\n"
        f"heavy = {HEAVY!r}\n"
        "imported = [m for m in heavy if m in sys.modules]\n"
        "engine.cli.build_parser()\n"
        "built = [m for m in heavy if m in sys.modules]\n"
        "print(json.dumps({'import': imported, 'build_parser': built}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == {"import": [], "build_parser": []}, loaded
