"""`lepton plugin new`: the generated plugin is clean, passes the contract kit, learns,
refuses bad input clearly, and (slow tier) installs and trains through the real CLI
exactly as docs/writing-a-plugin.md walks through it."""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import DataError
from engine.scaffold.plugin import MAX_NAME_LENGTH, new_plugin, render

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "writing-a-plugin.md"
LEPTON = [sys.executable, "-m", "engine.cli"]
PLUGIN_NEW = [*LEPTON, "plugin", "new"]
EXPECTED_FILES = {
    "README.md",
    "pyproject.toml",
    "lepton_{n}/__init__.py",
    "lepton_{n}/plugin.py",
    "lepton_{n}/config.py",
    "lepton_{n}/data.py",
    "lepton_{n}/model.py",
    "lepton_{n}/task.py",
    "lepton_{n}/predictor.py",
    "lepton_{n}/feedback.py",
    "lepton_{n}/streaming.py",
    "lepton_{n}/conf/task/{n}.yaml",
    "tests/conftest.py",
    "tests/test_contract.py",
    "tests/test_data.py",
}


def _run(cmd: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}
    env.pop("PYTHONPATH", None)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


# -- the files it writes -------------------------------------------------------------


@pytest.mark.parametrize("name", ["churn", "x", "a" * MAX_NAME_LENGTH])
def test_generated_plugin_is_complete(tmp_path, name):
    target = new_plugin(name, tmp_path / "plugin")
    written = {str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()}
    assert written == {f.format(n=name) for f in EXPECTED_FILES}
    for path in target.rglob("*"):
        if path.is_file():
            assert "{{" not in path.read_text(), f"unsubstituted placeholder in {path}"
    pyproject = (target / "pyproject.toml").read_text()
    assert f'{name} = "lepton_{name}.plugin"' in pyproject
    assert "[project.entry-points.lepton]" in pyproject
    assert (
        (target / f"lepton_{name}/conf/task/{name}.yaml")
        .read_text()
        .startswith("# @package _global_")
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["churn", "x", "a" * MAX_NAME_LENGTH])
def test_generated_plugin_is_ruff_clean(tmp_path, name):
    target = new_plugin(name, tmp_path / "plugin")
    for args in (["check", "--no-cache", "."], ["format", "--check", "--no-cache", "."]):
        out = _run([sys.executable, "-m", "ruff", *args], cwd=target)
        assert out.returncode == 0, out.stdout + out.stderr


def test_plugin_new_writes_into_lepton_name_by_default(tmp_path, monkeypatch, capsys):
    from engine.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["plugin", "new", "default_dir"]) == 0
    assert (tmp_path / "lepton-default-dir" / "lepton_default_dir" / "task.py").is_file()
    out = capsys.readouterr().out
    assert f"pip install -e {tmp_path / 'lepton-default-dir'}" in out
    assert "lepton train task=default_dir" in out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (
        main(["plugin", "new", "into_empty", "--dir", str(empty)]) == 0
    )  # an empty directory is fine


@pytest.mark.slow
def test_generated_plugin_type_checks(tmp_path):
    target = new_plugin("typed_tab", tmp_path / "plugin")
    mypy = [sys.executable, "-m", "mypy", "--ignore-missing-imports", "--check-untyped-defs"]
    mypy += ["--cache-dir", str(ROOT / ".mypy_cache")]  # torch is analysed there already
    out = _run([*mypy, "lepton_typed_tab", "tests"], cwd=target)
    assert out.returncode == 0, out.stdout + out.stderr


def test_render_is_pure_and_names_classes():
    files = render("house_prices")
    task = files[Path("lepton_house_prices/task.py")]
    assert "class HousePricesTask:" in task and 'name = "house_prices"' in task
    assert 'name = "lepton-house-prices"' in files[Path("pyproject.toml")]


BAD_INPUT = [
    (["my-task"], "is not a Python identifier"),
    (["1abc"], "is not a Python identifier"),
    (["class"], "is a Python keyword"),
    (["Churn"], "must be lowercase"),
    (["a" * (MAX_NAME_LENGTH + 1)], f"the limit is {MAX_NAME_LENGTH}"),
    (["vision"], "A task named 'vision' is already installed (plugin 'vision'"),
    (["fresh", "--dir", "{occupied}"], "is not empty; refusing"),
]


