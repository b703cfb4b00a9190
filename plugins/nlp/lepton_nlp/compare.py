"""Does fine-tuning the pretrained MiniLM beat the bag-of-ngrams baseline? Prints both.

The default demo data is too easy to tell them apart (the baseline is near 0.98), so
this uses a harder, realistic setting made from the same generator: few labelled
tickets written one way (lexicon ``a``: "refund", "package", "password") and
validation tickets written another way (lexicon ``b``: "reimbursement", "parcel",
"passcode"). Both models train on the same CSV files, in this process
(``engine.loop.run_local``, no Ray), through the real task and config code::

    python -m lepton_nlp.compare                # needs: pip install 'lepton-nlp[pretrained]'
    python -m lepton_nlp.compare --json         # machine-readable

Macro F1 on the validation file is that of the last epoch (no picking the best epoch
on the data being reported).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lepton_nlp.synthetic import generate

BASELINE = [
    "task.model.name=bag",
    "trainer.epochs=30",
    "trainer.batch_size=16",
    "optimizer.lr=0.01",
]
PRETRAINED = [
    "task.model.name=pretrained",
    "task.data.max_length=32",
    "trainer.batch_size=16",
    "optimizer.lr=1e-4",
]


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def make_files(folder: Path, train_size: int, val_size: int, seed: int) -> tuple[Path, Path]:
    train = write_csv(
        folder / "train_lexicon_a.csv", generate(train_size, seed=seed + 1, lexicon="a")
    )
    val = write_csv(folder / "val_lexicon_b.csv", generate(val_size, seed=seed + 2, lexicon="b"))
    return train, val


def train_once(overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """Train in this process; returns the last epoch's row plus the wall time."""
    from engine.config.load import load_config
    from engine.train.loop import LoopSpec, run_local

    loaded = load_config(["task=nlp", "scaling.cpus_per_worker=2", *overrides])
    typed, info = loaded.config, loaded.info
    info.task.check(typed.task)
    started = time.perf_counter()
    ctx = run_local(
        LoopSpec(info=info, config=typed, run_dir=str(run_dir), metric="val/f1", mode="max")
    )
    last = dict(ctx.reports[-1])
    last["wall_s"] = time.perf_counter() - started
    return last


def compare(
    folder: Path,
    *,
    train_size: int = 64,
    val_size: int = 200,
    pretrained_epochs: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    train, val = make_files(folder, train_size, val_size, seed)
    data = [
        "task.data.format=csv",
        f"task.data.train={train}",
        f"task.data.val={val}",
        f"seed={seed}",
    ]
    results: dict[str, Any] = {"train_file": str(train), "val_file": str(val)}
    runs = {
        "baseline_bag": BASELINE,
        "pretrained_minilm": [*PRETRAINED, f"trainer.epochs={pretrained_epochs}"],
    }
    for name, overrides in runs.items():
        epochs = next(o for o in overrides if o.startswith("trainer.epochs=")).split("=")[1]
        row = train_once([*data, *overrides, f"trainer.checkpoint_every={epochs}"], folder / name)
        results[name] = {
            "f1": row["val/f1"],
            "accuracy": row["val/accuracy"],
            "epochs": int(epochs),
            "wall_s": round(row["wall_s"], 1),
        }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-size", type=int, default=64, help="labelled training tickets")
    parser.add_argument("--val-size", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=5, help="pretrained fine-tuning epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    from engine.errors import LeptonError

    with tempfile.TemporaryDirectory(prefix="lepton-nlp-compare-") as tmp:
        try:
            results = compare(
                Path(tmp),
                train_size=args.train_size,
                val_size=args.val_size,
                pretrained_epochs=args.epochs,
                seed=args.seed,
            )
        except LeptonError as exc:
            print(f"compare: error: {exc.message}", file=sys.stderr)
            if exc.hint:
                print(f"  {exc.hint}", file=sys.stderr)
            return exc.exit_code
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"train: {args.train_size} tickets (lexicon a); val: {args.val_size} tickets (lexicon b)")
    for name in ("baseline_bag", "pretrained_minilm"):
        r = results[name]
        print(
            f"{name:18s} macro F1 {r['f1']:.4f}  accuracy {r['accuracy']:.4f}  "
            f"({r['epochs']} epochs, {r['wall_s']:.1f} s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
