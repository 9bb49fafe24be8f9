# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""bitcoind_info: pure parsers, and main() against fake bitcoind/supervisord servers on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xmlrpc.server import SimpleXMLRPCServer

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import bitcoin_conf
from ansible_collections.nodefleet.bitcoin.plugins.modules import bitcoind_info

ONION = "mrswmz3infvgw3dnnzxxa4lson2hk5txpb4xu634pv7h7aebqkb5woid.onion"
PASSWORD = "s3cret-Pa55word-for-tests"

# --------------------------------------------------------------------------- pure parsers

SIGNET_TOR_ONLY = f"""# Managed by nodefleet.bitcoin (bitcoind_instance); local edits are overwritten.
# instance=gm1 impl=garbageman
chain=signet
server=1
listen=1
rpcauth=monitor:0123456789abcdef0123456789abcdef$00
prune=550
proxy=127.0.0.1:9050
onion=127.0.0.1:9050
listenonion=0
onlynet=onion
dnsseed=0
discover=0
externalip={ONION}
zmqpubrawblock=tcp://127.0.0.1:20013

[signet]
port=20011
rpcport=20010
bind=127.0.0.1:20011
bind=127.0.0.1:20012=onion
rpcbind=127.0.0.1
rpcallowip=127.0.0.1
"""

MAIN_CLEARNET_TOP_LEVEL = """rpcport=8400
port=8401
[test]
rpcport=9999
"""

LEGACY_TESTNET = """testnet=1
[test]
rpcport=18400  # comment
"""

BOTH = f"""# instance=k1 impl=knots
chain=main
proxy=127.0.0.1:9050
externalip={ONION}
[main]
rpcport=20100
bind=0.0.0.0:20101
bind=127.0.0.1:20102=onion
rpcbind=127.0.0.2:20100
"""

CONF_CASES = [
    (
        "signet-tor-only",
        SIGNET_TOR_ONLY,
        {
            "name": "gm1",
            "impl": "garbageman",
            "network": "signet",
            "rpc_port": 20010,
            "p2p_port": 20011,
            "onion_port": 20012,
            "prune": 550,
            "tor_mode": "tor-only",
            "onion_address": ONION,
            "rpc_host": "127.0.0.1",
            "zmq_ports": {"rawblock": 20013},
        },
    ),
    (
        "main-top-level-ports-other-section-ignored",
        MAIN_CLEARNET_TOP_LEVEL,
        {"name": None, "network": "main", "rpc_port": 8400, "p2p_port": 8401, "tor_mode": "clearnet", "prune": 0},
    ),
    ("legacy-testnet-flag", LEGACY_TESTNET, {"network": "test", "rpc_port": 18400}),
    (
        "both",
        BOTH,
        {
            "impl": "knots",
            "network": "main",
            "rpc_port": 20100,
            "onion_port": 20102,
            "tor_mode": "both",
            "rpc_host": "127.0.0.2",
        },
    ),
    ("empty", "", {"network": "main", "rpc_port": None, "tor_mode": "clearnet", "onion_address": None}),
    # Core takes the FIRST value of a single-value option in a config file (issue 10 #10):
    # a hand-written file with two rpcport lines is served on the first one.
    (
        "first-value-wins-like-core",
        "chain=regtest\n[regtest]\nrpcport=20300\nrpcport=20399\nport=20301\nport=20398\nprune=600\nprune=0\n",
        {"network": "regtest", "rpc_port": 20300, "p2p_port": 20301, "prune": 600},
    ),
    (
        "section-before-top-level-first-value",
        "rpcport=20500\nchain=signet\n[signet]\nrpcport=20400\n",
        {"network": "signet", "rpc_port": 20400},
    ),
    ("negated-prune-is-off", "chain=regtest\nprune=600\nnoprune=1\n", {"network": "regtest", "prune": 0}),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CONF_CASES], ids=[c[0] for c in CONF_CASES])
def test_parse_bitcoin_conf(text, expected):
    facts = bitcoind_info.parse_bitcoin_conf(text)
    assert {key: facts[key] for key in expected} == expected


def test_parse_bitcoin_conf_refuses_what_core_refuses():
    with pytest.raises(ValueError, match="line 2"):
        bitcoind_info.parse_bitcoin_conf("chain=main\nthis is not an option\n")


