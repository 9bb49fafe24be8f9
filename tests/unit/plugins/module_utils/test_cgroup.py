# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for module_utils/cgroup.py: limit parsing, memory fit, units, kernel files."""

from __future__ import annotations

import shlex

import pytest
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import cgroup
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import ValidationError

MIB = 1024 * 1024

# /proc/self/mountinfo of a node container on this project's hybrid host with the v1 memory/cpu
# hierarchies bind-mounted read-write over podman's read-only ones (tests/fleet/create.yml).
MOUNTINFO_HYBRID_RW = """\
600 590 0:50 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw,mode=755
601 600 0:29 /libpod_parent/libpod-abc /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,memory
602 600 0:25 /libpod_parent/libpod-abc /sys/fs/cgroup/cpu ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,cpu
603 600 0:26 /libpod_parent/libpod-abc /sys/fs/cgroup/cpuacct ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,cpuacct
604 600 0:35 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
605 600 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
606 600 0:25 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
607 600 0:30 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
"""
# The same node without the read-write mounts: podman's read-only v1 controllers only.
MOUNTINFO_HYBRID_RO = "\n".join(MOUNTINFO_HYBRID_RW.splitlines()[:5]) + "\n"
# A cgroup v2 host.
MOUNTINFO_V2 = "30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"


class FakeFS:
    def __init__(self, files):
        self.files = files

    def __call__(self, path):
        return self.files.get(path)


# ------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    "value,expected",
    [
        ("2G", 2 * 1024 * MIB),
        ("512M", 512 * MIB),
        ("1T", 1024 * 1024 * MIB),
        ("65536K", 64 * MIB),
        (1073741824, 1024 * MIB),
        ("33554432", 32 * MIB),
    ],
)
def test_memory_sizes_are_powers_of_1024_like_systemd(value, expected):
    assert cgroup.parse_memory("memory_max", value) == expected


@pytest.mark.parametrize(
    "value", ["2GB", "2g", "-1G", "1.5G", "", "2G\n", "infinity", True, None, [], "0", "16M", "0x10G"]
)
def test_malformed_or_tiny_memory_is_refused_naming_the_option(value):
    with pytest.raises(ValidationError) as err:
        cgroup.parse_memory("bitcoind_instances[a].memory_max", value)
    assert err.value.option == "bitcoind_instances[a].memory_max"


@pytest.mark.parametrize("value,expected", [("150%", 150), ("1%", 1), ("100000%", 100000)])
def test_cpu_quota_is_percent_of_one_cpu(value, expected):
    assert cgroup.parse_cpu_quota("cpu_quota", value) == expected


@pytest.mark.parametrize("value", ["150", "0%", "100001%", "1.5%", "%", 150, "150%\n", "50 %"])
def test_malformed_cpu_quota_is_refused(value):
    with pytest.raises(ValidationError, match="cpu_quota"):
        cgroup.parse_cpu_quota("cpu_quota", value)


@pytest.mark.parametrize("value", [0, 10001, "x", True, "1e3", -5])
def test_io_weight_range(value):
    with pytest.raises(ValidationError, match="io_weight"):
        cgroup.parse_io_weight("io_weight", value)
    assert cgroup.parse_io_weight("io_weight", "10000") == 10000


# ------------------------------------------------------------------ memory fit


def test_core_defaults_plus_overhead_must_fit_under_memory_max():
    # 450 MiB + 300 MB + 256 MiB = 992.1 MiB: 1G fits, 992M does not.
    ok = cgroup.instance_limits({"name": "a", "memory_max": "1G"})
    assert ok["memory_max"] == 1024 * MIB
    assert ok["needed"]["bytes"] == 450 * MIB + 300 * 10**6 + 256 * MIB
    with pytest.raises(ValidationError) as err:
        cgroup.instance_limits({"name": "a", "memory_max": "992M"})
    assert err.value.option == "bitcoind_instances[a].memory_max"
    assert "dbcache 450 MiB + maxmempool 300 MB + overhead 256 MiB" in err.value.reason


