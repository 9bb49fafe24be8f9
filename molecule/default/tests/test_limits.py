"""Kernel limits per instance, read back from the kernel's cgroup files on the fleet nodes.

For every instance of the inventory under test (NODEFLEET_INVENTORY, as the other verify tests)
with a memory_max / cpu_quota: its bitcoind (the pid supervisord reports - systemd-run --scope
execs it, same pid) lives in a scope inside its own slice, and the slice's kernel files
(v1 memory.limit_in_bytes / cpu.cfs_quota_us, v2 memory.max / cpu.max) hold the limits; it runs
as the instance user with no supplementary groups. Every instance WITHOUT limits keeps the
plain bitcoind command in supervisord's cgroup. A changed limit is applied live by
bitcoind_limits (kernel file changes, pid unchanged, changed=true; a second run changed=false)
and --check --diff reports it without applying it.

    NODEFLEET_INVENTORY=$PWD/build/dev/hosts.yml .venv/bin/pytest molecule/default/tests/test_limits.py
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet_inventory import ansible_env, fleet_nodes, inventory_path, tool
from instance_checks import PLAN_TASK, node_exec, plan_report

NODES = fleet_nodes()
REPORT = plan_report()


def plans() -> dict:
    for play in REPORT.get("plays", []):
        for entry in play.get("tasks", []):
            if entry.get("task", {}).get("name") == PLAN_TASK:
                return {host: entry["hosts"][host]["msg"] for host in NODES}
    raise RuntimeError("instance_plan.yml reported no plan")


PLANS = plans()
ALL = [
    (host, NODES[host], inst["name"], PLANS[host]["limits"][inst["name"]], PLANS[host]["user"])
    for host in NODES
    for inst in PLANS[host]["instances"]
]
LIMITED = [entry for entry in ALL if entry[3]["limited"]]
UNLIMITED = [entry for entry in ALL if not entry[3]["limited"]]


def ids(entries):
    return [f"{host}:{name}" for host, _c, name, _l, _u in entries]


def sh(container: str, script: str) -> str:
    result = node_exec(container, ["sh", "-ec", script])
    assert result.returncode == 0, f"{container}: {script}: {result.stderr.strip()}"
    return result.stdout


def program_pid(container: str, name: str) -> int:
    return int(sh(container, f"supervisorctl pid bitcoind-{name}").strip())


def proc_cgroups(container: str, pid: int) -> dict:
    out = {}
    for line in sh(container, f"cat /proc/{pid}/cgroup").splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            out[controller] = path
    return out


def slice_cgroup(container: str, unit: str) -> str:
    return sh(container, f"systemctl show --property=ControlGroup --value {shlex.quote(unit)}").strip()


def kernel_limits(container: str, cgroup: str) -> dict:
    """memory_max (bytes or None) and cpu_quota (percent or None) from the kernel's files."""
    q = shlex.quote
    v1m, v1c, v2 = f"/sys/fs/cgroup/memory{cgroup}", f"/sys/fs/cgroup/cpu{cgroup}", f"/sys/fs/cgroup{cgroup}"
    script = f"""
if [ -f {q(v1m + "/memory.limit_in_bytes")} ]; then
  echo mem $(cat {q(v1m + "/memory.limit_in_bytes")})
  echo cpu $(cat {q(v1c + "/cpu.cfs_quota_us")}) $(cat {q(v1c + "/cpu.cfs_period_us")})
else
  echo mem $(cat {q(v2 + "/memory.max")})
  echo cpu $(cat {q(v2 + "/cpu.max")})
fi
"""
    out = {}
    for line in sh(container, script).splitlines():
        words = line.split()
        if words[0] == "mem":
            out["memory_max"] = None if words[1] == "max" or int(words[1]) >= 1 << 62 else int(words[1])
        else:
            quota, period = words[1], words[2]
            out["cpu_quota"] = None if quota in ("max", "-1") else round(int(quota) * 100 / int(period))
    return out


