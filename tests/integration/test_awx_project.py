# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The repository as an AWX project (docs/awx.md, issue 15), checked offline on this machine.

- Project sync: AWX runs ``ansible-galaxy collection install -r collections/requirements.yml``
  with the project checkout as its working directory (awx/playbooks/project_update.yml:
  ``chdir: project_path``). That must install this checkout's collection, with nothing from
  the network, and the root playbooks AWX lists must then resolve against that installed copy.
- Execution environment: ``ansible-builder create`` turns execution-environment.yml into a build
  context without pulling anything; the context must pin the base image, the same ansible-core
  as requirements.in, and ansible-runner.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.integration.ci_gate import skip_or_fail

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EE = REPO / "execution-environment.yml"
# AWX's project sync (offline here: the requirements name no collection from a server).
GALAXY_INSTALL = ("collection", "install", "--offline", "-r", "collections/requirements.yml")
ROOT_PLAYBOOKS = ("site.yml", "status.yml", "heal.yml", "instance.yml", "upgrade.yml")


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        skip_or_fail(f"{name} is not installed beside {sys.executable} (scripts/setup.sh installs requirements.txt)")
    return str(path)


def clean_env() -> dict:
    """The environment of a job: no ANSIBLE_* of this test run (CI exports ANSIBLE_CONFIG)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")} | {"ANSIBLE_NOCOLOR": "1"}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The project checkout AWX makes: the repository's tracked files, nothing generated (.cache, .venv)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    dest = tmp_path_factory.mktemp("awx") / "project"
    for name in filter(None, files):
        source = REPO / os.fsdecode(name)
        if source.is_file():
            (dest / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / os.fsdecode(name), follow_symlinks=False)
    return dest


@pytest.fixture(scope="module")
def synced(project):
    """What AWX's project sync leaves: the collections installed from collections/requirements.yml."""
    dest = project.parent / "requirements_collections"
    proc = subprocess.run(
        [tool("ansible-galaxy"), *GALAXY_INSTALL, "--collections-path", str(dest)],
        cwd=project,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dest


def test_project_sync_installs_this_checkouts_collection_and_nothing_else(synced):
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    root = synced / "ansible_collections"
    installed = sorted(p.relative_to(root).as_posix() for p in root.glob("*/*"))
    assert installed == ["nodefleet/bitcoin"], installed
    tree = synced / "ansible_collections" / "nodefleet" / "bitcoin"
    manifest = json.loads((tree / "MANIFEST.json").read_text())["collection_info"]
    assert (manifest["namespace"], manifest["name"], manifest["version"]) == ("nodefleet", "bitcoin", galaxy["version"])
    for module in (REPO / "plugins" / "modules").glob("*.py"):
        assert (tree / "plugins" / "modules" / module.name).is_file(), module.name
    # galaxy.yml's build_ignore applies: no virtualenv, caches or test fleet in what AWX installs.
    for ignored in (".venv", ".cache", "build", "tests/fleet", "molecule"):
        assert not (tree / ignored).exists(), ignored


@pytest.mark.parametrize("playbook", ROOT_PLAYBOOKS)
def test_root_playbooks_resolve_against_the_synced_collection(project, synced, playbook, tmp_path):
    """AWX lists the project's root playbooks; each imports the collection's playbook and runs
    the roles of the collection the sync installed (not this checkout's .cache)."""
    proc = subprocess.run(
        [tool("ansible-playbook"), "--syntax-check", "-i", "inventories/example", playbook],
        cwd=project,
        env=clean_env() | {"ANSIBLE_COLLECTIONS_PATH": str(synced), "ANSIBLE_ROLES_PATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_execution_environment_context_is_built_offline_with_pinned_parts(tmp_path):
    context = tmp_path / "context"
    proc = subprocess.run(
        [tool("ansible-builder"), "create", "-c", str(context), "--output-filename", "Containerfile", "-f", str(EE)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    containerfile = (context / "Containerfile").read_text()

    base = re.search(r'^ARG EE_BASE_IMAGE="?([^"\s]+)"?$', containerfile, re.M)
    assert base, containerfile
    image, _, tag = base.group(1).rpartition(":")
    assert image and tag and tag != "latest" and "/" not in tag, f"base image not pinned: {base.group(1)}"

    core_pin = re.search(r"^ansible-core==(\S+)$", (REPO / "requirements.in").read_text(), re.M).group(1)
    assert f"ansible-core=={core_pin}" in containerfile, "the EE must run the ansible-core the tests run"
    assert re.search(r"ansible-runner==\d+\.\d+\.\d+", containerfile), "ansible-runner must be pinned"
    # No collection is baked in: AWX installs nodefleet.bitcoin from the project at each sync.
    assert not (context / "_build" / "requirements.yml").exists()
    assert "ansible-galaxy" not in containerfile


def test_a_broken_execution_environment_is_refused(tmp_path):
    """The offline check would catch a typo (ansible-builder validates the schema)."""
    broken = tmp_path / "execution-environment.yml"
    text = (REPO / "execution-environment.yml").read_text().replace("ansible_core:", "ansible_kore:")
    broken.write_text(text)
    proc = subprocess.run(
        [tool("ansible-builder"), "create", "-f", str(broken), "-c", str(tmp_path / "context")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0
    assert "ansible_kore" in proc.stdout + proc.stderr
