# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The instance_limits filter and the fleet table / textfile with kernel limits (module_utils/cgroup.py).

Controller-side plugins: here, not under module_utils, because ansible-test runs module_utils unit
tests where only ansible.module_utils is importable."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.nodefleet.bitcoin.plugins.filter.instance_limits import instance_limits as limits_filter

MIB = 1024 * 1024
RESOURCES = {
    "memory_used_bytes": 52 * MIB,
    "memory_limit_bytes": 1024 * MIB,
    "cpu_seconds_total": 12.5,
    "cpu_quota_percent": 50,
    "oom_kills_total": 1,
    "datadir_bytes": 3 * MIB,
    "cgroup": "/x",
}


def test_filter_resolves_defaults_and_leaves_unlimited_commands_alone():
    out = limits_filter(
        [
            {"name": "a", "memory_max": "2G"},
            {"name": "b", "cpu_quota": None},
            {"name": "c", "state": "absent", "memory_max": "x"},
        ],
        defaults={"cpu_quota": "50%", "state": "present"},
    )
    assert out["a"]["limited"] and out["a"]["cpu_quota"] == 50 and out["a"]["memory_max"] == 2 * 1024 * MIB
    assert out["a"]["command_prefix"][-1] == "--"
    assert out["b"] == {
        "memory_max": None,
        "cpu_quota": None,
        "io_weight": None,
        "limited": False,
        "slice": None,
        "command_prefix": [],
    }
    assert not out["c"]["limited"]


def test_filter_error_names_instance_and_option():
    with pytest.raises(AnsibleFilterError, match=r"bitcoind_instances\[b\]\.memory_max: '2GB' is not a size"):
        limits_filter([{"name": "a"}, {"name": "b", "memory_max": "2GB"}])
    with pytest.raises(AnsibleFilterError, match=r"bitcoind_instances\[a\]\.memory_max: 512M is less than"):
        limits_filter([{"name": "a", "memory_max": "512M"}])


# ------------------------------------------------------------------ kernel files


def test_fleet_table_and_prometheus_show_usage_against_limits():
    from ansible_collections.nodefleet.bitcoin.plugins.filter import fleet_status

    instance = {"name": "a", "state": "up", "impl": "core", "network": "regtest", "resources": RESOURCES}
    table = fleet_status.fleet_status_table({"h": {"instances": [instance]}})
    assert "RESOURCES" in table.splitlines()[0] and "mem 52M/1.0G cpu 12s/50% oom 1" in table
    text = fleet_status.fleet_status_prometheus({"instances": [instance]}, "h")
    for metric, value in (
        ("memory_used_bytes", 52 * MIB),
        ("memory_limit_bytes", 1024 * MIB),
        ("cpu_seconds_total", 12.5),
        ("oom_kills_total", 1),
        ("datadir_bytes", 3 * MIB),
    ):
        lines = [line for line in text.splitlines() if line.startswith("nodefleet_bitcoind_" + metric + "{")]
        assert lines and float(lines[0].rsplit(" ", 1)[1]) == value, metric
    assert "# TYPE nodefleet_bitcoind_oom_kills_total counter" in text
