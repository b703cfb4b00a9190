"""``lepton submit``'s pre-flight, without a cluster: what is uploaded, what is refused.

Unit tier: no Ray cluster. The size and path checks run before any connection, which the
tests show by pointing ``--address`` at a port nothing listens on: the error is the
check's, never "cannot reach".
"""

from __future__ import annotations

import importlib.metadata as md
import re
import zipfile
from pathlib import Path

import pytest

from engine.cli import main
from engine.errors import JobError
from engine.jobs.client import (
    MISSING_EXIT,
    MISSING_MARK,
    display_command,
    entrypoint_for,
    find_token,
    resolve_address,
)
from engine.jobs.submit_command import _absolute, _Needs, check_requirements
from engine.jobs.submit_command import _main as check_main
from engine.jobs.upload import (
    LIMIT_BYTES,
    add_plugin,
    check_size,
    pack,
    parse_ignore,
    plan_upload,
)

NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing answers there


def _touch(root: Path, rel: str, text: str = "x") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _files(plan) -> set[str]:
    return {e.arcname for e in plan.entries}


def test_a_project_with_a_120_mib_file_is_refused_before_any_upload(tmp_path, monkeypatch, capsys):
    (tmp_path / "data").mkdir()
    with open(tmp_path / "data" / "digits-big.npy", "wb") as f:
        f.truncate(120 * 1024 * 1024)  # sparse: 120 MiB to the upload, nothing on disk
    _touch(tmp_path, "data/labels.csv", "a,b\n")
    monkeypatch.chdir(tmp_path)
    code = main(
        ["submit", "--address", NOWHERE, "--", "train", "task=vision", f"run.dir={tmp_path}/runs"]
    )
    out, err = capsys.readouterr()
    assert code == 2
    assert (
        "data/digits-big.npy (120.0 MiB)" in err and "over the Jobs API's limit of 100 MiB" in err
    )
    assert ".rayignore" in err  # the fix
    assert "Cannot reach" not in err and "Traceback" not in err  # refused before connecting
    assert out.splitlines()[1].split() == ["120.0", "MiB", "data/digits-big.npy"]  # biggest first


def test_excludes_venv_git_runs_wandb_caches_and_ignore_files(tmp_path):
    keep = [
        "conf/config.yaml",  # a config.yaml alone is not a run directory
        "conf/experiment/fast.yaml",
        "data/small.csv",
        "src/mycode.py",
        "notes/keep.log",
        "nested/runs/x.txt",  # only the top-level runs/ is a run root
    ]
    dropped = [
        ".venv/lib/site.py",
        "venv/bin/python",
        ".git/HEAD",
        "runs/vision-1/config.yaml",
        "outputs/2026-01-01/.hydra/config.yaml",
        "wandb/run-1/files/output.log",
        "src/__pycache__/mycode.cpython-311.pyc",
        "src/stray.pyc",
        ".mypy_cache/x.json",
        ".pytest_cache/v/cache",
        ".ruff_cache/a",
        ".lepton-cluster/state.json",
        "mypkg.egg-info/PKG-INFO",
        "experiments/old-run/metrics.jsonl",  # a run directory anywhere
        "experiments/old-run/checkpoint_000000/model.safetensors",
        "experiments/sweep-1/sweep.json",
        "debug.log",  # *.log from .gitignore
        "secret/key.txt",  # /secret/ from .gitignore
        "data/raw/huge.parquet",  # raw/ from data/.rayignore
        "elsewhere/runs-here/a.txt",  # run.dir inside the project
    ]
    for rel in keep + dropped:
        _touch(tmp_path, rel)
    _touch(tmp_path, ".gitignore", "# comment\n*.log\n!notes/keep.log\n/secret/\n")
    _touch(tmp_path, "data/.rayignore", "raw/\n")
    plan = plan_upload(tmp_path, exclude=[tmp_path / "elsewhere" / "runs-here"])
    assert _files(plan) == {*keep, ".gitignore", "data/.rayignore"}
    assert plan.total == sum(e.size for e in plan.entries)
    assert "file(s)" in plan.describe().splitlines()[0]


