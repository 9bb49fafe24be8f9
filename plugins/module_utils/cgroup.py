# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-instance kernel limits (cgroups through systemd) and resource usage.

One place for:
- parsing and validating an instance's ``memory_max`` / ``cpu_quota`` / ``io_weight`` and
  checking that its configured memory use (dbcache + maxmempool + overhead) fits;
- the systemd slice unit that carries an instance's limits
  (``/etc/systemd/system/nodefleet-<escaped name>.slice``) and the supervisord command that
  enters it (``systemd-run --scope --slice=...``, which execs bitcoind under the same pid);
- finding the cgroup hierarchies of the host (v2, v1, hybrid) and reading limits and usage
  back from the kernel's files.

Standard library only: this runs on the managed host (and on the controller, in filters).
"""

from __future__ import annotations

import os
import re

from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import ValidationError

# Bitcoin Core's defaults (src/txdb.h nDefaultDbCache = 450 MiB; src/kernel/mempool_options.h
# DEFAULT_MAX_MEMPOOL_SIZE_MB = 300, in MB = 10^6 bytes), as doc/reduce-memory.md lists them.
CORE_DEFAULT_DBCACHE_MIB = 450
CORE_DEFAULT_MAXMEMPOOL_MB = 300
# What bitcoind uses besides the UTXO cache and the mempool (doc/reduce-memory.md: peer
# connections, malloc arenas, thread stacks, block index, the code itself): a documented
# default the operator can change (bitcoind_memory_overhead).
DEFAULT_OVERHEAD_MIB = 256

MIB = 1024 * 1024
UNITS = {"": 1, "K": 1024, "M": MIB, "G": 1024 * MIB, "T": 1024 * 1024 * MIB}
MEMORY_RE = re.compile(r"^([1-9][0-9]{0,15})([KMGT]?)\Z")
CPU_RE = re.compile(r"^([1-9][0-9]{0,5})%\Z")
# The smallest memory_max accepted: below this not even a regtest bitcoind starts.
MIN_MEMORY = 32 * MIB
MAX_CPU_PERCENT = 100000  # 1000 CPUs
LIMIT_KEYS = ("memory_max", "cpu_quota", "io_weight")
# v1 reports "no limit" as a huge page-aligned number (PAGE_COUNTER_MAX * page size).
V1_UNLIMITED = 1 << 62

UNIT_MARKER = "# Managed by nodefleet.bitcoin (bitcoind_limits): kernel limits of bitcoind instance "
SYSTEMD_RUN = "/usr/bin/systemd-run"


# --------------------------------------------------------------------------- parsing


def parse_memory(option: str, value) -> int:
    """``2G`` / ``512M`` / ``1073741824`` -> bytes (K/M/G/T are powers of 1024, as systemd)."""
    if isinstance(value, bool):
        raise ValidationError(option, "must be a size such as 2G, 512M or a number of bytes, not a boolean")
    text = str(value) if isinstance(value, (int, str)) else None
    match = MEMORY_RE.match(text) if text is not None else None
    if not match:
        raise ValidationError(
            option, "%r is not a size: use a whole number with an optional K, M, G or T suffix (2G, 512M)" % (value,)
        )
    size = int(match.group(1)) * UNITS[match.group(2)]
    if size < MIN_MEMORY:
        raise ValidationError(option, "%r is below the minimum of 32M (bitcoind cannot start in less)" % (value,))
    return size


def parse_cpu_quota(option: str, value) -> int:
    """``150%`` -> 150 (percent of one CPU, as systemd's CPUQuota=)."""
    text = value if isinstance(value, str) else None
    match = CPU_RE.match(text) if text is not None else None
    if not match or int(match.group(1)) > MAX_CPU_PERCENT:
        raise ValidationError(
            option,
            "%r is not a CPU quota: use a percentage of one CPU from 1%% to 100000%% (150%% = 1.5 CPUs)" % (value,),
        )
    return int(match.group(1))


def parse_io_weight(option: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not re.match(r"^[0-9]{1,5}\Z", str(value)):
        raise ValidationError(option, "%r is not an IO weight: use a whole number from 1 to 10000" % (value,))
    weight = int(value)
    if not 1 <= weight <= 10000:
        raise ValidationError(option, "%r is not an IO weight: use a whole number from 1 to 10000" % (value,))
    return weight


def format_bytes(size) -> str:
    if size is None:
        return "unlimited"
    for suffix in ("T", "G", "M", "K"):
        if size % UNITS[suffix] == 0:
            return "%d%s" % (size // UNITS[suffix], suffix)
    return str(size)


def _whole(option: str, value, minimum: int = 0) -> int:
    if isinstance(value, bool) or not re.match(r"^[0-9]{1,9}\Z", str(value).strip()):
        raise ValidationError(option, "%r is not a whole number" % (value,))
    number = int(str(value).strip())
    if number < minimum:
        raise ValidationError(option, "%r is below %d" % (value, minimum))
    return number


def memory_needed(instance: dict, overhead_mib: int = DEFAULT_OVERHEAD_MIB) -> dict:
    """The instance's configured memory use: dbcache (MiB) + maxmempool (MB) + overhead (MiB)."""
    name = instance.get("name", "?")
    extra = instance.get("extra_options") or {}
    dbcache = instance.get("dbcache")
    if dbcache is None:
        dbcache = extra.get("dbcache", CORE_DEFAULT_DBCACHE_MIB)
    maxmempool = extra.get("maxmempool", CORE_DEFAULT_MAXMEMPOOL_MB)
    dbcache = _whole("bitcoind_instances[%s].dbcache" % name, dbcache)
    maxmempool = _whole("bitcoind_instances[%s].extra_options.maxmempool" % name, maxmempool)
    total = dbcache * MIB + maxmempool * 1000 * 1000 + overhead_mib * MIB
    return {"dbcache_mib": dbcache, "maxmempool_mb": maxmempool, "overhead_mib": overhead_mib, "bytes": total}


def instance_limits(instance: dict, overhead_mib: int = DEFAULT_OVERHEAD_MIB) -> dict:
    """Validated limits of one instance (defaults already merged in).

    Returns {memory_max: bytes|None, cpu_quota: percent|None, io_weight: int|None, needed: {...}}.
    Raises ValidationError naming ``bitcoind_instances[<name>].<option>`` and the reason.
    """
    name = instance.get("name", "?")
    prefix = "bitcoind_instances[%s]." % name
    out = {"memory_max": None, "cpu_quota": None, "io_weight": None}
    if instance.get("memory_max") not in (None, ""):
        out["memory_max"] = parse_memory(prefix + "memory_max", instance["memory_max"])
    if instance.get("cpu_quota") not in (None, ""):
        out["cpu_quota"] = parse_cpu_quota(prefix + "cpu_quota", instance["cpu_quota"])
    if instance.get("io_weight") not in (None, ""):
        out["io_weight"] = parse_io_weight(prefix + "io_weight", instance["io_weight"])
    if out["memory_max"] is not None:
        needed = memory_needed(instance, overhead_mib)
        out["needed"] = needed
        if needed["bytes"] > out["memory_max"]:
            raise ValidationError(
                prefix + "memory_max",
                "%s is less than the instance's configured memory use: dbcache %d MiB + maxmempool %d MB + "
                "overhead %d MiB (bitcoind_memory_overhead) = %d MiB; raise memory_max or lower dbcache/maxmempool "
                "(Bitcoin Core doc/reduce-memory.md)"
                % (
                    format_bytes(out["memory_max"]),
                    needed["dbcache_mib"],
                    needed["maxmempool_mb"],
                    needed["overhead_mib"],
                    -(-needed["bytes"] // MIB),
                ),
            )
    return out


def has_limits(limits: dict) -> bool:
    return any(limits.get(key) is not None for key in LIMIT_KEYS)


# --------------------------------------------------------------------------- systemd units


def unit_escape(text: str) -> str:
    """systemd-escape for a unit name component: '-' and anything outside [A-Za-z0-9_.:] -> \\xNN."""
    out = []
    for index, char in enumerate(text):
        if char.isascii() and (char.isalnum() or char in "_:" or (char == "." and index > 0)):
            out.append(char)
        else:
            out.append("\\x%02x" % ord(char))
    return "".join(out)


def slice_name(instance: str) -> str:
    """``core-regtest`` -> ``nodefleet-core\\x2dregtest.slice``.

    The instance name is escaped: an unescaped '-' is systemd's slice hierarchy separator, which
    would nest ``nodefleet-core-regtest.slice`` inside ``nodefleet-core.slice`` (instance core).
    """
    return "nodefleet-%s.slice" % unit_escape(instance)


def render_slice(instance: str, limits: dict) -> str:
    lines = [
        UNIT_MARKER + instance,
        "[Unit]",
        "Description=nodefleet.bitcoin kernel limits of bitcoind instance %s" % instance,
        "",
        "[Slice]",
        "MemoryAccounting=yes",
        "CPUAccounting=yes",
    ]
    if limits.get("memory_max") is not None:
        lines.append("MemoryMax=%d" % limits["memory_max"])
    if limits.get("cpu_quota") is not None:
        lines.append("CPUQuota=%d%%" % limits["cpu_quota"])
    if limits.get("io_weight") is not None:
        lines.append("IOWeight=%d" % limits["io_weight"])
    return "\n".join(lines) + "\n"


def scope_command(instance: str, command: list, user: str, group: str, bind_to: str = "supervisor.service") -> list:
    """The supervisord command of a limited instance (a list of words).

    systemd-run --scope registers a transient scope in the instance's slice and then execs the
    command under the same pid, so supervisord stays the parent and signals bitcoind directly.
    The scope gets a generated name (run-r<random>.scope), so a scope left by a killed daemon
    never blocks the respawn; BindsTo= the supervisor service stops the scope when supervisord
    itself goes away (it would otherwise outlive it: the scope is outside the service's cgroup).
    """
    return [
        SYSTEMD_RUN,
        "--scope",
        "--quiet",
        "--collect",
        "--slice=" + slice_name(instance),
        "--property=BindsTo=" + bind_to,
        "--property=After=" + bind_to,
        "--uid=" + user,
        "--gid=" + group,
        "--",
        *list(command),
    ]


# --------------------------------------------------------------------------- kernel files


def parse_mountinfo(text: str) -> list:
    """cgroup mounts from /proc/self/mountinfo: [{path, version, controllers, rw}]."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 6 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        root, path = fields[3], fields[4].replace("\\040", " ")
        rw = "rw" in fields[5].split(",")
        if tail[0] == "cgroup2":
            mounts.append({"path": path, "version": 2, "controllers": None, "rw": rw, "root": root})
        else:
            opts = set(tail[2].split(","))
            controllers = sorted(o for o in opts if o in ("memory", "cpu", "cpuacct", "blkio", "pids", "cpuset"))
            mounts.append({"path": path, "version": 1, "controllers": controllers, "rw": rw, "root": root})
    # A later mount of the same path hides an earlier one (podman's ro mount under a rw bind).
    by_path = {}
    for mount in mounts:
        by_path[mount["path"]] = mount
    return list(by_path.values())


def _read(path: str):
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def controller_mounts(mountinfo_text: str, read=_read) -> dict:
    """Where each controller lives: {controller: {path, version, rw}} (memory, cpu, cpuacct, io)."""
    out = {}
    mounts = parse_mountinfo(mountinfo_text)
    for mount in mounts:
        if mount["version"] == 2:
            available = (read(os.path.join(mount["path"], "cgroup.controllers")) or "").split()
            for controller in available:
                if controller in ("memory", "cpu", "io"):
                    out.setdefault(
                        controller, {"path": mount["path"], "version": 2, "rw": mount["rw"], "root": mount["root"]}
                    )
    for mount in mounts:  # v1 controllers win: a hybrid host binds them to v1
        if mount["version"] == 1:
            for controller in mount["controllers"]:
                name = "io" if controller == "blkio" else controller
                out[name] = {"path": mount["path"], "version": 1, "rw": mount["rw"], "root": mount["root"]}
    return out


def unsupported_reason(option: str, mounts: dict):
    """Why this host cannot enforce ``option`` (None when it can)."""
    controller = {"memory_max": "memory", "cpu_quota": "cpu", "io_weight": "io"}[option]
    mount = mounts.get(controller)
    if mount is None:
        return (
            "the kernel's %s cgroup controller is not available to systemd on this host "
            "(no v1 mount, not in the v2 cgroup.controllers)" % controller
        )
    if not mount["rw"]:
        return (
            "the %s cgroup controller is mounted read-only at %s (cgroup v%d): systemd accepts %s but the kernel "
            "would not enforce it (a container needs its cgroup hierarchies writable, see docs/roles.md)"
            % (
                controller,
                mount["path"],
                mount["version"],
                {"memory": "MemoryMax", "cpu": "CPUQuota", "io": "IOWeight"}[controller],
            )
        )
    return None


def cg_dir(mount: dict, cgroup: str) -> str:
    """The directory of ``cgroup`` (a path as /proc/<pid>/cgroup and systemd show it) under ``mount``.

    A mount of a sub-tree (podman mounts a container's own cgroup at /sys/fs/cgroup/<controller>)
    has that sub-tree as its root: strip it."""
    root = mount.get("root") or "/"
    if root != "/" and (cgroup == root or cgroup.startswith(root + "/")):
        cgroup = cgroup[len(root) :]
    return mount["path"].rstrip("/") + (cgroup if cgroup.startswith("/") else "/" + cgroup)


def _int(text):
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return None


def read_memory_limit(mount: dict, cgroup: str, read=_read):
    if mount["version"] == 2:
        text = read(os.path.join(cg_dir(mount, cgroup), "memory.max"))
        if text is None:
            return "missing"
        return None if text.strip() == "max" else _int(text)
    text = read(os.path.join(cg_dir(mount, cgroup), "memory.limit_in_bytes"))
    if text is None:
        return "missing"
    value = _int(text)
    return None if value is None or value >= V1_UNLIMITED else value


def read_cpu_quota(mount: dict, cgroup: str, read=_read):
    """Percent of one CPU the kernel allows, None when unlimited, 'missing' without the files."""
    base = cg_dir(mount, cgroup)
    if mount["version"] == 2:
        text = read(os.path.join(base, "cpu.max"))
        if text is None:
            return "missing"
        parts = text.split()
        if len(parts) != 2 or parts[0] == "max":
            return None
        quota, period = _int(parts[0]), _int(parts[1])
    else:
        quota = _int(read(os.path.join(base, "cpu.cfs_quota_us")))
        period = _int(read(os.path.join(base, "cpu.cfs_period_us")))
        if quota is None or period is None:
            return "missing"
        if quota < 0:
            return None
    if not period:
        return None
    return round(quota * 100 / period)


def read_io_weight(mount: dict, cgroup: str, read=_read):
    """The weight file's value (systemd scales IOWeight= for v1 blkio/bfq), 'missing' without one."""
    base = cg_dir(mount, cgroup)
    names = ("io.weight", "io.bfq.weight") if mount["version"] == 2 else ("blkio.bfq.weight", "blkio.weight")
    for name in names:
        text = read(os.path.join(base, name))
        if text is not None and text.split():
            words = text.split()
            return _int(words[-1]) if words[0] == "default" else _int(words[0])
    return "missing"


def read_limits(mounts: dict, cgroup: str, read=_read) -> dict:
    """What the kernel enforces on ``cgroup`` (a path like /nodefleet.slice/nodefleet-a.slice)."""
    out = {}
    if "memory" in mounts:
        out["memory_max"] = read_memory_limit(mounts["memory"], cgroup, read)
    if "cpu" in mounts:
        out["cpu_quota"] = read_cpu_quota(mounts["cpu"], cgroup, read)
    if "io" in mounts:
        out["io_weight"] = read_io_weight(mounts["io"], cgroup, read)
    return out


def enforcement_errors(instance: str, wanted: dict, enforced: dict, cgroup: str) -> list:
    """One message per requested limit the kernel does not show on the instance's cgroup."""
    errors = []
    for key in LIMIT_KEYS:
        want = wanted.get(key)
        if want is None:
            continue
        got = enforced.get(key, "missing")
        ok = isinstance(got, int) if key == "io_weight" else got == want
        if not ok:
            errors.append(
                "%s: %s=%s requested, but the kernel shows %s on cgroup %s"
                % (instance, key, format_bytes(want) if key == "memory_max" else want, got, cgroup)
            )
    return errors


def proc_cgroups(text: str) -> dict:
    """/proc/<pid>/cgroup -> {controller or '': path} ('' = the v2 / name=systemd path)."""
    out = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _hierarchy_id, controllers, path = parts
        if controllers == "":
            out[""] = path
        for controller in controllers.split(","):
            if controller.startswith("name="):
                out.setdefault("", path)
            elif controller:
                out["io" if controller == "blkio" else controller] = path
    return out


# --------------------------------------------------------------------------- usage


def host_memory(meminfo_text: str, mounts: dict, own_cgroups: dict, read=_read):
    """Memory the host's instances can use: MemTotal, or less when the host (a container) is limited."""
    total = None
    for line in meminfo_text.splitlines():
        if line.startswith("MemTotal:"):
            total = _int(line.split()[1]) * 1024 if _int(line.split()[1]) is not None else None
    mount = mounts.get("memory")
    if mount is not None:
        path = own_cgroups.get("memory", own_cgroups.get(""))
        if path is not None:
            limit = read_memory_limit(mount, path, read)
            if isinstance(limit, int) and (total is None or limit < total):
                total = limit
    return total


def memory_usage(mount: dict, cgroup: str, read=_read) -> dict:
    base = cg_dir(mount, cgroup)
    if mount["version"] == 2:
        used = _int(read(os.path.join(base, "memory.current")))
        events = read(os.path.join(base, "memory.events")) or ""
    else:
        used = _int(read(os.path.join(base, "memory.usage_in_bytes")))
        # v1 counts an OOM kill only in the victim's own memcg (the scope, which systemd removes with
        # the process): the slice's counter stays 0, so v1 reports no count rather than a wrong one.
        # (v2 memory.events is hierarchical: the slice counts the kills in its scopes.)
        events = ""
    oom = None
    for line in events.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "oom_kill":
            oom = _int(words[1])
    return {"memory_used_bytes": used, "oom_kills_total": oom}


def process_usage(pid: int, read=_read) -> dict:
    """RSS and CPU seconds (user + system, all threads) of one process from /proc."""
    out = {"memory_used_bytes": None, "cpu_seconds_total": None}
    status = read("/proc/%d/status" % pid) or ""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            value = _int(line.split()[1])
            out["memory_used_bytes"] = value * 1024 if value is not None else None
    stat = read("/proc/%d/stat" % pid) or ""
    fields = stat.rpartition(")")[2].split()
    if len(fields) > 12:
        ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        user, system = _int(fields[11]), _int(fields[12])
        if user is not None and system is not None:
            out["cpu_seconds_total"] = round((user + system) / ticks, 2)
    return out


def dir_bytes(path: str):
    """Disk used by a directory tree (allocated blocks, like du; symlinks not followed)."""
    total = 0
    stack = [path]
    seen = set()
    try:
        os.lstat(path)
    except OSError:
        return None
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    key = (info.st_dev, info.st_ino)
                    if key in seen:
                        continue
                    seen.add(key)
                    total += getattr(info, "st_blocks", 0) * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue
    return total


def instance_resources(pid, datadir, mountinfo_text=None, read=_read) -> dict:
    """Usage and limits of one running instance (for bitcoind_info).

    Memory and OOM kills come from the instance's own memory cgroup when it has one (a limited
    instance's slice; the counter survives restarts), else memory is the process's RSS. CPU
    seconds are the process's (user + system), so they restart from 0 with the daemon.
    """
    out = {
        "memory_used_bytes": None,
        "memory_limit_bytes": None,
        "cpu_seconds_total": None,
        "cpu_quota_percent": None,
        "oom_kills_total": None,
        "datadir_bytes": dir_bytes(datadir) if datadir else None,
        "cgroup": None,
    }
    if not pid:
        return out
    out.update(process_usage(int(pid), read))
    if mountinfo_text is None:
        mountinfo_text = read("/proc/self/mountinfo") or ""
    mounts = controller_mounts(mountinfo_text, read)
    cgroups = proc_cgroups(read("/proc/%d/cgroup" % int(pid)) or "")
    unit_path = cgroups.get("")
    mem_path = cgroups.get("memory", unit_path)
    out["cgroup"] = unit_path
    # Only a cgroup of our own (an instance's slice) measures the instance alone.
    if "memory" in mounts and mem_path and "/nodefleet.slice/" in mem_path:
        slice_path = mem_path.split(".scope")[0].rpartition("/")[0] if mem_path.endswith(".scope") else mem_path
        out.update({k: v for k, v in memory_usage(mounts["memory"], slice_path, read).items() if v is not None})
        limit = read_memory_limit(mounts["memory"], slice_path, read)
        out["memory_limit_bytes"] = limit if isinstance(limit, int) else None
    cpu_path = cgroups.get("cpu", unit_path)
    if "cpu" in mounts and cpu_path and "/nodefleet.slice/" in cpu_path:
        slice_path = cpu_path.rpartition("/")[0] if cpu_path.endswith(".scope") else cpu_path
        quota = read_cpu_quota(mounts["cpu"], slice_path, read)
        out["cpu_quota_percent"] = quota if isinstance(quota, int) else None
    return out


def add_resources(instances: list, datadirs: dict) -> None:
    """Give every bitcoind_info result its ``resources`` (usage against limits, datadir bytes)."""
    mountinfo = _read("/proc/self/mountinfo") or ""
    for result in instances:
        pid = (result.get("supervisord") or {}).get("pid")
        try:
            result["resources"] = instance_resources(pid, datadirs.get(result["name"]), mountinfo)
        except (OSError, ValueError) as exc:  # never let usage reading break the status
            result["resources"] = {"error": str(exc)}


def _short_bytes(size) -> str:
    if size is None:
        return "-"
    for suffix, unit in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size >= unit:
            value = size / unit
            return ("%.1f%s" % (value, suffix)) if value < 10 else ("%d%s" % (value, suffix))
    return "%dB" % size


def format_resources(resources) -> str:
    """One table cell: ``mem 52M/1.0G cpu 12s/50% oom 0 disk 3.1M`` (``-`` = unknown / unlimited)."""
    if not isinstance(resources, dict) or "memory_used_bytes" not in resources:
        return "-"
    limit = resources.get("memory_limit_bytes")
    cpu = resources.get("cpu_seconds_total")
    quota = resources.get("cpu_quota_percent")
    oom = resources.get("oom_kills_total")
    return "mem %s/%s cpu %s/%s oom %s disk %s" % (
        _short_bytes(resources.get("memory_used_bytes")),
        _short_bytes(limit) if limit is not None else "-",
        ("%ds" % cpu) if cpu is not None else "-",
        ("%d%%" % quota) if quota is not None else "-",
        oom if oom is not None else "-",
        _short_bytes(resources.get("datadir_bytes")),
    )
