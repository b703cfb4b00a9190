"""The from-scratch models: shapes, padding does not change the answer, gradients flow."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from nlp_testdata import single_thread

from lepton_nlp.config import NLPModelConfig
from lepton_nlp.data import PadCollate, TokenizedDataset, pad_ids
from lepton_nlp.models import build_model, masked_max, masked_mean


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


SCRATCH = ["bag", "cnn", "bilstm", "transformer"]


def _model(name: str) -> torch.nn.Module:
    cfg = NLPModelConfig(
        name=name, embed_dim=16, hidden_dim=24, num_layers=2, num_heads=2, dropout=0.1
    )
    torch.manual_seed(0)
    return build_model(cfg, vocab_size=50, num_classes=3, pad_id=0, max_tokens=20)


def test_pad_ids_and_collate() -> None:
    batch = pad_ids([[5, 6, 7], [8]], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    ds = TokenizedDataset([[3, 4], [5]], [1, 0])
    out = PadCollate(pad_id=9)([ds[0], ds[1]])
    assert out["input_ids"].tolist() == [[3, 4], [5, 9]] and out["labels"].tolist() == [1, 0]
    with pytest.raises(ValueError, match="labels"):
        TokenizedDataset([[1]], [0, 1])


def test_masked_pooling_ignores_padding() -> None:
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert masked_mean(x, mask).item() == 2.0
    assert masked_max(x, mask).item() == 3.0


@pytest.mark.parametrize("name", SCRATCH)
def test_shapes_and_padding_invariance(name: str) -> None:
    model = _model(name).eval()
    short = pad_ids([[3, 4, 5], [6]], pad_id=0)
    padded = pad_ids([[3, 4, 5, 0, 0, 0][:3], [6]], pad_id=0)
    padded["input_ids"] = torch.cat([padded["input_ids"], torch.zeros(2, 4, dtype=torch.long)], 1)
    padded["attention_mask"] = torch.cat(
        [padded["attention_mask"], torch.zeros(2, 4, dtype=torch.long)], 1
    )
    with torch.no_grad():
        a = model(short["input_ids"], short["attention_mask"])
        b = model(padded["input_ids"], padded["attention_mask"])
        alone = model(*pad_ids([[6]], 0).values())
    assert a.shape == (2, 3)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a[1:], alone, atol=1e-5, rtol=1e-5)  # batch-mates do not leak in


@pytest.mark.parametrize("name", SCRATCH)
def test_a_few_steps_fit_a_tiny_problem(name: str) -> None:
    model = _model(name).train()
    batch = pad_ids([[1, 2, 3], [4, 5], [6, 7, 8, 9], [10]], pad_id=0)
    labels = torch.tensor([0, 1, 2, 0])
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    first = None
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(model(**batch), labels)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 2


def test_transformer_clips_sequences_longer_than_its_positions() -> None:
    model = _model("transformer").eval()
    long = pad_ids([list(range(1, 40))], pad_id=0)
    assert model(**long).shape == (1, 3)


def test_pretrained_needs_a_path() -> None:
    with pytest.raises(ValueError, match="pretrained_path"):
        build_model(
            NLPModelConfig(name="pretrained"), vocab_size=5, num_classes=2, pad_id=0, max_tokens=4
        )
