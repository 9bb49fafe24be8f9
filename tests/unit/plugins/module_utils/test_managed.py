# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""module_utils/managed.py: what the collection manages on a host and which instances are unlisted."""

from __future__ import annotations

import pytest
from ansible_collections.nodefleet.bitcoin.plugins.filter.unlisted_port_conflicts import unlisted_port_conflicts
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import managed, tor
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.instance_states import STATES
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.supervisord import HEADER

ONION = "mrswmz3infvgw3dnnzxxa4lson2hk5txpb4xu634pv7h7aebqkb5woid.onion"

CONF = """# Managed by nodefleet.bitcoin (bitcoind_instance); local edits are overwritten.
# instance={name} impl=core
chain=signet
[signet]
rpcport={rpc}
port={p2p}
bind=127.0.0.1:{p2p}
bind=127.0.0.1:{onion}=onion
zmqpubrawblock=tcp://127.0.0.1:{zmq}
"""

# /proc/net/tcp with 127.0.0.1:20101 (0x4E85) and 127.0.0.1:20102 (0x4E86) in LISTEN.
PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:4E85 00000000:0000 0A 00000000:00000000 00:00000000 00000000   101        0 111 1 0 100 0 0 10 0
   1: 0100007F:4E86 00000000:0000 0A 00000000:00000000 00:00000000 00000000   101        0 222 1 0 100 0 0 10 0
