# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Regression tests for issue 17, one or more per group of the issue, with the minimal input
spelled out. Each runs the same invariants as the property tests (``one_example`` of the
module's property file: refused naming an option or read back identically, no unhandled
exception, nothing written when refused, no secret piece anywhere) and then asserts the
specific outcome the group asks for. ``{root}`` is the example's private directory; the host
is read-only but /tmp (sandbox.py), so a path that reaches a system directory shows up as a
write attempt, never as a changed host.

Found by the property suite and kept here (minimal examples as hypothesis shrank them):
- ``test_group8_legacy_credentials_user_is_not_masked``: bitcoind_info, ``credentials:
  {a: {user: d, password: ...}}`` turned ``state: down`` into ``********own``;
- ``test_group6_bitcoind_info_huge_rpcport_in_conf``: bitcoind_info, a bitcoin.conf with
  ``rpcport=99999999999999999999`` crashed the instance's worker thread (OverflowError);
- ``test_group6_nul_in_tor_user_is_refused``: tor_hidden_service, ``tor_user: "\x00debian-tor"``
  raised ValueError (embedded null byte);
- ``test_group1_system_conf_dir_is_refused``: supervisord_program, ``conf_dir: /etc`` (name
  ``0``, command ``/bin/sleep 1000``) was accepted and the module wrote ``/etc/0.conf``;
- ``test_group3_stderr_logfile_with_redirect_stderr``: supervisord_program wrote a
  ``stderr_logfile`` that supervisord ignores (reads None) when ``redirect_stderr=true``.
