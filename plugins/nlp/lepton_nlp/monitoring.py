"""What the NLP task adds to the prediction log's input summary (``serve.log``): the share
of a text's words that its vocabulary does not know, the clearest sign of text from
another domain (the engine's default summary has only its length)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Vocabularies by the identity of the artifacts' token list (held, so the id stays
#: unique): built once per loaded model, not once per input.
_VOCABULARIES: dict[int, tuple[Any, frozenset[str]]] = {}


def _vocabulary(tokenizer: Mapping[str, Any]) -> frozenset[str]:
    tokens = tokenizer["tokens"]
    found = _VOCABULARIES.get(id(tokens))
    if found is None or found[0] is not tokens:
        if len(_VOCABULARIES) >= 8:
            _VOCABULARIES.clear()
        found = (tokens, frozenset(tokens[2:]))  # past [PAD] and [UNK]
        _VOCABULARIES[id(tokens)] = found
    return found[1]


def summarize_text(text: Any, artifacts: Mapping[str, Any]) -> dict[str, float | None]:
    """``unknown_rate``: the share of the text's words outside the vocabulary (None for a
    text with no words); nothing for a Hugging Face tokenizer (sub-words know every word)."""
    from lepton_nlp.tokenizers import words

    tokenizer = artifacts.get("tokenizer") or {}
    if tokenizer.get("kind") != "vocab":
        return {}
    vocabulary = _vocabulary(tokenizer)
    ws = words(str(text), bool(tokenizer.get("lowercase", True)))
    if not ws:
        return {"unknown_rate": None}
    return {"unknown_rate": round(sum(w not in vocabulary for w in ws) / len(ws), 6)}
