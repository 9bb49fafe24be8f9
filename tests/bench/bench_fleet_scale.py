#!/usr/bin/env python3
# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Converge at fleet scale (issue 15): N node containers with 5 regtest instances each.

    .venv/bin/python tests/bench/bench_fleet_scale.py                 # N = 5 10 20
    .venv/bin/python tests/bench/bench_fleet_scale.py --sizes 5 --keep --out build/bench/scale.json

For each N, on N fresh podman nodes (tests/fleet/create.yml, the demo's releases and settings:
real Bitcoin Core from ../shared/bitcoin-core when build/release has it), measured in one run:

- fresh: the first `playbooks/site.yml` (releases installed, onion services, programs started);
- no-op: the second `playbooks/site.yml` (must report changed=0), with the module executions per
  host (tasks that ran a module on the node, loop items one by one; controller-side actions and
  delegated tasks excluded, bench_converge.module_executions), split into the fixed per-host part
  and the part per instance;
- floor: a play of as many trivial module tasks per host (`ansible.builtin.stat`, become) as that
  no-op executed, on the same N nodes - what the same number of round-trips costs at the least;
- status: `playbooks/status.yml` (table, JSON report, textfile);
- memory: the resident memory of the first node (every process in its container) and of its
  bitcoinds, with the instances idle.

Every instance is `impl: core` (real Core when present; the stand-in otherwise, and then the memory
column is the stand-in's). Prints one Markdown table row per N and the growth of each time with N;
`--out` keeps the numbers as JSON. Numbers go to docs/performance.md by hand; nothing here asserts
a time. The nodes are removed afterwards unless `--keep` (then the last size stays up).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_converge import ROOT, changed_count, env, fresh_inventory_dir, module_executions, set_fleet_size

INVENTORY_DIR = ROOT / ".cache" / "bench-scale"  # inventory_dir/../../build/release: the demo's releases
INSTANCES_PER_NODE = 5
TOR_MODES = ("tor-only", "clearnet", "both")


def host_name(i: int) -> str:
    return "scale-node%02d" % i


def write_inventory(nodes: int) -> Path:
    fresh_inventory_dir(INVENTORY_DIR)
    set_fleet_size(INVENTORY_DIR, nodes)
    hosts = {}
    for n in range(1, nodes + 1):
        name = host_name(n)
        hosts[name] = {"ansible_host": "nodefleet-" + name}
        instances = [
            {
                "name": "core%d" % i,
                "impl": "core",
                "network": "regtest",
                "tor_mode": TOR_MODES[i % len(TOR_MODES)],
                "rpc_users": [{"user": "bench", "password": "bench-%s-%d-not-secret" % (name, i)}],
            }
            for i in range(INSTANCES_PER_NODE)
        ]
        (INVENTORY_DIR / "host_vars" / (name + ".yml")).write_text(json.dumps({"bitcoind_instances": instances}))
    inventory = {
        "fleet": {
            "hosts": hosts,
            "vars": {"ansible_connection": "podman_pipelined", "ansible_python_interpreter": "/usr/bin/python3"},
        }
    }
    (INVENTORY_DIR / "hosts.yml").write_text(json.dumps(inventory, indent=2))
    return INVENTORY_DIR / "hosts.yml"


def run(inventory: Path, playbook: Path, *extra: str, json_out: bool = True) -> tuple[dict | None, float]:
    start = time.monotonic()
    proc = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", str(inventory), str(playbook), *extra],
        cwd=ROOT,
        env=env() if json_out else dict(env(), ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default"),
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.monotonic() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-6000:] + proc.stderr[-4000:])
        raise SystemExit("ansible-playbook %s failed (rc=%d)" % (playbook, proc.returncode))
    return (json.loads(proc.stdout) if json_out else None), wall


def floor_playbook(tasks: int) -> Path:
    body = "".join(
        "    - name: Trivial module %d\n      ansible.builtin.stat:\n        path: /etc/hostname\n" % i
        for i in range(tasks)
    )
    path = INVENTORY_DIR / "floor.yml"
    path.write_text(
        "---\n- name: Floor (trivial module tasks)\n  hosts: fleet\n  become: true\n  gather_facts: false\n"
        "  tasks:\n" + body
    )
    return path


