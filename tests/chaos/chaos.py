#!/usr/bin/env python3
# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side of the chaos matrix: run a playbook and summarise it, judge a cell, write results.

    chaos.py select   --matrix matrix.yml --set ci|full [--cells a,b]   -> JSON list of cells
    chaos.py probe    (stdin: nodes -> container + credentials, probe args) -> the probe's JSON per node
    chaos.py playbook --log FILE -- ansible-playbook ARGS...          -> JSON summary of the run
    chaos.py evaluate --out DIR                 (stdin: the cell's raw data) -> writes DIR/<id>.json
    chaos.py report   --out DIR [--docs docs/chaos.md] [--expect-ids a,b]  -> DIR/summary.md (+ docs)
    chaos.py now                                                      -> epoch milliseconds
    chaos.py targets  (stdin: cell + settled snapshots)   -> the fault's instances and the chain witness
    chaos.py sync     (stdin: nodes, node, witness)       -> waits until the witness's tip reached its peers
    chaos.py tips     (stdin: snapshots, node, names)     -> the fleet tip each instance must get back to

The raw data of a cell (built by tasks/cell.yml) holds the cell spec, one entry per attempt
(snapshots of every node before and after, the injection, the wait, heal and converge runs)
and the final idempotence converge. It never holds a credential: snapshots are made by the
probe on the node, which prints none.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time

TABLE_BEGIN = "<!-- chaos-table:begin -->"
TABLE_END = "<!-- chaos-table:end -->"
UPTIME_SLACK_MS = 2000  # RPC uptime has 1 s resolution; the snapshot itself takes time
PROCESS_FAULTS = ("sigterm", "sigkill", "sigstop")
# Faults after which a daemon may come back LOWER (Core does not flush every block at once:
# a kill loses what was not flushed) and must fetch its tip back from its peers. Every other
# fault stops the daemon cleanly (SIGTERM: Core flushes) and must keep its height.
# (sigstop: heal.yml's graceful stop cannot reach a stopped process, it ends in SIGKILL.)
TIP_FAULTS = ("sigkill", "sigstop", "crashloop", "stale_lock", "restart", "oom")
ONION_FAULTS = ("onion_dir_deleted", "torrc_dropin_deleted")
DEFAULT_TIP_BUDGET_MS = 10000


# ---------------------------------------------------------------------------- matrix
def select_cells(matrix: dict, set_name: str, only: list[str] | None = None) -> list[dict]:
    """Cells of ``set_name`` (``full``: all; ``ci``: those with ``ci: true``), or exactly ``only``,
    each merged over the matrix defaults."""
    defaults = matrix.get("defaults", {})
    cells = [{**defaults, **cell} for cell in matrix["cells"]]
    ids = [c["id"] for c in cells]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError("duplicate cell ids: {}".format(", ".join(dupes)))
    if only:
        unknown = sorted(set(only) - set(ids))
        if unknown:
            raise ValueError("unknown cell ids: {}".format(", ".join(unknown)))
        return [c for c in cells if c["id"] in only]
    if set_name == "full":
        return [c for c in cells if not c.get("manual")]
    if set_name == "ci":
        return [c for c in cells if c.get("ci")]
    raise ValueError(f"unknown set {set_name!r} (ci, full)")


# ---------------------------------------------------------------------------- playbook runs
def summarize_playbook(output: str, rc: int, duration_ms: int) -> dict:
    """Summary of an ``ansible-playbook`` run with the json stdout callback."""
    start = output.find("{")
    try:
        data = json.loads(output[start:]) if start >= 0 else {}
    except ValueError:
        data = {}
    stats = data.get("stats", {})
    failures = []
    for play in data.get("plays", []):
        for task in play.get("tasks", []):
            for host, res in task.get("hosts", {}).items():
                if res.get("failed") or res.get("unreachable"):
                    if res.get("ignore_errors"):
                        continue
                    msg = res.get("msg") or res.get("stderr") or ""
                    items = [r for r in res.get("results", []) if r.get("failed")]
                    if items:
                        # A failed loop says only "One or more items failed"; the item says why.
                        item_msgs = "; ".join(str(r.get("msg", "")) for r in items)
                        msg = "%s; %s" % (msg, item_msgs) if msg.strip() else item_msgs
                    failures.append({"host": host, "task": task.get("task", {}).get("name", ""), "msg": str(msg)})
    return {
        "rc": rc,
        "parsed": bool(data),
        "changed": sum(s.get("changed", 0) for s in stats.values()),
        "failed": sum(s.get("failures", 0) for s in stats.values()),
        "unreachable": sum(s.get("unreachable", 0) for s in stats.values()),
        "changed_by_host": {h: s.get("changed", 0) for h, s in stats.items()},
        "failures": failures,
        "duration_ms": duration_ms,
    }


def run_playbook(argv: list[str], log: str | None, timeout: float) -> dict:
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    started = time.monotonic()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, check=False)
        out, rc = proc.stdout, proc.returncode
        err = proc.stderr
    except subprocess.TimeoutExpired as exc:
        out, rc, err = exc.stdout or "", 124, f"timed out after {timeout}s"
        out = out.decode() if isinstance(out, bytes) else out
    duration = int((time.monotonic() - started) * 1000)
    if log:
        os.makedirs(os.path.dirname(log), exist_ok=True)
        with open(log, "w", encoding="utf-8") as fh:
            fh.write(out)
            fh.write("\n--- stderr ---\n" + (err or ""))
    summary = summarize_playbook(out, rc, duration)
    if not summary["parsed"]:
        summary["stderr_tail"] = (err or "")[-2000:]
    return summary


