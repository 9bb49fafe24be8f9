# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 11 (onion keys), the bitcoind role run for real (ansible-playbook, connection=local) with
the host side replaced by the fakes of test_bitcoind_role.py:

- no onion key live on two hosts: the play fails in validate.yml, before any module runs, when two
  hosts of the inventory would serve the same key or address (a key in group_vars, a moved instance
  whose key is in the inventory of both hosts) - naming both hosts and instances, never the key - and a
  ``--limit`` run still sees a host outside the limit;
- onion key backups on a designated inventory host (bitcoind_onion_key_backup_host, AWX): written
  there (0700 directories, 0600 files), nothing on the controller, and a wiped onion service directory
  gets its old key (so its old address) back from there.

The fake tor_hidden_service keeps a key file per service under HARNESS_TOR (the role's
``bitcoind__tor_data_dir``): it keeps an existing key, restores the given ``secret_key`` into an
empty directory, else creates a key; its address is a function of the key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat

import pytest

from tests.integration.role_harness import run_play, stub_collection
from tests.integration.test_bitcoind_role import PLAY, RELEASES, SIGNER, STUBS, fake_modules

pytestmark = pytest.mark.integration

FAKE_TOR_BODY = r"""
import base64, hashlib
def BODY(p, check):
    root = os.environ["HARNESS_TOR"]
    services = {}
    for s in p["services"]:
        if s.get("state") != "present":
            continue
        d = os.path.join(root, "nodefleet-" + s["name"])
        path = os.path.join(d, "hs_ed25519_secret_key")
        if os.path.exists(path):
            key = open(path, "rb").read()
        elif s.get("secret_key"):
            key = base64.b64decode("".join(s["secret_key"].split()))
        else:
            key = b"== ed25519v1-secret: type0 ==\x00\x00\x00" + os.urandom(64)
        if not check:
            os.makedirs(d, exist_ok=True)
            with open(path, "wb") as handle:
                handle.write(key)
        addr = base64.b32encode(hashlib.sha256(key).digest() + b"abc").decode().lower()[:56] + ".onion"
        services[s["name"]] = {"onion_address": addr}
    return {"changed": False, "services": services}
"""

KEY_A = base64.b64encode(b"== ed25519v1-secret: type0 ==\x00\x00\x00" + hashlib.sha512(b"a").digest()).decode()


def fakes() -> dict:
    modules = fake_modules()
    modules["tor_hidden_service"] = (
        modules["tor_hidden_service"].split("\ndef BODY", 1)[0] + FAKE_TOR_BODY + "\nmain()\n"
    )
    return modules


@pytest.fixture(scope="module")
def collections(tmp_path_factory):
    return stub_collection(tmp_path_factory.mktemp("coll"), STUBS, fakes())


class Fleet:
    """Hosts of one inventory, all on this machine (connection=local), each with its own dirs."""

    def __init__(self, tmp, collections, names):
        self.tmp, self.collections = tmp, collections
        self.state, self.tor = tmp / "state", tmp / "tor"
        self.ctrl_backup = tmp / "controller-backup"
        self.conf_dir = tmp / "conf.d"
        for d in (self.state, self.tor, self.conf_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.hosts = {}
        for name in names:
            (tmp / name / "opt").mkdir(parents=True)
            self.hosts[name] = {
                "bitcoind_instances": [],
                "bitcoind_releases": RELEASES,
                "bitcoind_release_signers": [SIGNER],
                "bitcoind_home": str(tmp / name / "home"),
                "bitcoind_install_root": str(tmp / name / "opt"),
                "bitcoind_pending_restart_dir": str(tmp / name / "pending"),
                "bitcoind_onion_key_backup_dir": str(self.ctrl_backup),
            }

    def run(self, *args):
        extra = json.dumps(
            {"bitcoind_supervisor_conf_dir": str(self.conf_dir), "bitcoind__tor_data_dir": str(self.tor)}
        )
        env = {"HARNESS_DIR": str(self.state), "HARNESS_CONF_DIR": str(self.conf_dir), "HARNESS_TOR": str(self.tor)}
        for f in self.state.glob("*.jsonl"):
            f.unlink()
        rc, out, _ = run_play(
            self.tmp, self.collections, PLAY, {}, extra_args=("-e", extra, *args), hosts=self.hosts, env=env
        )
        (self.tmp / "ansible-out.txt").write_text(out)
        return rc, out

    def calls(self, module):
        path = self.state / f"{module}.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def tor_instance(name, **kw):
    return {"name": name, "impl": "core", "network": "regtest", "tor_mode": "tor-only", **kw}


def assert_refused_before_any_change(fleet, rc, out):
    assert rc != 0, out
    assert "Check that no onion key or address would be served by two hosts" in out
    assert KEY_A not in out and KEY_A[:24] not in out
    for module in ("tor_hidden_service", "bitcoind_instance", "supervisord_program"):
        assert fleet.calls(module) == [], module


def test_a_key_copied_into_group_vars_fails_naming_both_hosts(tmp_path, collections):
    fleet = Fleet(tmp_path, collections, ["n1", "n2"])
    for name in ("n1", "n2"):
        fleet.hosts[name]["bitcoind_instances"] = [tor_instance("svc")]
    # a real group_vars file next to the inventory, shared by both hosts
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "fleet.yml").write_text(
        json.dumps(
            {
                "bitcoind_instance_defaults": {
                    "state": "present",
                    "rpc_users": [],
                    "extra_options": {},
                    "purge": False,
                    "onion_secret_key": KEY_A,
                }
            }
        )
    )
    rc, out = fleet.run()
    assert_refused_before_any_change(fleet, rc, out)
    assert "the same onion key would be served by host n1 instance svc" in out
    assert "host n2 instance svc" in out


