# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Table-driven tests for module_utils/bitcoin_conf.py (cases in bitcoin_conf_cases.yml)."""

from __future__ import annotations

import os

import pytest
import yaml
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import bitcoin_conf, rpcauth
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import ValidationError

with open(os.path.join(os.path.dirname(__file__), "bitcoin_conf_cases.yml"), encoding="utf-8") as _handle:
    CASES = yaml.safe_load(_handle)

ONION = "abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrstuvwx.onion"


def _ids(cases):
    return [case["id"] for case in cases]


def _render(params):
    return bitcoin_conf.render(bitcoin_conf.with_rpc_users(bitcoin_conf.validate(params), None))


def _split(text):
    """(global lines, section header, section lines) of a rendered file."""
    lines = text.splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith("[")]
    assert len(headers) == 1, "exactly one network section is rendered"
    return lines[: headers[0]], lines[headers[0]], lines[headers[0] + 1 :]


def _in_order(expected, actual):
    """True when every expected line occurs in ``actual`` and in the given order."""
    position = 0
    for line in expected:
        try:
            position = actual.index(line, position) + 1
        except ValueError:
            return False
    return True


@pytest.mark.parametrize("case", CASES["invalid"], ids=_ids(CASES["invalid"]))
def test_invalid_input_names_the_option(case):
    with pytest.raises(ValidationError) as err:
        _render(case["params"])
    assert case["option"] in err.value.option, str(err.value)
    assert case.get("reason", "") in err.value.reason, str(err.value)
    assert str(err.value).startswith(err.value.option + ": ")


@pytest.mark.parametrize("case", CASES["render"], ids=_ids(CASES["render"]))
def test_render(case):
    text = _render(case["params"])
    global_lines, header, section_lines = _split(text)
    assert header == f"[{case['section']}]"
    assert _in_order(case.get("global", []), global_lines), text
    assert _in_order(case.get("section_lines", []), section_lines), text
    for prefix in case.get("absent", []):
        assert not any(line.startswith(prefix) for line in text.splitlines()), text
    assert global_lines[-1] == "", "a blank line separates the global part from the section"
    assert text.endswith("\n") and not text.endswith("\n\n")


@pytest.mark.parametrize("case", CASES["render"], ids=_ids(CASES["render"]))
def test_network_only_options_never_in_the_global_part(case):
    parsed = bitcoin_conf.parse(_render(case["params"]))
    assert set(parsed) == {"", case["section"]}
    global_keys = {key for key, _value in parsed[""]}
    assert not global_keys & bitcoin_conf.NETWORK_ONLY_KEYS
    section_keys = {key for key, _value in parsed[case["section"]]}
    assert {"port", "rpcport", "bind", "rpcbind"} <= section_keys


@pytest.mark.parametrize("case", CASES["render"], ids=_ids(CASES["render"]))
def test_render_is_byte_stable(case):
    assert _render(case["params"]) == _render(dict(case["params"]))


def test_golden_file_byte_for_byte():
    golden = CASES["golden"]
    assert _render(golden["params"]) == golden["text"]


@pytest.mark.parametrize(
    ("network", "section", "subdir", "ports"),
    [
        ("main", "main", "", (8333, 8332, 8334)),
        ("test", "test", "testnet3", (18333, 18332, 18334)),
        ("testnet4", "testnet4", "testnet4", (48333, 48332, 48334)),
        ("signet", "signet", "signet", (38333, 38332, 38334)),
        ("regtest", "regtest", "regtest", (18444, 18443, 18445)),
    ],
)
def test_every_network_section_dir_and_default_ports(network, section, subdir, ports):
    n = bitcoin_conf.validate({"name": "n1", "network": network, "onion_address": ONION, "datadir": "/d/n1"})
    assert n["section"] == section
    assert n["network_dir"] == os.path.join("/d/n1", subdir) if subdir else "/d/n1"
    assert (n["ports"]["p2p"], n["ports"]["rpc"], n["ports"]["onion"]) == ports
    parsed = bitcoin_conf.parse(bitcoin_conf.render(bitcoin_conf.with_rpc_users(n, None)))
    assert ("chain", network) in parsed[""]
    assert ("port", str(ports[0])) in parsed[section]
    assert ("bind", f"127.0.0.1:{ports[2]}=onion") in parsed[section]


def test_default_datadir_and_conf_file():
    n = bitcoin_conf.validate({"name": "alpha", "onion_address": ONION})
    assert n["datadir"] == "/var/lib/bitcoind/alpha"
    assert n["conf_file"] == "/var/lib/bitcoind/alpha/bitcoin.conf"


def test_datadir_is_normalised():
    n = bitcoin_conf.validate({"name": "alpha", "onion_address": ONION, "datadir": "/srv//btc/alpha/"})
    assert n["datadir"] == "/srv/btc/alpha"