# ---------------------------------------------------------------------------- the probe on nodes
PROBE_PATH = "/usr/local/lib/nodefleet-chaos/chaos_probe.py"


def probe_node(container: str, args: list[str], creds: dict, timeout: float) -> dict:
    """Run the probe in ``container`` (podman exec), credentials on stdin; its JSON or an error."""
    args = [a if isinstance(a, str) else json.dumps(a) for a in args]
    argv = ["podman", "exec", "-i", container, "python3", PROBE_PATH, *args]
    try:
        proc = subprocess.run(
            argv, input=json.dumps(creds), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"probe timed out after {timeout}s", "rc": 124}
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip()[-1500:], "rc": proc.returncode}
    try:
        return json.loads(proc.stdout)
    except ValueError:
        return {"error": "probe printed no JSON: " + proc.stdout[-500:], "rc": proc.returncode}


def probe_nodes(spec: dict) -> dict:
    """``spec``: {"nodes": {node: {"container", "creds"}}, "args": [...], "timeout": s}.
    Runs the probe on every node in parallel; returns {"results": {node: ...}, "failed": [nodes]}."""
    from concurrent.futures import ThreadPoolExecutor

    nodes = spec["nodes"]
    timeout = float(spec.get("timeout", 300))
    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        futures = {
            node: pool.submit(probe_node, info["container"], spec["args"], info["creds"], timeout)
            for node, info in nodes.items()
        }
        results = {node: fut.result() for node, fut in futures.items()}
    return {"results": results, "failed": sorted(n for n, r in results.items() if "error" in r and "rc" in r)}


# ---------------------------------------------------------------------------- chain data
def chain_rule(cell: dict) -> str:
    """``kept``: the fault stops the daemon cleanly, its height must not drop; ``tip``: it may
    come back lower and must regain the fleet's tip of its chain from its peers."""
    return cell.get("chain_rule") or ("tip" if cell["fault"] in TIP_FAULTS else "kept")


def is_native(inst: dict) -> bool:
    """The instance runs a real daemon (Core's bitcoind), not the stand-in (which keeps every
    block and exchanges none: a stand-in's chain is its own)."""
    daemons = inst.get("daemons") or []
    return bool(daemons) and all(d.get("kind") == "native" for d in daemons)


def same_chain(snapshots: dict, node: str, name: str) -> list[tuple[str, str]]:
    """``node/name`` and every fleet instance that shares its chain: a real daemon of the same
    network with the same chain id (hash of block 1: daemons that exchanged blocks share it)."""
    me = snapshots.get(node, {}).get("instances", {}).get(name, {})
    group = [(node, name)]
    if not is_native(me) or not me.get("chain_id"):
        return group
    for other_node, snap in sorted(snapshots.items()):
        for other, inst in sorted(snap.get("instances", {}).items()):
            if (other_node, other) == (node, name):
                continue
            if is_native(inst) and inst.get("chain") == me.get("chain") and inst.get("chain_id") == me.get("chain_id"):
                group.append((other_node, other))
    return sorted(group)


def fleet_tip(snapshots: dict, node: str, name: str) -> dict:
    """The fleet's tip of ``node/name``'s chain: the highest block over the instances that share
    its chain (ties: the instance's own block), and who holds it."""
    group = same_chain(snapshots, node, name)
    me = snapshots.get(node, {}).get("instances", {}).get(name, {})
    best = {"height": me.get("blocks"), "hash": me.get("bestblockhash")}
    for n, nm in group:
        inst = snapshots[n]["instances"][nm]
        if (
            inst.get("blocks") is not None
            and inst.get("bestblockhash")
            and (best["height"] is None or inst["blocks"] > best["height"])
        ):
            best = {"height": inst["blocks"], "hash": inst["bestblockhash"]}
    held_by = [
        f"{n}/{nm}"
        for n, nm in group
        if (n, nm) != (node, name) and snapshots[n]["instances"][nm].get("bestblockhash") == best["hash"]
    ]
    return {**best, "group": [f"{n}/{nm}" for n, nm in group], "held_by": held_by}


