"""The NLP task's input summary for the prediction log: the unknown-word rate."""

from __future__ import annotations

from lepton_nlp.monitoring import summarize_text
from lepton_nlp.tokenizers import VocabTokenizer


def test_unknown_rate_is_the_share_of_words_outside_the_vocabulary():
    tokenizer = VocabTokenizer.build(["the invoice was charged twice", "reset my password"])
    artifacts = {"tokenizer": tokenizer.to_artifact()}
    assert summarize_text("The invoice was charged", artifacts) == {"unknown_rate": 0.0}
    assert summarize_text("the parcel was lost", artifacts) == {"unknown_rate": 0.5}
    assert summarize_text("   ", artifacts) == {"unknown_rate": None}
    assert summarize_text("x", {"tokenizer": {"kind": "hf", "path": "m"}}) == {}