def test_round_trip_with_what_bitcoind_instance_renders():
    params = {
        "name": "rt1",
        "impl": "knots",
        "network": "testnet4",
        "rpc_port": 20200,
        "p2p_port": 20201,
        "onion_port": 20202,
        "tor_mode": "both",
        "onion_address": ONION,
        "rpcauth": ["monitor:0123456789abcdef0123456789abcdef$" + "0" * 64],
        "prune": 1000,
    }
    text = bitcoin_conf.render(bitcoin_conf.validate(params))
    facts = bitcoind_info.parse_bitcoin_conf(text)
    assert (facts["name"], facts["impl"], facts["network"]) == ("rt1", "knots", "testnet4")
    assert (facts["rpc_port"], facts["p2p_port"], facts["onion_port"]) == (20200, 20201, 20202)
    assert (facts["tor_mode"], facts["onion_address"], facts["prune"]) == ("both", ONION, 1000)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[program:bitcoind-a]\ncommand=/opt/bitcoin/core/bin/bitcoind -conf=/srv/a/bitcoin.conf -datadir=/srv/a\n",
            {"program": "bitcoind-a", "conf_file": "/srv/a/bitcoin.conf", "datadir": "/srv/a"},
        ),
        ("[program:x]\ncommand = bitcoind --datadir=/d\n", {"program": "x", "conf_file": None, "datadir": "/d"}),
        ("", {"program": None, "conf_file": None, "datadir": None}),
    ],
)
def test_parse_program_conf(text, expected):
    assert bitcoind_info.parse_program_conf(text) == expected


# count_restarts is tested where it lives (tests/unit/plugins/module_utils/test_supervisord.py);
# bitcoind_info imports it.


@pytest.mark.parametrize(
    ("subver", "impl"),
    [
        ("/Satoshi:30.0.0/", "core"),
        ("/Satoshi:28.1.0/Knots:20250305/", "knots"),
        ("/x/Garbageman:1/", "garbageman"),
        ("", None),
    ],
)
def test_guess_impl(subver, impl):
    assert bitcoind_info.guess_impl(subver) == impl


def test_tags():
    result = {"network": "main", "impl": "core", "tor_mode": "both", "pruned": True, "initialblockdownload": True}
    assert bitcoind_info.make_tags(result) == ["main", "core", "both", "pruned", "ibd"]
    assert bitcoind_info.make_tags({"network": None, "impl": None, "tor_mode": None}) == []


# --------------------------------------------------------------------------- fake servers

PEERS = [
    {"subver": "/Satoshi:29.1.0/Knots:20250305/Garbageman:0.1/", "services": "0000000020000409", "inbound": True},
    {"subver": "/Satoshi:28.1.0/", "services": "0000000020000409", "inbound": False},
    {"subver": "/Satoshi:28.1.0/Knots:20250305/", "services": "0000000000000409", "inbound": False},
    {"subver": "/Satoshi:29.0.0/", "services": "0000000000000409", "inbound": False},
    {"subver": "/Satoshi:30.0.0/", "services": "0000000000000409", "inbound": True},
    {"subver": "/Satoshi:30.0.0/", "services": "0000000000000409", "inbound": False},
    {"subver": "/btcwire:0.5.0/", "services": "0000000000000001", "inbound": False},
]


class FakeBitcoind(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        import base64

        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server = self.server
        wanted = "Basic " + base64.b64encode(f"monitor:{PASSWORD}".encode()).decode()
        if self.headers.get("Authorization") != wanted:
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if server.mode == "sleep":
            time.sleep(5)
        if server.mode == "warmup":
            status, body = 500, {"result": None, "error": {"code": -28, "message": "Loading block index…"}}
        else:
            results = {
                "getblockchaininfo": {
                    "chain": "signet",
                    "blocks": 1000,
                    "headers": 1005,
                    "verificationprogress": 0.75,
                    "initialblockdownload": True,
                    "size_on_disk": 4096,
                    "pruned": False,
                },
                "getnetworkinfo": {"version": 290100, "subversion": "/Satoshi:29.1.0/Knots:20250305/"},
                "getpeerinfo": PEERS,
                "uptime": 1234,
            }
            status, body = 200, {"result": results[request["method"]], "error": None}
        body["id"] = request["id"]
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def fake_bitcoind():
    servers = []

    def start(mode="ok"):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeBitcoind)
        srv.daemon_threads, srv.block_on_close, srv.mode = True, False, mode
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(srv)
        return srv.server_address[1]

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def fake_supervisord():
    state = {"processes": [], "log": ""}
    srv = SimpleXMLRPCServer(("127.0.0.1", 0), logRequests=False, allow_none=False)
    srv.register_function(lambda: state["processes"], "supervisor.getAllProcessInfo")
    srv.register_function(lambda offset, length: state["log"], "supervisor.readLog")
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{srv.server_address[1]}"
    yield state
    srv.shutdown()
    srv.server_close()


