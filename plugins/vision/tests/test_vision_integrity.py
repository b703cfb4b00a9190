"""Data problems are found in ``check()`` (the driver, before Ray starts): unreadable
images named with the total, a CIFAR-10 pickle that would run code refused unrun."""

from __future__ import annotations

import os
import pickle
import struct
import time

import numpy as np
import pytest
from PIL import Image

from conftest import run_lepton
from engine.errors import DataError
from lepton_vision.cifar import check_cifar
from lepton_vision.config import VisionConfig, VisionDataConfig
from lepton_vision.data import load_cifar10
from lepton_vision.headers import check_image_headers, header_problem, scan_headers
from lepton_vision.task import VisionTask


def _folder(root, per_class=3, classes=("cat", "dog")):
    for split in ("train", "val"):
        for cls in classes:
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / split / cls / f"{i}.png")
    return root


def _check_folder(root):
    VisionTask().check(VisionConfig(data=VisionDataConfig(format="imagefolder", path=str(root))))


# -- image headers ----------------------------------------------------------------------


def test_zero_byte_and_non_image_files_are_named_validation_first(tmp_path):
    root = _folder(tmp_path / "imgs")
    (root / "train" / "dog" / "1.png").write_bytes(b"this is not a png")
    (root / "val" / "cat" / "2.png").write_bytes(b"")
    with pytest.raises(DataError) as err:
        _check_folder(root)
    message = err.value.message
    assert message.startswith(f"2 of 12 images under {root} cannot be opened: ")
    assert "val/cat/2.png (empty, 0 bytes); train/dog/1.png (not an image" in message
    assert "Replace or delete" in (err.value.hint or "")


def test_many_bad_files_name_the_first_five_and_count_all(tmp_path):
    root = _folder(tmp_path / "imgs", per_class=6)
    for i in range(6):
        (root / "train" / "cat" / f"{i}.png").write_bytes(b"")
        (root / "train" / "dog" / f"{i}.png").write_bytes(b"GIF89a")  # a header cut short
    with pytest.raises(DataError) as err:
        _check_folder(root)
    message = err.value.message
    assert message.startswith("12 of 24 images under")
    assert message.count(".png (") == 5 and message.endswith("; and 7 more.")


def test_header_problems_cover_empty_foreign_and_truncated_headers(tmp_path):
    good = tmp_path / "good.png"
    Image.new("L", (4, 4)).save(good)
    assert header_problem(good) is None
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert header_problem(tmp_path / "empty.jpg") == "empty, 0 bytes"
    (tmp_path / "text.png").write_text("hello")
    assert header_problem(tmp_path / "text.png") == "not an image PIL can identify"
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:20])  # signature, half a header
    assert header_problem(tmp_path / "cut.png") is not None


def test_the_time_bound_stops_checking_with_a_note(tmp_path, capsys):
    root = _folder(tmp_path / "imgs", per_class=40)
    paths = sorted(root.rglob("*.png"))
    report = check_image_headers(root, paths, budget_s=0.0)
    assert report.checked < report.total == 160
    note = capsys.readouterr().out
    assert f"of 160 images under {root}" in note and "the time bound" in note
    assert scan_headers(paths).complete


def test_slow_disks_use_threads_and_find_the_same_files_in_order(tmp_path):
    root = _folder(tmp_path / "imgs", per_class=150)
    paths = sorted(root.rglob("*.png"))
    for path in (paths[7], paths[500]):
        path.write_bytes(b"")

    def slow(path):
        time.sleep(0.001)  # ~1 ms a file, like a network file system
        return header_problem(path)

    threaded = scan_headers(paths, probe=slow)
    sequential = scan_headers(paths, threads=1)
    assert threaded.threads > 1 and sequential.threads == 1
    assert (
        threaded.bad
        == sequential.bad
        == [(paths[7], "empty, 0 bytes"), (paths[500], "empty, 0 bytes")]
    )


def test_a_long_class_name_is_cut_in_the_message(tmp_path):
    root = _folder(tmp_path / "imgs")
    (root / "val" / ("x" * 240)).mkdir()
    with pytest.raises(DataError, match=r"…\(4\d more characters\)"):
        _check_folder(root)


