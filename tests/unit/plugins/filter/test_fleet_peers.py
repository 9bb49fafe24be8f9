# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the nodefleet.bitcoin.fleet_peers filter (fleet peering, issue 9)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.nodefleet.bitcoin.plugins.filter import fleet_peers as fp
from ansible_collections.nodefleet.bitcoin.plugins.filter import port_plan as pp

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))


def p2p(name, **kw):
    """The P2P port the one port_plan implementation gives an instance (no second formula here)."""
    return pp.plan_ports([{"name": name, **kw}])[name]["p2p"]


def fleet(**hosts):
    """hostvars: every host has peering on unless it says otherwise."""
    out = {}
    for host, instances in hosts.items():
        out[host] = {"bitcoind_fleet_peering": True, "bitcoind_instances": instances}
    return out


def inst(name, network="regtest", tor_mode="clearnet", **kw):
    return {"name": name, "impl": "core", "network": network, "tor_mode": tor_mode, **kw}


def peers(hostvars, this, hosts=None, **kw):
    return fp.fleet_peers(sorted(hostvars) if hosts is None else hosts, hostvars, this, **kw)


def test_same_network_only_and_other_hosts_only():
    hv = fleet(
        a=[inst("r1"), inst("s1", network="signet")],
        b=[inst("r2"), inst("s2", network="signet"), inst("m2", network="main")],
    )
    assert peers(hv, "a") == {"r1": [f"b:{p2p('r2')}"], "s1": [f"b:{p2p('s2')}"]}


def test_never_itself_nor_an_instance_of_the_same_host():
    hv = fleet(a=[inst("r1"), inst("r1b")])
    assert peers(hv, "a") == {"r1": [], "r1b": []}


def test_same_name_on_two_hosts_peers_with_the_other_host():
    hv = fleet(a=[inst("core-regtest")], b=[inst("core-regtest")])
    assert peers(hv, "a") == {"core-regtest": [f"b:{p2p('core-regtest')}"]}
    assert peers(hv, "b") == {"core-regtest": [f"a:{p2p('core-regtest')}"]}


def test_port_is_the_peer_hosts_planned_p2p_port_with_its_own_layout_and_pins():
    hv = fleet(
        a=[inst("x")],
        b=[inst("y", port_slot=3)],
        c=[inst("z", ports={"p2p": 18444})],
        d=[inst("w")],
    )
    hv["d"]["bitcoind_port_base"] = 30000
    hv["d"]["bitcoind_port_slots"] = 100
    expected_w = pp.plan_ports([{"name": "w"}], base=30000, slots=100)["w"]["p2p"]
    assert peers(hv, "a")["x"] == [f"b:{p2p('y', port_slot=3)}", "c:18444", f"d:{expected_w}"]


def test_clearnet_rule():
    hv = fleet(
        a=[inst("c", tor_mode="clearnet"), inst("both", tor_mode="both"), inst("tor", tor_mode="tor-only")],
        b=[inst("pc", tor_mode="clearnet"), inst("pb", tor_mode="both"), inst("pt", tor_mode="tor-only")],
    )
    clear = [f"b:{p2p('pb')}", f"b:{p2p('pc')}"]
    # tor-only peers do not listen on clearnet; a tor-only instance gets no clearnet line.
    assert peers(hv, "a") == {"c": clear, "both": clear, "tor": []}


def test_onion_only_with_the_switch_and_a_known_address(tmp_path):
    hv = fleet(
        a=[inst("t", tor_mode="tor-only"), inst("c", tor_mode="clearnet"), inst("bo", tor_mode="both")],
        b=[inst("pt", tor_mode="tor-only"), inst("pb", tor_mode="both"), inst("pn", tor_mode="tor-only")],
    )
    (tmp_path / "b").mkdir()
    onion_t = "a" * 56 + ".onion"
    onion_b = "b" * 56 + ".onion"
    (tmp_path / "b" / "pt.onion").write_text(onion_t + "\n")
    (tmp_path / "b" / "pb.onion").write_text(onion_b + "\n")
    # pn has no backup yet: left out.
    assert peers(hv, "a", onion_dir=str(tmp_path)) == {"t": [], "c": [f"b:{p2p('pb')}"], "bo": [f"b:{p2p('pb')}"]}
    got = peers(hv, "a", onion=True, onion_dir=str(tmp_path))
    assert got["t"] == [f"{onion_b}:{p2p('pb')}", f"{onion_t}:{p2p('pt')}"]
    # a clearnet instance has no tor: still only the clearnet line
    assert got["c"] == [f"b:{p2p('pb')}"]
    # both -> both goes over clearnet (no onion line for it); both -> tor-only over onion
    assert got["bo"] == [f"b:{p2p('pb')}", f"{onion_t}:{p2p('pt')}"]