def tips_for(snapshots: dict, node: str, names: list[str]) -> dict:
    """{name: {"hash", "height"}}: the tip each instance of ``node`` must get back to."""
    out = {}
    for name in names:
        tip = fleet_tip(snapshots, node, name)
        out[name] = {"hash": tip["hash"], "height": tip["height"]}
    return out


def witness_candidates(snapshot: dict, others: dict, fault: str | None = None) -> list[str]:
    """Instances of one node that can show the chain rule: regtest (they can mine), a real
    daemon, at least one peer connection, and a chain shared with an instance of another node.
    For onion faults the instance must have an onion service."""
    out = []
    for name, inst in snapshot.get("instances", {}).items():
        if inst.get("chain") != "regtest" or not is_native(inst) or not inst.get("connections"):
            continue
        if fault in ONION_FAULTS and not inst.get("onion"):
            continue
        out.append(name)
    return out


def pick_targets(cell: dict, settled: dict) -> dict:
    """The instances the fault targets (``names``) and the instance that shows the chain rule
    (``witness``); ``error`` when the node has no instance that can show it (the cell must fail
    loudly, not pass vacuously)."""
    node, target = cell["node"], cell["target"]
    snap = settled.get(node) or {}
    every = list(snap.get("instances", {}))
    if target == "tor":
        return {"names": [], "witness": None, "error": ""}
    fault = cell.get("fault") if target == "instance" else None
    candidates = witness_candidates(snap, settled, fault)
    instance = cell.get("instance", "auto")
    if instance != "auto":
        if instance not in every:
            return {"names": [], "witness": None, "error": f"{node} has no instance {instance!r} (has {every})"}
        witness = instance
    elif candidates:
        witness = candidates[0]
    else:
        seen = {
            name: {
                "chain": inst.get("chain"),
                "daemon": "native" if is_native(inst) else "standin",
                "connections": inst.get("connections"),
                "onion": bool(inst.get("onion")),
            }
            for name, inst in snap.get("instances", {}).items()
        }
        return {
            "names": [],
            "witness": None,
            "error": (
                f"{node} has no instance that can show the chain rule (a real-Core regtest instance with a peer"
                + (" and an onion service" if fault in ONION_FAULTS else "")
                + f"; enable bitcoind_fleet_peering): {json.dumps(seen, sort_keys=True)}"
            ),
        }
    names = [witness] if target == "instance" else every
    return {"names": names, "witness": witness, "error": ""}


def sync_state(snapshots: dict, node: str, witness: str) -> dict:
    """Has every instance sharing the witness's chain its tip, and does one on another node?"""
    inst = snapshots.get(node, {}).get("instances", {}).get(witness, {})
    tip = inst.get("bestblockhash")
    group = same_chain(snapshots, node, witness)
    holders = [f"{n}/{nm}" for n, nm in group if snapshots[n]["instances"][nm].get("bestblockhash") == tip]
    lagging = {
        f"{n}/{nm}": snapshots[n]["instances"][nm].get("blocks")
        for n, nm in group
        if snapshots[n]["instances"][nm].get("bestblockhash") != tip
    }
    elsewhere = [h for h in holders if not h.startswith(node + "/")]
    return {
        "tip": {"height": inst.get("blocks"), "hash": tip},
        "holders": holders,
        "lagging": lagging,
        "synced": bool(tip) and bool(elsewhere) and not lagging,
        "connections": inst.get("connections"),
    }


def wait_synced(spec: dict) -> dict:
    """Snapshot the fleet until the block just mined on the witness reached its peers (bounded)."""
    started = time.monotonic()
    timeout = float(spec.get("sync_timeout", 30))
    state: dict = {}
    while True:
        snaps = probe_nodes({"nodes": spec["nodes"], "args": ["snapshot"], "timeout": 60})
        if not snaps["failed"]:
            state = sync_state(snaps["results"], spec["node"], spec["witness"])
            if state["synced"]:
                break
        else:
            state = {"synced": False, "probe_failed": snaps["failed"]}
        if time.monotonic() - started >= timeout:
            break
        time.sleep(0.2)
    state["waited_ms"] = int((time.monotonic() - started) * 1000)
    return state


