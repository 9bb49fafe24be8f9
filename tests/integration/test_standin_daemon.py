# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The stand-in bitcoind as a real process, and the signed release archives built from it.

Every daemon runs in a temp datadir on free 127.0.0.1 ports and is killed at the end of
its test whatever happens. Waits are bounded. Which Core behaviour each test pins is listed
in docs/standin.md.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from ansible_collections.nodefleet.bitcoin.tests.integration import real_core

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STANDIN = REPO / "tests" / "standin" / "bitcoind"
BUILDER = REPO / "tests" / "release" / "build_release.sh"
SALT = "0123456789abcdef0123456789abcdef"
REGTEST_ADDR = "bcrt1q0yq2azut8gn2xu3y2g0xucf8pny6w8uxmyf220"


def _ephemeral_range() -> tuple:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A free 127.0.0.1 port below the ephemeral range.

    Daemons here are restarted on the same ports; a port from the ephemeral range could
    meanwhile become the local end of some client connection on this busy machine.
    """
    low, _high = _ephemeral_range()
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, max(20001, low))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rpcauth_line(user: str, password: str) -> str:
    digest = hmac.new(SALT.encode(), password.encode(), hashlib.sha256).hexdigest()
    return f"rpcauth={user}:{SALT}${digest}"


def wait_until(predicate, timeout: float, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


class Daemon:
    """One stand-in process: config, start, RPC, stop; always cleaned up by the fixture."""

    def __init__(self, root: Path, exe: Path = STANDIN, chain: str = "regtest"):
        self.root = root
        self.exe = exe
        self.chain = chain
        self.datadir = root / "data"
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.rpc_port = free_port()
        self.p2p_port = free_port()
        self.onion_port = free_port()
        self.zmq_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.auth = ("alice", "s3cret-pw")

    @property
    def netdir(self) -> Path:
        sub = {"main": "", "test": "testnet3"}.get(self.chain, self.chain)
        return self.datadir / sub if sub else self.datadir

    def write_conf(self, extra_global: str = "", extra_section: str = "") -> Path:
        conf = self.datadir / "bitcoin.conf"
        conf.write_text(
            f"chain={self.chain}\nserver=1\nlisten=1\n{rpcauth_line(*self.auth)}\n"
            f"zmqpubrawblock=tcp://127.0.0.1:{self.zmq_port}\n{extra_global}\n"
            f"[{self.chain}]\nport={self.p2p_port}\nrpcport={self.rpc_port}\n"
            f"bind=127.0.0.1:{self.p2p_port}\nbind=127.0.0.1:{self.onion_port}=onion\n"
            f"rpcbind=127.0.0.1\nrpcallowip=127.0.0.1\n{extra_section}\n"
        )
        return conf

    def start(self, warmup: float = 0.2, flush: float = 0.1, args: list | None = None) -> subprocess.Popen:
        env = dict(os.environ, NODEFLEET_STANDIN_WARMUP=str(warmup), NODEFLEET_STANDIN_FLUSH_SECONDS=str(flush))
        argv = [str(self.exe), f"-conf={self.datadir / 'bitcoin.conf'}", f"-datadir={self.datadir}"]
        self.proc = subprocess.Popen(
            argv + (args or []),
            env=env,
            stdout=open(self.root / "stdout.txt", "ab"),  # noqa: SIM115 - closed with the process
            stderr=subprocess.PIPE,
        )
        return self.proc

    def rpc(self, method: str, params=None, auth=None, body: bytes | None = None, timeout: float = 5.0):
        """(HTTP status, parsed JSON or None, headers) for one JSON-RPC 1.0 call."""
        user, password = auth or self.auth
        data = body if body is not None else json.dumps({"method": method, "params": params or [], "id": 1}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.rpc_port}/", data=data, method="POST")
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - http to 127.0.0.1
                return resp.status, json.loads(resp.read() or b"null"), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, (json.loads(raw) if raw else None), dict(exc.headers)

    def result(self, method: str, params=None):
        status, reply, _ = self.rpc(method, params)
        assert status == 200, (status, reply)
        return reply["result"]

    def wait_ready(self, timeout: float = 15.0) -> None:
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("daemon exited early: %s" % self.proc.stderr.read().decode())
            try:
                return self.rpc("getblockcount", timeout=1.0)[0] == 200
            except OSError:
                return False

        assert wait_until(ready, timeout), "stand-in did not become ready"

    def wait_exit(self, timeout: float = 15.0) -> int:
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def debug_log(self) -> str:
        path = self.netdir / "debug.log"
        return path.read_text(encoding="utf-8") if path.exists() else ""


@pytest.fixture
def make_daemon(tmp_path):
    daemons: list[Daemon] = []

    def factory(name: str = "n", **kw) -> Daemon:
        d = Daemon(tmp_path / name, **kw)
        daemons.append(d)
        return d

    yield factory
    for d in daemons:
        d.kill()


def run_once(argv: list, timeout: float = 20.0, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, NODEFLEET_STANDIN_WARMUP="0.1", NODEFLEET_STANDIN_FLUSH_SECONDS="0")
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False, **kw)


# -- command line and config --------------------------------------------------------------


@pytest.mark.parametrize("arg", ["-foo", "-standinwarmup=1", "-regtest.port=1"])
def test_unknown_command_line_option_fails_like_core(tmp_path, arg):
    proc = run_once([str(STANDIN), f"-datadir={tmp_path}", arg])
    assert proc.returncode == 1
    assert proc.stderr == f"Error: Error parsing command line arguments: Invalid parameter {arg}\n"
    assert not (tmp_path / "debug.log").exists()


def test_version_output_names_the_implementation():
    proc = run_once([str(STANDIN), "-version"])
    assert proc.returncode == 0
    assert proc.stdout.splitlines()[0] == "Bitcoin Core daemon version v30.0.0"


@pytest.mark.parametrize("chain", ["test", "testnet4", "signet", "regtest"])
def test_network_only_option_in_global_part_fails_at_start(tmp_path, chain):
    (tmp_path / "bitcoin.conf").write_text(f"chain={chain}\nrpcport={free_port()}\n")
    proc = run_once([str(STANDIN), f"-conf={tmp_path / 'bitcoin.conf'}", f"-datadir={tmp_path}"])
    assert proc.returncode == 1
    assert (
        f"Error: Config setting for -rpcport only applied on {chain} network when in [{chain}] section.\n"
        in proc.stderr
    )


def test_missing_datadir_fails_like_core(tmp_path):
    missing = tmp_path / "nope"
    proc = run_once([str(STANDIN), f"-datadir={missing}"])
    assert proc.returncode == 1
    assert proc.stderr == f'Error: Specified data directory "{missing}" does not exist.\n'


def test_unknown_config_option_is_ignored_with_a_debug_log_line(make_daemon):
    d = make_daemon()
    d.write_conf(extra_global="frobnicate=1")
    d.start()
    d.wait_ready()
    log = d.debug_log()
    assert "Ignoring unknown configuration value frobnicate" in log
    assert "Config file arg: rpcauth=****" in log
    assert "s3cret-pw" not in log and SALT not in log


# -- RPC server, auth, warm-up ------------------------------------------------------------


def test_warmup_returns_minus_28_then_answers(make_daemon):
    d = make_daemon()
    d.write_conf()
    d.start(warmup=2.0)
    status = wait_until(lambda: _status_or_none(d), 10)
    status, reply, _ = d.rpc("getblockchaininfo")
    assert status == 500
    assert reply["error"] == {"code": -28, "message": "Loading block index…"}
    assert reply["result"] is None
    d.wait_ready()
    assert d.rpc("getblockchaininfo")[0] == 200


def _status_or_none(d: Daemon):
    try:
        return d.rpc("uptime", timeout=1.0)[0]
    except OSError:
        return None


def test_rpcauth_and_cookie_auth(make_daemon):
    d = make_daemon()
    d.write_conf()
    d.start()
    d.wait_ready()
    assert d.rpc("getblockcount")[0] == 200

    t0 = time.monotonic()
    status, reply, headers = d.rpc("getblockcount", auth=("alice", "wrong"))
    assert status == 401 and reply is None
    assert headers["WWW-Authenticate"] == 'Basic realm="jsonrpc"'
    assert time.monotonic() - t0 >= 0.25  # Core's brute-force deterrent
    assert d.rpc("getblockcount", auth=("mallory", "s3cret-pw"))[0] == 401

    req = urllib.request.Request(f"http://127.0.0.1:{d.rpc_port}/", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=5)  # noqa: S310 - http to 127.0.0.1
    assert exc.value.code == 401

    cookie_path = d.netdir / ".cookie"
    cookie = cookie_path.read_text()
    assert cookie.startswith("__cookie__:") and len(cookie) == len("__cookie__:") + 64
    assert stat.S_IMODE(cookie_path.stat().st_mode) == 0o600
    assert d.rpc("getblockcount", auth=tuple(cookie.split(":", 1)))[0] == 200
    assert "s3cret-pw" not in d.debug_log()

    assert d.result("stop") == "Bitcoin Core stopping"
    assert d.wait_exit() == 0
    assert not cookie_path.exists()


def test_rpcbind_without_rpcallowip_binds_loopback_and_warns(make_daemon):
    d = make_daemon()
    conf = d.write_conf()
    conf.write_text(conf.read_text().replace("rpcallowip=127.0.0.1\n", ""))
    d.start()
    d.wait_ready()
    assert (
        "WARNING: option -rpcbind was ignored because -rpcallowip was not specified, refusing to allow everyone "
        "to connect" in d.debug_log()
    )


def test_json_rpc_errors_and_v2(make_daemon):
    d = make_daemon()
    d.write_conf()
    d.start()
    d.wait_ready()
    status, reply, _ = d.rpc("nosuchmethod")
    assert status == 404
    assert reply == {"result": None, "error": {"code": -32601, "message": "Method not found"}, "id": 1}
    body = json.dumps({"jsonrpc": "2.0", "method": "nosuchmethod", "id": 7}).encode()
    status, reply, _ = d.rpc("", body=body)
    assert status == 200
    assert reply == {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": 7}
    status, reply, _ = d.rpc("", body=b"{not json")
    assert status == 500 and reply["error"]["code"] == -32700


# -- RPC field names and types (rpc/blockchain.cpp, rpc/net.cpp) --------------------------

BLOCKCHAININFO_KEYS = {
    "chain",
    "blocks",
    "headers",
    "bestblockhash",
    "bits",
    "target",
    "difficulty",
    "time",
    "mediantime",
    "verificationprogress",
    "initialblockdownload",
    "chainwork",
    "size_on_disk",
    "pruned",
    "warnings",
}
NETWORKINFO_KEYS = {
    "version",
    "subversion",
    "protocolversion",
    "localservices",
    "localservicesnames",
    "localrelay",
    "timeoffset",
    "networkactive",
    "connections",
    "connections_in",
    "connections_out",
    "networks",
    "relayfee",
    "incrementalfee",
    "localaddresses",
    "warnings",
}
NETWORK_KEYS = {"name", "limited", "reachable", "proxy", "proxy_randomize_credentials"}
PEERINFO_KEYS = {
    "id",
    "addr",
    "network",
    "services",
    "servicesnames",
    "relaytxes",
    "last_inv_sequence",
    "inv_to_send",
    "lastsend",
    "lastrecv",
    "last_transaction",
    "last_block",
    "bytessent",
    "bytesrecv",
    "conntime",
    "timeoffset",
    "pingtime",
    "minping",
    "version",
    "subver",
    "inbound",
    "bip152_hb_to",
    "bip152_hb_from",
    "presynced_headers",
    "synced_headers",
    "synced_blocks",
    "inflight",
    "addr_relay_enabled",
    "addr_processed",
    "addr_rate_limited",
    "permissions",
    "minfeefilter",
    "bytessent_per_msg",
    "bytesrecv_per_msg",
    "connection_type",
    "transport_protocol_type",
    "session_id",
}

PEERS = [
    {"addr": "203.0.113.5:8333", "subver": "/Satoshi:30.0.0/", "services": "0000000000000c09"},
    {"addr": "198.51.100.7:8333", "subver": "/Satoshi:29.1.0/Knots:20250903/", "services": 1033, "inbound": True},
    {"addr": "a" * 56 + ".onion:8333", "subver": "/Satoshi:29.1.0/Knots:20250903/", "services": 0x20000C09},
]


def onion_v3(seed: str) -> str:
    """A valid Tor v3 address (checksum and version byte right), as Core requires for -externalip."""
    pubkey = hashlib.sha256(seed.encode()).digest()
    checksum = hashlib.sha3_256(b".onion checksum" + pubkey + b"\x03").digest()[:2]
    return base64.b32encode(pubkey + checksum + b"\x03").decode().lower() + ".onion"


ONION_B = onion_v3("b")


@pytest.mark.parametrize(
    "address",
    ["b" * 56 + ".onion", onion_v3("b")[:-7] + "a.onion", "aaaa.onion", "b" * 16 + ".onion"],
)
def test_invalid_onion_externalip_fails_like_core(make_daemon, address):
    """Core refuses an -externalip onion name that is not a valid v3 address (checksum, version)."""
    d = make_daemon()
    d.write_conf(extra_global=f"externalip={address}")
    d.start()
    assert d.wait_exit() == 1
    assert d.proc.stderr.read().decode() == f"Error: Cannot resolve -externalip address: '{address}'\n"


def test_rpc_field_names_and_types_match_core(make_daemon):
    d = make_daemon()
    d.write_conf(extra_global="proxy=127.0.0.1:9050\nonion=127.0.0.1:9050\nlistenonion=0\nexternalip=" + ONION_B)
    d.netdir.mkdir(parents=True, exist_ok=True)
    (d.netdir / "standin-peers.json").write_text(json.dumps(PEERS))
    d.start()
    d.wait_ready()

    info = d.result("getblockchaininfo")
    assert set(info) == BLOCKCHAININFO_KEYS
    assert info["chain"] == "regtest" and info["blocks"] == 0 and info["headers"] == 0
    assert info["bestblockhash"] == "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
    assert isinstance(info["difficulty"], float)
    assert info["verificationprogress"] == 1 and isinstance(info["verificationprogress"], int)  # Core writes 1.0 as 1
    assert isinstance(info["time"], int) and isinstance(info["mediantime"], int)
    assert isinstance(info["size_on_disk"], int) and info["size_on_disk"] > 0
    assert info["pruned"] is False and info["warnings"] == []
    assert len(info["chainwork"]) == 64

    net = d.result("getnetworkinfo")
    assert set(net) == NETWORKINFO_KEYS
    assert net["version"] == 300000 and net["subversion"] == "/Satoshi:30.0.0/"
    assert net["protocolversion"] == 70016
    assert int(net["localservices"], 16) & 0x809 == 0x809 and len(net["localservices"]) == 16
    assert net["localservicesnames"] == ["NETWORK", "WITNESS", "NETWORK_LIMITED", "P2P_V2"]
    assert (net["connections"], net["connections_in"], net["connections_out"]) == (3, 1, 2)
    assert [n["name"] for n in net["networks"]] == ["ipv4", "ipv6", "onion", "i2p", "cjdns"]
    assert all(set(n) == NETWORK_KEYS for n in net["networks"])
    onion = next(n for n in net["networks"] if n["name"] == "onion")
    assert onion == {
        "name": "onion",
        "limited": False,
        "reachable": True,
        "proxy": "127.0.0.1:9050",
        "proxy_randomize_credentials": True,
    }
    assert net["localaddresses"] == [{"address": ONION_B, "port": d.p2p_port, "score": 4}]
    assert isinstance(net["relayfee"], float) and isinstance(net["incrementalfee"], float)

    peers = d.result("getpeerinfo")
    assert [set(p) for p in peers] == [PEERINFO_KEYS] * 3
    assert [p["subver"] for p in peers] == [p["subver"] for p in PEERS]
    assert peers[2]["services"] == "0000000020000c09"
    assert "UNKNOWN[2^29]" in peers[2]["servicesnames"]
    assert peers[2]["network"] == "onion" and peers[1]["inbound"] is True
    assert peers[1]["connection_type"] == "inbound"

    assert isinstance(d.result("uptime"), int)
    assert d.result("getblockcount") == 0
    assert d.result("getbestblockhash") == info["bestblockhash"]
    assert d.result("getconnectioncount") == 3
    assert "getblockchaininfo" in d.result("help")


def test_scripted_peers_are_reread_live(make_daemon):
    d = make_daemon()
    d.write_conf()
    d.start()
    d.wait_ready()
    assert d.result("getpeerinfo") == []
    (d.netdir / "standin-peers.json").write_text(json.dumps(PEERS[:1]))
    assert [p["addr"] for p in d.result("getpeerinfo")] == ["203.0.113.5:8333"]
    (d.netdir / "standin-peers.json").write_text("{broken")
    assert [p["addr"] for p in d.result("getpeerinfo")] == ["203.0.113.5:8333"]  # keeps the last good list


# -- datadir lock, signals, persistence ---------------------------------------------------


def test_second_daemon_on_same_datadir_fails_and_stale_lock_does_not_block(make_daemon):
    d = make_daemon()
    d.write_conf()
    d.start()
    d.wait_ready()
    pid_before = (d.netdir / "bitcoind.pid").read_text()

    second = run_once([str(STANDIN), f"-conf={d.datadir / 'bitcoin.conf'}", f"-datadir={d.datadir}"])
    assert second.returncode == 1
    assert (
        f"Error: Cannot obtain a lock on directory {d.netdir}. Bitcoin Core is probably already running.\n"
        in second.stderr
    )
    assert (d.netdir / "bitcoind.pid").read_text() == pid_before  # the loser did not touch it
    assert d.rpc("getblockcount")[0] == 200

    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(timeout=10)
    assert (d.netdir / ".lock").exists() and (d.netdir / "bitcoind.pid").exists()
    d.start()
    d.wait_ready()
    assert (d.netdir / "bitcoind.pid").read_text().strip() == str(d.proc.pid)


def test_sigterm_exits_0_after_flush_delay_and_persists(make_daemon):
    d = make_daemon()
    d.write_conf()
    d.start(flush=1.0)
    d.wait_ready()
    hashes = d.result("generatetoaddress", [4, REGTEST_ADDR])
    assert len(hashes) == 4 and d.result("getbestblockhash") == hashes[-1]
    t0 = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    assert d.wait_exit() == 0
    elapsed = time.monotonic() - t0
    assert 1.0 <= elapsed < 10
    log = d.debug_log()
    assert log.index("Shutdown: In progress...") < log.index("Shutdown: done")
    assert not (d.netdir / "bitcoind.pid").exists() and not (d.netdir / ".cookie").exists()

    d.start()
    d.wait_ready()
    assert d.result("getblockcount") == 4
    assert d.result("getbestblockhash") == hashes[-1]
    assert d.result("getblockchaininfo")["initialblockdownload"] is False


def test_sigterm_after_the_console_reader_died_still_exits_0(make_daemon):
    """supervisord SIGKILLed: bitcoind's stdout pipe has no reader left, then systemd sends
    SIGTERM. Core ignores console write errors and shuts down; so must the stand-in (the
    chaos matrix's supervisord-sigkill cell waited out TimeoutStopSec before this)."""
    d = make_daemon()
    d.write_conf()
    env = dict(os.environ, NODEFLEET_STANDIN_WARMUP="0.2", NODEFLEET_STANDIN_FLUSH_SECONDS="0.1")
    argv = [str(d.exe), f"-conf={d.datadir / 'bitcoin.conf'}", f"-datadir={d.datadir}", "-printtoconsole"]
    d.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    d.wait_ready()
    d.proc.stdout.close()  # the reader (supervisord) is gone
    d.proc.send_signal(signal.SIGTERM)
    assert d.wait_exit() == 0
    assert "Shutdown: done" in d.debug_log()


def test_generatetoaddress_survives_sigkill(make_daemon):
    d = make_daemon()
    d.write_conf()
    d.start()
    d.wait_ready()
    size0 = d.result("getblockchaininfo")["size_on_disk"]
    d.result("generatetoaddress", [3, REGTEST_ADDR])
    d.result("generatetoaddress", [2, REGTEST_ADDR])
    assert d.result("getblockchaininfo")["size_on_disk"] > size0
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(timeout=10)
    d.start()
    d.wait_ready()
    assert d.result("getblockcount") == 5
    status, reply, _ = d.rpc("generatetoaddress", [1, "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2"])
    assert status == 500 and reply["error"] == {"code": -5, "message": "Error: Invalid address"}


def test_generatetoaddress_is_regtest_only(make_daemon):
    d = make_daemon(chain="signet")
    d.write_conf()
    d.start()
    d.wait_ready()
    status, reply, _ = d.rpc("generatetoaddress", [1, REGTEST_ADDR])
    assert status == 404 and reply["error"]["code"] == -32601
    assert d.result("getblockchaininfo")["chain"] == "signet"


# -- listeners -----------------------------------------------------------------------------


def test_p2p_onion_and_zmq_ports_accept_connections(make_daemon):
    d = make_daemon()
    d.write_conf()
    d.start()
    d.wait_ready()
    for port in (d.p2p_port, d.onion_port, d.zmq_port):
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    log = d.debug_log()
    assert f"Bound to 127.0.0.1:{d.p2p_port}" in log and f"Bound to 127.0.0.1:{d.onion_port}" in log
    assert "init message: Done loading" in log


def test_taken_p2p_port_fails_with_cores_bind_error(make_daemon):
    d = make_daemon()
    d.write_conf()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", d.p2p_port))
        blocker.listen(1)
        d.start(warmup=0.1)
        rc = d.wait_exit()
        err = d.proc.stderr.read().decode()
    assert rc == 1
    assert (
        f"Error: Unable to bind to 127.0.0.1:{d.p2p_port} on this computer. Bitcoin Core is probably already "
        "running.\n" in err
    )
    assert "Error: Failed to listen on any port. Use -listen=0 if you want this." in err
    assert not (d.netdir / "bitcoind.pid").exists()


# -- release archives ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("release") / "out"
    proc = subprocess.run(["bash", str(BUILDER), str(out)], capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr
    return out


def _gpg_verify(gnupg: Path, directory: Path) -> list:
    proc = subprocess.run(
        ["gpg", "--homedir", str(gnupg), "--batch", "--status-fd", "1", "--verify", "SHA256SUMS.asc", "SHA256SUMS"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.stdout.splitlines()


@pytest.fixture(scope="module")
def keyring(release_dir, tmp_path_factory):
    gnupg = tmp_path_factory.mktemp("gnupg")
    gnupg.chmod(0o700)
    for key in sorted((release_dir / "signers").glob("*.asc")):
        subprocess.run(
            ["gpg", "--homedir", str(gnupg), "--batch", "--import", str(key)], capture_output=True, check=True
        )
    yield gnupg
    subprocess.run(["gpgconf", "--homedir", str(gnupg), "--kill", "all"], capture_output=True, check=False)


def test_release_layout_checksums_and_three_signatures(release_dir, keyring):
    releases = json.loads((release_dir / "releases.json").read_text())["releases"]
    signers = json.loads((release_dir / "signers.json").read_text())["signers"]
    names = {r["impl"]: r["archive"] for r in releases}
    core_archive, _ = real_core.find_archive()
    assert names == {
        "core": core_archive.name if core_archive else "bitcoin-30.0-x86_64-linux-gnu.tar.gz",
        "knots": "bitcoin-29.1.knots20250903-x86_64-linux-gnu.tar.gz",
        "garbageman": "bitcoin-29.1.knots20250903-garbageman1-x86_64-linux-gnu.tar.gz",
    }
    daemons = {r["impl"]: (r["daemon"], r["version"]) for r in releases}
    core_version = real_core.version_of(core_archive) if core_archive else None
    assert daemons == {
        "core": (f"bitcoin-core-{core_version}", core_version) if core_archive else ("stand-in", "30.0"),
        "knots": ("stand-in", "29.1.knots20250903"),
        "garbageman": ("stand-in", "29.1.knots20250903-garbageman1"),
    }
    expected_fprs = {s["fingerprint"] for s in signers}
    assert len(expected_fprs) == 3
    for rel in releases:
        directory = release_dir / rel["dir"]
        archive = directory / rel["archive"]
        sums = dict(reversed(line.split("  ", 1)) for line in (directory / "SHA256SUMS").read_text().splitlines())
        assert sums[rel["archive"]] == hashlib.sha256(archive.read_bytes()).hexdigest() == rel["sha256"]
        with tarfile.open(archive) as tar:
            member = tar.getmember(f"{rel['topdir']}/bin/bitcoind")
            assert member.uid == 0 and member.gid == 0 and member.mode & 0o755 == 0o755
        if rel["daemon"] != "stand-in":  # the real archive, byte for byte
            assert rel["sha256"] == hashlib.sha256(core_archive.read_bytes()).hexdigest()
        status = _gpg_verify(keyring, directory)
        valid = {line.split()[2] for line in status if line.startswith("[GNUPG:] VALIDSIG")}
        assert valid == expected_fprs


def test_release_is_cached_and_deterministic(release_dir, tmp_path):
    before = (release_dir / "core" / "SHA256SUMS.asc").read_bytes()
    proc = subprocess.run(["bash", str(BUILDER), str(release_dir)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "up to date" in proc.stdout
    assert (release_dir / "core" / "SHA256SUMS.asc").read_bytes() == before  # keys not regenerated
    other = tmp_path / "again"
    subprocess.run(["bash", str(BUILDER), str(other)], capture_output=True, timeout=180, check=True)
    for impl in ("core", "knots", "garbageman"):
        assert (other / impl / "SHA256SUMS").read_text() == (release_dir / impl / "SHA256SUMS").read_text()


def test_bad_release_fixtures_fail_as_expected(release_dir, keyring):
    signers = {s["fingerprint"] for s in json.loads((release_dir / "signers.json").read_text())["signers"]}
    bad = release_dir / "bad"
    archive = "bitcoin-30.0-x86_64-linux-gnu.tar.gz"

    wrong = bad / "wrong-checksum"
    sums = dict(reversed(line.split("  ", 1)) for line in (wrong / "SHA256SUMS").read_text().splitlines())
    assert sums[archive] != hashlib.sha256((wrong / archive).read_bytes()).hexdigest()
    check = subprocess.run(["sha256sum", "--ignore-missing", "-c", "SHA256SUMS"], cwd=wrong, capture_output=True)
    assert check.returncode != 0
    assert {ln.split()[2] for ln in _gpg_verify(keyring, wrong) if ln.startswith("[GNUPG:] VALIDSIG")} == signers

    one = [ln for ln in _gpg_verify(keyring, bad / "one-signer") if ln.startswith("[GNUPG:] VALIDSIG")]
    assert len(one) == 1

    unknown = _gpg_verify(keyring, bad / "unknown-key")
    assert not any(ln.startswith("[GNUPG:] VALIDSIG") for ln in unknown)
    assert any(ln.startswith(("[GNUPG:] NO_PUBKEY", "[GNUPG:] ERRSIG")) for ln in unknown)

    tampered = _gpg_verify(keyring, bad / "tampered-sums")
    assert not any(ln.startswith("[GNUPG:] VALIDSIG") for ln in tampered)
    assert any(ln.startswith("[GNUPG:] BADSIG") for ln in tampered)  # gpg stops at the first bad one


@pytest.mark.parametrize(
    ("impl", "subversion", "libre_relay"),
    [
        ("core", "/Satoshi:30.0.0/", False),
        ("knots", "/Satoshi:29.1.0/Knots:20250903/", False),
        ("garbageman", "/Satoshi:29.1.0/Knots:20250903/Garbageman:1/", True),
    ],
)
def test_packaged_daemon_identity(release_dir, make_daemon, tmp_path, impl, subversion, libre_relay):
    rel = next(r for r in json.loads((release_dir / "releases.json").read_text())["releases"] if r["impl"] == impl)
    dest = tmp_path / "install"
    with tarfile.open(release_dir / rel["dir"] / rel["archive"]) as tar:
        tar.extractall(dest)  # noqa: S202 - our own archive, checked above
    exe = dest / rel["topdir"] / "bin" / "bitcoind"
    version = run_once([str(exe), "-version"]).stdout.splitlines()[0]
    if rel["daemon"] != "stand-in":
        # the real Bitcoin Core: its own version string and user agent
        assert rel["daemon"] == f"bitcoin-core-{rel['version']}"
        assert version.startswith(f"Bitcoin Core daemon version v{rel['version']}")
        subversion = f"/Satoshi:{rel['version']}/"
        assert (dest / rel["topdir"] / "lib").is_dir()  # RUNPATH $ORIGIN/../lib
    else:
        assert version.endswith("daemon version v" + ("30.0.0" if impl == "core" else rel["version"]))
    d = make_daemon(impl, exe=exe)
    d.write_conf()
    d.start()
    d.wait_ready()
    net = d.result("getnetworkinfo")
    assert net["subversion"] == subversion
    assert bool(int(net["localservices"], 16) & (1 << 29)) is libre_relay
    assert ("UNKNOWN[2^29]" in net["localservicesnames"]) is libre_relay
    assert d.result("stop").endswith(" stopping")
    assert d.wait_exit() == 0
    shutil.rmtree(dest)


def test_release_falls_back_to_the_stand_in_without_the_real_core_archive(tmp_path):
    """A machine without ../shared/bitcoin-core still gets a core release: the stand-in, and says so."""
    out = tmp_path / "out"
    env = dict(os.environ, NODEFLEET_CORE_ARCHIVE_DIR="/nonexistent")
    proc = subprocess.run(
        ["bash", str(BUILDER), str(out)], capture_output=True, text=True, timeout=180, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "core = the STAND-IN daemon (no bitcoin-*-x86_64-linux-gnu.tar.gz in /nonexistent" in proc.stdout
    data = json.loads((out / "releases.json").read_text())
    assert data["core_source"] == "stand-in"
    core = next(r for r in data["releases"] if r["impl"] == "core")
    assert (core["daemon"], core["version"], core["archive"]) == (
        "stand-in",
        "30.0",
        "bitcoin-30.0-x86_64-linux-gnu.tar.gz",
    )
    assert {r["daemon"] for r in data["releases"]} == {"stand-in"}


def test_release_refuses_a_real_core_archive_its_sha256sums_does_not_list(tmp_path):
    """A present but unverifiable archive fails the build (no silent fallback to the stand-in)."""
    archive, _ = real_core.find_archive()
    fake = tmp_path / "core"
    fake.mkdir()
    name = archive.name if archive else "bitcoin-28.99.0-x86_64-linux-gnu.tar.gz"
    (fake / name).write_bytes(b"not the archive")
    (fake / "SHA256SUMS").write_text("%s  %s\n" % ("0" * 64, name))
    out = tmp_path / "out"
    env = dict(os.environ, NODEFLEET_CORE_ARCHIVE_DIR=str(fake))
    proc = subprocess.run(
        ["bash", str(BUILDER), str(out)], capture_output=True, text=True, timeout=180, env=env, check=False
    )
    assert proc.returncode == 1
    assert f"SHA256SUMS lists '{'0' * 64}' for it; refusing to package it" in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("log_lines", "debug_log", "console"),
    [
        ("printtoconsole=1\nnodebuglogfile=1\n", False, True),  # bitcoind_instance debug_log=console
        ("printtoconsole=0\nshrinkdebugfile=1\n", True, False),  # debug_log=file
    ],
)
def test_rendered_logging_peering_and_tor_options_are_accepted(make_daemon, log_lines, debug_log, console):
    """The options bitcoind_instance renders (checked against real Core in test_standin_vs_core.py):
    nodebuglogfile writes no debug.log and logs to stdout only; addnode= in the network section,
    onion= and discover= are accepted (the stand-in makes no P2P connection)."""
    d = make_daemon()
    d.write_conf(
        extra_global=log_lines + "onion=127.0.0.1:9\ndiscover=1\n",
        extra_section=f"addnode=127.0.0.1:{free_port()}\naddnode=" + "c" * 56 + ".onion:18444\n",
    )
    d.start()
    d.wait_ready()
    assert d.result("getblockchaininfo")["chain"] == "regtest"
    assert d.result("getpeerinfo") == []
    d.proc.send_signal(signal.SIGTERM)
    assert d.wait_exit() == 0
    assert (d.netdir / "debug.log").exists() is debug_log
    stdout = (d.root / "stdout.txt").read_text()
    assert ("Shutdown: done" in stdout) is console
    assert d.proc.stderr.read() == b""


def test_release_takes_the_real_core_archive_from_the_override_dir(tmp_path):
    """NODEFLEET_CORE_ARCHIVE_DIR points the build at another copy of the real archive."""
    archive, reason = real_core.find_archive()
    if archive is None:
        real_core.skip_or_fail(reason)
    copy = tmp_path / "core"
    copy.mkdir()
    shutil.copy(archive, copy / archive.name)
    shutil.copy(archive.parent / "SHA256SUMS", copy / "SHA256SUMS")
    out = tmp_path / "out"
    env = dict(os.environ, NODEFLEET_CORE_ARCHIVE_DIR=str(copy))
    proc = subprocess.run(
        ["bash", str(BUILDER), str(out)], capture_output=True, text=True, timeout=180, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    version = real_core.version_of(archive)
    assert f"core = real Bitcoin Core {version} ({copy / archive.name}, sha256 verified" in proc.stdout
    data = json.loads((out / "releases.json").read_text())
    assert data["core_source"] == str(copy / archive.name)
    core = next(r for r in data["releases"] if r["impl"] == "core")
    expected = (f"bitcoin-core-{version}", version, f"bitcoin-{version}")
    assert (core["daemon"], core["version"], core["topdir"]) == expected
    assert (out / "core" / archive.name).read_bytes() == archive.read_bytes()
    # the bad/ fixtures stay the stand-in's, whatever core/ holds
    assert sorted(p.name for p in (out / "bad" / "one-signer").iterdir()) == [
        "SHA256SUMS",
        "SHA256SUMS.asc",
        "bitcoin-30.0-x86_64-linux-gnu.tar.gz",
    ]