def _bad_input_args(tmp_path: Path, args: list[str]) -> tuple[list[str], Path]:
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    args = [a.replace("{occupied}", str(occupied)) for a in args]
    if "--dir" not in args:
        args += ["--dir", str(tmp_path / "new")]
    return args, occupied


def _assert_refused(tmp_path: Path, occupied: Path, stderr: str, needle: str) -> None:
    assert needle in stderr
    assert stderr.startswith("lepton: error: ")
    assert "Traceback" not in stderr
    assert not (tmp_path / "new").exists()
    assert [p.name for p in occupied.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(("args", "needle"), BAD_INPUT)
def test_bad_input_is_refused_with_a_clear_message(tmp_path, capsys, args, needle):
    from engine.cli import main

    args, occupied = _bad_input_args(tmp_path, args)
    assert main(["plugin", "new", *args]) == 2
    _assert_refused(tmp_path, occupied, capsys.readouterr().err, needle)


@pytest.mark.slow
@pytest.mark.parametrize(("args", "needle"), BAD_INPUT)
def test_bad_input_exits_2_with_a_clear_message(tmp_path, args, needle):
    args, occupied = _bad_input_args(tmp_path, args)
    out = _run([*PLUGIN_NEW, *args], cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    _assert_refused(tmp_path, occupied, out.stderr, needle)


# -- the generated task, in this process (no install, no Ray) ------------------------


@pytest.fixture(scope="module")
def tabkit(tmp_path_factory):
    """The generated plugin `tabkit`, importable from a temp dir, in its own registry."""
    from engine.plugins import PluginRegistry

    target = new_plugin("tabkit", tmp_path_factory.mktemp("gen") / "lepton-tabkit")
    sys.path.insert(0, str(target))
    try:
        plugin = importlib.import_module("lepton_tabkit.plugin")
        registry = PluginRegistry()
        assert registry.add_plugin(plugin, "tabkit"), registry.problems
        yield registry
    finally:
        sys.path.remove(str(target))
        for module in [m for m in sys.modules if m.split(".")[0] == "lepton_tabkit"]:
            del sys.modules[module]


def _customers(rows: int = 300, seed: int = 0, regression: bool = False):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "id": [f"u{i}" for i in range(rows)],
            "tenure": rng.integers(1, 72, rows),
            "charges": rng.uniform(20, 120, rows).round(2),
            "plan": rng.choice(["basic", "pro"], rows),
        }
    )
    score = (frame.charges - 70) / 25 - (frame.tenure - 36) / 20 + (frame.plan == "basic") * 0.5
    frame["target"] = (3 * score + 50).round(3) if regression else np.where(score > 0, "y", "n")
    return frame


TINY = [
    "trainer.batch_size=32",
    "task.data.categorical_columns=[plan]",
    "task.data.drop_columns=[id]",
]


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_generated_task_passes_the_contract_kit(tabkit, tmp_path, kind):
    from engine.testing import check_task_contract

    suffix = "csv" if kind == "classification" else "parquet"
    path = tmp_path / f"table.{suffix}"
    frame = _customers(regression=kind == "regression")
    frame.to_csv(path, index=False) if suffix == "csv" else frame.to_parquet(path, index=False)
    report = check_task_contract(
        "tabkit", [f"task.data.path='{path}'", *TINY], tmp_path, registry=tabkit
    )
    print(report.summary())
    assert report.metric == ("val/accuracy" if kind == "classification" else "val/rmse")
    assert (report.train_size, report.val_size) == (240, 60)
    assert set(report.example_inputs[0]) == {"tenure", "charges", "plan"}


def _check(registry, path, *overrides):
    from engine.config.compose import compose
    from engine.config.load import to_typed

    typed, info = to_typed(
        compose(["task=tabkit", f"task.data.path='{path}'", *overrides], registry), registry
    )
    info.task.check(typed.task)


