"""bitcoind_limits through the real ``ansible`` CLI on this machine (no systemd as init here).

What can be shown without a systemd host: bad input and unenforceable limits fail naming the
option / the reason before anything is written; an instance without limits needs nothing; a
slice left by an earlier limit is reported (check mode + diff) for removal, a foreign unit is not
touched. The kernel side (limits read back from cgroup files, live changes) is tested on the
fleet: molecule/default/tests/test_limits.py.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from ansible_cli import run_collection_module
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import cgroup
from ci_gate import skip_or_fail


def test_malformed_limit_fails_naming_the_instance_option(tmp_path):
    result, _ = run_collection_module(
        "bitcoind_limits", {"unit_dir": str(tmp_path), "instances": [{"name": "a", "memory_max": "2GB"}]}
    )
    assert result.get("failed")
    assert result["msg"].startswith("instances[a].memory_max: '2GB' is not a size")
    assert os.listdir(tmp_path) == []


def test_unlimited_instances_need_nothing(tmp_path):
    result, _ = run_collection_module(
        "bitcoind_limits", {"unit_dir": str(tmp_path), "instances": [{"name": "a"}, {"name": "b", "state": "absent"}]}
    )
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is False and result["instances"] == {} and result["removed"] == []
    assert os.listdir(tmp_path) == []


def test_a_limit_this_host_cannot_enforce_fails_before_writing(tmp_path):
    if os.path.isdir("/run/systemd/system"):
        skip_or_fail("this machine runs systemd: the refusal needs a host without it (CI runs in one)")
    result, _ = run_collection_module(
        "bitcoind_limits",
        {"unit_dir": str(tmp_path), "instances": [{"name": "core-regtest", "memory_max": "1G", "cpu_quota": "50%"}]},
    )
    assert result.get("failed")
    assert result["msg"].startswith("this host cannot enforce the requested limits: ")
    assert "systemd is not the init system" in result["msg"]
    assert os.listdir(tmp_path) == []


def test_check_mode_reports_the_removal_of_a_stale_slice_and_leaves_foreign_units(tmp_path):
    stale = tmp_path / cgroup.slice_name("core-regtest")
    stale.write_text(cgroup.render_slice("core-regtest", {"memory_max": 1 << 30}))
    foreign = tmp_path / "nodefleet-other.slice"
    foreign.write_text("[Slice]\nMemoryMax=1G\n")
    result, _ = run_collection_module(
        "bitcoind_limits",
        {"unit_dir": str(tmp_path), "instances": [{"name": "core-regtest"}]},
        check=True,
        diff=True,
    )
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is True and result["removed"] == [stale.name]
    assert any("MemoryMax=1073741824" in d["before"] and d["after"] == "" for d in result["diff"])
    assert stale.exists() and foreign.exists()  # check mode writes nothing
