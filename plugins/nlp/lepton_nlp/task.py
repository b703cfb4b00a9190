"""The ``nlp`` task: text classification (see the package README for the config keys)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.task import DataBundle, ExportSpec, StreamingData
from engine.task_monitoring import LabelledInput, TrainingDataWritten
from lepton_nlp.config import NLPConfig

if TYPE_CHECKING:  # torch is imported where it is used: `lepton plugins` stays fast
    import torch

    from lepton_nlp.corpus import Corpus, Examples
    from lepton_nlp.predictor import TextPredictor
    from lepton_nlp.tokenizers import HFTokenizer, VocabTokenizer

LOG_PREFIX = "[lepton-nlp]"
MAX_PER_CLASS_METRICS = 20
EXAMPLE_CHARS = 200


def _is_rank_zero() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _log(lines: list[str]) -> None:
    for line in lines:
        print(f"{LOG_PREFIX} {line}", flush=True)


def _needs_hf(cfg: NLPConfig) -> bool:
    return cfg.model.name == "pretrained" or cfg.tokenizer_kind == "hf"


def _model_dir(cfg: NLPConfig, recorded: str | None = None) -> str:
    """The HF model directory: the recorded one if it still exists, else the configured one."""
    from lepton_nlp.pretrained import resolve_model_dir

    if recorded and Path(recorded, "config.json").is_file():
        return recorded
    return resolve_model_dir(cfg.model.pretrained_path)


def _saved_tokenizer(cfg: NLPConfig, artifacts: Mapping[str, Any]) -> VocabTokenizer | HFTokenizer:
    """The tokenizer a trained model was saved with (an HF one may have moved with its package)."""
    from lepton_nlp.tokenizers import tokenizer_from_artifact

    data = dict(artifacts["tokenizer"])
    if data.get("kind") == "hf":
        data["path"] = _model_dir(cfg, data.get("path"))
    return tokenizer_from_artifact(data)


def _is_new_source(cfg: NLPConfig, artifacts: Mapping[str, Any]) -> bool:
    """True for one data file (``task.data.path``) that the model was not trained on."""
    trained_on = (artifacts.get("data_report") or {}).get("train", {}).get("source")
    return bool(cfg.data.path) and cfg.data.path != trained_on


def _examples(corpus: Corpus) -> list[str]:
    """One short validation text per class (at most 4): the predictor's example inputs."""
    seen: dict[str, str] = {}
    for text, label in zip(corpus.val.texts, corpus.val.labels, strict=True):
        if label not in seen and len(text) <= EXAMPLE_CHARS:
            seen[label] = text
        if len(seen) == 4:
            break
    return list(seen.values()) or [corpus.val.texts[0][:EXAMPLE_CHARS]]


