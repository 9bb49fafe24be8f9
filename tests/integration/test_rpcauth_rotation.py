# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 11 (credentials): rpcauth rotation with overlap, against the REAL Bitcoin Core
(../shared/bitcoin-core) and the stand-in, through the bitcoind_instance module run by ansible.

A rotation window (``rpc_users: [{user, password: NEW, previous_passwords: [OLD]}]``) writes one
rpcauth line per password: the daemon started on it answers both passwords. The next converge
without OLD drops its line (restart_required), and after the restart OLD gets 401 while NEW
still answers - also through bitcoind_info, the collection's own RPC client, with the current
password. No password is in the module's output, its diff or -vvvv.

The real-Core case skips only when the archive is absent and CI is unset (real_core fixture).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import sys
import time
from pathlib import Path

import pytest
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import rpcauth
from ansible_collections.nodefleet.bitcoin.plugins.modules import bitcoind_info
from ansible_collections.nodefleet.bitcoin.tests.integration.ansible_cli import (
    run_collection_module,
    run_collection_module_in_playbook,
)
from ansible_collections.nodefleet.bitcoin.tests.integration.local_ports import free_ports
from ansible_collections.nodefleet.bitcoin.tests.integration.real_core import (  # noqa: F401
    make_node,
    real_core,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STANDIN = Path(os.environ.get("NODEFLEET_STANDIN") or REPO / "tests" / "standin" / "bitcoind")
USER = "rotator"
OLD = "Old-Rotation-Secret-4f1a"
NEW = "New-Rotation-Secret-9b7c"
OWNER = pwd.getpwuid(os.getuid()).pw_name
GROUP = grp.getgrgid(os.getgid()).gr_name


@pytest.fixture(params=["core", "standin"])
def daemon(request):
    """(kind, executable, env): real Core (fixture skips/fails when absent) or the stand-in."""
    if request.param == "core":
        return "core", request.getfixturevalue("real_core").bitcoind, {}
    assert STANDIN.is_file(), STANDIN
    return "standin", STANDIN, {"NODEFLEET_STANDIN_WARMUP": "0", "NODEFLEET_STANDIN_FLUSH_SECONDS": "0"}


def module_args(tmp_path: Path, rpc: int, p2p: int, users: list) -> dict:
    return {
        "name": "rot1",
        "network": "regtest",
        "tor_mode": "clearnet",
        "datadir": str(tmp_path / "rot1"),
        "owner": OWNER,
        "group": GROUP,
        "rpc_port": rpc,
        "p2p_port": p2p,
        "rpc_users": users,
    }


def converge(tmp_path, args, verbosity=0):
    """bitcoind_instance through the ansible CLI (diff on); returns the result, asserting no secret leaked."""
    if verbosity:
        result, out = run_collection_module_in_playbook(
            "bitcoind_instance", args, str(tmp_path), diff=True, verbosity=verbosity, interpreter=sys.executable
        )
    else:
        result, out = run_collection_module("bitcoind_instance", args, diff=True)
    assert not result.get("failed"), result.get("msg")
    for secret in (OLD, NEW):
        assert secret not in out
        assert secret not in json.dumps(result)
    return result


def status(node, password: str) -> int:
    code, _body, _headers = node.rpc("getblockchaininfo", auth=(USER, password))
    return code


def info_state(conf_dir: str, rpc_port: int, password: str) -> str:
    spec = {"name": "rot1", "datadir": conf_dir, "rpc_user": USER, "rpc_password": password}
    params = {"conf_dir": "/nonexistent", "datadir_root": "/nonexistent", "rpc_credentials": []}
    return bitcoind_info.query_instance(bitcoind_info.resolve_instance(spec, params), time.monotonic() + 10)["state"]


def test_rotation_window_then_drop_old_password(daemon, make_node, tmp_path):  # noqa: F811
    kind, exe, env = daemon
    rpc, p2p = free_ports(2)
    datadir = tmp_path / "rot1"

    first = converge(tmp_path, module_args(tmp_path, rpc, p2p, [{"user": USER, "password": OLD}]))
    (old_line,) = rpcauth.lines_from_conf((datadir / "bitcoin.conf").read_text())

    window = module_args(tmp_path, rpc, p2p, [{"user": USER, "password": NEW, "previous_passwords": [OLD]}])
    opened = converge(tmp_path, window, verbosity=4)
    assert opened["restart_required"] is True
    lines = rpcauth.lines_from_conf((datadir / "bitcoin.conf").read_text())
    assert len(lines) == 2 and lines[1] == old_line
    assert converge(tmp_path, window)["changed"] is False  # salts stable: the window is idempotent

    node = make_node(exe, datadir, rpc, auth=(USER, NEW), env=env)
    node.start()
    node.wait_rpc()
    assert status(node, NEW) == 200, kind
    assert status(node, OLD) == 200, kind  # both passwords authenticate during the window
    assert status(node, "neither-password") == 401
    assert node.stop() == 0

    closed = converge(tmp_path, module_args(tmp_path, rpc, p2p, [{"user": USER, "password": NEW}]))
    assert closed["restart_required"] is True  # the dropped line needs a restart, as any conf change
    assert rpcauth.lines_from_conf((datadir / "bitcoin.conf").read_text()) == [lines[0]]

    node.start()
    node.wait_rpc()
    assert status(node, NEW) == 200
    assert status(node, OLD) == 401, f"{kind} still accepts the dropped password"
    assert info_state(first["datadir"], rpc, NEW) == "up"  # the collection's own RPC use: current password
    assert info_state(first["datadir"], rpc, OLD) == "auth_failed"
    assert node.stop() == 0


# -- the bitcoind role passes the rotation through (fakes of test_bitcoind_role.py) ------------


def test_the_role_passes_previous_passwords_and_its_argument_spec_checks_them(tmp_path):
    from tests.integration.role_harness import stub_collection
    from tests.integration.test_bitcoind_role import STUBS, Host, fake_modules

    host = Host(tmp_path, stub_collection(tmp_path / "coll", STUBS, fake_modules()))
    host.vars["bitcoind_instances"][0]["rpc_users"] = [{"user": USER, "password": NEW, "previous_passwords": [OLD]}]
    rc, out = host.run()
    assert rc == 0, out
    call = next(c for c in host.calls("bitcoind_instance") if c["params"]["name"] == "a")
    assert call["params"]["rpc_users"] == [{"user": USER, "password": NEW, "previous_passwords": [OLD]}]
    assert OLD not in out and NEW not in out

    host.vars["bitcoind_instances"][0]["rpc_users"] = [
        {"user": USER, "password": NEW, "previous_passwords": {"old": OLD}}
    ]
    rc, out = host.run()
    assert rc != 0 and "previous_passwords" in out, out
    assert OLD not in out and NEW not in out