def node_memory_mib(container: str) -> tuple[float, float, int]:
    """(every process's RSS, the bitcoinds' RSS, how many bitcoinds) in MiB, inside ``container``."""
    out = subprocess.run(
        ["podman", "exec", container, "ps", "-eo", "rss=,comm="], capture_output=True, text=True, check=True
    ).stdout
    total = bitcoind = 0
    count = 0
    for line in out.splitlines():
        rss, _, comm = line.strip().partition(" ")
        if not rss.isdigit():
            continue
        total += int(rss)
        if comm.strip() == "bitcoind":
            bitcoind += int(rss)
            count += 1
    return round(total / 1024, 1), round(bitcoind / 1024, 1), count


def measure(nodes: int, keep: bool) -> dict:
    inventory = write_inventory(nodes)
    run(inventory, ROOT / "tests" / "fleet" / "destroy.yml", json_out=False)
    _, t_create = run(inventory, ROOT / "tests" / "fleet" / "create.yml", json_out=False)
    try:
        site = ROOT / "playbooks" / "site.yml"
        _, t_fresh = run(inventory, site, json_out=False)
        noop, t_noop = run(inventory, site)
        executions = {h: module_executions(noop["plays"], h) for h in noop["stats"]}
        per_host = sorted(set(executions.values()))
        _, t_floor = run(inventory, floor_playbook(max(per_host)))
        status_json = INVENTORY_DIR / "status.json"
        status_play = ROOT / "playbooks" / "status.yml"
        status, t_status = run(inventory, status_play, "-e", "nodefleet_status_json=%s" % status_json)
        status_executions = sorted({module_executions(status["plays"], h) for h in status["stats"]})
        report = json.loads(status_json.read_text())
        states = sorted({i["state"] for h in report["hosts"].values() for i in h["instances"]})
        total_mib, bitcoind_mib, daemons = node_memory_mib("nodefleet-" + host_name(1))
        return {
            "nodes": nodes,
            "instances": nodes * INSTANCES_PER_NODE,
            "create_s": round(t_create, 1),
            "fresh_s": round(t_fresh, 1),
            "noop_s": round(t_noop, 1),
            "noop_changed": changed_count(noop["stats"]),
            "executions_per_host": per_host,
            "fixed_per_host": [n - INSTANCES_PER_NODE for n in per_host],
            "floor_s": round(t_floor, 1),
            "noop_over_floor": round(t_noop / t_floor, 2),
            "status_s": round(t_status, 1),
            "status_executions_per_host": status_executions,
            "status_states": states,
            "node_rss_mib": total_mib,
            "bitcoind_rss_mib": bitcoind_mib,
            "bitcoinds_on_node": daemons,
        }
    finally:
        if not keep:
            run(inventory, ROOT / "tests" / "fleet" / "destroy.yml", json_out=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--keep", action="store_true", help="leave the nodes of the last size running")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        rows.append(measure(n, args.keep and n == args.sizes[-1]))
        print(json.dumps(rows[-1]), flush=True)
        if args.out:  # after every size: a long run that is stopped keeps what it measured
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print()
    print(
        "| nodes x instances | fresh converge s | no-op converge s | changed | module executions per host "
        "(fixed + 1 per instance) | floor s | no-op / floor | status.yml s (executions per host) "
        "| node RSS MiB (bitcoinds) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            "| %d x %d | %.1f | %.1f | %d | %s (%s + %d) | %.1f | %.2f | %.1f (%s) | %.1f (%.1f, %d daemons) |"
            % (
                r["nodes"],
                INSTANCES_PER_NODE,
                r["fresh_s"],
                r["noop_s"],
                r["noop_changed"],
                "/".join(map(str, r["executions_per_host"])),
                "/".join(map(str, r["fixed_per_host"])),
                INSTANCES_PER_NODE,
                r["floor_s"],
                r["noop_over_floor"],
                r["status_s"],
                "/".join(map(str, r.get("status_executions_per_host", []))),
                r["node_rss_mib"],
                r["bitcoind_rss_mib"],
                r["bitcoinds_on_node"],
            )
        )
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        span = last["nodes"] - first["nodes"]
        print()
        for key in ("fresh_s", "noop_s", "floor_s", "status_s"):
            print(
                "%s grows by %.2f s per added node (%d -> %d nodes)"
                % (key, (last[key] - first[key]) / span, first["nodes"], last["nodes"])
            )


if __name__ == "__main__":
    main()
