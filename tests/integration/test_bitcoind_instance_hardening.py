# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""bitcoind_instance hardening, judged by real Bitcoin Core and the ansible CLI.

Real Core (``tests/integration/real_core.py``: skipped only when the archive is absent and
``CI`` is unset) starts on regtest with the bitcoin.conf the module renders, for each
tor_mode, with addnode and both debug_log modes; its getnetworkinfo shows what "both" means;
a hand-written file shows Core's first-value rule that ``bitcoin_conf.settings`` follows.
Refused input (a symlinked datadir) is checked through the ansible CLI: message naming
``datadir``, no "An exception occurred", nothing written through the link.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import stat

import pytest
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import bitcoin_conf
from ansible_collections.nodefleet.bitcoin.tests.integration.ansible_cli import run_collection_module
from ansible_collections.nodefleet.bitcoin.tests.integration.local_ports import free_ports
from ansible_collections.nodefleet.bitcoin.tests.integration.real_core import (  # noqa: F401 - fixtures
    make_node,
    real_core,
)

pytestmark = pytest.mark.integration

# A v3 onion address with a valid checksum (Core refuses externalip= with a bad one):
# base32(pubkey 00..1f || sha3_256(".onion checksum" || pubkey || 03)[:2] || 03).
ONION = "aaaqeayeaudaocajbifqydiob4ibceqtcqkrmfyydenbwha5dyp3kead.onion"
PASSWORD = "Hardening-Secret-5e1c0a"
OWNER = pwd.getpwuid(os.getuid()).pw_name
GROUP = grp.getgrgid(os.getgid()).gr_name
EXCEPTION_BANNER = "An exception occurred during task execution"


@pytest.fixture(autouse=True)
def _tracebacks_on(monkeypatch):
    """Error tracebacks on, so a fail_json called while an exception is handled shows it."""
    monkeypatch.setenv("ANSIBLE_DISPLAY_TRACEBACK", "error")


def assert_no_internal_exception(result: dict) -> None:
    """A refused input is a plain failure: no exception of the module's own in its traceback.

    fail_json called inside an ``except`` block attaches the handled exception (here
    ValidationError, or an unhandled ValueError for a NUL in a user name) to the result,
    which ansible-core shows as an exception that occurred during the task.
    """
    shown = str(result.get("exception", ""))
    for name in ("ValidationError", "ValueError", "UnsafePath", "OSError"):
        assert name not in shown, shown[-2000:]


def module_args(tmp_path, tor_mode: str, **extra) -> dict:
    rpc, p2p, onion = free_ports(3)
    args = {
        "name": "hd1",
        "network": "regtest",
        "datadir": str(tmp_path / "hd1"),
        "owner": OWNER,
        "group": GROUP,
        "rpc_port": rpc,
        "p2p_port": p2p,
        "onion_port": onion,
        "tor_mode": tor_mode,
        "onion_address": ONION,
        "rpc_users": [{"user": "alice", "password": PASSWORD}],
    }
    args.update(extra)
    return args


def converge(args: dict) -> dict:
    result, out = run_collection_module("bitcoind_instance", args)
    assert result.get("failed") is not True, result
    assert PASSWORD not in out
    return result


def networks(info: dict) -> dict:
    return {net["name"]: net for net in info["networks"]}


@pytest.mark.parametrize("tor_mode", ["tor-only", "both", "clearnet"])
def test_real_core_starts_with_the_rendered_conf_in_each_tor_mode(real_core, make_node, tmp_path, tor_mode):  # noqa: F811
    (unused,) = free_ports(1)
    addnode = f"127.0.0.1:{unused}"
    args = module_args(tmp_path, tor_mode, addnode=[addnode])
    result = converge(args)
    node = make_node(real_core.bitcoind, result["datadir"], args["rpc_port"], auth=("alice", PASSWORD))
    node.start()
    node.wait_rpc()
    info = node.result("getnetworkinfo")
    nets = networks(info)
    local = [entry["address"] for entry in info["localaddresses"]]
    log = node.output()
    # addnode= inside [regtest] is applied (outside the section Core would refuse to start).
    assert [entry["addednode"] for entry in node.result("getaddednodeinfo")] == [addnode]
    if tor_mode == "tor-only":
        assert nets["ipv4"]["reachable"] is False and nets["ipv6"]["reachable"] is False
        assert nets["onion"]["reachable"] is True and nets["onion"]["proxy"] == "127.0.0.1:9050"
        assert nets["ipv4"]["proxy"] == "127.0.0.1:9050"
        assert local == [ONION]
    elif tor_mode == "both":
        # Clearnet direct (no proxy), .onion through Tor, the onion advertised, and discovery
        # still on: Core did not switch -discover off because of -externalip or -proxy.
        assert nets["ipv4"]["reachable"] is True and nets["ipv4"]["proxy"] == ""
        assert nets["ipv6"]["proxy"] == ""
        assert nets["onion"]["reachable"] is True and nets["onion"]["proxy"] == "127.0.0.1:9050"
        assert local == [ONION]
        assert "-externalip set -> setting -discover=0" not in log
        assert "-proxy set -> setting -discover=0" not in log
    else:
        assert nets["ipv4"]["reachable"] is True and nets["ipv4"]["proxy"] == ""
        assert nets["onion"]["reachable"] is False
        assert local == []
    assert node.stop() == 0