"""


@pytest.fixture
def host(tmp_path):
    """A host with: kept1 (listed), old1 (program + drop-in + datadir, unlisted), gone1 (datadir only),
    hand1 (a program file without the collection's header), tor2 (drop-in only, unlisted)."""
    conf_dir, torrc_dir, home, tor_root, proc = (tmp_path / d for d in ("conf.d", "torrc.d", "home", "tor", "proc"))
    for d in (conf_dir, torrc_dir, home, tor_root, proc / "net"):
        d.mkdir(parents=True)
    (proc / "net" / "tcp").write_text(PROC_NET_TCP)
    for name, rpc in (("kept1", 20000), ("old1", 20100), ("gone1", 20200)):
        (home / name).mkdir()
        (home / name / "bitcoin.conf").write_text(
            CONF.format(name=name, rpc=rpc, p2p=rpc + 1, onion=rpc + 2, zmq=rpc + 3)
        )
    (home / "stray").mkdir()  # no bitcoin.conf: not a datadir of ours
    (home / "renamed").mkdir()
    (home / "renamed" / "bitcoin.conf").write_text(CONF.format(name="other", rpc=1, p2p=2, onion=3, zmq=4))
    for name in ("kept1", "old1"):
        (conf_dir / f"bitcoind-{name}.conf").write_text(
            f"{HEADER}\n[program:bitcoind-{name}]\ncommand=/opt/bitcoind -conf={home}/{name}/bitcoin.conf "
            f"-datadir={home}/{name}\n"
        )
    (conf_dir / "bitcoind-hand1.conf").write_text("[program:bitcoind-hand1]\ncommand=/usr/bin/bitcoind\n")
    (conf_dir / "other.conf").write_text(f"{HEADER}\n[program:other]\n")
    for name in ("kept1", "old1", "tor2"):
        service_dir = tor_root / f"nodefleet-{name}"
        service_dir.mkdir()
        (torrc_dir / f"nodefleet-{name}.conf").write_text(
            tor.render_dropin(name, str(service_dir), [(20101, "127.0.0.1:20102")])
        )
    (tor_root / "nodefleet-old1" / "hostname").write_text(ONION + "\n")
    (torrc_dir / "nodefleet-hand2.conf").write_text("HiddenServiceDir /var/lib/tor/x\n")  # not ours
    return {"conf_dir": str(conf_dir), "torrc_dir": str(torrc_dir), "home": str(home), "proc": str(proc)}


def test_list_managed_lists_only_what_the_collection_wrote(host):
    found = managed.list_managed(host["conf_dir"], host["torrc_dir"], host["home"])
    assert sorted(found["programs"]) == ["kept1", "old1"]  # hand1 has no header, other.conf is not bitcoind-*
    assert found["programs"]["old1"]["datadir"] == host["home"] + "/old1"
    assert found["programs"]["old1"]["program"] == "bitcoind-old1"
    assert sorted(found["onion_services"]) == ["kept1", "old1", "tor2"]  # hand2's drop-in has no header
    assert found["onion_services"]["old1"]["onion_address"] == ONION
    assert found["onion_services"]["kept1"]["onion_address"] is None
    assert found["datadirs"] == {n: host["home"] + "/" + n for n in ("gone1", "kept1", "old1")}


def test_missing_directories_list_nothing(tmp_path):
    missing = str(tmp_path / "nope")
    assert managed.list_managed(missing, missing, missing) == {"programs": {}, "onion_services": {}, "datadirs": {}}


def test_unlisted_names_counts_programs_and_dropins_not_datadirs(host):
    found = managed.list_managed(host["conf_dir"], host["torrc_dir"], host["home"])
    assert managed.unlisted_names(found, ["kept1"]) == ["old1", "tor2"]
    # gone1 (a datadir kept after retire/absent) is never unlisted; absent names count as listed.
    assert managed.unlisted_names(found, ["kept1", "old1", "tor2"]) == []


def test_unlisted_entries_say_what_still_runs(host):
    found = managed.list_managed(host["conf_dir"], host["torrc_dir"], host["home"])
    supervisor = {"reachable": True, "processes": {"bitcoind-old1": {"statename": "RUNNING", "pid": 4242}}}
    entries = {
        e["name"]: e for e in managed.unlisted_entries(found, ["kept1"], host["home"], supervisor, proc=host["proc"])
    }
    old = entries["old1"]
    assert (old["program_state"], old["pid"], old["listening"]) == ("RUNNING", 4242, [20101, 20102])
    assert old["ports"] == {"rpc": 20100, "p2p": 20101, "onion": 20102, "zmq": {"rawblock": 20103}}
    assert old["onion_address"] == ONION and old["datadir"] == host["home"] + "/old1"
    assert old["program_file"].endswith("bitcoind-old1.conf") and old["onion_dropin"].endswith("nodefleet-old1.conf")
    for text in ("instance old1", "RUNNING", "pid 4242", "20101, 20102", ONION, "bitcoind_retire_unlisted"):
        assert text in old["message"]
    tor_only = entries["tor2"]
    assert (tor_only["program_file"], tor_only["program_state"], tor_only["pid"]) == (None, None, None)
    assert "listening on no port" in tor_only["message"]


def test_port_conflicts_name_both_instances_and_the_port():
    unlisted = [
        {
            "name": "old1",
            "program_file": "/x",
            "program_state": "RUNNING",
            "pid": 7,
            "ports": {"rpc": 20100, "p2p": 20101, "onion": None, "zmq": {"rawblock": 20103}},
            "listening": [20101],
        }
    ]
    plan = {
        "new1": {"rpc": 20300, "p2p": 20101, "onion": 20302, "zmq": {}},
        "new2": {"rpc": 20400, "p2p": 20401, "onion": 20402, "zmq": {"hashtx": 20103}},
        "fine": {"rpc": 20500, "p2p": 20501, "onion": 20502, "zmq": {}},
    }
    messages = unlisted_port_conflicts(plan, unlisted)
    assert len(messages) == 2
    assert "port 20101 (p2p) planned for instance new1" in messages[0] and "unlisted instance old1" in messages[0]
    assert "pid 7" in messages[0]
    assert "port 20103 (zmq hashtx) planned for instance new2" in messages[1]


def test_a_stopped_program_still_holds_its_ports_a_dropin_only_instance_holds_none():
    stopped = [
        {
            "name": "old1",
            "program_file": "/x",
            "program_state": "STOPPED",
            "pid": None,
            "ports": {"rpc": 20100, "p2p": 20101},
            "listening": [],
        }
    ]
    assert unlisted_port_conflicts({"new1": {"rpc": 20100}}, stopped)
    dropin_only = [{"name": "tor2", "program_file": None, "ports": {"rpc": 20100}, "listening": []}]
    assert unlisted_port_conflicts({"new1": {"rpc": 20100}}, dropin_only) == []
    # The instance itself listed again (same name): not a conflict.
    assert unlisted_port_conflicts({"old1": {"rpc": 20100}}, stopped) == []
    assert unlisted_port_conflicts({}, None) == []


def test_mark_unlisted_turns_the_state_and_keeps_the_rpc_outcome(host):
    result = {
        "instances": [
            {"name": "kept1", "state": "up", "message": "", "ports": {"rpc": 20000}, "tags": ["signet"]},
            {
                "name": "old1",
                "state": "auth_failed",
                "message": "HTTP 401",
                "program": "bitcoind-old1",
                "ports": {"rpc": 20100, "p2p": 20101, "onion": 20102, "zmq": {}},
                "onion_address": None,
                "supervisord": {"state": "RUNNING", "pid": 99},
                "tags": ["signet"],
            },
        ]
    }
    found = managed.list_managed(host["conf_dir"], host["torrc_dir"], host["home"])
    managed.mark_unlisted(result, ["old1"], found, proc=host["proc"])
    kept, old = result["instances"]
    assert kept["state"] == "up" and "listening" not in kept
    assert old["state"] == "unlisted" and old["listening"] == [20101, 20102]
    assert old["onion_address"] == ONION and old["tags"] == ["signet", "unlisted"]
    for text in ("not in the inventory", "RUNNING", "pid 99", "RPC auth_failed: HTTP 401"):
        assert text in old["message"]


def test_unlisted_is_one_of_the_states():
    assert "unlisted" in STATES


@pytest.mark.parametrize(
    ("filename", "expected"),
    [("bitcoind-a1.conf", "a1"), ("bitcoind-.conf", None), ("bitcoind-a b.conf", None), ("x-a1.conf", None)],
)
def test_name_from_file(filename, expected):
    assert managed.name_from_file(filename, "bitcoind-", ".conf") == expected
