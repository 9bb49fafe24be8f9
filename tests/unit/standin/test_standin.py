# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the pure functions of the stand-in bitcoind (tests/standin/bitcoind).

Each table pins one Bitcoin Core behaviour the collection relies on; the Core source that
defines it is named next to the table (see docs/standin.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.machinery
import importlib.util
import ipaddress
import json
import os
from pathlib import Path

import pytest

# tests/standin is test infrastructure and is left out of the built collection (galaxy.yml
# build_ignore); under `ansible-test units` on the built tree point NODEFLEET_STANDIN at the
# script, otherwise this module is skipped there. From the repository it always runs.
STANDIN = Path(os.environ.get("NODEFLEET_STANDIN") or Path(__file__).resolve().parents[2] / "standin" / "bitcoind")
if not STANDIN.is_file():
    pytest.skip("stand-in not in this tree: %s (set NODEFLEET_STANDIN)" % STANDIN, allow_module_level=True)


def _load():
    loader = importlib.machinery.SourceFileLoader("nodefleet_standin_bitcoind", str(STANDIN))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


sb = _load()


# -- bitcoin.conf parsing (common/config.cpp GetConfigOptions) ---------------------------


def test_config_sections_negation_and_comments():
    text = """
    # comment
    chain=regtest   # trailing comment
    server=1
    nolisten=1
    nodnsseed=0
    foo=bar
    main.rpcport=9000
    [regtest]
    port=18500
    bind=127.0.0.1:18500
    [test]
    port=18600
    main.port=1
    """
    settings, sections, log = sb.parse_config_text(text, "/x/bitcoin.conf")
    assert settings[""]["chain"] == ["regtest"]
    assert settings[""]["listen"] == [False]  # nolisten=1 negates
    assert settings[""]["dnsseed"] == [True]  # nodnsseed=0 is a double negative: true
    assert settings["regtest"]["port"] == ["18500"]
    assert settings["test"]["port"] == ["18600"]
    assert "main" in settings and settings["main"]["rpcport"] == ["9000"]
    assert [s[0] for s in sections] == ["main", "regtest", "test"]
    assert "Ignoring unknown configuration value foo" in log
    # inside [test], "main.port" is the option "main.port" of section test: unknown, as in Core
    assert "Ignoring unknown configuration value test.main.port" in log
    assert "Warning: parsed potentially confusing double-negative -dnsseed=0" in log


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "-dash=1\n",
            "Error reading configuration file: parse error on line 1: -dash=1, options in configuration file "
            "must be specified without leading -",
        ),
        (
            "nono\n",
            "Error reading configuration file: parse error on line 1: nono, if you intended to specify a "
            "negated option, use nono=1 instead",
        ),
        ("server=1\njunk\n", "Error reading configuration file: parse error on line 2: junk"),
        (
            "server=1\nrpcuser=u\nrpcpassword=some#pass\n",
            "Error reading configuration file: parse error on line 3, using # in rpcpassword can be ambiguous "
            "and should be avoided",
        ),
    ],
)
def test_config_parse_errors_have_cores_text(text, message):
    with pytest.raises(sb.InitError) as exc:
        sb.parse_config_text(text)
    assert str(exc.value) == message


def _args(conf_text: str, cmdline=None):
    settings, _sections, _log = sb.parse_config_text(conf_text)
    cmd = sb.parse_command_line(cmdline or [])[0]
    args = sb.Args(cmd, settings)
    args.network = sb.select_chain(args)
    return args


@pytest.mark.parametrize(
    ("conf", "cmdline", "chain"),
    [
        ("", [], "main"),
        ("chain=regtest\n", [], "regtest"),
        ("regtest=1\n", [], "regtest"),
        ("testnet=1\n", [], "test"),
        ("testnet4=1\n", [], "testnet4"),
        ("signet=1\n", [], "signet"),
        ("chain=signet\n", [], "signet"),
        ("", ["-regtest"], "regtest"),
        ("", ["-chain=testnet4"], "testnet4"),
        ("regtest=1\n", ["-noregtest"], "main"),
        ("[regtest]\nregtest=1\n", [], "main"),  # only the default section selects the chain
    ],
)
def test_chain_selection(conf, cmdline, chain):
    assert _args(conf, cmdline).network == chain


