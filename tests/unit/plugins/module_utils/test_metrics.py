# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""metrics.py: the one textfile renderer (status play and node collector), its names and the fleet view."""

from __future__ import annotations

import re

import pytest
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import metrics
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.instance_states import STATES
from prometheus_client.parser import text_string_to_metric_families

NOW = 1700003600.0


def inst(name, **over):
    base = {
        "name": name,
        "state": "up",
        "impl": "core",
        "network": "regtest",
        "blocks": 110,
        "headers": 110,
        "best_block_time": NOW - 90,
        "verificationprogress": 1.0,
        "initialblockdownload": False,
        "size_on_disk": 4096,
        "pruned": False,
        "uptime": 600,
        "peers": {"total": 1, "inbound": 0, "outbound": 1, "breakdown": {"other": 1}},
        "supervisord": {"state": "RUNNING", "pid": 7, "start": NOW - 600, "uptime": 600, "restarts": 3},
        "elapsed": 0.01,
    }
    if "blocks" in over and "headers" not in over:
        over["headers"] = over["blocks"]  # synced: its peers know of no longer chain
    base.update(over)
    return base


def info(*instances):
    summary = dict.fromkeys(STATES, 0)
    for i in instances:
        summary[i["state"]] += 1
    return {"changed": False, "instances": list(instances), "summary": summary, "supervisord": {"reachable": True}}


def families(text):
    out = {}
    for family in text_string_to_metric_families(text):
        out[family.name + ("_total" if family.type == "counter" else "")] = family
    return out


def value(text, name, **labels):
    for family in families(text).values():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


# --------------------------------------------------------------------------- names


def test_every_name_follows_the_prometheus_conventions():
    for name, (kind, help_text) in metrics.METRICS.items():
        assert re.fullmatch(r"nodefleet_[a-z0-9_]+", name), name
        assert kind in ("gauge", "counter"), name
        assert help_text and "\n" not in help_text, name
        assert name.endswith("_total") == (kind == "counter"), name  # counters and only counters
        labels = metrics.METRIC_LABELS[name]
        assert "instance" not in labels, name  # Prometheus's target label; ours is "bitcoind"
        assert len(set(labels)) == len(labels), name
    assert metrics.METRICS["nodefleet_bitcoind_restarts_total"][0] == "counter"
    assert "nodefleet_bitcoind_verification_progress_ratio" in metrics.METRICS
    assert metrics.COLLECTOR_TIMESTAMP == "nodefleet_collector_last_run_timestamp_seconds"
    assert set(metrics.METRICS) >= metrics.OPTIONAL_METRICS
    assert set(metrics.METRICS) >= metrics.VOLATILE_METRICS
    assert set(metrics.METRIC_LABELS) == set(metrics.METRICS)


def test_rendered_families_are_the_declared_ones_with_their_type_help_and_labels():
    full = inst(
        "a",
        resources={
            "memory_used_bytes": 10,
            "memory_limit_bytes": 100,
            "oom_kills_total": 0,
            "cpu_seconds_total": 1.5,
            "datadir_bytes": 4096,
        },
        onion_address="x.onion",
    )
    text = metrics.render_textfile("node1", info(full), NOW) + metrics.render_fleet_textfile(
        "node1", {"node1": info(full)}, NOW, hosts_expected=1
    )
    seen = families(text)
    assert set(seen) == set(metrics.METRICS)  # every family is reachable, none undeclared
    for name, family in seen.items():
        kind, help_text = metrics.METRICS[name]
        assert family.type == kind, name
        assert family.documentation == help_text, name
        for sample in family.samples:
            assert tuple(sample.labels) == metrics.METRIC_LABELS[name], name


def test_optional_families_are_left_out_without_their_data():
    seen = families(metrics.render_textfile("node1", info(inst("a")), NOW))
    assert not (metrics.OPTIONAL_METRICS & set(seen))


# --------------------------------------------------------------------------- values


def test_values_of_one_instance():
    text = metrics.render_textfile("node1", info(inst("a")), NOW)
    labels = {"host": "node1", "bitcoind": "a", "impl": "core", "network": "regtest"}
    assert value(text, "nodefleet_bitcoind_up", **labels) == 1
    assert value(text, "nodefleet_bitcoind_restarts_total", **labels) == 3
    assert value(text, "nodefleet_bitcoind_stale_tip_seconds", **labels) == 90
    assert value(text, "nodefleet_bitcoind_best_block_timestamp_seconds", **labels) == NOW - 90
    assert value(text, "nodefleet_bitcoind_verification_progress_ratio", **labels) == 1.0
    assert value(text, "nodefleet_collector_last_run_timestamp_seconds", host="node1") == NOW
    assert value(text, "nodefleet_bitcoind_state", state="up") == 1
    assert value(text, "nodefleet_bitcoind_state", state="down") == 0


def test_without_a_timestamp_there_is_no_collector_time_and_no_tip_age():
    seen = families(metrics.render_textfile("node1", info(inst("a")), None))
    assert metrics.COLLECTOR_TIMESTAMP not in seen
    assert "nodefleet_bitcoind_stale_tip_seconds" not in seen
    assert "nodefleet_bitcoind_best_block_timestamp_seconds" in seen


def test_unknown_values_are_left_out_not_zero():
    down = inst("d", state="down", blocks=None, best_block_time=None, uptime=None, verificationprogress=float("nan"))
    text = metrics.render_textfile("node1", info(down), NOW)
    assert value(text, "nodefleet_bitcoind_blocks") is None
    assert value(text, "nodefleet_bitcoind_stale_tip_seconds") is None
    assert value(text, "nodefleet_bitcoind_verification_progress_ratio") is None
    assert value(text, "nodefleet_bitcoind_up") == 0