def test_a_bad_onion_backup_is_refused(tmp_path):
    hv = fleet(a=[inst("t", tor_mode="tor-only")], b=[inst("pt", tor_mode="tor-only")])
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "pt.onion").write_text("x.onion\naddnode=evil\n")
    with pytest.raises(AnsibleFilterError, match="not an onion address"):
        peers(hv, "a", onion=True, onion_dir=str(tmp_path))


def test_stable_order_whatever_the_input_order():
    hv = fleet(a=[inst("r")], c=[inst("z"), inst("y")], b=[inst("x")])
    expected = [f"b:{p2p('x')}", f"c:{p2p('y')}", f"c:{p2p('z')}"]
    assert peers(hv, "a", hosts=["c", "a", "b"])["r"] == expected
    assert peers(hv, "a", hosts=["b", "c", "a"])["r"] == expected
    hv["c"]["bitcoind_instances"].reverse()
    assert peers(hv, "a", hosts=["a", "b", "c"])["r"] == expected


def test_host_not_in_the_play_is_computed_from_its_inventory():
    # job slicing: only "a" runs; "b" has inventory (hostvars) but no facts from this play.
    hv = fleet(a=[inst("r")], b=[inst("r2")])
    hv["b"] = dict(hv["b"])  # no ansible_facts, no registered results
    assert "ansible_facts" not in hv["b"]
    assert peers(hv, "a", hosts=["a", "b"]) == {"r": [f"b:{p2p('r2')}"]}


def test_peering_switch_on_both_ends():
    hv = fleet(a=[inst("r")], b=[inst("r2")], c=[inst("r3")])
    hv["c"]["bitcoind_fleet_peering"] = False
    assert peers(hv, "a") == {"r": [f"b:{p2p('r2')}"]}
    hv["a"]["bitcoind_fleet_peering"] = False
    assert peers(hv, "a") == {"r": []}
    # unset falls back to the defaults (the role's default is false)
    del hv["b"]["bitcoind_fleet_peering"]
    hv["a"]["bitcoind_fleet_peering"] = True
    assert peers(hv, "a") == {"r": []}
    assert peers(hv, "a", defaults={"fleet_peering": True}) == {"r": [f"b:{p2p('r2')}"]}


def test_peer_address_host_var_and_ipv6():
    hv = fleet(a=[inst("r")], b=[inst("r2")], c=[inst("r3")])
    hv["b"]["bitcoind_peer_address"] = "10.0.0.2"
    hv["c"]["bitcoind_peer_address"] = "fd00::3"
    assert peers(hv, "a")["r"] == [f"10.0.0.2:{p2p('r2')}", f"[fd00::3]:{p2p('r3')}"]


def test_instance_defaults_and_absent_instances():
    hv = fleet(a=[inst("r")], b=[{"name": "d", "impl": "core", "network": "regtest"}, inst("gone", state="absent")])
    # b's default tor_mode (role default tor-only) means no clearnet listener
    assert peers(hv, "a") == {"r": []}
    hv["b"]["bitcoind_instance_defaults"] = {"state": "present", "tor_mode": "clearnet"}
    assert peers(hv, "a") == {"r": [f"b:{p2p('d')}"]}


def test_local_instances_argument_wins_over_hostvars():
    hv = fleet(a=[inst("r")], b=[inst("r2"), inst("s2", network="signet")])
    got = peers(hv, "a", instances=[inst("s", network="signet")])
    assert got == {"s": [f"b:{p2p('s2')}"]}


def test_bad_inventory_of_a_peer_host_leaves_it_out_with_a_warning():
    hv = fleet(a=[inst("r")], b=[inst("x", port_slot=0), inst("y", port_slot=0)], c=[inst("z")])
    warnings = []
    got = fp.select_peers(sorted(hv), hv, "a", warn=warnings.append)
    assert got == {"r": [f"c:{p2p('z')}"]}
    assert len(warnings) == 1 and "host 'b'" in warnings[0] and "port collision" in warnings[0]


def test_bad_inventory_of_this_host_fails():
    hv = fleet(a=[inst("x", port_slot=0), inst("y", port_slot=0)], b=[inst("r")])
    with pytest.raises(AnsibleFilterError, match="host 'a': port collision"):
        peers(hv, "a")
    with pytest.raises(AnsibleFilterError, match="list of inventory host names"):
        fp.fleet_peers("a", hv, "a")


