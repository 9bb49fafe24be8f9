# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the bitcoind_instance module: main() in process against a temp dir."""

from __future__ import annotations

import grp
import json
import os
import pwd
import stat

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import bitcoin_conf, rpcauth
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import ValidationError
from ansible_collections.nodefleet.bitcoin.plugins.modules import bitcoind_instance

ONION = "aaaqeayeaudaocajbifqydiob4ibceqtcqkrmfyydenbwha5dyp3kead.onion"
PASSWORD = "Unit-Test-Pa55word-4711"
OWNER = pwd.getpwuid(os.getuid()).pw_name
GROUP = grp.getgrgid(os.getgid()).gr_name


def run_main(capsys, args: dict, check=False, diff=False) -> dict:
    args = dict(args)
    args["_ansible_check_mode"] = check
    args["_ansible_diff"] = diff
    with patch_module_args(args), pytest.raises(SystemExit):
        bitcoind_instance.main()
    return json.loads(capsys.readouterr().out)


def instance_args(tmp_path) -> dict:
    """Arguments of a regtest instance with one RPC user, its datadir under ``tmp_path``."""
    return {
        "name": "unit1",
        "network": "regtest",
        "datadir": str(tmp_path / "btc" / "unit1"),
        "owner": OWNER,
        "group": GROUP,
        "onion_address": ONION,
        "rpc_users": [{"user": "alice", "password": PASSWORD}],
    }


@pytest.fixture
def args(tmp_path):
    return instance_args(tmp_path)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_present_creates_datadir_and_conf_then_is_idempotent(capsys, args):
    first = run_main(capsys, args)
    conf = os.path.join(args["datadir"], "bitcoin.conf")
    assert (first["changed"], first["restart_required"]) == (True, True)
    assert first["conf_file"] == conf
    assert first["network_dir"] == os.path.join(args["datadir"], "regtest")
    assert first["ports"] == {"rpc": 18443, "p2p": 18444, "onion": 18445, "zmq": {}}
    assert mode(args["datadir"]) == 0o750
    assert mode(conf) == 0o600
    assert not os.path.exists(first["network_dir"]), "the network subdir is left to bitcoind"
    with open(conf, encoding="utf-8") as handle:
        text = handle.read()
    (value,) = rpcauth.lines_from_conf(text)
    assert rpcauth.verify(value, "alice", PASSWORD)

    second = run_main(capsys, args)
    assert (second["changed"], second["restart_required"]) == (False, False)
    with open(conf, encoding="utf-8") as handle:
        assert handle.read() == text


def test_check_mode_reports_changes_and_writes_nothing(capsys, args):
    result = run_main(capsys, args, check=True, diff=True)
    assert (result["changed"], result["restart_required"]) == (True, True)
    assert not os.path.exists(os.path.dirname(args["datadir"]))
    assert result["diff"]["before"] == ""
    assert result["diff"]["after"].startswith(bitcoin_conf.HEADER)


def test_mode_drift_is_fixed_without_restart(capsys, args):
    run_main(capsys, args)
    conf = os.path.join(args["datadir"], "bitcoin.conf")
    os.chmod(conf, 0o644)
    os.chmod(args["datadir"], 0o755)  # noqa: S103 - drift on purpose
    checked = run_main(capsys, args, check=True)
    assert (checked["changed"], checked["restart_required"]) == (True, False)
    assert mode(conf) == 0o644, "check mode fixed nothing"
    fixed = run_main(capsys, args)
    assert (fixed["changed"], fixed["restart_required"]) == (True, False)
    assert (mode(conf), mode(args["datadir"])) == (0o600, 0o750)


def test_local_edit_is_overwritten_and_needs_a_restart(capsys, args):
    run_main(capsys, args)
    conf = os.path.join(args["datadir"], "bitcoin.conf")
    with open(conf, "a", encoding="utf-8") as handle:
        handle.write("rpcpassword=oops\n")
    result = run_main(capsys, args, diff=True)
    assert (result["changed"], result["restart_required"]) == (True, True)
    assert "rpcpassword=oops" in result["diff"]["before"]
    with open(conf, encoding="utf-8") as handle:
        assert "rpcpassword" not in handle.read()


