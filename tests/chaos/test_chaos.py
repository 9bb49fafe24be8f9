# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Self-tests of the chaos tooling (run by scripts/chaos.sh before the matrix):
the judge (chaos.py), the matrix data and the probe's pure parts."""

from __future__ import annotations

import copy
import importlib.util
import json
import os

import pytest
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


chaos = _load("chaos_tool", os.path.join(HERE, "chaos.py"))
probe = _load("chaos_probe", os.path.join(HERE, "files", "chaos_probe.py"))

with open(os.path.join(HERE, "matrix.yml"), encoding="utf-8") as _fh:
    MATRIX = yaml.safe_load(_fh)

TARGETS = {"instance", "all", "tor", "supervisord", "node"}
PROCESS = {"sigterm", "sigkill", "sigstop"}
DRIFT = {
    "rpcauth_edit",
    "program_file_deleted",
    "torrc_dropin_deleted",
    "onion_dir_deleted",
    "port_taken",
    "stale_lock",
}

LIMITS = {"oom", "cpu_spin"}  # kernel limits (issue 12): the target instance needs memory_max / cpu_quota


# ---------------------------------------------------------------------------- matrix data
@pytest.mark.parametrize("cell", MATRIX["cells"], ids=lambda c: c["id"])
def test_matrix_cell_is_runnable(cell):
    cell = {**MATRIX["defaults"], **cell}
    assert cell["target"] in TARGETS
    assert cell["fault"] in PROCESS | DRIFT | LIMITS | {"crashloop", "restart"}
    if cell["fault"] in LIMITS:
        assert cell["target"] == "instance" and cell["recovery"] == "supervision"
    assert cell["timing"] in ("steady", "startup")
    assert cell["recovery"] in ("supervision", "heal", "converge")
    if cell["fault"] == "sigstop":
        assert cell["recovery"] == "heal", "a hang is never seen by supervision"
    if cell["fault"] in DRIFT - {"stale_lock", "port_taken"} or cell["fault"] == "crashloop":
        assert cell["recovery"] == "converge"
    if cell["fault"] in DRIFT | {"crashloop"}:
        assert cell["target"] == "instance"
    if cell["target"] == "node":
        assert cell["fault"] == "restart"


def test_matrix_covers_the_issue():
    cells = [{**MATRIX["defaults"], **c} for c in MATRIX["cells"] if not c.get("manual")]
    seen = {(c["target"], c["fault"]) for c in cells}
    for target in ("instance", "all", "tor", "supervisord"):
        for fault in PROCESS:
            assert (target, fault) in seen, (target, fault)
    assert ("node", "restart") in seen
    assert DRIFT | {"crashloop"} <= {c["fault"] for c in cells}
    assert {c["target"] for c in cells if c["timing"] == "startup"} >= {"instance", "supervisord"}
    kill = next(c for c in cells if c["id"] == "instance-sigkill-steady")
    assert kill["repeat"] >= 10 and kill["budget_ms"] <= 5000
    sv = next(c for c in cells if c["id"] == "supervisord-sigkill-steady")
    assert sv["budget_ms"] <= 20000
    node = next(c for c in cells if c["id"] == "node-restart")
    assert node["budget_ms"] <= 8000


def test_select_sets():
    ci = chaos.select_cells(MATRIX, "ci")
    full = chaos.select_cells(MATRIX, "full")
    assert 0 < len(ci) < len(full)
    assert all(c["ci"] for c in ci)
    assert not any(c.get("manual") for c in full)
    only = chaos.select_cells(MATRIX, "ci", ["control-supervisord-sigkill-without-dropin"])
    assert [c["id"] for c in only] == ["control-supervisord-sigkill-without-dropin"]
    assert only[0]["node"] == MATRIX["defaults"]["node"]  # defaults merged


def test_ci_subset_is_representative():
    """docs/chaos.md, "The CI subset": the three measured targets, every target kind, every
    recovery mode, a fault during start-up and a drift cell run in CI."""
    ci = chaos.select_cells(MATRIX, "ci")
    ids = {c["id"] for c in ci}
    assert {"instance-sigkill-steady", "supervisord-sigkill-steady", "node-restart"} <= ids
    assert {"instance", "tor", "supervisord", "node"} <= {c["target"] for c in ci}
    assert {c["recovery"] for c in ci} == {"supervision", "heal", "converge"}
    assert any(c["timing"] == "startup" for c in ci)
    assert any(c["fault"] in DRIFT - {"port_taken"} for c in ci)
    assert any(c["fault"] == "port_taken" for c in ci)
    assert any(c["fault"] == "crashloop" for c in ci)


