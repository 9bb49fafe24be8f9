"""Infrastructure checks of the local fleet: what every node must be before the roles run.

Each fleet host is a podman container running systemd as PID 1, with Debian's own
supervisor.service and tor@default.service, reachable by Ansible, reachable from the other
nodes by inventory name, unable to reach anything past this machine, and created from the
image of the current recipe (tests/image/build.sh).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# pytest runs with --import-mode=importlib (pyproject.toml): make the sibling helper importable.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet_inventory import REPO_ROOT, ansible_env, fleet_nodes, inventory_path, tool

NODES = fleet_nodes()
CONTAINER_TO_HOST = {container: host for host, container in NODES.items()}
testinfra_hosts = [f"podman://{container}" for container in NODES.values()]

# Connect to a port nobody listens on: "refused" proves the peer answered (reachable).
PROBE = """
import socket, sys
s = socket.socket()
s.settimeout(5)
try:
    s.connect((sys.argv[1], 9))
    print("open")
except ConnectionRefusedError:
    print("refused")
except OSError as exc:
    print("error", exc)
"""


def inventory_hostname(host) -> str:
    return CONTAINER_TO_HOST[host.backend.name]


def test_systemd_is_pid1_and_running(host):
    assert host.file("/proc/1/comm").content_string.strip() == "systemd"
    state = host.run("systemctl is-system-running")
    failed = host.run("systemctl --failed --no-legend --plain").stdout
    assert state.stdout.strip() == "running", f"failed units: {failed}"


def test_hostname_is_the_inventory_name(host):
    assert host.check_output("hostname") == inventory_hostname(host)


def test_supervisord_runs_with_a_private_socket(host):
    assert host.service("supervisor").is_running
    assert host.service("supervisor").is_enabled
    sock = host.file("/var/run/supervisor.sock")
    assert sock.is_socket
    assert sock.user == "root"
    assert sock.mode == 0o700


def test_tor_default_instance_runs(host):
    assert host.service("tor").is_enabled
    assert host.service("tor@default").is_running
    assert host.file("/etc/tor/torrc").exists


def test_python_for_ansible_modules(host):
    # ansible.builtin.apt needs the python3-apt binding on the node.
    assert host.run("python3 -c 'import apt_pkg'").rc == 0


def test_nodes_reach_each_other_by_inventory_name(host):
    me = inventory_hostname(host)
    others = [name for name in NODES if name != me]
    if not others:
        pytest.skip("a single-node fleet has no peer to reach")
    for other in others:
        result = host.run("python3 -c %s %s", PROBE, other)
        assert result.stdout.strip() in ("refused", "open"), f"{me} -> {other}: {result.stdout}{result.stderr}"


def test_no_route_past_this_machine(host):
    # The fleet network is internal: no default route, so no traffic (tor's included) can
    # leave the machine. `ip route get` asks the kernel only; nothing is sent.
    assert host.check_output("ip -4 route show default") == ""
    probe = host.run("ip -4 route get 192.0.2.1")
    assert probe.rc != 0
    assert "unreachable" in probe.stderr.lower()


def test_container_runs_the_current_image(host):
    want = subprocess.run(
        [str(REPO_ROOT / "tests/image/build.sh"), "--print"], capture_output=True, text=True, check=True
    ).stdout.strip()
    inspect = json.loads(
        subprocess.run(
            ["podman", "container", "inspect", host.backend.name], capture_output=True, text=True, check=True
        ).stdout
    )[0]
    assert inspect["ImageName"] == want
    assert inspect["OCIRuntime"] == "runc"
    labels = json.loads(
        subprocess.run(["podman", "image", "inspect", want], capture_output=True, text=True, check=True).stdout
    )[0]["Labels"]
    assert labels["org.nodefleet.recipe"] == want.rsplit(":", 1)[1]


def test_ansible_reaches_every_fleet_host():
    result = subprocess.run(
        [tool("ansible"), "-i", str(inventory_path()), "fleet", "-m", "ansible.builtin.ping"],
        env={**ansible_env(), "ANSIBLE_STDOUT_CALLBACK": "json", "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(result.stdout)
    answers = report["plays"][0]["tasks"][0]["hosts"]
    assert {name: answer.get("ping") for name, answer in answers.items()} == dict.fromkeys(NODES, "pong")
