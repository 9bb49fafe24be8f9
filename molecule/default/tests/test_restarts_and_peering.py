"""Fleet behaviour of the converge: fleet peering (issue 9) and restarts that survive an
interrupted run (issue 10.11). Runs last in the verify step (it converges demo hosts again and
puts them back as the inventory says).

Peering: the regtest Core instances that listen on clearnet (demo-node1 `both`, demo-node2 and
demo-node3 `clearnet`) have `addnode=` lines for each other, and a block mined on one reaches
the others over P2P. Only real Core speaks P2P: with the stand-in as core (no
../shared/bitcoin-core) the propagation test skips outside CI and fails in CI.

Interrupted restart: a converge that changes bitcoin.conf and then stops before the supervisord
restart (here the supervisord batch fails on an invalid startsecs) leaves a root-owned marker per
instance; `--check` then reports a change, and the next converge restarts the instances and
removes the markers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet_inventory import REPO_ROOT, ansible_env, fleet_nodes, inventory_path, tool
from instance_checks import conf_values, instances_from_report, node_exec, node_python, plan_report

NODES = fleet_nodes()
INSTANCES = instances_from_report(plan_report(), NODES)
PENDING_DIR = "/var/lib/nodefleet/pending-restart"
REGTEST_ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
CLEARNET = ("clearnet", "both")

# Inside the node: JSON-RPC calls in order; reads {"port", "user", "password", "calls":
# [[method, params]...]} on stdin, prints [{"result", "error"}] (no credential in the output).
RPC = r"""
import base64, json, sys, urllib.error, urllib.request
req = json.load(sys.stdin)
token = base64.b64encode(("%s:%s" % (req["user"], req["password"])).encode()).decode()
out = []
for method, params in req["calls"]:
    body = json.dumps({"jsonrpc": "1.0", "id": "t", "method": method, "params": params}).encode()
    r = urllib.request.Request("http://127.0.0.1:%d/" % req["port"], data=body, method="POST",
        headers={"Authorization": "Basic " + token, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            reply = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        reply = json.loads(exc.read() or b'{"result": null, "error": "http"}')
    except OSError as exc:
        reply = {"result": None, "error": "connect: %s" % exc.__class__.__name__}
    out.append({"result": reply.get("result"), "error": reply.get("error")})
print(json.dumps(out))
"""


def rpc(inst, *calls):
    user, password = inst.rpc_users[0]
    payload = {"port": inst.rpc, "user": user, "password": password.reveal(), "calls": [list(c) for c in calls]}
    return node_python(inst.container, RPC, payload)


def core_is_real() -> bool:
    manifest = REPO_ROOT / "build" / "release" / "releases.json"
    releases = json.loads(manifest.read_text())["releases"]
    return any(r["impl"] == "core" and r.get("daemon", "").startswith("bitcoin-core") for r in releases)


def peering_instances():
    return [i for i in INSTANCES if i.impl == "core" and i.network == "regtest" and i.tor_mode in CLEARNET]


def read_conf(inst) -> str:
    result = node_exec(inst.container, ["cat", inst.conf_file])
    assert result.returncode == 0, result.stderr
    return result.stdout


# --- fleet peering ------------------------------------------------------------------------


def test_demo_has_clearnet_core_regtest_instances_on_several_hosts():
    hosts = {i.host for i in peering_instances()}
    assert len(hosts) >= 2, f"only {sorted(hosts)} have a clearnet core-regtest: nothing to peer"


@pytest.mark.parametrize("inst", peering_instances(), ids=lambda i: f"{i.host}:{i.name}")
def test_addnode_lines_point_at_the_other_hosts_regtest_peers(inst):
    addnodes = set(conf_values(read_conf(inst), "addnode"))
    expected = {f"{p.host}:{p.p2p}" for p in peering_instances() if p.host != inst.host}
    assert expected <= addnodes, f"missing {sorted(expected - addnodes)} in {sorted(addnodes)}"
    assert not any(a.startswith(inst.host + ":") for a in addnodes), "an instance peers with its own host"


def test_a_block_mined_on_one_core_regtest_reaches_the_others():
    if not core_is_real():
        if os.environ.get("CI"):
            pytest.fail("core is the stand-in (no ../shared/bitcoin-core): no P2P to test")
        pytest.skip("core is the stand-in here (no ../shared/bitcoin-core), which has no P2P; CI fails instead")
    insts = sorted(peering_instances(), key=lambda i: i.host)
    miner, others = insts[0], insts[1:]
    (mined,) = rpc(miner, ("generatetoaddress", [1, REGTEST_ADDRESS]))
    assert mined["error"] is None, mined
    tip = mined["result"][-1]
    deadline = time.monotonic() + 180  # addnode retries every minute or so after a start
    pending = {f"{i.host}:{i.name}": i for i in others}
    while pending and time.monotonic() < deadline:
        for key, inst in list(pending.items()):
            (best,) = rpc(inst, ("getbestblockhash", []))
            if best["result"] == tip:
                del pending[key]
        time.sleep(3)
    assert not pending, f"block {tip} mined on {miner.host}:{miner.name} did not reach {sorted(pending)}"


# --- an interrupted converge leaves the restart due -----------------------------------------


def site(host, *args, extra=None):
    cmd = [tool("ansible-playbook"), "-i", str(inventory_path()), str(REPO_ROOT / "playbooks/site.yml")]
    cmd += ["--limit", host, *args]
    if extra:
        cmd += ["-e", json.dumps(extra)]
    result = subprocess.run(
        cmd,
        env={**ansible_env(), "ANSIBLE_STDOUT_CALLBACK": "json"},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    return result.returncode, json.loads(result.stdout) if result.stdout.strip().startswith("{") else {}, result


def pids(container):
    status = node_exec(container, ["supervisorctl", "pid", "all"])
    return status.stdout.split()


def markers(container):
    result = node_exec(container, ["sh", "-c", f"ls -A {PENDING_DIR} 2>/dev/null; true"])
    return sorted(result.stdout.split())


def changed_tasks(report, host):
    return [
        entry["task"]["name"]
        for play in report.get("plays", [])
        for entry in play["tasks"]
        if entry["hosts"].get(host, {}).get("changed")
    ]


@pytest.fixture
def interrupted_host():
    host = sorted(NODES)[-1]
    yield host
    # Put the host back as the inventory says (this restarts its instances once more).
    rc, _report, result = site(host)
    assert rc == 0, result.stderr[-2000:]
    assert markers(NODES[host]) == []


def test_a_restart_the_interrupted_converge_left_is_done_by_the_next(interrupted_host):
    host = interrupted_host
    container = NODES[host]
    mine = [i for i in INSTANCES if i.host == host]
    before = pids(container)
    change = {"bitcoind_rpc_allow_ip": ["127.0.0.1", "127.0.0.2"]}

    # bitcoin.conf changes, then the supervisord batch fails (startsecs -1 is refused before
    # anything is written): the play stops before any restart.
    rc, report, result = site(host, extra={**change, "bitcoind_startsecs": -1})
    assert rc != 0, "the interrupted converge was expected to fail"
    for inst in mine:
        assert "127.0.0.2" in conf_values(read_conf(inst), "rpcallowip"), inst.name
    assert pids(container) == before, "nothing may have been restarted yet"
    assert markers(container) == sorted(i.name for i in mine)
    owner = node_exec(container, ["stat", "-c", "%U %a", PENDING_DIR]).stdout.split()
    assert owner == ["root", "700"]

    # bitcoin.conf is already right; --check still reports the due restart.
    rc, report, result = site(host, "--check", "--diff", extra=change)
    assert rc == 0, result.stderr[-2000:]
    assert any("supervisord programs" in name for name in changed_tasks(report, host)), changed_tasks(report, host)

    # The next converge restarts them and forgets the markers; then nothing is left to do.
    rc, report, result = site(host, extra=change)
    assert rc == 0, result.stderr[-2000:]
    after = pids(container)
    assert len(after) == len(before)
    assert set(after).isdisjoint(before), f"not every instance was restarted: {before} -> {after}"
    assert markers(container) == []
    rc, report, result = site(host, "--check", "--diff", extra=change)
    assert rc == 0, result.stderr[-2000:]
    assert changed_tasks(report, host) == []
