# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""bitcoind_info end to end: stand-in daemons under a real supervisord, module run through ansible.

Each test builds a small fleet on loopback: for every instance a datadir with the bitcoin.conf
bitcoind_instance renders (module_utils.bitcoin_conf, tor-only so every socket is on
127.0.0.1), scripted peers in ``<network_dir>/standin-peers.json``, and a
``bitcoind-<name>.conf`` supervisord program that runs the stand-in. The module runs in
discovery mode (program files + bitcoin.conf + credentials), exactly as on a node.

The stand-in is ``tests/standin/bitcoind``; ``NODEFLEET_STANDIN=/path/to/daemon`` points the
tests (and tests/bench/bench_status.py) at another build of it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import time

import pytest
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import bitcoin_conf, rpcauth
from ansible_collections.nodefleet.bitcoin.tests.integration.ansible_cli import run_collection_module
from ansible_collections.nodefleet.bitcoin.tests.integration.local_ports import free_ports
from ansible_collections.nodefleet.bitcoin.tests.integration.supervisord_fixture import (  # noqa: F401
    supervisord,
)

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ANSIBLE = os.path.join(ROOT, ".venv", "bin", "ansible")
STANDIN = os.environ.get("NODEFLEET_STANDIN") or os.path.join(ROOT, "tests", "standin", "bitcoind")
NETWORK = "regtest"
RPC_USER = "monitor"

# Scripted peers (the stand-in's standin-peers.json keys, Core's getpeerinfo names) and the known answer.
BIT29 = "0000000020000409"  # NETWORK | WITNESS | NETWORK_LIMITED | Libre Relay bit 29
PLAIN = "0000000000000409"  # NETWORK | WITNESS | NETWORK_LIMITED


def peer(n: int, subver: str, services: str, inbound: bool) -> dict:
    return {"addr": f"127.0.0.1:{50000 + n}", "subver": subver, "services": services, "inbound": inbound}


PEERS = [
    peer(1, "/Satoshi:29.1.0/Knots:20250305/Garbageman:0.1/", BIT29, True),  # libre_relay (UA and bit)
    peer(2, "/Satoshi:29.0.0/", BIT29, False),  # libre_relay (bit only)
    peer(3, "/Satoshi:28.1.0/Knots:20250305/", PLAIN, False),  # knots
    peer(4, "/Satoshi:28.1.0/Knots:20250305/", PLAIN, True),  # knots
    peer(5, "/Satoshi:29.0.0/", PLAIN, False),  # core_pre_v30
    peer(6, "/Satoshi:30.0.0/", PLAIN, False),  # core_v30_plus
    peer(7, "/Satoshi:30.0.0/", PLAIN, False),  # core_v30_plus
    peer(8, "/Satoshi:31.1.0/", PLAIN, False),  # core_v30_plus
    peer(9, "/btcwire:0.5.0/btcd:0.24.2/", "0000000000000009", True),  # other
]
BREAKDOWN = {"libre_relay": 2, "knots": 2, "core_v30_plus": 3, "core_pre_v30": 1, "other": 1}

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not os.environ.get("CI") and not os.path.exists(STANDIN),
        reason=f"outside CI only: the stand-in daemon {STANDIN} is not in this tree",
    ),
]


def onion_for(name: str) -> str:
    """A valid v3 onion address (checksum and version byte right, as Core and the stand-in
    require for -externalip), stable per name; no service behind it."""
    pubkey = hashlib.sha256(name.encode()).digest()
    checksum = hashlib.sha3_256(b".onion checksum" + pubkey + b"\x03").digest()[:2]
    return base64.b32encode(pubkey + checksum + b"\x03").decode().lower() + ".onion"


def password_for(name: str) -> str:
    return f"pw-{name}-Zq8"