def test_data_mistakes_name_the_column(tabkit, tmp_path):
    path = tmp_path / "customers.csv"
    _customers().to_csv(path, index=False)
    with pytest.raises(DataError) as missing:
        _check(tabkit, path, "task.data.target_column=churned")
    assert "Target column 'churned' is not in" in missing.value.message
    assert "tenure" in str(missing.value.hint)  # lists the columns there are
    with pytest.raises(DataError) as text:
        _check(tabkit, path, "task.data.drop_columns=[id]")
    assert "Column(s) 'plan'" in text.value.message and "not numeric" in text.value.message
    assert "task.data.categorical_columns=[plan]" in str(text.value.hint)
    with pytest.raises(DataError, match=r"categorical_columns names column\(s\) not in .*: colour"):
        _check(tabkit, path, "task.data.categorical_columns=[colour]")
    with pytest.raises(DataError, match="does not exist"):
        _check(tabkit, tmp_path / "absent.csv")
    _check(tabkit, path, *TINY[1:])  # and the right columns pass


def test_streaming_check_names_the_column_without_loading_the_table(tabkit, tmp_path):
    path = tmp_path / "customers.csv"
    _customers().to_csv(path, index=False)
    streamed = "task.data.streaming=true"
    with pytest.raises(DataError, match="Target column 'churned' is not in") as missing:
        _check(tabkit, path, streamed, "task.data.target_column=churned")
    assert "tenure" in str(missing.value.hint)
    with pytest.raises(DataError, match=r"Column\(s\) 'plan'.*not numeric"):
        _check(tabkit, path, streamed, "task.data.drop_columns=[id]")
    frame = _customers()
    frame.loc[[3, 250], "target"] = None
    frame.to_csv(tmp_path / "holes.csv", index=False)
    with pytest.raises(DataError, match="has 2 missing value"):
        _check(tabkit, tmp_path / "holes.csv", streamed, *TINY[1:])
    _check(tabkit, path, streamed, *TINY[1:])


@pytest.mark.ray
def test_generated_task_streams_like_map_style(tabkit, ray_cluster, tmp_path):
    """Parquet in row groups of 70 rows through the kit's streaming check (the CSV path
    is the generated plugin's own test); then a fit on a sample (task.data.fit_rows)."""
    import lepton_tabkit
    import ray.cloudpickle
    from lepton_tabkit import data

    from engine.testing import check_streaming

    path = tmp_path / "table.parquet"
    _customers(regression=True).to_parquet(path, index=False, row_group_size=70)
    overrides = [f"task.data.path='{path}'", *TINY]
    ray.cloudpickle.register_pickle_by_value(lepton_tabkit)  # Ray's workers cannot import it
    try:
        report = check_streaming("tabkit", overrides, registry=tabkit)
    finally:
        ray.cloudpickle.unregister_pickle_by_value(lepton_tabkit)
    print(report.summary())
    assert (report.train_rows, report.val_rows) == (240, 60)
    assert {"val/rmse", "val/mae", "val/r2"} <= set(report.metrics)

    from engine.config.compose import compose
    from engine.config.load import to_typed

    args = ["task=tabkit", *overrides, "task.data.streaming=true", "task.data.fit_rows=100"]
    typed, info = to_typed(compose(args, tabkit), tabkit)
    sampled = info.task.build_data(typed.task, seed=typed.seed)
    prepared = data.prepare(typed.task.data, typed.seed)
    prepared.train = prepared.train.head(100)  # the first 100 rows of the seeded permutation
    assert sampled.artifacts == data.fit_artifacts(prepared, typed.task.data)
    assert sampled.train_rows == 240 and sampled.artifacts["target_type"] == "regression"


