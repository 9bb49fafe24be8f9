"""The local podman fleet: node image recipe (tests/image/build.sh) and tests/fleet/*.yml.

The mirror and recipe-hash tests run build.sh's read-only modes against temp files. The
lifecycle test creates a two-node fleet of its own (containers `nodefleet-it-<random>-N`) with
the real playbooks through ansible-playbook, and always removes what it created.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD = REPO_ROOT / "tests/image/build.sh"
CREATE = REPO_ROOT / "tests/fleet/create.yml"
DESTROY = REPO_ROOT / "tests/fleet/destroy.yml"


def venv_tool(name: str) -> str:
    sibling = Path(sys.executable).parent / name
    return str(sibling) if sibling.exists() else name


# --- build.sh --mirror: the Debian mirror comes from the host's apt sources ------------------

MIRROR_CASES = [
    pytest.param(
        {
            "debian.sources": (
                "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\nComponents: main\n\n"
                "Types: deb\n# a comment inside the stanza\nURIs: http://one.example/debian http://two.example/debian\n"
                "Suites: bookworm bookworm-updates\nComponents: main\n"
            )
        },
        None,
        "http://one.example/debian",
        id="deb822-skips-deb-src-takes-first-uri",
    ),
    pytest.param(
        {
            "a.sources": "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nEnabled: no\n",
            "b.sources": "Types: deb\nURIs: http://on.example/debian\nSuites: bookworm\nComponents: main\n",
        },
        None,
        "http://on.example/debian",
        id="deb822-skips-disabled-stanza",
    ),
    pytest.param(
        {"security.sources": "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n"},
        "deb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://list.example/debian bookworm main\n",
        "http://list.example/debian",
        id="sources-list-with-options-when-no-deb822-matches",
    ),
    pytest.param(
        {"other.sources.disabled": "Types: deb\nURIs: http://ignored.example/debian\nSuites: bookworm\n"},
        "deb http://list.example/debian bookworm-updates main\n",
        None,
        id="no-source-for-the-suite",
    ),
]


@pytest.mark.parametrize(("sources", "sources_list", "expected"), MIRROR_CASES)
def test_mirror_is_read_from_the_apt_sources(tmp_path, sources, sources_list, expected):
    sources_dir = tmp_path / "sources.list.d"
    sources_dir.mkdir()
    for name, text in sources.items():
        (sources_dir / name).write_text(text)
    sources_list_path = tmp_path / "sources.list"
    if sources_list is not None:
        sources_list_path.write_text(sources_list)
    env = {k: v for k, v in os.environ.items() if k != "NODEFLEET_DEBIAN_MIRROR"}
    env.update(NODEFLEET_APT_SOURCES_DIR=str(sources_dir), NODEFLEET_APT_SOURCES_LIST=str(sources_list_path))
    result = subprocess.run(["bash", str(BUILD), "--mirror"], env=env, capture_output=True, text=True, timeout=30)
    if expected is None:
        assert result.returncode != 0
        assert "no apt source for bookworm" in result.stderr
        assert "NODEFLEET_DEBIAN_MIRROR" in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == expected


def test_mirror_override_wins(tmp_path):
    env = {
        **os.environ,
        "NODEFLEET_APT_SOURCES_DIR": str(tmp_path),
        "NODEFLEET_APT_SOURCES_LIST": str(tmp_path / "none"),
        "NODEFLEET_DEBIAN_MIRROR": "http://override.example/debian",
    }
    result = subprocess.run(["bash", str(BUILD), "--mirror"], env=env, capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == "http://override.example/debian"


# --- build.sh --print: the tag is the hash of the recipe -------------------------------------


def print_tag(image_dir: Path) -> str:
    result = subprocess.run(
        ["bash", str(image_dir / "build.sh"), "--print"], capture_output=True, text=True, check=True, timeout=30
    )
    return result.stdout.strip()


def test_tag_follows_the_recipe(tmp_path):
    recipe = tmp_path / "image"
    shutil.copytree(REPO_ROOT / "tests/image", recipe)
    original = print_tag(recipe)
    assert original == print_tag(REPO_ROOT / "tests/image"), "the tag depends on the recipe's content, not its place"
    assert original.startswith("localhost/nodefleet-node:")

    packages = recipe / "packages.txt"
    packages.write_text(packages.read_text() + "curl\n")
    assert print_tag(recipe) != original, "a package list change must change the tag"

    packages.write_text(packages.read_text().replace("curl\n", ""))
    assert print_tag(recipe) == original, "the same recipe must give the same tag"

    extra = recipe / "files/rootfs/etc/motd"
    extra.parent.mkdir(parents=True)
    extra.write_text("nodefleet\n")
    assert print_tag(recipe) != original, "a file copied into the image must change the tag"


def test_unknown_argument_is_refused():
    result = subprocess.run(["bash", str(BUILD), "--bogus"], capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "unknown argument: --bogus" in result.stderr


# --- create.yml / destroy.yml on real podman -------------------------------------------------

# In CI (.ci/run sets CI) a missing podman is a failure, not a skip: setup.sh installs it.
needs_podman = pytest.mark.skipif(
    not os.environ.get("CI")
    and (os.geteuid() != 0 or shutil.which("podman") is None or shutil.which("debootstrap") is None),
    reason="outside CI only: the fleet needs root, podman and debootstrap (scripts/setup.sh)",
)


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check, timeout=120)


def playbook(playbook_path: Path, inventory: Path, *extra: str) -> dict:
    """Run a playbook with the json callback; return the parsed report (fails on rc != 0)."""
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
        "ANSIBLE_STDOUT_CALLBACK": "json",
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
    }
    result = subprocess.run(
        [venv_tool("ansible-playbook"), "-i", str(inventory), str(playbook_path), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads(result.stdout)
    report["rc"] = result.returncode
    return report


def changed(report: dict) -> int:
    return report["stats"]["localhost"]["changed"]


def task_result(report: dict, name: str) -> dict:
    for play in report["plays"]:
        for task in play["tasks"]:
            if task["task"]["name"] == name:
                return task["hosts"]["localhost"]
    raise AssertionError(f"task {name!r} not in the report")


def container_ids(names: list[str]) -> dict[str, str]:
    ids = {}
    for name in names:
        result = podman("container", "inspect", "--format", "{{.Id}} {{.State.Status}}", name, check=False)
        if result.returncode == 0:
            cid, status = result.stdout.split()
            ids[name] = f"{cid}:{status}"
    return ids


@pytest.fixture
def fleet(tmp_path):
    """A two-host inventory of this test's own containers; removes them whatever happens."""
    tag = f"it-{uuid.uuid4().hex[:8]}"
    hosts = [f"{tag}-node1", f"{tag}-node2"]
    lines = ["fleet:", "  hosts:"]
    for host in hosts:
        lines += [f"    {host}:", f"      ansible_host: nodefleet-{host}"]
    lines += ["  vars:", "    ansible_connection: podman_pipelined"]
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("\n".join(lines) + "\n")
    containers = [f"nodefleet-{host}" for host in hosts]
    bystander = f"nodefleet-{tag}-bystander"
    yield {"inventory": inventory, "hosts": hosts, "containers": containers, "bystander": bystander, "tmp": tmp_path}
    for name in [*containers, bystander]:
        podman("rm", "--force", "--time", "5", name, check=False)


