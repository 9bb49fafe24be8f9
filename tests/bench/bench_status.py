#!/usr/bin/env python3
# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark bitcoind_info: N stand-in instances under a real supervisord on loopback.

    .venv/bin/python tests/bench/bench_status.py            # 9 and 20 instances, 5 runs each
    .venv/bin/python tests/bench/bench_status.py 9 20 40 --runs 3

For each N it reports the module's own wall time (``elapsed`` in its result: the parallel RPC
and supervisord queries) and the wall time of the whole ``ansible localhost -m`` run, median
and max over the runs, with every instance up; then the same with one instance SIGSTOPped
(hung), which must cost about one ``timeout`` (2 s here), not one per instance.
Everything runs on 127.0.0.1 and is torn down at the end.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, ".cache", "collections"))

from ansible_collections.nodefleet.bitcoin.tests.integration import test_bitcoind_info as harness  # noqa: E402
from ansible_collections.nodefleet.bitcoin.tests.integration.supervisord_fixture import (  # noqa: E402
    running_supervisord,
)

HUNG_TIMEOUT = 2.0


def bench(count: int, runs: int) -> dict:
    with running_supervisord() as sv, tempfile.TemporaryDirectory(prefix="bench-", dir="/tmp") as root:
        names = [f"b{i:02d}" for i in range(count)]
        for name in names:
            harness.write_instance(sv, name, root)
        sv.update()
        for name in names:
            sv.wait_state(f"bitcoind-{name}", "RUNNING")
        harness.wait_all_up(sv, names, budget=60)
        module, wall = [], []
        for _ in range(runs):
            result, seconds, _ = harness.run_info(sv, names)
            assert result["summary"]["up"] == count, result["summary"]
            module.append(result["elapsed"])
            wall.append(seconds)
        pid = sv.info(f"bitcoind-{names[0]}")["pid"]
        with harness.continued_on_exit([pid]):
            os.kill(pid, signal.SIGSTOP)
            result, hung_wall, _ = harness.run_info(sv, names, timeout=HUNG_TIMEOUT)
        assert result["summary"]["hung"] == 1 and result["summary"]["up"] == count - 1, result["summary"]
        return {
            "count": count,
            "module_median": statistics.median(module),
            "module_max": max(module),
            "wall_median": statistics.median(wall),
            "wall_max": max(wall),
            "hung_module": result["elapsed"],
            "hung_wall": hung_wall,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("counts", nargs="*", type=int, default=[9, 20])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if not os.path.exists(harness.STANDIN):
        print(f"stand-in not found: {harness.STANDIN}", file=sys.stderr)
        return 2
    rows = [bench(count, max(1, args.runs)) for count in args.counts]
    print(f"bitcoind_info, {os.cpu_count()} CPUs, {args.runs} runs per size; then 1 hung ({HUNG_TIMEOUT}s budget)")
    print("| instances | module s (median / max) | ansible run s (median / max) | 1 hung: module s | 1 hung: run s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['count']} | {r['module_median']:.3f} / {r['module_max']:.3f} | {r['wall_median']:.2f} / "
            f"{r['wall_max']:.2f} | {r['hung_module']:.3f} | {r['hung_wall']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