def test_breast_cancer_accuracy_is_near_logistic_regression(tabkit, tmp_path):
    """The MLP on a real table, against scikit-learn's scaled logistic regression."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from engine.config.compose import compose
    from engine.config.load import checkpoint_metric, to_typed
    from engine.runs.layout import read_metrics
    from engine.train.loop import LoopSpec, run_local

    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    x_train.assign(diagnosis=y_train).to_csv(tmp_path / "train.csv", index=False)
    x_val.assign(diagnosis=y_val).to_csv(tmp_path / "val.csv", index=False)
    baseline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    lr_accuracy = baseline.fit(x_train, y_train).score(x_val, y_val)

    overrides = [
        "task=tabkit",
        f"task.data.train='{tmp_path / 'train.csv'}'",
        f"task.data.val='{tmp_path / 'val.csv'}'",
        "task.data.target_column=diagnosis",
        "scaling.num_workers=1",
        "trainer.keep_checkpoints=1",
        "trainer.checkpoint_every=30",
    ]
    typed, info = to_typed(compose(overrides, tabkit), tabkit)
    metric, mode = checkpoint_metric(typed, info)
    assert (metric, mode) == ("val/accuracy", "max")
    run_local(LoopSpec(info, typed, str(tmp_path / "run"), metric, mode))
    rows = read_metrics(tmp_path / "run")
    mlp_accuracy = rows[-1]["val/accuracy"]  # the last epoch: no picking on the val set
    print(
        f"breast cancer, {len(x_val)} val rows: tabkit MLP {mlp_accuracy:.4f} after "
        f"{len(rows)} epochs, LogisticRegression {lr_accuracy:.4f}"
    )
    assert len(rows) == 30
    assert mlp_accuracy >= lr_accuracy - 0.03


# -- the worked example of docs/writing-a-plugin.md, through the real CLI -----------


def _doc_example() -> tuple[dict[str, str], list[tuple[list[str], int]], str]:
    """Files, commands (with the expected exit status) and the quoted error of the doc."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("<!-- worked-example:start -->")[1].split("<!-- worked-example:end -->")
    example, after = section[0], section[1]
    files = dict(re.findall(r"```python file=(\S+)\n(.*?)```", example, flags=re.S))
    script = re.search(r"```bash\n(.*?)```", example, flags=re.S)
    assert files and script, "the worked example lost its files or commands"
    commands = []
    for line in script.group(1).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        status = 0
        if "  # exit " in line:
            line, _, code = line.partition("  # exit ")
            status = int(code)
        commands.append((shlex.split(line), status))
    quoted_error = re.search(r"```\n(lepton: error: .*?)```", after, flags=re.S)
    assert quoted_error, "the doc no longer quotes the error of the first `lepton train`"
    return files, commands, quoted_error.group(1)


def _translate(argv: list[str]) -> list[str]:
    """A documented command as this test environment runs it."""
    if argv[:3] == ["lepton", "plugin", "new"]:
        return [*PLUGIN_NEW, *argv[3:]]
    if argv[0] == "lepton":
        return [*LEPTON, *argv[1:]]
    if argv[:3] == ["pip", "install", "-e"]:  # no network here: nothing else to fetch
        return [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-e",
            *argv[3:],
        ]
    if argv[0] == "python":
        return [sys.executable, *argv[1:]]
    if argv[0] == "pytest":
        return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *argv[1:]]
    raise AssertionError(f"the worked example uses a command this test cannot run: {argv}")


