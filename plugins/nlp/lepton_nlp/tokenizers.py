"""Tokenizers: a word (+ bigram) vocabulary built from the training texts, or a local HF one.

Both turn a text into a non-empty list of token ids (an empty or unknown text becomes
``[UNK]``), and both round-trip through a JSON-ready dict kept in the checkpoint's
artifacts, so a loaded model tokenizes exactly as it was trained.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

PAD, UNK = "[PAD]", "[UNK]"
WORD_RE = re.compile(r"\w+(?:'\w+)*", re.UNICODE)


class TextTokenizer(Protocol):
    pad_id: int
    vocab_size: int

    def encode_batch(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        """Token ids per text; never empty."""
        ...

    def to_artifact(self) -> dict[str, Any]:
        """A JSON-ready description to rebuild this tokenizer (``from_artifact``)."""
        ...


def words(text: str, lowercase: bool = True) -> list[str]:
    return WORD_RE.findall(text.lower() if lowercase else text)


def _bigrams(tokens: list[str]) -> list[str]:
    return [f"{a} {b}" for a, b in zip(tokens, tokens[1:], strict=False)]


class VocabTokenizer:
    """Lower-cased words, optionally plus word bigrams, mapped through a fixed vocabulary.

    Id 0 is ``[PAD]`` and id 1 ``[UNK]``. An unknown word becomes ``[UNK]``; an unknown
    bigram is left out (it carries no information a bag model could use).
    """

    def __init__(self, tokens: Sequence[str], *, lowercase: bool = True, ngrams: int = 1) -> None:
        if list(tokens[:2]) != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {PAD}, {UNK}; got {list(tokens[:2])}")
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise ValueError("the vocabulary has duplicate tokens")
        self.lowercase, self.ngrams = lowercase, ngrams
        self.pad_id, self.unk_id = 0, 1
        self.vocab_size = len(self.tokens)

    @classmethod
    def build(
        cls,
        texts: Iterable[str],
        *,
        lowercase: bool = True,
        ngrams: int = 1,
        min_freq: int = 1,
        max_vocab: int = 20000,
    ) -> VocabTokenizer:
        """Count words (and bigrams) in ``texts``; keep the ``max_vocab`` most frequent."""
        counts: Counter[str] = Counter()
        for text in texts:
            ws = words(text, lowercase)
            counts.update(ws)
            if ngrams >= 2:
                counts.update(_bigrams(ws))
        kept = sorted(
            (t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t)
        )
        return cls([PAD, UNK, *kept[:max_vocab]], lowercase=lowercase, ngrams=ngrams)

    def encode(self, text: str, max_length: int) -> list[int]:
        ws = words(text, self.lowercase)[:max_length]
        ids = [self.index.get(w, self.unk_id) for w in ws]
        if self.ngrams >= 2:
            ids += [self.index[b] for b in _bigrams(ws) if b in self.index]
        return ids or [self.unk_id]

    def encode_batch(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        return [self.encode(t, max_length) for t in texts]

    def to_artifact(self) -> dict[str, Any]:
        return {
            "kind": "vocab",
            "lowercase": self.lowercase,
            "ngrams": self.ngrams,
            "tokens": self.tokens,
        }

    @classmethod
    def from_artifact(cls, data: dict[str, Any]) -> VocabTokenizer:
        return cls(data["tokens"], lowercase=bool(data["lowercase"]), ngrams=int(data["ngrams"]))


class HFTokenizer:
    """The tokenizer of a local Hugging Face model directory (never downloads)."""

    def __init__(self, path: str) -> None:
        from lepton_nlp.pretrained import load_hf_tokenizer

        self.path = path
        self.tok = load_hf_tokenizer(path)
        pad = self.tok.pad_token_id
        self.pad_id = int(pad) if pad is not None else 0
        self.vocab_size = len(self.tok)
        self.unk_id = self.tok.unk_token_id if self.tok.unk_token_id is not None else self.pad_id

    def encode_batch(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        if not texts:
            return []
        enc = self.tok(list(texts), truncation=True, max_length=max_length, padding=False)
        return [ids if ids else [self.unk_id] for ids in enc["input_ids"]]

    def to_artifact(self) -> dict[str, Any]:
        return {"kind": "hf", "path": self.path}

    @classmethod
    def from_artifact(cls, data: dict[str, Any]) -> HFTokenizer:
        return cls(str(data["path"]))


def tokenizer_from_artifact(data: dict[str, Any]) -> VocabTokenizer | HFTokenizer:
    if data.get("kind") == "vocab":
        return VocabTokenizer.from_artifact(data)
    if data.get("kind") == "hf":
        return HFTokenizer.from_artifact(data)
    raise ValueError(f"unknown tokenizer kind {data.get('kind')!r} in the checkpoint artifacts")
