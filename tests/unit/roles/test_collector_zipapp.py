"""roles/monitoring/files/build_collector_zipapp.py: the collector as one zip application.

The role copies this one archive to every node; an unchanged collector must give the same bytes
on every build (else every converge would report a change), and the archive must run the
collector with nothing but the standard library (``python -I -S``, as the unit runs it).
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
ROLE = REPO / "roles" / "monitoring"
BUILDER = ROLE / "files" / "build_collector_zipapp.py"
NAMES = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["monitoring__module_utils"]


def build(out_dir: Path, names=NAMES, collector=ROLE / "files" / "nodefleet_collector.py"):
    return subprocess.run(
        [
            sys.executable,
            str(BUILDER),
            "--collector",
            str(collector),
            "--module-utils-dir",
            str(REPO / "plugins" / "module_utils"),
            "--out-dir",
            str(out_dir),
            *[f"--name={n}" for n in names],
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def test_two_builds_give_the_same_bytes(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    one, two = build(first), build(second)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    a, b = json.loads(one.stdout), json.loads(two.stdout)
    assert Path(a["path"]).read_bytes() == Path(b["path"]).read_bytes()
    assert a["sha256"] == b["sha256"]


def test_the_archive_holds_the_collector_and_exactly_the_listed_module_utils(tmp_path):
    result = build(tmp_path)
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(json.loads(result.stdout)["path"]) as archive:
        names = set(archive.namelist())
        main = archive.read("__main__.py")
    assert main == (ROLE / "files" / "nodefleet_collector.py").read_bytes()
    prefix = "ansible_collections/nodefleet/bitcoin/plugins/module_utils/"
    assert {n[len(prefix) :] for n in names if n.startswith(prefix) and n != prefix + "__init__.py"} == set(NAMES)
    for package in (
        "ansible_collections",
        "ansible_collections/nodefleet",
        "ansible_collections/nodefleet/bitcoin",
        "ansible_collections/nodefleet/bitcoin/plugins",
        prefix.rstrip("/"),
    ):
        assert f"{package}/__init__.py" in names


def test_the_archive_runs_the_collector_with_the_standard_library_only(tmp_path):
    result = build(tmp_path)
    assert result.returncode == 0, result.stderr
    run = subprocess.run(
        [sys.executable, "-I", "-S", json.loads(result.stdout)["path"], "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "--config" in run.stdout


@pytest.mark.parametrize("name", ["../safe_fs.py", "safe_fs", "missing_module.py"])
def test_a_bad_module_name_is_refused_naming_it(tmp_path, name):
    result = build(tmp_path, names=[name])
    assert result.returncode == 2
    assert f"--name {name}" in result.stderr
    assert list(tmp_path.iterdir()) == []