def test_dbcache_and_maxmempool_of_the_instance_count():
    inst = {"name": "a", "memory_max": "512M", "dbcache": 100, "extra_options": {"maxmempool": 50}}
    assert cgroup.instance_limits(inst)["needed"]["bytes"] == 100 * MIB + 50 * 10**6 + 256 * MIB
    inst["dbcache"] = 300
    with pytest.raises(ValidationError, match="dbcache 300 MiB"):
        cgroup.instance_limits(inst)
    # dbcache given only through extra_options counts too
    with pytest.raises(ValidationError, match="dbcache 4000 MiB"):
        cgroup.instance_limits({"name": "a", "memory_max": "2G", "extra_options": {"dbcache": 4000}})
    assert cgroup.instance_limits(inst, overhead_mib=0)["memory_max"] == 512 * MIB


def test_no_limit_means_unlimited():
    out = cgroup.instance_limits({"name": "a", "dbcache": 100000})
    assert out == {"memory_max": None, "cpu_quota": None, "io_weight": None}
    assert not cgroup.has_limits(out)


# ------------------------------------------------------------------ units and command


def test_slice_names_escape_dashes_so_instances_never_nest():
    assert cgroup.slice_name("core-regtest") == "nodefleet-core\\x2dregtest.slice"
    assert cgroup.slice_name("core") == "nodefleet-core.slice"
    assert cgroup.slice_name("a_b") == "nodefleet-a_b.slice"
    # systemd nests "a-b.slice" under "a.slice": the escaped names have exactly one '-'.
    for name in ("core-regtest", "x-y-z", "1-2"):
        assert cgroup.slice_name(name).count("-") == 1


def test_render_slice_carries_only_the_requested_limits():
    text = cgroup.render_slice("a", {"memory_max": 2 * 1024 * MIB, "cpu_quota": 150, "io_weight": None})
    assert text.startswith(cgroup.UNIT_MARKER + "a\n")
    assert "MemoryMax=2147483648\n" in text and "CPUQuota=150%\n" in text
    assert "IOWeight" not in text
    assert "CPUQuota" not in cgroup.render_slice("a", {"memory_max": 64 * MIB, "cpu_quota": None, "io_weight": None})


def test_scope_command_execs_bitcoind_and_survives_supervisord_quoting():
    bitcoind = ["/opt/bitcoin/core/bin/bitcoind", "-conf=/d/bitcoin.conf", "-datadir=/d"]
    words = cgroup.scope_command("core-regtest", bitcoind, "bitcoin", "bitcoin")
    assert words[0] == "/usr/bin/systemd-run" and "--scope" in words
    assert words[words.index("--") + 1 :] == bitcoind
    assert "--slice=nodefleet-core\\x2dregtest.slice" in words
    assert "--property=BindsTo=supervisor.service" in words
    assert not any(w.startswith("--unit") for w in words)  # a generated scope name: no leftover blocks a respawn
    # supervisord splits the command with shlex; the module quotes a list with shlex.quote.
    assert shlex.split(" ".join(shlex.quote(w) for w in words)) == words


def test_hybrid_rw_mounts_resolve_to_v1_controllers():
    mounts = cgroup.controller_mounts(
        MOUNTINFO_HYBRID_RW, FakeFS({"/sys/fs/cgroup/unified/cgroup.controllers": "hugetlb\n"})
    )
    assert mounts["memory"] == {"path": "/sys/fs/cgroup/memory", "version": 1, "rw": True, "root": "/"}
    assert mounts["cpu"]["rw"] and mounts["io"]["path"] == "/sys/fs/cgroup/blkio"
    for option in cgroup.LIMIT_KEYS:
        assert cgroup.unsupported_reason(option, mounts) is None


def test_read_only_controllers_are_reported_as_not_enforceable():
    mounts = cgroup.controller_mounts(
        MOUNTINFO_HYBRID_RO, FakeFS({"/sys/fs/cgroup/unified/cgroup.controllers": "hugetlb\n"})
    )
    why = cgroup.unsupported_reason("memory_max", mounts)
    assert "read-only" in why and "/sys/fs/cgroup/memory" in why
    assert "not available" in cgroup.unsupported_reason("io_weight", mounts)


def test_v2_controllers_come_from_cgroup_controllers():
    mounts = cgroup.controller_mounts(
        MOUNTINFO_V2, FakeFS({"/sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory pids\n"})
    )
    assert mounts["memory"]["version"] == 2 and mounts["io"]["version"] == 2
    assert (
        cgroup.controller_mounts(MOUNTINFO_V2, FakeFS({"/sys/fs/cgroup/cgroup.controllers": "pids\n"})).get("memory")
        is None
    )


