"""The hand-run node of prepare.yml after ONE converge adopted it (issue 14).

Same chain (height and best block hash recorded before the adoption), same onion address (Core's
own key, now served by tor for the fleet's instance), exactly one bitcoind on the datadir and it is
supervisord's program, the old unit stopped and disabled, the old conf backed up root-only and
the datadir owned by the fleet's user.
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

DATADIR = "/srv/bitcoin"
CLI = (
    "/opt/bitcoin/core/bin/bitcoin-cli -conf=/srv/bitcoin/bitcoin.conf -datadir=/srv/bitcoin "
    "-rpcuser=adopt -rpcpassword=adopt-handrun-not-secret"
)


def rpc(host, method: str):
    deadline = time.monotonic() + 60
    while True:
        cmd = host.run(f"{CLI} {method}")
        if cmd.rc == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)  # -28 while the adopted instance warms up after its start
    assert cmd.rc == 0, cmd.stderr
    return json.loads(cmd.stdout)


def before(host) -> dict:
    return json.loads(host.file("/root/handrun-before.json").content_string)


def test_same_chain(host):
    info = rpc(host, "getblockchaininfo")
    was = before(host)
    assert was["blocks"] >= 300
    assert info["chain"] == "regtest"
    assert (info["blocks"], info["bestblockhash"]) == (was["blocks"], was["bestblockhash"])


def test_same_onion_address(host):
    was = before(host)["onion"]
    assert host.file("/var/lib/tor/nodefleet-handrun/hostname").content_string.strip() == was
    conf = host.file(f"{DATADIR}/bitcoin.conf").content_string
    assert f"externalip={was}" in conf and "listenonion=0" in conf
    local = [a["address"] for a in rpc(host, "getnetworkinfo")["localaddresses"]]
    assert was in local


def test_exactly_one_daemon_supervised(host):
    pids = host.run(f"pgrep -f -- '-datadir={DATADIR}( |$)'").stdout.split()
    assert len(pids) == 1, pids
    ppid = host.run(f"ps -o ppid= -p {pids[0]}").stdout.strip()
    assert "supervisord" in host.run(f"ps -o args= -p {ppid}").stdout
    assert host.run(f"ps -o user= -p {pids[0]}").stdout.strip() == "bitcoin"
    status = host.run("supervisorctl status bitcoind-handrun").stdout
    assert "RUNNING" in status, status


def test_old_unit_stopped_and_disabled(host):
    assert host.run("systemctl is-active bitcoind.service").stdout.strip() == "inactive"
    assert host.run("systemctl is-enabled bitcoind.service").stdout.strip() == "disabled"


def test_old_conf_backed_up_root_only(host):
    record = json.loads(host.file("/var/lib/nodefleet/adopt/handrun/adopted.json").content_string)
    backup = host.file(record["backup"])
    old = host.file("/etc/bitcoin/bitcoin.conf")
    assert backup.content_string == old.content_string and "rpcpassword=" in old.content_string
    assert (backup.user, backup.mode) == ("root", 0o600)


def test_datadir_owned_by_the_fleet_user(host):
    out = host.run(f"find {DATADIR} ! -user bitcoin -printf '%p %u\\n'").stdout
    assert out == "", out