@pytest.mark.parametrize(
    "matrix, set_name, only, error",
    [
        ({"cells": [{"id": "a"}, {"id": "a"}]}, "full", None, "duplicate"),
        ({"cells": [{"id": "a"}]}, "full", ["b"], "unknown cell"),
        ({"cells": [{"id": "a"}]}, "nightly", None, "unknown set"),
    ],
)
def test_select_errors(matrix, set_name, only, error):
    with pytest.raises(ValueError, match=error):
        chaos.select_cells(matrix, set_name, only)


# ---------------------------------------------------------------------------- playbook summary
def test_summarize_playbook_counts_and_failures():
    output = "some warning\n" + json.dumps(
        {
            "plays": [
                {
                    "tasks": [
                        {"task": {"name": "ok task"}, "hosts": {"n1": {"changed": True}}},
                        {
                            "task": {"name": "Start programs"},
                            "hosts": {"n1": {"failed": True, "msg": "bitcoind-core-regtest is FATAL: bind failed"}},
                        },
                        {"task": {"name": "ignored"}, "hosts": {"n1": {"failed": True, "ignore_errors": True}}},
                        {
                            "task": {"name": "loop"},
                            "hosts": {
                                "n2": {"failed": True, "msg": "", "results": [{"failed": True, "msg": "item x"}]}
                            },
                        },
                        {
                            "task": {"name": "Converge each instance"},
                            "hosts": {
                                "n2": {
                                    "failed": True,
                                    "msg": "One or more items failed",
                                    "results": [
                                        {"failed": False, "msg": "ok"},
                                        {"failed": True, "msg": "p2p_port: in use; converging core-regtest"},
                                    ],
                                }
                            },
                        },
                    ]
                }
            ],
            "stats": {"n1": {"changed": 2, "failures": 1}, "n2": {"changed": 0, "failures": 1, "unreachable": 0}},
        }
    )
    summary = chaos.summarize_playbook(output, 2, 1234)
    assert summary["changed"] == 2 and summary["failed"] == 2 and summary["rc"] == 2
    assert [f["task"] for f in summary["failures"]] == ["Start programs", "loop", "Converge each instance"]
    assert "FATAL" in summary["failures"][0]["msg"]
    assert summary["failures"][1]["msg"] == "item x"
    # the failed item's message (which names the instance) is kept, not just the loop's summary
    assert summary["failures"][2]["msg"].endswith("converging core-regtest")


def test_summarize_playbook_unparsable_output():
    summary = chaos.summarize_playbook("ERROR! the playbook could not be found", 1, 5)
    assert not summary["parsed"] and summary["rc"] == 1 and summary["changed"] == 0


@pytest.mark.parametrize(
    "values, pct, expected",
    [
        ([5], 95, 5),
        (list(range(1, 11)), 95, 10),
        (list(range(1, 11)), 50, 5),
        (list(range(1, 21)), 95, 19),
        ([], 50, None),
    ],
)
def test_percentile_nearest_rank(values, pct, expected):
    assert chaos.percentile(values, pct) == expected


# ---------------------------------------------------------------------------- the judge
def _inst(pid, started, onion, blocks=5, kind="native", chain="regtest", chain_id="h1", connections=1):
    return {
        "program_pid": pid,
        "program_state": "RUNNING",
        "started_ms": started,
        "uptime_s": 10,
        "onion": onion,
        "rpcauth": ["demo:aa$bb"],
        "blocks": blocks,
        "bestblockhash": f"{chain_id}-tip{blocks}",
        "chain_id": chain_id,
        "chain": chain,
        "connections": connections,
        "rpc_ok": True,
        "daemons": [{"pid": pid, "ppid": 100, "state": "S", "kind": kind}],
    }


def _node(pids, started=1000, sv=100, tor=200):
    return {
        "supervisord": {"pids": [sv], "main_pid": sv, "xmlrpc_ok": True},
        "tor": {"pids": [tor], "socks_ok": True},
        "instances": {name: _inst(pid, started, f"{name}.onion") for name, pid in pids.items()},
    }


def _fleet():
    """n1/a: real Core on regtest, peered with n2/c (same chain, same tip); n1/b: a stand-in
    (its chain is its own: stand-ins exchange no blocks)."""
    fleet = {"n1": _node({"a": 11, "b": 12}), "n2": _node({"c": 21})}
    fleet["n1"]["instances"]["b"] = _inst(12, 1000, "b.onion", blocks=40, kind="standin", connections=0)
    return fleet


def _chain_seen(before_height=5, after_restart=5, tip_after_rpc_ms=300, fleet_tip_hash="h1-tip5"):
    return {
        "fleet_tip": {"hash": fleet_tip_hash, "height": 5},
        "height_after_restart": after_restart,
        "min_height": after_restart,
        "tip_ms": None if tip_after_rpc_ms is None else 1800 + tip_after_rpc_ms,
        "tip_after_rpc_ms": tip_after_rpc_ms,
        "last_seen": {"height": 5, "hash": "h1-tip5"},
    }