def test_ignore_patterns_follow_git():
    rules = parse_ignore("**/tmp\ndocs/*.md\n/top.txt\nbuild/\n[ab].bin\n")

    def ignored(rel: str, is_dir: bool = False) -> bool:
        from engine.jobs.upload import _ignored

        return _ignored(rules, rel, is_dir)

    assert ignored("tmp", True) and ignored("a/b/tmp", True)
    assert ignored("docs/x.md") and not ignored("other/docs/x.md")  # anchored: has a slash
    assert ignored("top.txt") and not ignored("sub/top.txt")
    assert ignored("build", True) and not ignored("build")  # dir-only
    assert ignored("x/a.bin") and not ignored("c.bin")
    nested = parse_ignore("*.csv\n", base="data")
    from engine.jobs.upload import _ignored

    assert _ignored(nested, "data/x.csv", False) and not _ignored(nested, "x.csv", False)


def test_check_size_names_the_biggest_files(tmp_path):
    _touch(tmp_path, "a.txt", "a" * 10)
    _touch(tmp_path, "b.txt", "b" * 30)
    plan = plan_upload(tmp_path)
    check_size(plan, limit=40)
    with pytest.raises(JobError, match=r"Biggest: b\.txt \(30 B\), a\.txt \(10 B\)"):
        check_size(plan, limit=39)
    assert LIMIT_BYTES == 100 * 1024 * 1024


def test_the_zip_holds_exactly_the_plan_and_is_the_same_for_the_same_files(tmp_path):
    project = tmp_path / "p"
    _touch(project, "conf/config.yaml", "a: 1\n")
    _touch(project, "data/x.csv", "1,2\n")
    _touch(project, ".venv/junk", "no")
    plan = plan_upload(project)
    first, second = pack(plan, tmp_path), pack(plan, tmp_path)
    with zipfile.ZipFile(first) as zf:
        assert sorted(zf.namelist()) == ["conf/config.yaml", "data/x.csv"]
        assert zf.read("conf/config.yaml") == b"a: 1\n"
    assert first.read_bytes() == second.read_bytes()  # Ray skips a package it already has


def test_a_local_plugin_travels_with_its_entry_point(tmp_path):
    plugin = tmp_path / "lepton-churn"
    _touch(
        plugin,
        "pyproject.toml",
        '[project]\nname = "lepton-churn"\nversion = "0.3.1"\n'
        '[project.entry-points.lepton]\nchurn = "lepton_churn.plugin"\n',
    )
    _touch(plugin, "lepton_churn/__init__.py", "")
    _touch(plugin, "lepton_churn/plugin.py", "TASK = 1\n")
    _touch(plugin, "lepton_churn/conf/task/churn.yaml", "name: churn\n")
    _touch(plugin, "lepton_churn/__pycache__/plugin.cpython-311.pyc", "")
    project = tmp_path / "project"
    _touch(project, "conf/config.yaml")
    plan = plan_upload(project)
    assert add_plugin(plan, plugin) == ("lepton-churn", "0.3.1")
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(pack(plan, tmp_path)) as zf:
        zf.extractall(unpacked)
    assert (unpacked / "lepton_churn" / "conf" / "task" / "churn.yaml").is_file()
    assert not (unpacked / "lepton_churn" / "__pycache__").exists()
    # On the cluster the working directory is on sys.path: the entry point is found there.
    (dist,) = md.distributions(path=[str(unpacked)])
    assert dist.metadata["Name"] == "lepton-churn" and dist.version == "0.3.1"
    assert [(ep.group, ep.name, ep.value) for ep in dist.entry_points] == [
        ("lepton", "churn", "lepton_churn.plugin")
    ]


def test_a_plugin_dir_without_an_entry_point_is_refused(tmp_path):
    _touch(tmp_path, "pyproject.toml", '[project]\nname = "x"\nversion = "1"\n')
    with pytest.raises(JobError, match=r"no \[project.entry-points.lepton\]"):
        add_plugin(plan_upload(tmp_path), tmp_path)


def test_a_relative_path_is_refused_unless_the_cluster_is_this_machine(tmp_path, capsys):
    needs = _Needs(tmp_path)
    needs.path("runs", "run.dir")
    needs.path("s3://bucket/runs", "run.dir")  # a URI means the same everywhere
    needs.path("/abs/runs", "run.dir")
    assert needs.relative == [("run.dir", "runs")]
    assert needs.inside_project == [tmp_path / "runs"]  # left out of the upload
    job = ["train", "task=vision", "run.dir=runs"]
    with pytest.raises(JobError, match="run.dir=runs is a relative path") as caught:
        _absolute(job, needs, tmp_path, same_machine=False)
    assert "s3://" in (caught.value.hint or "")
    sent = _absolute(job, needs, tmp_path, same_machine=True)
    assert sent == ["train", "task=vision", f"run.dir={tmp_path / 'runs'}"]
    assert needs.run_dir == str(tmp_path / "runs")
    evaluate = _Needs(tmp_path)
    evaluate.path("runs/a", "the run to evaluate")
    evaluate.path("out.json", "-o")
    sent = _absolute(["evaluate", "runs/a", "-o=out.json"], evaluate, tmp_path, True)
    assert sent == ["evaluate", str(tmp_path / "runs/a"), f"-o={tmp_path / 'out.json'}"]
    assert "is sent as" in capsys.readouterr().out