"""

from __future__ import annotations

import json

import pytest
from ansible_collections.nodefleet.bitcoin.tests.integration.local_ports import free_ports
from ansible_collections.nodefleet.bitcoin.tests.property import test_bitcoind_info as info
from ansible_collections.nodefleet.bitcoin.tests.property import test_bitcoind_instance as instance
from ansible_collections.nodefleet.bitcoin.tests.property import test_rpcauth_derive as derive
from ansible_collections.nodefleet.bitcoin.tests.property import test_supervisord_program as program
from ansible_collections.nodefleet.bitcoin.tests.property import test_tor_hidden_service as onion

ONION = instance.ONION
SALT = "0123456789abcdef0123456789abcdef"
PASSWORD = "JKQVXZJKQVXZJKQV"


def node(**kwargs) -> dict:
    args = {
        "name": "n1",
        "datadir": "{root}/node",
        "owner": "root",
        "group": "root",
        "onion_address": ONION,
        "check_ports": False,
    }
    args.update(kwargs)
    return args


def refused(outcome_result, option: str) -> dict:
    outcome, result = outcome_result
    assert outcome == "refused", "accepted: %r" % result.result
    assert option in result.result["msg"], result.result["msg"]
    return result.result


# ----------------------------------------------------------------------- group 1: a typo breaks the host


@pytest.mark.parametrize("datadir", ["//", "/", "///", "//etc", "/etc", "/var/lib", "/usr/local", "/tmp"])
def test_group1_system_datadir_is_refused(datadir):
    refused(instance.one_example(node(datadir=datadir)), "datadir")


@pytest.mark.parametrize("service_dir", ["//", "/var/lib", "/etc/tor"])
def test_group1_system_service_dir_is_refused(service_dir, monkeypatch):
    args = dict(
        onion.prepare_args(), name="s1", ports=[{"port": 8333, "target": "127.0.0.1:8334"}], service_dir=service_dir
    )
    refused(onion.one_example(args, False, monkeypatch), "service_dir")


@pytest.mark.parametrize("conf_dir", ["//", "/", "/etc", "/var/lib", "/usr/local"])
def test_group1_system_conf_dir_is_refused(conf_dir):
    """/etc, /var/lib, /usr/local: found by the property suite (the module wrote /etc/0.conf)."""
    refused(program.one_example({"name": "p1", "command": "/bin/sleep 1000", "conf_dir": conf_dir}), "conf_dir")


# ----------------------------------------------------------------------- group 2: control characters


@pytest.mark.parametrize("char", ["\r", "\t", "\x1b", "\x7f", "\x00", "\x0b", "\x85", "\u2028"])
def test_group2_control_character_in_datadir_is_refused(char):
    refused(instance.one_example(node(datadir="{root}/no%sde" % char)), "datadir")


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\x7f", "\x01"])
def test_group2_control_character_in_rpc_user_is_refused(char):
    users = [{"user": "al%sice" % char, "password": PASSWORD}]
    refused(instance.one_example(node(rpc_users=users)), "rpc_users[0].user")


def test_group2_control_character_in_rpcauth_user_is_refused():
    value = "al\x00ice:%s$%s" % (SALT, derive.core_hmac(SALT, PASSWORD))
    refused(instance.one_example(node(rpcauth=[value])), "rpcauth[0]")


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\x7f", "\x01"])
def test_group2_control_character_in_derive_user_is_refused(char):
    refused(derive.one_example({"user": "u%s1" % char, "password": PASSWORD}), "user")


def test_group2_control_character_in_existing_user_is_refused():
    value = "u\x00:%s$%s" % (SALT, derive.core_hmac(SALT, PASSWORD))
    refused(derive.one_example({"user": "u", "password": PASSWORD, "existing": [value]}), "existing[0]")


def test_group2_salt_with_trailing_newline_is_refused():
    refused(derive.one_example({"user": "u", "password": PASSWORD, "salt": SALT + "\n"}), "salt")


@pytest.mark.parametrize("char", ["\r", "\t", "\x1b"])
def test_group2_control_character_in_service_dir_is_refused(char, monkeypatch):
    args = dict(
        onion.prepare_args(),
        name="s1",
        ports=[{"port": 8333, "target": "127.0.0.1:8334"}],
        service_dir="{root}/services/s%s1" % char,
    )
    refused(onion.one_example(args, False, monkeypatch), "service_dir")


# ----------------------------------------------------------------------- group 3: parsers that disagree


@pytest.mark.parametrize("sep", ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"])
def test_group3_extra_option_value_with_a_line_break_never_injects_a_line(sep):
    # x\x0brpcallowip=0.0.0.0/0 read as an rpcallowip line by the collection's old parser.
    outcome, result = instance.one_example(node(extra_options={"uacomment": "x%srpcallowip=0.0.0.0/0" % sep}))
    assert outcome == "refused", "accepted (the read-back would have failed if it split): %r" % result.result
    assert "extra_options.uacomment" in result.result["msg"]


@pytest.mark.parametrize("sep", ["\x85", "\u2028", "\u2029", "\x0b"])
@pytest.mark.parametrize("option", ["command", "directory"])
def test_group3_program_value_with_a_line_break_is_refused(sep, option):
    args = {"name": "p1", "command": "/bin/sleep 1000", "conf_dir": "{root}/conf.d"}
    args[option] = (
        "/bin/sleep 1%sstopwaitsecs=99999" if option == "command" else "{root}/work%sstopwaitsecs=99999"
    ) % sep
    refused(program.one_example(args), option)


def test_group3_stderr_logfile_with_redirect_stderr():
    """Found by the property suite: supervisord ignores stderr_logfile when redirect_stderr is
    true (ProcessConfig.stderr_logfile is None), so writing both is a value the daemon does not
    read back. Refusing the combination (naming stderr_logfile) or not writing it passes."""
    args = {
        "name": "p1",
        "command": "/bin/sleep 1000",
        "conf_dir": "{root}/conf.d",
        "redirect_stderr": True,
        "stderr_logfile": "{root}/logs/err.log",
    }
    program.one_example(args)  # the invariants are the test: refused naming an option, or read back


# ----------------------------------------------------------------------- group 4: double negatives


@pytest.mark.parametrize(
    "extra",
    [{"nodaemon": 0}, {"norpcuser": 0}, {"norpcpassword": 0}, {"noincludeconf": 0}, {"nodaemonwait": 0}],
    ids=lambda e: next(iter(e)),
)
def test_group4_double_negative_of_a_forbidden_option_is_refused(extra):
    refused(instance.one_example(node(extra_options=extra)), "extra_options.%s" % next(iter(extra)))


def test_group4_rpc_login_through_double_negatives_is_refused():
    refused(instance.one_example(node(extra_options={"norpcuser": 0, "norpcpassword": 0})), "extra_options.norp")


# ----------------------------------------------------------------------- group 5: half-written state

BAD_PROGRAM_VALUES = [
    ("command", "/bin/sleep 1\u2028x"),
    ("directory", "{root}/work\u2028x"),
    ("environment", {"FOO\n": "JKQVXZJKQVXZjkqv"}),
    ("stdout_logfile", "{root}/logs/out.log\n"),
    ("stdout_logfile_maxbytes", "50MB\n"),
]


@pytest.mark.parametrize(("option", "value"), BAD_PROGRAM_VALUES, ids=[o for o, _v in BAD_PROGRAM_VALUES])
def test_group5_single_form_refusal_writes_nothing(option, value):
    args = {"name": "p1", "command": "/bin/sleep 1000", "conf_dir": "{root}/conf.d", option: value}
    refused(program.one_example(args), option)  # one_example checks that the tree is unchanged


@pytest.mark.parametrize(("option", "value"), BAD_PROGRAM_VALUES, ids=[o for o, _v in BAD_PROGRAM_VALUES])
def test_group5_batch_form_refusal_writes_nothing(option, value):
    good = {"name": "p1", "command": "/bin/sleep 1000"}
    bad = {"name": "p2", "command": "/bin/sleep 1000", option: value}
    refused(program.one_example({"conf_dir": "{root}/conf.d", "programs": [good, bad]}), "programs[1].")


# ----------------------------------------------------------------------- group 6: crashes instead of errors


def test_group6_nul_in_owner_is_refused():
    refused(instance.one_example(node(owner="ro\x00ot")), "owner")


def test_group6_nul_in_conf_file_is_refused():
    refused(
        derive.one_example({"user": "u", "password": PASSWORD, "conf_file": "{root}/bit\x00coin.conf"}), "conf_file"
    )


def test_group6_program_file_that_is_a_symlink_to_a_directory():
    outcome, result = program.one_example(
        {"name": "p1", "command": "/bin/sleep 1000", "conf_dir": "{root}/conf.d"}, pre="dir_symlink"
    )
    assert outcome == "refused", result.result


def test_group6_nul_in_tor_user_is_refused(monkeypatch):
    """Found by the property suite: ``tor_user: "\x00debian-tor"`` raised ValueError (embedded
    null byte) from pwd.getpwnam in tor_hidden_service."""
    args = dict(onion.prepare_args(), name="s1", ports=[{"port": 1, "target": "127.0.0.1:8334"}])
    args.update(service_dir="{root}/services/s1", tor_user="\x00debian-tor")
    refused(onion.one_example(args, False, monkeypatch), "tor_user")


def test_group6_bitcoind_info_huge_rpcport_in_conf():
    """Found by the property suite: ``rpcport=99999999999999999999`` in an instance's
    bitcoin.conf raised OverflowError in the module's worker thread (state reported 'hung')."""
    ports = free_ports(3)
    outcome, _result = info.one_example(
        {"conf_dir": "{root}/conf.d", "datadir_root": "{root}/btc", "timeout": 0.5, "count_restarts": False},
        ["a"],
        {"a": ["rpcport=99999999999999999999"]},
        ports,
    )
    assert outcome in ("accepted", "refused")