# -- CIFAR-10 python batches ---------------------------------------------------------------


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined,misc]
    """Writes strings and bytes as Python 2's cPickle wrote ``str`` (SHORT_BINSTRING /
    BINSTRING): the layout of the distributed cifar-10-batches-py files."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def _save_str(self, obj):
        raw = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = _save_str
    dispatch[str] = _save_str


def _batch(n, seed):
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"training batch",
        b"labels": rng.integers(0, 10, n).tolist(),
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def _py2_pickle(obj):
    import io

    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    # numpy 1.x, which wrote these files, named the reconstructor numpy.core.multiarray
    return buffer.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def _cifar_py(folder, dump=_py2_pickle, n=(20, 10, 8)):
    folder.mkdir(parents=True)
    names = ("data_batch_1", "data_batch_2", "test_batch")
    for name, rows, seed in zip(names, n, range(3), strict=True):
        (folder / name).write_bytes(dump(_batch(rows, seed)))
    return folder


@pytest.mark.parametrize(
    "dump",
    [
        _py2_pickle,
        lambda obj: pickle.dumps(obj, protocol=2),
        lambda obj: pickle.dumps(obj, protocol=4),
        lambda obj: pickle.dumps(obj, protocol=5),
    ],
    ids=["py2-cpickle", "protocol-2", "protocol-4", "protocol-5"],
)
def test_cifar_python_batches_load_through_the_restricted_unpickler(tmp_path, dump):
    _cifar_py(tmp_path / "cifar-10-batches-py", dump)
    check_cifar(tmp_path)
    loaded = load_cifar10(VisionDataConfig(format="cifar10", path=str(tmp_path)))
    assert loaded.train.images.shape == (30, 3, 32, 32)
    assert loaded.val.images.shape == (8, 3, 32, 32)
    expected = _batch(8, 2)
    assert loaded.val.labels == expected[b"labels"]
    assert np.array_equal(loaded.val.images.numpy().reshape(8, -1), expected[b"data"])


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_cifar(folder, marker):
    _cifar_py(folder)
    batch = {b"data": _RunsCode(marker), b"labels": [0]}
    (folder / "data_batch_2").write_bytes(pickle.dumps(batch, protocol=2))
    return folder / "data_batch_2"


def test_a_pickle_that_calls_a_function_is_refused_unrun(tmp_path):
    marker = tmp_path / "pwned"
    evil = _evil_cifar(tmp_path / "cifar-10-batches-py", marker)
    cfg = VisionConfig(data=VisionDataConfig(format="cifar10", path=str(tmp_path)))
    with pytest.raises(DataError) as err:
        VisionTask().check(cfg)
    assert str(evil) in err.value.message and f"{os.system.__module__}.system" in err.value.message
    with pytest.raises(DataError, match="was refused"):  # the workers' loader refuses it too
        load_cifar10(cfg.data)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps(print, protocol=2),  # a builtin, by reference
        pickle.dumps({b"data": np.zeros(3, dtype=object), b"labels": []}),  # no uint8 rows
        b"not a pickle at all",
        b"",
    ],
    ids=["builtins.print", "object-array", "garbage", "empty"],
)
def test_anything_but_a_plain_batch_is_a_data_error(tmp_path, payload):
    folder = _cifar_py(tmp_path / "cifar-10-batches-py")
    (folder / "test_batch").write_bytes(payload)
    with pytest.raises(DataError, match=f"{folder / 'test_batch'}"):
        check_cifar(tmp_path)


def test_cifar_binary_batch_of_the_wrong_size_fails_in_check(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    (folder / "data_batch_1.bin").write_bytes(bytes(3073 * 2))
    (folder / "test_batch.bin").write_bytes(bytes(3073 + 5))
    with pytest.raises(DataError, match=r"test_batch.bin is not a CIFAR-10 binary batch"):
        VisionTask().check(
            VisionConfig(data=VisionDataConfig(format="cifar10", path=str(tmp_path)))
        )


# -- end to end: the real CLI, before Ray starts ---------------------------------------------


def _train(tmp_path, *overrides):
    runs = tmp_path / "runs"
    started = time.perf_counter()
    out = run_lepton("train", "task=vision", *overrides, f"run.dir={runs}", timeout=120)
    return out, time.perf_counter() - started, runs


@pytest.mark.slow
def test_cli_refuses_a_zero_byte_validation_image_before_ray(tmp_path):
    root = _folder(tmp_path / "imgs")
    (root / "val" / "dog" / "0.png").write_bytes(b"")
    out, seconds, runs = _train(tmp_path, "task.data.format=imagefolder", f"task.data.path={root}")
    assert out.returncode == 2, out.stderr
    assert "val/dog/0.png (empty, 0 bytes)" in out.stderr and str(root) in out.stderr
    assert "Traceback" not in out.stderr
    assert seconds < 15, seconds  # no Ray start-up
    assert not runs.exists() or not any(runs.iterdir())


@pytest.mark.slow
def test_cli_refuses_a_cifar_pickle_that_runs_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = _evil_cifar(tmp_path / "cifar" / "cifar-10-batches-py", marker)
    out, seconds, runs = _train(
        tmp_path, "task.data.format=cifar10", f"task.data.path={tmp_path / 'cifar'}"
    )
    assert out.returncode == 2, out.stderr
    assert str(evil) in out.stderr and "system, which was refused" in out.stderr
    assert "Traceback" not in out.stderr
    assert seconds < 15, seconds
    assert not runs.exists() or not any(runs.iterdir())
    assert not marker.exists()
