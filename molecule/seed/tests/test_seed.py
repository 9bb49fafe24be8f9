"""The fleet after ONE converge added core-seeded with ``seed_from: core-src`` (issue 14).

core-seeded was seeded from core-src's chain (marker, source named), runs under supervisord on its
own datadir, is on core-src's chain at its height and keeps following it (addnode to core-src): a
block mined on the source reaches the seeded instance. core-src is back, at least at the height
prepare.yml mined.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "default" / "tests"))
from fleet_inventory import fleet_nodes

NODES = fleet_nodes()
testinfra_hosts = [f"podman://{container}" for container in NODES.values()]

HOME = "/var/lib/bitcoind"
ADDR = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
INSTANCES = {
    "core-src": (18543, "seed", "seed-src-not-secret"),
    "core-seeded": (18643, "seed", "seed-target-not-secret"),
}
BLOCKS = 300  # seed_scenario_blocks


def cli(host, name: str, *args: str):
    port, user, password = INSTANCES[name]
    cmd = (
        f"/opt/bitcoin/core/bin/bitcoin-cli -regtest -rpcconnect=127.0.0.1 -rpcport={port} "
        f"-rpcuser={user} -rpcpassword={password} " + " ".join(args)
    )
    deadline = time.monotonic() + 60
    while True:
        out = host.run(cmd)
        if out.rc == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)  # -28 while warming up
    assert out.rc == 0, out.stderr
    text = out.stdout.strip()
    try:
        return json.loads(text)
    except ValueError:
        return text


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"{what} within {timeout}s (last: {value})")


def test_seeded_from_the_source(host):
    marker = json.loads(host.file(f"{HOME}/core-seeded/regtest/.nodefleet-seed.json").content_string)
    assert marker["source"] == "core-src" and marker["network"] == "regtest"
    assert marker["source_datadir"] == f"{HOME}/core-src"
    assert marker["files"]["files"] == marker["files"]["linked"] + marker["files"]["copied"] > 0
    sums = host.file(f"{HOME}/core-seeded/regtest/.nodefleet-seed.sha256")
    assert sums.user == "bitcoin" and sums.mode == 0o600
    assert len(sums.content_string.splitlines()) == marker["files"]["copied"]


def test_both_supervised_each_on_its_own_datadir(host):
    for name in INSTANCES:
        status = host.run(f"supervisorctl status bitcoind-{name}").stdout
        assert "RUNNING" in status, status
        pids = host.run(f"pgrep -f -- '-datadir={HOME}/{name}( |$)'").stdout.split()
        assert len(pids) == 1, (name, pids)
        assert host.run(f"ps -o user= -p {pids[0]}").stdout.strip() == "bitcoin"
    for sub in ("blocks", "chainstate"):
        d = host.file(f"{HOME}/core-seeded/regtest/{sub}")
        assert d.is_directory and d.user == "bitcoin"


def test_seeded_instance_is_on_the_source_chain_and_follows_it(host):
    src_tip = cli(host, "core-src", "getbestblockhash")
    assert cli(host, "core-src", "getblockcount") >= BLOCKS
    # the seeded instance started at the source's height (it has no other peer to get blocks from)
    wait_for(lambda: cli(host, "core-seeded", "getbestblockhash") == src_tip, 60, "the seed is at the source's tip")
    wait_for(lambda: cli(host, "core-seeded", "getconnectioncount") >= 1, 90, "the seed connects to the source")
    mined = cli(host, "core-src", "generatetoaddress", "2", ADDR)
    wait_for(lambda: cli(host, "core-seeded", "getbestblockhash") == mined[-1], 90, "the seed follows the source")
