# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""health_gate.evaluate: every check passes and fails on the values a user relies on."""

from __future__ import annotations

import copy

import pytest
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.health_gate import (
    CHECKS,
    THRESHOLDS,
    GateInputError,
    evaluate,
    pick_row,
)

NOW = 1_800_000_000.0


def row(**over):
    """A bitcoind_info instance row of a healthy regtest instance, up for 120 s with 3 peers."""
    base = {
        "name": "core1",
        "state": "up",
        "message": "",
        "unsupervised": False,
        "network": "regtest",
        "chain": "regtest",
        "version": 289900,
        "subversion": "/Satoshi:28.99.0/",
        "uptime": 120,
        "blocks": 200,
        "headers": 200,
        "peers": {"total": 3, "inbound": 1, "outbound": 2},
        "supervisord": {"state": "RUNNING", "pid": 4242, "start": NOW - 120, "uptime": 120},
    }
    for key, value in over.items():
        if key == "sup":
            base["supervisord"] = None if value is None else {**base["supervisord"], **value}
        else:
            base[key] = value
    return base


def gate(before=None, after=None, expect=None, thresholds=None, **kw):
    return evaluate(
        before, row() if after is None else after, expect=expect, thresholds=thresholds, now=NOW, host="node1", **kw
    )


def failed(result):
    return {f["check"]: f for f in result["failures"]}


# --------------------------------------------------------------------------- all pass


def test_healthy_restart_passes_every_check():
    result = gate(
        before=row(uptime=9000),
        expect={"chain": "regtest", "version": 289900, "pid": 4242, "subversion": "/Satoshi:28.99.0/"},
    )
    assert result["ok"] and result["final"]
    assert result["failures"] == []
    assert result["checked"] == list(CHECKS)
    assert result["instance"] == "core1" and result["host"] == "node1"
    assert "passed" in result["message"]


def test_defaults_are_documented_values():
    assert THRESHOLDS == {"settle": 30, "min_peers": 1, "max_height_loss": 0}


# --------------------------------------------------------------------------- rpc


@pytest.mark.parametrize("state", ["warming_up", "down", "hung", "auth_failed", "error", "restarting"])
def test_rpc_must_answer_and_not_be_warming_up(state):
    result = gate(after=row(state=state, message="RPC error -28: Loading block index"))
    assert not result["ok"]
    assert result["failures"] == [
        {"check": "rpc", "expected": "up", "actual": f"{state} (RPC error -28: Loading block index)"}
    ]
    # Nothing else is compared while RPC does not answer; waiting may still clear it.
    assert result["checked"] == ["rpc"] and not result["final"]


def test_rpc_down_and_supervisord_gave_up_is_final():
    result = gate(after=row(state="down", sup={"state": "FATAL", "pid": 0}))
    assert not result["ok"] and result["final"]
    assert failed(result)["rpc"]["expected"] == "up"


def test_no_status_row_fails_rpc_naming_why():
    result = evaluate(None, {"failed": True, "msg": "supervisord unreachable"}, now=NOW, host="n", instance="core1")
    assert not result["ok"]
    assert failed(result)["rpc"]["actual"] == "bitcoind_info failed: supervisord unreachable"
    missing = evaluate(None, {"instances": [row(name="other")]}, now=NOW, instance="core1")
    assert failed(missing)["rpc"]["actual"] == "no status row for the instance"


# --------------------------------------------------------------------------- supervised


def test_supervised_fails_when_rpc_answers_from_an_unsupervised_daemon():
    result = gate(after=row(unsupervised=True, sup={"state": "STOPPED", "pid": 0}))
    assert failed(result)["supervised"] == {
        "check": "supervised",
        "expected": "supervisord state RUNNING",
        "actual": "supervisord state STOPPED, RPC answers unsupervised",
    }
    assert result["final"]


def test_supervised_is_not_checked_without_supervisord_data():
    result = gate(after=row(sup=None))
    assert "supervised" not in result["checked"]
    assert result["ok"]  # settle falls back to RPC uptime (120 s)


# --------------------------------------------------------------------------- chain


def test_chain_expected_explicitly():
    result = gate(after=row(chain="test"), expect={"chain": "regtest"})
    assert failed(result)["chain"] == {"check": "chain", "expected": "regtest", "actual": "test"}
    assert result["final"]


def test_chain_defaults_to_the_chain_before_then_the_configured_network():
    assert failed(gate(before=row(chain="signet", network="signet"), after=row()))["chain"]["expected"] == "signet"
    assert failed(gate(after=row(chain="main")))["chain"] == {"check": "chain", "expected": "regtest", "actual": "main"}
    assert gate(after=row())["ok"]


# --------------------------------------------------------------------------- version / subversion


def test_version_checked_only_when_expected():
    assert "version" not in gate(after=row(version=1))["checked"]
    result = gate(expect={"version": 300000})
    assert failed(result)["version"] == {"check": "version", "expected": 300000, "actual": 289900}
    assert result["final"]
    assert gate(expect={"version": "289900"})["ok"]  # survey/extra-vars strings are numbers too


def test_subversion_checked_only_when_expected():
    assert "subversion" not in gate()["checked"]
    result = gate(expect={"subversion": "/Satoshi:30.0.0/"})
    assert failed(result)["subversion"]["actual"] == "/Satoshi:28.99.0/"
    assert result["final"]
    assert gate(expect={"subversion": "/Satoshi:28.99.0/"})["ok"]


# --------------------------------------------------------------------------- height


def test_height_may_not_drop_below_before_after_a_clean_stop():
    assert gate(before=row(blocks=200))["ok"]
    result = gate(before=row(blocks=201))
    assert failed(result)["height"] == {
        "check": "height",
        "expected": ">= 201 (before 201 - max loss 0)",
        "actual": 200,
    }
    # Not final: the instance may regain the tip from its peers before the timeout.
    assert not result["final"]