def check_chain(cell: dict, attempt: dict) -> list[dict]:
    """The chain-data rule (docs/chaos.md): nothing is lost fleet-wide. Before the fault the
    witness's newest block is held by a peer on another node; after a clean stop every affected
    instance kept its height; after a kill it may come back lower but must regain the fleet's
    tip of its chain within ``tip_budget_ms`` of answering RPC again."""
    before = attempt["before"]
    node = cell["node"]
    affected = affected_instances(cell, before)
    if not affected:
        return []
    checks = []
    witness = cell.get("witness")
    if witness:
        w = before[node]["instances"].get(witness, {})
        tip = fleet_tip(before, node, witness)
        outside = [h for h in tip["held_by"] if tuple(h.split("/", 1)) not in affected]
        ok = is_native(w) and bool(w.get("connections")) and w.get("bestblockhash") == tip["hash"] and bool(outside)
        checks.append(
            _check(
                "chain_target_peered",
                ok,
                {
                    "witness": f"{node}/{witness}",
                    "native": is_native(w),
                    "connections": w.get("connections"),
                    "tip": {"height": tip["height"], "hash": tip["hash"]},
                    "held_by": tip["held_by"],
                },
            )
        )
    else:
        checks.append(_check("chain_target_peered", False, "no instance to show the chain rule"))
    rule = chain_rule(cell)
    budget = int(cell.get("tip_budget_ms") or DEFAULT_TIP_BUDGET_MS)
    seen = (attempt.get("wait") or {}).get("chain") or {}
    detail, bad, lost = {}, {}, {}
    for n, name in sorted(affected):
        tip = fleet_tip(before, n, name)
        got = seen.get(name) or {}
        height_before = before[n]["instances"][name].get("blocks")
        entry = {
            "before": height_before,
            "after_restart": got.get("min_height"),
            "tip": tip["height"],
            "tip_after_rpc_ms": got.get("tip_after_rpc_ms"),
        }
        detail[name] = entry
        if not got or (got.get("fleet_tip") or {}).get("hash") != tip["hash"]:
            bad[name] = {**entry, "why": "the wait did not look for the fleet tip"}
        elif got.get("tip_ms") is None:
            bad[name] = {**entry, "why": "fleet tip not regained", "last_seen": got.get("last_seen")}
        elif got.get("tip_after_rpc_ms") is None or got["tip_after_rpc_ms"] > budget:
            bad[name] = {**entry, "why": "fleet tip regained over budget"}
        if rule == "kept" and (
            height_before is None or got.get("min_height") is None or got["min_height"] < height_before
        ):
            lost[name] = entry
    checks.append(_check("fleet_tip_regained_within_budget", not bad, bad or detail, budget))
    if rule == "kept":
        checks.append(_check("clean_stop_kept_height", not lost, lost or detail))
    return checks


def chain_summary(cell: dict, attempts: list[dict]) -> dict | None:
    """Per attempt, the witness's height before, after the restart and the time to its tip."""
    witness = cell.get("witness")
    if not witness:
        return None
    rows = []
    for att in attempts:
        got = ((att.get("wait") or {}).get("chain") or {}).get(witness) or {}
        before = (att.get("before") or {}).get(cell["node"], {}).get("instances", {}).get(witness, {})
        rows.append(
            {
                "before": before.get("blocks"),
                "after_restart": got.get("min_height"),
                "tip_after_rpc_ms": got.get("tip_after_rpc_ms"),
            }
        )
    return {"witness": witness, "rule": chain_rule(cell), "attempts": rows}


# ---------------------------------------------------------------------------- judging
def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile (p95 of 10 samples is the 10th smallest)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


def _check(name: str, ok: bool, value, expected=None) -> dict:
    entry = {"name": name, "ok": bool(ok), "value": value}
    if expected is not None:
        entry["expected"] = expected
    return entry


def all_instances(snapshots: dict) -> list[tuple[str, str]]:
    return sorted((node, name) for node, snap in snapshots.items() for name in snap.get("instances", {}))


def affected_instances(cell: dict, before: dict) -> set[tuple[str, str]]:
    """Instances the fault is allowed to restart; every other instance must be untouched."""
    node = cell["node"]
    target = cell["target"]
    on_node = {(node, name) for name in before.get(node, {}).get("instances", {})}
    if target in ("all", "supervisord", "node"):
        return on_node
    if target == "tor":
        return set()
    return {(node, name) for name in cell["names"]}


def check_nothing_lost(before: dict, after: dict) -> list[dict]:
    lost_onion, lost_auth, lost_chain = {}, {}, {}
    for node, name in all_instances(before):
        b = before[node]["instances"][name]
        a = after.get(node, {}).get("instances", {}).get(name, {})
        key = f"{node}/{name}"
        if a.get("onion") != b.get("onion"):  # None = a clearnet instance: no onion service
            lost_onion[key] = {"before": b.get("onion"), "after": a.get("onion")}
        if not b.get("rpcauth") or a.get("rpcauth") != b.get("rpcauth"):
            lost_auth[key] = {"before": b.get("rpcauth"), "after": a.get("rpcauth")}
        if b.get("blocks") is None or a.get("blocks") != b.get("blocks"):
            lost_chain[key] = {"before": b.get("blocks"), "after": a.get("blocks")}
    heights = {"{}/{}".format(*k): before[k[0]]["instances"][k[1]].get("blocks") for k in all_instances(before)}
    return [
        _check("onion_addresses_unchanged", not lost_onion, lost_onion or f"all {len(heights)} same"),
        _check("rpcauth_lines_unchanged", not lost_auth, lost_auth or f"all {len(heights)} same"),
        _check("chain_height_unchanged", not lost_chain, lost_chain or heights),
    ]


