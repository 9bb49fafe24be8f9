# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""bitcoind_seed against the real Bitcoin Core (../shared/bitcoin-core) under a real supervisord.

A regtest source under supervisord (the program the role writes: ``bitcoind-<name>``) with a chain
of several hundred blocks in small block files (``-fastprune``: 64 KiB blk files, so some are old
enough to be hard-linked), restarted once so LevelDB has table files. The module (through the
``ansible`` CLI) stops it through supervisord, seeds the new instance, starts it again; the new
instance reports the source's best block hash right after its start and follows the source
(addnode) when more blocks are mined there. The refusals that need a live daemon are here too.

Skips (saying why) only when the archive or supervisord is absent and CI is unset.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import bitcoin_conf, bitcoin_rpc, rpcauth
from ansible_collections.nodefleet.bitcoin.tests.integration.ansible_cli import run_collection_module
from ansible_collections.nodefleet.bitcoin.tests.integration.local_ports import free_ports
from ansible_collections.nodefleet.bitcoin.tests.integration.real_core import real_core, wait_for  # noqa: F401
from ansible_collections.nodefleet.bitcoin.tests.integration.supervisord_fixture import supervisord  # noqa: F401

pytestmark = pytest.mark.integration

USER = "seeder"
REGTEST_ADDR = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
SOURCE_HEIGHT = 600  # >= 200; with -fastprune that is several blk files


def password_for(name: str) -> str:
    return f"pw-{name}-Zq8"


def write_instance(root: Path, name: str, network: str = "regtest", addnode=(), **extra) -> dict:
    """Datadir + the bitcoin.conf bitcoind_instance renders (clearnet, loopback only)."""
    datadir = root / name
    rpc, p2p = free_ports(2)
    params = {
        "name": name,
        "impl": "core",
        "network": network,
        "datadir": str(datadir),
        "rpc_port": rpc,
        "p2p_port": p2p,
        "tor_mode": "clearnet",
        "rpcauth": [rpcauth.generate(USER, password_for(name))],
        "extra_options": {"fastprune": 1, **extra},
    }
    if addnode:
        params["addnode"] = list(addnode)
    datadir.mkdir(parents=True)
    (datadir / "bitcoin.conf").write_text(bitcoin_conf.render(bitcoin_conf.validate(params)))
    return {"name": name, "datadir": datadir, "rpc": rpc, "p2p": p2p, "network": network}


def add_program(sv, core, inst: dict) -> str:
    name = f"bitcoind-{inst['name']}"
    sv.write_program(
        name,
        f"{core.bitcoind} -conf={inst['datadir']}/bitcoin.conf -datadir={inst['datadir']}",
        directory=inst["datadir"],
        autorestart=True,
        startsecs=1,
        stopsignal="TERM",
        stopwaitsecs=120,
        stopasgroup=True,
        killasgroup=True,
    )
    sv.update()
    sv.wait_state(name, "RUNNING")
    return name


def rpc_client(inst: dict) -> bitcoin_rpc.BitcoinRpc:
    return bitcoin_rpc.BitcoinRpc("127.0.0.1", inst["rpc"], USER, password_for(inst["name"]), timeout=60)


def call(client, method, *params):
    try:
        return client.call(method, list(params))
    except bitcoin_rpc.RpcFailure:
        client.close()
        return None


def seed_args(sv, target: dict, source: dict, **extra) -> dict:
    return {
        "name": target["name"],
        "datadir": str(target["datadir"]),
        "network": target["network"],
        "source_name": source["name"],
        "source_datadir": str(source["datadir"]),
        "server_url": sv.server_url,
        "stop_timeout": 120,
        **extra,
    }