def _passing_raw():
    before = _fleet()
    after = copy.deepcopy(before)
    after["n1"]["instances"]["a"].update({"program_pid": 31, "started_ms": 9000})
    after["n1"]["instances"]["a"]["daemons"] = [{"pid": 31, "ppid": 100, "state": "S", "kind": "native"}]
    return {
        "cell": {
            "id": "instance-sigkill-steady",
            "target": "instance",
            "fault": "sigkill",
            "timing": "steady",
            "recovery": "supervision",
            "node": "n1",
            "names": ["a"],
            "witness": "a",
            "repeat": 1,
            "budget_ms": 5000,
            "tip_budget_ms": 10000,
        },
        "attempts": [
            {
                "before": before,
                "after": after,
                "injected": {"t0_ms": 1, "detail": {"pids": {"a": 11}}},
                "wait": {
                    "recovered": True,
                    "ttr_ms": {"a": 1800},
                    "max_ttr_ms": 1800,
                    "chain": {"a": _chain_seen()},
                    "tip_regained": True,
                },
                "heal": None,
                "converges": [],
            }
        ],
        "idempotence": {"rc": 0, "changed": 0, "failed": 0, "changed_by_host": {"n1": 0}, "duration_ms": 9},
        "error": "",
    }


def _failed(result):
    return sorted({c["name"] for c in result["checks"] if not c["ok"]})


def test_evaluate_passing_cell():
    result = chaos.evaluate(_passing_raw())
    assert result["outcome"] == "pass", _failed(result)
    assert result["time_to_recovery_ms"] == 1800
    names = {c["name"] for c in result["checks"]}
    assert {
        "recovered",
        "recovered_by_supervision_alone",
        "target_daemon_replaced",
        "onion_addresses_unchanged",
        "rpcauth_lines_unchanged",
        "chain_height_unchanged",
        "one_daemon_per_datadir_no_orphans",
        "untargeted_instances_untouched",
        "second_converge_changes_nothing",
        "time_to_recovery_within_budget",
    } <= names


def _orphan(raw):
    raw["attempts"][0]["after"]["n1"]["instances"]["a"]["daemons"].append({"pid": 11, "ppid": 1, "state": "S"})


def _onion(raw):
    raw["attempts"][0]["after"]["n1"]["instances"]["b"]["onion"] = "other.onion"


def _auth(raw):
    raw["attempts"][0]["after"]["n2"]["instances"]["c"]["rpcauth"] = ["demo:cc$dd"]


def _chain(raw):
    raw["attempts"][0]["after"]["n1"]["instances"]["a"]["blocks"] = 4


def _bystander(raw):
    raw["attempts"][0]["after"]["n1"]["instances"]["b"]["started_ms"] = 8000


def _not_killed(raw):
    raw["attempts"][0]["after"]["n1"]["instances"]["a"]["program_pid"] = 11
    raw["attempts"][0]["after"]["n1"]["instances"]["a"]["daemons"] = [
        {"pid": 11, "ppid": 100, "state": "S", "kind": "native"}
    ]


def _slow(raw):
    raw["attempts"][0]["wait"].update({"max_ttr_ms": 7000, "ttr_ms": {"a": 7000}})


def _not_back(raw):
    raw["attempts"][0]["wait"] = {"recovered": False, "not_recovered": ["a"], "max_ttr_ms": None}


def _converged(raw):
    raw["attempts"][0]["converges"] = [{"rc": 0, "changed": 3, "failed": 0}]


def _not_idempotent(raw):
    raw["idempotence"]["changed"] = 1


def _two_supervisords(raw):
    raw["attempts"][0]["after"]["n2"]["supervisord"]["pids"] = [100, 555]


def _crashed_framework(raw):
    raw["error"] = "probe inject failed"


@pytest.mark.parametrize(
    "mutate, failing",
    [
        (_orphan, ["one_daemon_per_datadir_no_orphans"]),
        (_onion, ["onion_addresses_unchanged"]),
        (_auth, ["rpcauth_lines_unchanged"]),
        (_chain, ["chain_height_unchanged"]),
        (_bystander, ["untargeted_instances_untouched"]),
        (_not_killed, ["target_daemon_replaced", "untargeted_instances_untouched"][:1]),
        (_slow, ["time_to_recovery_within_budget"]),
        (_not_back, ["recovered", "time_to_recovery_within_budget", "fleet_tip_regained_within_budget"]),
        (_converged, ["recovered_by_supervision_alone"]),
        (_not_idempotent, ["second_converge_changes_nothing"]),
        (_two_supervisords, ["one_daemon_per_datadir_no_orphans"]),
        (_crashed_framework, ["framework_ran_to_completion"]),
    ],
    ids=lambda v: getattr(v, "__name__", None),
)
def test_evaluate_detects_each_failure(mutate, failing):
    raw = _passing_raw()
    mutate(raw)
    result = chaos.evaluate(raw)
    assert result["outcome"] == "fail"
    assert _failed(result) == sorted(failing)


