"""End-to-end: the real `lepton` command in a subprocess (slow tier)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import run_lepton

pytestmark = pytest.mark.slow


def _best(stdout: str) -> tuple[float, str]:
    """Best value and checkpoint, as the CLI printed them and as result.json records them."""
    run_dir = re.search(r"Run directory: +(\S+)", stdout).group(1)
    printed = float(re.search(r"Best val/accuracy: ([0-9.]+)", stdout).group(1))
    summary = json.loads((Path(run_dir) / "result.json").read_text())["summary"]
    assert summary["best_value"] == pytest.approx(printed, abs=1e-4)
    best = str(Path(run_dir) / summary["best_checkpoint"])  # named inside the run
    assert re.search(r"Best checkpoint: (\S+)", stdout).group(1) == best
    return summary["best_value"], best


def test_train_then_reload_in_fresh_process_reproduces_accuracy(tmp_path):
    # As a user starts it: no RAY_AUTH_MODE (an in-process Ray in this session sets it),
    # and, as on a new machine, no matplotlib font cache yet.
    out = run_lepton(
        "train",
        "task=vision",
        "trainer.epochs=4",
        f"run.dir={tmp_path}",
        env={"RAY_AUTH_MODE": None, "MPLCONFIGDIR": str(tmp_path / "matplotlib")},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Token authentication" not in out.stderr + out.stdout  # Ray's per-start warning
    assert "fontManager" not in out.stderr + out.stdout  # no font cache built on workers
    best, ckpt = _best(out.stdout)
    assert best >= 0.9
    check = textwrap.dedent(
        f"""
        import torch
        from engine.runs.checkpoint import load_model
        loaded = load_model({ckpt!r})
        bundle = loaded.info.task.build_data(loaded.task_config, seed=0)
        correct = 0
        with torch.no_grad():
            for i in range(len(bundle.val)):
                x, y = bundle.val[i]
                correct += int(loaded.model(x[None]).argmax(1).item() == y)
        print("ACC", correct / len(bundle.val))
        """
    )
    res = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    acc = float(res.stdout.split("ACC")[1])
    assert acc == pytest.approx(best, abs=1e-6)


TOY_PLUGIN = '''
"""A third-party task plugin written outside the engine's repository."""
from dataclasses import dataclass, field
from pathlib import Path

import torch
from engine.hookspecs import hookimpl
from engine.task import DataBundle


@dataclass
class ToyData:
    n: int = 600
    features: int = 6


@dataclass
class ToyConfig:
    data: ToyData = field(default_factory=ToyData)


class ToyTask:
    name = "toy"
    config_class = ToyConfig
    default_metric = "val/accuracy"
    metric_mode = "max"

    def check(self, cfg):
        pass

    def build_data(self, cfg, *, seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(cfg.data.n, cfg.data.features, generator=g)
        y = (x[:, 0] + x[:, 1] > 0).long()
        cut = int(cfg.data.n * 0.8)
        train = torch.utils.data.TensorDataset(x[:cut], y[:cut])
        val = torch.utils.data.TensorDataset(x[cut:], y[cut:])
        return DataBundle(train=train, val=val, artifacts={"features": cfg.data.features})

    def build_model(self, cfg, artifacts):
        return torch.nn.Linear(artifacts["features"], 2)

    def training_step(self, model, batch):
        x, y = batch
        return torch.nn.functional.cross_entropy(model(x), y)

    def build_metrics(self, cfg, artifacts):
        from torchmetrics import MetricCollection
        from torchmetrics.classification import MulticlassAccuracy
        return MetricCollection({"accuracy": MulticlassAccuracy(2, average="micro")})

    def validation_step(self, model, batch, metrics):
        x, y = batch
        logits = model(x)
        metrics.update(logits, y)
        return torch.nn.functional.cross_entropy(logits, y)

    def build_predictor(self, model, cfg, artifacts, device):
        return None


@hookimpl
def lepton_register_tasks(register):
    register(ToyTask())


@hookimpl
def lepton_config_dirs():
    return [Path(__file__).parent / "toy_conf"]
'''


def test_third_party_plugin_from_outside_the_repo_trains(tmp_path):
    site = tmp_path / "site"
    (site / "toy_conf" / "task").mkdir(parents=True)
    (site / "lepton_toy.py").write_text(TOY_PLUGIN)
    (site / "toy_conf" / "task" / "toy.yaml").write_text(
        "# @package _global_\ntask:\n  name: toy\n  data:\n    n: 600\ntrainer:\n  epochs: 3\noptimizer:\n  lr: 0.05\n"
    )
    dist = site / "lepton_toy-0.3.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lepton-toy\nVersion: 0.3.0\n")
    (dist / "entry_points.txt").write_text("[lepton]\ntoy = lepton_toy\n")
    env = {"PYTHONPATH": str(site)}

    listed = run_lepton("plugins", "--json", env=env)
    plugins = {p["plugin"]: p for p in json.loads(listed.stdout)["plugins"]}
    assert plugins["toy"]["version"] == "0.3.0" and plugins["toy"]["tasks"] == ["toy"]

    out = run_lepton(
        "train", "task=toy", "scaling.num_workers=2", f"run.dir={tmp_path / 'runs'}", env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    best, _ = _best(out.stdout)
    assert best > 0.9


def _png(path, value=128):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), color=value).save(path)


@pytest.mark.parametrize("case", ["missing_dir", "no_images", "too_many_workers", "no_val"])
def test_user_mistakes_exit_2_without_traceback(tmp_path, case):
    args = ["train", "task=vision", f"run.dir={tmp_path / 'runs'}"]
    if case == "missing_dir":
        args += ["task.data.format=imagefolder", f"task.data.path={tmp_path / 'absent'}"]
        needle = "does not exist"
    elif case == "no_images":
        (tmp_path / "imgs" / "train" / "cat").mkdir(parents=True)
        (tmp_path / "imgs" / "val" / "cat").mkdir(parents=True)
        args += ["task.data.format=imagefolder", f"task.data.path={tmp_path / 'imgs'}"]
        needle = "holds no images"
    elif case == "no_val":
        _png(tmp_path / "imgs" / "train" / "cat" / "a.png")
        args += ["task.data.format=imagefolder", f"task.data.path={tmp_path / 'imgs'}"]
        needle = "no val/ subfolder"
    else:
        args += ["scaling.num_workers=64"]
        needle = "scaling.num_workers=64"
    out = run_lepton(*args)
    assert out.returncode == 2, out.stderr[-2000:]
    assert needle in out.stderr
    assert "Traceback" not in out.stderr
