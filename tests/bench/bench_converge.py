#!/usr/bin/env python3
"""Converge benchmark for one node with 1, 5 and 10 bitcoind instances (issue 3).

For each size N, on a fresh podman node (tests/fleet/create.yml) this measures:
  - T_fresh: the wall time of the first `playbooks/site.yml` run,
  - T_noop:  the no-op re-converge (the site plays of a second run, which must report
             zero changed),
  - T_rt:    one plain module round-trip (`ansible.builtin.stat`) over the same connection
             in the same run (median of 5),
  - the module executions on the node per run (tasks that ran a module on the node, loop
    items counted one by one; controller-side actions and delegated tasks excluded).
It prints a table and the target ratio ((T_noop(10) - T_noop(1)) / 9) / T_rt, which the
issue wants at most 2, and the module executions per added instance.

    .venv/bin/python tests/bench/bench_converge.py [--sizes 1 5 10] [--keep]

Numbers go to docs/performance.md by hand; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INVENTORY_DIR = ROOT / ".cache" / "bench"  # inventory_dir/../../build/release is the demo's releases dir
HOST = "bench-node1"
CONTAINER = "nodefleet-bench-node1"
# Actions that never run a module on the node.
CONTROLLER_ACTIONS = {
    "ansible.builtin.set_fact",
    "ansible.builtin.assert",
    "ansible.builtin.debug",
    "ansible.builtin.fail",
    "ansible.builtin.meta",
    "ansible.builtin.include_tasks",
    "ansible.builtin.import_tasks",
    "ansible.builtin.include_role",
    "ansible.builtin.validate_argument_spec",
    "set_fact",
    "assert",
    "debug",
    "fail",
    "meta",
    "validate_argument_spec",
}

PROBE_PLAY = """
- name: Round-trip probe (one plain module over the same connection)
  hosts: {host}
  gather_facts: false
  tasks:
{tasks}
"""


def instances(count: int) -> list[dict]:
    """N regtest instances, cycling impl and Tor mode like an operator's mixed host."""
    impls = ["core", "knots", "garbageman"]
    modes = ["tor-only", "clearnet", "both"]
    out = []
    for i in range(count):
        out.append(
            {
                "name": "bench%02d" % i,
                "impl": impls[i % 3],
                "network": "regtest",
                "tor_mode": modes[i % 3],
                "port_slot": 100 + i,
                "rpc_users": [{"user": "bench", "password": "bench-password-%02d" % i}],
            }
        )
    return out


def fresh_inventory_dir(path: Path) -> None:
    """Empty ``path`` with host_vars/ and the demo's fleet-wide group_vars (releases, signers,
    fleet peering, onion key backups, fast start/stop). ``path`` must be two levels below the
    repository: the demo's group_vars find build/release at inventory_dir/../../."""
    if path.exists():
        shutil.rmtree(path)
    (path / "host_vars").mkdir(parents=True)
    (path / "group_vars").mkdir()
    shutil.copytree(ROOT / "inventories" / "demo" / "group_vars" / "fleet", path / "group_vars" / "fleet")


def set_fleet_size(path: Path, hosts: int) -> None:
    """The demo's group_vars say 3 hosts (bitcoind_fleet_size); a benchmark fleet says its own
    number, in a group_vars file read after the demo's."""
    (path / "group_vars" / "fleet" / "zz-fleet-size.yml").write_text(json.dumps({"bitcoind_fleet_size": hosts}))


def write_inventory(count: int) -> Path:
    fresh_inventory_dir(INVENTORY_DIR)
    set_fleet_size(INVENTORY_DIR, 1)
    hosts = {
        "fleet": {
            "hosts": {HOST: {"ansible_host": CONTAINER, "nodefleet_container_name": CONTAINER}},
            "vars": {
                "ansible_connection": "podman_pipelined",
                "ansible_python_interpreter": "/usr/bin/python3",
            },
        }
    }
    (INVENTORY_DIR / "hosts.yml").write_text(json.dumps(hosts, indent=2))
    (INVENTORY_DIR / "host_vars" / ("%s.yml" % HOST)).write_text(json.dumps({"bitcoind_instances": instances(count)}))
    return INVENTORY_DIR / "hosts.yml"