def check_processes(after: dict) -> list[dict]:
    """Exactly one daemon per datadir, the one supervisord runs, child of the one supervisord."""
    bad = {}
    for node, snap in sorted(after.items()):
        sv_pids = snap["supervisord"]["pids"]
        main = snap["supervisord"]["main_pid"]
        if len(sv_pids) != 1 or sv_pids[0] != main:
            bad[f"{node}/supervisord"] = {"pids": sv_pids, "systemd_main_pid": main}
        if len(snap["tor"]["pids"]) != 1:
            bad[f"{node}/tor"] = {"pids": snap["tor"]["pids"]}
        for name, inst in sorted(snap["instances"].items()):
            daemons = inst.get("daemons", [])
            ok = (
                len(daemons) == 1
                and daemons[0]["pid"] == inst.get("program_pid")
                and daemons[0]["ppid"] == main
                and inst.get("program_state") == "RUNNING"
            )
            if not ok:
                bad[f"{node}/{name}"] = {
                    "daemons": daemons,
                    "supervisord_pid": inst.get("program_pid"),
                    "state": inst.get("program_state"),
                }
    count = sum(len(s["instances"]) for s in after.values())
    return [_check("one_daemon_per_datadir_no_orphans", not bad, bad or f"{count} datadirs, 1 daemon each")]


def check_blast_radius(cell: dict, before: dict, after: dict) -> list[dict]:
    affected = affected_instances(cell, before)
    touched = {}
    kept = 0
    for node, name in all_instances(before):
        if (node, name) in affected:
            continue
        b = before[node]["instances"][name]
        a = after.get(node, {}).get("instances", {}).get(name, {})
        same_pid = a.get("program_pid") == b.get("program_pid")
        same_start = (
            a.get("started_ms") is not None
            and b.get("started_ms") is not None
            and abs(a["started_ms"] - b["started_ms"]) <= UPTIME_SLACK_MS
        )
        if not (same_pid and same_start):
            touched[f"{node}/{name}"] = {
                "pid": [b.get("program_pid"), a.get("program_pid")],
                "uptime_s": [b.get("uptime_s"), a.get("uptime_s")],
            }
        else:
            kept += 1
    return [_check("untargeted_instances_untouched", not touched, touched or f"{kept} kept pid and uptime")]