def test_chain_selection_rejects_two_networks():
    with pytest.raises(sb.InitError, match="Can use at most one"):
        _args("regtest=1\n", ["-testnet"])


@pytest.mark.parametrize("chain", ["test", "testnet4", "signet", "regtest"])
@pytest.mark.parametrize("option", ["port", "bind", "rpcport", "rpcbind", "addnode", "connect", "wallet"])
def test_network_only_option_in_default_section_is_an_error(chain, option):
    args = _args(f"chain={chain}\n{option}=127.0.0.1:1234\n")
    errors = sb.unsuitable_section_errors(args, chain)
    assert errors == [f"Config setting for -{option} only applied on {chain} network when in [{chain}] section."]


@pytest.mark.parametrize(
    ("conf", "cmdline"),
    [
        ("chain=main\nport=1234\n", []),  # main uses the default section
        ("chain=regtest\n[regtest]\nport=1234\n", []),
        ("chain=regtest\nport=1234\n[regtest]\nport=1235\n", []),  # overridden in the section
        ("chain=regtest\nport=1234\n", ["-port=1236"]),  # overridden on the command line
    ],
)
def test_network_only_option_accepted_where_core_accepts_it(conf, cmdline):
    args = _args(conf, cmdline)
    assert sb.unsuitable_section_errors(args, args.network) == []


def test_network_only_option_outside_section_is_ignored_and_section_value_wins():
    args = _args("chain=regtest\nport=1111\nrpcauth=a:b$c\n[regtest]\nport=2222\n")
    assert args.get_int("port", 0) == 2222
    assert args.get_args("rpcauth") == ["a:b$c"]  # not network-only: default section applies


def test_single_value_precedence_matches_core():
    # command line: last wins; config file: first wins; command line beats config
    args = _args("dbcache=100\ndbcache=200\n", [])
    assert args.get_int("dbcache", 0) == 100
    args = _args("dbcache=100\n", ["-dbcache=300", "-dbcache=400"])
    assert args.get_int("dbcache", 0) == 400
    args = _args("txindex=1\n", ["-notxindex"])
    assert args.get_bool("txindex", True) is False


def test_multi_value_negation_drops_lower_priority_values():
    args = _args("onlynet=ipv4\n", ["-noonlynet"])
    assert args.get_args("onlynet") == []
    args = _args("onlynet=ipv4\nonlynet=onion\n", [])
    assert args.get_args("onlynet") == ["ipv4", "onion"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-foo"], "Error parsing command line arguments: Invalid parameter -foo"),
        (["-foo=bar"], "Error parsing command line arguments: Invalid parameter -foo=bar"),
        (["-standinwarmup=1"], "Error parsing command line arguments: Invalid parameter -standinwarmup=1"),
        (["-regtest.port=1"], "Error parsing command line arguments: Invalid parameter -regtest.port=1"),
    ],
)
def test_unknown_command_line_option_fails_like_core(argv, message):
    with pytest.raises(sb.InitError) as exc:
        sb.parse_command_line(argv)
    assert str(exc.value) == message


def test_command_line_accepts_double_dash_and_stops_at_positional():
    settings, positional, _ = sb.parse_command_line(["--regtest", "-datadir=/d", "getinfo", "-x"])
    assert settings == {"regtest": [""], "datadir": ["/d"]}
    assert positional == ["getinfo", "-x"]


def test_unrecognized_sections_warn_with_file_and_line():
    _settings, sections, _ = sb.parse_config_text("[testnet]\nserver=1\n[regtest]\n", "/c.conf")
    assert sb.unrecognized_sections(sections) == ["/c.conf:1 Section [testnet] is not recognized."]


# -- RPC authentication (httprpc.cpp) -----------------------------------------------------


def _rpcauth(user, password, salt="0123456789abcdef0123456789abcdef"):
    digest = hmac.new(salt.encode(), password.encode(), hashlib.sha256).hexdigest()
    return f"{user}:{salt}${digest}"


