"""evaluate / predict / report / runs on a real trained vision run."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import run_lepton
from engine.config.load import load_config
from engine.runs.layout import read_metrics
from engine.train.driver import train

# All share one trained run (Ray); those that run the real `lepton` CLI in a subprocess are
# also in the slow tier.
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def vision_run(ray_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    loaded = load_config(
        ["task=vision", "trainer.epochs=3", "scaling.num_workers=2", f"run.dir={root}"]
    )
    typed, info, yaml_text = loaded.config, loaded.info, loaded.yaml
    summary = train(typed, info, yaml_text, echo=lambda s: None)
    return summary


def _digit_images(folder, count=8):
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = (digits.images[i] * 255 / 16).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:02d}.png")
    return folder


@pytest.mark.slow  # the real `lepton` CLI in a subprocess
def test_evaluate_in_fresh_process_reproduces_best_metric(vision_run):
    out = run_lepton("evaluate", str(vision_run.run_dir), "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    best = max(r["val/accuracy"] for r in read_metrics(vision_run.run_dir))
    assert result["metrics"]["val/accuracy"] == pytest.approx(best, abs=1e-6)
    assert result["checkpoint"] == str(vision_run.best_checkpoint)
    extras = result["extras"]
    assert len(extras["confusion_matrix"]) == 10
    assert sum(map(sum, extras["confusion_matrix"])) == result["samples"]
    assert set(extras["per_class"]) == {str(i) for i in range(10)}
    assert (vision_run.best_checkpoint / "eval.json").is_file()


@pytest.mark.slow  # the real `lepton` CLI in a subprocess
def test_predict_matches_in_process_predictions_and_skips_corrupt(vision_run, tmp_path):
    folder = _digit_images(tmp_path / "imgs")
    (folder / "zz_broken.png").write_bytes(b"not an image")
    out_file = tmp_path / "preds.jsonl"
    out = run_lepton(
        "predict", str(vision_run.run_dir), "--input", str(folder), "-o", str(out_file)
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "zz_broken.png" in out.stderr and "skipped" in out.stderr
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"img{i:02d}.png" for i in range(8)]

    from engine.runs.checkpoint import load_model

    predictor = load_model(vision_run.best_checkpoint).predictor()
    expected = predictor.predict([folder / r["id"] for r in rows])
    assert [r["label"] for r in rows] == [e["label"] for e in expected]
    assert [r["score"] for r in rows] == pytest.approx([e["score"] for e in expected], abs=1e-6)

    failing = run_lepton(
        "predict",
        str(vision_run.run_dir),
        "--input",
        str(folder),
        "-o",
        str(tmp_path / "f.csv"),
        "--on-error",
        "fail",
    )
    assert failing.returncode == 2 and "zz_broken.png" in failing.stderr
    assert not (tmp_path / "f.csv").exists(), "a failed run left a partial output behind"

    csv_out = run_lepton(
        "predict",
        str(vision_run.run_dir),
        "--input",
        str(folder / "img00.png"),
        "-o",
        str(tmp_path / "one.csv"),
    )
    assert csv_out.returncode == 0
    assert (tmp_path / "one.csv").read_text().splitlines()[0].startswith("id,label,")


@pytest.mark.slow  # the real `lepton` CLI in a subprocess
def test_report_pngs_are_real_images_and_md_names_best(vision_run):
    out = run_lepton("report", str(vision_run.run_dir))
    assert out.returncode == 0, out.stderr[-2000:]
    pngs = sorted((vision_run.run_dir.local_path / "report").glob("*.png"))
    assert {p.name for p in pngs} == {
        "loss.png",
        "metrics.png",
        "throughput.png",
        "confusion_matrix.png",
    }
    for png in pngs:
        with Image.open(png) as img:
            img.verify()
        with Image.open(png) as img:
            expected = (600, 600) if png.name == "confusion_matrix.png" else (800, 450)
            assert img.size == expected, png.name
            pixels = np.asarray(img.convert("L"))
            assert pixels.std() > 5, f"{png.name} is blank"
    text = (vision_run.run_dir / "report.md").read_text()
    rows = read_metrics(vision_run.run_dir)
    best = max(rows, key=lambda r: r["val/accuracy"])
    assert f"Best val/accuracy | {best['val/accuracy']:.4f} (epoch {best['epoch'] + 1})" in text
    assert str(vision_run.best_checkpoint) in text
    for png in pngs:
        assert f"(report/{png.name})" in text


@pytest.mark.slow  # the real `lepton` CLI in a subprocess
def test_runs_lists_the_run(vision_run):
    out = run_lepton("runs", str(vision_run.run_dir.parent), "--json")
    (run,) = json.loads(out.stdout)
    assert run["status"] == "finished" and run["task"] == "vision" and run["epochs"] == 3
    table = run_lepton("runs", str(vision_run.run_dir.parent)).stdout
    assert vision_run.run_dir.name in table and "finished" in table


@pytest.mark.slow  # the real `lepton` CLI in a subprocess
@pytest.mark.parametrize("case", ["neither", "missing_plugin", "no_images", "empty_input"])
def test_offline_commands_refuse_bad_input_with_exit_2(vision_run, tmp_path, case):
    if case == "neither":
        out = run_lepton("evaluate", str(tmp_path))
        needle = "neither a run directory nor a checkpoint"
    elif case == "missing_plugin":
        out = run_lepton(
            "evaluate", str(vision_run.best_checkpoint), env={"LEPTON_PLUGINS": "none"}
        )
        needle = "Install lepton-vision"
    elif case == "no_images":
        (tmp_path / "train" / "0").mkdir(parents=True)
        (tmp_path / "val" / "0").mkdir(parents=True)
        out = run_lepton(
            "evaluate",
            str(vision_run.run_dir),
            "task.data.format=imagefolder",
            f"task.data.path={tmp_path}",
        )
        needle = "holds no images"
    else:
        (tmp_path / "empty").mkdir()
        out = run_lepton("predict", str(vision_run.run_dir), "--input", str(tmp_path / "empty"))
        needle = "No inputs found"
    assert out.returncode == 2, out.stderr[-2000:]
    assert needle in out.stderr
    assert "Traceback" not in out.stderr


def test_loaded_checkpoint_is_usable_without_ray_or_training_data(vision_run):
    code = (
        "import sys, numpy as np\n"
        "from engine.runs.checkpoint import load_model\n"
        f"p = load_model({str(vision_run.best_checkpoint)!r}).predictor()\n"
        "print(p.predict([np.zeros((8, 8), np.uint8)])[0]['label'])\n"
        "print('ray' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    label, ray_loaded = out.stdout.split()
    assert label in [str(i) for i in range(10)] and ray_loaded == "False"
