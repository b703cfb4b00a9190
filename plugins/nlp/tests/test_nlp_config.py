"""``task=nlp`` composes with the engine's config; mistakes name the key and what is allowed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from nlp_testdata import typed_config

from engine.errors import ConfigError
from lepton_nlp.config import NLPConfig


def test_defaults_compose_and_validate() -> None:
    typed, info = typed_config()
    cfg = typed.task
    assert isinstance(cfg, NLPConfig)
    assert info.task.name == "nlp" and info.task.default_metric == "val/f1"
    assert info.task.metric_mode == "max"
    assert (cfg.data.format, cfg.model.name, cfg.tokenizer_kind, cfg.ngrams) == (
        "synthetic",
        "bag",
        "vocab",
        2,
    )
    assert typed.trainer.epochs >= 1 and typed.scaling.num_workers == 2


def test_auto_tokenizer_and_ngrams_follow_the_model() -> None:
    typed, _ = typed_config("task.model.name=transformer")
    assert (typed.task.tokenizer_kind, typed.task.ngrams) == ("vocab", 1)
    typed, _ = typed_config("task.model.name=pretrained")
    assert typed.task.tokenizer_kind == "hf"
    typed, _ = typed_config("task.model.name=cnn", "task.tokenizer.ngrams=2")
    assert typed.task.ngrams == 2


def test_relative_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    typed, _ = typed_config(
        "task.data.format=csv", "task.data.train=data/t.csv", "task.data.val=v.csv"
    )
    assert typed.task.data.train == os.path.join(str(tmp_path), "data", "t.csv")
    assert typed.task.data.val == os.path.join(str(tmp_path), "v.csv")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["task.data.format=xml"],
            "task.data.format='xml' is not an NLP format; allowed: synthetic",
        ),
        (["task.data.format=csv"], "task.data.format=csv needs task.data.path"),
        (["task.data.format=csv", "task.data.path=a.csv", "task.data.train=b.csv"], "not both"),
        (["task.data.path=reviews.parquet"], "set task.data.format=parquet"),
        (["task.data.val_fraction=1.5"], "task.data.val_fraction=1.5 must be between 0 and 1"),
        (["task.data.max_length=0"], "task.data.max_length=0"),
        (["task.model.name=gpt"], "task.model.name='gpt' is unknown; allowed: bag, cnn, bilstm"),
        (["task.tokenizer.kind=bpe"], "task.tokenizer.kind='bpe' is unknown"),
        (["task.tokenizer.ngrams=3"], "task.tokenizer.ngrams=3 must be 1, 2 or null"),
        (["task.model.name=pretrained", "task.tokenizer.kind=vocab"], "task.tokenizer.kind=hf"),
        (
            ["task.model.name=transformer", "task.model.embed_dim=30", "task.model.num_heads=4"],
            "divisible",
        ),
    ],
)
def test_bad_values_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        typed_config(*overrides)
    assert message in str(err.value)


def test_unknown_key_lists_allowed_keys() -> None:
    with pytest.raises(ConfigError) as err:
        typed_config("+task.data.colum=text")
    assert "task.data.colum" in err.value.message
    assert "text_column" in (err.value.hint or "")