def _basic(user, password):
    return "Basic " + base64.b64encode((f"{user}:{password}").encode()).decode()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (_basic("alice", "right"), (True, "alice")),
        (_basic("alice", "wrong"), (False, "alice")),
        (_basic("bob", "right"), (False, "bob")),
        ("Bearer xyz", (False, "")),
        ("Basic !!!notbase64", (False, "")),
        (_basic("__cookie__", "c00k1e"), (True, "__cookie__")),
    ],
)
def test_rpc_authorized(header, expected):
    entries = sb.parse_rpcauth([_rpcauth("alice", "right")])
    assert sb.rpc_authorized(header, "__cookie__:c00k1e", entries) == expected


def test_rpcauth_key_is_the_salt_string_not_its_bytes():
    salt = "00" * 16
    wrong = hmac.new(bytes.fromhex(salt), b"pw", hashlib.sha256).hexdigest()
    assert not sb.check_user_authorized("u", "pw", [("u", salt, wrong)])
    assert sb.check_user_authorized("u", "pw", sb.parse_rpcauth([_rpcauth("u", "pw", salt)]))


@pytest.mark.parametrize("bad", ["alice", "alice:salt", "a:b:c$d", "alice:s$h$x"])
def test_malformed_rpcauth_is_rejected(bad):
    with pytest.raises(ValueError, match=r"Invalid -rpcauth argument\."):
        sb.parse_rpcauth([bad])


@pytest.mark.parametrize(
    ("peer", "allow", "allowed"),
    [
        ("127.0.0.1", [], True),
        ("127.5.6.7", [], True),
        ("::1", [], True),
        ("::ffff:127.0.0.1", [], True),
        ("10.0.0.5", [], False),
        ("10.0.0.5", ["10.0.0.0/8"], True),
        ("10.0.0.5", ["10.0.0.0/255.255.255.0"], True),
        ("10.0.1.5", ["10.0.0.0/24"], False),
        ("192.168.1.2", ["192.168.1.2"], True),
        ("2001:db8::1", ["10.0.0.0/8"], False),
    ],
)
def test_rpcallowip(peer, allow, allowed):
    assert sb.client_allowed(peer, [sb.parse_subnet(a) for a in allow]) is allowed


@pytest.mark.parametrize("bad", ["10.0.0.0/abc", "nonsense", "300.1.1.1"])
def test_invalid_rpcallowip(bad):
    with pytest.raises(ValueError):
        sb.parse_subnet(bad)


@pytest.mark.parametrize(("code", "status"), [(-32600, 400), (-32601, 404), (-28, 500), (-1, 500), (-32700, 500)])
def test_http_status_for_legacy_rpc_errors(code, status):
    assert sb.http_status_for_error(code) == status


def test_rpcwhitelist_intersects_lines_for_one_user():
    wl = sb.parse_rpcwhitelist(["ro:getblockcount,getpeerinfo,stop", "ro:getblockcount,stop", "x:uptime"])
    assert wl == {"ro": {"getblockcount", "stop"}, "x": {"uptime"}}


# -- identity baked in per implementation --------------------------------------------------


@pytest.mark.parametrize(
    ("impl", "version", "version_int", "subversion", "first_line", "libre"),
    [
        ("core", "30.0", 300000, "/Satoshi:30.0.0/", "Bitcoin Core daemon version v30.0.0", False),
        ("core", "29.2", 290200, "/Satoshi:29.2.0/", "Bitcoin Core daemon version v29.2.0", False),
        (
            "knots",
            "29.1.knots20250903",
            290100,
            "/Satoshi:29.1.0/Knots:20250903/",
            "Bitcoin Knots daemon version v29.1.knots20250903",
            False,
        ),
        (
            "garbageman",
            "29.1.knots20250903-garbageman1",
            290100,
            "/Satoshi:29.1.0/Knots:20250903/Garbageman:1/",
            "Bitcoin Knots daemon version v29.1.knots20250903-garbageman1",
            True,
        ),
    ],
)
def test_identity(impl, version, version_int, subversion, first_line, libre):
    ident = sb.identity(impl, version)
    assert ident["version"] == version_int
    assert ident["subversion"] == subversion
    assert sb.version_text(ident).splitlines()[0] == first_line
    assert bool(ident["services"] & (1 << 29)) is libre
    assert ident["services"] & 0x809 == 0x809  # NETWORK | WITNESS | P2P_V2


