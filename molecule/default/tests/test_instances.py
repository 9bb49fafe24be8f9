"""Bitcoind-level checks of the converged fleet: every instance the inventory asks for.

For each instance (inventory `bitcoind_instances` of each fleet host, with the role's
defaults and port plan, see instance_plan.yml) this checks what an operator relies on:
its supervisord program runs; RPC answers its credentials with its network and refuses
others (401); RPC listens on loopback only; every planned port is open and owned by that
instance's daemon; its onion service's address is the one bitcoin.conf announces; file
owners and modes; no secret on any process's argv or in a config file. Then a
`--check --diff` run of playbooks/site.yml must report nothing to change and print no
password.

Runs as molecule's verify step and directly against a running fleet:

    NODEFLEET_INVENTORY=$PWD/inventories/demo/hosts.yml .venv/bin/pytest molecule/default/tests

RPC passwords never appear in output: they are `Secret`s (hidden repr) and reach the node
on stdin only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

# pytest runs with --import-mode=importlib (pyproject.toml): make the sibling helpers importable.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet_inventory import REPO_ROOT, ansible_env, fleet_nodes, inventory_path, tool
from instance_checks import (
    CMDLINE_SCRIPT,
    RPC_SCRIPT,
    Instance,
    Secret,
    conf_values,
    hidden_service_ports,
    instances_from_report,
    is_loopback,
    node_exec,
    node_python,
    normalise_address,
    parse_ss_listeners,
    parse_supervisorctl_status,
    plan_report,
    planned_listeners,
)

NODES = fleet_nodes()
INSTANCES = instances_from_report(plan_report(), NODES)
IDS = [f"{i.host}:{i.name}" for i in INSTANCES]
TOR_USER = "debian-tor"
RPC_WAIT_SECONDS = 30
ALL_SECRETS = sorted({password.reveal() for i in INSTANCES for _user, password in i.rpc_users})

by_instance = pytest.mark.parametrize("inst", INSTANCES, ids=IDS)


@cache
def supervisor_status(container: str) -> dict:
    result = node_exec(container, ["supervisorctl", "status"])
    # supervisorctl exits 3 when some program is not RUNNING; the output is still the table.
    assert result.returncode in (0, 3), f"supervisorctl status in {container}: {result.stderr}"
    return parse_supervisorctl_status(result.stdout)


@cache
def listeners(container: str, user: str) -> list:
    # As the instance user, ss can see which of that user's processes owns each socket
    # (root in the container lacks CAP_SYS_PTRACE for other users' /proc/<pid>/fd).
    result = node_exec(container, ["ss", "-H", "-ltnp"], user=user)
    assert result.returncode == 0, f"ss in {container}: {result.stderr}"
    return parse_ss_listeners(result.stdout)


def read_file(container: str, path: str) -> str:
    result = node_exec(container, ["cat", path])
    assert result.returncode == 0, f"{container}:{path}: {result.stderr.strip()}"
    return result.stdout


def stat(container: str, path: str) -> tuple[str, str, str, str] | None:
    """(file type, octal mode, owner, group) of a path in the node, None when it does not exist."""
    result = node_exec(container, ["stat", "-c", "%F|%a|%U|%G", path])
    if result.returncode != 0:
        return None
    kind, mode, owner, group = result.stdout.strip().split("|")
    return kind, mode, owner, group


def rpc_calls(inst: Instance, calls: list[tuple[str, Secret]]) -> list[dict]:
    payload = {
        "host": inst.rpc_bind[0],
        "port": inst.rpc,
        "wait": RPC_WAIT_SECONDS,
        "calls": [{"user": user, "password": password.reveal()} for user, password in calls],
    }
    return node_python(inst.container, RPC_SCRIPT, payload)


# --- the fleet under test -------------------------------------------------------------------


def test_the_inventory_plans_instances():
    # Without instances every check below would pass vacuously.
    assert INSTANCES, f"no bitcoind_instances in {inventory_path()}"
    assert all(i.rpc_users for i in INSTANCES), "every instance needs rpc_users for the RPC checks"


# --- per instance -------------------------------------------------------------------------


@by_instance
def test_supervisord_program_is_running(inst):
    status = supervisor_status(inst.container)
    assert inst.program in status, f"{inst.program} not in supervisord on {inst.host}: {sorted(status)}"
    state, pid = status[inst.program]
    assert state == "RUNNING"
    assert pid


@by_instance
def test_rpc_answers_the_instance_credentials_with_its_network(inst):
    answers = rpc_calls(inst, list(inst.rpc_users))
    got = {user: (answer["status"], answer["chain"]) for (user, _pw), answer in zip(inst.rpc_users, answers)}
    assert got == {user: (200, inst.network) for user, _pw in inst.rpc_users}


@by_instance
def test_rpc_refuses_wrong_credentials(inst):
    # A wrong password for each real user, and a user the instance does not know.
    wrong = [(user, Secret(password.reveal() + "-wrong")) for user, password in inst.rpc_users]
    wrong.append(("nodefleet-verify-nobody", inst.rpc_users[0][1]))
    answers = rpc_calls(inst, wrong)
    assert [answer["status"] for answer in answers] == [401] * len(wrong)


@by_instance
def test_rpc_listens_on_loopback_only(inst):
    bound = sorted({addr for addr, port, _pids in listeners(inst.container, inst.user) if port == inst.rpc})
    assert bound, f"nothing listens on the rpc port {inst.rpc}"
    assert [addr for addr in bound if not is_loopback(addr)] == []
    assert bound == sorted({normalise_address(addr) for addr in inst.rpc_bind})


@by_instance
def test_every_planned_port_is_open_and_owned_by_the_instance(inst):
    _state, pid = supervisor_status(inst.container).get(inst.program, (None, None))
    assert pid, f"{inst.program} has no pid"
    table = listeners(inst.container, inst.user)
    owned = {(addr, port) for addr, port, pids in table if pid in pids}
    want = planned_listeners(inst)
    assert sorted(want - owned) == [], "planned but not listening (by this instance's daemon)"
    assert sorted(owned - want) == [], "listening but not planned"
    # No other process holds one of this instance's ports.
    ports = {port for _addr, port in want}
    assert sorted((a, p, pids) for a, p, pids in table if p in ports and pid not in pids) == []


@by_instance
def test_onion_service_matches_externalip(inst):
    conf = read_file(inst.container, inst.conf_file)
    externalip = conf_values(conf, "externalip")
    if not inst.has_onion:
        assert externalip == []
        assert stat(inst.container, inst.onion_dir) is None, f"clearnet instance has {inst.onion_dir}"
        assert stat(inst.container, inst.torrc_dropin) is None, f"clearnet instance has {inst.torrc_dropin}"
        return
    hostname = read_file(inst.container, f"{inst.onion_dir}/hostname").strip()
    assert hostname.endswith(".onion")
    assert externalip == [hostname]
    # The onion service forwards the P2P port to the instance's onion bind.
    dropin = read_file(inst.container, inst.torrc_dropin)
    assert hidden_service_ports(dropin) == [(inst.p2p, f"127.0.0.1:{inst.onion}")]


@by_instance
def test_file_owners_and_modes(inst):
    assert stat(inst.container, inst.conf_file) == ("regular file", "600", inst.user, inst.user)
    if inst.has_onion:
        assert stat(inst.container, inst.onion_dir) == ("directory", "700", TOR_USER, TOR_USER)


@by_instance
def test_no_password_at_rest_in_the_configs(inst):
    # bitcoin.conf holds salted rpcauth hashes only; the supervisord program passes no secret.
    conf = read_file(inst.container, inst.conf_file)
    program = read_file(inst.container, f"/etc/supervisor/conf.d/{inst.program}.conf")
    assert conf_values(conf, "rpcpassword") == []
    assert "rpcpassword" not in program
    leaked = [n for n, secret in enumerate(ALL_SECRETS) if secret in conf or secret in program]
    assert leaked == [], "an inventory RPC password is written in bitcoin.conf or the program file"
    assert sorted(v.split(":", 1)[0] for v in conf_values(conf, "rpcauth")) == sorted(u for u, _ in inst.rpc_users)


# --- per node -------------------------------------------------------------------------------


@pytest.mark.parametrize("host", list(NODES))
def test_no_secret_on_any_process_argv(host):
    if not ALL_SECRETS:
        pytest.skip("the inventory has no RPC passwords")
    report = node_python(NODES[host], CMDLINE_SCRIPT, {"secrets": ALL_SECRETS})
    assert report["scanned"] > 1  # at least systemd and the scanner's parents
    assert report["hits"] == [], "processes with an RPC password (index into the inventory's list) on argv"


# --- the converged fleet has nothing left to change -----------------------------------------


def test_check_diff_run_of_site_changes_nothing():
    result = subprocess.run(
        [
            tool("ansible-playbook"),
            "-i",
            str(inventory_path()),
            "--check",
            "--diff",
            str(REPO_ROOT / "playbooks/site.yml"),
        ],
        env={**ansible_env(), "ANSIBLE_STDOUT_CALLBACK": "json"},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = result.stdout + result.stderr
    leaked = [n for n, secret in enumerate(ALL_SECRETS) if secret in output]
    assert leaked == [], "the --check --diff run printed an inventory RPC password"
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    stats = report["stats"]
    assert sorted(stats) == sorted(NODES)
    changed_tasks = sorted(
        (host, entry["task"]["name"])
        for play in report["plays"]
        for entry in play["tasks"]
        for host, res in entry["hosts"].items()
        if res.get("changed")
    )
    assert changed_tasks == []
    assert {host: (s["changed"], s["failures"], s["unreachable"]) for host, s in stats.items()} == dict.fromkeys(
        NODES, (0, 0, 0)
    )
