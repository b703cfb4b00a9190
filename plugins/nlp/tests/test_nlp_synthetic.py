"""The embedded demo tickets: reproducible, balanced, and not separable by one keyword."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from lepton_nlp.synthetic import CLASSES, ISSUES, generate
from lepton_nlp.tokenizers import words


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    assert generate(300, seed=5) == generate(300, seed=5)
    assert generate(300, seed=5) != generate(300, seed=6)
    assert generate(300, seed=5, lexicon="a") != generate(300, seed=5, lexicon="b")


def test_classes_are_balanced_and_texts_non_empty() -> None:
    rows = generate(400, seed=0)
    assert Counter(label for _, label in rows) == {c: 100 for c in CLASSES}
    assert all(text.strip() for text, _ in rows)
    assert len({text for text, _ in rows}) > 380  # hardly any duplicates


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="lexicon"):
        generate(10, lexicon="c")
    with pytest.raises(ValueError, match="smaller than the number of classes"):
        generate(3)


def _doc_freq(rows: list[tuple[str, str]]) -> dict[str, Counter[str]]:
    df: dict[str, Counter[str]] = defaultdict(Counter)
    for text, label in rows:
        for w in set(words(text)):
            df[w][label] += 1
    return df


def test_no_single_keyword_separates_a_class() -> None:
    rows = generate(2000, seed=0)
    df = _doc_freq(rows)
    per_class = Counter(label for _, label in rows)
    for c in CLASSES:
        # F1 of the rule "the ticket contains word w" for "the ticket is class c".
        def f1(w: str, c: str = c) -> float:
            return 2 * df[w][c] / (sum(df[w].values()) + per_class[c])

        best = max(df, key=f1)
        assert f1(best) < 0.6, f"the word {best!r} alone finds class {c} (F1 {f1(best):.2f})"


def test_classes_share_vocabulary_and_carry_negations() -> None:
    rows = generate(2000, seed=0)
    df = _doc_freq(rows)
    # Topic words that occur in several classes, in a meaningful share of them.
    for word in ("order", "app", "account", "card"):
        classes = [c for c in CLASSES if df[word][c] >= 10]
        assert len(classes) >= 2, (word, dict(df[word]))
    negated = sum(1 for text, _ in rows if {"not", "no", "fine", "works"} & set(words(text)))
    assert negated / len(rows) > 0.25


def test_lexicons_use_different_topic_words() -> None:
    a = {w for pair in sum(ISSUES.values(), []) for w in words(pair[0])}
    b = {w for pair in sum(ISSUES.values(), []) for w in words(pair[1])}
    for word in ("refund", "package", "password", "crashes"):
        assert word in a and word not in b
    for word in ("reimbursement", "parcel", "passcode", "freezes"):
        assert word in b and word not in a
