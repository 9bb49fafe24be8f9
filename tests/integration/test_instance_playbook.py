"""playbooks/instance.yml on this machine (connection local) with recording fakes of
supervisord_program and bitcoind_info: a bad host, instance or action fails in the first play,
before any module runs on a node; a good request touches exactly that instance's program, and
restart is confirmed (or refused) by the health gate of roles/bitcoind/tasks/restart_instance.yml.

No fleet needed. The fleet test of the same playbook is molecule/default/tests/test_instance_actions.py.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.integration.role_harness import REPO, run_play, stub_collection

# Both fakes append one JSON line per call to $NODEFLEET_FAKE_LOG (module name + arguments,
# with every password replaced), so a test can see what ran and that no secret reached a log.
FAKE_SUPERVISORD = r"""#!/usr/bin/python
# WANT_JSON
import json, os, sys
args = json.load(open(sys.argv[1]))
progs = args.get("programs") or []
with open(os.environ["NODEFLEET_FAKE_LOG"], "a") as log:
    log.write(json.dumps({"module": "supervisord_program",
                          "programs": [[p.get("name"), p.get("state")] for p in progs],
                          "server_url": args.get("server_url")}) + "\n")
fail = os.environ.get("NODEFLEET_FAKE_RESTART_FAILS") == "1"
out = {"changed": True, "programs": {p["name"]: {"state": "BACKOFF" if fail else "RUNNING",
                                                "pid": 0 if fail else 4242} for p in progs}}
if fail:
    out.update(failed=True, msg="bitcoind-%s ended in BACKOFF: exited too quickly" % progs[0]["name"][9:])
print(json.dumps(out))
"""

# bitcoind_info: answers rows from $NODEFLEET_FAKE_ROWS (a JSON list, one per call, the last
# one repeated); a row "{}" fields are merged over a healthy up row of the requested instance.
FAKE_INFO = r"""#!/usr/bin/python
# WANT_JSON
import json, os, sys
args = json.load(open(sys.argv[1]))
names = args.get("names") or []
targets = args.get("instances") or []
with open(os.environ["NODEFLEET_FAKE_LOG"], "a") as log:
    log.write(json.dumps({"module": "bitcoind_info", "names": names,
                          "targets": [dict(t, rpc_password="***") for t in targets],
                          "count_restarts": args.get("count_restarts")}) + "\n")
counter = os.environ["NODEFLEET_FAKE_ROWS"] + ".n"
n = int(open(counter).read()) if os.path.exists(counter) else 0
open(counter, "w").write(str(n + 1))
script = json.load(open(os.environ["NODEFLEET_FAKE_ROWS"]))
over = script[min(n, len(script) - 1)]
t = targets[0]
row = {"name": t["name"], "state": "up", "message": "", "unsupervised": False, "network": t.get("network"),
       "chain": t.get("network"), "version": 289900, "subversion": "/Satoshi:28.99.0/", "uptime": 120,
       "blocks": 100, "headers": 100, "peers": {"total": 0}, "ports": {"rpc": t.get("rpc_port")},
       "supervisord": {"state": "RUNNING", "pid": 4242, "uptime": 120, "start": 1}}
row.update(over)
print(json.dumps({"changed": False, "instances": [row], "summary": {"total": 1},
                  "supervisord": {"reachable": True, "error": ""}}))