def check_fault_applied(cell: dict, attempt: dict) -> list[dict]:
    """The fault really happened (a cell whose fault did nothing must not pass)."""
    node, fault, target = cell["node"], cell["fault"], cell["target"]
    before, after = attempt["before"][node], attempt["after"][node]
    detail = (attempt.get("injected") or {}).get("detail", {})
    checks = []
    if fault in PROCESS_FAULTS or fault == "stale_lock":
        if target in ("instance", "all"):
            changed = {
                n: [before["instances"][n]["program_pid"], after["instances"][n]["program_pid"]] for n in cell["names"]
            }
            ok = all(b != a for b, a in changed.values())
            checks.append(_check("target_daemon_replaced", ok, changed))
        elif target in ("tor", "supervisord"):
            b, a = before[target]["pids"], after[target]["pids"]
            checks.append(_check(f"{target}_replaced", bool(a) and not set(a) & set(b), {"before": b, "after": a}))
        if cell.get("timing") == "startup":
            states = (detail.get("startup") or {}).get("states_at_fault")
            if states is not None:
                ok = bool(states) and all(s == "STARTING" for s in states.values())
                checks.append(_check("fault_inside_startsecs", ok, states, "STARTING"))
            else:
                pid = (detail.get("startup") or {}).get("pid")
                checks.append(_check("fault_inside_startup", bool(pid), detail.get("startup")))
    if fault == "oom":
        # the kernel's OOM killer (not a signal of ours) ended the daemon inside its slice
        name = cell["names"][0]
        b_pid, a_pid = before["instances"][name]["program_pid"], after["instances"][name]["program_pid"]
        checks.append(_check("target_daemon_replaced", b_pid != a_pid, [b_pid, a_pid]))
        kills = [detail.get("oom_kills_before"), detail.get("oom_kills_after")]
        hits = [detail.get("failcnt_before"), detail.get("failcnt_after")]
        limit = int(detail["memory_limit"]) if str(detail.get("memory_limit") or "").isdigit() else None
        if detail.get("cgroup_version") == 1:
            # v1 counts the kill in the victim's scope only (removed with it): the slice must have hit
            # its limit (failcnt up, peak usage at the limit) and the daemon died without a signal of ours
            ok = None not in hits and hits[1] > hits[0] and limit is not None
            ok = ok and (detail.get("max_usage_after") or 0) >= limit - (1 << 20)
        else:
            ok = None not in kills and kills[1] > kills[0]
        ok = ok and detail.get("daemon_killed_after_ms") is not None
        checks.append(
            _check(
                "killed_by_the_kernel_at_its_memory_limit",
                ok,
                {"oom_kill": kills, "failcnt": hits, "max_usage": detail.get("max_usage_after"), "limit": limit},
            )
        )
    if fault == "cpu_spin":
        name = cell["names"][0]
        b_pid, a_pid = before["instances"][name]["program_pid"], after["instances"][name]["program_pid"]
        checks.append(_check("spinning_instance_not_restarted", b_pid == a_pid, [b_pid, a_pid]))
        quota = detail.get("cpu_quota_percent")
        spent = detail.get("spin_cpu_percent")
        ok = quota is not None and spent is not None and spent <= quota * 1.2 + 5
        checks.append(_check("spinners_held_to_the_cpu_quota", ok, spent, quota))
        during = detail.get("during") or {}
        budget = cell.get("neighbour_p95_budget_ms")
        ok = bool(during.get("n")) and not during.get("errors") and during.get("p95_ms") is not None
        ok = ok and (budget is None or during["p95_ms"] <= budget)
        checks.append(
            _check("neighbour_rpc_within_bound", ok, {"baseline": detail.get("baseline"), "during": during}, budget)
        )
    if fault == "crashloop":
        checks.append(_check("reached_fatal", detail.get("state") == "FATAL", detail.get("state"), "FATAL"))
    if fault == "stale_lock":
        left = {"pidfile": detail.get("pidfile_left"), "lockfile": detail.get("lockfile_left")}
        checks.append(_check("stale_files_left_by_sigkill", all(left.values()), left))
    if fault == "port_taken":
        checks.append(_check("foreign_process_holds_port", bool(detail.get("bound")), detail.get("port")))
    if target == "node":
        boot = attempt.get("restart") or {}
        checks.append(_check("node_restarted", boot.get("rc") == 0, boot))
    return checks


def check_recovery(cell: dict, attempt: dict) -> list[dict]:
    wait = attempt.get("wait") or {}
    recovery = cell["recovery"]
    checks = [
        _check(
            "recovered",
            bool(wait.get("recovered")),
            wait.get("ttr_ms")
            if wait.get("recovered")
            else {"not": wait.get("not_recovered"), "err": wait.get("last_error")},
        )
    ]
    converges = attempt.get("converges", [])
    heal = attempt.get("heal")
    if recovery == "supervision":
        used = [label for label, ran in (("heal", heal), ("converge", converges)) if ran]
        checks.append(_check("recovered_by_supervision_alone", not used, used or "no heal, no converge"))
    elif recovery == "heal":
        ok = bool(heal) and heal["rc"] == 0 and heal["changed"] > 0 and not converges
        checks.append(
            _check("healed_by_heal_playbook", ok, heal and {k: heal[k] for k in ("rc", "changed", "duration_ms")})
        )
    elif recovery == "converge":
        if cell.get("expect_converge_failure"):
            first = converges[0] if converges else {}
            msgs = [f["msg"] for f in first.get("failures", [])]
            names_it = any(re.search(r"(?<!\w)%s(?![\w-])" % re.escape(n), m) for n in cell["names"] for m in msgs)
            checks.append(
                _check(
                    "converge_fails_clearly_while_port_taken",
                    first.get("rc", 0) != 0 and names_it,
                    {"rc": first.get("rc"), "messages": [m[:400] for m in msgs]},
                )
            )
            fixing = converges[1:]
        else:
            fixing = converges
        ok = len(fixing) == 1 and fixing[0]["rc"] == 0 and fixing[0]["failed"] == 0
        if not cell.get("expect_converge_failure"):
            # the drift was real: the converge had something to put back
            ok = ok and fixing[0].get("changed", 0) > 0
        checks.append(
            _check(
                "recovered_by_one_converge",
                ok,
                [{k: c.get(k) for k in ("rc", "changed", "failed", "duration_ms")} for c in fixing],
            )
        )
    budget = cell.get("budget_ms")
    if budget and int(cell.get("repeat", 1)) == 1:
        ttr = wait.get("max_ttr_ms")
        checks.append(_check("time_to_recovery_within_budget", ttr is not None and ttr <= budget, ttr, budget))
    return checks