def test_a_failed_result_gives_status_ok_zero_and_the_timestamp_only():
    seen = families(metrics.render_textfile("node1", {"failed": True, "msg": "boom"}, NOW))
    assert set(seen) == {"nodefleet_bitcoind_status_ok", metrics.COLLECTOR_TIMESTAMP}
    assert seen["nodefleet_bitcoind_status_ok"].samples[0].value == 0


def test_tip_time_in_the_future_counts_as_zero_age():
    assert metrics.stale_tip_seconds({"best_block_time": NOW + 30}, NOW) == 0
    assert metrics.stale_tip_seconds({"best_block_time": None}, NOW) is None
    assert metrics.stale_tip_seconds({"best_block_time": True}, NOW) is None


@pytest.mark.parametrize(
    ("host", "timestamp", "message"),
    [("", NOW, "host label"), (None, NOW, "host label"), ("h", "soon", "timestamp"), ("h", float("inf"), "timestamp")],
)
def test_bad_arguments_are_refused(host, timestamp, message):
    with pytest.raises(metrics.MetricsError, match=message):
        metrics.render_textfile(host, info(inst("a")), timestamp)


# --------------------------------------------------------------------------- fleet view


def test_blocks_behind_compares_with_the_best_height_of_the_same_network():
    results = {
        "n1": info(inst("a", blocks=120), inst("s", network="signet", blocks=5)),
        "n2": info(inst("b", blocks=100), inst("w", state="warming_up", blocks=None)),
        "n3": {"failed": True},
    }
    view = metrics.fleet_view(results)
    assert view["tips"] == {"regtest": 120, "signet": 5}
    assert view["behind"] == {"n1": {"a": 0, "s": 0}, "n2": {"b": 20, "w": None}, "n3": {}}
    assert view["hosts_seen"] == 2
    text = metrics.render_fleet_textfile("n2", results, NOW)
    assert value(text, "nodefleet_bitcoind_blocks_behind", bitcoind="b") == 20
    assert value(text, "nodefleet_bitcoind_blocks_behind", bitcoind="w") is None
    assert value(text, "nodefleet_fleet_best_blocks", network="signet") == 5
    assert value(text, "nodefleet_fleet_hosts_seen") == 2
    assert value(text, "nodefleet_fleet_hosts_expected") is None  # only when the caller knows the inventory


def test_an_instance_whose_peers_know_a_longer_chain_is_behind_even_when_no_result_has_those_blocks():
    # A run over a slice of the fleet (--limit, an AWX slice): the hosts with block 130 are
    # outside it, but n2's own peers announced the headers up to 130.
    results = {
        "n1": info(inst("a", blocks=120)),
        "n2": info(inst("b", blocks=100, headers=130), inst("w", state="warming_up", blocks=None, headers=500)),
    }
    view = metrics.fleet_view(results)
    assert view["tips"] == {"regtest": 130}  # a node without a height (warming up) does not count
    assert view["behind"] == {"n1": {"a": 10}, "n2": {"b": 30, "w": None}}
    text = metrics.render_fleet_textfile("n2", results, NOW, hosts_expected=5)
    assert value(text, "nodefleet_bitcoind_blocks_behind", bitcoind="b") == 30
    assert value(text, "nodefleet_fleet_best_blocks", network="regtest") == 130
    assert value(text, "nodefleet_fleet_hosts_seen") == 2
    assert value(text, "nodefleet_fleet_hosts_expected") == 5


@pytest.mark.parametrize("bad", [-1, "three", True, 2.5j])
def test_hosts_expected_must_be_a_count(bad):
    with pytest.raises(metrics.MetricsError, match="hosts_expected must be a count of hosts"):
        metrics.render_fleet_textfile("n1", {"n1": info(inst("a"))}, NOW, hosts_expected=bad)


def test_fleet_file_and_node_file_share_no_family():
    # Both sit in one textfile directory: node_exporter refuses a scrape where two files
    # hold the same series, so they must never write the same family.
    results = {"n1": info(inst("a"))}
    node = set(families(metrics.render_textfile("n1", results["n1"], NOW)))
    fleet = set(families(metrics.render_fleet_textfile("n1", results, NOW)))
    assert node and fleet
    assert not node & fleet
    assert fleet <= metrics.FLEET_METRICS


# --------------------------------------------------------------------------- change detection


def test_stable_text_ignores_the_clock_but_not_a_real_change():
    first = metrics.render_textfile("n1", info(inst("a")), NOW)
    later = metrics.render_textfile("n1", info(inst("a", uptime=630, elapsed=0.2)), NOW + 30)
    assert first != later
    assert metrics.stable_text(first) == metrics.stable_text(later)
    # Real Core on a network that sends it no blocks: its progress estimate drifts with the clock.
    drifted = metrics.render_textfile("n1", info(inst("a", verificationprogress=0.9999)), NOW + 30)
    assert "nodefleet_bitcoind_verification_progress_ratio{" in drifted
    assert metrics.stable_text(first) == metrics.stable_text(drifted)
    moved = metrics.render_textfile("n1", info(inst("a", blocks=111)), NOW + 30)
    assert metrics.stable_text(first) != metrics.stable_text(moved)
    restarted = metrics.render_textfile("n1", info(inst("a", state="down")), NOW + 30)
    assert metrics.stable_text(first) != metrics.stable_text(restarted)
    assert metrics.stable_text(None) == ""


def test_label_values_are_escaped():
    weird = inst("a", subversion='/x"y\\z\nw/')
    text = metrics.render_textfile("n1", info(weird), NOW)
    sample = families(text)["nodefleet_bitcoind_info"].samples[0]
    assert sample.labels["subversion"] == weird["subversion"]
    assert metrics.escape_label('a"b') == 'a\\"b'
