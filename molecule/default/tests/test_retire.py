"""Instances leave the inventory cleanly (issue 11): unlisted, then retired, then purged.

On the first fleet host, one instance (an onion one that is not Core, when there is one) is
dropped from a copy of the inventory (neither present nor absent). Then:

1. a converge with the copy warns, naming it and what still runs (program RUNNING, its pid, the
   ports it listens on), and its program keeps running with the same pid (no program's pid changes);
   playbooks/status.yml reports it with state ``unlisted``;
2. ``--check --diff`` with ``bitcoind_retire_unlisted=true`` shows the retire and changes nothing;
3. a converge with ``bitcoind_retire_unlisted=true`` stops and removes its program, removes its
   onion drop-in from tor (tor reloaded, same pid), keeps its key (service directory on the host,
   backup on the controller) and its datadir; no other program's pid changes; a second such
   converge reports changed=0;
4. ``bitcoind_retire_purge=true`` removes the datadir.

The fixture's teardown converges the host with the real inventory again (the instance comes back
with the same onion address), because later tests and the chaos stage use the same fleet.

Inventory: NODEFLEET_INVENTORY (fleet_inventory.py), so the same test runs on a helper's own fleet
and on the demo fleet in CI. The copy lives next to the inventory directory, so paths relative to
``inventory_dir`` (releases, onion key backups) stay the same.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet_inventory import REPO_ROOT, ansible_env, fleet_nodes, inventory_path, tool
from instance_checks import instances_from_report, node_exec, parse_supervisorctl_status, plan_report

NODES = fleet_nodes()
INSTANCES = instances_from_report(plan_report(), NODES)
HOST = next(iter(NODES))
CONTAINER = NODES[HOST]
ON_HOST = [i for i in INSTANCES if i.host == HOST]
DROPPED = next(
    (i for i in ON_HOST if i.has_onion and i.impl != "core"),
    next((i for i in ON_HOST if i.has_onion), ON_HOST[-1]),
)
KEPT = [i for i in ON_HOST if i.name != DROPPED.name]


def run_playbook(inventory: Path, playbook: str, *flags: str) -> tuple[int, str]:
    """ansible-playbook on HOST only; returns (rc, output with whitespace normalised)."""
    proc = subprocess.run(
        [tool("ansible-playbook"), "-i", str(inventory), str(REPO_ROOT / playbook), "--limit", HOST, *flags],
        env={**ansible_env(), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    return proc.returncode, " ".join((proc.stdout + proc.stderr).split())


def changed_count(output: str) -> int:
    match = re.search(rf"{re.escape(HOST)} : ok=\d+ changed=(\d+)", output)
    assert match, f"no play recap for {HOST} in: {output[-3000:]}"
    return int(match.group(1))


def programs() -> dict[str, tuple[str, int | None]]:
    """program -> (state, pid) on every fleet node (keys prefixed with the host)."""
    out = {}
    for host, container in NODES.items():
        status = node_exec(container, ["supervisorctl", "status"])
        for program, state in parse_supervisorctl_status(status.stdout).items():
            out[f"{host}/{program}"] = state
    return out


def tor_pid() -> str:
    return node_exec(CONTAINER, ["sh", "-c", "pgrep -xo tor || true"]).stdout.strip()


def exists(path: str) -> bool:
    return node_exec(CONTAINER, ["test", "-e", path]).returncode == 0


def backup_dir() -> Path:
    """The controller directory of HOST's onion key backups (the role's bitcoind__backup_path)."""
    proc = subprocess.run(
        [
            tool("ansible"),
            HOST,
            "-i",
            str(inventory_path()),
            "-o",
            "-m",
            "ansible.builtin.debug",
            "-a",
            "msg={{ bitcoind_onion_key_backup_dir | default('~/.nodefleet/onion-keys') }}",
        ],
        env=ansible_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    value = json.loads(proc.stdout.split("=>", 1)[1])["msg"]
    return Path(os.path.expanduser(value)) / HOST


def drop_instance(copy: Path) -> None:
    """Remove DROPPED from HOST's bitcoind_instances in the copied inventory's host_vars."""
    candidates = [copy / "host_vars" / f"{HOST}.yml", copy / "host_vars" / f"{HOST}.yaml"]
    candidates += sorted((copy / "host_vars" / HOST).glob("*.y*ml")) if (copy / "host_vars" / HOST).is_dir() else []
    for path in candidates:
        if not path.is_file():
            continue
        data = yaml.safe_load(path.read_text()) or {}
        instances = data.get("bitcoind_instances")
        if isinstance(instances, list) and any(i.get("name") == DROPPED.name for i in instances):
            data["bitcoind_instances"] = [i for i in instances if i.get("name") != DROPPED.name]
            path.write_text(yaml.safe_dump(data, sort_keys=False))
            return
    raise AssertionError(f"{DROPPED.name} not found in the host_vars of {HOST} in {copy}")


@pytest.fixture(scope="module")
def dropped_inventory():
    """A copy of the inventory without DROPPED; teardown converges HOST with the real inventory."""
    original = inventory_path()
    copy_dir = original.parent.parent / f".{original.parent.name}-retire-test"
    shutil.rmtree(copy_dir, ignore_errors=True)
    shutil.copytree(original.parent, copy_dir, symlinks=True)
    drop_instance(copy_dir)
    try:
        yield copy_dir / original.name
    finally:
        shutil.rmtree(copy_dir, ignore_errors=True)
        rc, out = run_playbook(original, "playbooks/site.yml")
        assert rc == 0, f"restoring {HOST} with the real inventory failed: {out[-3000:]}"
        state = programs().get(f"{HOST}/{DROPPED.program}")
        assert state and state[0] == "RUNNING", f"{DROPPED.program} not back after the restore: {state}"


def test_unlisted_instance_is_reported_then_retired_then_purged(dropped_inventory, tmp_path):
    before = programs()
    dropped_state = before.get(f"{HOST}/{DROPPED.program}")
    assert dropped_state and dropped_state[0] == "RUNNING", f"{DROPPED.program} must run before the test"
    tor_before = tor_pid()
    address = node_exec(CONTAINER, ["cat", f"{DROPPED.onion_dir}/hostname"]).stdout.strip()

    # 1. Unlisted: reported, nothing changes, still running with the same pid.
    rc, out = run_playbook(dropped_inventory, "playbooks/site.yml")
    assert rc == 0, out[-3000:]
    warning = f"instance {DROPPED.name} is on the host but not in the inventory"
    assert warning in out
    detail = out[out.index(warning) : out.index(warning) + 800]
    assert f"program {DROPPED.program} RUNNING" in detail and f"pid {dropped_state[1]}" in detail
    assert str(DROPPED.rpc) in detail.split("listening on", 1)[1]
    if DROPPED.has_onion and address:
        assert address in detail
    # Nothing of it (or of any other instance) changes; the monitoring role's collector list may
    # (it follows the inventory).
    assert programs() == before
    assert exists(f"/etc/supervisor/conf.d/{DROPPED.program}.conf")

    report_file = tmp_path / "status.json"
    rc, out = run_playbook(
        dropped_inventory,
        "playbooks/status.yml",
        "-e",
        f"nodefleet_status_json={report_file}",
        "-e",
        "nodefleet_status_textfile_enabled=false",
    )
    assert rc == 0, out[-3000:]
    rows = {i["name"]: i for i in json.loads(report_file.read_text())["hosts"][HOST]["instances"]}
    assert rows[DROPPED.name]["state"] == "unlisted"
    assert rows[DROPPED.name]["supervisord"]["pid"] == dropped_state[1]
    assert "not in the inventory" in rows[DROPPED.name]["message"]
    assert all(rows[i.name]["state"] != "unlisted" for i in KEPT)

    # 2. --check --diff shows the retire and changes nothing.
    retire = ("-e", "bitcoind_retire_unlisted=true")
    rc, out = run_playbook(dropped_inventory, "playbooks/site.yml", *retire, "--check", "--diff")
    assert rc == 0, out[-3000:]
    assert changed_count(out) > 0 and DROPPED.program in out
    assert programs() == before
    assert exists(f"/etc/supervisor/conf.d/{DROPPED.program}.conf")
    if DROPPED.has_onion:
        assert exists(DROPPED.torrc_dropin)

    # 3. Retire: program and onion service gone, key and datadir kept, nothing else restarted.
    rc, out = run_playbook(dropped_inventory, "playbooks/site.yml", *retire)
    assert rc == 0, out[-3000:]
    after = programs()
    assert f"{HOST}/{DROPPED.program}" not in after
    assert after == {k: v for k, v in before.items() if k != f"{HOST}/{DROPPED.program}"}
    assert not exists(f"/etc/supervisor/conf.d/{DROPPED.program}.conf")
    assert exists(DROPPED.conf_file), "the datadir must be kept without bitcoind_retire_purge"
    if DROPPED.has_onion:
        assert not exists(DROPPED.torrc_dropin)
        assert exists(f"{DROPPED.onion_dir}/hs_ed25519_secret_key"), "the key stays on the host"
        assert (backup_dir() / f"{DROPPED.name}.b64").is_file(), "the key stays in the backup"
        assert tor_pid() == tor_before, "tor must be reloaded, not restarted"
    listening = node_exec(CONTAINER, ["ss", "-Htln"]).stdout
    assert f":{DROPPED.rpc} " not in listening

    rc, out = run_playbook(dropped_inventory, "playbooks/site.yml", *retire)
    assert rc == 0, out[-3000:]
    assert changed_count(out) == 0
    assert warning not in out

    # 4. Purge removes the datadir an earlier retire kept.
    rc, out = run_playbook(dropped_inventory, "playbooks/site.yml", *retire, "-e", "bitcoind_retire_purge=true")
    assert rc == 0, out[-3000:]
    assert changed_count(out) > 0
    assert not exists(DROPPED.datadir)
    assert programs() == after
