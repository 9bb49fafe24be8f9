# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

import base64
import copy
import json

import pytest
from ansible_collections.nodefleet.bitcoin.plugins.filter.fleet_status import (
    FilterModule,
    fleet_status_changed,
    fleet_status_fleet_prometheus,
    fleet_status_prometheus,
    fleet_status_report,
    fleet_status_report_stable,
    fleet_status_stable,
    fleet_status_table,
    fleet_status_targets,
    format_duration,
    format_progress,
)
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.instance_states import STATES
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.metrics import escape_label
from prometheus_client.parser import text_string_to_metric_families

ONION = "mrswmz3infvgw3dnnzxxa4lson2hk5txpb4xu634pv7h7aebqkb5woid.onion"


def instance(name, state="up", **over):
    base = {
        "name": name,
        "state": state,
        "message": "",
        "unsupervised": False,
        "impl": "knots",
        "network": "signet",
        "chain": "signet",
        "version": 290000,
        "subversion": "/Satoshi:29.1.0/Knots:20250305/",
        "uptime": 93784,
        "blocks": 250000,
        "headers": 250010,
        "verificationprogress": 0.99995,
        "initialblockdownload": False,
        "size_on_disk": 123456789,
        "pruned": False,
        "peers": {
            "total": 9,
            "inbound": 2,
            "outbound": 7,
            "breakdown": {"libre_relay": 1, "knots": 2, "core_v30_plus": 3, "core_pre_v30": 2, "other": 1},
        },
        "ports": {"rpc": 20000, "p2p": 20001, "onion": 20002, "zmq": {}},
        "onion_address": ONION,
        "tor_mode": "tor-only",
        "tags": ["signet", "knots", "tor-only"],
        "program": "bitcoind-" + name,
        "supervisord": {"state": "RUNNING", "pid": 4242, "start": 1700000000, "uptime": 93790, "restarts": 2},
        "elapsed": 0.012,
    }
    if "blocks" in over and "headers" not in over:
        over["headers"] = over["blocks"]  # synced: its peers know of no longer chain
    base.update(over)
    return base


def down_instance(name):
    return instance(
        name,
        state="down",
        message="connection refused on 127.0.0.1:20010",
        version=None,
        subversion=None,
        uptime=None,
        blocks=None,
        headers=None,
        verificationprogress=None,
        initialblockdownload=None,
        size_on_disk=None,
        pruned=None,
        peers={"total": None, "inbound": None, "outbound": None, "breakdown": dict.fromkeys(["libre_relay"], None)},
        supervisord={"state": "EXITED", "pid": None, "start": 1700000000, "uptime": None, "restarts": 0},
    )


def result(*instances):
    summary = dict.fromkeys(STATES, 0)
    for inst in instances:
        summary[inst["state"]] += 1
    summary["total"] = len(instances)
    return {"changed": False, "instances": list(instances), "summary": summary, "supervisord": {"reachable": True}}


STATUSES = {
    "node-b": result(instance("s1"), down_instance("s2")),
    "node-a": result(instance("m1", network="main", impl="core", subversion="/Satoshi:30.0.0/")),
    "node-c": {"unreachable": True, "msg": "ssh: connect to host node-c port 22: No route"},
    "node-d": None,
}


# --------------------------------------------------------------------------- table


def test_table_has_one_row_per_instance_sorted_and_a_row_per_host_without_data():
    lines = fleet_status_table(STATUSES).splitlines()
    assert lines[0].split()[:3] == ["HOST", "INSTANCE", "STATE"]
    rows = [line.split()[:3] for line in lines[1:-1]]
    assert rows == [
        ["node-a", "m1", "up"],
        ["node-b", "s1", "up"],
        ["node-b", "s2", "down"],
        ["node-c", "-", "no"],
        ["node-d", "-", "no"],
    ]
    assert "unreachable" in lines[4]
    assert lines[-1] == "3 instance(s) on 4 host(s): up 2, down 1; 2 host(s) without data"


def test_table_row_shows_height_progress_peer_breakdown_onion_uptime():
    row = next(line for line in fleet_status_table(STATUSES).splitlines() if " s1 " in line)
    assert "250000/250010" in row
    assert "100.00%" in row  # 0.99995 rounds up at two decimals
    assert "9 (LR:1 KN:2 C30+:3 C<30:2 OT:1)" in row
    assert " 20000/20001 " in row  # RPC/P2P ports
    assert ONION in row  # in full: operators copy it
    assert row.endswith("1d02h")


