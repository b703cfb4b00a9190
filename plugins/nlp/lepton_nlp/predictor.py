"""Texts in, labels and class probabilities out: the same code for predict, evaluate, serving."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from engine.errors import DataError
from lepton_nlp.data import pad_ids
from lepton_nlp.tokenizers import TextTokenizer


class TextPredictor:
    """``predict(["text", ...])`` → ``[{"label", "label_index", "score", "probabilities"}]``.

    Uses the tokenizer saved with the model: unknown words become ``[UNK]`` and an
    empty text is classified from ``[UNK]`` alone, so any string gets an answer.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: TextTokenizer,
        label_names: Sequence[str],
        max_length: int,
        device: torch.device,
        batch_size: int = 64,
        examples: Sequence[str] = (),
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.label_names = list(label_names)
        self.max_length = max_length
        self.device = device
        self.batch_size = batch_size
        self.examples = list(examples)

    def input_schema(self) -> dict[str, Any]:
        """One input is a string (may be empty; longer texts are truncated)."""
        return {
            "title": "text",
            "description": (
                f"A text to classify into one of: {', '.join(self.label_names[:20])}"
                f"{' ...' if len(self.label_names) > 20 else ''}. Only its first "
                f"{self.max_length} tokens are used; unknown words are fine."
            ),
            "type": "string",
        }

    def example_inputs(self) -> list[str]:
        """Texts from the validation data saved with the model (one per class, up to 4)."""
        return list(self.examples) or ["an example text"]

    def _texts(self, inputs: Sequence[Any]) -> list[str]:
        if isinstance(inputs, str):
            raise DataError("predict() takes a list of strings, not one string.")
        texts = []
        for i, item in enumerate(inputs):
            if not isinstance(item, str):
                raise DataError(f"predict() input {i} is {type(item).__name__}; expected a string.")
            texts.append(item)
        return texts

    @torch.no_grad()
    def probabilities(self, inputs: Sequence[str]) -> torch.Tensor:
        """Class probabilities (N×C, on the CPU) for ``inputs``."""
        texts = self._texts(inputs)
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            ids = self.tokenizer.encode_batch(
                texts[start : start + self.batch_size], self.max_length
            )
            batch = {k: v.to(self.device) for k, v in pad_ids(ids, self.tokenizer.pad_id).items()}
            logits = self.model(batch["input_ids"], batch["attention_mask"])
            chunks.append(torch.softmax(logits.float(), dim=1).cpu())
        return torch.cat(chunks) if chunks else torch.empty(0, len(self.label_names))

    def predict(self, inputs: Sequence[str]) -> list[dict[str, Any]]:
        out = []
        for row in self.probabilities(inputs):
            idx = int(row.argmax())
            out.append(
                {
                    "label": self.label_names[idx],
                    "label_index": idx,
                    "score": float(row[idx]),
                    "probabilities": dict(zip(self.label_names, row.tolist(), strict=True)),
                }
            )
        return out