def test_read_limits_v1_and_v2():
    sl = "/nodefleet.slice/nodefleet-a.slice"
    v1 = {
        "memory": {"path": "/m", "version": 1, "rw": True},
        "cpu": {"path": "/c", "version": 1, "rw": True},
        "io": {"path": "/b", "version": 1, "rw": True},
    }
    fs1 = FakeFS(
        {
            "/m" + sl + "/memory.limit_in_bytes": "1073741824\n",
            "/c" + sl + "/cpu.cfs_quota_us": "150000\n",
            "/c" + sl + "/cpu.cfs_period_us": "100000\n",
            "/b" + sl + "/blkio.bfq.weight": "181\n",
        }
    )
    assert cgroup.read_limits(v1, sl, fs1) == {"memory_max": 1024 * MIB, "cpu_quota": 150, "io_weight": 181}
    fs1u = FakeFS(
        {
            "/m" + sl + "/memory.limit_in_bytes": "9223372036854771712\n",
            "/c" + sl + "/cpu.cfs_quota_us": "-1\n",
            "/c" + sl + "/cpu.cfs_period_us": "100000\n",
        }
    )
    assert cgroup.read_limits(v1, sl, fs1u) == {"memory_max": None, "cpu_quota": None, "io_weight": "missing"}
    v2 = {k: {"path": "/sys/fs/cgroup", "version": 2, "rw": True} for k in ("memory", "cpu", "io")}
    base = "/sys/fs/cgroup" + sl
    fs2 = FakeFS(
        {base + "/memory.max": "2147483648\n", base + "/cpu.max": "50000 100000\n", base + "/io.weight": "default 50\n"}
    )
    assert cgroup.read_limits(v2, sl, fs2) == {"memory_max": 2 * 1024 * MIB, "cpu_quota": 50, "io_weight": 50}
    fs2u = FakeFS({base + "/memory.max": "max\n", base + "/cpu.max": "max 100000\n"})
    assert cgroup.read_limits(v2, sl, fs2u)["memory_max"] is None


def test_a_limit_the_kernel_does_not_show_is_an_error():
    wanted = {"memory_max": 1024 * MIB, "cpu_quota": 150, "io_weight": None}
    assert cgroup.enforcement_errors("a", wanted, {"memory_max": 1024 * MIB, "cpu_quota": 150}, "/x") == []
    errors = cgroup.enforcement_errors("a", wanted, {"memory_max": None, "cpu_quota": 150}, "/x")
    assert errors == ["a: memory_max=1G requested, but the kernel shows None on cgroup /x"]
    assert cgroup.enforcement_errors("a", {"io_weight": 50}, {"io_weight": "missing"}, "/x")


def test_proc_cgroup_hybrid():
    text = (
        "9:name=systemd:/lp/nodefleet.slice/nodefleet-a.slice/run-r1.scope\n"
        "4:memory:/lp/nodefleet.slice/nodefleet-a.slice/run-r1.scope\n"
        "1:cpu:/lp/nodefleet.slice/nodefleet-a.slice\n"
        "0::/lp/nodefleet.slice/nodefleet-a.slice/run-r1.scope\n"
    )
    out = cgroup.proc_cgroups(text)
    assert (
        out["memory"].endswith("run-r1.scope")
        and out["cpu"].endswith("nodefleet-a.slice")
        and out[""].endswith("run-r1.scope")
    )


def test_instance_resources_reads_the_slice_of_a_limited_instance(tmp_path):
    (tmp_path / "blocks").mkdir()
    (tmp_path / "blocks" / "blk00000.dat").write_bytes(b"x" * 10000)
    sl = "/lp/nodefleet.slice/nodefleet-a.slice"
    files = {
        "/proc/42/cgroup": "4:memory:%s/run-r1.scope\n1:cpu:%s\n0::%s/run-r1.scope\n" % (sl, sl, sl),
        "/proc/42/status": "Name:\tbitcoind\nVmRSS:\t  2048 kB\n",
        "/proc/42/stat": "42 (bitcoind) S 1 42 42 0 -1 4194560 1 0 0 0 300 100 0 0 20 0 1 0 1 1 1\n",
        "/sys/fs/cgroup/memory" + sl + "/memory.usage_in_bytes": "52428800\n",
        "/sys/fs/cgroup/memory" + sl + "/memory.limit_in_bytes": "1073741824\n",
        "/sys/fs/cgroup/memory" + sl + "/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        "/sys/fs/cgroup/cpu" + sl + "/cpu.cfs_quota_us": "20000\n",
        "/sys/fs/cgroup/cpu" + sl + "/cpu.cfs_period_us": "100000\n",
    }
    out = cgroup.instance_resources(42, str(tmp_path), MOUNTINFO_HYBRID_RW, FakeFS(files))
    assert out["memory_used_bytes"] == 52428800 and out["memory_limit_bytes"] == 1024 * MIB
    # v1: the slice's oom_kill stays 0 (the kernel counts in the victim's removed scope): no count
    assert out["oom_kills_total"] is None and out["cpu_quota_percent"] == 20
    assert out["cpu_seconds_total"] == 4.0  # (300 + 100) ticks / 100
    assert out["datadir_bytes"] >= 10000


