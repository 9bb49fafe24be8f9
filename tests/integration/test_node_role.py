"""The node role's glue between its roles, run for real (ansible-playbook, connection=local) with
the supervisor, tor and bitcoind roles replaced by stubs that only record what they receive."""

from __future__ import annotations

import json
import os

import pytest

from tests.integration.role_harness import REPO, record, run_play, stub_collection

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


SITE = [{"ansible.builtin.import_playbook": os.path.join(REPO, "playbooks", "site.yml")}]
# Both roles of site.yml are stubs: the real monitoring role would install node_exporter on this
# machine (the play runs against local connections).
SITE_STUBS = {
    "node": {"main.yml": [record("host", "{{ inventory_hostname }}")]},
    "monitoring": {"main.yml": [record("monitoring", "{{ inventory_hostname }}")]},
}
THREE = {"n1": {}, "n2": {}, "n3": {}}


@pytest.fixture(scope="module")
def site_collections(tmp_path_factory):
    return stub_collection(tmp_path_factory.mktemp("site"), SITE_STUBS)


def batches(out: str) -> int:
    return out.count("PLAY [Converge Bitcoin node hosts]")


def test_site_converges_every_host_at_once_by_default(tmp_path, site_collections):
    rc, out, _ = run_play(tmp_path, site_collections, SITE, {}, hosts=THREE)
    assert rc == 0, out
    assert batches(out) == 1, out


@pytest.mark.parametrize(("serial", "expected"), [("1", 3), ("2", 2), ("34%", 3), ('["1", "100%"]', 2)])
def test_site_rolls_across_hosts_with_nodefleet_serial(tmp_path, site_collections, serial, expected):
    """Issue 10.14: a fleet-wide restart can be rolled host by host (one batch per `serial` step)."""
    extra = serial if serial.startswith("[") else json.dumps(serial)
    rc, out, _ = run_play(
        tmp_path, site_collections, SITE, {}, hosts=THREE, extra_args=("-e", '{"nodefleet_serial": %s}' % extra)
    )
    assert rc == 0, out
    assert batches(out) == expected, out