def sha256_tree(netdir: Path) -> dict:
    out = {}
    for top in ("blocks", "chainstate", "indexes"):
        for path in sorted((netdir / top).rglob("*")) if (netdir / top).exists() else []:
            if path.is_file():
                out[str(path.relative_to(netdir))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def synced_source(real_core, supervisord, tmp_path):  # noqa: F811
    """A supervised regtest source at SOURCE_HEIGHT, restarted once (LevelDB tables on disk)."""
    sv = supervisord
    src = write_instance(tmp_path, "src")
    program = add_program(sv, real_core, src)
    client = rpc_client(src)
    wait_for(lambda: call(client, "getblockcount") == 0, 30, "the source answers RPC")
    for _ in range(SOURCE_HEIGHT // 100):
        client.call("generatetoaddress", [100, REGTEST_ADDR])
    sv.client().call("stopProcess", program, True)
    sv.client().call("startProcess", program, True)
    wait_for(lambda: call(client, "getblockcount") == SOURCE_HEIGHT, 60, "the source is back at its height")
    return {"sv": sv, "core": real_core, "src": src, "program": program, "client": client, "root": tmp_path}


def test_seeded_instance_starts_at_the_source_tip_and_follows_it(synced_source):
    s = synced_source
    sv, src, client = s["sv"], s["src"], s["client"]
    tip = client.call("getbestblockhash")
    tgt = write_instance(s["root"], "tgt", addnode=[f"127.0.0.1:{src['p2p']}"])
    src_netdir = src["datadir"] / "regtest"
    before_pid = sv.info(s["program"])["pid"]

    # check mode: the plan, nothing stopped, nothing written
    result, _ = run_collection_module("bitcoind_seed", seed_args(sv, tgt, src), check=True, expect_success=True)
    assert result["changed"] is True and result["source_was_running"] is True
    assert result["files"]["linked"] > 0 and result["files"]["copied"] > 0, result["files"]
    assert sv.info(s["program"])["pid"] == before_pid
    assert not (tgt["datadir"] / "regtest").exists()

    result, _ = run_collection_module("bitcoind_seed", seed_args(sv, tgt, src), expect_success=True)
    assert result["changed"] is True and result["seeded"] is True, result
    files = result["files"]
    # blk/rev files older than the two newest and LevelDB tables are linked, the rest copied
    assert files["linked"] > 0 and files["copied"] > 0 and files["fallback_copies"] == 0, files
    assert 0 < result["source_downtime"] < 120 and result["copy_seconds"] <= result["source_downtime"]
    assert result["summary"].startswith("seeded from src - ") and "sha256-verified" in result["summary"]
    print(f"\n[seed] {files} downtime={result['source_downtime']}s copy={result['copy_seconds']}s")
    # the source was restarted by supervisord and is back at its tip
    info = sv.wait_state(s["program"], "RUNNING")
    assert info["pid"] != before_pid
    wait_for(lambda: call(client, "getbestblockhash") == tip, 60, "the source answers again at its tip")

    netdir = tgt["datadir"] / "regtest"
    marker = json.loads((netdir / ".nodefleet-seed.json").read_text())
    assert marker["source"] == "src" and marker["manifest_sha256"] == result["manifest_sha256"]
    # the sha256 list of the copied files verifies against the target with sha256sum itself
    check = subprocess.run(
        ["sha256sum", "--strict", "-c", ".nodefleet-seed.sha256"], cwd=netdir, capture_output=True, text=True
    )
    assert check.returncode == 0 and check.stdout.count(": OK") == files["copied"], check.stdout + check.stderr
    # the newest blk/rev files (appended by both daemons from now on) are separate copies; older ones shared
    blks = sorted(p.name for p in (src_netdir / "blocks").glob("blk*.dat"))
    assert len(blks) >= 3, blks
    for name in blks[-2:]:
        assert os.stat(netdir / "blocks" / name).st_ino != os.stat(src_netdir / "blocks" / name).st_ino
    assert os.stat(netdir / "blocks" / blks[0]).st_ino == os.stat(src_netdir / "blocks" / blks[0]).st_ino
    for name in ("CURRENT",):
        assert os.stat(netdir / "chainstate" / name).st_ino != os.stat(src_netdir / "chainstate" / name).st_ino
    # not copied: the source's node state
    assert not (netdir / "peers.dat").exists() and not (netdir / "mempool.dat").exists()

    # the seeded instance reports the same tip right after its start, and follows the source
    target_program = add_program(sv, s["core"], tgt)
    tclient = rpc_client(tgt)
    assert wait_for(lambda: call(tclient, "getbestblockhash"), 60, "the seed answers RPC") == tip
    assert call(tclient, "getblockcount") == SOURCE_HEIGHT
    wait_for(lambda: call(tclient, "getconnectioncount") == 1, 60, "the seed connects to the source")
    mined = client.call("generatetoaddress", [5, REGTEST_ADDR])
    wait_for(lambda: call(tclient, "getbestblockhash") == mined[-1], 60, "the seed follows the source")
    assert call(tclient, "getblockcount") == SOURCE_HEIGHT + 5

    # second run: the marker says seeded, nothing stopped, nothing changed
    pid = sv.info(s["program"])["pid"]
    again, _ = run_collection_module("bitcoind_seed", seed_args(sv, tgt, src), expect_success=True)
    assert again["changed"] is False and again["seeded"] is False and again["marker"]["source"] == "src"
    assert again["summary"] == "already seeded from src"
    assert sv.info(s["program"])["pid"] == pid and sv.info(target_program)["statename"] == "RUNNING"

    # the source, still writing its own newest files, is not disturbed by the seed's writes
    sv.client().call("stopProcess", target_program, True)
    sv.client().call("stopProcess", s["program"], True)
    sv.client().call("startProcess", s["program"], True)
    wait_for(lambda: call(client, "getblockcount") == SOURCE_HEIGHT + 5, 60, "the source restarts at its tip")


def test_running_source_is_refused_when_it_may_not_be_stopped(synced_source):
    s = synced_source
    sv, src = s["sv"], s["src"]
    tgt = write_instance(s["root"], "tgt2")
    pid = sv.info(s["program"])["pid"]
    result, _ = run_collection_module("bitcoind_seed", seed_args(sv, tgt, src, stop_source=False))
    assert result.get("failed") is True
    assert result["msg"].startswith("stop_source:") and "RUNNING" in result["msg"], result["msg"]
    assert sv.info(s["program"])["pid"] == pid and sv.info(s["program"])["statename"] == "RUNNING"
    assert sorted(os.listdir(tgt["datadir"])) == ["bitcoin.conf"]


def test_source_running_outside_supervision_is_refused(synced_source):
    """Stopped in supervisord, but a bitcoind started by hand holds the datadir lock."""
    s = synced_source
    sv, src, core = s["sv"], s["src"], s["core"]
    sv.client().call("stopProcess", s["program"], True)
    proc = subprocess.Popen(
        [str(core.bitcoind), f"-conf={src['datadir']}/bitcoin.conf", f"-datadir={src['datadir']}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: call(s["client"], "getblockcount") == SOURCE_HEIGHT, 60, "the hand-run source answers")
        tgt = write_instance(s["root"], "tgt3")
        result, _ = run_collection_module("bitcoind_seed", seed_args(sv, tgt, src))
        assert result.get("failed") is True and result["msg"].startswith("source_datadir:"), result
        assert "outside supervision" in result["msg"]
        assert sorted(os.listdir(tgt["datadir"])) == ["bitcoin.conf"]
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(60)


def test_seed_copies_match_the_stopped_source(synced_source):
    """Every seeded file has the content of the source's file as it was while stopped (no --check)."""
    s = synced_source
    sv, src = s["sv"], s["src"]
    tgt = write_instance(s["root"], "tgt4")
    sv.client().call("stopProcess", s["program"], True)
    expected = sha256_tree(src["datadir"] / "regtest")
    result, _ = run_collection_module("bitcoind_seed", seed_args(sv, tgt, src, hard_links=False), expect_success=True)
    assert result["source_was_running"] is False and result["source_downtime"] == 0
    assert result["files"]["linked"] == 0 and result["files"]["copied"] == len(expected)
    assert sha256_tree(tgt["datadir"] / "regtest") == expected
    assert sv.info(s["program"])["statename"] == "STOPPED"  # it was stopped: the seed does not start it
