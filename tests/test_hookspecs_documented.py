"""Every hook in engine/hookspecs.py has a docstring, a test that implements or calls it,
and a place in docs/writing-a-plugin.md. Adding a hook without those fails here."""

from __future__ import annotations

import inspect
import re
import types
from pathlib import Path

import pytest

from engine import hookspecs

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "writing-a-plugin.md"


def declared_hooks(module: types.ModuleType) -> dict[str, object]:
    """The functions of ``module`` marked as hook specifications."""
    marker = f"{hookspecs.PROJECT_NAME}_spec"
    return {
        name: fn
        for name, fn in inspect.getmembers(module, inspect.isfunction)
        if hasattr(fn, marker)
    }


def undocumented(hooks: dict[str, object], min_words: int = 8) -> list[str]:
    """Hooks whose docstring is missing or too short to say when it runs and what it returns."""
    return sorted(
        name for name, fn in hooks.items() if len((inspect.getdoc(fn) or "").split()) < min_words
    )


def exercised(hook: str, sources: dict[Path, str]) -> list[Path]:
    """Test files that implement (``def hook(``, ``hook=``) or call (``.hook(``) the hook."""
    pattern = re.compile(rf"(\bdef\s+{hook}\s*\(|\b{hook}\s*=|\.{hook}\s*\()")
    return [path for path, text in sources.items() if pattern.search(text)]


def gather_test_sources() -> dict[Path, str]:
    this = Path(__file__).resolve()
    files = [*ROOT.glob("tests/**/*.py"), *ROOT.glob("plugins/*/tests/**/*.py")]
    return {p: p.read_text(encoding="utf-8") for p in files if p.resolve() != this}


def test_there_are_hooks_to_check():
    assert {"lepton_register_tasks", "lepton_config_dirs"} <= set(declared_hooks(hookspecs))


def test_every_hook_has_a_docstring():
    missing = undocumented(declared_hooks(hookspecs))
    assert not missing, (
        f"hooks without a real docstring in engine/hookspecs.py: {', '.join(missing)}; "
        "say when the hook is called (driver) and what its result means"
    )


def test_every_hook_is_exercised_by_a_test():
    sources = gather_test_sources()
    assert sources, "no test sources found"
    unused = [hook for hook in declared_hooks(hookspecs) if not exercised(hook, sources)]
    assert not unused, (
        f"hooks no test implements or calls: {', '.join(unused)}; add a test under tests/ "
        "or plugins/*/tests/ with a plugin that implements the hook"
    )


def test_every_hook_is_in_the_plugin_guide():
    text = DOC.read_text(encoding="utf-8")
    missing = [hook for hook in declared_hooks(hookspecs) if f"`{hook}(" not in text]
    assert not missing, f"docs/writing-a-plugin.md does not describe: {', '.join(missing)}"


# -- the checks above can fail -------------------------------------------------------


def test_the_checks_catch_an_undocumented_unused_hook():
    fake = types.ModuleType("fake_hookspecs")

    @hookspecs.hookspec
    def lepton_documented(register: object) -> None:
        """Called once in the driver when the registry loads; returns nothing at all."""

    @hookspecs.hookspec
    def lepton_bare() -> None:
        pass

    def not_a_hook() -> None:
        """A plain function."""

    fake.lepton_documented = lepton_documented  # type: ignore[attr-defined]
    fake.lepton_bare = lepton_bare  # type: ignore[attr-defined]
    fake.not_a_hook = not_a_hook  # type: ignore[attr-defined]
    hooks = declared_hooks(fake)
    assert set(hooks) == {"lepton_documented", "lepton_bare"}
    assert undocumented(hooks) == ["lepton_bare"]
    sources = {
        Path("a.py"): "@hookimpl\ndef lepton_documented(register):\n    pass\n",
        Path("b.py"): "# lepton_bare is mentioned in a comment only\n",
    }
    assert exercised("lepton_documented", sources) == [Path("a.py")]
    assert exercised("lepton_bare", sources) == []
    assert exercised("lepton_bare", {Path("c.py"): "pm.hook.lepton_bare()"}) == [Path("c.py")]
    assert exercised("lepton_bare", {Path("d.py"): "_module('m', lepton_bare=lambda: 1)"}) == [
        Path("d.py")
    ]


@pytest.mark.parametrize("hook", sorted(declared_hooks(hookspecs)))
def test_hook_signature_is_typed(hook):
    signature = inspect.signature(getattr(hookspecs, hook))
    untyped = [p for p in signature.parameters.values() if p.annotation is inspect.Parameter.empty]
    assert not untyped and signature.return_annotation is not inspect.Signature.empty, (
        f"{hook} needs type hints on every argument and its return value"
    )
