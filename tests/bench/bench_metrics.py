#!/usr/bin/env python3
# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark the textfile renderer (plugins/module_utils/metrics.py) and promtool's rule tests.

    .venv/bin/python tests/bench/bench_metrics.py                 # 20 instances, 50 hosts
    .venv/bin/python tests/bench/bench_metrics.py --instances 40 --hosts 200

Prints the time of one render_textfile (one node, N instances, what the collector does every
interval), of one render_fleet_textfile (one host's fleet file from H hosts x N instances,
what the status play does per host), the size of the text, and the wall time of
``promtool test rules`` on docs/monitoring (when .cache/bin/promtool exists).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, ".cache", "collections"))

from ansible_collections.nodefleet.bitcoin.plugins.module_utils import metrics  # noqa: E402
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.instance_states import STATES  # noqa: E402

NOW = 1700003600.0


def instance(name: str, blocks: int) -> dict:
    return {
        "name": name, "state": "up", "impl": "knots", "network": "signet", "blocks": blocks, "headers": blocks,
        "best_block_time": NOW - 120, "verificationprogress": 0.9999, "initialblockdownload": False,
        "size_on_disk": 10**10, "pruned": False, "uptime": 86400, "version": 290000,
        "subversion": "/Satoshi:29.1.0/Knots:20250305/", "tor_mode": "tor-only", "onion_address": "x" * 56 + ".onion",
        "program": "bitcoind-" + name,
        "peers": {"total": 10, "inbound": 2, "outbound": 8,
                  "breakdown": {"libre_relay": 1, "knots": 2, "core_v30_plus": 3, "core_pre_v30": 3, "other": 1}},
        "supervisord": {"state": "RUNNING", "pid": 42, "start": NOW - 86400, "uptime": 86400, "restarts": 1},
        "elapsed": 0.01,
    }  # fmt: skip


def result(n: int, offset: int) -> dict:
    summary = dict.fromkeys(STATES, 0)
    summary.update(up=n, total=n)
    return {"instances": [instance(f"i{i}", 250000 - offset - i) for i in range(n)], "summary": summary}


def timed(func, runs: int) -> tuple:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    node = result(args.instances, 0)
    fleet = {f"h{h}": result(args.instances, h) for h in range(args.hosts)}
    text = metrics.render_textfile("h0", node, NOW)
    med, worst = timed(lambda: metrics.render_textfile("h0", node, NOW), args.runs)
    print(f"render_textfile, {args.instances} instances: median {med * 1000:.2f} ms, max {worst * 1000:.2f} ms;"
          f" {len(text)} bytes, {text.count(chr(10))} lines")  # fmt: skip
    med, worst = timed(lambda: metrics.render_fleet_textfile("h0", fleet, NOW), args.runs)
    print(f"render_fleet_textfile, {args.hosts} hosts x {args.instances} instances: median {med * 1000:.2f} ms,"
          f" max {worst * 1000:.2f} ms")  # fmt: skip
    promtool = os.path.join(ROOT, ".cache", "bin", "promtool")
    if os.access(promtool, os.X_OK):
        cwd = os.path.join(ROOT, "docs", "monitoring")
        cmd = [promtool, "test", "rules", "nodefleet.rules.test.yml"]
        med, worst = timed(lambda: subprocess.run(cmd, cwd=cwd, check=True, capture_output=True), 5)
        print(f"promtool test rules (docs/monitoring): median {med:.2f} s, max {worst:.2f} s")
    else:
        print("promtool test rules: skipped (no .cache/bin/promtool; run scripts/setup.sh)")


if __name__ == "__main__":
    main()
