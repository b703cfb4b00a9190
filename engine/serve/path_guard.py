"""A serving request never makes the server read one of its files.

An offline predictor may take a file path as an input (``lepton predict`` feeds images by
path); over HTTP that would let a client read any file the server can. The protocol layer
refuses strings that are not what an HTTP input must be (:mod:`engine.serve.validation`);
this is the second line, for every task alike: while a predictor runs on a request's inputs,
an audit hook (:func:`sys.addaudithook`) refuses to open any path that equals a string of
those inputs, and the request gets a 4xx.
"""

from __future__ import annotations

import contextvars
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from engine.errors import DataError

#: The strings of the request whose inputs the predictor is running on (per thread/task:
#: ``asyncio.to_thread`` carries context variables into its thread).
_forbidden: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "lepton_serve_forbidden_paths", default=frozenset()
)
_installed = False


def _strings(value: Any, out: set[str], depth: int = 0) -> None:
    if depth > 32:
        return
    if isinstance(value, str):
        if value:
            out.add(value)
            out.add(os.path.abspath(os.path.expanduser(value)) if len(value) < 4096 else value)
    elif isinstance(value, dict):
        for v in value.values():
            _strings(v, out, depth + 1)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _strings(v, out, depth + 1)


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event != "open":
        return
    forbidden = _forbidden.get()
    if not forbidden or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    raw = os.fsdecode(os.fspath(args[0]))
    if raw in forbidden or os.path.abspath(raw) in forbidden:
        raise DataError(
            "File paths are not accepted over HTTP: send the data itself (an image as base64)."
        )


@contextmanager
def refusing_paths_in(inputs: Any) -> Iterator[None]:
    """While inside, no file named by a string in ``inputs`` can be opened."""
    global _installed
    if not _installed:
        sys.addaudithook(_hook)  # once per process; it cannot be removed
        _installed = True
    names: set[str] = set()
    _strings(inputs, names)
    token = _forbidden.set(frozenset(names))
    try:
        yield
    finally:
        _forbidden.reset(token)
