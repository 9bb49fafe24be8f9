"""Rolling upgrade with a health gate and automatic rollback (issue 11): playbooks/upgrade.yml
on the fleet under test (NODEFLEET_INVENTORY). Runs last in the verify step; its teardown rolls
the fleet back to the inventory's releases (with upgrade.yml: a roll back by hand).

The upgrades move knots and garbageman (stand-in releases built by tests/release/build_release.sh
under build/release/upgrade/, signed by the same throwaway signers) and leave core alone, so
every host restarts two instances (knots first, garbageman second, inventory order):

- broken garbageman (exits at start / reports the old version / reports another chain): the
  canary (first fleet host - the demo inventory has no `canary` group) restarts knots (gate
  passes), then garbageman fails its gate; both go back to the old release links, are restarted
  and pass the gate on the old version; the play fails naming host, instance, check and values;
  no other host is touched (same pids, old version, old links);
- then the good release ("the release is fixed") rolls over every host, each instance ends on
  the new version, and on each host no two instances were down at the same time (downtime
  windows seen by an RPC poller inside each node).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet_inventory import fleet_nodes
from instance_checks import instances_from_report, plan_report
from rolling_checks import DowntimeProbe, identities, markers, overlapping, releases, run_upgrade, upgrade_fixtures

NODES = fleet_nodes()
INSTANCES = instances_from_report(plan_report(), NODES)
CANARY = next(iter(NODES))  # the first fleet host: no canary group in the demo inventory
ROLLED = ("knots", "garbageman")
# Short gate settle window: the stand-in is up in about two seconds (the default is 30 s).
# The `exits` release crashes garbageman on purpose (supervisord: BACKOFF, FATAL); the converges
# of the next runs, within bitcoind_restart_loop_window, would count those exits as a restart loop
# of an instance they do not restart and fail - the gate's settle check (same pid, up for the
# window) is what detects a restart inside a roll.
FAST = {"bitcoind_gate_settle": 3, "bitcoind_gate_interval": 1, "bitcoind_restart_loop_threshold": 0}
BROKEN = {"exits": "restart", "wrong-version": "version", "wrong-chain": "chain"}


def expected(impl: str, variant: str | None) -> dict:
    from ansible_collections.nodefleet.bitcoin.plugins.module_utils.release_identity import expected_identity

    version = upgrade_fixtures()[variant][impl]["version"] if variant else releases()[impl]["version"]
    return {**expected_identity(impl, version), "link": f"{impl}-{version}"}


def rolled_instances(host=None):
    return [i for i in INSTANCES if i.impl in ROLLED and (host is None or i.host == host)]


@pytest.fixture(scope="module")
def fleet_back_to_inventory():
    """Leave the fleet on the inventory's releases, rolled back with upgrade.yml itself."""
    yield
    rc, out, err = run_upgrade(FAST)
    assert rc == 0, (out + err)[-4000:]
    now = identities(INSTANCES)
    for inst in rolled_instances():
        want = expected(inst.impl, None)
        got = now[(inst.host, inst.name)]
        assert (got["subversion"], got["link"]) == (want["subversion"], want["link"]), (inst.host, inst.name, got)


def test_rolled_implementations_exist_on_every_host():
    for host in NODES:
        assert rolled_instances(host), f"{host} has no knots or garbageman instance: nothing to roll"
    assert any(i.impl == "garbageman" for i in rolled_instances(CANARY)), "the canary needs a garbageman instance"


