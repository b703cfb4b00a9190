"""Opening every image's header in the driver, before Ray starts, within a time bound.

``PIL.Image.open`` reads a file's header only (format, mode, size) and decodes nothing,
so a zero-byte file, a file that is not an image, or one whose header is cut short
fails here in microseconds instead of inside a Ray worker mid-epoch. On a slow (network)
disk a few threads overlap the file reads; checking stops after
:data:`HEADER_BUDGET_S` seconds with a note, and the workers read the rest as before.
Pixel data cut short behind an intact header is found only when a worker decodes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import DataError, clip

#: Seconds the driver spends opening image headers before it stops checking.
HEADER_BUDGET_S = 10.0
#: Threads opening headers on a slow disk: their file reads overlap.
HEADER_THREADS = 8
#: Files opened per task (the deadline is checked between files).
CHUNK = 64
#: Seconds spent sequentially before deciding whether threads would help ...
PROBE_S = 0.25
#: ... which they do when fewer files than this open per second (I/O-bound).
THREADS_BELOW = 5000
#: Bad files named in the message (the total is always given).
SHOWN = 5
LOG_PREFIX = "[lepton-vision]"


@dataclass
class HeaderReport:
    total: int
    checked: int = 0
    seconds: float = 0.0
    threads: int = 1
    bad: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.checked == self.total


def header_problem(path: Path) -> str | None:
    """Why ``path``'s image header cannot be read, or ``None`` when it can."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if img.size[0] < 1 or img.size[1] < 1:
                return f"its header says {img.size[0]}x{img.size[1]} pixels"
            return None
    except UnidentifiedImageError:
        try:
            empty = path.stat().st_size == 0
        except OSError:
            empty = False
        return "empty, 0 bytes" if empty else "not an image PIL can identify"
    except Exception as exc:  # a truncated header, an unreadable file, a decompression bomb
        return clip(f"{type(exc).__name__}: {exc}", 120)


def scan_headers(
    paths: Sequence[Path],
    *,
    budget_s: float = HEADER_BUDGET_S,
    threads: int = HEADER_THREADS,
    probe: Callable[[Path], str | None] = header_problem,
) -> HeaderReport:
    """Open the headers of ``paths`` (in order) until done or ``budget_s`` has passed.

    Sequential while files open fast (the cache is warm, the disk local: threads would
    only contend for the GIL); once the first :data:`PROBE_S` seconds show fewer than
    :data:`THREADS_BELOW` files a second (a slow or network disk), ``threads`` threads.
    """
    started = time.monotonic()
    deadline = started + budget_s
    report = HeaderReport(total=len(paths))

    def work(chunk: Sequence[Path]) -> tuple[int, list[tuple[Path, str]]]:
        bad = []
        for n, path in enumerate(chunk):
            if time.monotonic() > deadline:
                return n, bad
            problem = probe(path)
            if problem is not None:
                bad.append((path, problem))
        return len(chunk), bad

    def add(result: tuple[int, list[tuple[Path, str]]]) -> None:
        report.checked += result[0]
        report.bad += result[1]

    chunks = [paths[i : i + CHUNK] for i in range(0, len(paths), CHUNK)]
    done = 0
    while done < len(chunks) and time.monotonic() < min(started + PROBE_S, deadline):
        add(work(chunks[done]))
        done += 1
    rate = report.checked / max(time.monotonic() - started, 1e-9)
    rest = chunks[done:]
    if rest and threads > 1 and rate < THREADS_BELOW:
        report.threads = threads
        with ThreadPoolExecutor(threads, thread_name_prefix="lepton-headers") as pool:
            for result in pool.map(work, rest):  # in order: the first bad files first
                add(result)
    else:
        for chunk in rest:
            add(work(chunk))
    report.seconds = time.monotonic() - started
    return report


def check_image_headers(root: Path, paths: Sequence[Path], **kwargs: object) -> HeaderReport:
    """Raise a :class:`DataError` naming the first :data:`SHOWN` unreadable images under
    ``root`` (with the total); print a note when the time bound cut the check short."""
    report = scan_headers(paths, **kwargs)  # type: ignore[arg-type]
    if report.bad:
        shown = "; ".join(f"{_name(p, root)} ({why})" for p, why in report.bad[:SHOWN])
        more = len(report.bad) - SHOWN
        of = (
            f"{report.total} images"
            if report.complete
            else f"the {report.checked} images checked (of {report.total})"
        )
        raise DataError(
            f"{len(report.bad)} of {of} under {root} cannot be opened: {shown}"
            + (f"; and {more} more." if more > 0 else "."),
            hint="Replace or delete these files (zero-byte and non-image files included): "
            "every file with an image suffix under train/ and val/ is read.",
        )
    if not report.complete:
        print(
            f"{LOG_PREFIX} opened the headers of {report.checked} of {report.total} images "
            f"under {root} in {report.seconds:.1f} s (the time bound); the rest are first "
            "read by the workers.",
            flush=True,
        )
    return report


def _name(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