def test_evaluate_tor_target_allows_no_instance_restart():
    raw = _passing_raw()
    raw["cell"].update({"target": "tor", "names": [], "id": "tor-sigkill-steady", "budget_ms": None})
    att = raw["attempts"][0]
    att["after"]["n1"]["tor"]["pids"] = [201]
    # the instance "a" restarted (from _passing_raw): a tor fault must not do that
    assert _failed(chaos.evaluate(raw)) == ["untargeted_instances_untouched"]
    att["after"] = copy.deepcopy(att["before"])
    att["after"]["n1"]["tor"]["pids"] = [201]
    assert chaos.evaluate(raw)["outcome"] == "pass"
    att["after"]["n1"]["tor"]["pids"] = [200]  # tor was never replaced: the fault did nothing
    assert _failed(chaos.evaluate(raw)) == ["tor_replaced"]


def test_evaluate_port_taken_needs_a_clear_failure_then_one_converge():
    raw = _passing_raw()
    raw["cell"].update(
        {"id": "drift-port-taken", "fault": "port_taken", "recovery": "converge", "expect_converge_failure": True}
    )
    raw["cell"].pop("budget_ms")
    att = raw["attempts"][0]
    att["injected"]["detail"] = {"bound": True, "port": 20001}
    failing = {"rc": 2, "changed": 0, "failed": 1, "failures": [{"msg": "bitcoind-a is FATAL: Unable to bind"}]}
    fixing = {"rc": 0, "changed": 1, "failed": 0}
    att["converges"] = [failing, fixing]
    assert chaos.evaluate(raw)["outcome"] == "pass", _failed(chaos.evaluate(raw))
    att["converges"] = [dict(failing, failures=[{"msg": "something failed"}]), fixing]
    assert _failed(chaos.evaluate(raw)) == ["converge_fails_clearly_while_port_taken"]
    att["converges"] = [failing, dict(fixing, rc=2, failed=1)]
    assert _failed(chaos.evaluate(raw)) == ["recovered_by_one_converge"]


def test_evaluate_repeat_reports_percentiles_and_budget():
    raw = _passing_raw()
    raw["cell"]["repeat"] = 10
    base = raw["attempts"][0]
    raw["attempts"] = []
    for ms in (1000, 1100, 1200, 1300, 1400, 1500, 1600, 1700, 1800, 6000):
        att = copy.deepcopy(base)
        att["wait"].update({"max_ttr_ms": ms})
        raw["attempts"].append(att)
    result = chaos.evaluate(raw)
    ttr = result["time_to_recovery_ms"]
    assert (ttr["p50"], ttr["p95"], ttr["max"]) == (1400, 6000, 6000)
    assert "p95_within_budget" in _failed(result)
    raw["attempts"][-1]["wait"]["max_ttr_ms"] = 1900
    assert chaos.evaluate(raw)["outcome"] == "pass"
    raw["cell"]["p50_budget_ms"] = 1300
    assert _failed(chaos.evaluate(raw)) == ["p50_within_budget"]
    raw["cell"]["p50_budget_ms"] = 1400
    assert chaos.evaluate(raw)["outcome"] == "pass"
    raw["attempts"].pop()
    assert "all_attempts_ran" in _failed(chaos.evaluate(raw))


def test_converge_recovery_must_have_put_something_back():
    raw = _passing_raw()
    raw["cell"].update({"id": "drift-x", "fault": "program_file_deleted", "recovery": "converge"})
    raw["cell"].pop("budget_ms")
    raw["attempts"][0]["converges"] = [{"rc": 0, "changed": 1, "failed": 0}]
    assert chaos.evaluate(raw)["outcome"] == "pass", _failed(chaos.evaluate(raw))
    raw["attempts"][0]["converges"] = [{"rc": 0, "changed": 0, "failed": 0}]
    assert _failed(chaos.evaluate(raw)) == ["recovered_by_one_converge"]


def test_startup_timing_must_hit_starting_state():
    raw = _passing_raw()
    raw["cell"]["timing"] = "startup"
    raw["attempts"][0]["injected"]["detail"]["startup"] = {"states_at_fault": {"a": "STARTING"}}
    assert chaos.evaluate(raw)["outcome"] == "pass"
    raw["attempts"][0]["injected"]["detail"]["startup"] = {"states_at_fault": {"a": "RUNNING"}}
    assert _failed(chaos.evaluate(raw)) == ["fault_inside_startsecs"]


# ---------------------------------------------------------------------------- report
def test_render_and_replace_table():
    result = chaos.evaluate(_passing_raw())
    bad = chaos.evaluate({**_passing_raw(), "error": "boom"})
    table = chaos.render_table([result, bad])
    assert "| instance-sigkill-steady | instance | sigkill | steady | supervision | pass | 1800 ms |" in table
    assert "**fail**" in table and "failed: framework_ran_to_completion" in table
    assert "1 of 2 cells passed." in table
    doc = f"intro\n{chaos.TABLE_BEGIN}\nold\n{chaos.TABLE_END}\nend\n"
    new = chaos.replace_table(doc, table, "Latest full run")
    assert new.startswith("intro\n") and new.endswith("end\n") and "old" not in new and table in new
    with pytest.raises(ValueError):
        chaos.replace_table("no markers", table, "x")