def process(name, statename, pid=0, start=0, now=0):
    return {
        "name": name,
        "group": name,
        "statename": statename,
        "pid": pid,
        "start": start,
        "now": now,
        "exitstatus": 0,
        "spawnerr": "",
    }


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_module(args, capsys, check_mode=False):
    if check_mode:
        args = dict(args, _ansible_check_mode=True)
    with patch_module_args(args), pytest.raises(SystemExit):
        bitcoind_info.main()
    out = capsys.readouterr().out
    return json.loads(out), out


def spec(name, port, **over):
    return dict({"name": name, "rpc_port": port, "rpc_user": "monitor", "rpc_password": PASSWORD}, **over)


# --------------------------------------------------------------------------- main()


def test_states_breakdown_and_supervisord_view(fake_bitcoind, fake_supervisord, capsys, tmp_path):
    up, warm, stale = fake_bitcoind(), fake_bitcoind("warmup"), fake_bitcoind()
    refused = free_port()
    fake_supervisord["processes"] = [
        process("bitcoind-up1", "RUNNING", 100, 1000, 1100),
        process("bitcoind-warm1", "RUNNING", 101, 1050, 1100),
        process("bitcoind-down1", "EXITED", 0, 1000, 1100),
        process("bitcoind-orphan1", "STOPPED", 0, 0, 1100),
    ]
    fake_supervisord["log"] = "x INFO supervisord started with pid 1\n" + "".join(
        f"x INFO spawned: 'bitcoind-up1' with pid {pid}\n" for pid in (5, 6, 100)
    )
    args = {
        "instances": [
            spec("up1", up, network="signet", impl="garbageman", tor_mode="tor-only", onion_address=ONION),
            spec("warm1", warm),
            spec("down1", refused),
            spec("orphan1", stale),
            spec("noauth1", up, rpc_user=None, rpc_password=None),
        ],
        "supervisor_url": fake_supervisord["url"],
        "conf_dir": str(tmp_path),
        "datadir_root": str(tmp_path),
        "timeout": 3,
    }
    result, out = run_module(args, capsys)
    assert PASSWORD not in out
    assert result["changed"] is False
    by_name = {i["name"]: i for i in result["instances"]}
    assert [i["name"] for i in result["instances"]] == sorted(by_name)
    assert {n: i["state"] for n, i in by_name.items()} == {
        "up1": "up",
        "warm1": "warming_up",
        "down1": "down",
        "orphan1": "up",
        "noauth1": "auth_failed",
    }
    up1 = by_name["up1"]
    assert up1["peers"] == {
        "total": 7,
        "inbound": 2,
        "outbound": 5,
        "breakdown": {"libre_relay": 2, "knots": 1, "core_v30_plus": 2, "core_pre_v30": 1, "other": 1},
    }
    assert (up1["blocks"], up1["headers"], up1["verificationprogress"], up1["uptime"]) == (1000, 1005, 0.75, 1234)
    assert up1["tags"] == ["signet", "garbageman", "tor-only", "ibd"]
    assert up1["supervisord"] == {
        "state": "RUNNING",
        "pid": 100,
        "start": 1000,
        "uptime": 100,
        "exitstatus": 0,
        "spawnerr": "",
        "restarts": 2,
    }
    assert up1["unsupervised"] is False
    assert by_name["orphan1"]["unsupervised"] is True  # answers RPC, supervisord says STOPPED
    assert by_name["orphan1"]["impl"] == "knots"  # guessed from the user agent
    assert "EXITED" in by_name["down1"]["message"]
    assert by_name["noauth1"]["supervisord"]["state"] is None  # no such program
    assert "no credentials" in by_name["noauth1"]["message"]
    assert result["summary"] == {
        "up": 2,
        "warming_up": 1,
        "down": 1,
        "hung": 0,
        "auth_failed": 1,
        "error": 0,
        "restarting": 0,
        "unlisted": 0,
        "total": 5,
    }
    assert result["supervisord"] == {"reachable": True, "error": ""}


