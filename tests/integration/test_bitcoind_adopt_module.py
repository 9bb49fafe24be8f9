# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""bitcoind_adopt against a real Bitcoin Core started by hand (no systemd unit), through the ansible CLI.

The hand-run daemon has its own bitcoin.conf (with a legacy rpcpassword), a few blocks and Core's
onion_v3_private_key (the key real Core made, from the unit test; this daemon runs with listen=0,
so it does not ask tor for one itself). The module must find it through the datadir's .lock,
stop it with SIGTERM (Core exits 0 after a flush), back the conf up root-only, give the datadir to
the owner without following a symlink or changing a hard-linked file, stage tor's key for Core's
address, report the old settings with the password hidden, and change nothing on a second run.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import tor as tor_utils
from ansible_collections.nodefleet.bitcoin.tests.integration.ansible_cli import run_collection_module
from ansible_collections.nodefleet.bitcoin.tests.integration.local_ports import free_ports
from ansible_collections.nodefleet.bitcoin.tests.integration.real_core import make_node, real_core  # noqa: F401
from ansible_collections.nodefleet.bitcoin.tests.unit.plugins.module_utils.test_tor_core_key import (
    CORE_ADDRESS,
    CORE_KEY,
)

PASSWORD = "hand-run-secret-9f3a"
OWNER, GROUP = "nobody", "nogroup"