def evaluate(raw: dict) -> dict:
    cell = raw["cell"]
    attempts = raw.get("attempts", [])
    checks: list[dict] = []
    samples: list[int] = []
    for index, attempt in enumerate(attempts):
        prefix = "" if len(attempts) == 1 else f"#{index + 1} "
        per = []
        if attempt.get("before") and attempt.get("after"):
            per += check_fault_applied(cell, attempt)
            per += check_recovery(cell, attempt)
            per += check_nothing_lost(attempt["before"], attempt["after"])
            per += check_chain(cell, attempt)
            per += check_processes(attempt["after"])
            per += check_blast_radius(cell, attempt["before"], attempt["after"])
        else:
            per.append(_check("attempt_completed", False, "no before/after snapshot"))
        ttr = (attempt.get("wait") or {}).get("max_ttr_ms")
        if ttr is not None:
            samples.append(ttr)
        checks += [{**c, "name": prefix + c["name"]} for c in per]
    repeat = int(cell.get("repeat", 1))
    if len(attempts) != repeat:
        checks.append(_check("all_attempts_ran", False, len(attempts), repeat))
    idem = raw.get("idempotence")
    checks.append(
        _check(
            "second_converge_changes_nothing",
            bool(idem) and idem["rc"] == 0 and idem["changed"] == 0 and idem["failed"] == 0,
            idem and {k: idem.get(k) for k in ("rc", "changed", "failed", "changed_by_host", "duration_ms")},
            {"changed": 0},
        )
    )
    ttr = {
        "samples": samples,
        "p50": percentile(samples, 50),
        "p95": percentile(samples, 95),
        "max": max(samples or [0]) or None,
    }
    if repeat > 1 and cell.get("budget_ms"):
        checks.append(
            _check(
                "p95_within_budget",
                ttr["p95"] is not None and ttr["p95"] <= cell["budget_ms"],
                ttr["p95"],
                cell["budget_ms"],
            )
        )
    if repeat > 1 and cell.get("p50_budget_ms"):
        checks.append(
            _check(
                "p50_within_budget",
                ttr["p50"] is not None and ttr["p50"] <= cell["p50_budget_ms"],
                ttr["p50"],
                cell["p50_budget_ms"],
            )
        )
    if raw.get("error"):
        checks.append(_check("framework_ran_to_completion", False, raw["error"]))
    outcome = "pass" if checks and all(c["ok"] for c in checks) else "fail"
    return {
        "cell": cell["id"],
        "target": cell["target"],
        "fault": cell["fault"],
        "timing": cell.get("timing", "steady"),
        "recovery": cell["recovery"],
        "node": cell["node"],
        "instances": cell["names"],
        "witness": cell.get("witness"),
        "chain_rule": chain_rule(cell),
        "chain": chain_summary(cell, attempts),
        "repeat": repeat,
        "outcome": outcome,
        "time_to_recovery_ms": samples[0] if repeat == 1 and samples else ttr if repeat > 1 else None,
        "checks": checks,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "description": cell.get("description", ""),
    }


