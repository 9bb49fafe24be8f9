# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the nodefleet.bitcoin.port_plan filter."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.nodefleet.bitcoin.plugins.filter import port_plan as pp

TOPICS = ("rawblock", "rawtx", "hashblock", "hashtx", "sequence")


def expected_slot(name: str, slots: int = 1270) -> int:
    """Independent statement of the documented hash: SHA-256, first 8 bytes big-endian, mod slots."""
    return int(hashlib.sha256(name.encode()).hexdigest()[:16], 16) % slots


def slot_ports(base: int, slot: int, size: int = 10) -> dict:
    start = base + slot * size
    return {
        "slot": slot,
        "rpc": start,
        "p2p": start + 1,
        "onion": start + 2,
        "zmq": {topic: start + 3 + i for i, topic in enumerate(TOPICS)},
    }


def all_ports(plan: dict) -> list:
    return [plan["rpc"], plan["p2p"], plan["onion"], *plan["zmq"].values()]


def find_colliding_names(slots: int = 1270) -> tuple:
    """Two distinct names whose hashed slots are equal (found by search, not hard-coded)."""
    seen = {}
    for i in itertools.count():
        name = f"node{i}"
        slot = expected_slot(name, slots)
        if slot in seen:
            return seen[slot], name
        seen[slot] = name


# --- layout and per-instance ports (table-driven) ---------------------------------------

PLAN_CASES = [
    pytest.param(
        [{"name": "a", "port_slot": 0}],
        {},
        {"a": slot_ports(20000, 0)},
        id="explicit-slot-0",
    ),
    pytest.param(
        [{"name": "a", "port_slot": 7}],
        {"base": 30000, "slots": 1000},
        {"a": slot_ports(30000, 7)},
        id="explicit-slot-other-base",
    ),
    pytest.param(
        [{"name": "core-main"}],
        {},
        {"core-main": slot_ports(20000, expected_slot("core-main"))},
        id="hashed-slot",
    ),
    pytest.param(
        [{"name": "a", "port_slot": 3}],
        {"slot_size": 12, "slots": 1000},
        {"a": slot_ports(20000, 3, size=12)},
        id="slot-size-12",
    ),
    pytest.param(
        [{"name": "a", "port_slot": 1, "ports": {"p2p": 18444, "zmq": {"rawtx": 28332}}}],
        {},
        {"a": {**slot_ports(20000, 1), "p2p": 18444, "zmq": {**slot_ports(20000, 1)["zmq"], "rawtx": 28332}}},
        id="pins-win",
    ),
    pytest.param(
        [{"name": "gone", "state": "absent", "port_slot": 0}, {"name": "b", "port_slot": 0, "state": "present"}],
        {},
        {"b": slot_ports(20000, 0)},
        id="absent-instances-reserve-nothing",
    ),
    pytest.param([], {}, {}, id="empty"),
]


@pytest.mark.parametrize(("instances", "kwargs", "expected"), PLAN_CASES)
def test_plan(instances, kwargs, expected):
    assert pp.plan_ports(instances, **kwargs) == expected


def test_hashed_slot_matches_documented_algorithm_for_many_names():
    for i in range(200):
        name = f"inst-{i}"
        assert pp.hashed_slot(name, 4000) == expected_slot(name, 4000)
        assert pp.hashed_slot(name, 1270) == expected_slot(name)
        assert 0 <= pp.hashed_slot(name, 17) < 17


# --- stability: adding/removing/reordering never moves another instance ------------------

FLEET = [
    {"name": "core-main"},
    {"name": "knots-signet"},
    {"name": "gm-regtest", "port_slot": 42},
    {"name": "core-test", "ports": {"rpc": 18332}},
    {"name": "knots-regtest", "ports": {"zmq": {"sequence": 28999}}},
]


def test_ports_are_stable_under_any_subset_and_order():
    full = pp.plan_ports(FLEET)
    assert len({p for plan in full.values() for p in all_ports(plan)}) == 8 * len(FLEET)
    for size in range(1, len(FLEET) + 1):
        for subset in itertools.permutations(FLEET, size):
            plan = pp.plan_ports(list(subset))
            assert set(plan) == {i["name"] for i in subset}
            for name, ports in plan.items():
                assert ports == full[name], (name, [i["name"] for i in subset])


def test_marking_an_instance_absent_does_not_move_the_others():
    full = pp.plan_ports(FLEET)
    for removed in FLEET:
        rest = [dict(i, state="absent") if i is removed else i for i in FLEET]
        plan = pp.plan_ports(rest)
        assert removed["name"] not in plan
        assert plan == {k: v for k, v in full.items() if k != removed["name"]}


# --- conflicts fail naming both instances and the port ------------------------------------


def test_hash_collision_names_both_instances_slot_and_remedy():
    first, second = find_colliding_names()
    slot = expected_slot(first)
    with pytest.raises(pp.PortPlanError) as err:
        pp.plan_ports([{"name": first}, {"name": second}])
    msg = str(err.value)
    assert repr(first) in msg and repr(second) in msg
    assert str(20000 + slot * 10) in msg
    assert f"slot {slot}" in msg
    assert "port_slot" in msg
    # The remedy works: an explicit slot for one of them resolves it.
    other = (slot + 1) % 1270
    plan = pp.plan_ports([{"name": first}, {"name": second, "port_slot": other}])
    assert plan[second]["rpc"] == 20000 + other * 10


