"""Local copies of directories that may live in an object store.

Code that needs real files (``torch.load``, a tokenizer directory, a tracker's cache)
gets them here from a :class:`~engine.runs.storage.Location`: in place when it is
local, else downloaded — for one block (:func:`local_copy`) or into a lasting cache
(:func:`cached_copy`, for immutable directories such as checkpoints).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.runs.storage import Location


def cache_dir() -> Path:
    """Where downloaded checkpoints are kept (``LEPTON_CACHE_DIR`` or ~/.cache/lepton)."""
    root = os.environ.get("LEPTON_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lepton"
    )
    return Path(root)


@contextmanager
def local_copy(location: Location) -> Iterator[Path]:
    """A local directory with the contents of ``location`` while the block runs.

    Local locations are used in place; remote ones are downloaded into a temporary
    directory that is removed afterwards.
    """
    if location.is_local:
        yield location.local_path
        return
    tmp = Path(tempfile.mkdtemp(prefix="lepton-dl-"))
    try:
        yield location.download(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cached_copy(
    location: Location, fingerprint: str, check: Callable[[Path], None] | None = None
) -> Path:
    """A lasting local copy of an immutable remote directory (e.g. a checkpoint).

    ``fingerprint`` identifies the content (a checkpoint's ``task.json``): a cached copy
    is reused only when it was made from the same content. The copy is downloaded
    beside its final name and renamed into place, so a cut-short download is never
    taken for a whole one; ``check`` (which raises when the download is not what it
    should be, e.g. a file's SHA-256 differs) runs on it before the rename, so a bad
    download never enters the cache.
    """
    if location.is_local:
        return location.local_path
    key = hashlib.sha256(f"{location.uri}\n{fingerprint}".encode()).hexdigest()[:20]
    target = cache_dir() / "checkpoints" / f"{location.name}-{key}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=target.parent))
    try:
        location.download(staging)
        if check is not None:
            check(staging)
        try:
            os.replace(staging, target)
        except OSError:  # another process won the race: use its copy
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