def test_absent_needs_only_name_and_datadir():
    n = bitcoin_conf.validate({"name": "gone", "state": "absent", "purge": True, "tor_mode": "tor-only"})
    assert (n["state"], n["purge"], n["datadir"]) == ("absent", True, "/var/lib/bitcoind/gone")


def test_absent_still_rejects_an_unsafe_name():
    with pytest.raises(ValidationError) as err:
        bitcoin_conf.validate({"name": "../etc", "state": "absent", "purge": True})
    assert err.value.option == "name"


def test_clearnet_ignores_onion_port_and_address():
    n = bitcoin_conf.validate({"name": "c", "tor_mode": "clearnet", "onion_address": ONION})
    assert n["ports"]["onion"] is None
    assert "externalip" not in bitcoin_conf.render(bitcoin_conf.with_rpc_users(n, None))


# --------------------------------------------------------------------------- rpc_users


def _users_params(**extra):
    params = {"name": "u1", "onion_address": ONION, "rpc_users": [{"user": "alice", "password": "pa55-alice"}]}
    params.update(extra)
    return bitcoin_conf.validate(params)


def test_rpc_users_derives_a_verifying_line_without_writing_the_password():
    text = bitcoin_conf.render(bitcoin_conf.with_rpc_users(_users_params(), None))
    values = rpcauth.lines_from_conf(text)
    assert len(values) == 1
    assert rpcauth.verify(values[0], "alice", "pa55-alice")
    assert "pa55-alice" not in text


def test_rpc_users_keeps_the_line_of_the_current_file():
    first = bitcoin_conf.render(bitcoin_conf.with_rpc_users(_users_params(), None))
    second = bitcoin_conf.render(bitcoin_conf.with_rpc_users(_users_params(), first))
    assert second == first


def test_rpc_users_rotates_after_a_password_change():
    first = bitcoin_conf.render(bitcoin_conf.with_rpc_users(_users_params(), None))
    changed = _users_params(rpc_users=[{"user": "alice", "password": "new-alice"}])
    second = bitcoin_conf.render(bitcoin_conf.with_rpc_users(changed, first))
    (old,) = rpcauth.lines_from_conf(first)
    (new,) = rpcauth.lines_from_conf(second)
    assert new != old
    assert rpcauth.parse(old)[1] == rpcauth.parse(new)[1]  # the user's one line keeps its salt
    assert rpcauth.verify(new, "alice", "new-alice")
    assert not rpcauth.verify(new, "alice", "pa55-alice")


def test_rpc_users_line_equal_to_a_given_rpcauth_is_written_once():
    given = rpcauth.generate("alice", "pa55-alice", "a" * 32)
    text = bitcoin_conf.render(bitcoin_conf.with_rpc_users(_users_params(rpcauth=[given]), None))
    assert rpcauth.lines_from_conf(text) == [given]


def test_rpc_users_come_after_rpcauth_in_order():
    other = rpcauth.generate("zed", "zz", "b" * 32)
    text = bitcoin_conf.render(bitcoin_conf.with_rpc_users(_users_params(rpcauth=[other]), None))
    values = rpcauth.lines_from_conf(text)
    assert values[0] == other
    assert values[1].startswith("alice:")


def test_another_users_line_in_the_file_is_not_reused():
    bob_line = rpcauth.generate("bob", "pa55-alice", "c" * 32)
    current = f"rpcauth={bob_line}\n"
    n = bitcoin_conf.with_rpc_users(_users_params(), current)
    (value,) = n["rpcauth"]
    assert value.startswith("alice:")
    assert rpcauth.parse(value)[1] != "c" * 32


# --------------------------------------------------------------------------- parse


@pytest.mark.parametrize("case", CASES["parse"], ids=_ids(CASES["parse"]))
def test_parse(case):
    expected = {section: [tuple(kv) for kv in pairs] for section, pairs in case["expected"].items()}
    assert bitcoin_conf.parse(case["text"]) == expected


@pytest.mark.parametrize("text", ["server=1\njunk line\n", "=value\n"])
def test_parse_rejects_lines_core_refuses(text):
    with pytest.raises(ValueError, match=r"line [12]:"):
        bitcoin_conf.parse(text)


@pytest.mark.parametrize(
    ("text", "name", "expected"),
    [
        (bitcoin_conf.HEADER + "\n# instance=n1 impl=core\nchain=main\n", "n1", True),
        (bitcoin_conf.HEADER + "\n# instance=n1 impl=core\n", "n2", False),
        (bitcoin_conf.HEADER + "\n# instance=n10 impl=core\n", "n1", False),
        ("chain=main\n" + bitcoin_conf.HEADER + "\n# instance=n1 impl=core\n", "n1", False),
        ("", "n1", False),
        (None, "n1", False),
    ],
)
def test_is_managed(text, name, expected):
    assert bitcoin_conf.is_managed(text, name) is expected
