"""What a job takes with it: the project directory, checked and packed before anything is sent.

The job's ``working_dir`` is the project directory (its ``conf/``, small data, code) plus
the sources of local plugins named with ``--plugin-dir``. :func:`plan_upload` walks it
with the excludes below and lists every file; :func:`check_size` refuses an upload over
the Jobs API's limit, naming the biggest files; :func:`pack` writes exactly the listed
files into a zip, and that zip is the ``working_dir`` Ray uploads. So the listing a user
sees is what is sent: no second set of exclusion rules (Ray's) decides it.

Left out:

- directories named ``.git``, ``.venv``, ``venv``, ``__pycache__``, ``wandb`` (W&B's local
  runs), tool caches (``.mypy_cache``, ``.pytest_cache``, ``.ruff_cache``, ``.cache``, …),
  ``*.egg-info``, and ``.lepton-cluster`` (the local cluster's state);
- run directories: ``runs/`` and ``outputs/`` at the top, any directory holding a run's
  ``metrics.jsonl`` / ``result.json`` or a sweep's ``sweep.json``, and ``run.dir`` when
  it lies inside the project;
- what ``.gitignore`` and ``.rayignore`` files exclude (each applies to its own directory
  and below; ``!pattern`` re-includes; the last matching line wins, as in git).

The limit is on the files' own sizes (what the listing shows), not on the compressed zip:
data files rarely compress, and the rule stays predictable.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from engine.errors import JobError

#: The Jobs API takes a package of at most 100 MiB (aiohttp's ``client_max_size`` on the
#: dashboard; ``ray.init`` allows 512 MiB, the Jobs API does not).
LIMIT_BYTES = 100 * 1024 * 1024
EXCLUDED_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        ".venv",
        "venv",
        "__pycache__",
        "wandb",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".ipynb_checkpoints",
        ".tox",
        ".nox",
        ".eggs",
        ".cache",
        "node_modules",
        ".lepton-cluster",
    }
)
#: Run roots at the top of a project: the default ``run.dir`` and Hydra's outputs.
TOP_RUN_DIRS = frozenset({"runs", "outputs", "multirun"})
#: A directory holding one of these is a run (or sweep) directory.
RUN_MARKERS = ("metrics.jsonl", "result.json", "sweep.json")
IGNORE_FILES = (".gitignore", ".rayignore")
#: Files shown by name in the listing; the rest are summed up in one line.
SHOWN = 10
#: A fixed time stamp for every zip entry: the same files make the same zip (Ray names a
#: package by its hash and skips uploading one it already has).
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class _Rule:
    regex: re.Pattern[str]
    negate: bool
    dir_only: bool
    anchored: bool
    base: str  # the ignore file's directory, relative to the root ("" at the top)


def _glob_regex(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end
        elif c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 1
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def parse_ignore(text: str, base: str = "") -> list[_Rule]:
    """The rules of one ``.gitignore`` / ``.rayignore`` (git's syntax, the common part)."""
    rules = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = line[1:] if negate else line
        line = line[1:] if line.startswith("\\") else line  # \# and \! name real files
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        if not line:
            continue
        anchored = "/" in line
        regex = re.compile(_glob_regex(line.lstrip("/")) + r"\Z")
        rules.append(_Rule(regex, negate, dir_only, anchored, base))
    return rules


def _ignored(rules: list[_Rule], rel: str, is_dir: bool) -> bool:
    verdict = False
    for rule in rules:
        if rule.dir_only and not is_dir:
            continue
        if rule.base:
            if not rel.startswith(rule.base + "/"):
                continue
            sub = rel[len(rule.base) + 1 :]
        else:
            sub = rel
        target = sub if rule.anchored else sub.rpartition("/")[2]
        if rule.regex.match(target):
            verdict = not rule.negate
    return verdict


@dataclass(frozen=True)
class Entry:
    arcname: str  # the path inside the job's working directory
    source: Path | None  # a file to copy, or None for generated ``text``
    size: int
    text: str = ""


@dataclass
class UploadPlan:
    root: Path
    entries: list[Entry] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # symlinked dirs, unreadable files

    @property
    def total(self) -> int:
        return sum(e.size for e in self.entries)

    def biggest(self) -> list[Entry]:
        return sorted(self.entries, key=lambda e: (-e.size, e.arcname))

    def describe(self, shown: int = SHOWN) -> str:
        """What is uploaded, biggest first, and the total."""
        files = self.biggest()
        lines = [
            f"Uploading {self.root} as the job's working directory: "
            f"{len(files)} file(s), {human(self.total)}"
        ]
        lines += [f"  {human(e.size):>10}  {e.arcname}" for e in files[:shown]]
        if len(files) > shown:
            rest = files[shown:]
            lines.append(f"  {human(sum(e.size for e in rest)):>10}  ({len(rest)} more files)")
        lines += [f"  skipped: {s}" for s in self.skipped]
        return "\n".join(lines)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def plan_upload(root: str | os.PathLike[str], exclude: list[Path] | None = None) -> UploadPlan:
    """Every file of ``root`` that goes with the job; ``exclude``: paths left out besides."""
    top = Path(root).resolve()
    if not top.is_dir():
        raise JobError(f"The project directory {top} does not exist.")
    skip = {p.resolve() for p in exclude or []}
    plan = UploadPlan(top)
    rules: list[_Rule] = []
    for here, dirs, files in os.walk(top):
        here_path = Path(here)
        rel_here = here_path.relative_to(top).as_posix()
        rel_here = "" if rel_here == "." else rel_here
        for name in IGNORE_FILES:
            ignore = here_path / name
            if ignore.is_file():
                rules += parse_ignore(ignore.read_text(errors="replace"), rel_here)
        kept = []
        for d in sorted(dirs):
            rel = f"{rel_here}/{d}" if rel_here else d
            path = here_path / d
            if _excluded_dir(d, rel, path, skip) or _ignored(rules, rel, True):
                continue
            if path.is_symlink():
                plan.skipped.append(f"{rel}/ (a symbolic link to a directory)")
                continue
            kept.append(d)
        dirs[:] = kept
        for f in sorted(files):
            rel = f"{rel_here}/{f}" if rel_here else f
            path = here_path / f
            if f.endswith(".pyc") or path.resolve() in skip or _ignored(rules, rel, False):
                continue
            try:
                info = path.stat()
            except OSError as exc:
                plan.skipped.append(f"{rel} ({exc.strerror or exc})")
                continue
            if stat.S_ISREG(info.st_mode):
                plan.entries.append(Entry(rel, path, info.st_size))
    return plan


def _excluded_dir(name: str, rel: str, path: Path, skip: set[Path]) -> bool:
    if name in EXCLUDED_DIRS or name.endswith(".egg-info"):
        return True
    if "/" not in rel and name in TOP_RUN_DIRS:
        return True
    if path.resolve() in skip:
        return True
    return any((path / marker).is_file() for marker in RUN_MARKERS)


def check_size(plan: UploadPlan, limit: int = LIMIT_BYTES) -> None:
    """Refuse, before anything is sent, an upload the Jobs API would refuse."""
    if plan.total <= limit:
        return
    worst = plan.biggest()[:3]
    named = ", ".join(f"{e.arcname} ({human(e.size)})" for e in worst)
    raise JobError(
        f"The job's upload from {plan.root} is {human(plan.total)}, over the Jobs API's limit "
        f"of {limit / 2**20:g} MiB. Biggest: {named}.",
        hint="Put large data where every node reads it (an s3:// or gs:// path in the task's "
        f"data config) and leave it out of the upload with a .rayignore line, e.g. "
        f"`{worst[0].arcname}`.",
    )


def add_plugin(plan: UploadPlan, plugin_dir: str | os.PathLike[str]) -> tuple[str, str]:
    """Add a local plugin's package and a generated ``*.dist-info`` (its name, version and
    ``lepton`` entry points) at the top of the working directory, which is on the job's
    ``sys.path``: the engine finds the plugin there as if it were installed.

    Returns its (distribution name, version).
    """
    name, version, entry_points, packages = read_plugin(plugin_dir)
    taken = {e.arcname.split("/")[0] for e in plan.entries}
    for package in packages:
        if package.name in taken:
            raise JobError(
                f"--plugin-dir {plugin_dir}: its package {package.name}/ is also a top-level "
                f"name in {plan.root}.",
                hint="Rename one of them, or leave out the --plugin-dir if the project's copy "
                "is the plugin.",
            )
        sub = plan_upload(package)
        plan.entries += [
            Entry(f"{package.name}/{e.arcname}", e.source, e.size) for e in sub.entries
        ]
    info = dist_info_name(name, version)
    for file, text in dist_info_files(name, version, entry_points).items():
        plan.entries.append(Entry(f"{info}/{file}", None, len(text.encode()), text))
    return name, version


def read_plugin(plugin_dir: str | os.PathLike[str]) -> tuple[str, str, dict[str, str], list[Path]]:
    """(name, version, lepton entry points, package dirs) from a plugin's ``pyproject.toml``."""
    where = Path(plugin_dir).resolve()
    pyproject = where / "pyproject.toml"
    if not pyproject.is_file():
        raise JobError(
            f"--plugin-dir {plugin_dir}: no pyproject.toml there.",
            hint="Name a plugin's source directory (as made by `lepton plugin new NAME`).",
        )
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        project = tomllib.loads(pyproject.read_text()).get("project", {})
    except tomllib.TOMLDecodeError as exc:
        raise JobError(f"{pyproject} is not valid TOML: {exc}") from None
    entry_points = (project.get("entry-points") or {}).get("lepton") or {}
    if not project.get("name") or not project.get("version") or not entry_points:
        raise JobError(
            f"{pyproject} has no [project] name and version, or no [project.entry-points.lepton].",
            hint="A Lepton plugin declares e.g. `[project.entry-points.lepton]` "
            '`churn = "lepton_churn.plugin"`.',
        )
    packages = []
    for target in entry_points.values():
        top = str(target).split(":")[0].split(".")[0]
        found = next((d for d in (where / top, where / "src" / top) if d.is_dir()), None)
        if found is None:
            raise JobError(
                f"--plugin-dir {plugin_dir}: its entry point names {target}, but there is no "
                f"{top}/ (or src/{top}/) in it."
            )
        if found not in packages:
            packages.append(found)
    return str(project["name"]), str(project["version"]), dict(entry_points), packages


def dist_info_name(name: str, version: str) -> str:
    return f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}.dist-info"


