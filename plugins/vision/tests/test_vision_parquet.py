"""Vision from Parquet of encoded images (``task.data.format=parquet``), map-style and
streamed, and the errors a user's Parquet files can give.

The data: scikit-learn's digits (the digits split of seed 0, as
``test_vision_streaming.py`` writes it as an image folder) as 8x8 PNG bytes in Parquet:
``train/`` two files of two row groups each, ``val/`` one file of two row groups. The
map-style and streamed runs differ only in sample order and augmentation draws, so their
final validation accuracy is compared within :data:`ACCURACY_TOLERANCE`, the image-folder
test's tolerance on the same images.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import run_lepton
from engine.config.load import load_config
from engine.errors import DataError
from engine.runs.layout import read_metrics
from lepton_vision.config import VisionConfig, VisionDataConfig
from lepton_vision.task import VisionTask

#: Final val/accuracy gap allowed between map-style and streamed training (2 epochs, one
#: worker; accuracy steps by 1/359). The image-folder test's tolerance (seen there: 0 to
#: 0.0056).
ACCURACY_TOLERANCE = 0.03


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def write_digits_parquet(root: Path, seed: int = 0, *, struct: bool = False) -> tuple[int, int]:
    """The digits split of ``seed`` as ``root/train/part-{0,1}.parquet`` and
    ``root/val/part-0.parquet`` (2 row groups each; labels as class-name strings);
    ``struct``: images as ``{bytes, path}`` structs. Returns the split sizes."""
    from lepton_vision.data import load_digits_split

    loaded = load_digits_split(VisionDataConfig(format="digits"), seed)
    sizes = []
    for split, source, parts in (("train", loaded.train, 2), ("val", loaded.val, 1)):
        images = [_png(image[0].numpy()) for image in source.images]
        labels = [str(y) for y in source.labels]
        (root / split).mkdir(parents=True, exist_ok=True)
        bounds = np.linspace(0, len(labels), parts + 1).astype(int)
        for part, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            column: pa.Array = pa.array(images[lo:hi], pa.binary())
            if struct:
                paths = [f"{split}/{i}.png" for i in range(lo, hi)]
                column = pa.StructArray.from_arrays([column, pa.array(paths)], ["bytes", "path"])
            table = pa.table({"image": column, "label": labels[lo:hi]})
            rows_per_group = -(-(hi - lo) // 2)
            pq.write_table(
                table, root / split / f"part-{part}.parquet", row_group_size=rows_per_group
            )
        sizes.append(len(labels))
    return sizes[0], sizes[1]


@pytest.fixture(scope="module")
def digits_parquet(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits_parquet")
    return root, write_digits_parquet(root)


def _overrides(folder: Path, streaming: bool) -> list[str]:
    return [
        "task=vision",
        "task.data.format=parquet",
        f"task.data.path={folder}",
        "task.data.image_size=8",
        f"task.data.streaming={str(streaming).lower()}",
    ]


def _config(folder: Path, **data) -> VisionConfig:
    return VisionConfig(
        data=VisionDataConfig(format="parquet", path=str(folder), image_size=8, **data)
    )


# -- fast: no Ray ---------------------------------------------------------------------


def test_map_style_loads_the_same_pixels_as_the_image_folder(digits_parquet):
    from lepton_vision.data import load_digits_split

    folder, (n_train, n_val) = digits_parquet
    bundle = VisionTask().build_data(_config(folder), seed=0)
    assert (len(bundle.train), len(bundle.val)) == (n_train, n_val)
    assert bundle.artifacts["class_names"] == [str(i) for i in range(10)]
    assert bundle.artifacts["channels"] == 1 and bundle.artifacts["image_size"] == 8
    # PNG round trip: the decoded validation images are the digits' pixels, in order.
    digits = load_digits_split(VisionDataConfig(format="digits"), 0)
    val = bundle.val.source
    assert torch_equal(val.images, digits.val.images) and val.labels == digits.val.labels


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_struct_images_as_hugging_face_writes_them(tmp_path):
    _, n_val = write_digits_parquet(tmp_path, struct=True)
    assert pa.types.is_struct(
        pq.read_schema(tmp_path / "val" / "part-0.parquet").field("image").type
    )
    loaded = VisionTask().build_data(_config(tmp_path), seed=0)
    assert len(loaded.val) == n_val and loaded.artifacts["class_names"][0] == "0"


def test_a_large_split_takes_its_statistics_from_a_seeded_sample(digits_parquet, monkeypatch):
    import lepton_vision.parquet_data as parquet_data

    folder, _ = digits_parquet
    splits = parquet_data.scan_parquet_splits(_config(folder).data)
    every = parquet_data.stats_sample(splits, 1, 8, seed=0)
    assert len(every) == sum(g.rows for g in splits.groups("train"))  # all of them
    monkeypatch.setattr(parquet_data, "STATS_LIMIT", 500)
    a = parquet_data.stats_sample(splits, 1, 8, seed=0)
    assert len(a) == 500 and torch_equal(a, parquet_data.stats_sample(splits, 1, 8, seed=0))
    assert not torch_equal(a, parquet_data.stats_sample(splits, 1, 8, seed=3))
    assert not torch_equal(a, every[:500])  # the row groups in a seeded order, not the first


def test_a_column_of_another_type_in_one_file_names_the_column_and_files(tmp_path):
    root = tmp_path / "ds"
    write_digits_parquet(root)
    bad = root / "train" / "part-1.parquet"
    table = pq.read_table(bad)
    labels = pa.array([int(v) for v in table.column("label").to_pylist()], pa.int64())
    pq.write_table(table.set_column(1, "label", labels), bad)
    with pytest.raises(DataError) as err:
        VisionTask().check(_config(root))
    message = err.value.message
    assert "'label'" in message and "int64" in message and "string" in message
    assert str(bad) in message and str(root / "train" / "part-0.parquet") in message


def test_a_missing_image_column_is_named_with_the_columns_present(digits_parquet):
    folder, _ = digits_parquet
    with pytest.raises(DataError, match=r"no column 'picture' \(its columns: image, label\)"):
        VisionTask().check(_config(folder, image_column="picture"))


def test_validation_classes_must_be_training_classes(tmp_path):
    write_digits_parquet(tmp_path)
    val = tmp_path / "val" / "part-0.parquet"
    table = pq.read_table(val)
    pq.write_table(table.set_column(1, "label", pa.array(["ten"] * table.num_rows)), val)
    with pytest.raises(DataError, match="classes not in train/: ten"):
        VisionTask().build_data(_config(tmp_path), seed=0)


def test_inputs_from_rows_decodes_images_with_ids(digits_parquet):
    import torch

    from lepton_vision.predictor import VisionPredictor

    folder, _ = digits_parquet
    table = pq.read_table(folder / "val" / "part-0.parquet").slice(0, 5)
    rows = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    task, cfg = VisionTask(), _config(folder)
    pairs = task.inputs_from_rows(rows, cfg)
    import hashlib

    assert [i for i, _ in pairs] == [hashlib.sha1(b).hexdigest()[:12] for b in rows["image"]]
    assert all(x.dtype == np.uint8 and x.shape == (8, 8, 1) for _, x in pairs)
    # The predictor takes them, and sees the pixels training sees.
    bundle = task.build_data(cfg, seed=0)
    model = task.build_model(cfg, bundle.artifacts)
    predictor = VisionPredictor(model, bundle.artifacts, torch.device("cpu"))
    expected = bundle.val[0][0]
    assert torch.allclose(predictor.preprocess(pairs[0][1]), expected, atol=1e-6)
    assert len(predictor.predict([x for _, x in pairs])) == 5

    with_ids = {**rows, "id": np.array([f"r{i}" for i in range(5)], dtype=object)}
    assert [i for i, _ in task.inputs_from_rows(with_ids, cfg)] == [f"r{i}" for i in range(5)]
    cells = np.array(
        [{"bytes": b, "path": f"img/{i}.png"} for i, b in enumerate(rows["image"])], dtype=object
    )
    assert [i for i, _ in task.inputs_from_rows({"image": cells}, cfg)][:2] == [
        "img/0.png",
        "img/1.png",
    ]
    # A row that is no image (or null) fails in the predictor, for that row only.
    broken = np.array([rows["image"][0], b"not an image", None], dtype=object)
    (_, good), (_, bad), (_, empty) = task.inputs_from_rows({"image": broken}, cfg)
    assert good.shape == (8, 8, 1) and empty is None
    with pytest.raises(DataError, match="Cannot decode the base64 image"):
        predictor.predict([bad])
    with pytest.raises(DataError):
        predictor.predict([empty])
    with pytest.raises(DataError, match=r"no image column 'image' \(their columns: label\)"):
        task.inputs_from_rows({"label": rows["label"]}, cfg)


# -- end to end: the real CLI, before Ray starts ----------------------------------------


@pytest.mark.slow
def test_cli_names_the_column_of_a_schema_mismatch_without_a_traceback(tmp_path):
    root = tmp_path / "ds"
    write_digits_parquet(root)
    bad = root / "train" / "part-1.parquet"
    table = pq.read_table(bad)
    pq.write_table(table.set_column(0, "image", pa.array(["x"] * table.num_rows)), bad)
    out = run_lepton("train", *_overrides(root, True), f"run.dir={tmp_path / 'runs'}", timeout=120)
    assert out.returncode == 2, out.stderr
    assert "Column 'image' has type string in" in out.stderr and str(bad) in out.stderr
    assert "binary in" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.slow
def test_cli_names_a_damaged_row_group_that_only_a_worker_reads(tmp_path):
    """Validation images are read first on the Ray Train worker (the driver reads train
    images for the statistics): the DataError raised in Ray Data's task there reaches
    `lepton train`'s output as the user's error, naming the file and the row group."""
    root = tmp_path / "ds"
    write_digits_parquet(root)
    val = root / "val" / "part-0.parquet"
    table = pq.read_table(val)
    pq.write_table(table, val, row_group_size=-(-table.num_rows // 2), write_page_checksum=True)
    chunk = pq.read_metadata(val).row_group(1).column(0)
    end = (chunk.dictionary_page_offset or chunk.data_page_offset) + chunk.total_compressed_size
    with val.open("r+b") as f:  # inside the last data page's values: its checksum fails
        f.seek(end - 40)
        f.write(b"\xff" * 16)
    out = run_lepton(
        "train",
        *_overrides(root, True),
        "scaling.num_workers=1",
        "trainer.epochs=1",
        f"run.dir={tmp_path / 'runs'}",
        timeout=300,
    )
    assert out.returncode == 2, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-2:]
    assert last[0].startswith(f"lepton: error: Cannot read row group 1 of Parquet file {val}: ")
    assert "rewrite it from its source" in last[1]


# -- Ray: the session's cluster (2 CPUs) ----------------------------------------------


@pytest.mark.ray
def test_streaming_matches_map_style_on_one_worker(ray_cluster, digits_parquet, tmp_path):
    from engine.train.driver import train

    folder, (n_train, n_val) = digits_parquet
    last = {}
    for streaming in (False, True):
        name = "stream" if streaming else "map"
        loaded = load_config(
            [
                *_overrides(folder, streaming),
                "scaling.num_workers=1",
                "scaling.cpus_per_worker=1",  # the other CPU for Ray Data's tasks
                "trainer.epochs=2",
                f"run.dir={tmp_path}",
                f"run.name={name}",
            ]
        )
        summary = train(loaded.config, loaded.info, loaded.yaml, echo=lambda _: None)
        assert summary.status == "finished"
        rows = read_metrics(summary.run_dir)
        assert [r["epoch"] for r in rows] == [0, 1]
        assert all(r["val_samples"] == n_val for r in rows), name
        assert all(r["samples"] == n_train for r in rows), name
        last[streaming] = rows[-1]
        best = summary.best_checkpoint
    m, s = last[False], last[True]
    print(f"\nval/accuracy map-style {m['val/accuracy']:.4f}, streaming {s['val/accuracy']:.4f}")
    assert abs(m["val/accuracy"] - s["val/accuracy"]) <= ACCURACY_TOLERANCE
    assert s["val/accuracy"] > 0.9

    # lepton evaluate streams the streamed checkpoint's validation split and reproduces
    # what training recorded; lepton predict over the Parquet split (inputs_from_rows in
    # map_batches) predicts every row, with the labels evaluate scored.
    from engine.inference.evaluate import evaluate
    from engine.inference.predict import predict

    result = evaluate(best, [], output=tmp_path / "eval.json")
    assert result["samples"] == n_val
    recorded = result["recorded_metrics"]
    for key in ("val/accuracy", "val/loss"):
        assert result["metrics"][key] == pytest.approx(recorded[key], rel=1e-5, abs=1e-6)
    out = tmp_path / "val-predictions.parquet"
    assert predict(best, folder / "val", out) == {"predicted": n_val, "skipped": 0}
    import hashlib

    val = pq.read_table(folder / "val")
    truth = {
        hashlib.sha1(b).hexdigest()[:12]: y
        for b, y in zip(val["image"].to_pylist(), val["label"].to_pylist(), strict=True)
    }
    table = pq.read_table(out)
    ids, labels = table["id"].to_pylist(), table["label"].to_pylist()
    assert sorted(ids) == sorted(truth)  # every row once (the digits' PNGs are distinct)
    hits = sum(truth[i] == y for i, y in zip(ids, labels, strict=True))
    assert hits / n_val == pytest.approx(recorded["val/accuracy"], abs=1e-6)