# ----------------------------------------------------------------------- group 7: secrets leak in part


@pytest.mark.parametrize("sep", ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"])
def test_group7_environment_value_with_a_line_break_never_shows_its_tail(sep):
    secret = "JKQVXZJKQVXZ%sZXVQKJZXVQKJZX" % sep
    args = {"name": "p1", "command": "/bin/sleep 1000", "conf_dir": "{root}/conf.d", "environment": {"PW": secret}}
    program.one_example(args)  # no 8-character piece of the secret in stdout, the diff or the result


def test_group7_environment_value_change_never_shows_a_piece():
    args = {"name": "p1", "command": "/bin/sleep 1000", "conf_dir": "{root}/conf.d", "environment": {"PW": PASSWORD}}
    program.one_example(args, pre="handwritten")  # the existing file has another environment value


@pytest.mark.parametrize("log_offset", [1980, 1985, 1990])  # 18, 13, 8 characters of it in the window
def test_group7_log_tail_cut_by_the_window_never_shows_half_a_secret(log_offset):
    secret = "JKQVXZJKQVXZJKQVXZJKQVXZ"
    args = {
        "name": "p1",
        "state": "started",
        "command": "/bin/false",
        "conf_dir": "{root}/conf.d",
        "environment": {"PW": secret},
        "wait_timeout": 1,
    }
    outcome, result = program.one_example(args, log_offset=log_offset)
    assert outcome == "failed at run time", result.result


# ----------------------------------------------------------------------- group 8: over-masking


def info_args(**kwargs):
    args = {"conf_dir": "{root}/conf.d", "datadir_root": "{root}/btc", "timeout": 0.5, "count_restarts": False}
    args.update(kwargs)
    return args


def test_group8_rpc_credentials_user_is_not_masked():
    args = info_args(rpc_credentials=[{"name": "a", "user": "d", "password": PASSWORD}])
    outcome, result = info.one_example(args, ["a"], {"a": []}, free_ports(3))
    assert outcome == "accepted"
    assert [i["state"] for i in result.result["instances"]] == ["down"]


def test_group8_instance_rpc_user_is_not_masked():
    args = info_args(instances=[{"name": "a", "rpc_user": "d", "rpc_password": PASSWORD, "rpc_host": "127.0.0.1"}])
    _outcome, result = info.one_example(args, ["a"], {"a": []}, free_ports(3))
    assert [i["state"] for i in result.result["instances"]] == ["down"]


def test_group8_legacy_credentials_form_is_refused_without_masking_a_status():
    """Found by the property suite: the legacy ``credentials`` dict was no_log as a whole, so its
    user 'd' masked 'down' as '********own' and 'node-1' as 'no********e-1'. The form is
    removed: giving it fails naming its replacement, and its password is never shown."""
    args = info_args(credentials={"a": {"user": "monitor", "password": PASSWORD}})
    _outcome, result = info.one_example(args, ["a"], {"a": []}, free_ports(3))
    assert result.result.get("failed") is True
    assert "rpc_credentials" in result.result["msg"]
    assert PASSWORD not in json.dumps(result.result)
