"""Where run directories live: the local disk, a shared mount, or an object store.

A :class:`Location` names one file or directory, either a local path or a URI that
``pyarrow.fs`` understands (``s3://bucket/runs``, ``gs://bucket/runs``, …; Ray Train
writes its checkpoints through the same library). The engine reads and writes its
own run files (``config.yaml``, ``metrics.jsonl``, ``result.json``, checkpoints'
``task.json``) only through this class, so every command works the same on both.

What each write promises:

- :meth:`Location.write_text` is whole-or-nothing: locally a temporary file that is
  fsynced and renamed; on an object store a single object upload, which readers see
  either complete or not at all.
- :meth:`Location.append_text` appends (fsynced) locally; object stores cannot append,
  so the object is read and uploaded again whole. Only one process (rank 0) appends to
  a given file, and the files appended to (``metrics.jsonl``) stay small.

Credentials and endpoints come from the usual environment of each store
(``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_ENDPOINT_URL`` for S3 and
S3-compatible stores, ``GOOGLE_APPLICATION_CREDENTIALS`` for GCS); every Ray node
needs the same access, as it does for Ray Train's own checkpoint uploads.

Local copies of a location's files (for one block, or cached for good) are made by
:mod:`engine.runs.local_copies`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Any

from engine.errors import StorageError

#: How often the driver and rank 0 touch remote progress files (each touch is a request).
REMOTE_POLL_S = 2.0


def is_uri(where: str | os.PathLike[str]) -> bool:
    text = os.fspath(where)
    return "://" in text and not text.startswith("file://")


@lru_cache(maxsize=16)
def _filesystem(scheme: str, bucket: str) -> Any:
    import pyarrow.fs

    try:
        fs, _ = pyarrow.fs.FileSystem.from_uri(f"{scheme}://{bucket}")
    except (OSError, ValueError) as exc:
        if _missing_bucket(exc):
            raise _no_such_bucket(scheme, bucket, f"{scheme}://{bucket}") from None
        raise StorageError(
            f"Cannot open {scheme}://{bucket}: {first_line(exc)}",
            hint=_access_hint(scheme),
        ) from None
    return fs


def first_line(exc: BaseException) -> str:
    """An exception's first line (its type name when it has no text)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _missing_bucket(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "no_such_bucket" in text or (
        "bucket" in text and ("not found" in text or "does not exist" in text)
    )


def _no_such_bucket(scheme: str, bucket: str, uri: str) -> StorageError:
    return StorageError(
        f"Cannot use {uri}: bucket {bucket!r} does not exist.",
        hint=f"Create it first (e.g. `aws s3 mb {scheme}://{bucket}`), or fix run.dir.",
    )


def _access_hint(scheme: str) -> str:
    if scheme == "s3":
        return (
            "Check the bucket name and credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or "
            "an AWS profile); for an S3-compatible store set AWS_ENDPOINT_URL."
        )
    if scheme in ("gs", "gcs"):
        return "Check the bucket name and GOOGLE_APPLICATION_CREDENTIALS."
    return "Check the URI and the credentials for that store."