def test_format_ttr():
    assert chaos.format_ttr(None) == "-"
    assert chaos.format_ttr(1234) == "1234 ms"
    assert chaos.format_ttr({"p50": 1, "p95": 2, "max": 3, "samples": [1, 2, 3]}) == "p50 1 / p95 2 / max 3 ms (n=3)"


# ---------------------------------------------------------------------------- probe
CONF = """# Managed by nodefleet.bitcoin
chain=regtest
server=1
rpcauth=demo:0123$abcd
rpcauth=monitor:4567$ef01
externalip=x.onion

[regtest]
port=20001
rpcport=20000
bind=127.0.0.1:20001
bind=127.0.0.1:20002=onion
rpcbind=127.0.0.1
rpcallowip=127.0.0.1
"""


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            CONF,
            {
                "chain": "regtest",
                "rpcport": 20000,
                "p2pport": 20001,
                "rpchost": "127.0.0.1",
                "p2pbind": "127.0.0.1",
                "rpcauth": ["demo:0123$abcd", "monitor:4567$ef01"],
            },
        ),
        (
            "chain=signet\nrpcauth=a:1$2\n[signet]\nport=9\nrpcport=8\nbind=0.0.0.0:9\n[main]\nrpcport=1\n",
            {"chain": "signet", "rpcport": 8, "p2pport": 9, "p2pbind": "0.0.0.0", "rpcauth": ["a:1$2"]},
        ),
        ("", {"chain": "main", "rpcport": None, "rpcauth": []}),
        ("regtest=1\n" + probe.BROKEN_LINE + "\n[regtest]\nrpcport=5\n", {"chain": "regtest", "rpcport": 5}),
    ],
)
def test_probe_parse_conf(text, expected):
    parsed = probe.parse_conf(text)
    assert {k: parsed[k] for k in expected} == expected


def test_probe_recognises_bitcoind_processes():
    table = [
        {
            "pid": 5,
            "ppid": 1,
            "state": "S",
            "argv": ["/usr/bin/python3", "/opt/bitcoin/core/bin/bitcoind", "-datadir=/d/a"],
        },
        {"pid": 6, "ppid": 1, "state": "S", "argv": ["/opt/bitcoin/core/bin/bitcoind", "-conf=x", "-datadir=/d/b/"]},
        {"pid": 7, "ppid": 1, "state": "S", "argv": ["python3", "-c", "pass", "-datadir=/d/a"]},
        {"pid": 8, "ppid": 1, "state": "S", "argv": ["/usr/bin/bitcoin-cli", "-datadir=/d/a"]},
    ]
    found = probe.daemons_by_datadir(table)
    assert sorted(found) == ["/d/a", "/d/b"]
    assert [d["pid"] for d in found["/d/a"]] == [5]


@pytest.mark.parametrize("what, ok", [("rpc", True), ("supervisord,rpc", True), ("rpc,tor", True), ("rpc,disk", False)])
def test_probe_accepts_comma_separated_what(what, ok, monkeypatch, capsys):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    if ok:
        # "cleanup" touches only the probe's own state files; with none recorded it does nothing
        monkeypatch.setattr(probe, "STATE_DIR", "/nonexistent-chaos-state")
        assert probe.main(["cleanup", "--what", what]) == 0
        assert json.loads(capsys.readouterr().out) == {"ended": [], "resumed": []}
    else:
        with pytest.raises(SystemExit):
            probe.main(["cleanup", "--what", what])


# ---------------------------------------------------------------------------- the chain-data rule
def _chain_check(result, name):
    return next(c for c in result["checks"] if c["name"] == name)


def test_sigkill_may_come_back_lower_when_the_tip_is_regained():
    raw = _passing_raw()
    raw["attempts"][0]["wait"]["chain"]["a"] = _chain_seen(after_restart=4, tip_after_rpc_ms=700)
    result = chaos.evaluate(raw)
    assert result["outcome"] == "pass", _failed(result)
    assert result["chain_rule"] == "tip"
    assert result["chain"]["attempts"] == [{"before": 5, "after_restart": 4, "tip_after_rpc_ms": 700}]
    assert "clean_stop_kept_height" not in {c["name"] for c in result["checks"]}
    assert chaos.format_chain(result["chain"]) == "tip 5→4→tip (+700 ms)"