@pytest.mark.parametrize("debug_log", ["console", "file"])
def test_real_core_logs_where_debug_log_says(real_core, make_node, tmp_path, debug_log):  # noqa: F811
    args = module_args(tmp_path, "clearnet", debug_log=debug_log)
    result = converge(args)
    node = make_node(real_core.bitcoind, result["datadir"], args["rpc_port"], auth=("alice", PASSWORD))
    node.start()
    node.wait_rpc()
    assert node.stop() == 0
    debug_file = os.path.join(result["network_dir"], "debug.log")
    if debug_log == "console":
        assert not os.path.exists(debug_file), "nodebuglogfile=1: Core writes no debug.log"
        assert "Bitcoin Core version" in node.output() and "Shutdown: done" in node.output()
    else:
        with open(debug_file, encoding="utf-8") as handle:
            assert "Shutdown: done" in handle.read()
        assert "Bitcoin Core version" not in node.output(), "printtoconsole=0: nothing on stdout"


def test_real_core_takes_the_first_value_like_bitcoin_conf_settings(real_core, make_node, tmp_path):  # noqa: F811
    """Config files: the first value of a single-value option wins (10.10)."""
    first, second = free_ports(2)
    datadir = tmp_path / "hand"
    datadir.mkdir()
    text = (
        "chain=regtest\nserver=1\nlisten=0\nprinttoconsole=1\nnodebuglogfile=1\n"
        "rpcuser=u\nrpcpassword=p\n"
        f"[regtest]\nrpcport={first}\nrpcport={second}\nrpcbind=127.0.0.1\nrpcallowip=127.0.0.1\n"
    )
    (datadir / "bitcoin.conf").write_text(text)
    assert bitcoin_conf.settings(text, "regtest")["rpcport"] == str(first)
    node = make_node(real_core.bitcoind, datadir, first, auth=("u", "p"))
    node.start()
    node.wait_rpc()  # answers on the first rpcport
    assert f"port {first}" in node.output()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", second), timeout=2).close()
    assert node.stop() == 0


def test_symlinked_datadir_is_refused_cleanly_and_nothing_written_through_it(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    os.chmod(victim, 0o755)  # noqa: S103 - a system directory's mode
    before = (os.stat(victim).st_uid, stat.S_IMODE(os.stat(victim).st_mode), sorted(os.listdir(victim)))
    args = module_args(tmp_path, "tor-only", check_ports=False)
    os.symlink(victim, args["datadir"])
    result, out = run_collection_module("bitcoind_instance", args)
    assert result.get("failed") is True, result
    assert result["msg"].startswith("datadir: ") and "symlink" in result["msg"], result["msg"]
    assert_no_internal_exception(result)
    assert EXCEPTION_BANNER not in out
    assert (os.stat(victim).st_uid, stat.S_IMODE(os.stat(victim).st_mode), sorted(os.listdir(victim))) == before


@pytest.mark.parametrize(
    "change",
    [
        {"extra_options": {"noproxy": 1}},
        {"extra_options": {"nodaemon": 0}},
        {"rpc_allow_ip": ["0.0.0.0/0"]},
        {"datadir": "//"},
        {"owner": "bit\u0000coin"},
    ],
)
def test_refused_input_prints_no_exception_banner(tmp_path, change):
    args = dict(module_args(tmp_path, "tor-only", check_ports=False), **change)
    result, out = run_collection_module("bitcoind_instance", args)
    assert result.get("failed") is True, result
    assert EXCEPTION_BANNER not in out, out[-2000:]
    assert_no_internal_exception(result)
    assert not os.path.exists(tmp_path / "hd1")