def test_through_ansible_with_lazy_hostvars_and_a_limited_play(tmp_path):
    """hostvars are templated lazily (group_vars with Jinja); only demo host 'a' is in the play."""
    inv = tmp_path / "inventory"
    (inv / "group_vars" / "fleet").mkdir(parents=True)
    (inv / "host_vars").mkdir()
    (inv / "hosts.yml").write_text("fleet:\n  hosts:\n    a: {}\n    b: {}\n    c: {}\n")
    (inv / "group_vars" / "fleet" / "main.yml").write_text(
        "bitcoind_fleet_peering: true\nnet: regtest\nansible_connection: local\n"
        f"ansible_python_interpreter: {sys.executable}\n"
    )
    (inv / "host_vars" / "a.yml").write_text("bitcoind_instances: [{name: r, network: '{{ net }}', tor_mode: both}]\n")
    (inv / "host_vars" / "b.yml").write_text(
        "bitcoind_instances: [{name: r, network: '{{ net }}', tor_mode: clearnet}]\n"
        "bitcoind_peer_address: '{{ inventory_hostname }}.fleet'\n"
    )
    (inv / "host_vars" / "c.yml").write_text("bitcoind_instances: [{name: r, network: signet, tor_mode: clearnet}]\n")
    play = tmp_path / "play.yml"
    play.write_text(
        textwrap.dedent(
            """\
            - hosts: fleet
              gather_facts: false
              tasks:
                - ansible.builtin.debug:
                    msg: >-
                      PEERS={{ groups['fleet'] | nodefleet.bitcoin.fleet_peers(hostvars, inventory_hostname)
                      | to_json }}
            """
        )
    )
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", str(inv), str(play), "--limit", "a"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f'PEERS={{"r": ["b.fleet:{p2p("r")}"]}}' in proc.stdout.replace('\\"', '"'), proc.stdout


class Untouchable(dict):
    """An instance dict whose rpc_users must never be read (vaulted passwords stay unread)."""

    def __getitem__(self, key):
        if key == "rpc_users":
            raise AssertionError("fleet_peers read rpc_users")
        return super().__getitem__(key)

    def items(self):
        raise AssertionError("fleet_peers iterated a whole instance")

    def values(self):
        raise AssertionError("fleet_peers iterated a whole instance")


def test_only_the_keys_peering_needs_are_read():
    secret = Untouchable(inst("r2"), rpc_users=[{"user": "u", "password": "vaulted"}])
    hv = fleet(a=[inst("r")], b=[secret])
    assert peers(hv, "a") == {"r": [f"b:{p2p('r2')}"]}


# --------------------------------------------------------------------------- issue 15: slices


def test_a_run_on_part_of_the_fleet_is_refused_when_the_fleet_size_says_more_hosts():
    hv = fleet(a=[inst("r")], b=[inst("r")], c=[inst("r")])
    # The whole fleet (a full run, or --limit: groups still hold every host): peers as before.
    assert peers(hv, "a", fleet_size=3) == {"r": [f"b:{p2p('r')}", f"c:{p2p('r')}"]}
    assert peers(hv, "a", fleet_size="3") == peers(hv, "a")
    # An AWX job slice holds a and b only: refused, naming the option, the counts and the way out.
    with pytest.raises(AnsibleFilterError) as caught:
        peers({"a": hv["a"], "b": hv["b"]}, "a", fleet_size=3)
    message = str(caught.value)
    assert message.startswith("bitcoind_fleet_size: this inventory holds 2 hosts of the fleet group")
    assert "says 3" in message and "run site.yml unsliced" in message and "set bitcoind_fleet_size to 2" in message
    # A fleet that grew is refused too, until the operator says so.
    with pytest.raises(AnsibleFilterError, match="holds 3 hosts of the fleet group, bitcoind_fleet_size says 2"):
        peers(hv, "a", fleet_size=2)


def test_the_fleet_size_is_required_with_peering_when_the_role_passes_it_and_must_be_a_count():
    hv = fleet(a=[inst("r")], b=[inst("r")])
    with pytest.raises(AnsibleFilterError, match=r"bitcoind_fleet_size must be set when bitcoind_fleet_peering"):
        peers(hv, "a", fleet_size=None)
    for bad in ("two", -2, True, "2.0"):
        with pytest.raises(AnsibleFilterError, match=r"bitcoind_fleet_size \(.*\) must be a whole number of hosts"):
            peers(hv, "a", fleet_size=bad)
    # A host that does not peer needs no fleet size, and callers that leave the option out skip the check.
    off = dict(hv, a=dict(hv["a"], bitcoind_fleet_peering=False))
    assert peers(off, "a", fleet_size=None) == {"r": []}
    assert peers({"a": hv["a"]}, "a") == {"r": []}