def test_sigkill_fails_when_the_tip_is_not_regained():
    raw = _passing_raw()
    raw["attempts"][0]["wait"]["chain"]["a"] = _chain_seen(after_restart=4, tip_after_rpc_ms=None)
    raw["attempts"][0]["after"]["n1"]["instances"]["a"]["blocks"] = 4
    result = chaos.evaluate(raw)
    assert _failed(result) == ["chain_height_unchanged", "fleet_tip_regained_within_budget"]
    assert _chain_check(result, "fleet_tip_regained_within_budget")["value"]["a"]["why"] == "fleet tip not regained"
    assert "tip not regained" in chaos.format_chain(result["chain"])


def test_tip_regained_over_budget_fails():
    raw = _passing_raw()
    raw["cell"]["tip_budget_ms"] = 500
    raw["attempts"][0]["wait"]["chain"]["a"] = _chain_seen(after_restart=4, tip_after_rpc_ms=700)
    assert _failed(chaos.evaluate(raw)) == ["fleet_tip_regained_within_budget"]


def test_wait_that_looked_for_another_tip_fails():
    raw = _passing_raw()
    raw["attempts"][0]["wait"]["chain"]["a"] = _chain_seen(fleet_tip_hash="somewhere-else")
    assert _failed(chaos.evaluate(raw)) == ["fleet_tip_regained_within_budget"]


def test_sigterm_must_keep_the_height_even_if_the_tip_comes_back():
    raw = _passing_raw()
    raw["cell"].update({"id": "instance-sigterm-steady", "fault": "sigterm"})
    assert chaos.evaluate(raw)["outcome"] == "pass"
    raw["attempts"][0]["wait"]["chain"]["a"] = _chain_seen(after_restart=4, tip_after_rpc_ms=300)
    result = chaos.evaluate(raw)
    assert result["chain_rule"] == "kept"
    assert _failed(result) == ["clean_stop_kept_height"]


@pytest.mark.parametrize(
    "fault, target, rule",
    [
        ("sigkill", "instance", "tip"),
        ("sigstop", "all", "tip"),
        ("crashloop", "instance", "tip"),
        ("stale_lock", "instance", "tip"),
        ("restart", "node", "tip"),
        ("sigkill", "supervisord", "tip"),
        ("sigterm", "instance", "kept"),
        ("sigterm", "supervisord", "kept"),
        ("rpcauth_edit", "instance", "kept"),
        ("port_taken", "instance", "kept"),
    ],
)
def test_chain_rule_by_fault(fault, target, rule):
    assert chaos.chain_rule({"fault": fault, "target": target}) == rule
    assert chaos.chain_rule({"fault": fault, "target": target, "chain_rule": "kept"}) == "kept"


def _unpeered(raw):
    raw["attempts"][0]["before"]["n1"]["instances"]["a"]["connections"] = 0


def _tip_only_on_the_target(raw):
    raw["attempts"][0]["before"]["n2"]["instances"]["c"].update({"blocks": 4, "bestblockhash": "h1-tip4"})
    raw["attempts"][0]["after"]["n2"]["instances"]["c"].update({"blocks": 4, "bestblockhash": "h1-tip4"})


def _standin_target(raw):
    raw["attempts"][0]["before"]["n1"]["instances"]["a"]["daemons"][0]["kind"] = "standin"
    raw["attempts"][0]["wait"]["chain"]["a"]["fleet_tip"]["hash"] = "h1-tip5"


def _no_witness(raw):
    raw["cell"]["witness"] = None


@pytest.mark.parametrize("mutate", [_unpeered, _tip_only_on_the_target, _standin_target, _no_witness])
def test_a_cell_that_cannot_show_the_chain_rule_fails(mutate):
    raw = _passing_raw()
    mutate(raw)
    assert "chain_target_peered" in _failed(chaos.evaluate(raw))


def test_whole_node_cells_check_every_instance_against_its_own_chain():
    raw = _passing_raw()
    raw["cell"].update({"id": "all-sigkill-steady", "target": "all", "names": ["a", "b"]})
    att = raw["attempts"][0]
    att["after"]["n1"]["instances"]["b"].update({"program_pid": 32, "started_ms": 9000})
    att["after"]["n1"]["instances"]["b"]["daemons"] = [{"pid": 32, "ppid": 100, "state": "S", "kind": "standin"}]
    # the stand-in's tip is its own (height 40, its own hash); it was not looked for: fail
    assert _failed(chaos.evaluate(raw)) == ["fleet_tip_regained_within_budget"]
    assert chaos.tips_for(att["before"], "n1", ["a", "b"]) == {
        "a": {"hash": "h1-tip5", "height": 5},
        "b": {"hash": "h1-tip40", "height": 40},
    }
    att["wait"]["chain"]["b"] = dict(_chain_seen(after_restart=40), fleet_tip={"hash": "h1-tip40", "height": 40})
    assert chaos.evaluate(raw)["outcome"] == "pass", _failed(chaos.evaluate(raw))