def write_instance(sv, name: str, root: str, impl: str = "core", peers=None, autorestart: bool = False) -> dict:
    """Datadir, bitcoin.conf, scripted peers and the supervisord program file of one instance."""
    datadir = os.path.join(root, name)
    rpc, p2p, onion = free_ports(3)
    normalised = bitcoin_conf.validate(
        {
            "name": name,
            "impl": impl,
            "network": NETWORK,
            "datadir": datadir,
            "rpc_port": rpc,
            "p2p_port": p2p,
            "onion_port": onion,
            "tor_mode": "tor-only",
            "onion_address": onion_for(name),
            "rpcauth": [rpcauth.generate(RPC_USER, password_for(name))],
        }
    )
    network_dir = bitcoin_conf.network_dir(datadir, NETWORK)
    os.makedirs(network_dir, exist_ok=True)
    conf_file = os.path.join(datadir, "bitcoin.conf")
    with open(conf_file, "w", encoding="utf-8") as handle:
        handle.write(bitcoin_conf.render(normalised))
    os.chmod(conf_file, 0o600)
    with open(os.path.join(network_dir, "standin-peers.json"), "w", encoding="utf-8") as handle:
        json.dump(PEERS if peers is None else peers, handle)
    sv.write_program(
        f"bitcoind-{name}",
        f"{STANDIN} -conf={conf_file} -datadir={datadir}",
        startsecs=0,
        autorestart=autorestart,
        # short warm-up and flush: the tests wait for both
        environment='NODEFLEET_STANDIN_WARMUP="1",NODEFLEET_STANDIN_FLUSH_SECONDS="0.2"',
        stopwaitsecs=10,
    )
    return {"name": name, "rpc_port": rpc, "datadir": datadir}


def credentials(names) -> list:
    return [{"name": name, "user": RPC_USER, "password": password_for(name)} for name in names]


def run_info(sv, names, timeout: float = 5.0, check: bool = False, extra: dict | None = None) -> tuple:
    """Run bitcoind_info through ansible (discovery mode); return (module result, wall seconds, raw output)."""
    args = {
        "rpc_credentials": credentials(names),
        "conf_dir": sv.conf_dir,
        "datadir_root": "/nonexistent",
        "supervisor_url": sv.server_url,
        "timeout": timeout,
        **(extra or {}),
    }
    started = time.monotonic()
    result, output = run_collection_module("bitcoind_info", args, check=check, expect_success=True)
    wall = time.monotonic() - started
    return result, wall, output


def wait_all_up(sv, names, budget: float = 30.0) -> dict:
    """Poll the module until every instance is up (past the stand-in's warm-up); bounded."""
    deadline = time.monotonic() + budget
    while True:
        result, _, _ = run_info(sv, names)
        states = {i["name"]: i["state"] for i in result["instances"]}
        if all(state == "up" for state in states.values()):
            return result
        assert time.monotonic() < deadline, f"not all up within {budget}s: {states}"
        time.sleep(0.5)


@contextlib.contextmanager
def continued_on_exit(pids):
    """SIGCONT every pid we SIGSTOPped, whatever happens, so supervisord can stop it."""
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def test_breakdown_and_down_hung_reported_within_the_time_budget(supervisord, tmp_path):  # noqa: F811
    sv = supervisord
    names = ["gm", "knots", "core", "core2"]
    for name, impl in zip(names, ("garbageman", "knots", "core", "core")):
        write_instance(sv, name, str(tmp_path), impl=impl)
    sv.update()
    for name in names:
        sv.wait_state(f"bitcoind-{name}", "RUNNING")

    result = wait_all_up(sv, names)
    by_name = {i["name"]: i for i in result["instances"]}
    assert sorted(by_name) == sorted(names)
    for name, impl in zip(names, ("garbageman", "knots", "core", "core")):
        instance = by_name[name]
        assert instance["peers"]["breakdown"] == BREAKDOWN, name
        assert instance["peers"]["total"] == len(PEERS)
        assert instance["peers"]["inbound"] == 3
        assert instance["impl"] == impl  # from the conf header bitcoind_instance writes
        assert instance["network"] == NETWORK
        assert instance["tor_mode"] == "tor-only"
        assert instance["supervisord"]["state"] == "RUNNING"
        assert instance["supervisord"]["restarts"] == 0
        assert instance["unsupervised"] is False
        assert set(instance["tags"]) >= {NETWORK, impl, "tor-only"}
        assert instance["onion_address"] == onion_for(name)  # externalip= read back from bitcoin.conf

    # kill one (autorestart=false: it stays down), hang another (SIGSTOP: RPC port open, no answer)
    killed = sv.info("bitcoind-core")["pid"]
    stopped = sv.info("bitcoind-knots")["pid"]
    os.kill(killed, signal.SIGKILL)
    sv.wait_state("bitcoind-core", ("EXITED", "STOPPED", "FATAL", "BACKOFF"))
    with continued_on_exit([stopped]):
        os.kill(stopped, signal.SIGSTOP)
        timeout = 2.0
        result, wall, stdout = run_info(sv, names, timeout=timeout)
        states = {i["name"]: i["state"] for i in result["instances"]}
        assert states == {"gm": "up", "knots": "hung", "core": "down", "core2": "up"}
        # the module itself is bounded by one timeout (+0.5 s grace), whatever hangs
        assert result["elapsed"] < timeout + 1.0, result["elapsed"]
        assert wall < timeout + 15, wall  # ansible start-up included
        down = next(i for i in result["instances"] if i["name"] == "core")
        assert down["supervisord"]["state"] != "RUNNING"
        assert "refused" in down["message"]
        for name in names:
            assert password_for(name) not in stdout

        # check mode is read-only and gives the same states
        checked, _, _ = run_info(sv, names, timeout=timeout, check=True)
        assert {i["name"]: i["state"] for i in checked["instances"]} == states
        assert checked["changed"] is False