@pytest.fixture
def base():
    # Outside pytest's 0700 tmp dir: the owner must be able to enter the datadir's parents.
    path = Path(tempfile.mkdtemp(prefix="nodefleet-adopt-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_adopt_a_hand_run_core(real_core, make_node, base):  # noqa: F811
    if os.geteuid() != 0:
        pytest.skip("chowning a datadir needs root")
    datadir = base / "hand"
    datadir.mkdir()
    rpc_port, p2p_port = free_ports(2)
    conf_text = (
        "regtest=1\nserver=1\nlisten=0\ntxindex=1\nuacomment=handrun\n"
        f"rpcuser=alice\nrpcpassword={PASSWORD}\n[regtest]\nrpcport={rpc_port}\nport={p2p_port}\n"
    )
    (datadir / "bitcoin.conf").write_text(conf_text)
    node = make_node(real_core.bitcoind, datadir, rpc_port, auth=("alice", PASSWORD))
    node.start(extra=["-dbcache=50"])
    node.wait_rpc()
    node.result("generatetoaddress", [12, "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"])
    best = node.result("getbestblockhash")
    netdir = datadir / "regtest"
    (netdir / "onion_v3_private_key").write_text(CORE_KEY)
    outside = base / "outside"
    outside.write_text("root's file")
    (datadir / "link-out").symlink_to(outside)
    os.link(outside, datadir / "hardlinked")
    state_dir = base / "state"
    args = {
        "name": "adopted",
        "datadir": str(datadir),
        "network": "regtest",
        "owner": OWNER,
        "group": GROUP,
        "state_dir": str(state_dir),
        "stop_timeout": 60,
    }

    # --check --diff: the whole plan, nothing done.
    result, raw = run_collection_module("bitcoind_adopt", args, check=True, diff=True, expect_success=True)
    assert result["changed"] is True
    assert [s["pid"] for s in result["stopped"]] == [node.proc.pid]
    assert result["stopped"][0]["how"] == "SIGTERM"
    assert result["ownership"]["changed"] > 0
    assert result["onion_address"] == CORE_ADDRESS
    assert f"daemon pid {node.proc.pid}" in result["diff"]["before"]
    assert node.proc.poll() is None, "check mode stopped the daemon"
    assert not state_dir.exists()
    assert datadir.stat().st_uid == 0
    assert PASSWORD not in raw

    # The adoption.
    result, raw = run_collection_module("bitcoind_adopt", args, diff=True, expect_success=True)
    assert result["changed"] is True
    assert node.proc.wait(timeout=30) == 0, "Core did not exit cleanly on SIGTERM"
    assert PASSWORD not in raw
    settings = {s["name"]: s["value"] for s in result["previous_settings"]}
    assert settings["txindex"] == "1" and settings["uacomment"] == "handrun"
    assert settings["rpcpassword"] == "(hidden)" and settings["dbcache"] == "50"
    backup = Path(result["backup"])
    assert backup.read_text() == conf_text
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600 and backup.stat().st_uid == 0
    nobody = (pwd.getpwnam(OWNER).pw_uid, grp.getgrnam(GROUP).gr_gid)
    for path in [datadir, netdir, netdir / "blocks", netdir / "chainstate", datadir / "bitcoin.conf"]:
        assert (path.stat().st_uid, path.stat().st_gid) == nobody, path
    for path in (netdir / "blocks").iterdir():
        assert path.stat().st_uid == nobody[0], path
    assert outside.stat().st_uid == 0, "the symlink's target outside the datadir was chowned"
    assert "link-out" in result["ownership"]["symlinks"]
    assert "hardlinked" in result["ownership"]["hardlinks"]
    staged = Path(result["tor_key_file"])
    assert staged.read_bytes() == tor_utils.core_key_to_tor("k", CORE_KEY)[tor_utils.SECRET_KEY_FILE]
    assert stat.S_IMODE(staged.stat().st_mode) == 0o600 and staged.stat().st_uid == 0
    assert CORE_KEY.split(":", 1)[1][:16] not in raw

    # Second run: nothing to do; the report is still there (from the backup and the record).
    again, _ = run_collection_module("bitcoind_adopt", args, check=False, diff=True, expect_success=True)
    assert again["changed"] is False, again
    assert again["previous_settings"] == result["previous_settings"]
    assert again["onion_address"] == CORE_ADDRESS

    # The chain is intact: Core on the adopted datadir has the same tip.
    node2 = make_node(real_core.bitcoind, datadir, rpc_port, auth=("alice", PASSWORD))
    node2.start()
    node2.wait_rpc()
    assert node2.result("getbestblockhash") == best
    assert node2.stop() == 0


def test_refuses_a_datadir_without_the_networks_chain(base):
    (base / "empty").mkdir()
    args = {"name": "x", "datadir": str(base / "empty"), "network": "regtest", "state_dir": str(base / "s")}
    result, _ = run_collection_module("bitcoind_adopt", dict(args, owner="root", group="root"))
    assert result.get("failed") and result["msg"].startswith("datadir:") and "no regtest chain" in result["msg"]
    assert not (base / "s").exists()


def test_refuses_onion_key_core_without_cores_key(base):
    (base / "d" / "regtest" / "blocks").mkdir(parents=True)
    args = {"name": "x", "datadir": str(base / "d"), "network": "regtest", "state_dir": str(base / "s")}
    result, _ = run_collection_module("bitcoind_adopt", dict(args, owner="root", group="root"))
    assert result.get("failed") and result["msg"].startswith("onion_key:") and "listenonion=1" in result["msg"]
    assert not (base / "s").exists()


def test_dry_run_before_the_owner_exists_and_a_real_run_refuses(base):
    # On a fresh host --check runs before the role has created the bitcoin user.
    (base / "d" / "regtest" / "blocks").mkdir(parents=True)
    args = {
        "name": "x",
        "datadir": str(base / "d"),
        "network": "regtest",
        "state_dir": str(base / "s"),
        "onion_key": "none",
        "owner": "nodefleet-no-such-user",
        "group": "nodefleet-no-such-group",
    }
    result, _ = run_collection_module("bitcoind_adopt", args, check=True, expect_success=True)
    assert result["changed"] is True and result["ownership"]["changed"] == 3  # d, regtest, blocks
    result, _ = run_collection_module("bitcoind_adopt", args)
    assert result.get("failed") and result["msg"].startswith("owner:") and "does not exist" in result["msg"]
    assert not (base / "s").exists()


def test_onion_key_tor_stages_the_operators_tor_key(base):
    # The operator ran their own HiddenServiceDir (doc/tor.md style) with tor's key files.
    (base / "d" / "regtest" / "blocks").mkdir(parents=True)
    service = base / "bitcoin-service"
    service.mkdir(mode=0o700)
    files = tor_utils.core_key_to_tor("k", CORE_KEY)
    (service / tor_utils.SECRET_KEY_FILE).write_bytes(files[tor_utils.SECRET_KEY_FILE])
    args = {
        "name": "x",
        "datadir": str(base / "d"),
        "network": "regtest",
        "state_dir": str(base / "s"),
        "onion_key": "tor",
        "tor_service_dir": str(service),
        "owner": "root",
        "group": "root",
    }
    result, raw = run_collection_module("bitcoind_adopt", args, expect_success=True)
    assert result["onion_address"] == CORE_ADDRESS
    assert Path(result["tor_key_file"]).read_bytes() == files[tor_utils.SECRET_KEY_FILE]
    assert CORE_KEY.split(":", 1)[1][:16] not in raw
    again, _ = run_collection_module("bitcoind_adopt", args, expect_success=True)
    assert again["changed"] is False
    # A file that is not a tor v3 key is refused, naming the option, before anything is staged.
    (service / tor_utils.SECRET_KEY_FILE).write_bytes(b"not a key")
    bad, _ = run_collection_module("bitcoind_adopt", dict(args, state_dir=str(base / "s2")))
    assert bad.get("failed") and bad["msg"].startswith("tor_service_dir:") and not (base / "s2").exists()