def test_a_moved_instance_is_caught_even_with_limit_to_the_new_host(tmp_path, collections):
    """The instance moved to n2 with its key in n2's inventory; n1 still lists it (its backup holds the
    key). `--limit n2` must still see n1, which is not in the play."""
    fleet = Fleet(tmp_path, collections, ["n1", "n2"])
    (fleet.ctrl_backup / "n1").mkdir(parents=True)
    (fleet.ctrl_backup / "n1" / "mover.b64").write_text(KEY_A)
    (fleet.ctrl_backup / "n1" / "mover.onion").write_text("x" * 56 + ".onion\n")
    fleet.hosts["n1"]["bitcoind_instances"] = [tor_instance("mover")]
    fleet.hosts["n2"]["bitcoind_instances"] = [tor_instance("mover", onion_secret_key=KEY_A)]
    rc, out = fleet.run("--limit", "n2")
    assert_refused_before_any_change(fleet, rc, out)
    assert (
        "the same onion key would be served by host n1 instance mover (its key backup) and "
        "host n2 instance mover (its onion_secret_key)"
    ) in out
    assert "n1 " not in out.split("PLAY RECAP", 1)[1]  # n1 was not in the play
    # retiring it on the old host in the same change lets the move through
    fleet.hosts["n1"]["bitcoind_instances"] = [tor_instance("mover", state="absent")]
    rc, out = fleet.run("--limit", "n2")
    assert rc == 0, out
    (call,) = fleet.calls("tor_hidden_service")
    assert [s.get("secret_key") for s in call["params"]["services"]] == [KEY_A]


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_backups_on_a_backup_host_and_restore_from_there(tmp_path, collections):
    fleet = Fleet(tmp_path, collections, ["node1", "vault1"])
    bk = tmp_path / "backup-host" / "onion-keys"
    for name in ("node1", "vault1"):
        fleet.hosts[name].update(
            {
                "bitcoind_onion_key_backup_host": "vault1",
                "bitcoind_onion_key_backup_host_dir": str(bk),
                # connection=local as a non-root CI user has no sudo; a real backup host uses become
                "bitcoind_onion_key_backup_host_become": False,
            }
        )
    fleet.hosts["node1"]["bitcoind_instances"] = [tor_instance("t1")]
    rc, out = fleet.run("--limit", "node1")  # the backup host is reached by delegation, not by the play
    assert rc == 0, out
    key = (fleet.tor / "nodefleet-t1" / "hs_ed25519_secret_key").read_bytes()
    (call,) = fleet.calls("tor_hidden_service")
    address = None
    for line in (fleet.state / "bitcoind_instance.jsonl").read_text().splitlines():
        address = json.loads(line)["params"]["onion_address"]
    assert (bk / "node1" / "t1.b64").read_text() == base64.b64encode(key).decode()
    assert (bk / "node1" / "t1.onion").read_text().strip() == address
    assert mode(bk) == 0o700 and mode(bk / "node1") == 0o700
    assert mode(bk / "node1" / "t1.b64") == 0o600 and mode(bk / "node1" / "t1.onion") == 0o600
    assert not fleet.ctrl_backup.exists()  # nothing on the (throwaway) controller
    assert base64.b64encode(key).decode() not in out

    # the onion service directory is wiped: the next converge restores the key from the backup host
    (fleet.tor / "nodefleet-t1" / "hs_ed25519_secret_key").unlink()
    rc, out = fleet.run("--limit", "node1", "-vvvv")  # -vvvv: the restored key is still never shown
    assert rc == 0, out
    assert (fleet.tor / "nodefleet-t1" / "hs_ed25519_secret_key").read_bytes() == key
    (call,) = fleet.calls("tor_hidden_service")
    assert call["params"]["services"][0]["secret_key"] == base64.b64encode(key).decode()
    (inst,) = fleet.calls("bitcoind_instance")
    assert inst["params"]["onion_address"] == address  # the old address is back
    assert base64.b64encode(key).decode() not in out
    assert base64.b64encode(base64.b64encode(key)).decode()[:40] not in out  # nor slurp's encoding of the file

    # the conflict check reads the backup host's listing: the same key given to another host fails
    fleet.hosts["node2"] = dict(
        fleet.hosts["node1"], bitcoind_instances=[tor_instance("t9", onion_secret_key=base64.b64encode(key).decode())]
    )
    (tmp_path / "node2" / "opt").mkdir(parents=True)
    rc, out = fleet.run("--limit", "node2")
    assert rc != 0, out
    assert (
        "the same onion key would be served by host node1 instance t1 (its key backup) and host node2 instance t9"
        in out
    )
    assert base64.b64encode(key).decode() not in out


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("bitcoind_onion_key_backup_host", "not-in-the-inventory"),
        ("bitcoind_onion_key_backup_host_dir", "relative/dir"),
    ],
)
def test_a_bad_backup_host_setting_fails_before_any_change(tmp_path, collections, setting, value):
    fleet = Fleet(tmp_path, collections, ["node1", "vault1"])
    fleet.hosts["node1"].update(
        {
            "bitcoind_instances": [tor_instance("t1")],
            "bitcoind_onion_key_backup_host": "vault1",
            "bitcoind_onion_key_backup_host_dir": str(tmp_path / "bk"),
            "bitcoind_onion_key_backup_host_become": False,
            setting: value,
        }
    )
    rc, out = fleet.run("--limit", "node1")
    assert rc != 0, out
    assert "bitcoind_onion_key_backup_host (" in out and value in out
    for module in ("tor_hidden_service", "bitcoind_instance", "supervisord_program"):
        assert fleet.calls(module) == [], module
