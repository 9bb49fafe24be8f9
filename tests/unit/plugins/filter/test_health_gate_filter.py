# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The health_gate filter: the module_utils verdict, bad input as AnsibleFilterError naming it."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.nodefleet.bitcoin.plugins.filter.health_gate import FilterModule, health_gate

ROW = {
    "name": "core1",
    "state": "up",
    "network": "regtest",
    "chain": "regtest",
    "blocks": 10,
    "peers": {"total": 0},
    "supervisord": {"state": "RUNNING", "pid": 7, "uptime": 60},
}


def test_filter_is_registered_under_its_name():
    assert FilterModule().filters() == {"health_gate": health_gate}


def test_filter_picks_the_named_row_of_a_whole_result():
    result = {"instances": [dict(ROW, name="other", chain="main"), ROW], "summary": {"total": 2}}
    verdict = health_gate(
        result, before=ROW, expect={"pid": 7}, thresholds={"settle": 30}, now="1.5", host="n1", name="core1"
    )
    assert verdict["ok"] and verdict["instance"] == "core1" and verdict["host"] == "n1"


def test_filter_reports_a_failure_with_values():
    verdict = health_gate(ROW, expect={"chain": "main"}, host="n1")
    assert verdict["ok"] is False and verdict["final"] is True
    assert verdict["failures"] == [{"check": "chain", "expected": "main", "actual": "regtest"}]
    assert verdict["message"] == "host n1 instance core1: health gate failed - chain: expected main, actual regtest"


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"thresholds": {"min_peers": -2}}, "health_gate: thresholds.min_peers: must be an integer >= 0"),
        ({"now": "later"}, "health_gate: could not convert string to float"),
    ],
)
def test_bad_input_is_a_filter_error(kwargs, text):
    with pytest.raises(AnsibleFilterError, match=text):
        health_gate(ROW, **kwargs)