def test_table_columns_are_aligned():
    lines = fleet_status_table(STATUSES).splitlines()[:-1]
    for header in ("INSTANCE", "STATE", "HEIGHT/HEADERS", "PROGRESS", "ONION", "UPTIME"):
        column = lines[0].index(header)
        for line in lines[1:]:
            assert line[column - 2 : column] == "  ", (header, line)
            assert line[column] != " ", (header, line)


def test_unsupervised_is_marked():
    statuses = {"h": result(instance("x", unsupervised=True))}
    assert " up! " in fleet_status_table(statuses)


def test_table_rejects_non_dict():
    with pytest.raises(Exception, match="expected a dict"):
        fleet_status_table([1, 2])


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0, "0s"),
        (59, "59s"),
        (61, "1m01s"),
        (3600, "1h00m"),
        (86399, "23h59m"),
        (90061, "1d01h"),
        (-5, "-"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize(("value", "text"), [(None, "-"), (0, "0.00%"), (0.5, "50.00%"), (1, "100.00%"), ("x", "-")])
def test_format_progress(value, text):
    assert format_progress(value) == text


# --------------------------------------------------------------------------- report


def test_report_is_json_serialisable_and_keeps_hosts_without_data():
    report = fleet_status_report(STATUSES, generated_at="2026-01-01T00:00:00Z")
    assert json.loads(json.dumps(report)) == report
    assert list(report["hosts"]) == ["node-a", "node-b", "node-c", "node-d"]
    assert report["hosts"]["node-c"]["ok"] is False
    assert report["hosts"]["node-c"]["error"].startswith("unreachable")
    assert report["hosts"]["node-b"]["instances"][1]["state"] == "down"
    assert report["summary"]["up"] == 2
    assert report["summary"]["down"] == 1
    assert report["summary"]["total"] == 3
    assert report["generated_at"] == "2026-01-01T00:00:00Z"


def test_report_does_not_modify_input():
    before = copy.deepcopy(STATUSES)
    fleet_status_report(STATUSES)
    fleet_status_table(STATUSES)
    assert before == STATUSES


# --------------------------------------------------------------------------- Prometheus


def parse(text):
    # prometheus_client names a counter family without its _total suffix; key by the exposed name.
    return {
        family.name + ("_total" if family.type == "counter" else ""): family
        for family in text_string_to_metric_families(text)
    }


def samples(families, name):
    return [(s.labels, s.value) for s in families[name].samples]


def test_prometheus_text_parses_and_has_help_type_for_every_metric():
    text = fleet_status_prometheus(STATUSES["node-b"], "node-b", timestamp=1700000123)
    families = parse(text)
    assert text.endswith("\n")
    for line in text.splitlines():
        assert line.startswith(("# HELP nodefleet_", "# TYPE nodefleet_", "nodefleet_"))
    help_names = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP")}
    type_names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert help_names == type_names == set(families)
    assert {name for name, family in families.items() if family.type == "counter"} == {
        "nodefleet_bitcoind_restarts_total"
    }


def test_prometheus_values_and_labels():
    families = parse(fleet_status_prometheus(STATUSES["node-b"], "node-b", timestamp=1700000123))
    base_s1 = {"host": "node-b", "bitcoind": "s1", "impl": "knots", "network": "signet"}
    base_s2 = dict(base_s1, bitcoind="s2")
    assert samples(families, "nodefleet_bitcoind_up") == [(base_s1, 1.0), (base_s2, 0.0)]
    assert (dict(base_s2, state="down"), 1.0) in samples(families, "nodefleet_bitcoind_state")
    assert (dict(base_s2, state="up"), 0.0) in samples(families, "nodefleet_bitcoind_state")
    assert samples(families, "nodefleet_bitcoind_blocks") == [(base_s1, 250000.0)]  # down instance: no sample
    peers = {s.labels["kind"]: s.value for s in families["nodefleet_bitcoind_peers"].samples}
    assert peers == {"libre_relay": 1, "knots": 2, "core_v30_plus": 3, "core_pre_v30": 2, "other": 1}
    assert samples(families, "nodefleet_bitcoind_restarts_total") == [(base_s1, 2.0), (base_s2, 0.0)]
    assert samples(families, "nodefleet_bitcoind_supervisord_running") == [(base_s1, 1.0), (base_s2, 0.0)]
    assert samples(families, "nodefleet_bitcoind_verification_progress_ratio") == [(base_s1, 0.99995)]
    info = families["nodefleet_bitcoind_info"].samples[0].labels
    assert info["onion"] == ONION
    assert info["subversion"] == "/Satoshi:29.1.0/Knots:20250305/"
    assert samples(families, "nodefleet_collector_last_run_timestamp_seconds") == [({"host": "node-b"}, 1700000123.0)]
    by_state = {s.labels["state"]: s.value for s in families["nodefleet_bitcoind_instances"].samples}
    assert by_state["up"] == 1
    assert by_state["down"] == 1


def test_prometheus_escapes_label_values():
    weird = instance("w", subversion='/Satoshi:30.0.0/"quoted"\\back\nline/')
    families = parse(fleet_status_prometheus(result(weird), "h"))
    assert families["nodefleet_bitcoind_info"].samples[0].labels["subversion"] == weird["subversion"]
    assert escape_label('a"b') == 'a\\"b'


def test_prometheus_for_a_failed_host_reports_status_ok_zero_only():
    families = parse(fleet_status_prometheus({"failed": True, "msg": "boom"}, "h"))
    assert set(families) == {"nodefleet_bitcoind_status_ok"}
    assert samples(families, "nodefleet_bitcoind_status_ok") == [({"host": "h"}, 0.0)]


def test_prometheus_rejects_bad_arguments():
    with pytest.raises(Exception, match="host"):
        fleet_status_prometheus(STATUSES["node-a"], "")
    with pytest.raises(Exception, match="timestamp"):
        fleet_status_prometheus(STATUSES["node-a"], "h", timestamp="soon")


def test_filter_names():
    assert set(FilterModule().filters()) == {
        "fleet_status_table",
        "fleet_status_report",
        "fleet_status_prometheus",
        "fleet_status_targets",
        "fleet_status_fleet_prometheus",
        "fleet_status_stable",
        "fleet_status_report_stable",
        "fleet_status_changed",
    }


# --------------------------------------------------------------------------- module input

PLAN = {
    "a": {"rpc": 20000, "p2p": 20001, "onion": 20002, "zmq": {"rawblock": 20003, "rawtx": 20004}, "slot": 0},
    "b": {"rpc": 20010, "p2p": 20011, "onion": 20012, "zmq": {"rawblock": 20013, "rawtx": 20014}, "slot": 1},
}


def test_targets_from_inventory_instances_and_port_plan():
    instances = [
        {
            "name": "a",
            "state": "present",
            "impl": "knots",
            "network": "signet",
            "tor_mode": "tor-only",
            "zmq_topics": ["rawblock"],
            "rpc_users": [{"user": "admin", "password": "pw-admin"}, {"user": "monitor", "password": "pw-mon"}],
        },
        {"name": "b", "impl": "core", "network": "main", "tor_mode": "clearnet", "datadir": "/srv/b", "rpc_users": []},
        {"name": "gone", "state": "absent"},
    ]
    targets = fleet_status_targets(instances, PLAN, home="/data/")
    assert targets == [
        {
            "name": "a",
            "rpc_port": 20000,
            "p2p_port": 20001,
            "onion_port": 20002,
            "datadir": "/data/a",
            "network": "signet",
            "impl": "knots",
            "tor_mode": "tor-only",
            "zmq_ports": {"rawblock": 20003},
            "rpc_user": "admin",
            "rpc_password": "pw-admin",
        },
        {
            "name": "b",
            "rpc_port": 20010,
            "p2p_port": 20011,
            "datadir": "/srv/b",
            "network": "main",
            "impl": "core",
            "tor_mode": "clearnet",
            "zmq_ports": {"rawblock": 20013, "rawtx": 20014},
        },
    ]
    chosen = fleet_status_targets(instances[:1], PLAN, rpc_user="monitor")[0]
    assert (chosen["rpc_user"], chosen["rpc_password"]) == ("monitor", "pw-mon")
    assert "rpc_user" not in fleet_status_targets(instances[:1], PLAN, rpc_user="nobody")[0]


@pytest.mark.parametrize(
    ("instances", "plan", "message"),
    [
        ("x", PLAN, "list"),
        ([{"name": "a"}], [], "plan"),
        ([{"impl": "core"}], PLAN, "name"),
        ([{"name": "zzz"}], PLAN, "not in the port plan"),
    ],
)
def test_targets_reject_bad_input(instances, plan, message):
    with pytest.raises(Exception, match=message):
        fleet_status_targets(instances, plan)


def test_a_restarting_instance_is_counted_in_the_table_and_the_metrics():
    # bitcoind_info reports a restart loop as state "restarting" (issue 10 #12); the table's
    # totals and the per-state gauges must show it, not drop it.
    looping = instance("loop1", state="restarting", message="restarted 5 times in 300 s")
    statuses = {"node-r": result(looping, instance("ok1"))}
    table = fleet_status_table(statuses)
    assert table.splitlines()[-1] == "2 instance(s) on 1 host(s): up 1, restarting 1"
    assert "restarted 5 times" in table
    families = parse(fleet_status_prometheus(statuses["node-r"], "node-r", timestamp=1700000123))
    by_state = {s.labels["state"]: s.value for s in families["nodefleet_bitcoind_instances"].samples}
    assert by_state["restarting"] == 1
    states = {(s.labels["bitcoind"], s.labels["state"]): s.value for s in families["nodefleet_bitcoind_state"].samples}
    assert states[("loop1", "restarting")] == 1
    assert states[("loop1", "up")] == 0


def test_state_names_are_the_ones_bitcoind_info_reports():
    from ansible_collections.nodefleet.bitcoin.plugins.filter import fleet_status
    from ansible_collections.nodefleet.bitcoin.plugins.modules import bitcoind_info

    assert fleet_status.STATES is bitcoind_info.STATES


# --------------------------------------------------------------------------- fleet view (issue 13)

NOW = 1700003600.0
FLEET = {
    "node-1": result(
        instance("a", blocks=250100, best_block_time=NOW - 300), instance("m", network="main", blocks=900)
    ),
    "node-2": result(instance("b", blocks=250090, best_block_time=NOW - 7200)),
    "node-3": {"unreachable": True, "msg": "gone"},
}


def test_table_shows_blocks_behind_the_best_tip_of_the_network_and_the_tip_age():
    lines = fleet_status_table(FLEET, timestamp=NOW).splitlines()
    header = lines[0]
    rows = {line.split()[1]: line for line in lines[1:-1] if not line.startswith("node-3")}
    behind, age = header.index("BEHIND"), header.index("TIP AGE")
    assert rows["a"][behind:].split()[0] == "0"
    assert rows["b"][behind:].split()[0] == "10"  # signet tip 250100 on node-1
    assert rows["m"][behind:].split()[0] == "0"  # main is compared with main only
    assert rows["a"][age:].split()[0] == "5m00s"
    assert rows["b"][age:].split()[0] == "2h00m"
    assert rows["m"][age:].split()[0] == "-"  # no best_block_time: unknown, not 0


def test_report_has_blocks_behind_tip_age_and_says_the_scope_is_the_hosts_of_the_run():
    report = fleet_status_report(FLEET, generated_at="x", timestamp=NOW, limit="node-1:node-2")
    by_name = {i["name"]: i for h in report["hosts"].values() for i in h["instances"]}
    assert by_name["b"]["blocks_behind"] == 10
    assert by_name["b"]["stale_tip_seconds"] == 7200
    assert by_name["m"]["stale_tip_seconds"] is None
    fleet = report["fleet"]
    assert fleet["fleet_tip_scope"] == "hosts in this run"
    assert fleet["limit"] == "node-1:node-2"
    assert fleet["best_blocks"] == {"signet": 250100, "main": 900}
    assert fleet["hosts"] == ["node-1", "node-2", "node-3"]
    assert fleet["hosts_with_data"] == 2
    assert "blocks_behind" not in FLEET["node-2"]["instances"][0]  # input untouched


def test_a_slice_of_the_fleet_computes_blocks_behind_from_that_slice_and_names_the_hosts_it_left_out():
    # --limit node-2: node-1's higher tip is not seen, and node-2's peers know no longer chain,
    # so node-2 is the best it knows; the report lists the inventory hosts outside the run.
    report = fleet_status_report(
        {"node-2": FLEET["node-2"]}, timestamp=NOW, limit="node-2", inventory_hosts=["node-1", "node-2", "node-3"]
    )
    assert report["hosts"]["node-2"]["instances"][0]["blocks_behind"] == 0
    assert report["fleet"]["best_blocks"] == {"signet": 250090}
    assert report["fleet"]["hosts_outside_run"] == ["node-1", "node-3"]
    # Without the inventory (a caller that does not know it), nothing is claimed.
    assert fleet_status_report({"node-2": FLEET["node-2"]})["fleet"]["hosts_outside_run"] == []


def test_report_stable_drops_only_what_moves_with_the_clock():
    later = copy.deepcopy(FLEET)
    for res in later.values():
        for inst in res.get("instances", []):
            inst["uptime"] += 60
            inst["elapsed"] = 0.5
            inst["supervisord"] = dict(inst["supervisord"], uptime=inst["supervisord"]["uptime"] + 60)
            # Core's progress estimate drifts with the clock on an idle node; measured use moves.
            if inst.get("verificationprogress") is not None:
                inst["verificationprogress"] *= 0.999
            inst["resources"] = {"memory_used_bytes": 10 * 2**20, "cpu_seconds_total": 1.5, "datadir_bytes": 7}
    before = copy.deepcopy(FLEET)
    for res in before.values():
        for inst in res.get("instances", []):
            inst["resources"] = {"memory_used_bytes": 2**20, "cpu_seconds_total": 0.5, "datadir_bytes": 5}
    first = fleet_status_report(before, generated_at="t1", timestamp=NOW)
    second = fleet_status_report(later, generated_at="t2", timestamp=NOW + 60)
    assert fleet_status_report_stable(first) == fleet_status_report_stable(json.dumps(second))
    later["node-2"]["instances"][0]["blocks"] += 1
    third = fleet_status_report(later, generated_at="t3", timestamp=NOW + 120)
    assert fleet_status_report_stable(first) != fleet_status_report_stable(third)
    assert fleet_status_report_stable("") == {}


def test_fleet_prometheus_filter_and_stable_filter():
    text = fleet_status_fleet_prometheus(FLEET, "node-2", timestamp=NOW)
    families = parse(text)
    assert samples(families, "nodefleet_bitcoind_blocks_behind") == [
        ({"host": "node-2", "bitcoind": "b", "impl": "knots", "network": "signet"}, 10.0)
    ]
    assert fleet_status_stable(text) == fleet_status_stable(fleet_status_fleet_prometheus(FLEET, "node-2", NOW + 5))
    with pytest.raises(Exception, match="fleet_status_fleet_prometheus: host"):
        fleet_status_fleet_prometheus(FLEET, "")


def _stat(mode="0644", exists=True, isreg=True):
    return {"stat": {"exists": exists, "isreg": isreg, "mode": mode}}


def _slurp(text):
    return {"content": base64.b64encode(text.encode()).decode()}


def test_changed_is_false_when_only_the_clock_moved_and_true_otherwise():
    old = fleet_status_prometheus(FLEET["node-1"], "node-1", timestamp=NOW)
    later = copy.deepcopy(FLEET["node-1"])
    later["instances"][0]["uptime"] += 30
    new = fleet_status_prometheus(later, "node-1", timestamp=NOW + 30)
    assert fleet_status_changed(new, _stat(), _slurp(old)) is False
    assert fleet_status_changed(new, _stat(exists=False), {"skipped": True}) is True  # first write
    assert fleet_status_changed(new, _stat(mode="0600"), _slurp(old)) is True  # mode repaired
    assert fleet_status_changed(new, _stat(isreg=False), _slurp(old)) is True
    assert fleet_status_changed(new, _stat(), {"content": "%%%"}) is True
    later["instances"][0]["state"] = "down"
    assert fleet_status_changed(fleet_status_prometheus(later, "node-1", NOW + 60), _stat(), _slurp(old)) is True


def test_changed_for_the_report_ignores_generated_at_and_uptimes():
    old = json.dumps(fleet_status_report(FLEET, generated_at="t1", timestamp=NOW))
    new = fleet_status_report(FLEET, generated_at="t2", timestamp=NOW + 30)
    assert fleet_status_changed(new, _stat(), _slurp(old), kind="report") is False
    assert fleet_status_changed(new, _stat(), _slurp(old.replace("250090", "250091")), kind="report") is True
    with pytest.raises(Exception, match="kind must be textfile or report"):
        fleet_status_changed(new, _stat(), _slurp(old), kind="json")


def test_an_unlisted_instance_is_counted_in_the_table_and_the_metrics():
    # bitcoind_info (listed) reports an instance the inventory dropped as state "unlisted" (issue 11):
    # the table's totals and the per-state gauges must show it, with what still runs.
    dropped = instance("old1", state="unlisted", message="not in the inventory: program bitcoind-old1 RUNNING")
    statuses = {"node-u": result(dropped, instance("ok1"))}
    table = fleet_status_table(statuses)
    assert table.splitlines()[-1] == "2 instance(s) on 1 host(s): up 1, unlisted 1"
    assert "not in the inventory" in table
    families = parse(fleet_status_prometheus(statuses["node-u"], "node-u", timestamp=1700000123))
    by_state = {s.labels["state"]: s.value for s in families["nodefleet_bitcoind_instances"].samples}
    assert by_state["unlisted"] == 1
    states = {(s.labels["bitcoind"], s.labels["state"]): s.value for s in families["nodefleet_bitcoind_state"].samples}
    assert states[("old1", "unlisted")] == 1 and states[("old1", "up")] == 0
