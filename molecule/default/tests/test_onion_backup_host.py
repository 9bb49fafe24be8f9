"""Onion key backups on a backup host, on the fleet (issue 11, keys that survive AWX).

A converge with ``bitcoind_onion_key_backup_host`` set to a fleet host (the second one, or the first
when the fleet has one node) backs the first host's onion keys up THERE, over that host's own
connection (become root): a root-only 0700 directory, 0600 files, the address next to the key.
Then the onion service directory of one instance is wiped on the node and the next converge with
the same setting restores the key from the backup host: the instance has its old address again.
The controller backup is not used for it (the test's backup directory is a fresh one, and the
controller copy is not consulted when a backup host is set).

The test uses its own directory on the backup host and removes it afterwards; the fleet is left
as it was found (same onion addresses). Inventory: NODEFLEET_INVENTORY (fleet_inventory.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet_inventory import REPO_ROOT, ansible_env, fleet_nodes, inventory_path, tool
from instance_checks import instances_from_report, node_exec, plan_report

NODES = fleet_nodes()
INSTANCES = instances_from_report(plan_report(), NODES)
HOST = next(iter(NODES))
BACKUP_HOST = list(NODES)[1] if len(NODES) > 1 else HOST
TARGET = next(i for i in INSTANCES if i.host == HOST and i.tor_mode != "clearnet")
BACKUP_DIR = f"/var/lib/nodefleet/test-onion-backup-{uuid.uuid4().hex[:8]}"
SERVICE_DIR = f"/var/lib/tor/nodefleet-{TARGET.name}"


def converge() -> str:
    """site.yml on HOST only, with the backups on BACKUP_HOST; returns the output (rc asserted)."""
    extra = {"bitcoind_onion_key_backup_host": BACKUP_HOST, "bitcoind_onion_key_backup_host_dir": BACKUP_DIR}
    proc = subprocess.run(
        [
            tool("ansible-playbook"),
            "-i",
            str(inventory_path()),
            str(REPO_ROOT / "playbooks" / "site.yml"),
            "--limit",
            HOST,
            "-e",
            json.dumps(extra),
        ],
        env={**ansible_env(), "ANSIBLE_NOCOLOR": "1"},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    return out


def on_backup_host(*argv: str) -> str:
    result = node_exec(NODES[BACKUP_HOST], list(argv))
    assert result.returncode == 0, (argv, result.stderr)
    return result.stdout


def onion_address() -> str:
    result = node_exec(NODES[HOST], ["cat", f"{SERVICE_DIR}/hostname"])
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture
def backup_dir():
    yield BACKUP_DIR
    node_exec(NODES[BACKUP_HOST], ["rm", "-rf", "--", BACKUP_DIR])


def test_keys_backed_up_on_the_backup_host_and_restored_from_there(backup_dir):
    address = onion_address()
    key_path = f"{SERVICE_DIR}/hs_ed25519_secret_key"
    key_b64 = node_exec(NODES[HOST], ["base64", "-w0", key_path]).stdout.strip()
    assert key_b64

    out = converge()
    host_dir = f"{backup_dir}/{HOST}"
    stat = on_backup_host(
        "stat",
        "-c",
        "%n %a %U",
        backup_dir,
        host_dir,
        f"{host_dir}/{TARGET.name}.b64",
        f"{host_dir}/{TARGET.name}.onion",
    )
    modes = [line.split()[1:] for line in stat.splitlines()]
    assert modes == [["700", "root"], ["700", "root"], ["600", "root"], ["600", "root"]], stat
    assert on_backup_host("cat", f"{host_dir}/{TARGET.name}.b64").strip() == key_b64
    assert on_backup_host("cat", f"{host_dir}/{TARGET.name}.onion").strip() == address
    assert key_b64 not in out

    # the service directory is lost (rebuild, wipe): the backup host gives the key back
    assert node_exec(NODES[HOST], ["rm", "-rf", "--", SERVICE_DIR]).returncode == 0
    out = converge()
    assert onion_address() == address
    assert node_exec(NODES[HOST], ["base64", "-w0", key_path]).stdout.strip() == key_b64
    assert key_b64 not in out