"""

PLAYBOOK = [{"ansible.builtin.import_playbook": os.path.join(REPO, "playbooks", "instance.yml")}]
PASSWORD = "instance-playbook-secret-pw"


def host_vars(*names, absent=()):
    instances = [
        {"name": n, "impl": "core", "network": "regtest", "rpc_users": [{"user": "ops", "password": PASSWORD}]}
        for n in names
    ]
    instances += [{"name": n, "state": "absent"} for n in absent]
    return {
        "ansible_become": False,
        "bitcoind_instances": instances,
        "bitcoind_gate_interval": 1,
        "bitcoind_gate_timeout": 20,
        "bitcoind_gate_settle": 30,
    }


HOSTS = {"node1": host_vars("core-a", "core-b", absent=("old",)), "node2": host_vars("core-c")}


def run_instance(tmp_path, rows=None, env=None, hosts=None, **survey):
    coll = stub_collection(tmp_path / "coll", {}, {"supervisord_program": FAKE_SUPERVISORD, "bitcoind_info": FAKE_INFO})
    log = tmp_path / "calls.jsonl"
    log.write_text("")
    rows_file = tmp_path / "rows.json"
    rows_file.write_text(json.dumps(rows or [{}]))
    extra = ("-e", json.dumps(survey)) if survey else ()
    rc, out, _ = run_play(
        tmp_path,
        coll,
        PLAYBOOK,
        {},
        extra_args=extra,
        hosts=hosts or HOSTS,
        env={"NODEFLEET_FAKE_LOG": str(log), "NODEFLEET_FAKE_ROWS": str(rows_file), **(env or {})},
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    return rc, out, calls


def refused(rc, out, calls):
    assert rc != 0, out
    assert calls == [], calls  # no module ran anywhere
    assert "PLAY [Run the action on the instance]" not in out, out


# --------------------------------------------------------------------------- refused requests


@pytest.mark.parametrize(
    ("survey", "message"),
    [
        (
            {"host": "node9", "instance": "core-a", "action": "restart"},
            "host 'node9' is not a host of the inventory (known: node1, node2)",
        ),
        (
            {"host": "node*", "instance": "core-a", "action": "restart"},
            "host 'node*' is not a host of the inventory (known: node1, node2)",
        ),
        (
            {"host": "all", "instance": "core-a", "action": "stop"},
            "host 'all' is not a host of the inventory (known: node1, node2)",
        ),
        (
            {"instance": "core-a", "action": "stop"},
            "host '' is not a host of the inventory (known: node1, node2)",
        ),
        (
            {"host": "node1", "instance": "core-c", "action": "restart"},
            "instance 'core-c' is not in bitcoind_instances of host 'node1' (known: core-a, core-b)",
        ),
        (
            {"host": "node1", "instance": "old", "action": "start"},
            "instance 'old' is absent (state: absent) in bitcoind_instances of host 'node1' (known: core-a, core-b)",
        ),
        (
            {"host": "node1", "action": "status"},
            "instance '' is not in bitcoind_instances of host 'node1' (known: core-a, core-b)",
        ),
        (
            {"host": "node1", "instance": "core-a", "action": "reboot"},
            "action 'reboot' is not one of start, stop, restart, status",
        ),
        (
            {"host": "node1", "instance": "core-a", "action": "Restart"},
            "action 'Restart' is not one of start, stop, restart, status",
        ),
        (
            {"host": "node1", "instance": "core-a"},
            "action '' is not one of start, stop, restart, status",
        ),
    ],
)
def test_bad_request_fails_before_anything_happens(tmp_path, survey, message):
    rc, out, calls = run_instance(tmp_path, **survey)
    refused(rc, out, calls)
    assert message in out, out  # on one line, as AWX shows it


# --------------------------------------------------------------------------- good requests


def test_restart_touches_only_that_instance_and_passes_the_gate(tmp_path):
    rc, out, calls = run_instance(tmp_path, host="node1", instance="core-b", action="restart")
    assert rc == 0, out
    restarts = [c for c in calls if c["module"] == "supervisord_program"]
    assert restarts == [
        {
            "module": "supervisord_program",
            "programs": [["bitcoind-core-b", "restarted"]],
            "server_url": "unix:///var/run/supervisor.sock",
        }
    ]
    infos = [c for c in calls if c["module"] == "bitcoind_info"]
    # before, the gate (passes at once: up 120 s, same pid), the status row
    assert len(infos) == 3 and all(c["names"] == ["core-b"] for c in infos)
    assert all([t["name"] for t in c["targets"]] == ["core-b"] for c in infos)
    # restarts of the gate's own making must not read as a restart loop
    assert infos[1]["count_restarts"] is False
    assert "PLAY RECAP" in out and "node2" not in out.split("PLAY RECAP")[1]
    assert "host node1 instance core-b: health gate passed" in out
    assert PASSWORD not in out


def test_restart_polls_through_warm_up_until_the_gate_passes(tmp_path):
    rows = [
        {},  # before the restart
        {"state": "warming_up", "message": "RPC error -28: Loading block index"},
        {"state": "warming_up", "message": "RPC error -28: Verifying blocks"},
        {"supervisord": {"state": "RUNNING", "pid": 4242, "uptime": 12}},  # not settled yet
        {},
    ]
    rc, out, calls = run_instance(tmp_path, rows=rows, host="node1", instance="core-a", action="restart")
    assert rc == 0, out
    assert len([c for c in calls if c["module"] == "bitcoind_info"]) == 6
    assert "health gate passed" in out


def test_restart_on_the_wrong_chain_fails_naming_host_instance_check_and_values(tmp_path):
    rows = [{}, {"chain": "main"}]
    rc, out, calls = run_instance(tmp_path, rows=rows, host="node1", instance="core-a", action="restart")
    assert rc != 0, out
    text = " ".join(out.split())
    assert "host node1 instance core-a: health gate failed - chain: expected regtest, actual main" in text, out
    # A wrong chain does not heal by waiting: one gate poll, not the whole timeout.
    assert len([c for c in calls if c["module"] == "bitcoind_info"]) == 2


def test_restart_that_does_not_come_up_fails_the_gate(tmp_path):
    rows = [{}, {"state": "down", "message": "connection refused", "supervisord": {"state": "BACKOFF", "pid": 0}}]
    rc, out, _ = run_instance(
        tmp_path,
        rows=rows,
        env={"NODEFLEET_FAKE_RESTART_FAILS": "1"},
        host="node1",
        instance="core-a",
        action="restart",
    )
    assert rc != 0, out
    text = " ".join(out.split())
    assert "host node1 instance core-a: health gate failed - restart: bitcoind-core-a ended in BACKOFF" in text, out


def test_height_lost_after_the_restart_fails_when_the_timeout_ends(tmp_path):
    rows = [{"blocks": 150}, {"blocks": 140}]
    hosts = {"node1": {**host_vars("core-a"), "bitcoind_gate_timeout": 2}}
    rc, out, calls = run_instance(tmp_path, rows=rows, hosts=hosts, host="node1", instance="core-a", action="restart")
    assert rc != 0, out
    assert "height: expected >= 150 (before 150 - max loss 0), actual 140" in " ".join(out.split()), out
    assert len([c for c in calls if c["module"] == "bitcoind_info"]) >= 3  # polled until the deadline


@pytest.mark.parametrize(("action", "state"), [("stop", "stopped"), ("start", "started")])
def test_stop_and_start_touch_only_that_program(tmp_path, action, state):
    rc, out, calls = run_instance(tmp_path, host="node2", instance="core-c", action=action)
    assert rc == 0, out
    assert [c["programs"] for c in calls if c["module"] == "supervisord_program"] == [[["bitcoind-core-c", state]]]
    assert [c["names"] for c in calls if c["module"] == "bitcoind_info"] == [["core-c"]]


def test_status_only_reads_and_prints_the_row_without_secrets(tmp_path):
    rc, out, calls = run_instance(tmp_path, host="node1", instance="core-a", action="status")
    assert rc == 0, out
    assert [c["module"] for c in calls] == ["bitcoind_info"]
    shown = out.split("Show the instance's status", 1)[1]
    for field in ('"name": "core-a"', '"chain": "regtest"', '"state": "up"', '"action": "status"'):
        assert field in shown, out
    assert PASSWORD not in out