CONFLICT_CASES = [
    pytest.param(
        [{"name": "a", "port_slot": 5}, {"name": "b", "port_slot": 5}],
        None,
        ["'a'", "'b'", "20050", "port_slot"],
        id="same-explicit-slot",
    ),
    pytest.param(
        [{"name": "a", "port_slot": 5}, {"name": "b", "port_slot": 9, "ports": {"p2p": 20053}}],
        None,
        ["'a'", "'b'", "20053", "zmq rawblock", "p2p", "port_slot"],
        id="pin-on-another-instances-port",
    ),
    pytest.param(
        [{"name": "a", "port_slot": 1, "ports": {"rpc": 9050}}],
        None,
        ["'a'", "9050", "tor SocksPort", "port_slot"],
        id="pin-on-tor-socks",
    ),
    pytest.param(
        [{"name": "a", "port_slot": 1, "ports": {"onion": 9051}}],
        None,
        ["'a'", "9051", "tor ControlPort"],
        id="pin-on-tor-control",
    ),
    pytest.param(
        [{"name": "a", "port_slot": 0}],
        {20003: "a metrics exporter"},
        ["'a'", "20003", "a metrics exporter"],
        id="custom-reserved",
    ),
    pytest.param(
        [{"name": "a", "port_slot": 0, "ports": {"p2p": 20000}}],
        None,
        ["'a'", "20000", "rpc", "p2p"],
        id="own-ports-collide",
    ),
]


@pytest.mark.parametrize(("instances", "reserved", "fragments"), CONFLICT_CASES)
def test_conflicts(instances, reserved, fragments):
    with pytest.raises(pp.PortPlanError) as err:
        pp.plan_ports(instances, reserved=reserved)
    for fragment in fragments:
        assert fragment in str(err.value)


# --- invalid input -------------------------------------------------------------------------

INVALID_CASES = [
    pytest.param([{"name": "a"}, {"name": "a"}], {}, "appears more than once", id="duplicate-name"),
    pytest.param([{"port_slot": 1}], {}, "non-empty string 'name'", id="missing-name"),
    pytest.param(["a"], {}, "non-empty string 'name'", id="not-a-dict"),
    pytest.param("a", {}, "must be a list", id="input-not-list"),
    pytest.param([{"name": "a", "port_slot": -1}], {}, "non-negative integer", id="negative-slot"),
    pytest.param([{"name": "a", "port_slot": "3"}], {}, "non-negative integer", id="string-slot"),
    pytest.param([{"name": "a", "port_slot": True}], {}, "non-negative integer", id="bool-slot"),
    pytest.param([{"name": "a", "port_slot": 5000}], {}, "above 65535", id="slot-out-of-range"),
    pytest.param([{"name": "a", "ports": {"rpc": 80}}], {}, "outside 1024-65535", id="pin-below-1024"),
    pytest.param([{"name": "a", "ports": {"rpc": 70000}}], {}, "outside 1024-65535", id="pin-above-65535"),
    pytest.param([{"name": "a", "ports": {"rpc": "x"}}], {}, "not an integer port", id="pin-not-int"),
    pytest.param([{"name": "a", "ports": {"web": 20001}}], {}, "unknown key(s) in ports: web", id="unknown-pin"),
    pytest.param([{"name": "a", "ports": {"zmq": {"pubraw": 1}}}], {}, "unknown ZMQ topic", id="unknown-topic"),
    pytest.param([{"name": "a", "ports": [1]}], {}, "ports must be a dict", id="ports-not-dict"),
    pytest.param([], {"slot_size": 7}, "slot_size must be at least 8", id="slot-size-too-small"),
    pytest.param([], {"base": 80}, "below 1024", id="base-too-low"),
    pytest.param([], {"slots": 0}, "slots must be at least 1", id="no-slots"),
    pytest.param([], {"base": 60000, "slots": 1000}, "above 65535", id="layout-too-large"),
    pytest.param([], {"reserved": "9050"}, "reserved must be a dict", id="reserved-not-dict"),
]


@pytest.mark.parametrize(("instances", "kwargs", "fragment"), INVALID_CASES)
def test_invalid_input(instances, kwargs, fragment):
    with pytest.raises(pp.PortPlanError) as err:
        pp.plan_ports(instances, **kwargs)
    assert fragment in str(err.value)


def test_filter_raises_ansible_filter_error_with_the_message():
    with pytest.raises(AnsibleFilterError, match="appears more than once"):
        pp.port_plan([{"name": "a"}, {"name": "a"}])


def test_filter_is_registered_under_its_documented_name():
    filters = pp.FilterModule().filters()
    assert filters["port_plan"]([{"name": "x", "port_slot": 2}])["x"]["rpc"] == 20020


def test_default_plan_stays_below_the_ephemeral_port_range():
    # An outgoing connection's local end may take any port in 32768-60999; an instance whose
    # port is taken that way cannot bind it when it restarts (found by the chaos matrix).
    plan = pp.plan_ports([{"name": "inst-%d" % i} for i in range(5)] + [{"name": "last", "port_slot": 1269}])
    highest = max(max(v for k, v in p.items() if k != "zmq") for p in plan.values())
    highest = max([highest] + [port for p in plan.values() for port in p["zmq"].values()])
    assert highest < 32768
