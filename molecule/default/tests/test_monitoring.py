"""Live metrics on the fleet (issue 13): the real node_exporter on each node serves the node
collector's textfile, fresh, for every planned instance; an instance stopped by supervisord shows
`nodefleet_bitcoind_up 0` within one collector interval and `1` again after it is started - with
no Ansible run in between.

Everything is read the way Prometheus reads it: an HTTP GET of node_exporter's /metrics inside
the node (http://127.0.0.1:<port>/metrics, the port from the node's node_exporter ARGS), parsed
with prometheus_client's parser. The collector interval is read from the node's
nodefleet-collector.timer, so the waits follow the inventory (default 30 s).
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet_inventory import fleet_nodes
from instance_checks import instances_from_report, node_exec, plan_report

NODES = fleet_nodes()
INSTANCES = instances_from_report(plan_report(), NODES)
TIMER_UNIT = "/etc/systemd/system/nodefleet-collector.timer"
CONFIG = "/etc/nodefleet/collector.json"
TEXTFILE = "/var/lib/prometheus/node-exporter/nodefleet_bitcoind.prom"
DEFAULTS_FILE = "/etc/default/prometheus-node-exporter"
# One collector run is bounded by its timeout (5 s by default) plus supervisord's answer; the
# rest is node_exporter reading the file at scrape time and this test's polling.
RUN_SLACK = 15.0

SCRAPE = r"""
import sys, urllib.request
with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % int(sys.argv[1]), timeout=10) as resp:
    sys.stdout.write(resp.read().decode())
"""


def exec_ok(container: str, argv: list[str]) -> str:
    result = node_exec(container, argv)
    assert result.returncode == 0, f"{argv} in {container}: rc {result.returncode} {result.stderr[-500:]}"
    return result.stdout


def exporter_port(container: str) -> int:
    args = exec_ok(container, ["cat", DEFAULTS_FILE])
    match = re.search(r"^ARGS=.*--web\.listen-address=[^\s\"]*:(\d+)", args, re.M)
    assert match, f"no --web.listen-address in the ARGS of {DEFAULTS_FILE} on {container}"
    return int(match.group(1))


def interval(container: str) -> float:
    unit = exec_ok(container, ["cat", TIMER_UNIT])
    match = re.search(r"^OnUnitActiveSec=(\d+)s$", unit, re.M)
    assert match, f"no OnUnitActiveSec in {TIMER_UNIT} on {container}"
    return float(match.group(1))


def node_now(container: str) -> float:
    return float(exec_ok(container, ["date", "+%s.%N"]))


def scrape(container: str) -> dict:
    """(name, labels as a sorted tuple) -> value, from node_exporter's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = exec_ok(container, ["python3", "-c", SCRAPE, str(exporter_port(container))])
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def values(metrics: dict, name: str, key: str = "bitcoind") -> dict:
    return {dict(labels).get(key): value for (n, labels), value in metrics.items() if n == name}


def wait_up(container: str, name: str, want: float, budget: float) -> float:
    """Seconds until node_exporter shows nodefleet_bitcoind_up{bitcoind=name} == want; fails after budget."""
    started = time.monotonic()
    last = None
    while time.monotonic() - started < budget:
        last = values(scrape(container), "nodefleet_bitcoind_up").get(name)
        if last == want:
            return time.monotonic() - started
        time.sleep(1)
    raise AssertionError(f"{name} on {container}: up stayed {last}, not {want}, for {budget:.0f} s")


@pytest.mark.parametrize("host", sorted(NODES))
def test_the_collector_is_installed_root_only_and_its_timer_active(host):
    container = NODES[host]
    assert exec_ok(container, ["systemctl", "is-active", "nodefleet-collector.timer"]).strip() == "active"
    assert exec_ok(container, ["systemctl", "is-enabled", "nodefleet-collector.timer"]).strip() == "enabled"
    assert exec_ok(container, ["systemctl", "is-active", "prometheus-node-exporter.service"]).strip() == "active"
    # holds RPC passwords: root 0600; the textfile: root 0644, a regular file
    assert exec_ok(container, ["stat", "-c", "%U:%G %a %F", CONFIG]).strip() == "root:root 600 regular file"
    assert exec_ok(container, ["stat", "-c", "%U:%G %a %F", TEXTFILE]).strip() == "root:root 644 regular file"
    assert "--collector.textfile.directory=/var/lib/prometheus/node-exporter" in exec_ok(
        container, ["cat", DEFAULTS_FILE]
    )


