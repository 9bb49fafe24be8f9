# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 11 (onion keys): onion_conflicts finds every onion key or address that two hosts (or two
instances) of the inventory would serve, naming hosts and instances, never the key."""

from __future__ import annotations

import base64
import hashlib

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.nodefleet.bitcoin.plugins.filter import onion_keys as ok

# A key tor 0.4 generated (DisableNetwork, throwaway) and the hostname it wrote for it.
TOR_KEY = (
    "PT0gZWQyNTUxOXYxLXNlY3JldDogdHlwZTAgPT0AAACo631LIpl+l+aWBpDhV3PG"
    "XoveCJYdpRXvZ4m8BgXbXRDm96xMJIzamMBBimOjiRTV7LnZxs6ctY2cHyyVF6U6"
)
TOR_ADDRESS = "tctzcv2fxmtimasuu2v6uprs3trwp5fivyypznpnp2jtoneuoma6wjqd.onion"


def other_key(seed: str) -> str:
    raw = ok.SECRET_KEY_HEADER + hashlib.sha512(seed.encode()).digest()
    return base64.b64encode(raw).decode()


def inst(name, **kw):
    return {"name": name, "impl": "core", "network": "regtest", **kw}


def hv(**hosts):
    return {host: {"bitcoind_instances": instances} for host, instances in hosts.items()}


def write_backup(root, host, name, key=None, onion=None):
    d = root / host
    d.mkdir(parents=True, exist_ok=True)
    if key is not None:
        (d / f"{name}.b64").write_text(key)
    if onion is not None:
        (d / f"{name}.onion").write_text(onion + "\n")


def test_the_address_derived_from_a_key_is_tors():
    assert ok.onion_address_of_key(base64.b64decode(TOR_KEY)) == TOR_ADDRESS


def test_no_conflict_for_distinct_keys_and_clearnet_or_absent_duplicates():
    hostvars = hv(
        a=[inst("x", onion_secret_key=TOR_KEY), inst("c", tor_mode="clearnet", onion_secret_key=other_key("1"))],
        b=[inst("y", onion_secret_key=other_key("2")), inst("c", tor_mode="clearnet", onion_secret_key=other_key("1"))],
        c=[inst("z", state="absent", onion_secret_key=TOR_KEY)],
    )
    assert ok.find_conflicts(["a", "b", "c"], hostvars) == []


def test_a_key_copied_into_group_vars_is_named_with_both_hosts_never_the_key():
    # bitcoind_instance_defaults from a group_vars file shared by both hosts
    hostvars = {
        h: {"bitcoind_instances": [inst(f"i{h}")], "bitcoind_instance_defaults": {"onion_secret_key": TOR_KEY}}
        for h in ("n1", "n2")
    }
    (message,) = ok.find_conflicts(["n1", "n2"], hostvars)
    assert "host n1 instance in1" in message and "host n2 instance in2" in message
    assert "same onion key" in message
    assert TOR_KEY not in message and TOR_KEY[:20] not in message


def test_a_moved_instance_whose_key_is_in_the_inventory_of_both_hosts(tmp_path):
    # old host still lists it and serves it from its backup; the new host got the key in the inventory
    write_backup(tmp_path, "old", "m1", key=TOR_KEY, onion=TOR_ADDRESS)
    hostvars = hv(old=[inst("m1")], new=[inst("m1", onion_secret_key=TOR_KEY)])
    (message,) = ok.find_conflicts(["new", "old"], hostvars, onion_dir=str(tmp_path))
    assert message == (
        "the same onion key would be served by host new instance m1 (its onion_secret_key) and "
        "host old instance m1 (its key backup)"
    )


def test_a_key_against_only_an_address_in_another_hosts_backup(tmp_path):
    write_backup(tmp_path, "old", "m1", onion=TOR_ADDRESS)  # the address, no key file
    hostvars = hv(old=[inst("m1")], new=[inst("m2", onion_secret_key=TOR_KEY)])
    (message,) = ok.find_conflicts(["new", "old"], hostvars, onion_dir=str(tmp_path))
    assert message.startswith(f"onion address {TOR_ADDRESS} would be served by host new instance m2")
    assert "host old instance m1" in message


def test_a_backup_copied_to_a_second_host_dir(tmp_path):
    for host in ("a", "b"):
        write_backup(tmp_path, host, "x", key=TOR_KEY + "\n", onion=TOR_ADDRESS)
    (message,) = ok.find_conflicts(["a", "b"], hv(a=[inst("x")], b=[inst("x")]), onion_dir=str(tmp_path))
    assert "host a instance x (its key backup) and host b instance x (its key backup)" in message


def test_two_instances_of_one_host_with_the_same_key():
    (message,) = ok.find_conflicts(
        ["a"], hv(a=[inst("p", onion_secret_key=TOR_KEY), inst("q", onion_secret_key=TOR_KEY)])
    )
    assert "host a instance p" in message and "host a instance q" in message


def test_hosts_outside_the_play_count_and_this_hosts_own_instances_win():
    # this host's role-level instances (play vars) replace its hostvars list
    hostvars = hv(a=[], b=[inst("x", onion_secret_key=TOR_KEY)])
    assert ok.find_conflicts(["a", "b"], hostvars) == []
    (message,) = ok.find_conflicts(["a", "b"], hostvars, this_host="a", instances=[inst("y", onion_secret_key=TOR_KEY)])
    assert "host a instance y" in message and "host b instance x" in message


def test_a_backup_hosts_listing_is_parsed_like_the_controller_dir(tmp_path):
    write_backup(tmp_path, "a", "x", key=TOR_KEY, onion=TOR_ADDRESS)
    listing = [
        f"a/x.b64\t{ok.key_fingerprint(TOR_KEY)}  -",
        f"a/x.onion\t{TOR_ADDRESS}",
        "garbage line",
        "a/sub/dir.b64\tzz",
    ]
    parsed = ok.onion_backup_listing(listing)
    from_dir = ok.read_backup_dir(str(tmp_path))
    assert parsed == {"a": {"x": {"key": from_dir["a"]["x"]["key"], "onion": TOR_ADDRESS}}}
    hostvars = hv(a=[inst("x")], b=[inst("x", onion_secret_key=TOR_KEY)])
    (message,) = ok.find_conflicts(["a", "b"], hostvars, backups=parsed)
    assert "host a instance x (its key backup)" in message


def test_a_bad_inventory_fails_naming_the_host():
    with pytest.raises(AnsibleFilterError, match="host 'a': bitcoind_instances must be a list"):
        ok.onion_conflicts(["a"], {"a": {"bitcoind_instances": "x"}})
    with pytest.raises(AnsibleFilterError, match="list of inventory host names"):
        ok.onion_conflicts("a", {})