# ---------------------------------------------------------------------------- reporting
def format_ttr(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return f"p50 {value['p50']} / p95 {value['p95']} / max {value['max']} ms (n={len(value['samples'])})"
    return f"{value} ms"


def format_chain(chain: dict | None) -> str:
    """``kept 12→12`` / ``tip 12→11→12 (+640 ms)``; for repeated cells how often the height
    came back lower and the slowest time to the tip."""
    if not chain or not chain.get("attempts"):
        return "-"
    rows = chain["attempts"]
    if len(rows) == 1:
        r = rows[0]
        tip = f" (+{r['tip_after_rpc_ms']} ms)" if r.get("tip_after_rpc_ms") is not None else " (tip not regained)"
        return f"{chain['rule']} {r['before']}→{r['after_restart']}→tip{tip}"
    lower = sum(1 for r in rows if r.get("after_restart") is not None and r["after_restart"] < (r["before"] or 0))
    times = [r["tip_after_rpc_ms"] for r in rows if r.get("tip_after_rpc_ms") is not None]
    slowest = f"+{max(times)} ms" if len(times) == len(rows) else f"{len(rows) - len(times)} not regained"
    return f"{chain['rule']}: lower after restart {lower}/{len(rows)}, tip back (max {slowest})"


def render_table(results: list[dict]) -> str:
    lines = [
        "| cell | target | fault | timing | recovery | outcome | time to recovery"
        " | chain (height before→after restart→tip) | checked |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        names = sorted({re.sub(r"^#\d+ ", "", c["name"]) for c in res["checks"]})
        failed = sorted({re.sub(r"^#\d+ ", "", c["name"]) for c in res["checks"] if not c["ok"]})
        checked = ", ".join(names) + (" — **failed: {}**".format(", ".join(failed)) if failed else "")
        lines.append(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                res["cell"],
                res["target"],
                res["fault"],
                res["timing"],
                res["recovery"],
                "**{}**".format(res["outcome"]) if res["outcome"] != "pass" else res["outcome"],
                format_ttr(res.get("time_to_recovery_ms")),
                format_chain(res.get("chain")),
                checked,
            )
        )
    passed = sum(1 for r in results if r["outcome"] == "pass")
    lines.append("")
    lines.append(f"{passed} of {len(results)} cells passed.")
    return "\n".join(lines) + "\n"


def replace_table(doc: str, table: str, header: str) -> str:
    if TABLE_BEGIN not in doc or TABLE_END not in doc:
        raise ValueError(f"markers {TABLE_BEGIN} ... {TABLE_END} not found")
    head, rest = doc.split(TABLE_BEGIN, 1)
    _, tail = rest.split(TABLE_END, 1)
    return head + TABLE_BEGIN + "\n" + header + "\n\n" + table + TABLE_END + tail


def load_results(out_dir: str, ids: list[str] | None) -> list[dict]:
    results = []
    for name in sorted(os.listdir(out_dir)):
        if not name.endswith(".json") or name == "summary.json":
            continue
        with open(os.path.join(out_dir, name), encoding="utf-8") as fh:
            res = json.load(fh)
        if ids is None or res["cell"] in ids:
            results.append(res)
    if ids is not None:
        order = {cid: i for i, cid in enumerate(ids)}
        results.sort(key=lambda r: order[r["cell"]])
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "command", choices=["select", "probe", "playbook", "evaluate", "report", "now", "targets", "tips", "sync"]
    )
    parser.add_argument("--matrix")
    parser.add_argument("--set", default="ci")
    parser.add_argument("--cells", default="")
    parser.add_argument("--out")
    parser.add_argument("--docs")
    parser.add_argument("--expect-ids", default="")
    parser.add_argument("--log")
    parser.add_argument("--timeout", type=float, default=900)
    argv = list(sys.argv[1:] if argv is None else argv)
    rest = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)

    if args.command == "now":
        print(int(time.time() * 1000))
        return 0
    if args.command == "select":
        import yaml  # controller only: ansible brings PyYAML

        with open(args.matrix, encoding="utf-8") as fh:
            matrix = yaml.safe_load(fh)
        cells = select_cells(matrix, args.set, [c for c in args.cells.split(",") if c] or None)
        json.dump(cells, sys.stdout)
        return 0
    if args.command == "probe":
        json.dump(probe_nodes(json.load(sys.stdin)), sys.stdout)
        return 0
    if args.command == "targets":  # stdin: {"cell", "settled"}
        data = json.load(sys.stdin)
        json.dump(pick_targets(data["cell"], data["settled"]), sys.stdout)
        return 0
    if args.command == "tips":  # stdin: {"snapshots", "node", "names"}
        data = json.load(sys.stdin)
        json.dump(tips_for(data["snapshots"], data["node"], data["names"]), sys.stdout)
        return 0
    if args.command == "sync":  # stdin: {"nodes", "node", "witness", "sync_timeout"}
        json.dump(wait_synced(json.load(sys.stdin)), sys.stdout)
        return 0
    if args.command == "playbook":
        json.dump(run_playbook(rest, args.log, args.timeout), sys.stdout)
        return 0
    if args.command == "evaluate":
        result = evaluate(json.load(sys.stdin))
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, result["cell"] + ".json"), "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2, sort_keys=True)
            fh.write("\n")
        json.dump({k: result[k] for k in ("cell", "outcome", "time_to_recovery_ms")}, sys.stdout)
        return 0
    ids = [c for c in args.expect_ids.split(",") if c] or None
    results = load_results(args.out, ids)
    missing = sorted(set(ids or []) - {r["cell"] for r in results})
    table = render_table(results)
    if missing:
        table += "\nMissing results: {}\n".format(", ".join(missing))
    with open(os.path.join(args.out, "summary.md"), "w", encoding="utf-8") as fh:
        fh.write(table)
    with open(os.path.join(args.out, "summary.json"), "w", encoding="utf-8") as fh:
        json.dump({"results": results, "missing": missing}, fh, indent=2, sort_keys=True)
    if args.docs:
        with open(args.docs, encoding="utf-8") as fh:
            doc = fh.read()
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        header = f"Latest full run: {stamp}, {len(results)} cells."
        with open(args.docs, "w", encoding="utf-8") as fh:
            fh.write(replace_table(doc, table, header))
    sys.stdout.write(table)
    return 0 if results and not missing and all(r["outcome"] == "pass" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