def run_limits_module(host: str, instances: list, *, check: bool = False) -> dict:
    """bitcoind_limits ad hoc on one fleet host (json callback); returns its result."""
    argv = [
        tool("ansible"),
        "-i",
        str(inventory_path()),
        host,
        "--become",
        "-m",
        "nodefleet.bitcoin.bitcoind_limits",
        "-a",
        json.dumps({"instances": instances}),
    ]
    if check:
        argv += ["--check", "--diff"]
    env = {**ansible_env(), "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "json"}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    data = json.loads(result.stdout)
    return data["plays"][0]["tasks"][0]["hosts"][host]


def module_args(host: str, override: dict | None = None) -> list:
    out = []
    for inst in PLANS[host]["instances"]:
        lim = dict(PLANS[host]["limits"][inst["name"]])
        lim.update((override or {}).get(inst["name"], {}))
        out.append(
            {
                "name": inst["name"],
                "memory_max": lim["memory_max"],
                "cpu_quota": f"{lim['cpu_quota']}%" if lim["cpu_quota"] is not None else None,
                "io_weight": lim["io_weight"],
            }
        )
    return out


def test_the_inventory_under_test_limits_at_least_one_instance():
    # The demo inventory gives one instance limits so CI checks the kernel enforcement.
    assert LIMITED, f"no instance of {inventory_path()} has memory_max/cpu_quota"


@pytest.mark.parametrize("host,container,name,limits,user", LIMITED, ids=ids(LIMITED))
def test_limited_instance_runs_in_its_slice_with_the_kernel_limits(host, container, name, limits, user):
    pid = program_pid(container, name)
    cmdline = sh(container, f"tr '\\0' ' ' < /proc/{pid}/cmdline")
    assert "/bin/bitcoind " in cmdline and "systemd-run" not in cmdline  # systemd-run exec'd bitcoind
    groups = proc_cgroups(container, pid)
    unit_path = slice_cgroup(container, limits["slice"])
    for controller in ("memory", ""):
        path = groups.get(controller) or groups[""]
        assert path.startswith(unit_path + "/run-") and path.endswith(".scope"), groups
    enforced = kernel_limits(container, unit_path)
    assert enforced["memory_max"] == limits["memory_max"]
    assert enforced["cpu_quota"] == limits["cpu_quota"]
    status = sh(container, f"grep -E '^(Uid|Groups):' /proc/{pid}/status")
    uid = sh(container, f"id -u {user}").strip()
    assert f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}" in status
    assert status.rstrip().endswith("Groups:")  # no supplementary group (root's would be 0)


@pytest.mark.parametrize("host,container,name,limits,user", UNLIMITED, ids=ids(UNLIMITED))
def test_unlimited_instance_keeps_the_plain_command(host, container, name, limits, user):
    conf = sh(container, f"cat /etc/supervisor/conf.d/bitcoind-{name}.conf")
    command = next(line for line in conf.splitlines() if line.startswith("command"))
    assert "systemd-run" not in command and "/bin/bitcoind -conf=" in command
    assert f"user={user}" in conf.replace(" ", "")
    pid = program_pid(container, name)
    assert "nodefleet.slice" not in proc_cgroups(container, pid).get("", "")


@pytest.mark.skipif(not LIMITED, reason="no limited instance")
def test_a_changed_limit_applies_live_and_check_mode_only_reports_it():
    host, container, name, limits, _user = LIMITED[0]
    unit_path = slice_cgroup(container, limits["slice"])
    pid = program_pid(container, name)
    bigger = limits["memory_max"] + 64 * 1024 * 1024 if limits["memory_max"] else None
    override = {name: {"memory_max": bigger, "cpu_quota": 33}}
    try:
        dry = run_limits_module(host, module_args(host, override), check=True)
        assert dry.get("changed") is True, dry.get("msg")
        assert "CPUQuota=33%" in json.dumps(dry.get("diff"))
        assert kernel_limits(container, unit_path)["cpu_quota"] == limits["cpu_quota"]  # not applied

        live = run_limits_module(host, module_args(host, override))
        assert live.get("changed") is True, live.get("msg")
        assert kernel_limits(container, unit_path) == {"memory_max": bigger, "cpu_quota": 33}
        assert program_pid(container, name) == pid  # no restart
        again = run_limits_module(host, module_args(host, override))
        assert again.get("changed") is False, again.get("msg")
    finally:
        restored = run_limits_module(host, module_args(host))
    assert restored.get("changed") is True, restored.get("msg")
    assert kernel_limits(container, unit_path) == {k: limits[k] for k in ("memory_max", "cpu_quota")}
    assert program_pid(container, name) == pid


@pytest.mark.skipif(not LIMITED, reason="no limited instance")
def test_status_reports_usage_against_the_limit():
    host, _container, name, limits, _user = LIMITED[0]
    argv = [
        tool("ansible"),
        "-i",
        str(inventory_path()),
        host,
        "--become",
        "-m",
        "nodefleet.bitcoin.bitcoind_info",
        "-a",
        json.dumps({"names": [name], "count_restarts": False}),
    ]
    env = {**ansible_env(), "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "json"}
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    result = json.loads(out.stdout)["plays"][0]["tasks"][0]["hosts"][host]
    res = result["instances"][0]["resources"]
    assert res["memory_limit_bytes"] == limits["memory_max"]
    assert 0 < res["memory_used_bytes"] < limits["memory_max"]
    assert res["cpu_quota_percent"] == limits["cpu_quota"]
    # cgroup v2 counts the slice's OOM kills; v1 cannot (the kernel counts them in the removed scope)
    assert res["oom_kills_total"] is None or res["oom_kills_total"] >= 0
    assert res["cpu_seconds_total"] >= 0
    assert res["datadir_bytes"] > 0


if os.environ.get("NODEFLEET_LIMITS_DEBUG"):
    print(json.dumps(LIMITED, indent=1, default=str))
