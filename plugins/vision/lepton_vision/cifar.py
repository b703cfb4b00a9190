"""CIFAR-10 batch files, binary or python version, read without running their code.

The python version is a pickle per batch: a dict with a ``b"data"`` uint8 array
(N×3072) and a ``b"labels"`` list. Unpickling an arbitrary file can call any function,
and a data folder may come from anywhere, so :class:`CifarUnpickler` resolves only the
few numpy names such a batch refers to; any other global (``os.system``, ...) is refused
with a :class:`~engine.errors.DataError` naming the file and the global, before it is
called. The binary version is plain bytes and needs nothing of the kind.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import DataError, clip

ROW = 3 * 32 * 32
CIFAR_HINT = (
    "Point task.data.path at the extracted cifar-10-batches-bin (or -py) directory; "
    "nothing is downloaded at run time."
)


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as a protocol-2 pickle of ``bytes`` uses it (latin-1 only)."""
    if not isinstance(text, str) or encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin-1")


def _allowed() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core.multiarray import _reconstruct, scalar
        from numpy._core.numeric import _frombuffer
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar  # type: ignore[no-redef]
        from numpy.core.numeric import _frombuffer  # type: ignore[no-redef,attr-defined]
    names: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for package in ("numpy.core", "numpy._core"):  # written by numpy 1.x and 2.x
        names[(f"{package}.multiarray", "_reconstruct")] = _reconstruct
        names[(f"{package}.multiarray", "scalar")] = scalar
        names[(f"{package}.numeric", "_frombuffer")] = _frombuffer
    return names


class RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualname = f"{module}.{name}"


class CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays and scalars, dicts, lists, strings and numbers:
    nothing else."""

    ALLOWED = _allowed()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobal(module, name) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def load_cifar_pickle(file: Path) -> Any:
    """The object pickled in ``file``, built by :class:`CifarUnpickler` only."""
    try:
        with open(file, "rb") as fh:
            return CifarUnpickler(fh, encoding="bytes").load()
    except RefusedGlobal as exc:
        raise DataError(
            f"{file} is not a plain CIFAR-10 batch: its pickle refers to {clip(exc.qualname)}, "
            "which was refused, so the file was not loaded.",
            hint="A CIFAR-10 python batch holds only numpy arrays and lists; unpickling a "
            "file from elsewhere can run code. Use the original files, or the binary "
            "version (cifar-10-batches-bin).",
        ) from None
    except Exception as exc:  # truncated or not a pickle: any error the unpickler raises
        raise DataError(
            f"{file} is not a CIFAR-10 python batch ({type(exc).__name__}: {clip(exc)}).",
            hint=CIFAR_HINT,
        ) from None


def read_cifar_py(file: Path) -> tuple[np.ndarray, list[int]]:
    batch = load_cifar_pickle(file)
    if not isinstance(batch, dict):
        raise DataError(
            f"{file} is not a CIFAR-10 python batch: it holds a {type(batch).__name__}, "
            "not a dict with data and labels."
        )
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if not isinstance(data, np.ndarray) or not isinstance(labels, list):
        raise DataError(
            f"{file} is not a CIFAR-10 python batch: it lacks a 'data' array or a "
            f"'labels' list (keys: {clip(', '.join(map(repr, batch)))}).",
            hint=CIFAR_HINT,
        )
    if data.dtype != np.uint8 or data.size % ROW or data.size // ROW != len(labels):
        raise DataError(
            f"{file}: 'data' ({data.dtype}, shape {data.shape}) is not one uint8 row of "
            f"{ROW} values per each of its {len(labels)} labels."
        )
    if not all(isinstance(y, (int, np.integer)) and 0 <= y < 10 for y in labels):
        raise DataError(f"{file}: 'labels' are not all class numbers 0-9.")
    return data.reshape(-1, 3, 32, 32), [int(y) for y in labels]


def read_cifar_bin(file: Path) -> tuple[np.ndarray, list[int]]:
    _check_bin_size(file)
    rows = np.fromfile(file, dtype=np.uint8).reshape(-1, ROW + 1)
    return rows[:, 1:].reshape(-1, 3, 32, 32), rows[:, 0].astype(int).tolist()


def _check_bin_size(file: Path) -> None:
    size = file.stat().st_size
    if size == 0 or size % (ROW + 1):
        raise DataError(
            f"{file} is not a CIFAR-10 binary batch (size {size} is not a multiple of {ROW + 1})."
        )


def cifar_dir(path: Path) -> tuple[Path, str]:
    """The directory holding the batches, and their kind (``bin`` or ``py``)."""
    for candidate in (path, path / "cifar-10-batches-bin", path / "cifar-10-batches-py"):
        if (candidate / "data_batch_1.bin").is_file():
            return candidate, "bin"
        if (candidate / "data_batch_1").is_file():
            return candidate, "py"
    raise DataError(f"No CIFAR-10 files under {path}.", hint=CIFAR_HINT)


def cifar_files(path: Path) -> tuple[list[Path], Path, str]:
    """Training batches, the test batch (used for validation) and the kind."""
    folder, kind = cifar_dir(path)
    suffix = ".bin" if kind == "bin" else ""
    train_files = sorted(folder.glob(f"data_batch_*{suffix}"))
    test_file = folder / f"test_batch{suffix}"
    if not test_file.is_file():
        raise DataError(
            f"CIFAR-10 directory {folder} has no test_batch{suffix} (used for validation)."
        )
    return train_files, test_file, kind


def check_cifar(path: Path) -> None:
    """Every batch is readable, in the driver: binary sizes; python batches loaded
    through :class:`CifarUnpickler` (refused globals named) and their shapes checked."""
    train_files, test_file, kind = cifar_files(path)
    for file in [*train_files, test_file]:
        if kind == "bin":
            _check_bin_size(file)
        else:
            read_cifar_py(file)