def test_check_mode_gives_the_same_answer(fake_bitcoind, capsys, tmp_path):
    port = fake_bitcoind()
    args = {"instances": [spec("a", port)], "supervisor_url": "", "conf_dir": str(tmp_path)}
    normal, _unused = run_module(args, capsys)
    checked, _unused = run_module(args, capsys, check_mode=True)
    assert normal["instances"][0]["state"] == checked["instances"][0]["state"] == "up"
    assert checked["changed"] is False


def test_hung_instance_costs_one_timeout_and_others_still_answer(fake_bitcoind, capsys, tmp_path):
    hung, fine = fake_bitcoind("sleep"), fake_bitcoind()
    args = {
        "instances": [spec("h1", hung), spec("h2", hung), spec("ok1", fine)],
        "supervisor_url": "",
        "conf_dir": str(tmp_path),
        "timeout": 1,
    }
    started = time.monotonic()
    result, _unused = run_module(args, capsys)
    wall = time.monotonic() - started
    assert {i["name"]: i["state"] for i in result["instances"]} == {"h1": "hung", "h2": "hung", "ok1": "up"}
    assert wall < 2.0  # parallel: about one timeout, not one per instance or per call


def test_unreachable_supervisord_is_reported_not_fatal(fake_bitcoind, capsys, tmp_path):
    args = {
        "instances": [spec("a", fake_bitcoind())],
        "supervisor_url": "unix://" + str(tmp_path / "missing.sock"),
        "conf_dir": str(tmp_path),
    }
    result, _unused = run_module(args, capsys)
    assert result["supervisord"]["reachable"] is False
    assert "missing.sock" in result["supervisord"]["error"]
    assert result["instances"][0]["state"] == "up"
    assert result["instances"][0]["supervisord"] is None


def test_discovery_reads_program_files_and_bitcoin_conf(fake_bitcoind, capsys, tmp_path):
    port = fake_bitcoind()
    conf_dir = tmp_path / "conf.d"
    conf_dir.mkdir()
    datadir = tmp_path / "data" / "gm1"
    datadir.mkdir(parents=True)
    (datadir / "bitcoin.conf").write_text(SIGNET_TOR_ONLY.replace("rpcport=20010", f"rpcport={port}"))
    (conf_dir / "bitcoind-gm1.conf").write_text(
        "[program:bitcoind-gm1]\n"
        f"command=/opt/bitcoin/garbageman/bin/bitcoind -conf={datadir}/bitcoin.conf -datadir={datadir}\n"
    )
    (conf_dir / "bitcoind-lost.conf").write_text("[program:bitcoind-lost]\ncommand=/bin/true\n")
    (conf_dir / "other.conf").write_text("[program:other]\ncommand=/bin/true\n")
    args = {
        "rpc_credentials": [{"name": "gm1", "user": "monitor", "password": PASSWORD}],
        "supervisor_url": "",
        "conf_dir": str(conf_dir),
        "datadir_root": str(tmp_path / "data"),
    }
    result, out = run_module(args, capsys)
    assert PASSWORD not in out
    by_name = {i["name"]: i for i in result["instances"]}
    assert sorted(by_name) == ["gm1", "lost"]
    gm1 = by_name["gm1"]
    assert gm1["state"] == "up"
    assert (gm1["impl"], gm1["network"], gm1["tor_mode"], gm1["onion_address"]) == (
        "garbageman",
        "signet",
        "tor-only",
        ONION,
    )
    assert gm1["ports"] == {"rpc": port, "p2p": 20011, "onion": 20012, "zmq": {"rawblock": 20013}}
    # RPC is the truth once it answers: the fake reports pruned=false although the conf prunes
    assert gm1["tags"] == ["signet", "garbageman", "tor-only", "ibd"]
    assert by_name["lost"]["state"] == "error"
    assert "rpc_port unknown" in by_name["lost"]["message"]
    only, _unused = run_module(dict(args, names=["gm1"]), capsys)
    assert [i["name"] for i in only["instances"]] == ["gm1"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"instances": [{"name": "../etc"}]}, "instances[0].name"),
        ({"instances": [{"name": "a", "rpc_port": 80}]}, "instances[0].rpc_port"),
        ({"instances": [{"name": "a", "datadir": "relative/dir"}]}, "instances[0].datadir"),
        ({"instances": [{"name": "a", "rpc_user": "us:er"}]}, "instances[0].rpc_user"),
        ({"instances": [{"name": "a"}, {"name": "a"}]}, "listed twice"),
        ({"instances": [{"name": "a"}], "names": ["b"]}, "names: unknown instance(s) b"),
        ({"timeout": 0}, "timeout"),
        ({"supervisor_url": "ftp://x"}, "supervisor_url"),
        ({"rpc_credentials": [{"name": "a", "user": "u"}]}, "rpc_credentials"),
        ({"rpc_credentials": [{"name": "a b", "user": "u", "password": "pw-secret"}]}, "rpc_credentials[0].name"),
        # The old dict form is gone: it had to be no_log as a whole and masked user names.
        ({"credentials": {"a": {"user": "monitor", "password": "pw-secret"}}}, "rpc_credentials"),
    ],
)
def test_invalid_input_fails_naming_the_option(args, message, capsys, tmp_path):
    args = dict({"conf_dir": str(tmp_path), "supervisor_url": ""}, **args)
    with patch_module_args(args), pytest.raises(SystemExit) as exc:
        bitcoind_info.main()
    result = json.loads(capsys.readouterr().out)
    assert exc.value.code == 1
    assert result["failed"] is True
    assert message in result["msg"]
    assert "Traceback" not in result["msg"]