@needs_podman
def test_fleet_lifecycle(fleet):
    inventory, containers = fleet["inventory"], fleet["containers"]

    # Build (or reuse) the image first, so check mode below has something to compare with.
    image = subprocess.run([str(BUILD)], capture_output=True, text=True, check=True, timeout=900).stdout.split()[-1]

    # Check mode reports the change and creates nothing.
    report = playbook(CREATE, inventory, "--check", "--diff")
    assert report["rc"] == 0
    assert changed(report) >= 1
    assert container_ids(containers) == {}

    # Create: every host becomes a running systemd container named after the inventory.
    report = playbook(CREATE, inventory)
    assert report["rc"] == 0, json.dumps(report["stats"])
    assert changed(report) >= 1
    first = container_ids(containers)
    assert set(first) == set(containers)
    assert all(state.endswith(":running") for state in first.values())
    for host, name in zip(fleet["hosts"], containers):
        inspect = json.loads(podman("container", "inspect", name).stdout)[0]
        assert inspect["ImageName"] == image
        assert inspect["OCIRuntime"] == "runc"
        assert inspect["Config"]["Hostname"] == host
        assert podman("exec", name, "systemctl", "is-system-running", check=False).stdout.strip() == "running"
        assert podman("exec", name, "systemctl", "is-active", "supervisor", "tor@default").stdout.split() == [
            "active",
            "active",
        ]

    # Nodes resolve each other by inventory name on the fleet network (fleet peering and the
    # molecule checks rely on it; a network without DNS failed here on a fresh machine).
    for name, other in ((containers[0], fleet["hosts"][1]), (containers[1], fleet["hosts"][0])):
        answer = podman("exec", name, "getent", "hosts", other, check=False)
        assert answer.returncode == 0 and answer.stdout.split(), f"{name} cannot resolve {other}: {answer.stderr}"

    # Second run: nothing changes, the same containers keep running.
    report = playbook(CREATE, inventory)
    assert report["rc"] == 0
    assert changed(report) == 0
    assert container_ids(containers) == first

    # Destroy removes exactly the fleet's containers, not another nodefleet container.
    podman("run", "--detach", "--name", fleet["bystander"], image, "sleep", "300")
    report = playbook(DESTROY, inventory)
    assert report["rc"] == 0
    assert changed(report) >= 1
    assert container_ids(containers) == {}
    assert fleet["bystander"] in container_ids([fleet["bystander"]])

    report = playbook(DESTROY, inventory)
    assert report["rc"] == 0
    assert changed(report) == 0


@needs_podman
def test_create_refuses_a_host_whose_ansible_host_is_not_its_container(fleet):
    inventory = fleet["inventory"]
    wrong = fleet["hosts"][1]
    inventory.write_text(inventory.read_text().replace(f"ansible_host: nodefleet-{wrong}", "ansible_host: elsewhere"))
    report = playbook(CREATE, inventory)
    assert report["rc"] != 0
    failure = task_result(report, "Check the connection variables of every fleet host")
    messages = [item.get("msg", "") for item in failure["results"] if item.get("failed")]
    assert len(messages) == 1
    assert wrong in messages[0]
    assert "elsewhere" in messages[0]
    assert container_ids(fleet["containers"]) == {}


@needs_podman
def test_create_fails_early_when_the_fleet_network_has_no_dns(fleet):
    network = f"nodefleet-{fleet['hosts'][0]}-nodns"
    podman("network", "create", "--internal", "--disable-dns", network)
    try:
        report = playbook(CREATE, fleet["inventory"], "-e", f"nodefleet_network={network}")
    finally:
        podman("network", "rm", "--force", network, check=False)
    assert report["rc"] != 0
    failure = task_result(report, "Fail early when the fleet network has no DNS")
    assert failure.get("failed"), failure
    assert network in failure["msg"] and "scripts/setup.sh" in failure["msg"]
    assert container_ids(fleet["containers"]) == {}