class Location:
    """A local path or an object-store URI, with the file operations the engine needs."""

    __slots__ = ("_path", "scheme")

    def __init__(self, path: str, scheme: str | None = None) -> None:
        #: For a local location an absolute path; for a URI ``bucket/key…`` (no scheme).
        self._path = path.rstrip("/") or "/"
        self.scheme = scheme

    # -- naming ---------------------------------------------------------------------

    @classmethod
    def parse(cls, where: str | os.PathLike[str] | Location) -> Location:
        if isinstance(where, Location):
            return where
        text = os.fspath(where)
        if text.startswith("file://"):
            text = text[len("file://") :]
        if not is_uri(text):
            return cls(str(Path(text).expanduser().absolute()))
        scheme, _, rest = text.partition("://")
        rest = rest.split("?", 1)[0].strip("/")
        if not rest:
            raise StorageError(f"{text} names no bucket.", hint=f"Use {scheme}://<bucket>/<path>.")
        return cls(rest, scheme.lower())

    @property
    def is_local(self) -> bool:
        return self.scheme is None

    @property
    def uri(self) -> str:
        return self._path if self.scheme is None else f"{self.scheme}://{self._path}"

    @property
    def name(self) -> str:
        return self._path.rsplit("/", 1)[-1]

    @property
    def parent(self) -> Location:
        head = self._path.rsplit("/", 1)[0] if "/" in self._path else self._path
        return Location(head or "/", self.scheme)

    @property
    def local_path(self) -> Path:
        if self.scheme is not None:
            raise StorageError(f"{self.uri} is not on the local disk.")
        return Path(self._path)

    def __truediv__(self, name: str) -> Location:
        base = "" if self._path == "/" else self._path
        return Location(f"{base}/{name.strip('/')}", self.scheme)

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"Location({self.uri!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Location) and (self.scheme, self._path) == (
            other.scheme,
            other._path,
        )

    def __hash__(self) -> int:
        return hash((self.scheme, self._path))

    def __fspath__(self) -> str:
        """Local locations pass wherever a path does; a URI does not."""
        if self.scheme is not None:
            raise TypeError(f"{self.uri} is an object-store URI, not a local path")
        return self._path

    # -- the remote side --------------------------------------------------------------

    @property
    def _fs(self) -> Any:
        assert self.scheme is not None
        return _filesystem(self.scheme, self._path.split("/", 1)[0])

    def _info(self) -> Any:
        try:
            return self._fs.get_file_info(self._path)
        except OSError as exc:
            raise StorageError(
                f"Cannot reach {self.uri}: {first_line(exc)}", hint=_access_hint(self.scheme or "")
            ) from None

    def _remote_type(self) -> str:
        import pyarrow.fs

        kind = self._info().type
        if kind == pyarrow.fs.FileType.File:
            return "file"
        if kind == pyarrow.fs.FileType.Directory:
            return "dir"
        return "missing"

    # -- queries ----------------------------------------------------------------------

    def exists(self) -> bool:
        if self.scheme is None:
            return os.path.exists(self._path)
        return self._remote_type() != "missing"

    def is_file(self) -> bool:
        if self.scheme is None:
            return os.path.isfile(self._path)
        return self._remote_type() == "file"

    def is_dir(self) -> bool:
        if self.scheme is None:
            return os.path.isdir(self._path)
        return self._remote_type() == "dir"

    def size(self) -> int:
        """Size in bytes; FileNotFoundError when there is no such file."""
        if self.scheme is None:
            return os.stat(self._path).st_size
        info = self._info()
        if info.size is None:
            raise FileNotFoundError(self.uri)
        return int(info.size)

    def mtime(self) -> float:
        if self.scheme is None:
            return os.stat(self._path).st_mtime
        info = self._info()
        return info.mtime.timestamp() if info.mtime is not None else 0.0

    def children(self) -> list[Location]:
        """Entries directly inside this directory (none when it does not exist)."""
        if self.scheme is None:
            try:
                names = os.listdir(self._path)
            except (FileNotFoundError, NotADirectoryError):
                return []
            return [self / n for n in sorted(names)]
        import pyarrow.fs

        try:
            infos = self._fs.get_file_info(
                pyarrow.fs.FileSelector(self._path, allow_not_found=True)
            )
        except OSError as exc:
            raise StorageError(
                f"Cannot list {self.uri}: {first_line(exc)}", hint=_access_hint(self.scheme)
            ) from None
        return sorted(
            (Location(info.path.rstrip("/"), self.scheme) for info in infos),
            key=lambda loc: loc.name,
        )

    # -- reading ----------------------------------------------------------------------

    def read_bytes(self, offset: int = 0) -> bytes:
        """The file's bytes from ``offset`` on (a ranged read on object stores)."""
        if self.scheme is None:
            with open(self._path, "rb") as fh:
                fh.seek(offset)
                return fh.read()
        try:
            with self._fs.open_input_file(self._path) as fh:
                if offset:
                    fh.seek(offset)
                return bytes(fh.read())
        except FileNotFoundError:
            raise
        except OSError as exc:
            if "not found" in str(exc).lower() or "does not exist" in str(exc).lower():
                raise FileNotFoundError(self.uri) from None
            raise

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    # -- writing ----------------------------------------------------------------------

    def mkdir(self) -> None:
        if self.scheme is None:
            os.makedirs(self._path, exist_ok=True)
        # Object stores have no directories: a key prefix exists once a file is under it.

    def write_bytes(self, data: bytes) -> None:
        """Whole-or-nothing: readers see the old content or the new, never a part."""
        if self.scheme is None:
            os.makedirs(os.path.dirname(self._path), exist_ok=True)
            tmp = f"{self._path}.tmp-{os.getpid()}"
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self._path)
            return
        try:
            with self._fs.open_output_stream(self._path) as fh:
                fh.write(data)
        except OSError as exc:
            if _missing_bucket(exc):
                raise _no_such_bucket(self.scheme, self._path.split("/", 1)[0], self.uri) from None
            raise StorageError(
                f"Cannot write {self.uri}: {first_line(exc)}", hint=_access_hint(self.scheme)
            ) from None

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def append_text(self, text: str) -> None:
        """Append ``text``; locally a crash can at worst leave a partial last line."""
        if self.scheme is None:
            os.makedirs(os.path.dirname(self._path), exist_ok=True)
            with open(self._path, "a", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            return
        try:
            old = self.read_bytes()
        except FileNotFoundError:
            old = b""
        self.write_bytes(old + text.encode("utf-8"))

    def delete_tree(self) -> None:
        if self.scheme is None:
            shutil.rmtree(self._path, ignore_errors=True)
            return
        if self.exists():
            self._fs.delete_dir(self._path)

    def delete_file(self) -> None:
        """Remove this file; nothing happens when it is already gone."""
        if self.scheme is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
            return
        try:
            self._fs.delete_file(self._path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if not self.exists():
                return
            raise StorageError(
                f"Cannot delete {self.uri}: {first_line(exc)}", hint=_access_hint(self.scheme)
            ) from None

    # -- moving whole directories -----------------------------------------------------

    def download(self, dest: Path) -> Path:
        """Copy this directory's files into the local directory ``dest``."""
        import pyarrow.fs

        dest.mkdir(parents=True, exist_ok=True)
        if self.scheme is None:
            shutil.copytree(self._path, dest, dirs_exist_ok=True)
            return dest
        try:
            pyarrow.fs.copy_files(
                self._path,
                str(dest),
                source_filesystem=self._fs,
                destination_filesystem=pyarrow.fs.LocalFileSystem(),
            )
        except OSError as exc:
            raise StorageError(
                f"Cannot download {self.uri}: {first_line(exc)}", hint=_access_hint(self.scheme)
            ) from None
        return dest

    def upload(self, source: Path) -> None:
        """Copy the local directory ``source`` into this directory."""
        import pyarrow.fs

        if self.scheme is None:
            shutil.copytree(source, self._path, dirs_exist_ok=True)
            return
        try:
            pyarrow.fs.copy_files(
                str(source),
                self._path,
                source_filesystem=pyarrow.fs.LocalFileSystem(),
                destination_filesystem=self._fs,
            )
        except OSError as exc:
            raise StorageError(
                f"Cannot upload to {self.uri}: {first_line(exc)}", hint=_access_hint(self.scheme)
            ) from None