@pytest.mark.parametrize("host", sorted(NODES))
def test_node_exporter_serves_fresh_metrics_for_every_planned_instance(host):
    container = NODES[host]
    metrics = scrape(container)
    assert metrics[("node_textfile_scrape_error", ())] == 0, "node_exporter could not read a textfile"
    assert values(metrics, "node_textfile_mtime_seconds", "file").get(TEXTFILE) is not None
    planned = sorted(i.name for i in INSTANCES if i.host == host)
    assert sorted(values(metrics, "nodefleet_bitcoind_up")) == planned
    assert values(metrics, "nodefleet_bitcoind_status_ok", "host") == {host: 1}
    assert values(metrics, "nodefleet_bitcoind_up") == dict.fromkeys(planned, 1), "an instance is not up"
    # fresh: the collector's own timestamp is within two intervals of the node's clock
    stamp = values(metrics, "nodefleet_collector_last_run_timestamp_seconds", "host")[host]
    age = node_now(container) - stamp
    assert -2 <= age <= 2 * interval(container), f"collector timestamp is {age:.1f} s old"
    # every instance label set carries the host; no label called instance (Prometheus's own)
    assert all(dict(labels).get("host") == host for (n, labels) in metrics if n.startswith("nodefleet_bitcoind_"))
    assert not any("instance" in dict(labels) for (n, labels) in metrics if n.startswith("nodefleet_"))


def victim():
    """An instance to stop: a stand-in (fast start) on the first node if there is one."""
    first = sorted(NODES)[0]
    on_first = sorted((i for i in INSTANCES if i.host == first), key=lambda i: (i.impl == "core", i.name))
    assert on_first, f"{first} has no instances"
    return on_first[0]


# how to take the instance out, the state the collector must report, how to bring it back
OUTAGES = {
    "supervisorctl-stop": "down",  # supervisord stops it: RPC refused, program STOPPED
    "sigstop": "hung",  # the process hangs (SIGSTOP): RPC port open, no answer; supervisord sees RUNNING
}


@pytest.mark.parametrize("outage", sorted(OUTAGES))
def test_an_instance_taken_out_is_up_0_within_one_interval_and_1_after_it_is_back(outage):
    inst = victim()
    container = inst.container
    period = interval(container)
    budget = period + RUN_SLACK
    others = sorted(i.name for i in INSTANCES if i.host == inst.host and i.name != inst.name)
    wait_up(container, inst.name, 1, budget)
    pid = exec_ok(container, ["supervisorctl", "pid", inst.program]).strip()
    assert pid.isdigit() and int(pid) > 1, pid
    try:
        if outage == "sigstop":
            exec_ok(container, ["kill", "-STOP", pid])
        else:
            exec_ok(container, ["supervisorctl", "stop", inst.program])
        down_after = wait_up(container, inst.name, 0, budget)
        metrics = scrape(container)
        states = {
            dict(labels)["state"]
            for (n, labels), v in metrics.items()
            if n == "nodefleet_bitcoind_state" and dict(labels)["bitcoind"] == inst.name and v == 1
        }
        assert states == {OUTAGES[outage]}, states
        up = values(metrics, "nodefleet_bitcoind_up")
        assert {name: up.get(name) for name in others} == dict.fromkeys(others, 1), "another instance went down"
    finally:
        if outage == "sigstop":
            back = node_exec(container, ["kill", "-CONT", pid])
        else:
            back = node_exec(container, ["supervisorctl", "start", inst.program])
    assert back.returncode == 0, back.stdout + back.stderr
    up_after = wait_up(container, inst.name, 1, budget)
    print(
        f"\n{inst.host}:{inst.name} {outage}: up=0 seen {down_after:.1f} s after it, up=1 {up_after:.1f} s "
        f"after it was back (collector interval {period:.0f} s)"
    )
