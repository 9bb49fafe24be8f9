"""playbooks/status.yml's writes on the node, run for real (connection=local) with a fake
bitcoind_info: the Prometheus textfile never goes through a symlinked directory (issue 10.4);
a second run in a row reports nothing changed although the clock moved, the fleet file holds
blocks_behind, and what it writes passes promtool check metrics (issue 13)."""

from __future__ import annotations

import json
import os
import re

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.promtool import check_metrics
from tests.integration.role_harness import REPO, run_play, stub_collection

FAKE_INFO = r"""#!/usr/bin/python
import json
print(json.dumps({"changed": False, "instances": [], "supervisord": {"state": "RUNNING"}}))
"""
# WANT_JSON: ansible passes the module's arguments as a JSON file. Reports one instance per
# requested instance, with values that move with the clock (uptime, elapsed) on every call
# and a height taken from NODEFLEET_FAKE_BLOCKS (name -> blocks), its best header from
# NODEFLEET_FAKE_HEADERS (name -> headers; default: its height).
FAKE_INFO_CLOCK = r"""#!/usr/bin/python
# WANT_JSON
import json, os, sys, time
args = json.load(open(sys.argv[1]))
blocks = json.loads(os.environ.get("NODEFLEET_FAKE_BLOCKS", "{}"))
headers = json.loads(os.environ.get("NODEFLEET_FAKE_HEADERS", "{}"))
now = time.time()
instances = []
for target in args.get("instances") or []:
    name = target["name"]
    instances.append({
        "name": name, "state": "up", "message": "", "unsupervised": False, "impl": "core",
        "network": "regtest", "version": 289900, "subversion": "/Satoshi:28.99.0/",
        "uptime": int(now) % 100000, "blocks": blocks.get(name, 101),
        "headers": headers.get(name, blocks.get(name, 101)),
        "best_block_time": 1700000000, "verificationprogress": 1.0, "initialblockdownload": False,
        "size_on_disk": 1000, "pruned": False,
        "peers": {"total": 0, "inbound": 0, "outbound": 0, "breakdown": {}},
        "supervisord": {"state": "RUNNING", "pid": 42, "start": 1700000000, "uptime": int(now) % 100000,
                        "restarts": 0},
        "elapsed": (now * 1000) % 1,
    })
summary = {"up": len(instances), "total": len(instances)}
print(json.dumps({"changed": False, "instances": instances, "summary": summary,
                  "supervisord": {"reachable": True, "error": ""}, "elapsed": (now * 1000) % 1}))
"""
STATUS = [{"ansible.builtin.import_playbook": os.path.join(REPO, "playbooks", "status.yml")}]
RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


def run_status(tmp_path, textfile_dir):
    coll = stub_collection(tmp_path / "coll", {}, {"bitcoind_info": FAKE_INFO})
    extra = {
        "nodefleet_status_become": False,
        "nodefleet_status_textfile_dir": str(textfile_dir),
        "nodefleet_status_json": str(tmp_path / "report" / "fleet.json"),
    }
    return run_play(tmp_path, coll, STATUS, {}, extra_args=("-e", json.dumps(extra)))


def test_textfile_is_written_into_a_real_directory(tmp_path):
    rc, out, _ = run_status(tmp_path, tmp_path / "textfile")
    assert rc == 0, out
    assert (tmp_path / "textfile" / "nodefleet_bitcoind.prom").is_file()


def test_textfile_dir_that_is_a_symlink_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"  # e.g. /etc/sudoers.d in an attack
    elsewhere.mkdir()
    (tmp_path / "textfile").symlink_to(elsewhere)
    rc, out, _ = run_status(tmp_path, tmp_path / "textfile")
    assert rc != 0, out
    assert "is a symlink; refusing to write through it" in out, out
    assert list(elsewhere.iterdir()) == []


# --------------------------------------------------------------------------- issue 13


