# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""bitcoind_instance run for real through ``ansible`` against a temp dir on this machine.

Every test gets its own temp dir; files are owned by the user running the tests (root in
CI), so nothing system-wide is created. Each ansible run is bounded by a timeout.
"""

from __future__ import annotations

import base64
import grp
import json
import os
import pwd
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import rpcauth
from ansible_collections.nodefleet.bitcoin.tests.integration.ansible_cli import run_collection_module
from ansible_collections.nodefleet.bitcoin.tests.integration.local_ports import free_ports

pytestmark = pytest.mark.integration

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ANSIBLE = os.path.join(os.path.dirname(sys.executable), "ansible")
# A v3 onion address with a valid checksum: the stand-in, like Core, refuses externalip= otherwise.
ONION = "aaaqeayeaudaocajbifqydiob4ibceqtcqkrmfyydenbwha5dyp3kead.onion"
PASSWORD = "Integration-Secret-8d1f29"
OWNER = pwd.getpwuid(os.getuid()).pw_name
GROUP = grp.getgrgid(os.getgid()).gr_name
HEADER = "# Managed by nodefleet.bitcoin (bitcoind_instance); local edits are overwritten."


def run_module(args: dict, check: bool = False, diff: bool = False, verbosity: int = 0):
    """Run nodefleet.bitcoin.bitcoind_instance via the ansible CLI; return (result, raw stdout+stderr)."""
    return run_collection_module("bitcoind_instance", args, check=check, diff=diff, verbosity=verbosity)


def tree(path) -> list[str]:
    """Every path below ``path`` (relative), to prove that nothing was written."""
    found = []
    for root, dirs, files in os.walk(path):
        found += [os.path.relpath(os.path.join(root, name), path) for name in dirs + files]
    return sorted(found)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def base(tmp_path):
    return {
        "name": "it1",
        "network": "signet",
        "datadir": str(tmp_path / "it1"),
        "owner": OWNER,
        "group": GROUP,
        "rpc_port": 39432,
        "p2p_port": 39433,
        "onion_port": 39434,
        "zmq_ports": {"rawblock": 39501},
        "onion_address": ONION,
        "rpc_users": [{"user": "alice", "password": PASSWORD}],
        "dbcache": 300,
    }


def read(path) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def test_present_then_second_run_changes_nothing(base):
    first, _out = run_module(base)
    conf = os.path.join(base["datadir"], "bitcoin.conf")
    assert first["changed"] is True and first["restart_required"] is True, first
    assert first["conf_file"] == conf
    assert first["datadir"] == base["datadir"]
    assert first["network_dir"] == os.path.join(base["datadir"], "signet")
    assert first["ports"] == {"rpc": 39432, "p2p": 39433, "onion": 39434, "zmq": {"rawblock": 39501}}
    assert (mode(base["datadir"]), mode(conf)) == (0o750, 0o600)
    text = read(conf)
    assert text.startswith(HEADER + "\n# instance=it1 impl=core\nchain=signet\n")
    assert "\n[signet]\nport=39433\nrpcport=39432\n" in text
    stat_before = os.stat(conf)

    second, _out = run_module(base)
    assert second["changed"] is False and second["restart_required"] is False, second
    assert read(conf) == text
    assert os.stat(conf).st_ino == stat_before.st_ino, "an unchanged file is not rewritten"


def test_check_mode_reports_change_and_writes_nothing(base, tmp_path):
    result, _out = run_module(base, check=True, diff=True)
    assert result["changed"] is True and result["restart_required"] is True
    assert tree(tmp_path) == [], "no file and no dir in check mode"
    assert result["diff"]["after"].startswith(HEADER)

    run_module(base)
    base["dbcache"] = 600
    conf = os.path.join(base["datadir"], "bitcoin.conf")
    before = read(conf)
    result, _out = run_module(base, check=True)
    assert result["changed"] is True and result["restart_required"] is True
    assert read(conf) == before


@pytest.mark.parametrize("verbosity", [0, 3])
def test_no_secret_in_output_or_diff(base, verbosity):
    result, out = run_module(base, diff=True, verbosity=verbosity)
    assert result["changed"] is True
    assert "rpcauth=alice:" in result["diff"]["after"]
    assert PASSWORD not in out
    assert PASSWORD not in json.dumps(result)
    assert PASSWORD not in read(os.path.join(base["datadir"], "bitcoin.conf"))


def test_rpc_users_keep_the_line_and_rotate_on_password_change(base):
    run_module(base)
    conf = os.path.join(base["datadir"], "bitcoin.conf")
    (first,) = rpcauth.lines_from_conf(read(conf))
    assert rpcauth.verify(first, "alice", PASSWORD)

    again, _out = run_module(base)
    assert again["changed"] is False
    assert rpcauth.lines_from_conf(read(conf)) == [first], "same salt across runs"

    base["rpc_users"] = [{"user": "alice", "password": PASSWORD + "-rotated"}]
    rotated, _out = run_module(base)
    assert rotated["changed"] is True and rotated["restart_required"] is True
    (second,) = rpcauth.lines_from_conf(read(conf))
    assert second != first, "a new line after a password change"
    assert rpcauth.parse(second)[1] == rpcauth.parse(first)[1], "the user's one line keeps its salt"
    assert rpcauth.verify(second, "alice", PASSWORD + "-rotated")
    assert not rpcauth.verify(second, "alice", PASSWORD)


def test_rpcauth_lines_from_rpcauth_derive_are_kept(base):
    """The rpcauth_derive contract: a line derived there and passed as rpcauth is written as is."""
    line = rpcauth.generate("monitor", "m0n1t0r-pass", "0123456789abcdef0123456789abcdef")
    base["rpcauth"] = ["rpcauth=" + line]
    run_module(base)
    values = rpcauth.lines_from_conf(read(os.path.join(base["datadir"], "bitcoin.conf")))
    assert values[0] == line
    assert values[1].startswith("alice:")


def _ports(base, **ports):
    base.update(ports)
    return base


BAD_INPUTS = [
    ("name ../x", {"name": "../x"}, ["name"]),
    ("name a b", {"name": "a b"}, ["name"]),
    ("relative datadir", {"datadir": "relative"}, ["datadir"]),
    ("datadir with ..", {"datadir": "/var/../etc"}, ["datadir"]),
    ("duplicate ports", {"rpc_port": 39433, "p2p_port": 39433}, ["rpc_port", "p2p_port"]),
    ("port 80", {"p2p_port": 80}, ["p2p_port"]),
    ("port 70000", {"rpc_port": 70000}, ["rpc_port"]),
    ("prune with txindex", {"prune": 550, "txindex": True}, ["prune", "txindex"]),
    ("prune 300", {"prune": 300}, ["prune"]),
    ("user with colon", {"rpc_users": [{"user": "al:ice", "password": PASSWORD}]}, ["rpc_users[0].user"]),
    ("empty password", {"rpc_users": [{"user": "alice", "password": ""}]}, ["rpc_users[0].password"]),
    ("network mainnet", {"network": "mainnet"}, ["network"]),
    ("tor-only without onion_address", {"tor_mode": "tor-only", "onion_address": None}, ["onion_address"]),
    ("extra rpcpassword", {"extra_options": {"rpcpassword": "hunter2"}}, ["extra_options.rpcpassword"]),
    ("rpcbind public, allow loopback", {"rpc_bind": ["10.9.8.7"]}, ["rpc_allow_ip", "rpc_bind"]),
    ("missing owner", {"owner": "no-such-user-nodefleet"}, ["owner"]),
]


@pytest.mark.parametrize(("label", "change", "options"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_fails_naming_the_option_and_leaves_nothing(base, tmp_path, label, change, options):
    args = dict(base)
    args.update(change)
    args = {k: v for k, v in args.items() if v is not None}
    result, out = run_module(args)
    assert result.get("failed") is True, result
    msg = result["msg"]
    for option in options:
        assert option in msg, (label, msg)
    assert "Traceback" not in out
    assert PASSWORD not in out
    assert tree(tmp_path) == [], "nothing written on invalid input"


def test_absent_keeps_the_datadir_and_purge_removes_it(base, tmp_path):
    run_module(base)
    blocks = os.path.join(base["datadir"], "signet", "blocks")
    os.makedirs(blocks)
    absent = {"name": "it1", "datadir": base["datadir"], "state": "absent"}

    kept, _out = run_module(absent)
    assert kept["changed"] is False and kept["purged"] is False
    assert os.path.isdir(blocks)

    checked, _out = run_module(dict(absent, purge=True), check=True)
    assert checked["changed"] is True and checked["purged"] is True
    assert os.path.isdir(blocks), "check mode removes nothing"

    purged, _out = run_module(dict(absent, purge=True), diff=True)
    assert purged["changed"] is True and purged["purged"] is True
    assert purged["diff"]["before"].startswith(HEADER)
    assert not os.path.exists(base["datadir"])

    again, _out = run_module(dict(absent, purge=True))
    assert again["changed"] is False


def test_purge_refuses_a_directory_it_does_not_manage(tmp_path):
    foreign = tmp_path / "foreign"
    (foreign / "blocks").mkdir(parents=True)
    (foreign / "bitcoin.conf").write_text("server=1\n")
    result, _out = run_module({"name": "foreign", "datadir": str(foreign), "state": "absent", "purge": True})
    assert result.get("failed") is True
    assert result["msg"].startswith("purge: refusing to remove")
    assert "does not contain a bitcoin.conf written by nodefleet.bitcoin" in result["msg"]
    assert sorted(tree(foreign)) == ["bitcoin.conf", "blocks"]

    empty = tmp_path / "empty"
    empty.mkdir()
    result, _out = run_module({"name": "empty", "datadir": str(empty), "state": "absent", "purge": True})
    assert result.get("failed") is True and result["msg"].startswith("purge: ")
    assert empty.is_dir()


# --------------------------------------------------------------------------- with the stand-in daemon

STANDIN = os.path.join(REPO, "tests", "standin", "bitcoind")


def rpc_status(port: int, user: str, password: str) -> int:
    """HTTP status of a getblockchaininfo call with Basic auth (0 when nothing answers)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/",
        data=json.dumps({"jsonrpc": "1.0", "id": 1, "method": "getblockchaininfo", "params": []}).encode(),
        headers={"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - fixed http://127.0.0.1 URL
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


@pytest.mark.parametrize("network", ["main", "test", "testnet4", "signet", "regtest"])
def test_standin_accepts_the_config_and_the_rpc_users_password(tmp_path, network):
    """The stand-in applies Core's section rules and rpcauth check: the rendered file must pass both."""
    rpc, p2p, onion, zmq = free_ports(4)
    args = {
        "name": "sa1",
        "network": network,
        "datadir": str(tmp_path / "sa1"),
        "owner": OWNER,
        "group": GROUP,
        "rpc_port": rpc,
        "p2p_port": p2p,
        "onion_port": onion,
        "zmq_ports": {"hashblock": zmq},
        "onion_address": ONION,
        "rpc_users": [{"user": "alice", "password": PASSWORD}],
        "addnode": ["127.0.0.1:1025"],
    }
    result, _out = run_module(args)
    assert result["changed"] is True
    env = dict(os.environ, NODEFLEET_STANDIN_WARMUP="0", NODEFLEET_STANDIN_FLUSH_SECONDS="0")
    log = open(tmp_path / "standin.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [sys.executable, STANDIN, "-conf=" + result["conf_file"], "-datadir=" + result["datadir"]],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 20
        status = 0
        while time.monotonic() < deadline and proc.poll() is None:
            status = rpc_status(rpc, "alice", PASSWORD)
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200, (proc.poll(), (tmp_path / "standin.log").read_text())
        assert rpc_status(rpc, "alice", PASSWORD + "x") == 401
        assert os.path.isdir(result["network_dir"])
        # debug_log defaults to console (printtoconsole=1, nodebuglogfile=1): no debug.log.
        assert not os.path.exists(os.path.join(result["network_dir"], "debug.log"))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


LISTENER = (
    "import socket, sys, time\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); print('ready', flush=True); time.sleep(60)\n"
)


def _listen(port: int, *extra_argv: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", LISTENER, str(port), *extra_argv], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_a_foreign_process_on_a_planned_port_fails_before_anything_is_written(base, tmp_path):
    holder = _listen(base["p2p_port"])
    try:
        result, out = run_module(base)
    finally:
        holder.kill()
        holder.wait()
    assert result.get("failed") is True, result
    assert result["msg"].startswith("p2p_port: port %d is already in use" % base["p2p_port"]), result["msg"]
    assert "pid %d" % holder.pid in result["msg"]
    assert PASSWORD not in out
    assert tree(tmp_path) == [], "nothing written when a port is taken"


def test_the_instances_own_daemon_on_its_ports_is_not_a_conflict(base):
    # A process serving this datadir (recognised by -datadir= on its command line, as the
    # supervisord program runs bitcoind) may hold the instance's ports: it is the instance.
    own = _listen(base["rpc_port"], "-datadir=%s" % base["datadir"])
    try:
        result, _out = run_module(base)
        assert result.get("failed") is not True, result
        # check_ports: false skips the check entirely, even for a foreign holder.
        foreign = _listen(base["p2p_port"])
        try:
            result, _out = run_module(dict(base, check_ports=False))
            assert result.get("failed") is not True, result
        finally:
            foreign.kill()
            foreign.wait()
    finally:
        own.kill()
        own.wait()