@pytest.mark.slow
def test_worked_example_from_the_docs_end_to_end(tmp_path):
    """Install, train, predict and test a generated plugin; uninstall it whatever happens."""
    files, commands, quoted_error = _doc_example()
    for name, body in files.items():
        (tmp_path / name).write_text(body, encoding="utf-8")
    outputs: dict[str, subprocess.CompletedProcess[str]] = {}
    try:
        for argv, status in commands:
            out = _run(_translate(argv), cwd=tmp_path)
            label = " ".join(argv[:2]) if status == 0 else "failing train"
            outputs.setdefault(label, out)
            assert out.returncode == status, (
                f"`{shlex.join(argv)}` exited {out.returncode}, not {status}:\n"
                f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
            )
        no_target = "task.data.target_column=left"  # not a column of churn.csv
        out = _run(
            [*LEPTON, "train", "task=churn", "task.data.path=churn.csv", no_target], tmp_path
        )
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert "Target column 'left' is not in" in out.stderr
        assert "customer_id, tenure_months" in out.stderr  # it lists the columns there are
        for name, how in (("map2", ["scaling=inprocess"]), ("stream2", STREAMED)):
            out = _run([*LEPTON, "train", *CHURN_TRAIN, f"run.name={name}", *how], tmp_path)
            assert out.returncode == 0, f"{name}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    finally:
        _run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", "lepton-churn"], cwd=tmp_path)

    assert "churn" in outputs["lepton plugins"].stdout
    failing = outputs["failing train"]
    doc_dir = "/home/you/churn-demo"  # where the doc's reader runs the example
    assert failing.stderr.strip() == quoted_error.replace(doc_dir, str(tmp_path.resolve())).strip()
    assert "Traceback" not in failing.stderr

    import pandas as pd

    churned = pd.read_csv(tmp_path / "churn.csv")["churned"]
    majority = float(churned.value_counts(normalize=True).max())
    summary = json.loads((tmp_path / "runs/first/result.json").read_text())["summary"]
    accuracy = summary["best_value"]
    print(f"churn: val/accuracy {accuracy:.4f} against majority class {majority:.4f}")
    assert summary["metric"] == "val/accuracy"
    assert accuracy >= 0.9 and accuracy >= majority + 0.15

    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["metrics"]["val/accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert evaluated["extras"]["class_names"] == ["no", "yes"]
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert len(predictions) == len(churned) and set(predictions["label"]) <= {"no", "yes"}
    assert (predictions["label"] == churned).mean() >= 0.9

    predicted = outputs["python predict_churn.py"].stdout
    assert "features: tenure_months, monthly_charges, support_calls, plan" in predicted
    assert re.search(r"^basic 3 -> yes ", predicted, flags=re.M), predicted
    assert re.search(r"^premium 60 -> no ", predicted, flags=re.M), predicted
    plugin_tests = outputs["pytest lepton-churn/tests"].stdout
    assert re.search(r"\b12 passed\b", plugin_tests), plugin_tests  # the streaming one too

    _assert_streamed_like_map_style(tmp_path / "runs", len(churned))


#: The doc's training command, for 2 epochs: map-style in-process, then streamed (1 worker).
CHURN_TRAIN = [
    "task=churn",
    "task.data.path=churn.csv",
    "task.data.target_column=churned",
    "task.data.categorical_columns=[plan]",
    "task.data.drop_columns=[customer_id]",
    "trainer.epochs=2",
    "run.dir=runs",
]
STREAMED = ["scaling.num_workers=1", "task.data.streaming=true"]
#: Final val/accuracy gap allowed between the two runs (400 validation rows: 0.03 is 12;
#: seen here: gaps of 0.0025 after 2 epochs and after 3). The runs share the split,
#: the encodings and the initial weights, and differ in the order of training rows only.
STREAMING_TOLERANCE = 0.03


def _assert_streamed_like_map_style(runs: Path, rows: int) -> None:
    from engine.runs.layout import read_metrics

    last = {name: read_metrics(runs / name)[-1] for name in ("map2", "stream2")}
    saved = {}
    for name in last:
        summary = json.loads((runs / name / "result.json").read_text())["summary"]
        task_json = runs / name / summary["best_checkpoint"] / "task.json"
        saved[name] = json.loads(task_json.read_text())["artifacts"]
    gap = abs(last["stream2"]["val/accuracy"] - last["map2"]["val/accuracy"])
    print(
        f"churn, 2 epochs: val/accuracy map-style {last['map2']['val/accuracy']:.4f}, "
        f"streamed {last['stream2']['val/accuracy']:.4f} (gap {gap:.4f})"
    )
    assert saved["stream2"] == saved["map2"]  # the same split and encodings
    assert last["stream2"]["val_samples"] == last["map2"]["val_samples"] == round(rows * 0.2)
    assert gap <= STREAMING_TOLERANCE
    assert last["stream2"]["val/accuracy"] >= 0.9


def _assert_unwritable_refused(blocker: Path, stderr: str) -> None:
    assert "Traceback" not in stderr
    assert f"Cannot write the plugin into {blocker / 'sub'}" in stderr
    assert "--dir" in stderr
    assert blocker.read_text() == "not a directory"


def test_an_unwritable_target_is_a_clear_error_in_process(tmp_path, capsys):
    from engine.cli import main

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert main(["plugin", "new", "blocked", "--dir", str(blocker / "sub")]) == 2
    _assert_unwritable_refused(blocker, capsys.readouterr().err)


@pytest.mark.slow
def test_an_unwritable_target_is_a_clear_error_and_leaves_nothing(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "plugin",
            "new",
            "blocked",
            "--dir",
            str(blocker / "sub"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    _assert_unwritable_refused(blocker, out.stderr)
