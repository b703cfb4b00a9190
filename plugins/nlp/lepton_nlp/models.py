"""Text classifiers. Every model maps ``(input_ids, attention_mask)`` (B×L) to logits (B×C).

``bag`` is the fast baseline (fastText-style: the mean of word and bigram embeddings,
then a linear layer); ``cnn``, ``bilstm`` and ``transformer`` are small sequence
encoders trained from scratch; ``pretrained`` fine-tunes a local Hugging Face encoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lepton_nlp.config import NLPModelConfig


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the sequence axis of ``x`` (B×L×D), counting only ``mask`` positions."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max over the sequence axis of ``x`` (B×L×D), ignoring padded positions."""
    filled = x.masked_fill(~mask.bool().unsqueeze(-1), torch.finfo(x.dtype).min)
    return filled.max(1).values


class BagClassifier(nn.Module):
    def __init__(self, vocab_size: int, num_classes: int, cfg: NLPModelConfig, pad_id: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.embed_dim, padding_idx=pad_id)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.embed_dim, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = masked_mean(self.embed(input_ids), attention_mask)
        return self.head(self.dropout(pooled))


class CNNClassifier(nn.Module):
    """Convolutions of widths 2, 3 and 4 over the word embeddings, max-pooled over time."""

    KERNELS = (2, 3, 4)

    def __init__(self, vocab_size: int, num_classes: int, cfg: NLPModelConfig, pad_id: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.embed_dim, padding_idx=pad_id)
        self.convs = nn.ModuleList(
            nn.Conv1d(cfg.embed_dim, cfg.hidden_dim, k, padding=k - 1) for k in self.KERNELS
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden_dim * len(self.KERNELS), num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids) * attention_mask.unsqueeze(-1).to(self.embed.weight.dtype)
        x = x.transpose(1, 2)  # B×D×L
        lengths = attention_mask.sum(1)
        pooled = []
        for conv, k in zip(self.convs, self.KERNELS, strict=True):
            h = F.relu(conv(x)).transpose(1, 2)  # B×(L+k-1)×H; position t sees tokens t-k+1..t
            positions = torch.arange(h.shape[1], device=h.device).unsqueeze(0)
            valid = positions < (lengths + k - 1).unsqueeze(1)  # windows touching a real token
            pooled.append(masked_max(h, valid))
        return self.head(self.dropout(torch.cat(pooled, dim=1)))


class BiLSTMClassifier(nn.Module):
    def __init__(self, vocab_size: int, num_classes: int, cfg: NLPModelConfig, pad_id: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.embed_dim, padding_idx=pad_id)
        self.lstm = nn.LSTM(
            cfg.embed_dim,
            cfg.hidden_dim,
            num_layers=cfg.num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(2 * cfg.hidden_dim, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        lengths = attention_mask.sum(1).clamp_min(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(
            self.embed(input_ids), lengths, batch_first=True, enforce_sorted=False
        )
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(
            out, batch_first=True, total_length=input_ids.shape[1]
        )
        return self.head(self.dropout(masked_max(out, attention_mask)))


class TransformerClassifier(nn.Module):
    """A small pre-norm Transformer encoder with learned positions, mean-pooled."""

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        cfg: NLPModelConfig,
        pad_id: int,
        max_positions: int,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.embed_dim, padding_idx=pad_id)
        self.positions = nn.Embedding(max_positions, cfg.embed_dim)
        layer = nn.TransformerEncoderLayer(
            cfg.embed_dim,
            cfg.num_heads,
            dim_feedforward=cfg.hidden_dim,
            dropout=cfg.dropout,
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.embed_dim)
        self.head = nn.Linear(cfg.embed_dim, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        length = min(input_ids.shape[1], self.positions.num_embeddings)
        input_ids, attention_mask = input_ids[:, :length], attention_mask[:, :length]
        pos = torch.arange(length, device=input_ids.device)
        x = self.embed(input_ids) + self.positions(pos).unsqueeze(0)
        x = self.encoder(x, src_key_padding_mask=~attention_mask.bool())
        return self.head(masked_mean(self.norm(x), attention_mask))


class PretrainedClassifier(nn.Module):
    """A Hugging Face encoder, mean-pooled, with a new linear head."""

    def __init__(self, path: str, num_classes: int, dropout: float) -> None:
        super().__init__()
        from lepton_nlp.pretrained import load_hf_encoder

        self.encoder = load_hf_encoder(path)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(int(self.encoder.config.hidden_size), num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return self.head(self.dropout(masked_mean(out.last_hidden_state, attention_mask)))


def build_model(
    cfg: NLPModelConfig,
    *,
    vocab_size: int,
    num_classes: int,
    pad_id: int,
    max_tokens: int,
    pretrained_path: str | None = None,
) -> nn.Module:
    if cfg.name == "pretrained":
        if pretrained_path is None:
            raise ValueError("model=pretrained needs the resolved pretrained_path")
        return PretrainedClassifier(pretrained_path, num_classes, cfg.dropout)
    if cfg.name == "transformer":
        return TransformerClassifier(vocab_size, num_classes, cfg, pad_id, max_tokens)
    classes: dict[str, type[nn.Module]] = {
        "bag": BagClassifier,
        "cnn": CNNClassifier,
        "bilstm": BiLSTMClassifier,
    }
    return classes[cfg.name](vocab_size, num_classes, cfg, pad_id)
