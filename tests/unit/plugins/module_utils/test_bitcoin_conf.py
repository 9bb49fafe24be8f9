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

ONION = "aaaqeayeaudaocajbifqydiob4ibceqtcqkrmfyydenbwha5dyp3kead.onion"


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


# --------------------------------------------------------------------------- issue 10 / 17 regressions


def _conf(**params):
    base = {"name": "n1", "network": "regtest", "onion_address": ONION}
    base.update(params)
    return _render(base)


def test_both_mode_uses_tor_only_for_onion_peers_and_keeps_discovery():
    """10.6: no proxy= (clearnet direct), onion= for .onion peers, discover=1 beside externalip=."""
    got = bitcoin_conf.settings(_conf(tor_mode="both"), "regtest")
    assert "proxy" not in got
    assert got["onion"] == "127.0.0.1:9050"
    assert got["discover"] == "1"
    assert got["externalip"] == [ONION]
    assert "onlynet" not in got and "dnsseed" not in got
    assert got["bind"] == ["0.0.0.0:18444", "127.0.0.1:18445=onion"]


def test_tor_only_mode_keeps_every_tor_setting():
    got = bitcoin_conf.settings(_conf(tor_mode="tor-only"), "regtest")
    assert (got["proxy"], got["onion"]) == ("127.0.0.1:9050", "127.0.0.1:9050")
    assert (got["onlynet"], got["dnsseed"], got["discover"], got["listenonion"]) == (["onion"], "0", "0", "0")
    assert got["bind"] == ["127.0.0.1:18444", "127.0.0.1:18445=onion"]


@pytest.mark.parametrize(
    ("mode", "expected", "absent"),
    [
        ("console", {"printtoconsole": "1", "debuglogfile": False}, "shrinkdebugfile"),
        ("file", {"printtoconsole": "0", "shrinkdebugfile": "1"}, "debuglogfile"),
    ],
)
def test_debug_log_modes(mode, expected, absent):
    got = bitcoin_conf.settings(_conf(debug_log=mode), "regtest")
    for key, value in expected.items():
        assert got[key] == value
    assert absent not in got


def test_debug_log_default_is_console():
    assert "nodebuglogfile=1" in _conf().splitlines()


def test_addnode_lines_are_in_the_section_after_rpcallowip():
    text = _conf(addnode=["203.0.113.5:18444"], extra_options={"addnode": "203.0.113.6"})
    _global, _header, section = _split(text)
    assert section[-2:] == ["addnode=203.0.113.5:18444", "addnode=203.0.113.6"]


@pytest.mark.parametrize("key", ["noaddnode", "noproxy", "nonolisten"])
def test_negated_keys_refused_in_validate(key):
    with pytest.raises(ValidationError) as err:
        bitcoin_conf.validate({"name": "n", "onion_address": ONION, "extra_options": {key: 1}})
    assert err.value.option == "extra_options." + key
    assert "negated form" in err.value.reason


@pytest.mark.parametrize("key", ["noconnect", "noblocksonly", "nopersistmempool"])
def test_negated_unmanaged_keys_are_still_allowed(key):
    assert f"{key}=1" in _conf(extra_options={key: 1}).splitlines()


# parse: Core's line rules (17.3) and Core's first-value rule (10.10)


@pytest.mark.parametrize("char", ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\r"])
def test_parse_splits_lines_only_at_newline_like_core(char):
    parsed = bitcoin_conf.parse(f"uacomment=x{char}rpcallowip=0.0.0.0/0\n")
    assert [key for key, _value in parsed[""]] == ["uacomment"]
    assert "rpcallowip" not in bitcoin_conf.settings(f"uacomment=x{char}rpcallowip=0.0.0.0/0\n")


def test_parse_trims_like_core():
    # Core trims " \t\r\n" (common/args.cpp GetConfigOptions); a \f or \v stays in the value.
    parsed = bitcoin_conf.parse(" \tuacomment = a b \r\nx=\x0cy\x0b\n")
    assert parsed[""] == [("uacomment", "a b"), ("x", "\x0cy\x0b")]


def test_parse_keeps_section_names_untrimmed_and_refuses_a_leading_dash():
    assert " regtest " in bitcoin_conf.parse("[ regtest ]\nport=1\n")
    with pytest.raises(ValueError, match="line 2"):
        bitcoin_conf.parse("server=1\n-rpcport=1\n")


def test_settings_first_value_wins_in_the_config_file():
    text = "dbcache=100\ndbcache=200\n[regtest]\nrpcport=1111\nrpcport=2222\n"
    got = bitcoin_conf.settings(text, "regtest")
    assert (got["dbcache"], got["rpcport"]) == ("100", "1111")


def test_settings_network_section_beats_the_default_section():
    text = "dbcache=100\nregtest.dbcache=300\n[regtest]\ndbcache=400\n"
    assert bitcoin_conf.settings(text, "regtest")["dbcache"] == "300"
    assert bitcoin_conf.settings(text, "main")["dbcache"] == "100"


def test_settings_network_only_keys_outside_the_section_are_ignored_except_on_main():
    text = "rpcport=1111\naddnode=1.2.3.4\n"
    assert bitcoin_conf.settings(text, "regtest") == {}
    assert bitcoin_conf.settings(text, "main") == {"rpcport": "1111", "addnode": ["1.2.3.4"]}


def test_settings_chain_selector_last_wins():
    assert bitcoin_conf.settings("chain=main\nchain=regtest\n")["chain"] == "regtest"


def test_settings_list_keys_stay_lists():
    text = "rpcauth=a:b$c\nrpcauth=d:e$f\n[regtest]\nbind=127.0.0.1:1\nbind=127.0.0.1:2=onion\nrpcallowip=10.0.0.0/8\n"
    got = bitcoin_conf.settings(text, "regtest")
    assert got["rpcauth"] == ["a:b$c", "d:e$f"]
    assert got["bind"] == ["127.0.0.1:1", "127.0.0.1:2=onion"]
    assert got["rpcallowip"] == ["10.0.0.0/8"]


def test_settings_negation_and_double_negative():
    text = "listen=1\nnolisten=1\nnodaemon=0\nrpcallowip=1.1.1.1\nnorpcallowip=1\nrpcallowip=2.2.2.2\n"
    got = bitcoin_conf.settings(text)
    assert got["listen"] is False, "no value after the last negation: negated"
    assert got["daemon"] == "1", "nodaemon=0 is daemon=1"
    assert got["rpcallowip"] == ["2.2.2.2"]
    assert bitcoin_conf.settings("nolisten=1\n")["listen"] is False
