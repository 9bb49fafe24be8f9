"""The fleet under test, read from the inventory molecule converges (not from molecule's own).

The scenario runs on the demo inventory (or NODEFLEET_INVENTORY, relative to the scenario
directory as in molecule.yml). Its `fleet` hosts are podman containers named by
`nodefleet_container_name` (default `nodefleet-<inventory_hostname>`), the same rule as
tests/fleet/create.yml. The tests reach them with testinfra's podman backend (`podman exec`),
which is faster than going through Ansible for every command.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

SCENARIO_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = SCENARIO_DIR.parent.parent
FLEET_GROUP = "fleet"


def tool(name: str) -> str:
    """Path of an Ansible CLI: the one next to this interpreter (the venv), else on PATH."""
    sibling = Path(sys.executable).parent / name
    if sibling.exists():
        return str(sibling)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found next to {sys.executable} or on PATH")
    return found


def inventory_path() -> Path:
    """The inventory molecule passes to ansible-playbook."""
    configured = os.environ.get("NODEFLEET_INVENTORY") or "../../inventories/demo/hosts.yml"
    path = Path(configured)
    if not path.is_absolute():
        path = SCENARIO_DIR / path
    return path.resolve()


def ansible_env() -> dict[str, str]:
    """Environment for the Ansible CLIs: the repository's ansible.cfg, as molecule.yml sets."""
    return {**os.environ, "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg")}


def group_hosts(inventory: dict, group: str) -> list[str]:
    """Hosts of `group` and of its child groups, from `ansible-inventory --list` output."""
    seen: list[str] = []
    pending = [group]
    visited: set[str] = set()
    while pending:
        name = pending.pop(0)
        if name in visited:
            continue
        visited.add(name)
        entry = inventory.get(name, {})
        for host in entry.get("hosts", []):
            if host not in seen:
                seen.append(host)
        pending.extend(entry.get("children", []))
    return seen


def container_name(inventory_hostname: str, hostvars: dict) -> str:
    """The container of a fleet host (tests/fleet/create.yml uses the same rule)."""
    return hostvars.get("nodefleet_container_name") or f"nodefleet-{inventory_hostname}"


def fleet_nodes() -> dict[str, str]:
    """Inventory hostname -> container name for every fleet host; fails loudly if none."""
    path = inventory_path()
    if not path.exists():
        raise RuntimeError(f"inventory {path} does not exist (set NODEFLEET_INVENTORY)")
    out = subprocess.run(
        [tool("ansible-inventory"), "-i", str(path), "--list"],
        env=ansible_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    inventory = json.loads(out)
    hostvars = inventory.get("_meta", {}).get("hostvars", {})
    hosts = group_hosts(inventory, FLEET_GROUP)
    if not hosts:
        raise RuntimeError(f"inventory {path} has no hosts in group {FLEET_GROUP!r}")
    return {host: container_name(host, hostvars.get(host, {})) for host in hosts}
