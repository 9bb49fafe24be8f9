# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection against the real Bitcoin Core (../shared/bitcoin-core), on this machine, no containers.

- bitcoind_instance's bitcoin.conf (module_utils.bitcoin_conf, the module's own renderer) is
  accepted by real Core on every network x Tor mode, started exactly as the supervisord program
  of roles/bitcoind starts it (``bitcoind -conf=<datadir>/bitcoin.conf -datadir=<datadir>``);
- bitcoind_info against real Core: every field it reports, warm-up -28, a wrong password, two
  real instances peered through addnode and the peer breakdown they see;
- supervisord_program running real Core: started confirmed, SIGTERM ends it with exit 0 and
  supervisord restarts it (autorestart=true as the role configures it), a stop within stopwaitsecs.

Only loopback is touched by the tests themselves. The rendered conf is used as is, so on main,
test, testnet4 and signet Core may try its DNS seeds or fixed seeds (this machine reaches no
outside host, so those attempts fail harmlessly); each start is short and ends with SIGTERM.
The Tor proxy in the rendered conf points at a closed loopback port.

Skips (saying why) only when the archive is absent and CI is unset; in CI its absence fails.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
import yaml
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import bitcoin_conf, bitcoin_rpc, rpcauth
from ansible_collections.nodefleet.bitcoin.plugins.modules import bitcoind_info
from ansible_collections.nodefleet.bitcoin.tests.integration.ansible_cli import (
    run_collection_module,
    run_collection_module_in_playbook,
)
from ansible_collections.nodefleet.bitcoin.tests.integration.local_ports import free_ports
from ansible_collections.nodefleet.bitcoin.tests.integration.real_core import (  # noqa: F401
    make_node,
    real_core,
    wait_for,
)
from ansible_collections.nodefleet.bitcoin.tests.integration.supervisord_fixture import (  # noqa: F401
    supervisord,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NETWORKS = ("main", "test", "testnet4", "signet", "regtest")
TOR_MODES = ("tor-only", "clearnet", "both")
USER = "monitor"
REGTEST_ADDR = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"  # valid regtest address (README of the archive)
# Core warns on an empty datadir of a big chain; not an error.
DISK_SPACE_WARNING = re.compile(r'^Warning: Disk space for ".*" may not accommodate the block files\. .*$')
ROLE_DEFAULTS = yaml.safe_load((REPO / "roles" / "bitcoind" / "defaults" / "main.yml").read_text())


def onion_for(name: str) -> str:
    """A valid Tor v3 address per name (Core refuses an -externalip onion with a bad checksum)."""
    pubkey = hashlib.sha256(name.encode()).digest()
    checksum = hashlib.sha3_256(b".onion checksum" + pubkey + b"\x03").digest()[:2]
    return base64.b32encode(pubkey + checksum + b"\x03").decode().lower() + ".onion"


def password_for(name: str) -> str:
    return f"pw-{name}-Zq8"


def closed_port() -> int:
    return free_ports(1)[0]


def write_instance(root: Path, name: str, network: str, tor_mode: str, addnode=(), **extra) -> dict:
    """Datadir + the bitcoin.conf bitcoind_instance renders for it; returns the instance facts."""
    datadir = root / name
    rpc, p2p, onion = free_ports(3)
    params = {
        "name": name,
        "impl": "core",
        "network": network,
        "datadir": str(datadir),
        "rpc_port": rpc,
        "p2p_port": p2p,
        "onion_port": onion,
        "tor_mode": tor_mode,
        "tor_proxy": f"127.0.0.1:{closed_port()}",
        "onion_address": onion_for(name) if tor_mode != "clearnet" else None,
        "rpcauth": [rpcauth.generate(USER, password_for(name))],
        **extra,
    }
    if addnode:
        if "addnode" in bitcoin_conf.DEFAULTS:  # the module's own option
            params["addnode"] = list(addnode)
        else:
            params["extra_options"] = {"addnode": list(addnode)}
    normalised = bitcoin_conf.validate(params)
    datadir.mkdir(parents=True)
    conf = datadir / "bitcoin.conf"
    conf.write_text(bitcoin_conf.render(normalised))
    conf.chmod(0o600)
    return {"name": name, "datadir": datadir, "rpc": rpc, "p2p": p2p, "onion": onion, "conf": conf.read_text()}


def node_for(make_node, real_core, inst: dict):  # noqa: F811
    return make_node(real_core.bitcoind, inst["datadir"], inst["rpc"], auth=(USER, password_for(inst["name"])))


def stderr_problems(text: str) -> list:
    return [line for line in text.splitlines() if line.strip() and not DISK_SPACE_WARNING.match(line)]


# -- bitcoind_instance's bitcoin.conf --------------------------------------------------------


@pytest.mark.parametrize("tor_mode", TOR_MODES)
@pytest.mark.parametrize("network", NETWORKS)
def test_rendered_conf_is_accepted_by_real_core(real_core, make_node, tmp_path, network, tor_mode):  # noqa: F811
    inst = write_instance(tmp_path, "n1", network, tor_mode)
    node = node_for(make_node, real_core, inst)
    assert node.command() == [
        str(real_core.bitcoind),
        f"-conf={inst['datadir']}/bitcoin.conf",
        f"-datadir={inst['datadir']}",
    ]  # the supervisord program's command (roles/bitcoind/vars/main.yml)
    node.start()
    if network == "regtest":
        node.wait_rpc(timeout=30)
        info = node.result("getblockchaininfo")
        assert info["chain"] == "regtest" and info["blocks"] == 0
        net = node.result("getnetworkinfo")
        assert net["subversion"] == real_core.subversion
        expect_reachable = {"tor-only": {"onion"}, "clearnet": {"ipv4", "ipv6"}, "both": {"ipv4", "ipv6", "onion"}}
        reachable = {n["name"] for n in net["networks"] if n["reachable"]}
        assert expect_reachable[tor_mode] <= reachable, net["networks"]
        if tor_mode == "tor-only":
            assert reachable == {"onion"}
        if tor_mode != "clearnet":  # externalip= from the onion address
            assert [a["address"] for a in net["localaddresses"]] == [onion_for("n1")]
    else:
        # past the warm-up: a SIGTERM during init ends Core with exit 1 (init aborted), not 0
        node.wait_rpc(timeout=30)
        assert node.result("getblockchaininfo")["chain"] == network
    assert node.stop(signal.SIGTERM, timeout=60) == 0
    assert stderr_problems(node.stderr()) == [], inst["conf"]
    log = node.output()
    assert "Shutdown: done" in log
    netdir = Path(bitcoin_conf.network_dir(str(inst["datadir"]), network))
    if "printtoconsole=1" in inst["conf"] and "nodebuglogfile=1" in inst["conf"]:
        assert not (netdir / "debug.log").exists()  # console only: supervisord keeps the log
    for line in inst["conf"].splitlines():  # nothing of the conf was ignored or refused
        assert "Ignoring unknown configuration value" not in log and "only applied on" not in log, line


@pytest.mark.skipif("debug_log" not in bitcoin_conf.DEFAULTS, reason="bitcoind_instance has no debug_log option yet")
def test_debug_log_file_mode_is_accepted_by_real_core(real_core, make_node, tmp_path):  # noqa: F811
    inst = write_instance(tmp_path, "f1", "regtest", "tor-only", debug_log="file")
    node = node_for(make_node, real_core, inst)
    node.start()
    node.wait_rpc()
    assert node.stop() == 0
    assert (inst["datadir"] / "regtest" / "debug.log").read_text().count("Shutdown: done") == 1
    assert "Shutdown: done" not in node.output()  # printtoconsole=0
    assert stderr_problems(node.stderr()) == []


# -- bitcoind_info ---------------------------------------------------------------------------


def info_target(inst: dict, password: str) -> dict:
    """The module's own resolve_instance for an instance (its bitcoin.conf read from the datadir)."""
    spec = {"name": inst["name"], "datadir": str(inst["datadir"]), "rpc_user": USER, "rpc_password": password}
    params = {"conf_dir": "/nonexistent", "datadir_root": "/nonexistent", "rpc_credentials": []}
    return bitcoind_info.resolve_instance(spec, params)


def test_bitcoind_info_sees_warm_up_as_warming_up(real_core, make_node, tmp_path):  # noqa: F811
    """Core answers -28 from its RPC server start until "Done loading" (about 25 ms on an empty
    regtest chain here): the module's own query, run in-process right after the start, must
    report warming_up, then up. The window is short, so up to 5 starts are tried."""
    inst = write_instance(tmp_path, "w1", "regtest", "clearnet")
    node = node_for(make_node, real_core, inst)
    seen = []
    for _attempt in range(5):
        node.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            result = bitcoind_info.query_instance(info_target(inst, password_for("w1")), time.monotonic() + 2)
            seen.append((result["state"], result["message"]))
            if result["state"] == "up":
                break
        assert node.stop() == 0
        if any(state == "warming_up" for state, _ in seen):
            break
    warming = [message for state, message in seen if state == "warming_up"]
    assert warming, f"no -28 answer caught in 5 starts: {sorted(set(seen))[:5]}"
    assert all(m.startswith("warming up: ") for m in warming), warming  # Core: "RPC server started", "Loading…"
    assert seen[-1][0] == "up"
    assert {state for state, _ in seen} <= {"down", "warming_up", "up"}, seen


def test_wrong_password_is_401_and_auth_failed(real_core, make_node, tmp_path):  # noqa: F811
    inst = write_instance(tmp_path, "a1", "regtest", "tor-only")
    node = node_for(make_node, real_core, inst)
    node.start()
    node.wait_rpc()
    status, body, headers = node.rpc("uptime", auth=(USER, "not-the-password"))
    assert (status, body) == (401, None)
    assert headers["www-authenticate"] == 'Basic realm="jsonrpc"'
    result = bitcoind_info.query_instance(info_target(inst, "not-the-password"), time.monotonic() + 5)
    assert result["state"] == "auth_failed"
    assert "not-the-password" not in json.dumps(result)
    with pytest.raises(bitcoin_rpc.RpcAuthError):
        bitcoin_rpc.BitcoinRpc("127.0.0.1", inst["rpc"], USER, "wrong", timeout=5).call("uptime")
    assert node.stop() == 0


def test_bitcoind_info_on_two_real_instances_peered_through_addnode(real_core, supervisord, tmp_path):  # noqa: F811
    """b addnodes a (clearnet regtest); a block mined on a reaches b; bitcoind_info (through
    ansible, discovery mode, as on a node) reports every field, and each sees the other as Core
    before v30 (/Satoshi:28.99.0/)."""
    sv = supervisord
    a = write_instance(tmp_path, "pa", "regtest", "clearnet")
    b = write_instance(tmp_path, "pb", "regtest", "clearnet", addnode=[f"127.0.0.1:{a['p2p']}"])
    assert "[regtest]\n" in b["conf"] and f"addnode=127.0.0.1:{a['p2p']}" in b["conf"].split("[regtest]")[1]
    node_a = bitcoin_rpc.BitcoinRpc("127.0.0.1", a["rpc"], USER, password_for("pa"), timeout=120)
    node_b = bitcoin_rpc.BitcoinRpc("127.0.0.1", b["rpc"], USER, password_for("pb"), timeout=120)

    def call(client, method, *params):
        try:
            return client.call(method, params)
        except (bitcoin_rpc.RpcWarmingUp, bitcoin_rpc.RpcDown):
            client.close()
            return None

    # a first: Core tries an addnode peer at start, then again only every 60 s
    for inst, client in ((a, node_a), (b, node_b)):
        sv.write_program(
            f"bitcoind-{inst['name']}",
            f"{real_core.bitcoind} -conf={inst['datadir']}/bitcoin.conf -datadir={inst['datadir']}",
            directory=inst["datadir"],
            autorestart=True,
            startsecs=1,
            stopsignal="TERM",
            stopwaitsecs=ROLE_DEFAULTS["bitcoind_stopwaitsecs"],
            stopasgroup=True,
            killasgroup=True,
        )
        sv.update()
        sv.wait_state(f"bitcoind-{inst['name']}", "RUNNING")
        wait_for(lambda c=client: call(c, "getblockcount") == 0, 30, f"{inst['name']} answers RPC")

    wait_for(lambda: call(node_a, "getconnectioncount") == 1, 30, "a has its peer")
    wait_for(lambda: call(node_b, "getconnectioncount") == 1, 30, "b has its peer")
    mined = node_a.call("generatetoaddress", [1, REGTEST_ADDR])
    wait_for(lambda: call(node_b, "getbestblockhash") == mined[0], 30, "the block mined on a reaches b")

    args = {
        "rpc_credentials": [{"name": n, "user": USER, "password": password_for(n)} for n in ("pa", "pb")],
        "conf_dir": sv.conf_dir,
        "datadir_root": "/nonexistent",
        "supervisor_url": sv.server_url,
        "timeout": 5,
    }
    result, output = run_collection_module("bitcoind_info", args, expect_success=True)
    for name in ("pa", "pb"):
        assert password_for(name) not in output
    by_name = {i["name"]: i for i in result["instances"]}
    assert result["summary"]["up"] == 2 and result["summary"]["total"] == 2
    for inst, inbound in ((a, 1), (b, 0)):
        got = by_name[inst["name"]]
        assert got["state"] == "up" and got["message"] == "", got
        assert got["impl"] == "core" and got["network"] == "regtest" and got["chain"] == "regtest"
        major, minor, patch = (int(x) for x in real_core.version.split("."))
        assert got["version"] == major * 10000 + minor * 100 + patch == 289900
        assert got["subversion"] == real_core.subversion == "/Satoshi:28.99.0/"
        assert isinstance(got["uptime"], int) and 0 <= got["uptime"] < 600
        assert got["blocks"] == 1 and got["headers"] == 1
        # Core prints 1.0 as the JSON number 1: after JSON it may be an int (RETURN says float)
        assert isinstance(got["verificationprogress"], (int, float)) and 0 < got["verificationprogress"] <= 1
        assert got["initialblockdownload"] is False  # a fresh block ends IBD
        assert isinstance(got["size_on_disk"], int) and got["size_on_disk"] > 0
        assert got["pruned"] is False
        assert got["peers"]["total"] == 1
        assert (got["peers"]["inbound"], got["peers"]["outbound"]) == (inbound, 1 - inbound)
        breakdown = dict.fromkeys(got["peers"]["breakdown"], 0)
        breakdown["core_pre_v30"] = 1
        assert got["peers"]["breakdown"] == breakdown  # /Satoshi:28.99.0/ is Core before v30
        assert got["ports"]["rpc"] == inst["rpc"] and got["ports"]["p2p"] == inst["p2p"]
        assert got["tor_mode"] == "clearnet" and got["onion_address"] in (None, "")
        assert {"regtest", "core", "clearnet"} <= set(got["tags"]), got["tags"]
        assert got["program"] == f"bitcoind-{inst['name']}"
        assert got["supervisord"]["state"] == "RUNNING" and got["supervisord"]["restarts"] == 0
        assert got["unsupervised"] is False
        assert isinstance(got["elapsed"], float)


# -- supervisord_program ---------------------------------------------------------------------


def test_supervisord_program_runs_real_core(real_core, supervisord, tmp_path):  # noqa: F811
    """The program as roles/bitcoind configures it (autorestart=true, TERM, stopasgroup,
    killasgroup, the role's stopwaitsecs; startsecs shortened to 2 for the test's time)."""
    role_vars = (REPO / "roles" / "bitcoind" / "vars" / "main.yml").read_text()
    for setting in ("'autorestart': true", "'stopsignal': 'TERM'", "'stopasgroup': true", "'killasgroup': true"):
        assert setting in role_vars, f"the role's program no longer has {setting}: update this test"
    assert "/bin/bitcoind -conf=' ~ datadir" in role_vars and "'/bitcoin.conf -datadir=' ~ datadir" in role_vars
    sv = supervisord
    inst = write_instance(tmp_path, "sp", "regtest", "tor-only")
    name = "bitcoind-sp"
    args = {
        "name": name,
        "state": "started",
        "command": f"{real_core.bitcoind} -conf={inst['datadir']}/bitcoin.conf -datadir={inst['datadir']}",
        "directory": str(inst["datadir"]),
        "autostart": True,
        "autorestart": True,
        "startsecs": 2,
        "startretries": ROLE_DEFAULTS["bitcoind_startretries"],
        "stopsignal": "TERM",
        "stopwaitsecs": ROLE_DEFAULTS["bitcoind_stopwaitsecs"],
        "stopasgroup": True,
        "killasgroup": True,
        "redirect_stderr": True,
        "stdout_logfile": str(tmp_path / f"{name}.log"),
        "server_url": sv.server_url,
        "conf_dir": sv.conf_dir,
    }
    result, output = run_collection_module_in_playbook("supervisord_program", args, str(tmp_path))
    assert result.get("failed") is not True, output[-3000:]
    assert result["changed"] is True and result["state"] == "RUNNING" and result["pid"] > 0
    first = result["pid"]
    client = bitcoin_rpc.BitcoinRpc("127.0.0.1", inst["rpc"], USER, password_for("sp"), timeout=30)
    wait_for(lambda: _answers(client, "getblockcount") == 0, 30, "RPC answers")

    # SIGTERM (an operator's kill, a shutdown): exit 0 after the flush, and supervisord restarts
    # it because the collection sets autorestart=true (unexpected would leave it EXITED).
    os.kill(first, signal.SIGTERM)
    info = wait_for(
        lambda: (i := sv.info(name)) and i["pid"] not in (0, first) and i["statename"] == "RUNNING" and i,
        60,
        "restarted after SIGTERM",
    )
    log = Path(sv.root, "supervisord.log").read_text()
    assert re.search(rf"exited: {name} \(exit status 0; (not )?expected\)", log), log[-2000:]
    assert "SIGKILL" not in log
    wait_for(lambda: _answers(client, "getblockcount") == 0, 30, "RPC answers after the restart")
    assert info["pid"] != first

    # stop within stopwaitsecs: a clean exit, no SIGKILL
    started = time.monotonic()
    sv.client().call("stopProcess", name, True)
    elapsed = time.monotonic() - started
    assert elapsed < min(30, ROLE_DEFAULTS["bitcoind_stopwaitsecs"]), elapsed
    stopped = sv.info(name)
    assert stopped["statename"] == "STOPPED" and stopped["exitstatus"] == 0, stopped
    assert "SIGKILL" not in Path(sv.root, "supervisord.log").read_text()
    assert "Shutdown: done" in (tmp_path / f"{name}.log").read_text()


def _answers(client, method):
    try:
        return client.call(method)
    except bitcoin_rpc.RpcFailure:
        client.close()
        return None


# -- the skip rule -----------------------------------------------------------------------------


def test_absent_archive_skips_only_outside_ci(monkeypatch, tmp_path):
    """Without the archive these tests skip (saying why) when CI is unset, and fail in CI."""
    from ansible_collections.nodefleet.bitcoin.tests.integration import real_core as rc

    monkeypatch.setenv(rc.ARCHIVE_DIR_ENV, str(tmp_path / "nonexistent"))
    archive, reason = rc.find_archive()
    assert archive is None and str(tmp_path / "nonexistent") in reason and rc.ARCHIVE_DIR_ENV in reason
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no real Bitcoin Core"):
        rc.skip_or_fail(reason)
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="CI must run the real-Core tests"):
        rc.skip_or_fail(reason)
    (tmp_path / "nonexistent").mkdir()
    assert rc.find_archive()[0] is None  # an empty directory is absence too