def env() -> dict:
    e = dict(os.environ)
    e.update(
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        PATH="%s:%s" % (ROOT / ".venv" / "bin", e.get("PATH", "")),
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_CALLBACK_RESULT_FORMAT="json",
        ANSIBLE_FORCE_COLOR="0",
    )
    return e


def playbook(inventory: Path, *playbooks: str | Path) -> tuple[dict, float]:
    start = time.monotonic()
    for pb in playbooks:
        proc = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", str(inventory), str(pb)],
            cwd=ROOT,
            env=env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
            raise SystemExit("ansible-playbook %s failed (rc=%d)" % (pb, proc.returncode))
    return json.loads(proc.stdout), time.monotonic() - start


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def play_seconds(play: dict) -> float:
    duration = play["play"]["duration"]
    return parse_time(duration["end"]) - parse_time(duration["start"])


def module_executions(plays: list[dict], host: str = HOST) -> int:
    """Module executions on ``host`` in the JSON callback's ``plays`` (loop items one by one)."""
    count = 0
    for play in plays:
        for task in play["tasks"]:
            result = task["hosts"].get(host)
            if result is None or result.get("skipped"):
                continue
            action = result.get("action") or task["task"].get("action", "")
            if action in CONTROLLER_ACTIONS or result.get("_ansible_delegated_vars"):
                continue
            items = result.get("results")
            if items is None:
                count += 1
            else:
                count += sum(1 for item in items if not item.get("skipped"))
    return count


def changed_count(stats: dict) -> int:
    return sum(host.get("changed", 0) for host in stats.values())


def fleet(inventory: Path, action: str) -> None:
    subprocess.run(
        [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", str(inventory), "tests/fleet/%s.yml" % action],
        cwd=ROOT,
        env=dict(env(), ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default"),
        check=True,
        capture_output=True,
    )


def measure(count: int, keep: bool) -> dict:
    inventory = write_inventory(count)
    fleet(inventory, "destroy")
    fleet(inventory, "create")
    try:
        _fresh, t_fresh = playbook(inventory, ROOT / "playbooks" / "site.yml")
        probe = INVENTORY_DIR / "bench.yml"
        tasks = "".join(
            "    - name: Stat round-trip %d\n      ansible.builtin.stat:\n        path: /etc/hostname\n" % i
            for i in range(5)
        )
        probe.write_text(
            "---\n- name: Converge\n  ansible.builtin.import_playbook: %s\n" % (ROOT / "playbooks" / "site.yml")
            + PROBE_PLAY.format(host=HOST, tasks=tasks)
        )
        noop, _wall = playbook(inventory, probe)
        site_plays = noop["plays"][:-1]
        t_noop = sum(play_seconds(p) for p in site_plays)
        stat_times = []
        for task in noop["plays"][-1]["tasks"]:
            d = task["hosts"][HOST] and task["task"]["duration"]
            stat_times.append(parse_time(d["end"]) - parse_time(d["start"]))
        return {
            "instances": count,
            "fresh_s": round(t_fresh, 2),
            "noop_s": round(t_noop, 2),
            "noop_changed": changed_count(noop["stats"]),
            "roundtrip_s": round(statistics.median(stat_times), 3),
            "module_executions_noop": module_executions(site_plays),
        }
    finally:
        if not keep:
            fleet(inventory, "destroy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--keep", action="store_true", help="leave the last bench node running")
    args = parser.parse_args()
    rows = [measure(n, args.keep and n == args.sizes[-1]) for n in args.sizes]
    print(
        "| instances | fresh converge s | no-op re-converge s | changed "
        "| stat round-trip s | module executions (no-op) |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            "| %(instances)d | %(fresh_s).2f | %(noop_s).2f | %(noop_changed)d | %(roundtrip_s).3f "
            "| %(module_executions_noop)d |" % r
        )
    first, last = rows[0], rows[-1]
    span = last["instances"] - first["instances"]
    if span:
        per_instance = (last["noop_s"] - first["noop_s"]) / span
        rt = statistics.median(r["roundtrip_s"] for r in rows)
        execs = (last["module_executions_noop"] - first["module_executions_noop"]) / span
        print()
        print(
            "no-op extra cost per added instance: %.3f s = %.2f round-trips (target <= 2)"
            % (per_instance, per_instance / rt)
        )
        print("module executions per added instance (no-op run): %.2f" % execs)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
