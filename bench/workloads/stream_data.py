"""Generated data for the streaming benchmark (``bench/benchmarks/stream.py``).

``images``: an image folder (``OUT/train/<class>/*.png``, ``OUT/val/<class>/*.png``) of
RGB PNGs, ``--side`` pixels square. Each image is a 32x32 pattern, a sine wave whose
orientation is its class's (plus jitter, a random phase, colour and pixel noise),
enlarged to ``--side`` by pixel repetition: learnable at the task's ``image_size`` 32,
quick to encode and decode, and small on disk (PNG compresses the repeated pixels), while
decoded it is ``3 x side x side`` bytes, what an in-memory loader would hold.

``text``: a CSV (``text,label``) of short tickets, each a few words of its class's
vocabulary among shared filler words (learnable by the bag-of-words model).

Prints one JSON line: files written, bytes on disk, decoded bytes (images).
Runs as a subprocess of the benchmark (numpy and PIL are not imported by its parent).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path

import numpy as np

PATTERN = 32  # pixels of the pattern before it is enlarged


def pattern(label: int, classes: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:PATTERN, 0:PATTERN] / PATTERN
    angle = math.pi * label / classes + rng.normal(0.0, 0.08)
    freq = 2.0 + rng.uniform(-0.3, 0.3)
    wave = np.sin(
        2 * math.pi * freq * (xx * math.cos(angle) + yy * math.sin(angle))
        + rng.uniform(0, 2 * math.pi)
    )
    colour = rng.uniform(0.3, 1.0, 3)
    noise = rng.normal(0.0, 12.0, (PATTERN, PATTERN, 3))
    img = 127.5 + 100.0 * wave[..., None] * colour + noise
    return np.clip(img, 0, 255).astype(np.uint8)


def write_images(out: Path, train: int, val: int, side: int, classes: int, seed: int) -> dict:
    from PIL import Image

    rng = np.random.default_rng(seed)
    on_disk = files = 0
    for split, count in (("train", train), ("val", val)):
        for k in range(classes):
            (out / split / f"c{k}").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            label = i % classes
            img = Image.fromarray(pattern(label, classes, rng))
            if side != PATTERN:
                img = img.resize((side, side), Image.Resampling.NEAREST)
            path = out / split / f"c{label}" / f"{i:07d}.png"
            img.save(path, format="PNG", compress_level=1)
            on_disk += path.stat().st_size
            files += 1
    return {
        "files": files,
        "train": train,
        "val": val,
        "side": side,
        "classes": classes,
        "bytes_on_disk": on_disk,
        "decoded_bytes": files * 3 * side * side,
        "decoded_train_bytes": train * 3 * side * side,
    }


FILLER = [
    "please",
    "the",
    "a",
    "to",
    "my",
    "and",
    "of",
    "is",
    "it",
    "on",
    "for",
    "with",
    "this",
    "that",
    "can",
    "you",
    "our",
    "we",
    "have",
]
TOPICS = {
    "billing": "invoice charge refund payment card bill price paid overcharged receipt",
    "login": "password login account locked reset username signin twofactor email code",
    "shipping": "package delivery courier tracking shipped arrived late address parcel box",
    "bug": "crash error screen freezes button broken update app bug loading",
}


def write_text(out: Path, rows: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    labels = list(TOPICS)
    words = {k: v.split() for k, v in TOPICS.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        for i in range(rows):
            label = labels[i % len(labels)]
            # Mostly filler, a few topic words, one word of another topic now and then.
            n = int(rng.integers(8, 20))
            tokens = list(rng.choice(FILLER, size=n))
            for _ in range(int(rng.integers(1, 4))):
                tokens.insert(int(rng.integers(0, len(tokens) + 1)), str(rng.choice(words[label])))
            if rng.random() < 0.3:
                other = labels[int(rng.integers(0, len(labels)))]
                tokens.append(str(rng.choice(words[other])))
            writer.writerow([" ".join(str(t) for t in tokens), label])
    return {"rows": rows, "bytes_on_disk": out.stat().st_size}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="kind", required=True)
    im = sub.add_parser("images")
    im.add_argument("--out", type=Path, required=True)
    im.add_argument("--train", type=int, required=True)
    im.add_argument("--val", type=int, required=True)
    im.add_argument("--side", type=int, default=512)
    im.add_argument("--classes", type=int, default=4)
    im.add_argument("--seed", type=int, default=0)
    tx = sub.add_parser("text")
    tx.add_argument("--out", type=Path, required=True)
    tx.add_argument("--rows", type=int, required=True)
    tx.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    started = time.perf_counter()
    if args.kind == "images":
        info = write_images(args.out, args.train, args.val, args.side, args.classes, args.seed)
    else:
        info = write_text(args.out, args.rows, args.seed)
    info["seconds"] = round(time.perf_counter() - started, 2)
    print(json.dumps(info), flush=True)


if __name__ == "__main__":
    main()