def test_fleet_tip_is_the_highest_block_of_the_same_chain_only():
    fleet = _fleet()
    # n2/c is ahead on the same chain: the tip a must reach is c's
    fleet["n2"]["instances"]["c"].update({"blocks": 7, "bestblockhash": "h1-tip7"})
    # a stand-in and a real daemon of another chain are higher still, and do not count
    fleet["n2"]["instances"]["d"] = _inst(22, 1000, None, blocks=90, kind="standin")
    fleet["n2"]["instances"]["e"] = _inst(23, 1000, None, blocks=80, chain_id="other")
    fleet["n2"]["instances"]["f"] = _inst(24, 1000, None, blocks=95, chain="signet")
    tip = chaos.fleet_tip(fleet, "n1", "a")
    assert (tip["height"], tip["hash"], tip["held_by"]) == (7, "h1-tip7", ["n2/c"])
    assert tip["group"] == ["n1/a", "n2/c"]
    assert chaos.fleet_tip(fleet, "n1", "b")["group"] == ["n1/b"]


def _settled(**over):
    fleet = _fleet()
    for key, value in over.items():
        fleet["n1"]["instances"]["a"][key] = value
    return fleet


@pytest.mark.parametrize(
    "cell, settled, names, witness, error",
    [
        ({"target": "instance", "fault": "sigkill"}, _settled(), ["a"], "a", ""),
        ({"target": "all", "fault": "sigkill"}, _settled(), ["a", "b"], "a", ""),
        ({"target": "node", "fault": "restart"}, _settled(), ["a", "b"], "a", ""),
        ({"target": "tor", "fault": "sigkill"}, _settled(connections=0), [], None, ""),
        ({"target": "instance", "fault": "sigkill"}, _settled(connections=0), [], None, "no instance that can show"),
        ({"target": "instance", "fault": "sigkill"}, _settled(chain="signet"), [], None, "real-Core regtest"),
        ({"target": "instance", "fault": "onion_dir_deleted"}, _settled(onion=None), [], None, "onion service"),
        ({"target": "instance", "fault": "rpcauth_edit"}, _settled(onion=None), ["a"], "a", ""),
        ({"target": "instance", "fault": "sigkill", "instance": "b"}, _settled(), ["b"], "b", ""),
        ({"target": "instance", "fault": "sigkill", "instance": "zz"}, _settled(), [], None, "no instance 'zz'"),
    ],
)
def test_pick_targets(cell, settled, names, witness, error):
    got = chaos.pick_targets({"node": "n1", "instance": "auto", **cell}, settled)
    assert (got["names"], got["witness"]) == (names, witness)
    assert (error in got["error"]) if error else got["error"] == ""


def test_sync_state_waits_for_a_peer_on_another_node():
    fleet = _fleet()
    assert chaos.sync_state(fleet, "n1", "a")["synced"]
    fleet["n1"]["instances"]["a"].update({"blocks": 6, "bestblockhash": "h1-tip6"})  # just mined
    state = chaos.sync_state(fleet, "n1", "a")
    assert not state["synced"] and state["lagging"] == {"n2/c": 5}
    fleet["n2"]["instances"]["c"]["chain_id"] = "reorged-away"  # no peer on the chain at all
    assert chaos.sync_state(fleet, "n1", "a") == {
        "tip": {"height": 6, "hash": "h1-tip6"},
        "holders": ["n1/a"],
        "lagging": {},
        "synced": False,
        "connections": 1,
    }


def test_format_chain_for_repeated_cells():
    chain = {
        "rule": "tip",
        "attempts": [
            {"before": 5, "after_restart": 4, "tip_after_rpc_ms": 300},
            {"before": 6, "after_restart": 6, "tip_after_rpc_ms": 20},
        ],
    }
    assert chaos.format_chain(chain) == "tip: lower after restart 1/2, tip back (max +300 ms)"
    chain["attempts"][1]["tip_after_rpc_ms"] = None
    assert chaos.format_chain(chain) == "tip: lower after restart 1/2, tip back (max 1 not regained)"
    assert chaos.format_chain(None) == "-"


# ---------------------------------------------------------------------------- the probe's tip wait
class _FakeInstance:
    """Answers getblockcount / getbestblockhash from a script of (height, hash) per poll."""

    def __init__(self, name, script):
        self.name, self.datadir, self._script = name, f"/d/{name}", list(script)
        self.current = None

    def refresh(self):
        pass

    def rpc(self, method, params=None, timeout=1.0):
        if method == "getblockcount":
            self.current = self._script.pop(0) if len(self._script) > 1 else self._script[0]
            if self.current is None:
                return False, {"error": "ConnectionRefusedError"}
            return True, self.current[0]
        return True, self.current[1]


