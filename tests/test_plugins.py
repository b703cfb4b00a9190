"""Plugin discovery: isolation of broken plugins, hook validation, real entry points."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types

import pytest

from engine.errors import UnknownTaskError
from engine.hookspecs import hookimpl
from engine.plugins import PluginRegistry


class _ToyTask:
    name = "toy"
    config_class = dict
    default_metric = "val/accuracy"
    metric_mode = "max"

    def check(self, cfg): ...
    def build_data(self, cfg, *, seed): ...
    def build_model(self, cfg, artifacts): ...
    def training_step(self, model, batch): ...
    def build_metrics(self, cfg, artifacts): ...
    def validation_step(self, model, batch, metrics): ...
    def build_predictor(self, model, cfg, artifacts, device): ...


def _module(name: str, **hooks) -> types.ModuleType:
    mod = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        setattr(mod, hook_name, hookimpl(fn))
    return mod


def test_good_plugin_registers_task_and_config_dir(tmp_path):
    (tmp_path / "task").mkdir()
    good = _module(
        "good",
        lepton_register_tasks=lambda register: register(_ToyTask()),
        lepton_config_dirs=lambda: [tmp_path],
    )
    reg = PluginRegistry()
    assert reg.add_plugin(good, "good", distribution="good-dist", version="1.2")
    assert reg.get_task("toy").plugin == "good"
    assert reg.config_dirs == [tmp_path.resolve()]
    assert reg.problems == []


def test_bad_signature_unknown_hook_and_raising_hook_are_isolated():
    def wrong_signature(register, extra):  # extra is not in the hookspec
        pass

    def raising(register):
        raise RuntimeError("boom")

    reg = PluginRegistry()
    assert not reg.add_plugin(_module("sig", lepton_register_tasks=wrong_signature), "sig")
    assert not reg.add_plugin(_module("unknown", lepton_frobnicate=lambda: None), "unknown")
    reg.add_plugin(_module("raises", lepton_register_tasks=raising), "raises")
    reg.add_plugin(_module("ok", lepton_register_tasks=lambda register: register(_ToyTask())), "ok")
    reasons = {p.plugin: p.reason for p in reg.problems}
    assert "bad hook signature" in reasons["sig"]
    assert "lepton_frobnicate" in reasons["unknown"]
    assert "boom" in reasons["raises"]
    assert "toy" in reg.tasks  # the good plugin still works


def test_task_clash_and_incomplete_task_are_reported():
    class Incomplete:
        name = "half"

    reg = PluginRegistry()
    reg.add_plugin(_module("a", lepton_register_tasks=lambda register: register(_ToyTask())), "a")
    reg.add_plugin(_module("b", lepton_register_tasks=lambda register: register(_ToyTask())), "b")
    reg.add_plugin(_module("c", lepton_register_tasks=lambda register: register(Incomplete())), "c")
    reasons = {p.plugin: p.reason for p in reg.problems}
    assert "already provided by plugin 'a'" in reasons["b"]
    assert "lacks" in reasons["c"] and "build_model" in reasons["c"]


def test_unknown_task_lists_installed_and_broken(tmp_path, monkeypatch):
    def raising(register):
        raise RuntimeError("disk on fire")

    reg = PluginRegistry()
    reg.add_plugin(_module("ok", lepton_register_tasks=lambda register: register(_ToyTask())), "ok")
    reg.add_plugin(_module("raises", lepton_register_tasks=raising), "raises")
    # and one that cannot even be imported, found through a real entry point
    _write_dist(tmp_path, "lepton-broken", "lepton_broken_plugin", "import no_such_module_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("LEPTON_PLUGINS", "lepton_broken_plugin")
    reg.load_entry_points()
    assert [p.plugin for p in reg.problems] == ["raises", "lepton_broken_plugin"]
    with pytest.raises(UnknownTaskError) as info:
        reg.get_task("nope")
    assert "toy" in info.value.message
    assert "'nope'" in info.value.message
    hint = info.value.hint or ""
    assert "Plugins that failed to load: " in hint
    assert "raises (lepton_register_tasks failed: RuntimeError: disk on fire)" in hint
    assert "lepton_broken_plugin (import failed: ModuleNotFoundError:" in hint
    assert "no_such_module_xyz" in hint
    assert "ok (" not in hint  # the plugin that loaded is not listed as broken


def test_unknown_task_without_broken_plugins_has_no_failed_list():
    reg = PluginRegistry()
    reg.add_plugin(_module("ok", lepton_register_tasks=lambda register: register(_ToyTask())), "ok")
    with pytest.raises(UnknownTaskError) as info:
        reg.get_task("nope")
    assert "Installed tasks: toy." in info.value.message
    assert "failed to load" not in (info.value.hint or "")


def _write_dist(root, dist: str, module: str, body: str) -> None:
    """A throwaway installed distribution: a module plus a dist-info with entry points."""
    (root / f"{module}.py").write_text(textwrap.dedent(body))
    info = root / f"{dist.replace('-', '_')}-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(f"[lepton]\n{module} = {module}\n")


def test_broken_entry_point_is_isolated_others_still_load(tmp_path, monkeypatch):
    """In process: a real entry point whose module fails to import, beside the built-ins."""
    _write_dist(tmp_path, "lepton-broken", "lepton_broken_plugin", "import no_such_module_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("LEPTON_PLUGINS", raising=False)
    reg = PluginRegistry()
    reg.load_entry_points()
    assert "vision" in reg.plugins and "vision" in reg.tasks
    assert "lepton_broken_plugin" not in reg.plugins
    broken = {p.plugin: p.reason for p in reg.problems}
    assert "no_such_module_xyz" in broken["lepton_broken_plugin"]


@pytest.mark.slow
def test_broken_entry_point_reported_by_cli_others_still_load(tmp_path):
    _write_dist(tmp_path, "lepton-broken", "lepton_broken_plugin", "import no_such_module_xyz\n")
    env = {"PYTHONPATH": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "engine.cli", "plugins", "--json"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, **env},
        check=True,
    )
    data = json.loads(out.stdout)
    assert any(p["plugin"] == "vision" for p in data["plugins"])
    broken = {p["plugin"]: p["error"] for p in data["problems"]}
    assert "no_such_module_xyz" in broken["lepton_broken_plugin"]


def test_lepton_plugins_env_limits_loading(monkeypatch):
    monkeypatch.setenv("LEPTON_PLUGINS", "nothing-here")
    reg = PluginRegistry()
    reg.load_entry_points()
    assert reg.plugins == {}
    monkeypatch.setenv("LEPTON_PLUGINS", "vision")
    reg = PluginRegistry()
    reg.load_entry_points()
    assert list(reg.plugins) == ["vision"]
