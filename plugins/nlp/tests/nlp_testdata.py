"""Small data files and configs shared by the NLP plugin's tests."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lepton_nlp.synthetic import generate


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def tickets_csv(path: Path, n: int = 200, seed: int = 0, lexicon: str = "mixed") -> Path:
    return write_csv(
        path, ["text", "label"], [list(r) for r in generate(n, seed=seed, lexicon=lexicon)]
    )


def typed_config(*overrides: str) -> tuple[Any, Any]:
    """(typed LeptonConfig, TaskInfo) for ``task=nlp`` plus overrides, as the CLI builds them."""
    from engine.config.load import load_config

    loaded = load_config(["task=nlp", *overrides])
    typed, info = loaded.config, loaded.info
    return typed, info


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread: tiny models are faster so, and a busy 2-core machine
    makes two spinning OpenMP threads many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
