# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Regression tests for bitcoind_instance hardening (issue 10 and 17 items, issue 9 addnode).

main() runs in process against a temp dir, as in test_bitcoind_instance.py. Every refused
input must fail naming the option, before anything is written.
"""

from __future__ import annotations

import os
import stat

import pytest
from ansible.module_utils import basic
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import bitcoin_conf
from ansible_collections.nodefleet.bitcoin.plugins.modules import bitcoind_instance
from ansible_collections.nodefleet.bitcoin.tests.unit.plugins.modules.test_bitcoind_instance import (
    ONION,
    PASSWORD,
    instance_args,
    run_main,
)


@pytest.fixture
def args(tmp_path):
    # check_ports off: these tests are about the files, not about who holds a port.
    return dict(instance_args(tmp_path), check_ports=False)


def snapshot(path) -> tuple:
    """Owner, mode and entries of a directory, to prove it was not touched."""
    st = os.lstat(path)
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), sorted(os.listdir(path))


@pytest.fixture
def victim(tmp_path):
    """A directory the daemon user wants root to write into (stands in for /etc/tmpfiles.d)."""
    path = tmp_path / "victim"
    path.mkdir()
    os.chmod(path, 0o755)  # noqa: S103 - a system directory's mode
    (path / "keep.conf").write_text("victim\n")
    return path


def assert_refused(result, option="datadir"):
    assert result.get("failed") is True, result
    assert result["msg"].startswith(option + ": "), result["msg"]


# --------------------------------------------------------------------------- symlinks (10.1, 10.3)


@pytest.mark.parametrize("check", [False, True])
def test_symlinked_datadir_is_refused_and_the_target_untouched(capsys, args, victim, check):
    os.makedirs(os.path.dirname(args["datadir"]))
    os.symlink(victim, args["datadir"])
    before = snapshot(victim)
    result = run_main(capsys, args, check=check)
    assert_refused(result)
    assert "symlink" in result["msg"]
    assert snapshot(victim) == before
    assert not (victim / "bitcoin.conf").exists()


def test_symlinked_component_above_the_datadir_is_refused(capsys, args, victim, tmp_path):
    os.symlink(victim, tmp_path / "btc")
    before = snapshot(victim)
    result = run_main(capsys, args)
    assert_refused(result)
    assert snapshot(victim) == before


def test_symlinked_network_dir_is_refused(capsys, args, victim):
    os.makedirs(args["datadir"])
    os.symlink(victim, os.path.join(args["datadir"], "regtest"))
    before = snapshot(victim)
    result = run_main(capsys, args)
    assert_refused(result)
    assert "unit1/regtest is a symlink" in result["msg"]
    assert snapshot(victim) == before
    assert not os.path.exists(os.path.join(args["datadir"], "bitcoin.conf")), "nothing written"


def test_symlinked_conf_is_replaced_by_a_regular_file_and_the_target_untouched(capsys, args, victim):
    os.makedirs(args["datadir"])
    conf = os.path.join(args["datadir"], "bitcoin.conf")
    os.symlink(victim / "keep.conf", conf)
    target_mode = stat.S_IMODE(os.stat(victim / "keep.conf").st_mode)
    result = run_main(capsys, args)
    assert result.get("failed") is not True, result
    assert (result["changed"], result["restart_required"]) == (True, True)
    assert not os.path.islink(conf)
    assert stat.S_ISREG(os.lstat(conf).st_mode)
    assert stat.S_IMODE(os.lstat(conf).st_mode) == 0o600
    assert (victim / "keep.conf").read_text() == "victim\n"
    assert stat.S_IMODE(os.stat(victim / "keep.conf").st_mode) == target_mode


def test_hardlinked_conf_is_neither_read_nor_chowned_but_replaced(capsys, args, victim):
    """A bitcoin.conf hard-linked to another file (e.g. /etc/shadow): its content must not reach
    the diff and fchown must not change the other file."""
    run_main(capsys, args)
    conf = os.path.join(args["datadir"], "bitcoin.conf")
    secret = victim / "shadow"
    with open(conf, encoding="utf-8") as handle:
        secret.write_text(handle.read())  # same content: only owner/mode would "need" fixing
    os.chmod(secret, 0o640)
    os.unlink(conf)
    os.link(secret, conf)
    result = run_main(capsys, args, diff=True)
    assert result.get("failed") is not True, result
    assert result["diff"]["before"] == ""
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o640, "the other file's mode was not touched"
    assert os.stat(secret).st_nlink == 1 and os.stat(conf).st_nlink == 1, "bitcoin.conf is a new file"


def test_no_path_based_chown_or_chmod_is_used(args, capsys, monkeypatch):
    """Owner and mode go through descriptors: os.chown/os.chmod/lchown by path never run."""

    def forbidden(*_a, **_k):
        raise AssertionError("path-based chown/chmod used inside the daemon-owned datadir")

    for name in ("chown", "chmod", "lchown"):
        monkeypatch.setattr(os, name, forbidden)
    result = run_main(capsys, args)
    assert result.get("failed") is not True, result
    assert stat.S_IMODE(os.stat(args["datadir"]).st_mode) == 0o750


def test_purge_refuses_a_symlinked_datadir(capsys, args, victim):
    os.makedirs(os.path.dirname(args["datadir"]))
    (victim / "bitcoin.conf").write_text(bitcoin_conf.HEADER + "\n# instance=unit1 impl=core\n")
    os.symlink(victim, args["datadir"])
    before = snapshot(victim)
    result = run_main(capsys, {"name": "unit1", "datadir": args["datadir"], "state": "absent", "purge": True})
    assert_refused(result)
    assert snapshot(victim) == before
    assert os.path.islink(args["datadir"])


def test_purge_removes_links_inside_the_datadir_without_following_them(capsys, args, victim):
    run_main(capsys, args)
    os.symlink(victim, os.path.join(args["datadir"], "regtest"))
    before = snapshot(victim)
    result = run_main(capsys, {"name": "unit1", "datadir": args["datadir"], "state": "absent", "purge": True})
    assert (result["changed"], result["purged"]) == (True, True), result
    assert not os.path.lexists(args["datadir"])
    assert snapshot(victim) == before


# --------------------------------------------------------------------------- paths and accounts (17.1, 17.2, 17.6)


@pytest.mark.parametrize("datadir", ["//", "/", "///", "/etc", "/var/lib", "/tmp", "/srv/bit coin"])
def test_datadir_root_system_dir_or_whitespace_is_refused(capsys, args, datadir):
    args["datadir"] = datadir
    assert_refused(run_main(capsys, args, check=True))


@pytest.mark.parametrize("check", [False, True])
def test_too_long_datadir_is_refused_naming_the_option(capsys, args, check):
    args["datadir"] = args["datadir"] + "a" * 300
    result = run_main(capsys, args, check=check)
    assert_refused(result)
    assert "too long" in result["msg"]


@pytest.mark.parametrize("char", ["\r", "\t", "\x1b", "\x7f", "\x00", "\x01", "\x1f", "\n", "\u2028"])
def test_control_characters_in_datadir_are_refused(capsys, args, char):
    args["datadir"] = args["datadir"] + char + "x"
    result = run_main(capsys, args)
    assert_refused(result)
    assert not os.path.exists(os.path.dirname(args["datadir"]))


@pytest.mark.parametrize("char", ["\r", "\t", "\x1b", "\x7f", "\x00", "\x0b", " "])
def test_control_characters_in_rpc_user_names_are_refused(capsys, args, char):
    args["rpc_users"] = [{"user": "al" + char + "ice", "password": PASSWORD}]
    result = run_main(capsys, args)
    assert_refused(result, "rpc_users[0].user")


@pytest.mark.parametrize("char", ["\r", "\t", "\x1b", "\x7f", "\x0b"])
def test_control_characters_in_rpcauth_user_part_are_refused(capsys, args, char):
    args["rpcauth"] = ["al%sice:%s$%s" % (char, "0" * 32, "1" * 64)]
    result = run_main(capsys, args)
    assert_refused(result, "rpcauth[0]")


@pytest.mark.parametrize("option", ["owner", "group"])
@pytest.mark.parametrize("value", ["bit\x00coin", "bit\x1bcoin", "bitcoin\n"])
def test_control_characters_in_owner_or_group_fail_cleanly(capsys, args, option, value):
    args[option] = value
    result = run_main(capsys, args)  # an unhandled ValueError (NUL in pwd lookup) fails the test
    assert_refused(result, option)


# --------------------------------------------------------------------------- extra options (10.5, 10.7, 17.3, 17.4)

NEGATED = [
    "noproxy",
    "noonlynet",
    "noexternalip",
    "nolisten",
    "norpcallowip",
    "nodiscover",
    "nodnsseed",
    "noonion",
    "nolistenonion",
    "nobind",
    "norpcbind",
    "noserver",
    "nodaemon",
    "norpcuser",
    "norpcpassword",
    "noincludeconf",
    "noprinttoconsole",
    "nodebuglogfile",
    "nozmqpubrawblock",
    "nononodaemon",
]


@pytest.mark.parametrize("value", ["1", "0", True, False, ""])
@pytest.mark.parametrize("key", NEGATED)
def test_negated_managed_or_forbidden_extra_options_are_refused(capsys, args, key, value):
    args["extra_options"] = {key: value}
    result = run_main(capsys, args)
    assert_refused(result, "extra_options." + key)
    assert not os.path.exists(os.path.dirname(args["datadir"]))


@pytest.mark.parametrize("key", sorted(bitcoin_conf.FORBIDDEN_EXTRA_KEYS))
def test_every_forbidden_key_is_refused_negated_too(key):
    for form in (key, "no" + key):
        with pytest.raises(bitcoin_conf.ValidationError) as err:
            bitcoin_conf.validate({"name": "n", "onion_address": ONION, "extra_options": {form: "0"}})
        assert err.value.option == "extra_options." + form


@pytest.mark.parametrize("key", ["txindex\n", "blocksonly\n", "uacomment\r"])
def test_extra_key_with_a_trailing_newline_is_refused(capsys, args, key):
    args["extra_options"] = {key: "1"}
    result = run_main(capsys, args)
    assert result.get("failed") is True, result
    assert result["msg"].startswith("extra_options.%r: " % key), result["msg"]
    assert "\n" not in result["msg"] and "\r" not in result["msg"]
    assert not os.path.exists(os.path.dirname(args["datadir"]))


@pytest.mark.parametrize("char", ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\x00", "\t"])
def test_extra_values_with_separator_characters_are_refused(capsys, args, char):
    args["extra_options"] = {"uacomment": "x" + char + "rpcallowip=0.0.0.0/0"}
    result = run_main(capsys, args)
    assert_refused(result, "extra_options.uacomment")
    assert not os.path.exists(os.path.dirname(args["datadir"]))


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("onion_address", ONION + "\n"),
        ("tor_proxy", "127.0.0.1:9050\n"),
        ("tor_proxy", "localhost\n:9050"),
    ],
)
def test_trailing_newline_in_anchored_values_is_refused(capsys, args, option, value):
    args[option] = value
    assert_refused(run_main(capsys, args), option)


# --------------------------------------------------------------------------- rpc_allow_any (10.8)

ANY = [["0.0.0.0/0"], ["::/0"], ["0.0.0.0/0.0.0.0"], ["0.0.0.0/1", "128.0.0.0/1"], ["127.0.0.1", "::0/0"]]


@pytest.mark.parametrize("allow", ANY)
def test_rpc_allow_ip_covering_every_address_is_refused(capsys, args, allow):
    args["rpc_allow_ip"] = allow
    result = run_main(capsys, args)
    assert_refused(result, "rpc_allow_ip")
    assert "rpc_allow_any" in result["msg"]
    assert not os.path.exists(os.path.dirname(args["datadir"]))


def test_rpc_allow_ip_star_is_refused(capsys, args):
    args["rpc_allow_ip"] = ["*"]
    assert_refused(run_main(capsys, args), "rpc_allow_ip")


@pytest.mark.parametrize("allow", ANY)
def test_rpc_allow_any_opt_in_writes_it_with_a_warning(capsys, monkeypatch, args, allow):
    # How a warning travels in the result depends on ansible-core's serialization profile
    # (which other tests in the same process may have set up), so record module.warn itself.
    warned = []
    original_warn = basic.AnsibleModule.warn

    def warn(self, message, *a, **kw):
        warned.append(message)
        return original_warn(self, message, *a, **kw)

    monkeypatch.setattr(basic.AnsibleModule, "warn", warn)
    args.update(rpc_allow_ip=allow, rpc_allow_any=True)
    result = run_main(capsys, args)
    assert result.get("failed") is not True, result
    assert any("rpc_allow_ip: RPC is open to every" in message for message in warned), warned


# --------------------------------------------------------------------------- addnode (issue 9)


def test_addnode_is_written_in_the_network_section_and_returned(capsys, args):
    nodes = ["203.0.113.5", "203.0.113.6:18444", "[2001:db8::1]:18444", "peer.example.org", ONION + ":18444"]
    args["addnode"] = nodes
    result = run_main(capsys, args)
    assert result["addnode"] == nodes
    with open(result["conf_file"], encoding="utf-8") as handle:
        parsed = bitcoin_conf.parse(handle.read())
    assert [v for k, v in parsed["regtest"] if k == "addnode"] == nodes
    assert not [v for k, v in parsed[""] if k == "addnode"]


@pytest.mark.parametrize(
    "node",
    [
        "a b",
        "host:0",
        "host:70000",
        "host:",
        "x\n",
        "[::1",
        "[::1]x",
        "1.2.3.4#x",
        "a=b",
        "-host",
        "[1.2.3.4]",
        "bad.onion",
    ],
)
def test_invalid_addnode_is_refused(capsys, args, node):
    args["addnode"] = [node]
    assert_refused(run_main(capsys, args), "addnode[0]")


# --------------------------------------------------------------------------- refused input output (10.17)


def test_fail_json_is_not_called_inside_an_except_block(capsys, args, monkeypatch):
    """ansible-core prints 'An exception occurred' when fail_json runs while an exception is handled."""
    import sys

    seen = []
    original = bitcoind_instance.AnsibleModule.fail_json

    def fail_json(self, **kwargs):
        seen.append(sys.exc_info()[0])
        return original(self, **kwargs)

    monkeypatch.setattr(bitcoind_instance.AnsibleModule, "fail_json", fail_json)
    for change in ({"prune": 300}, {"datadir": "//"}, {"owner": "x\x00y"}, {"extra_options": {"noproxy": 1}}):
        result = run_main(capsys, dict(args, **change))
        assert result["failed"] is True
    assert seen == [None] * 4, seen


# --------------------------------------------------------------------------- onion checksum


@pytest.mark.parametrize("option", ["onion_address", "addnode"])
def test_an_onion_address_core_would_refuse_is_refused(capsys, tmp_path, args, option):
    # 56 base32 characters but a wrong checksum: Core exits at start-up with "Cannot resolve
    # -externalip address", so the instance would crash-loop on a file we wrote.
    bad = "a" * 56 + ".onion"
    if option == "onion_address":
        args.update(tor_mode="tor-only", onion_address=bad)
    else:
        args["addnode"] = [bad + ":18444"]
    result = run_main(capsys, args)
    assert result.get("failed") is True
    assert result["msg"].startswith(option), result["msg"]
    assert "checksum" in result["msg"]
    assert not (tmp_path / "btc").exists()
