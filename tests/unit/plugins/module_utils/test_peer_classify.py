# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

import pytest
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.peer_classify import (
    CATEGORIES,
    classify_peer,
    core_major,
    parse_services,
    peer_breakdown,
)

NODE_NETWORK_WITNESS = "0000000000000409"  # NETWORK | WITNESS | NETWORK_LIMITED
WITH_BIT_29 = "0000000020000409"

CASES = [
    # (id, subver, services, expected)
    ("garbageman-ua", "/Satoshi:29.1.0/Knots:20250305/Garbageman:0.1/", NODE_NETWORK_WITNESS, "libre_relay"),
    ("garbageman-ua-lowercase", "/garbageman:1.0/", NODE_NETWORK_WITNESS, "libre_relay"),
    ("libre-relay-ua", "/Satoshi:29.0.0/Libre Relay:v29.0/", NODE_NETWORK_WITNESS, "libre_relay"),
    ("libre-relay-bit-only", "/Satoshi:28.1.0/", WITH_BIT_29, "libre_relay"),
    ("bit-29-with-core-30-ua", "/Satoshi:30.0.0/", WITH_BIT_29, "libre_relay"),
    ("bit-29-with-knots-ua", "/Satoshi:28.1.0/Knots:20250305/", WITH_BIT_29, "libre_relay"),
    ("knots-ua", "/Satoshi:28.1.0/Knots:20250305/", NODE_NETWORK_WITNESS, "knots"),
    ("core-30", "/Satoshi:30.0.0/", NODE_NETWORK_WITNESS, "core_v30_plus"),
    ("core-29", "/Satoshi:29.0.0/", NODE_NETWORK_WITNESS, "core_pre_v30"),
    ("core-31.1", "/Satoshi:31.1.0/", NODE_NETWORK_WITNESS, "core_v30_plus"),
    ("core-0.21", "/Satoshi:0.21.1/", NODE_NETWORK_WITNESS, "core_pre_v30"),
    ("core-with-comment", "/Satoshi:30.1.0(my node)/", NODE_NETWORK_WITNESS, "core_v30_plus"),
    ("btcd", "/btcwire:0.5.0/btcd:0.24.2/", NODE_NETWORK_WITNESS, "other"),
    ("btcwire", "/btcwire:0.5.0/", NODE_NETWORK_WITNESS, "other"),
    ("empty-ua", "", NODE_NETWORK_WITNESS, "other"),
    ("bit-28-is-not-29", "/btcwire:0.5.0/", "0000000010000409", "other"),
]


@pytest.mark.parametrize(("subver", "services", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_classify_peer(subver, services, expected):
    assert classify_peer({"subver": subver, "services": services}) == expected


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["NETWORK", "WITNESS", "UNKNOWN[2^29]"], "libre_relay"),
        (["NETWORK", "WITNESS"], "core_v30_plus"),
    ],
)
def test_servicesnames_fallback_when_services_missing(names, expected):
    assert classify_peer({"subver": "/Satoshi:30.0.0/", "servicesnames": names}) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0000000020000409", (1 << 29) | 0x409),
        ("0x409", 0x409),
        (0x20000000, 1 << 29),
        ("", 0),
        ("not-hex", 0),
        (None, 0),
        (True, 0),
    ],
)
def test_parse_services(value, expected):
    assert parse_services(value) == expected


@pytest.mark.parametrize(
    ("subver", "expected"),
    [
        ("/Satoshi:30.0.0/", 30),
        ("/Satoshi:9.1/", 9),
        ("/Satoshi:27.0.0/Knots:20240801/", 27),
        ("/btcwire:0.5.0/", None),
    ],
)
def test_core_major(subver, expected):
    assert core_major(subver) == expected


def test_breakdown_counts_every_category_and_keeps_zeroes():
    peers = [
        {"subver": "/Satoshi:30.0.0/", "services": WITH_BIT_29},
        {"subver": "/Satoshi:28.1.0/Knots:20250305/", "services": NODE_NETWORK_WITNESS},
        {"subver": "/Satoshi:28.1.0/Knots:20250305/", "services": NODE_NETWORK_WITNESS},
        {"subver": "/Satoshi:29.0.0/", "services": NODE_NETWORK_WITNESS},
        {"subver": "/Satoshi:30.0.0/", "services": NODE_NETWORK_WITNESS},
        {"subver": "/Satoshi:30.0.0/", "services": NODE_NETWORK_WITNESS},
    ]
    assert peer_breakdown(peers) == {"libre_relay": 1, "knots": 2, "core_v30_plus": 2, "core_pre_v30": 1, "other": 0}
    assert peer_breakdown([]) == dict.fromkeys(CATEGORIES, 0)
    assert sum(peer_breakdown(peers).values()) == len(peers)
