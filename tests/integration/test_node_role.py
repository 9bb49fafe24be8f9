"""The node role's glue between its roles, run for real (ansible-playbook, connection=local) with
the supervisor, tor and bitcoind roles replaced by stubs that only record what they receive."""

from __future__ import annotations

import pytest

from tests.integration.role_harness import record, run_play, stub_collection

STUBS = {
    "bitcoind": {
        "main.yml": [record("main_proxy", "{{ bitcoind_tor_proxy }}")],
        "validate.yml": [record("validate_proxy", "{{ bitcoind_tor_proxy }}")],
    },
    "tor": {"main.yml": [record("tor", "ran")], "validate.yml": [record("tor_validate", "ran")]},
    "supervisor": {"main.yml": [record("supervisor", "ran")], "validate.yml": [record("sup_validate", "ran")]},
}
PLAY = [{"hosts": "fleet", "gather_facts": False, "roles": [{"role": "nodefleet.bitcoin.node"}]}]


@pytest.fixture(scope="module")
def collections(tmp_path_factory):
    return stub_collection(tmp_path_factory.mktemp("coll"), STUBS)


@pytest.mark.parametrize(
    ("host_vars", "expected"),
    [
        pytest.param({}, "127.0.0.1:9050", id="defaults"),
        pytest.param({"tor_socks_port": 9150}, "127.0.0.1:9150", id="tor-socks-port-moved"),
        pytest.param({"tor_socks_address": "127.0.0.2", "tor_socks_port": 9250}, "127.0.0.2:9250", id="address-too"),
        pytest.param({"tor_socks_address": "::1"}, "[::1]:9050", id="ipv6-bracketed"),
        pytest.param(
            {"tor_socks_port": 9150, "bitcoind_tor_proxy": "10.0.0.5:9050"}, "10.0.0.5:9050", id="inventory-wins"
        ),
    ],
)
def test_bitcoind_gets_tors_socks_listener(tmp_path, collections, host_vars, expected):
    """Issue 10.9: changing tor_socks_port used to leave bitcoind's proxy= at 127.0.0.1:9050."""
    rc, out, seen = run_play(tmp_path, collections, PLAY, host_vars)
    assert rc == 0, out
    assert seen.get("validate_proxy") == expected, out
    assert seen.get("main_proxy") == expected, out
    assert seen.get("tor") == "ran", out


def test_without_the_tor_role_the_inventory_socks_settings_still_reach_bitcoind(tmp_path, collections):
    rc, out, seen = run_play(tmp_path, collections, PLAY, {"node_manage_tor": False, "tor_socks_port": 9350})
    assert rc == 0, out
    assert "tor" not in seen
    assert seen.get("main_proxy") == "127.0.0.1:9350", out