class Fleet:
    """Two hosts (connection=local), each with its own textfile dir, one JSON report."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.coll = stub_collection(tmp_path / "coll", {}, {"bitcoind_info": FAKE_INFO_CLOCK})
        self.report = tmp_path / "report" / "fleet.json"
        self.hosts = {
            host: {"bitcoind_instances": [{"name": name, "network": "regtest", "impl": "core"}]}
            for host, name in (("h1", "a1"), ("h2", "b1"))
        }

    def run(self, blocks, *args, headers=None):
        extra = {
            "nodefleet_status_become": False,
            "nodefleet_status_json": str(self.report),
            # Extra vars are templated per host: each host its own textfile directory.
            "nodefleet_status_textfile_dir": str(self.tmp) + "/{{ inventory_hostname }}",
        }
        rc, out, _ = run_play(
            self.tmp,
            self.coll,
            STATUS,
            {},
            extra_args=("-e", json.dumps(extra), *args),
            hosts=self.hosts,
            env={"NODEFLEET_FAKE_BLOCKS": json.dumps(blocks), "NODEFLEET_FAKE_HEADERS": json.dumps(headers or {})},
        )
        assert rc == 0, out
        recap = {host: (int(changed), int(unr), int(failed)) for host, changed, unr, failed in RECAP.findall(out)}
        return recap, out

    def textfile(self, host, name="nodefleet_bitcoind.prom"):
        return (self.tmp / host / name).read_text()


def samples(text, name):
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def test_second_status_run_in_a_row_reports_nothing_changed_but_refreshes_the_timestamps(tmp_path):
    fleet = Fleet(tmp_path)
    first, _ = fleet.run({"a1": 120, "b1": 100})
    assert first["h1"][0] > 0 and first["h2"][0] > 0  # first run writes the files
    stamp_before = samples(fleet.textfile("h1"), "nodefleet_collector_last_run_timestamp_seconds")
    report_before = json.loads(fleet.report.read_text())

    second, out = fleet.run({"a1": 120, "b1": 100})
    assert second == {"h1": (0, 0, 0), "h2": (0, 0, 0)}, out
    # Written all the same: the collector-stale alert reads this timestamp.
    stamp_after = samples(fleet.textfile("h1"), "nodefleet_collector_last_run_timestamp_seconds")
    assert max(stamp_after.values()) > max(stamp_before.values())
    assert json.loads(fleet.report.read_text())["generated_at"] >= report_before["generated_at"]

    # A real change (a new block on h2) is reported again.
    third, _ = fleet.run({"a1": 120, "b1": 101})
    assert third["h2"][0] > 0


def test_fleet_file_holds_blocks_behind_the_best_tip_among_the_hosts_of_the_run(tmp_path):
    fleet = Fleet(tmp_path)
    fleet.run({"a1": 120, "b1": 100})
    behind = samples(fleet.textfile("h2", "nodefleet_fleet.prom"), "nodefleet_bitcoind_blocks_behind")
    assert behind == {(("bitcoind", "b1"), ("host", "h2"), ("impl", "core"), ("network", "regtest")): 20.0}
    report = json.loads(fleet.report.read_text())
    assert report["fleet"]["fleet_tip_scope"] == "hosts in this run"
    assert report["fleet"]["limit"] is None
    assert report["hosts"]["h2"]["instances"][0]["blocks_behind"] == 20
    assert report["hosts"]["h2"]["instances"][0]["stale_tip_seconds"] > 0

    assert report["fleet"]["hosts_outside_run"] == []
    assert samples(fleet.textfile("h2", "nodefleet_fleet.prom"), "nodefleet_fleet_hosts_expected") == {
        (("host", "h2"),): 2.0
    }

    # --limit h2, and b1's peers know of no better chain than its own: h1's blocks are not in
    # this run, so b1 is 0 behind what the run can know; the files and the report say that a
    # host was left out, and which.
    fleet.run({"a1": 120, "b1": 100}, "--limit", "h2")
    fleet_file = fleet.textfile("h2", "nodefleet_fleet.prom")
    assert list(samples(fleet_file, "nodefleet_bitcoind_blocks_behind").values()) == [0.0]
    assert samples(fleet_file, "nodefleet_fleet_hosts_seen") == {(("host", "h2"),): 1.0}
    assert samples(fleet_file, "nodefleet_fleet_hosts_expected") == {(("host", "h2"),): 2.0}
    report = json.loads(fleet.report.read_text())
    assert report["fleet"]["limit"] == "h2"
    assert report["fleet"]["hosts"] == ["h2"]
    assert report["fleet"]["hosts_outside_run"] == ["h1"]

    # --limit h2, and b1's peers announce 20 more blocks (h1's chain, or the network's): b1 is
    # 20 behind although no host with those blocks is in the run - the slice does not hide it.
    fleet.run({"a1": 120, "b1": 100}, "--limit", "h2", headers={"b1": 120})
    behind = samples(fleet.textfile("h2", "nodefleet_fleet.prom"), "nodefleet_bitcoind_blocks_behind")
    assert list(behind.values()) == [20.0]
    report = json.loads(fleet.report.read_text())
    assert report["hosts"]["h2"]["instances"][0]["blocks_behind"] == 20
    assert report["fleet"]["best_blocks"] == {"regtest": 120}


def test_written_textfiles_pass_promtool_check_metrics(tmp_path):
    fleet = Fleet(tmp_path)
    fleet.run({"a1": 120, "b1": 100})
    for name in ("nodefleet_bitcoind.prom", "nodefleet_fleet.prom"):
        text = fleet.textfile("h2", name)
        rc, output = check_metrics(text)
        assert rc == 0, output
        assert 'instance="' not in text  # Prometheus's own target label is never ours