class NLPTask:
    name = "nlp"
    config_class = NLPConfig
    default_metric = "val/f1"
    metric_mode = "max"

    def metric_mode_for(self, metric: str, cfg: Any) -> str | None:
        """Every metric this task computes is a score: higher is better."""
        name = metric.removeprefix("val/")
        known = ("accuracy", "precision", "recall", "f1")
        return "max" if name in known or name.startswith("f1_") else None

    def check(self, cfg: NLPConfig) -> None:
        from lepton_nlp.corpus import load_corpus, report_lines
        from lepton_nlp.pretrained import require_transformers
        from lepton_nlp.readers import data_files

        if cfg.data.extra:  # a missing or unreadable extra path, before anything is loaded
            data_files(Path(cfg.data.extra), "task.data.extra")
        if _needs_hf(cfg):
            require_transformers()
            _model_dir(cfg)
        if cfg.data.streaming:  # the files' headers only: the rows are read in the cluster
            from lepton_nlp.streaming import check_streaming

            check_streaming(cfg.data)
            return
        corpus = load_corpus(cfg.data, seed=0)
        _log(report_lines(corpus))

    def build_data(
        self, cfg: NLPConfig, *, seed: int, artifacts: Mapping[str, Any] | None = None
    ) -> DataBundle | StreamingData:
        """Tokenized train/val sets. With ``artifacts`` (a trained model's), its tokenizer
        and classes are reused, so it can be evaluated on new data; a single file other
        than the one it was trained on is then used whole as the validation set. With
        ``task.data.streaming=true``: Ray Data datasets (lepton_nlp.streaming), built once
        in the driver of ``lepton train``."""
        # A new file evaluated with a trained model's artifacts is its validation set
        # whole, which the streamed split does not do: read map-style then.
        new_source = artifacts is not None and _is_new_source(cfg, artifacts)
        if cfg.data.streaming and not new_source:
            from lepton_nlp.streaming import build_streaming

            return build_streaming(cfg, seed=seed, artifacts=artifacts)
        from lepton_nlp.corpus import load_corpus, report_lines
        from lepton_nlp.data import PadCollate

        labels = list(artifacts["label_names"]) if artifacts is not None else None
        new_data = artifacts is not None and _is_new_source(cfg, artifacts)
        corpus = load_corpus(cfg.data, seed=seed, label_names=labels, all_for_val=new_data)
        if _is_rank_zero():
            _log(report_lines(corpus))
        if artifacts is not None:
            tokenizer = _saved_tokenizer(cfg, artifacts)
            saved = dict(artifacts)
            max_length = int(saved["max_length"])
        else:
            tokenizer, saved = self._fit(cfg, corpus)
            max_length = cfg.data.max_length
        index = {name: i for i, name in enumerate(saved["label_names"])}

        def dataset(examples: Examples) -> Any:
            from lepton_nlp.data import TokenizedDataset

            ids = tokenizer.encode_batch(examples.texts, max_length)
            return TokenizedDataset(ids, [index[y] for y in examples.labels])

        return DataBundle(
            train=dataset(corpus.train),
            val=dataset(corpus.val),
            artifacts=saved,
            collate_fn=PadCollate(tokenizer.pad_id),
        )

    def summarize_input(self, input: Any, artifacts: Mapping[str, Any]) -> dict[str, Any]:
        """The prediction log's extra feature: ``unknown_rate``, the share of words
        outside the vocabulary (engine.task.SummarizesInputs)."""
        from lepton_nlp.monitoring import summarize_text

        return summarize_text(input, artifacts)

    def validation_inputs(
        self, cfg: NLPConfig, artifacts: Mapping[str, Any], *, seed: int, limit: int
    ) -> Iterator[tuple[str, str]]:
        """The validation texts (as ``build_data`` splits them for ``seed``) with their
        labels: ``lepton monitor --reference``'s data."""
        from lepton_nlp.corpus import load_corpus

        corpus = load_corpus(
            cfg.data,
            seed=seed,
            label_names=list(artifacts["label_names"]),
            all_for_val=_is_new_source(cfg, artifacts),
            with_extra=False,
        )
        yield from list(zip(corpus.val.texts, corpus.val.labels, strict=True))[:limit]

    def write_training_data(
        self,
        cfg: NLPConfig,
        artifacts: Mapping[str, Any],
        examples: Sequence[LabelledInput],
        directory: Path,
    ) -> TrainingDataWritten:
        """``lepton monitor export``: the labelled served texts as ``feedback.jsonl`` in
        ``directory``, which ``task.data.extra=<its path>`` adds to the training split."""
        from lepton_nlp.feedback_data import write_feedback_jsonl

        return write_feedback_jsonl(cfg.data, artifacts, examples, Path(directory))

    def _fit(self, cfg: NLPConfig, corpus: Corpus) -> tuple[Any, dict[str, Any]]:
        """A tokenizer for ``cfg`` (built from the training texts) and the artifacts to save."""
        from lepton_nlp.tokenizers import HFTokenizer, VocabTokenizer

        max_length = cfg.data.max_length
        model_dir = _model_dir(cfg) if _needs_hf(cfg) else None
        tokenizer: VocabTokenizer | HFTokenizer
        if cfg.tokenizer_kind == "hf":
            assert model_dir is not None
            tokenizer = HFTokenizer(model_dir)
            max_tokens = max_length
        else:
            t = cfg.tokenizer
            tokenizer = VocabTokenizer.build(
                corpus.train.texts,
                lowercase=t.lowercase,
                ngrams=cfg.ngrams,
                min_freq=t.min_freq,
                max_vocab=t.max_vocab,
            )
            max_tokens = max_length + (max_length - 1) * (cfg.ngrams - 1)
        artifacts = {
            "label_names": corpus.label_names,
            "tokenizer": tokenizer.to_artifact(),
            "vocab_size": tokenizer.vocab_size,
            "pad_id": tokenizer.pad_id,
            "max_length": max_length,
            "max_tokens": max_tokens,
            "pretrained_path": model_dir,
            "examples": _examples(corpus),
            "data_report": corpus.report,
        }
        return tokenizer, artifacts

    def build_model(self, cfg: NLPConfig, artifacts: Mapping[str, Any]) -> torch.nn.Module:
        from lepton_nlp.models import build_model

        path = None
        if cfg.model.name == "pretrained":
            path = _model_dir(cfg, artifacts.get("pretrained_path"))
        return build_model(
            cfg.model,
            vocab_size=int(artifacts["vocab_size"]),
            num_classes=len(artifacts["label_names"]),
            pad_id=int(artifacts["pad_id"]),
            max_tokens=int(artifacts["max_tokens"]),
            pretrained_path=path,
        )

    def training_step(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        logits = model(batch["input_ids"], batch["attention_mask"])
        import torch.nn.functional as F

        return F.cross_entropy(logits.float(), batch["labels"])

    def build_metrics(self, cfg: NLPConfig, artifacts: Mapping[str, Any]) -> Any:
        from torchmetrics import MetricCollection
        from torchmetrics.classification import (
            MulticlassAccuracy,
            MulticlassF1Score,
            MulticlassPrecision,
            MulticlassRecall,
        )
        from torchmetrics.wrappers import ClasswiseWrapper

        names = list(artifacts["label_names"])
        n = len(names)
        metrics: dict[str, Any] = {
            "accuracy": MulticlassAccuracy(n, average="micro"),
            "precision": MulticlassPrecision(n, average="macro"),
            "recall": MulticlassRecall(n, average="macro"),
            "f1": MulticlassF1Score(n, average="macro"),
        }
        if cfg.per_class_metrics and n <= MAX_PER_CLASS_METRICS:
            # One scalar per class (val/f1_<label>): the engine stores scalars only.
            metrics["f1_per_class"] = ClasswiseWrapper(
                MulticlassF1Score(n, average=None), labels=names, prefix="f1_"
            )
        return MetricCollection(metrics, compute_groups=False)

    def validation_step(self, model: torch.nn.Module, batch: Any, metrics: Any) -> torch.Tensor:
        logits = model(batch["input_ids"], batch["attention_mask"]).float()
        metrics.update(logits, batch["labels"])
        import torch.nn.functional as F

        return F.cross_entropy(logits, batch["labels"])

    def build_predictor(
        self,
        model: torch.nn.Module,
        cfg: NLPConfig,
        artifacts: Mapping[str, Any],
        device: torch.device,
    ) -> TextPredictor:
        from lepton_nlp.predictor import TextPredictor

        return TextPredictor(
            model,
            _saved_tokenizer(cfg, artifacts),
            artifacts["label_names"],
            int(artifacts["max_length"]),
            device,
            examples=list(artifacts.get("examples") or []),
        )

    def export_spec(
        self, model: torch.nn.Module, batch: Any, cfg: NLPConfig, artifacts: Mapping[str, Any]
    ) -> ExportSpec:
        """``lepton export``: ``model(input_ids, attention_mask)``, batch size and sequence
        length free; tokenizing stays in the predictor."""
        axes = {0: "batch", 1: "sequence"}
        return ExportSpec(
            module=model,
            example_inputs=(batch["input_ids"], batch["attention_mask"]),
            input_names=("input_ids", "attention_mask"),
            output_names=("logits",),
            dynamic_axes={"input_ids": axes, "attention_mask": axes},
        )

    def read_inputs(self, path: Path, cfg: NLPConfig) -> Iterator[tuple[str, str]]:
        """Texts to predict: ``.txt`` (a line each), CSV/TSV, JSONL or Parquet with
        ``task.data.text_column``; ids from an ``id`` column, else the row number."""
        from lepton_nlp.readers import iter_texts

        fallback = cfg.data.format if cfg.data.format in ("csv", "jsonl", "parquet") else ""
        return iter_texts(Path(path), cfg.data.text_column, fallback)

    def inputs_from_rows(self, rows: Mapping[str, Any], cfg: NLPConfig) -> list[tuple[str, str]]:
        """A batch of Parquet rows for ``lepton predict -o OUT.parquet``: the texts of
        ``task.data.text_column`` (a missing one is empty); ids from an ``id`` column."""
        from engine.task_streaming import column_of, row_ids

        texts = [
            "" if t is None else str(t)
            for t in column_of(rows, cfg.data.text_column, "task.data.text_column")
        ]
        return list(zip(row_ids(rows, texts), texts, strict=True))

    def evaluation_extras(
        self,
        model: torch.nn.Module,
        loader: Any,
        cfg: NLPConfig,
        artifacts: Mapping[str, Any],
        device: torch.device,
    ) -> dict[str, Any]:
        """Confusion matrix and per-class precision/recall/F1 for ``lepton evaluate``."""
        import torch

        from engine.metrics import classification_details

        def pairs() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            model.eval()
            with torch.no_grad():
                for batch in loader:
                    logits = model(
                        batch["input_ids"].to(device), batch["attention_mask"].to(device)
                    )
                    yield logits.argmax(1).cpu(), batch["labels"]

        return classification_details(pairs(), list(artifacts["label_names"]))