@pytest.mark.parametrize("variant", list(BROKEN))
def test_a_broken_release_fails_on_the_canary_is_rolled_back_and_nothing_else_moves(variant, fleet_back_to_inventory):
    before = identities(INSTANCES)
    rc, out, _err = run_upgrade({**FAST, "bitcoind_releases": releases(knots="good", garbageman=variant)})
    assert rc != 0, f"the {variant} release rolled: {out[-3000:]}"
    after = identities(INSTANCES)

    # The failure names host, instance, check and values.
    gm = next(i for i in rolled_instances(CANARY) if i.impl == "garbageman")
    text = " ".join(out.split())  # the callback wraps long messages
    start = text.find("rolling upgrade stopped on host")
    assert start >= 0, out[-4000:]
    message = text[start : text.find("are not touched", start) + len("are not touched")]
    assert f"host {CANARY}" in message and f"instance {gm.name}" in message, message
    assert f"{BROKEN[variant]}: expected" in message, message
    assert f"{gm.name} gate on the old version passed" in message, message
    old_gm = expected("garbageman", None)
    assert f"garbageman -> {old_gm['link']}" in message, message

    # The canary: every instance back on the old release, running, gate-worthy (right chain and
    # version); the ones the roll restarted were restarted twice (new pids), nothing pending.
    for inst in [i for i in INSTANCES if i.host == CANARY]:
        got, was = after[(inst.host, inst.name)], before[(inst.host, inst.name)]
        assert got["state"] == "RUNNING", (inst.name, got)
        assert (got["version"], got["subversion"], got["chain"]) == (was["version"], was["subversion"], was["chain"])
        assert got["link"] == was["link"], (inst.name, got["link"], was["link"])
        if inst.impl in ROLLED:
            assert got["pid"] != was["pid"], f"{inst.name} was not restarted (rolled back)"
        else:
            assert got["pid"] == was["pid"], f"{inst.name} ({inst.impl}) was restarted"
    assert markers(NODES[CANARY]) == []

    # Every other host: untouched (same pids, old version, old links).
    for inst in [i for i in INSTANCES if i.host != CANARY]:
        key = (inst.host, inst.name)
        assert after[key] == before[key], f"{inst.host}:{inst.name} changed: {before[key]} -> {after[key]}"
        assert markers(inst.container) == []


def test_the_fixed_release_rolls_over_every_host_one_instance_down_at_a_time(fleet_back_to_inventory):
    before = identities(INSTANCES)
    probe = DowntimeProbe(INSTANCES)
    probe.start()
    started = time.monotonic()
    try:
        rc, out, err = run_upgrade({**FAST, "bitcoind_releases": releases(knots="good", garbageman="good")})
    finally:
        seconds = time.monotonic() - started
        windows = probe.stop()
    # What the roll cost (pytest -s shows it; tests/bench/bench_rolling_upgrade.py is the benchmark).
    print(f"\nrolling upgrade of {len(NODES)} host(s): {seconds:.1f} s (gate settle {FAST['bitcoind_gate_settle']} s)")
    for key, spans in sorted(windows.items()):
        print(f"  {key[0]}:{key[1]} down {sum((b or a) - a for a, b in spans):.2f} s in {len(spans)} window(s)")
    assert rc == 0, (out + err)[-4000:]
    after = identities(INSTANCES)

    for inst in INSTANCES:
        key = (inst.host, inst.name)
        got, was = after[key], before[key]
        assert got["state"] == "RUNNING", (key, got)
        assert got["chain"] == was["chain"], (key, got["chain"], was["chain"])
        if inst.impl in ROLLED:
            want = expected(inst.impl, "good")
            assert (got["version"], got["subversion"], got["link"]) == (
                want["version"],
                want["subversion"],
                want["link"],
            ), key
            assert windows[key], f"{key}: no downtime seen - was it restarted? {got['pid']} vs {was['pid']}"
        else:
            assert got["pid"] == was["pid"], f"{key} ({inst.impl}) was restarted"
            assert windows[key] == [], f"{key} ({inst.impl}) was down: {windows[key]}"
        assert all(end is not None for _start, end in windows[key]), f"{key} still down at the end: {windows[key]}"
    assert overlapping(windows) == [], f"two instances of one host were down at once: {overlapping(windows)}"
    for container in NODES.values():
        assert markers(container) == []
