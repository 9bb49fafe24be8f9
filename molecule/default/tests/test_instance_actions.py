"""playbooks/instance.yml on the fleet (issue 11, one-instance actions for AWX/Semaphore).

On the first fleet host: `restart` of one instance restarts that program only (its supervisord
pid changes, every other program of the fleet keeps its pid) and the health gate passes;
`stop` then `start` of another instance stops and starts only that one; `status` prints the
instance's bitcoind_info row and no password, also at -vvvv; a bad instance name fails before
anything changes. The fleet is left as it was found (everything RUNNING).

Inventory: NODEFLEET_INVENTORY (fleet_inventory.py), so the same test runs on a helper's own
fleet and on the demo fleet in CI.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet_inventory import REPO_ROOT, ansible_env, fleet_nodes, inventory_path, tool
from instance_checks import instances_from_report, node_exec, parse_supervisorctl_status, plan_report

NODES = fleet_nodes()
INSTANCES = instances_from_report(plan_report(), NODES)
HOST = next(iter(NODES))
ON_HOST = [i for i in INSTANCES if i.host == HOST]
# Restart a Core instance when the host has one (real Core when ../shared/bitcoin-core is there),
# stop/start another instance, so each of them is restarted once by this test.
RESTART = next((i for i in ON_HOST if i.impl == "core"), ON_HOST[0])
STOP_START = next((i for i in ON_HOST if i.name != RESTART.name), RESTART)
PASSWORDS = [password.reveal() for inst in INSTANCES for _user, password in inst.rpc_users]


def run_instance(instance: str, action: str, *flags: str, host: str = HOST) -> tuple[int, dict | None, str]:
    """instance.yml with the json callback; returns (rc, parsed JSON or None, raw output)."""
    proc = subprocess.run(
        [
            tool("ansible-playbook"),
            "-i",
            str(inventory_path()),
            str(REPO_ROOT / "playbooks" / "instance.yml"),
            "-e",
            json.dumps({"host": host, "instance": instance, "action": action}),
            *flags,
        ],
        env={**ansible_env(), "ANSIBLE_STDOUT_CALLBACK": "json", "ANSIBLE_NOCOLOR": "1"},
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    raw = proc.stdout + proc.stderr
    start = proc.stdout.find("{\n")
    parsed = json.loads(proc.stdout[start:]) if start >= 0 else None
    return proc.returncode, parsed, raw


def task_result(report: dict, name: str, host: str = HOST) -> dict:
    for play in report["plays"]:
        for task in play["tasks"]:
            # Role tasks are named "<role> : <task>".
            if task["task"]["name"].split(" : ", 1)[-1] == name and host in task["hosts"]:
                return task["hosts"][host]
    raise AssertionError(f"no result of task {name!r} for {host}")


def fleet_programs() -> dict[tuple[str, str], tuple[str, int | None]]:
    """(host, program) -> (supervisord state, pid) for every program on every fleet node."""
    out = {}
    for host, container in NODES.items():
        status = node_exec(container, ["supervisorctl", "status"])
        for program, state in parse_supervisorctl_status(status.stdout).items():
            out[(host, program)] = state
    return out


def assert_only_changed(before: dict, after: dict, changed: tuple[str, str]) -> None:
    others = {key: value for key, value in before.items() if key != changed}
    assert {key: after.get(key) for key in others} == others, "another program's state or pid changed"


@pytest.fixture
def running_again():
    """Whatever a test does, STOP_START is started again afterwards."""
    yield
    key = (HOST, STOP_START.program)
    if fleet_programs().get(key, ("", None))[0] != "RUNNING":
        run_instance(STOP_START.name, "start")


def test_restart_restarts_only_that_instance_and_passes_the_health_gate():
    before = fleet_programs()
    key = (HOST, RESTART.program)
    assert before[key][0] == "RUNNING", before[key]
    started = time.monotonic()
    rc, report, raw = run_instance(RESTART.name, "restart", "-vvvv")
    elapsed = time.monotonic() - started
    assert rc == 0, raw[-4000:]
    # Printed for docs (pytest -s): the whole playbook run, settle window included.
    print(f"instance.yml restart of {HOST}/{RESTART.name} ({RESTART.impl}): {elapsed:.1f} s")
    gate = task_result(report, "Record the health gate result")["ansible_facts"]["bitcoind_gate_result"]
    assert gate["ok"] is True, gate
    assert gate["host"] == HOST and gate["instance"] == RESTART.name
    # The status before the restart was taken, so height and settle were really compared.
    assert {"rpc", "supervised", "chain", "height", "settle"} <= set(gate["checked"]), gate
    after = fleet_programs()
    assert after[key][0] == "RUNNING" and after[key][1] != before[key][1], (before[key], after[key])
    assert_only_changed(before, after, key)
    # Every poll of the gate is in a -vvvv log; the RPC passwords it used are not.
    assert not [p for p in PASSWORDS if p in raw], "an RPC password is in the -vvvv output"
    row = task_result(report, "Remember the instance's status")["ansible_facts"]["bitcoind_instance_status"]
    assert row["state"] == "up" and row["supervisord"]["pid"] == after[key][1]


def test_stop_then_start_touch_only_that_instance(running_again):
    key = (HOST, STOP_START.program)
    before = fleet_programs()
    rc, report, raw = run_instance(STOP_START.name, "stop")
    assert rc == 0, raw[-4000:]
    stopped = fleet_programs()
    assert stopped[key][0] == "STOPPED", stopped[key]
    assert_only_changed(before, stopped, key)
    row = task_result(report, "Remember the instance's status")["ansible_facts"]["bitcoind_instance_status"]
    assert row["state"] == "down", row

    rc, report, raw = run_instance(STOP_START.name, "start")
    assert rc == 0, raw[-4000:]
    started = fleet_programs()
    assert started[key][0] == "RUNNING" and started[key][1] != before[key][1]
    assert_only_changed(before, started, key)


def test_status_prints_the_row_and_no_password_even_at_vvvv():
    before = fleet_programs()
    rc, report, raw = run_instance(RESTART.name, "status", "-vvvv")
    assert rc == 0, raw[-4000:]
    shown = task_result(report, "Show the instance's status")["msg"]
    assert shown["name"] == RESTART.name and shown["host"] == HOST, shown
    # "restarting" when this module's own restarts reach bitcoind_info's restart-loop threshold
    # (3 spawns since supervisord started, within 300 s): status reports loops as status.yml does.
    assert shown["state"] in ("up", "restarting") and shown["supervisord"]["state"] == "RUNNING", shown
    assert shown["ports"]["rpc"] == RESTART.rpc
    leaked = [p for p in PASSWORDS if p in raw]
    assert not leaked, f"{len(leaked)} RPC password(s) in the output"
    assert fleet_programs() == before


def test_unknown_instance_fails_before_anything_changes():
    before = fleet_programs()
    rc, _report, raw = run_instance("no-such-instance", "restart")
    assert rc != 0
    known = ", ".join(i.name for i in ON_HOST)
    assert f"instance 'no-such-instance' is not in bitcoind_instances of host '{HOST}' (known: {known})" in " ".join(
        raw.split()
    ), raw[-3000:]
    assert fleet_programs() == before