def test_verificationprogress_is_a_float_when_core_prints_1():
    # Real Core answers "verificationprogress": 1 (not 1.0) on a synced chain.
    result = {}
    bitcoind_info.apply_rpc_answers(result, {"chain": "regtest", "verificationprogress": 1}, {}, [], 5)
    assert result["verificationprogress"] == 1.0
    assert isinstance(result["verificationprogress"], float)


def test_listed_reports_a_managed_instance_the_inventory_dropped_as_unlisted(
    fake_bitcoind, fake_supervisord, capsys, tmp_path
):
    from ansible_collections.nodefleet.bitcoin.plugins.module_utils.supervisord import HEADER

    port = fake_bitcoind()
    conf_dir, home = tmp_path / "conf.d", tmp_path / "home"
    (home / "old1").mkdir(parents=True)
    conf_dir.mkdir()
    (home / "old1" / "bitcoin.conf").write_text(f"# instance=old1 impl=core\nchain=signet\n[signet]\nrpcport={port}\n")
    (conf_dir / "bitcoind-old1.conf").write_text(
        f"{HEADER}\n[program:bitcoind-old1]\ncommand=/opt/bitcoind -datadir={home}/old1\n"
    )
    (conf_dir / "bitcoind-hand1.conf").write_text("[program:bitcoind-hand1]\n")  # not ours: never unlisted
    fake_supervisord["processes"] = [process("bitcoind-old1", "RUNNING", pid=4321, start=1, now=2)]
    args = {
        "instances": [spec("a", port)],
        "listed": ["a"],
        "conf_dir": str(conf_dir),
        "datadir_root": str(home),
        "torrc_dir": str(tmp_path / "torrc.d"),
        "supervisor_url": fake_supervisord["url"],
        "count_restarts": False,
    }
    result, _unused = run_module(args, capsys)
    by_name = {i["name"]: i for i in result["instances"]}
    assert sorted(by_name) == ["a", "old1"]
    assert by_name["a"]["state"] == "up"
    old = by_name["old1"]
    assert old["state"] == "unlisted" and old["supervisord"]["pid"] == 4321
    assert "not in the inventory" in old["message"] and "pid 4321" in old["message"]
    assert str(port) in old["message"]  # the fake bitcoind listens on the instance's rpcport
    assert result["summary"]["unlisted"] == 1 and result["summary"]["total"] == 2
    # Without listed, nothing is unlisted (and the dropped instance is not queried).
    del args["listed"]
    result, _unused = run_module(args, capsys)
    assert [i["name"] for i in result["instances"]] == ["a"] and result["summary"]["unlisted"] == 0
