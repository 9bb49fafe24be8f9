"""Self-tests of the pure helpers behind test_instances.py (no fleet needed).

The fleet checks are only as good as the way they read the plan and what a node prints;
these tables pin that down with real output shapes of supervisorctl 4.2, ss (iproute2 6.1)
and the files the roles write.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# pytest runs with --import-mode=importlib (pyproject.toml): make the sibling helpers importable.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from instance_checks import (
    ANY_IPV4,
    Instance,
    Secret,
    conf_values,
    hidden_service_ports,
    host_instances,
    instances_from_report,
    is_loopback,
    normalise_address,
    parse_ss_listeners,
    parse_supervisorctl_status,
    planned_listeners,
)

PLAN = {
    "user": "bitcoin",
    "home": "/var/lib/bitcoind",
    "rpc_bind": ["127.0.0.1"],
    "zmq_topics": ["rawblock", "hashtx"],
    "instances": [
        {
            "name": "a",
            "impl": "core",
            "network": "regtest",
            "tor_mode": "tor-only",
            "rpc_users": [{"user": "u", "password": "pw-a"}],
        },
        {
            "name": "b",
            "impl": "knots",
            "network": "signet",
            "tor_mode": "clearnet",
            "datadir": "/srv/b",
            "zmq_topics": [],
            "rpc_users": [],
        },
    ],
    "ports": {
        "a": {"rpc": 20000, "p2p": 20001, "onion": 20002, "zmq": {"rawblock": 20003, "rawtx": 20004, "hashtx": 20006}},
        "b": {"rpc": 20010, "p2p": 20011, "onion": 20012, "zmq": {"rawblock": 20013}},
    },
}


def report_for(hosts: dict) -> dict:
    """The json-callback shape of instance_plan.yml."""
    return {
        "plays": [
            {
                "tasks": [
                    {"task": {"name": "nodefleet.bitcoin.bitcoind : Plan the ports"}, "hosts": {}},
                    {"task": {"name": "Report the plan"}, "hosts": {h: {"msg": plan} for h, plan in hosts.items()}},
                ]
            }
        ]
    }


def instance(**overrides) -> Instance:
    fields = {
        "host": "n1",
        "container": "nodefleet-n1",
        "name": "x",
        "impl": "core",
        "network": "regtest",
        "tor_mode": "tor-only",
        "datadir": "/var/lib/bitcoind/x",
        "user": "bitcoin",
        "rpc_bind": ("127.0.0.1",),
        "rpc": 30000,
        "p2p": 30001,
        "onion": 30002,
        "zmq": (("rawtx", 30004),),
    }
    fields.update(overrides)
    return Instance(**fields)


def test_host_instances_apply_the_role_defaults_and_per_instance_topics():
    a, b = host_instances("n1", "nodefleet-n1", PLAN)
    assert (a.name, a.datadir, a.user, a.rpc, a.p2p, a.onion) == (
        "a",
        "/var/lib/bitcoind/a",
        "bitcoin",
        20000,
        20001,
        20002,
    )
    assert a.zmq == (("hashtx", 20006), ("rawblock", 20003))  # the fleet topics, not every planned port
    assert (b.datadir, b.zmq, b.has_onion) == ("/srv/b", (), False)
    assert [u for u, _ in a.rpc_users] == ["u"]
    assert a.rpc_users[0][1].reveal() == "pw-a"
    assert (a.program, a.conf_file, a.onion_dir, a.torrc_dropin) == (
        "bitcoind-a",
        "/var/lib/bitcoind/a/bitcoin.conf",
        "/var/lib/tor/nodefleet-a",
        "/etc/tor/torrc.d/nodefleet-a.conf",
    )


def test_instances_from_report_covers_every_host_and_fails_on_a_missing_one():
    found = instances_from_report(report_for({"n1": PLAN, "n2": PLAN}), {"n1": "c1", "n2": "c2"})
    assert [(i.host, i.container, i.name) for i in found] == [
        ("n1", "c1", "a"),
        ("n1", "c1", "b"),
        ("n2", "c2", "a"),
        ("n2", "c2", "b"),
    ]
    with pytest.raises(RuntimeError, match="no plan for n3"):
        instances_from_report(report_for({"n1": PLAN}), {"n1": "c1", "n3": "c3"})
    with pytest.raises(RuntimeError, match="Report the plan"):
        instances_from_report({"plays": [{"tasks": []}]}, {"n1": "c1"})


def test_secrets_never_show_in_repr_or_str():
    inst = host_instances("n1", "c1", PLAN)[0]
    for text in (repr(inst), str(inst), repr(inst.rpc_users), str(Secret("pw-a")), f"{Secret('pw-a')}"):
        assert "pw-a" not in text
    assert Secret("pw-a") == Secret("pw-a")
    assert Secret("pw-a") != Secret("pw-b")


@pytest.mark.parametrize(
    ("tor_mode", "want"),
    [
        ("tor-only", {("127.0.0.1", 30000), ("127.0.0.1", 30001), ("127.0.0.1", 30002), ("127.0.0.1", 30004)}),
        ("both", {("127.0.0.1", 30000), (ANY_IPV4, 30001), ("127.0.0.1", 30002), ("127.0.0.1", 30004)}),
        ("clearnet", {("127.0.0.1", 30000), (ANY_IPV4, 30001), ("127.0.0.1", 30004)}),
    ],
)
def test_planned_listeners_follow_the_bitcoin_conf_contract(tor_mode, want):
    assert planned_listeners(instance(tor_mode=tor_mode)) == want


def test_planned_listeners_bind_rpc_on_every_rpc_bind_address():
    got = planned_listeners(instance(rpc_bind=("127.0.0.1", "[::1]"), zmq=()))
    assert {pair for pair in got if pair[1] == 30000} == {("127.0.0.1", 30000), ("::1", 30000)}


def test_parse_supervisorctl_status():
    text = (
        "bitcoind-a                       RUNNING   pid 4354, uptime 0:00:09\n"
        "bitcoind-b                       STOPPED   Nov 22 12:00 AM\n"
        "bitcoind-c                       BACKOFF   Exited too quickly (process log may have details)\n"
        "bitcoind-d                       STARTING  \n"
    )
    assert parse_supervisorctl_status(text) == {
        "bitcoind-a": ("RUNNING", 4354),
        "bitcoind-b": ("STOPPED", None),
        "bitcoind-c": ("BACKOFF", None),
        "bitcoind-d": ("STARTING", None),
    }


def test_parse_ss_listeners():
    text = (
        "LISTEN 0      4096   127.0.0.1:9050  0.0.0.0:*\n"
        'LISTEN 0      5      127.0.0.1:42970 0.0.0.0:* users:(("python3",pid=4356,fd=5))\n'
        'LISTEN 0      128      0.0.0.0:42971 0.0.0.0:* users:(("bitcoind",pid=7,fd=3),("bitcoind",pid=8,fd=3))\n'
        'LISTEN 0      128        [::1]:42970    [::]:* users:(("python3",pid=4356,fd=6))\n'
        "LISTEN 0      128            *:8333        *:*\n"
        "UNCONN 0      0      127.0.0.1:5353  0.0.0.0:*\n"
    )
    assert parse_ss_listeners(text) == [
        ("127.0.0.1", 9050, ()),
        ("127.0.0.1", 42970, (4356,)),
        (ANY_IPV4, 42971, (7, 8)),
        ("::1", 42970, (4356,)),
        (ANY_IPV4, 8333, ()),
    ]


@pytest.mark.parametrize(
    ("addr", "normal", "loopback"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("127.0.0.53", "127.0.0.53", True),
        ("[::1]", "::1", True),
        ("::1", "::1", True),
        (ANY_IPV4, ANY_IPV4, False),
        ("*", ANY_IPV4, False),
        ("10.89.0.2", "10.89.0.2", False),
        ("[fe80::1%eth0]", "fe80::1", False),
        ("not-an-ip", "not-an-ip", False),
    ],
)
def test_addresses(addr, normal, loopback):
    assert normalise_address(addr) == normal
    assert is_loopback(addr) is loopback


def test_conf_values_read_every_section_and_skip_comments():
    conf = (
        "# Managed by nodefleet.bitcoin (bitcoind_instance); local edits are overwritten.\n"
        "# externalip=commented.onion\n"
        "rpcauth=demo:aa$bb\n"
        "externalip=abc.onion\n"
        "[regtest]\n"
        "rpcauth=monitor:cc$dd\n"
        "bind=127.0.0.1:1=onion\n"
    )
    assert conf_values(conf, "externalip") == ["abc.onion"]
    assert conf_values(conf, "rpcauth") == ["demo:aa$bb", "monitor:cc$dd"]
    assert conf_values(conf, "bind") == ["127.0.0.1:1=onion"]
    assert conf_values(conf, "rpcpassword") == []


def test_hidden_service_ports():
    dropin = (
        "# Managed by nodefleet.bitcoin (tor_hidden_service); local edits are overwritten.\n"
        "# service=a\n"
        "HiddenServiceDir /var/lib/tor/nodefleet-a\n"
        "HiddenServicePort 20001 127.0.0.1:20002\n"
        "HiddenServicePort 80 127.0.0.1:8080\n"
    )
    assert hidden_service_ports(dropin) == [(20001, "127.0.0.1:20002"), (80, "127.0.0.1:8080")]
    assert hidden_service_ports("HiddenServiceDir /x\n") == []
