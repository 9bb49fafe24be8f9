#!/usr/bin/env python3
# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Time of a rolling upgrade of the fleet and each instance's downtime (issue 11).

    NODEFLEET_INVENTORY=$PWD/inventories/demo/hosts.yml .venv/bin/python tests/bench/bench_rolling_upgrade.py
    ... tests/bench/bench_rolling_upgrade.py --settle 30 --out build/bench/rolling.json

On the converged fleet of NODEFLEET_INVENTORY (default the demo inventory): rolls knots and
garbageman forward to the good upgrade fixtures (build/release/upgrade/good, built by
tests/release/build_release.sh), then back to the inventory's releases, both with
playbooks/upgrade.yml, while an RPC poller inside each node (50 ms; authenticated getblockcount,
so warming up counts as down) records when each instance did not answer. Prints, per direction,
the wall-clock time of the whole playbook and, per instance, its downtime (sum of its windows) and
how many windows it had; and checks that no two instances of one host were down at once.

`--settle` is the health gate's settle window (bitcoind_gate_settle, role default 30 s): every
restarted instance must stay up that long before the next restart, so it dominates the roll
time (restarted instances x settle, hosts one after the other).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "molecule" / "default" / "tests"))

from fleet_inventory import fleet_nodes  # noqa: E402
from instance_checks import instances_from_report, plan_report  # noqa: E402
from rolling_checks import DowntimeProbe, overlapping, releases, run_upgrade  # noqa: E402


def roll(instances, extra: dict) -> dict:
    probe = DowntimeProbe(instances)
    probe.start()
    start = time.monotonic()
    try:
        rc, out, err = run_upgrade(extra)
    finally:
        seconds = time.monotonic() - start
        windows = probe.stop()
    if rc != 0:
        sys.exit("upgrade.yml failed (rc %d):\n%s" % (rc, (out + err)[-4000:]))
    return {"seconds": round(seconds, 1), "windows": windows}


def report(title: str, result: dict, instances) -> list[str]:
    lines = [
        "",
        "### %s: %.1f s" % (title, result["seconds"]),
        "",
        "| host | instance | impl | downtime (s) | windows |",
    ]
    lines.append("|---|---|---|---|---|")
    for inst in instances:
        windows = result["windows"][(inst.host, inst.name)]
        down = sum((end or time.time()) - start for start, end in windows)
        lines.append("| %s | %s | %s | %.2f | %d |" % (inst.host, inst.name, inst.impl, down, len(windows)))
    clash = overlapping(result["windows"])
    lines.append("")
    lines.append("overlapping downtime on one host: %s" % (clash if clash else "none"))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settle", type=int, default=30, help="bitcoind_gate_settle (s), default 30")
    parser.add_argument("--serial", default="1", help="nodefleet_upgrade_serial, default 1")
    parser.add_argument("--out", default=str(ROOT / "build" / "bench" / "rolling.json"))
    args = parser.parse_args()

    nodes = fleet_nodes()
    instances = instances_from_report(plan_report(), nodes)
    common = {"bitcoind_gate_settle": args.settle, "bitcoind_gate_interval": 1, "nodefleet_upgrade_serial": args.serial}
    forward = roll(instances, {**common, "bitcoind_releases": releases(knots="good", garbageman="good")})
    back = roll(instances, common)

    lines = [
        "Rolling upgrade on %d host(s), %d instance(s) (%d knots/garbageman restarted per roll), settle %d s, serial %s"
        % (
            len(nodes),
            len(instances),
            sum(1 for i in instances if i.impl in ("knots", "garbageman")),
            args.settle,
            args.serial,
        )
    ]
    lines += report("forward (knots, garbageman -> upgrade/good)", forward, instances)
    lines += report("back (-> the inventory's releases)", back, instances)
    print("\n".join(lines))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "settle": args.settle,
                "serial": args.serial,
                "forward": {
                    "seconds": forward["seconds"],
                    "windows": {"%s:%s" % k: v for k, v in forward["windows"].items()},
                },
                "back": {"seconds": back["seconds"], "windows": {"%s:%s" % k: v for k, v in back["windows"].items()}},
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
