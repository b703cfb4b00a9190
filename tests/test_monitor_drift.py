"""Drift of `lepton monitor --reference RUN` (fast tier, no Ray): the PSI against a hand
computation, the reference cache of a real (small, in-process) vision run, and the command
on prediction logs whose summaries come from the replicas' own summarizer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from run_fixtures import train_run

from engine.cli import main
from engine.errors import ConfigError
from engine.monitor.drift import DriftSettings, version_drift
from engine.monitor.psi import (
    FLOOR,
    OTHER,
    categorical_psi,
    decile_edges,
    feature_psi,
    numeric_psi,
    psi_from_shares,
)
from engine.monitor.reference import REFERENCE_FILE, load_reference
from engine.serve.prediction_log import file_name, utc_iso

T0 = 1796119200.0  # 2026-12-01T10:00:00Z


def _hand_psi(expected, actual):
    e = np.maximum(np.asarray(expected, float), FLOOR)
    a = np.maximum(np.asarray(actual, float), FLOOR)
    return float(((a - e) * np.log(a / e)).sum())


def test_psi_of_shares_matches_a_hand_computation():
    e, a = [0.25, 0.25, 0.5], [0.5, 0.25, 0.25]
    by_hand = (0.5 - 0.25) * math.log(0.5 / 0.25) + 0 + (0.25 - 0.5) * math.log(0.25 / 0.5)
    assert psi_from_shares(e, a) == pytest.approx(by_hand, rel=1e-12)
    # an empty bin is floored, not infinite
    assert psi_from_shares([0.5, 0.5, 0.0], [0.4, 0.4, 0.2]) == pytest.approx(
        _hand_psi([0.5, 0.5, 0.0], [0.4, 0.4, 0.2])
    )


def test_numeric_psi_bins_at_the_reference_deciles():
    reference = np.arange(1, 21, dtype=float)  # 1..20
    live = np.array([1, 2, 3, 18, 19, 20, 20, 20, 20, 25], dtype=float)
    edges = np.unique(np.quantile(reference, np.linspace(0.1, 0.9, 9)))
    assert decile_edges(reference) == pytest.approx(list(edges))
    bins = lambda x: np.bincount(np.searchsorted(edges, x, "left"), minlength=len(edges) + 1)  # noqa: E731
    e, a = bins(reference) / len(reference), bins(live) / len(live)
    result = numeric_psi(list(reference), list(live))
    assert result["psi"] == pytest.approx(_hand_psi(e, a), abs=1e-6)
    assert sum(result["reference"]) == pytest.approx(1) and len(result["live"]) == len(edges) + 1
    assert result["psi"] > 1  # most live values in the end bins


def test_identical_distributions_give_about_zero_and_a_shift_a_large_psi():
    rng = np.random.default_rng(0)
    ref = rng.normal(0.3, 0.05, 2000)
    same = numeric_psi(list(ref), list(rng.normal(0.3, 0.05, 2000)))["psi"]
    shifted = numeric_psi(list(ref), list(rng.normal(0.7, 0.05, 2000)))["psi"]
    assert numeric_psi(list(ref), list(ref))["psi"] == 0
    assert same < 0.02 and shifted > 5, (same, shifted)


def test_categorical_psi_counts_unseen_values_as_other():
    ref = ["a"] * 50 + ["b"] * 50
    live = ["a"] * 40 + ["b"] * 40 + ["c"] * 20
    result = categorical_psi(ref, live)
    assert result["bins"] == ["a", "b", OTHER]
    assert result["live"] == [0.4, 0.4, 0.2] and result["reference"] == [0.5, 0.5, 0.0]
    assert result["psi"] == pytest.approx(_hand_psi([0.5, 0.5, 0], [0.4, 0.4, 0.2]), abs=1e-6)
    assert categorical_psi(ref, ref)["psi"] == 0
    assert feature_psi([True, False] * 10, [True] * 20)["type"] == "categorical"
    assert feature_psi([1, 2, 3], [None, None]) is None  # nothing live to compare


def test_alerts_need_the_threshold_and_the_minimum_count():
    ref = {"inputs": [{"x": float(i % 10), "kind": "a"} for i in range(100)], "outputs": []}
    shifted = [{"summary": {"x": 9.0 + i, "kind": "a"}, "prediction": {}} for i in range(20)]
    loose = version_drift(ref, shifted, DriftSettings(threshold=0.2, min_count=10))
    strict = version_drift(ref, shifted, DriftSettings(threshold=0.2, min_count=50))
    assert loose["inputs"]["x"]["alert"] and loose["alert"]
    assert not strict["alert"] and strict["inputs"]["x"]["psi"] == loose["inputs"]["x"]["psi"]
    assert not loose["inputs"]["kind"]["alert"]
    with pytest.raises(ConfigError):
        DriftSettings(threshold=0)


# -- a real run as the reference --------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return train_run(tmp_path_factory.mktemp("drift") / "run", epochs=1)


def test_reference_is_cached_by_checkpoint_hash(run):
    first = load_reference(run, limit=50)
    cache = run / REFERENCE_FILE
    assert first["available"] and not first["cached"] and first["count"] == 50
    assert first["kind"] == "image" and first["metric"] == "accuracy"
    assert {"brightness", "contrast", "height"} <= set(first["inputs"][0])
    on_disk = json.loads(cache.read_text())
    assert on_disk["checkpoint_hash"] == first["checkpoint_hash"]
    assert not list(run.glob(f"{REFERENCE_FILE}.tmp*"))  # whole or nothing
    again = load_reference(run, limit=50)
    assert again["cached"] and again["inputs"] == first["inputs"]
    # another key (the hash of another checkpoint) is rebuilt, not trusted
    on_disk["checkpoint_hash"] = "0" * 64
    on_disk["inputs"] = []
    cache.write_text(json.dumps(on_disk))
    rebuilt = load_reference(run, limit=50)
    assert not rebuilt["cached"] and rebuilt["inputs"] == first["inputs"]
    assert load_reference(run, limit=20)["count"] == 20  # another limit: rebuilt


def _log(run: Path, folder: Path, images: list, written_at: float) -> None:
    """A prediction log file whose summaries and predictions are what a replica of the run
    would write (the same summarizer, the same predictor)."""
    from engine.runs.checkpoint import load_model
    from engine.runs.layout import resolve_checkpoint
    from engine.serve.input_summary import summarizer
    from engine.serve.signature import Signature

    loaded = load_model(resolve_checkpoint(run))
    predictor = loaded.predictor()
    sig = Signature.from_predictor(predictor)
    summarize = summarizer(sig.kind, sig.input_schema, loaded.info.task, loaded.artifacts)
    lines = []
    for i, (image, prediction) in enumerate(zip(images, predictor.predict(images), strict=True)):
        rec = {
            "request_id": f"r{written_at}-{i}",
            "index": 0,
            "instances": 1,
            "time": utc_iso(written_at - 1),
            "model": "digits",
            "version": "1",
            "checkpoint": "ckpt",
            "latency_ms": 2.0,
            "prediction": prediction,
            "summary": summarize(image, prediction),
        }
        lines.append(json.dumps(rec) + "\n")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / file_name(written_at, "w", 0)).write_text("".join(lines))


def test_monitor_flags_inverted_images_and_exits_1(run, tmp_path, capsys):
    from engine.runs.checkpoint import load_model
    from engine.runs.layout import resolve_checkpoint

    loaded = load_model(resolve_checkpoint(run))
    seed = int(loaded.meta.get("seed") or 0)
    task = loaded.info.task
    pairs = list(task.validation_inputs(loaded.task_config, loaded.artifacts, seed=seed, limit=250))
    images = [x for x, _ in pairs[100:250]]  # 150: PSI's sampling noise ~9/n
    log_dir = tmp_path / "logs"
    folder = log_dir / "predictions" / "digits" / "1"
    _log(run, folder, images, T0)
    ref = ["--reference", str(run)]
    assert main(["monitor", str(log_dir), *ref, "-o", str(tmp_path / "a")]) == 0
    calm = json.loads((tmp_path / "a" / "monitor.json").read_text())
    drift = calm["models"]["digits"]["versions"]["1"]["drift"]
    with capsys.disabled():
        print(
            "same split:",
            {k: f["psi"] for k, f in drift["inputs"].items()},
            drift["outputs"]["label"]["psi"],
        )
    assert calm["alerts"] == [] and drift["max_psi"] < 0.2
    assert calm["reference"]["available"] and calm["reference"]["count"] == 359  # all of val

    _log(run, folder, [(255 - np.asarray(x)).tolist() for x in images], T0 + 600)
    since = utc_iso(T0 + 300)
    code = main(["monitor", str(log_dir), *ref, "--since", since, "-o", str(tmp_path / "b")])
    out = capsys.readouterr().out
    stats = json.loads((tmp_path / "b" / "monitor.json").read_text())
    drift = stats["models"]["digits"]["versions"]["1"]["drift"]
    print(
        "inverted:",
        {k: f["psi"] for k, f in drift["inputs"].items()},
        drift["outputs"]["label"]["psi"],
    )
    assert code == 1 and stats["reference"]["cached"]
    assert "brightness" in {a["feature"] for a in stats["alerts"]}
    # std(255 - x) == std(x): inverting leaves the contrast, and it is not flagged
    assert not drift["inputs"]["contrast"]["alert"]
    assert drift["inputs"]["height"]["psi"] == 0 and "ALERT digits v1" in out
    assert (tmp_path / "b" / "drift.png").stat().st_size > 0
    assert "## Drift against the reference" in (tmp_path / "b" / "report.md").read_text()


def test_bad_reference_and_missing_log_exit_2(run, tmp_path, capsys):
    log_dir = tmp_path / "logs"
    (log_dir / "predictions").mkdir(parents=True)
    assert main(["monitor", str(tmp_path / "nothing"), "--reference", str(run)]) == 2
    assert main(["monitor", str(log_dir), "--reference", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "neither a run directory" in err and "no prediction log" in err
    assert main(["monitor", str(log_dir), "--reference", str(run), "--psi-threshold", "-1"]) == 2


def test_validation_inputs_is_an_optional_task_feature():
    from engine.plugins import get_registry
    from engine.task import TaskFeatures

    registry = get_registry()

    has = {
        name: TaskFeatures.of(registry.get_task(name).task).validation_inputs
        for name in ("vision", "nlp", "recsys")
    }
    assert has == {"vision": True, "nlp": True, "recsys": False}
    assert not TaskFeatures.of(object()).validation_inputs


def test_drift_settings_come_from_config_and_the_flags_win(run, tmp_path, capsys, monkeypatch):
    images = [(255 - np.asarray(x)).tolist() for x, _ in _validation_pairs(run, 150)]
    log_dir = tmp_path / "logs"
    _log(run, log_dir / "predictions" / "digits" / "1", images, T0)
    ref = [str(log_dir), "--reference", str(run)]
    out = ["-o", str(tmp_path / "out")]
    assert main(["monitor", *ref, *out]) == 1  # the defaults: 0.2 on >= 100 values
    assert main(["monitor", *ref, *out, "monitor.drift.psi_threshold=1000"]) == 0
    assert main(["monitor", *ref, *out, "monitor.drift.min_count=151"]) == 0
    # a flag wins over the config
    assert main(["monitor", *ref, *out, "monitor.drift.min_count=151", "--min-count", "10"]) == 1
    # a project's preset: conf/monitor/lenient.yaml, picked with monitor=lenient
    project = tmp_path / "project"
    (project / "conf" / "monitor").mkdir(parents=True)
    (project / "conf" / "monitor" / "lenient.yaml").write_text(
        "drift:\n  psi_threshold: 1000\n  min_count: 100\n  reference_limit: 2000\nwatch_s: 5\n"
    )
    monkeypatch.chdir(project)
    assert main(["monitor", *ref, *out, "monitor=lenient"]) == 0
    capsys.readouterr()
    assert main(["monitor", *ref, *out, "monitor.drift.min_cout=5"]) == 2
    err = capsys.readouterr().err
    assert "monitor.drift.min_cout" in err and "min_count" in err  # names the allowed keys
    assert main(["monitor", *ref, *out, "task.data.path=x"]) == 2
    assert "monitor.* overrides only" in capsys.readouterr().err
    assert main(["monitor", *ref, *out, "monitor.drift.psi_threshold=0"]) == 2
    assert "monitor.drift.psi_threshold" in capsys.readouterr().err


def _validation_pairs(run: Path, limit: int) -> list:
    from engine.runs.checkpoint import load_model
    from engine.runs.layout import resolve_checkpoint

    loaded = load_model(resolve_checkpoint(run))
    seed = int(loaded.meta.get("seed") or 0)
    task = loaded.info.task
    return list(
        task.validation_inputs(loaded.task_config, loaded.artifacts, seed=seed, limit=limit)
    )