def test_instance_resources_of_an_unlimited_instance_is_its_process():
    files = {
        "/proc/7/cgroup": "4:memory:/lp/system.slice/supervisor.service\n0::/lp/system.slice/supervisor.service\n",
        "/proc/7/status": "VmRSS:\t  2048 kB\n",
        "/proc/7/stat": "7 (b d) S 1 7 7 0 -1 4194560 1 0 0 0 50 50 0 0 20 0 1 0 1 1 1\n",
        "/sys/fs/cgroup/memory/lp/system.slice/supervisor.service/memory.usage_in_bytes": "999999999\n",
    }
    out = cgroup.instance_resources(7, None, MOUNTINFO_HYBRID_RW, FakeFS(files))
    assert out["memory_used_bytes"] == 2048 * 1024  # not supervisord's whole cgroup
    assert out["memory_limit_bytes"] is None and out["oom_kills_total"] is None
    assert out["cpu_seconds_total"] == 1.0


def test_v2_slice_counts_the_oom_kills_of_its_scopes():
    mount = {"path": "/sys/fs/cgroup", "version": 2, "rw": True, "root": "/"}
    files = {
        "/sys/fs/cgroup/s/memory.current": "100\n",
        "/sys/fs/cgroup/s/memory.events": "low 0\nhigh 0\nmax 9\noom 2\noom_kill 2\n",
    }
    assert cgroup.memory_usage(mount, "/s", FakeFS(files)) == {"memory_used_bytes": 100, "oom_kills_total": 2}


def test_host_memory_is_the_lower_of_memtotal_and_the_host_cgroup_limit():
    mounts = {"memory": {"path": "/m", "version": 1, "rw": True}}
    meminfo = "MemTotal:       24683520 kB\n"
    assert (
        cgroup.host_memory(meminfo, mounts, {"memory": "/lp"}, FakeFS({"/m/lp/memory.limit_in_bytes": "4294967296\n"}))
        == 4 * 1024 * MIB
    )
    assert (
        cgroup.host_memory(
            meminfo, mounts, {"memory": "/lp"}, FakeFS({"/m/lp/memory.limit_in_bytes": "9223372036854771712\n"})
        )
        == 24683520 * 1024
    )


# ------------------------------------------------------------------ status and metrics

RESOURCES = {
    "memory_used_bytes": 52 * MIB,
    "memory_limit_bytes": 1024 * MIB,
    "cpu_seconds_total": 12.5,
    "cpu_quota_percent": 50,
    "oom_kills_total": 1,
    "datadir_bytes": 3 * MIB,
    "cgroup": "/x",
}


def test_format_resources():
    assert cgroup.format_resources(RESOURCES) == "mem 52M/1.0G cpu 12s/50% oom 1 disk 3.0M"
    unlimited = dict(RESOURCES, memory_limit_bytes=None, cpu_quota_percent=None, oom_kills_total=None)
    assert cgroup.format_resources(unlimited) == "mem 52M/- cpu 12s/- oom - disk 3.0M"
    assert cgroup.format_resources(None) == "-"


def test_a_mount_of_a_sub_tree_strips_its_root():
    # podman's own (read-only) mount shows the container's cgroup at the mount point
    mounts = cgroup.controller_mounts(MOUNTINFO_HYBRID_RO, FakeFS({}))
    assert mounts["memory"]["root"] == "/libpod_parent/libpod-abc"
    assert (
        cgroup.cg_dir(mounts["memory"], "/libpod_parent/libpod-abc/system.slice")
        == "/sys/fs/cgroup/memory/system.slice"
    )
    assert cgroup.cg_dir({"path": "/sys/fs/cgroup", "root": "/"}, "/a.slice") == "/sys/fs/cgroup/a.slice"