@pytest.mark.parametrize(("impl", "version"), [("core", "x"), ("knots", "29.1"), ("garbageman", "29.1.knots20250903")])
def test_identity_rejects_mismatched_versions(impl, version):
    with pytest.raises(ValueError):
        sb.identity(impl, version)


@pytest.mark.parametrize(
    ("services", "names"),
    [
        (0x0C09, ["NETWORK", "WITNESS", "NETWORK_LIMITED", "P2P_V2"]),
        (0x20000C09, ["NETWORK", "WITNESS", "NETWORK_LIMITED", "P2P_V2", "UNKNOWN[2^29]"]),
        (0x0044, ["BLOOM", "COMPACT_FILTERS"]),
        (0, []),
    ],
)
def test_services_names(services, names):
    assert sb.services_names(services) == names


# -- chain arithmetic ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bits", "difficulty", "work"),
    [
        (0x1D00FFFF, 1.0, 0x100010001),
        (0x207FFFFF, 4.656542373906925e-10, 2),
    ],
)
def test_difficulty_and_work_from_bits(bits, difficulty, work):
    assert sb.difficulty_from_bits(bits) == pytest.approx(difficulty, rel=1e-12)
    assert sb.block_work(bits) == work


def test_block_hash_is_genesis_then_deterministic():
    assert sb.block_hash("regtest", 0) == "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
    assert sb.block_hash("regtest", 5) == sb.block_hash("regtest", 5)
    assert sb.block_hash("regtest", 5) != sb.block_hash("regtest", 6)
    assert sb.block_hash("regtest", 5) != sb.block_hash("signet", 5)


@pytest.mark.parametrize(
    ("address", "chain", "valid"),
    [
        # BIP173 / BIP350 test vectors and well-known test addresses
        ("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", "main", True),
        ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5", "main", False),  # bad checksum
        ("tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7", "test", True),
        ("bcrt1q0yq2azut8gn2xu3y2g0xucf8pny6w8uxmyf220", "regtest", True),
        ("bcrt1q0yq2azut8gn2xu3y2g0xucf8pny6w8uxmyf220", "main", False),  # wrong network
        ("mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn", "regtest", True),
        ("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", "main", True),
        ("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", "regtest", False),
        ("not-an-address", "regtest", False),
    ],
)
def test_address_validation(address, chain, valid):
    assert sb.is_valid_address(address, chain) is valid


# -- networks / binds ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:18445=onion", ("onion", "127.0.0.1", 18445)),
        ("127.0.0.1=onion", ("onion", "127.0.0.1", 8334)),
        ("0.0.0.0:8333", ("p2p", "0.0.0.0", 8333)),
        ("127.0.0.1", ("p2p", "127.0.0.1", 8333)),
        ("[::1]:9000", ("p2p", "::1", 9000)),
    ],
)
def test_parse_bind(value, expected):
    assert sb.parse_bind(value, 8333, 8334) == expected


@pytest.mark.parametrize("bad", ["127.0.0.1:1=i2p", "example.com:8333", "127.0.0.1:notaport"])
def test_parse_bind_rejects(bad):
    with pytest.raises(ValueError):
        sb.parse_bind(bad, 8333, 8334)


def _networks(conf):
    args = _args(conf)
    return {n["name"]: n for n in sb.network_config(args)["networks"]}, args