def test_diff_and_result_never_hold_the_password(capsys, args):
    result = run_main(capsys, args, diff=True)
    dumped = json.dumps(result)
    assert PASSWORD not in dumped
    assert "rpcauth=alice:" in result["diff"]["after"]


def test_missing_owner_fails_before_writing(capsys, args):
    args["owner"] = "no-such-user-nodefleet"
    result = run_main(capsys, args)
    assert result["failed"] is True
    assert result["msg"].startswith("owner: ")
    assert "does not exist" in result["msg"]
    assert not os.path.exists(os.path.dirname(args["datadir"]))


def test_missing_group_fails_before_writing(capsys, args):
    args["group"] = "no-such-group-nodefleet"
    result = run_main(capsys, args)
    assert result["msg"].startswith("group: ")
    assert not os.path.exists(os.path.dirname(args["datadir"]))


def test_datadir_that_is_a_file_fails(capsys, args):
    os.makedirs(os.path.dirname(args["datadir"]))
    with open(args["datadir"], "w", encoding="utf-8") as handle:
        handle.write("x")
    result = run_main(capsys, args)
    assert result["msg"].startswith("datadir: ")


def test_absent_without_purge_keeps_everything(capsys, args):
    run_main(capsys, args)
    result = run_main(capsys, {"name": args["name"], "datadir": args["datadir"], "state": "absent"})
    assert (result["changed"], result["purged"]) == (False, False)
    assert os.path.isfile(os.path.join(args["datadir"], "bitcoin.conf"))


def test_purge_removes_a_managed_datadir_and_check_mode_does_not(capsys, args):
    run_main(capsys, args)
    os.makedirs(os.path.join(args["datadir"], "regtest", "blocks"))
    absent = {"name": args["name"], "datadir": args["datadir"], "state": "absent", "purge": True}
    checked = run_main(capsys, absent, check=True)
    assert (checked["changed"], checked["purged"]) == (True, True)
    assert os.path.isdir(os.path.join(args["datadir"], "regtest", "blocks"))
    purged = run_main(capsys, absent)
    assert (purged["changed"], purged["purged"]) == (True, True)
    assert not os.path.exists(args["datadir"])
    again = run_main(capsys, absent)
    assert (again["changed"], again["purged"]) == (False, False)


def test_purge_refuses_an_unmanaged_datadir(capsys, args, tmp_path):
    os.makedirs(args["datadir"])
    with open(os.path.join(args["datadir"], "bitcoin.conf"), "w", encoding="utf-8") as handle:
        handle.write("server=1\n")
    result = run_main(capsys, {"name": args["name"], "datadir": args["datadir"], "state": "absent", "purge": True})
    assert result["msg"].startswith("purge: ")
    assert "does not contain a bitcoin.conf written by nodefleet.bitcoin" in result["msg"]
    assert os.path.isfile(os.path.join(args["datadir"], "bitcoin.conf"))


def test_purge_refuses_another_instances_datadir(capsys, args):
    run_main(capsys, args)
    result = run_main(capsys, {"name": "other", "datadir": args["datadir"], "state": "absent", "purge": True})
    assert result["msg"].startswith("purge: ")
    assert os.path.isdir(args["datadir"])


def test_invalid_input_fails_naming_the_option_and_writes_nothing(capsys, args):
    args["prune"] = 300
    result = run_main(capsys, args)
    assert result["failed"] is True
    assert result["msg"].startswith("prune: ")
    assert not os.path.exists(os.path.dirname(args["datadir"]))


@pytest.mark.parametrize(
    ("option", "value", "lookup_name", "lookup_id", "ok"),
    [
        ("owner", OWNER, pwd.getpwnam, pwd.getpwuid, True),
        ("owner", str(os.getuid()), pwd.getpwnam, pwd.getpwuid, True),
        ("owner", "no-such-user-nodefleet", pwd.getpwnam, pwd.getpwuid, False),
        ("group", GROUP, grp.getgrnam, grp.getgrgid, True),
        ("group", "no-such-group-nodefleet", grp.getgrnam, grp.getgrgid, False),
    ],
)
def test_check_account(option, value, lookup_name, lookup_id, ok):
    if ok:
        bitcoind_instance.check_account(option, value, lookup_name, lookup_id)
    else:
        with pytest.raises(ValidationError) as err:
            bitcoind_instance.check_account(option, value, lookup_name, lookup_id)
        assert err.value.option == option