def test_probe_waits_for_the_fleet_tip_and_records_the_lower_height(monkeypatch):
    monkeypatch.setattr(probe, "POLL_S", 0.001)
    inst = _FakeInstance("a", [None, None, (4, "tip4"), (4, "tip4"), (5, "tip5")])
    out = probe.wait_rpc([inst], probe.now_ms(), 5.0, tips={"a": {"hash": "tip5", "height": 5}}, tip_timeout=5.0)
    assert out["recovered"] and out["tip_regained"]
    chain = out["chain"]["a"]
    assert (chain["height_after_restart"], chain["min_height"]) == (4, 4)
    assert chain["tip_ms"] >= out["ttr_ms"]["a"] and chain["tip_after_rpc_ms"] >= 0


def test_probe_tip_wait_is_bounded(monkeypatch):
    monkeypatch.setattr(probe, "POLL_S", 0.001)
    inst = _FakeInstance("a", [(3, "tip3")])
    out = probe.wait_rpc([inst], probe.now_ms(), 5.0, tips={"a": {"hash": "tip5", "height": 5}}, tip_timeout=0.05)
    assert out["recovered"] and not out["tip_regained"]
    assert out["chain"]["a"]["tip_ms"] is None and out["chain"]["a"]["last_seen"] == {"height": 3, "hash": "tip3"}


def test_probe_port_taken_needs_a_listener_not_a_failed_bind(tmp_path):
    """A port whose last connections are in TIME_WAIT refuses a plain bind, but nobody holds it:
    only a LISTEN socket counts (the foreign listener sets SO_REUSEADDR, as Core does)."""
    net = tmp_path / "net"
    net.mkdir()
    head = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    (net / "tcp").write_text(
        head
        + "   0: 00000000:5351 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1\n"
        + "   1: 0100007F:5352 0100007F:9C40 06 00000000:00000000 03:00000000 00000000     0        0 0\n"
    )
    (net / "tcp6").write_text(
        head + "   0: 00000000000000000000000000000000:4E21 00000000000000000000000000000000:0000 0A 0 0 0 0 0 2\n"
    )
    assert probe.listening_ports(str(tmp_path)) == {0x5351, 0x4E21}


# ---------------------------------------------------------------------------- kernel limits cells
def _limits_attempt(before_pid, after_pid, detail):
    snap = lambda pid: {"n1": {"instances": {"a": {"program_pid": pid}}}}  # noqa: E731
    return {"before": snap(before_pid), "after": snap(after_pid), "injected": {"detail": detail}}


def test_oom_cell_passes_only_when_the_kernel_killed_the_daemon():
    cell = {"node": "n1", "fault": "oom", "target": "instance", "names": ["a"]}
    v2 = {"cgroup_version": 2, "oom_kills_before": 0, "oom_kills_after": 1, "daemon_killed_after_ms": 900}
    ok = chaos.check_fault_applied(cell, _limits_attempt(1, 2, v2))
    assert all(c["ok"] for c in ok)
    assert {c["name"] for c in ok} == {"target_daemon_replaced", "killed_by_the_kernel_at_its_memory_limit"}
    # replaced, but not by the OOM killer (the counter did not move): the cell must fail
    assert not all(
        c["ok"] for c in chaos.check_fault_applied(cell, _limits_attempt(1, 2, {**v2, "oom_kills_after": 0}))
    )
    # cgroup v1: the slice hit its limit (failcnt up, peak at the limit)
    v1 = {
        "cgroup_version": 1,
        "failcnt_before": 0,
        "failcnt_after": 324,
        "memory_limit": "1073741824",
        "max_usage_after": 1073741824,
        "oom_kills_before": 0,
        "oom_kills_after": 0,
        "daemon_killed_after_ms": 900,
    }
    assert all(c["ok"] for c in chaos.check_fault_applied(cell, _limits_attempt(1, 2, v1)))
    for change in ({"failcnt_after": 0}, {"max_usage_after": 500 << 20}, {"daemon_killed_after_ms": None}):
        assert not all(c["ok"] for c in chaos.check_fault_applied(cell, _limits_attempt(1, 2, {**v1, **change})))


def test_cpu_spin_cell_checks_quota_and_neighbour_latency():
    cell = {"node": "n1", "fault": "cpu_spin", "target": "instance", "names": ["a"], "neighbour_p95_budget_ms": 500}
    detail = {"cpu_quota_percent": 50, "spin_cpu_percent": 49.0, "during": {"n": 100, "errors": 0, "p95_ms": 40.0}}
    assert all(c["ok"] for c in chaos.check_fault_applied(cell, _limits_attempt(1, 1, detail)))
    for change in (
        {"spin_cpu_percent": 190.0},
        {"during": {"n": 100, "errors": 0, "p95_ms": 900.0}},
        {"during": {"n": 0}},
    ):
        assert not all(c["ok"] for c in chaos.check_fault_applied(cell, _limits_attempt(1, 1, {**detail, **change})))
    assert not all(c["ok"] for c in chaos.check_fault_applied(cell, _limits_attempt(1, 2, detail)))  # restarted