def dist_info_files(name: str, version: str, entry_points: dict[str, str]) -> dict[str, str]:
    eps = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    return {
        "METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        "entry_points.txt": f"[lepton]\n{eps}",
    }


def use_plugin_here(plugin_dir: str | os.PathLike[str], scratch: Path) -> None:
    """Make a local plugin source importable and discoverable in this process too, so the
    command is checked against it before it is sent (it may not be installed here)."""
    import sys

    name, version, entry_points, packages = read_plugin(plugin_dir)
    info = scratch / dist_info_name(name, version)
    info.mkdir(parents=True, exist_ok=True)
    for file, text in dist_info_files(name, version, entry_points).items():
        (info / file).write_text(text)
    for entry in [str(scratch), *(str(p.parent) for p in packages)]:
        if entry not in sys.path:
            sys.path.insert(0, entry)


def pack(plan: UploadPlan, directory: str | os.PathLike[str] | None = None) -> Path:
    """The zip of exactly the plan's files (files at its top: Ray unpacks a package it
    stored itself as it is). Same files, same bytes: an unchanged project is not resent."""
    handle, name = tempfile.mkstemp(prefix="lepton-job-", suffix=".zip", dir=directory)
    os.close(handle)
    path = Path(name)
    try:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for e in sorted(plan.entries, key=lambda e: e.arcname):
                info = zipfile.ZipInfo(str(PurePosixPath(e.arcname)), ZIP_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                if e.source is None:
                    info.external_attr = 0o644 << 16
                    zf.writestr(info, e.text)
                    continue
                info.external_attr = (os.stat(e.source).st_mode & 0o777) << 16
                with open(e.source, "rb") as src, zf.open(info, "w") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