def test_height_allows_the_configured_loss():
    assert gate(before=row(blocks=205), thresholds={"max_height_loss": 5})["ok"]
    assert not gate(before=row(blocks=206), thresholds={"max_height_loss": 5})["ok"]


def test_height_not_checked_without_a_height_before():
    assert "height" not in gate(before=row(blocks=None))["checked"]
    assert "height" not in gate()["checked"]


# --------------------------------------------------------------------------- settle


def test_settle_needs_the_process_up_for_the_window():
    result = gate(after=row(sup={"uptime": 10, "start": NOW - 10}))
    assert failed(result)["settle"] == {
        "check": "settle",
        "expected": "up for >= 30s",
        "actual": "10s (supervisord uptime)",
    }
    assert not result["final"]
    assert gate(after=row(sup={"uptime": 10}), thresholds={"settle": 10})["ok"]


def test_settle_uses_supervisord_start_then_rpc_uptime():
    start_only = gate(after=row(sup={"uptime": None, "start": NOW - 5}))
    assert failed(start_only)["settle"]["actual"] == "5s (now - supervisord start)"
    rpc_only = gate(after=row(uptime=7, sup=None))
    assert failed(rpc_only)["settle"]["actual"] == "7s (rpc uptime)"


def test_settle_fails_for_good_when_the_pid_changed():
    result = gate(expect={"pid": 4000})
    assert failed(result)["settle"] == {
        "check": "settle",
        "expected": "pid 4000 (no restart within 30s)",
        "actual": "pid 4242",
    }
    assert result["final"]
    assert gate(expect={"pid": 4242})["ok"]
    assert gate(expect={"pid": 0})["ok"]  # "not running" is no pid to hold on to


# --------------------------------------------------------------------------- peers


def test_peers_must_come_back_when_it_had_some():
    result = gate(before=row(peers={"total": 5}), after=row(peers={"total": 0}))
    assert failed(result)["peers"] == {
        "check": "peers",
        "expected": ">= 1 (had 5, min_peers 1)",
        "actual": 0,
    }
    assert not result["final"]
    assert gate(before=row(peers={"total": 5}), after=row(peers={"total": 1}))["ok"]


def test_peers_threshold_is_capped_at_the_count_before():
    # min_peers 8, had 2: two are enough.
    assert gate(before=row(peers={"total": 2}), after=row(peers={"total": 2}), thresholds={"min_peers": 8})["ok"]
    result = gate(before=row(peers={"total": 9}), after=row(peers={"total": 7}), thresholds={"min_peers": 8})
    assert failed(result)["peers"]["expected"] == ">= 8 (had 9, min_peers 8)"


def test_peers_not_checked_when_it_had_none_or_min_peers_is_zero():
    assert "peers" not in gate(before=row(peers={"total": 0}), after=row(peers={"total": 0}))["checked"]
    assert "peers" not in gate(after=row(peers={"total": 0}))["checked"]  # nothing known before
    assert gate(before=row(peers={"total": 4}), after=row(peers={"total": 0}), thresholds={"min_peers": 0})["ok"]


# --------------------------------------------------------------------------- several failures, inputs


def test_every_failure_is_listed_with_host_instance_and_values():
    result = gate(
        before=row(blocks=300, peers={"total": 2}),
        after=row(chain="test", blocks=10, peers={"total": 0}, sup={"uptime": 3}),
        expect={"version": 1},
    )
    assert [f["check"] for f in result["failures"]] == ["chain", "version", "height", "settle", "peers"]
    message = result["message"]
    assert message.startswith("host node1 instance core1: health gate failed - chain: expected regtest, actual test")
    assert "version: expected 1, actual 289900" in message


def test_whole_bitcoind_info_results_are_accepted():
    before = {"instances": [row(name="other", blocks=999), row(blocks=150)]}
    after = {"instances": [row(name="other"), row()], "summary": {}}
    assert evaluate(before, after, now=NOW, instance="core1")["ok"]
    assert pick_row({"instances": [row()]}) == row()
    assert pick_row({"instances": [row(), row(name="b")]}) is None  # ambiguous without a name
    assert pick_row(None) is None and pick_row({}) is None
    # A skipped task's registered result (no status taken before) is no row either.
    assert pick_row({"changed": False, "skipped": True, "skip_reason": "Conditional result was False"}) is None


def test_inputs_are_not_modified():
    before, after = row(blocks=100), row()
    copies = copy.deepcopy((before, after))
    gate(before=before, after=after, expect={"version": 1})
    assert (before, after) == copies


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"thresholds": {"settle": -1}}, "thresholds.settle: must be an integer >= 0, got -1"),
        ({"thresholds": {"settle": "soon"}}, "thresholds.settle: must be an integer >= 0, got 'soon'"),
        ({"thresholds": {"timeout": 5}}, "thresholds: unknown keys ['timeout']"),
        ({"thresholds": [1]}, "thresholds: expected a dict"),
        ({"expect": {"version": "v30"}}, "expect.version: must be an integer >= 0, got 'v30'"),
        ({"expect": {"network": "main"}}, "expect: unknown keys ['network']"),
        ({"expect": "main"}, "expect: expected a dict"),
    ],
)
def test_bad_inputs_name_what_is_wrong(kwargs, message):
    with pytest.raises(GateInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        evaluate(None, row(), now=NOW, **kwargs)


def test_bad_row_type_is_refused():
    with pytest.raises(GateInputError, match="expected a bitcoind_info result or instance row"):
        evaluate(None, ["up"], now=NOW)