def test_restart_counted_and_wrong_password_is_auth_failed(supervisord, tmp_path):  # noqa: F811
    sv = supervisord
    write_instance(sv, "solo", str(tmp_path), peers=[])
    sv.update()
    sv.wait_state("bitcoind-solo", "RUNNING")
    wait_all_up(sv, ["solo"])
    client = sv.client()
    client.call("stopProcess", "bitcoind-solo", True)
    client.call("startProcess", "bitcoind-solo", True)
    result = wait_all_up(sv, ["solo"])
    solo = result["instances"][0]
    assert solo["supervisord"]["restarts"] == 1
    assert solo["peers"]["breakdown"] == dict.fromkeys(BREAKDOWN, 0)

    bad = {"rpc_credentials": [{"name": "solo", "user": RPC_USER, "password": "not-the-password"}]}
    result, _, stdout = run_info(sv, ["solo"], extra=bad)
    assert result["instances"][0]["state"] == "auth_failed"
    assert "not-the-password" not in stdout


def test_status_playbook_writes_table_json_and_prometheus(supervisord, tmp_path):  # noqa: F811
    """playbooks/status.yml end to end on localhost: inventory -> port plan -> module -> outputs."""
    from prometheus_client.parser import text_string_to_metric_families

    sv = supervisord
    home = tmp_path / "home"
    instances = []
    for name, impl in (("pa", "knots"), ("pb", "core")):
        facts = write_instance(sv, name, str(home), impl=impl)
        instances.append(
            {
                "name": name,
                "impl": impl,
                "network": NETWORK,
                "tor_mode": "tor-only",
                "ports": {"rpc": facts["rpc_port"]},
                "rpc_users": [{"user": RPC_USER, "password": password_for(name)}],
            }
        )
    sv.update()
    wait_all_up(sv, ["pa", "pb"])
    inventory = tmp_path / "inventory.json"
    python = os.path.join(ROOT, ".venv", "bin", "python")
    host = {"ansible_connection": "local", "ansible_python_interpreter": python, "bitcoind_instances": instances}
    inventory.write_text(json.dumps({"fleet": {"hosts": {"node1": host}}}))
    report, textfile_dir = tmp_path / "out" / "fleet.json", tmp_path / "prom"
    extra = {
        "nodefleet_status_become": False,
        "nodefleet_status_json": str(report),
        "nodefleet_status_textfile_dir": str(textfile_dir),
        "nodefleet_status_supervisor_url": sv.server_url,
        "bitcoind_home": str(home),
    }
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_FORCE_COLOR="0")
    proc = subprocess.run(
        [ANSIBLE + "-playbook", "-i", str(inventory), "playbooks/status.yml", "-e", json.dumps(extra)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    for name in ("pa", "pb"):
        assert password_for(name) not in proc.stdout + proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.strip().startswith("node1 ")]
    table = [row for row in rows if row[1] != ":"]  # not the PLAY RECAP line
    assert [row[1:3] for row in table] == [["pa", "up"], ["pb", "up"]]
    assert all("(LR:2 KN:2 C30+:3 C<30:1 OT:1)" in " ".join(row) for row in table)

    data = json.loads(report.read_text())
    assert data["summary"]["up"] == 2
    assert [i["peers"]["breakdown"] for i in data["hosts"]["node1"]["instances"]] == [BREAKDOWN, BREAKDOWN]
    assert password_for("pa") not in report.read_text()

    prom = textfile_dir / "nodefleet_bitcoind.prom"
    assert oct(prom.stat().st_mode & 0o777) == "0o644"
    families = {f.name: f for f in text_string_to_metric_families(prom.read_text())}
    up = {s.labels["bitcoind"]: s.value for s in families["nodefleet_bitcoind_up"].samples}
    assert up == {"pa": 1.0, "pb": 1.0}
    peers = {(s.labels["bitcoind"], s.labels["kind"]): s.value for s in families["nodefleet_bitcoind_peers"].samples}
    assert {kind: peers[("pa", kind)] for kind in BREAKDOWN} == BREAKDOWN
    assert families["nodefleet_bitcoind_up"].samples[0].labels["host"] == "node1"