def test_bad_commands_are_refused_before_connecting(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["submit", "--address", NOWHERE, "--", "train", "--config-dir", "/etc", "task=x"])
    assert code == 2
    assert "--config-dir /etc must be a relative path inside the project" in capsys.readouterr().err
    assert main(["submit", "--", "serve", "runs/x"]) == 2
    assert "runs one of train, tune, evaluate" in capsys.readouterr().err
    assert main(["submit", "--", "train", "--bogus", "task=vision"]) == 2
    assert "`lepton train` does not take --bogus" in capsys.readouterr().err


def test_a_typo_in_the_overrides_fails_here(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["submit", "--address", NOWHERE, "--", "train", "task=vison", "run.dir=/tmp/r"])
    assert code == 2
    assert "Unknown task 'vison'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://10.0.0.5:8265", "http://10.0.0.5:8265"),
        ("https://head.example.com/", "https://head.example.com"),
    ],
)
def test_dashboard_addresses_are_taken(given, expected, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_address(given) == expected


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ("10.0.0.5:6379", "a cluster (GCS) address"),
        ("ray://10.0.0.5:10001", "a Ray Client address"),
        ("auto", "a cluster (GCS) address"),
    ],
)
def test_other_address_forms_name_the_dashboard_form(given, named, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", given)
    with pytest.raises(JobError, match=re.escape(named)) as caught:
        resolve_address(None)
    assert "RAY_ADDRESS=http://" in (caught.value.hint or "")


def test_no_address_at_all_is_explained(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(JobError, match="No cluster address"):
        resolve_address(None)


def test_token_lookup_follows_rays_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    assert find_token() is None
    _touch(tmp_path, ".ray/auth_token", "from-home\n")
    assert find_token().value == "from-home"
    _touch(tmp_path, "tok", "from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "tok"))
    assert find_token().value == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert find_token().source == "RAY_AUTH_TOKEN"
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(JobError, match="RAY_AUTH_TOKEN_PATH=.*missing is not a file"):
        find_token()


def test_the_entrypoint_checks_the_cluster_then_runs_the_command():
    entry = entrypoint_for({"lepton-engine": "0.1.0"}, ["train", "task=vision", "a=b c"])
    assert entry == (
        "python -m engine.jobs.submit_command --require lepton-engine=0.1.0 && "
        "python -m engine.cli train task=vision 'a=b c'"
    )
    assert display_command(entry) == "lepton train task=vision 'a=b c'"
    assert display_command("python script.py") == "python script.py"


def test_the_cluster_side_check_names_what_is_missing(capsys):
    engine = md.version("lepton-engine")
    assert check_requirements([f"lepton-engine={engine}"]) == []
    problems = check_requirements(["lepton-engine=9.4.0", "no-such-plugin=0.1.0"])
    assert problems == [
        f"lepton-engine {engine} is installed, but the job was checked against 9.4.0 (needs 9.4.x)",
        "no-such-plugin is not installed (the job needs 0.1.x)",
    ]
    assert check_main(["--require", "no-such-plugin=0.1.0"]) == MISSING_EXIT
    assert capsys.readouterr().err.startswith(f"{MISSING_MARK} no-such-plugin is not installed")


def test_a_jobs_api_url_in_ray_address_is_explained_to_train_and_serve(monkeypatch):
    """`make cluster-up` exports RAY_ADDRESS=http://...:8265 for `lepton submit`; a bare
    `lepton train` in that shell must say what to do instead of failing inside Ray."""
    import pytest

    from engine.errors import ClusterError
    from engine.train.cluster import ray_cluster

    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    with pytest.raises(ClusterError, match="Jobs API") as err, ray_cluster(None):
        pass
    assert "ray.address=HOST:6379" in (err.value.hint or "")