def test_tor_only_networks_match_core():
    nets, args = _networks(
        "onlynet=onion\nproxy=127.0.0.1:9050\nonion=127.0.0.1:9050\nlistenonion=0\nexternalip=" + "a" * 56 + ".onion\n"
    )
    assert [k for k, n in nets.items() if n["reachable"]] == ["onion"]
    assert nets["onion"]["proxy"] == "127.0.0.1:9050"
    assert nets["onion"]["proxy_randomize_credentials"] is True
    assert nets["ipv4"]["limited"] is True and nets["ipv4"]["proxy"] == "127.0.0.1:9050"
    assert set(nets["ipv4"]) == {"name", "limited", "reachable", "proxy", "proxy_randomize_credentials"}
    reach = sb.network_config(args)["reachable"]
    assert sb.local_addresses(args, "main", reach) == [{"address": "a" * 56 + ".onion", "port": 8333, "score": 4}]


def test_clearnet_onion_unreachable_without_proxy():
    nets, args = _networks("externalip=" + "b" * 56 + ".onion\n")
    assert nets["onion"]["reachable"] is False and nets["ipv4"]["reachable"] is True
    assert nets["i2p"]["reachable"] is False and nets["cjdns"]["reachable"] is False
    assert sb.local_addresses(args, "main", sb.network_config(args)["reachable"]) == []


def test_onlynet_onion_without_any_proxy_is_an_init_error():
    args = _args("onlynet=onion\nlistenonion=0\n")
    assert "none of -proxy, -onion or -listenonion is given" in sb.network_config(args)["errors"][0]


def test_listen_port_prefers_first_bind_with_port():
    args = _args("chain=regtest\n[regtest]\nport=1000\nbind=127.0.0.1:2000=onion\nbind=0.0.0.0:3000\n")
    assert sb.listen_port(args, "regtest") == 3000
    assert sb.listen_port(_args("chain=regtest\n[regtest]\nport=1000\n"), "regtest") == 1000
    assert sb.listen_port(_args("chain=regtest\n"), "regtest") == 18444


# -- scripted peers and JSON ---------------------------------------------------------------


def test_parse_peers_accepts_hex_or_int_services_and_derives_network():
    peers = sb.parse_peers(
        [
            {"addr": "1.2.3.4:8333", "services": "20000c09", "subver": "/Satoshi:29.1.0/Knots:20250903/"},
            {"addr": "x" * 56 + ".onion:8333", "services": 1033, "inbound": True},
            {"addr": "[2001:db8::1]:8333"},
            {"addr": "[2a01:4f8::1]:8333"},
            {"addr": "127.0.0.1:18444"},
            {"addr": "10.1.2.3:8333"},
            {"addr": "203.0.113.5:8333"},
        ]
    )
    assert [p["services"] for p in peers[:2]] == [0x20000C09, 1033]
    # Core's GetNetClass: documentation, loopback and private addresses are not publicly routable
    assert [p["network"] for p in peers] == ["ipv4", "onion"] + ["not_publicly_routable", "ipv6"] + [
        "not_publicly_routable"
    ] * 3


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"addr": "x"}, "JSON list"),
        ([{"subver": "x"}], "entry 0"),
        ([{"addr": "1.2.3.4:1", "bogus": 1}], "unknown keys bogus"),
        ([{"addr": "1.2.3.4:1", "services": "zz"}], "not hex"),
        ([{"addr": "1.2.3.4:1", "network": "ham"}], "network 'ham'"),
    ],
)
def test_parse_peers_rejects(data, fragment):
    with pytest.raises(ValueError, match=fragment):
        sb.parse_peers(data)


def test_amounts_are_json_numbers_with_eight_decimals():
    text = sb.to_json({"relayfee": sb.Amount("0.00000100"), "s": "Loading block index…"})
    assert text == '{"relayfee":0.00000100,"s":"Loading block index…"}'
    assert json.loads(text)["relayfee"] == pytest.approx(1e-6)


def test_split_host_port():
    assert sb.split_host_port("[::1]:8332", 1) == ("::1", 8332)
    assert sb.split_host_port("::1", 1) == ("::1", 1)
    assert sb.split_host_port("127.0.0.1", 5) == ("127.0.0.1", 5)
    assert ipaddress.ip_address(sb.split_host_port("0.0.0.0:80", 1)[0])
