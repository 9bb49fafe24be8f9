# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side rendering of ``bitcoind_info`` results: fleet table, JSON report, Prometheus text.

Filters (all pure, no I/O; the state names and peer categories come from module_utils):

``statuses | nodefleet.bitcoin.fleet_status_table``
    One fixed-width text table for the whole fleet. ``statuses`` maps inventory host ->
    the registered ``bitcoind_info`` result; a host without a result (unreachable, failed)
    gets one ``no data`` row, so a missing host is visible, not silently dropped.

``statuses | nodefleet.bitcoin.fleet_status_report(generated_at=...)``
    The JSON document written on the controller: ``{generated_at, summary, hosts: {host:
    {ok, error, summary, supervisord, instances}}}``; instance entries are the module's
    (credentials are never part of them).

``instances | nodefleet.bitcoin.fleet_status_targets(plan, rpc_user=None, home='/var/lib/bitcoind')``
    The ``instances`` option of ``bitcoind_info`` from what the inventory knows: the role's
    instances (defaults merged in), the ``port_plan`` filter's result, and one of each
    instance's ``rpc_users`` (``rpc_user`` when given, else the first). Absent instances are
    left out. Holds passwords: pass it straight to the module, never print it.

``result | nodefleet.bitcoin.fleet_status_prometheus(host, timestamp=None)``
    node_exporter textfile-collector text for one host: metrics prefixed
    ``nodefleet_bitcoind_``, each with ``# HELP`` and ``# TYPE``, labels
    ``host, instance, impl, network`` (plus ``state``/``kind``/``direction`` where stated).
    See docs/status.md for the metric list.
"""

from __future__ import annotations

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # pragma: no cover - ansible is always present where filters run
    AnsibleFilterError = ValueError  # type: ignore[misc,assignment]

# One list of state names (bitcoind_info decides them) and of peer categories (the peer
# classification): imported, never repeated here.
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.cgroup import format_resources
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.instance_states import STATES
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.peer_classify import CATEGORIES

CATEGORY_SHORT = ("LR", "KN", "C30+", "C<30", "OT")
PREFIX = "nodefleet_bitcoind_"
NO_DATA = "no data"


# --------------------------------------------------------------------------- helpers


def _check_statuses(statuses) -> dict:
    if not isinstance(statuses, dict):
        raise AnsibleFilterError(
            f"fleet_status: expected a dict inventory host -> bitcoind_info result, got {type(statuses).__name__}"
        )
    return statuses


def _host_ok(result) -> bool:
    return isinstance(result, dict) and isinstance(result.get("instances"), list) and not result.get("failed")


def _host_error(result) -> str:
    if not isinstance(result, dict) or not result:
        return "no result (host unreachable or the task did not run)"
    if result.get("unreachable"):
        return "unreachable: " + str(result.get("msg", ""))
    if result.get("failed"):
        return "failed: " + str(result.get("msg", ""))
    if not isinstance(result.get("instances"), list):
        return "result has no 'instances' list"
    return ""


def format_duration(seconds) -> str:
    """``42s``, ``5m07s``, ``3h12m``, ``2d04h``; ``-`` when unknown."""
    if seconds is None or isinstance(seconds, bool):
        return "-"
    try:
        seconds = int(seconds)
    except (TypeError, ValueError):
        return "-"
    if seconds < 0:
        return "-"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def format_progress(value) -> str:
    if value is None or isinstance(value, bool):
        return "-"
    try:
        return f"{float(value) * 100:.2f}%"
    except (TypeError, ValueError):
        return "-"


def format_height(instance: dict) -> str:
    blocks, headers = instance.get("blocks"), instance.get("headers")
    if blocks is None and headers is None:
        return "-"
    return f"{'-' if blocks is None else blocks}/{'-' if headers is None else headers}"


def format_peers(instance: dict) -> str:
    peers = instance.get("peers") or {}
    total = peers.get("total")
    if total is None:
        return "-"
    breakdown = peers.get("breakdown") or {}
    parts = " ".join(f"{short}:{breakdown.get(cat) or 0}" for cat, short in zip(CATEGORIES, CATEGORY_SHORT))
    return f"{total} ({parts})"


def format_onion(address) -> str:
    # In full: operators copy it into addnode= lines and compare it with backups.
    return str(address) if address else "-"


def format_ports(instance: dict) -> str:
    ports = instance.get("ports") or {}
    return "%s/%s" % (ports.get("rpc") or "-", ports.get("p2p") or "-")


def format_state(instance: dict) -> str:
    state = str(instance.get("state") or "?")
    if instance.get("unsupervised"):
        state += "!"  # answers RPC while supervisord does not run it
    return state


# --------------------------------------------------------------------------- module input


def fleet_status_targets(instances, plan, rpc_user=None, home="/var/lib/bitcoind") -> list:
    """bitcoind_info ``instances`` from inventory instances + the port plan (see module docstring)."""
    if not isinstance(instances, list):
        raise AnsibleFilterError("fleet_status_targets: instances must be a list of dicts")
    if not isinstance(plan, dict):
        raise AnsibleFilterError("fleet_status_targets: plan must be the dict returned by port_plan")
    targets = []
    for instance in instances:
        if not isinstance(instance, dict) or not instance.get("name"):
            raise AnsibleFilterError("fleet_status_targets: every instance needs a name")
        if instance.get("state", "present") == "absent":
            continue
        name = instance["name"]
        if name not in plan:
            raise AnsibleFilterError(f"fleet_status_targets: instance {name!r} is not in the port plan")
        ports = plan[name]
        target = {
            "name": name,
            "rpc_port": ports["rpc"],
            "p2p_port": ports["p2p"],
            "datadir": instance.get("datadir") or f"{home.rstrip('/')}/{name}",
        }
        for key in ("network", "impl", "tor_mode"):
            if instance.get(key):
                target[key] = instance[key]
        if instance.get("tor_mode") != "clearnet":
            target["onion_port"] = ports["onion"]
        topics = instance.get("zmq_topics")
        zmq = ports.get("zmq") or {}
        target["zmq_ports"] = {t: zmq[t] for t in topics if t in zmq} if topics is not None else dict(zmq)
        users = [u for u in instance.get("rpc_users") or [] if isinstance(u, dict) and u.get("user")]
        if rpc_user:
            users = [u for u in users if u["user"] == rpc_user]
        if users:
            target["rpc_user"] = users[0]["user"]
            target["rpc_password"] = users[0].get("password", "")
        targets.append(target)
    return targets


# --------------------------------------------------------------------------- table

COLUMNS = (
    "HOST",
    "INSTANCE",
    "STATE",
    "HEIGHT/HEADERS",
    "PROGRESS",
    "PEERS (LR KN C30+ C<30 OT)",
    "RPC/P2P",
    "ONION",
    "RESOURCES (MEM/LIMIT CPU/QUOTA OOM DISK)",
    "UPTIME",
    "NOTE",
)


def table_rows(statuses) -> list:
    rows = []
    for host in sorted(_check_statuses(statuses)):
        result = statuses[host]
        if not _host_ok(result):
            rows.append((str(host), "-", NO_DATA, "-", "-", "-", "-", "-", "-", "-", _host_error(result)))
            continue
        instances = sorted(result["instances"], key=lambda i: str(i.get("name", "")))
        if not instances:
            rows.append((str(host), "-", "no instances", "-", "-", "-", "-", "-", "-", "-", ""))
        for instance in instances:
            rows.append(
                (
                    str(host),
                    str(instance.get("name", "?")),
                    format_state(instance),
                    format_height(instance),
                    format_progress(instance.get("verificationprogress")),
                    format_peers(instance),
                    format_ports(instance),
                    format_onion(instance.get("onion_address")),
                    format_resources(instance.get("resources")),
                    format_duration(instance.get("uptime")),
                    "" if instance.get("state") == "up" else str(instance.get("message") or ""),
                )
            )
    return rows


def fleet_totals(statuses) -> dict:
    totals = dict.fromkeys(STATES, 0)
    totals["total"] = 0
    totals["hosts"] = len(statuses)
    totals["hosts_without_data"] = 0
    for result in statuses.values():
        if not _host_ok(result):
            totals["hosts_without_data"] += 1
            continue
        for instance in result["instances"]:
            state = instance.get("state")
            totals[state] = totals.get(state, 0) + 1
            totals["total"] += 1
    return totals


def fleet_status_table(statuses) -> str:
    """The fleet as a fixed-width table followed by one totals line."""
    rows = [COLUMNS, *table_rows(statuses)]
    widths = [max(len(row[col]) for row in rows) for col in range(len(COLUMNS) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    totals = fleet_totals(statuses)
    counts = ", ".join(f"{state} {totals[state]}" for state in STATES if totals[state])
    summary = f"{totals['total']} instance(s) on {totals['hosts']} host(s): {counts or 'none'}"
    if totals["hosts_without_data"]:
        summary += f"; {totals['hosts_without_data']} host(s) without data"
    lines.append(summary)
    return "\n".join(lines)


# --------------------------------------------------------------------------- JSON report


def fleet_status_report(statuses, generated_at=None) -> dict:
    """The controller-side JSON document (see module docstring)."""
    hosts = {}
    for host in sorted(_check_statuses(statuses)):
        result = statuses[host]
        ok = _host_ok(result)
        hosts[str(host)] = {
            "ok": ok,
            "error": "" if ok else _host_error(result),
            "summary": result.get("summary") if ok else None,
            "supervisord": result.get("supervisord") if ok else None,
            "instances": sorted(result["instances"], key=lambda i: str(i.get("name", ""))) if ok else [],
        }
    return {"generated_at": generated_at, "summary": fleet_totals(statuses), "hosts": hosts}


# --------------------------------------------------------------------------- Prometheus


def escape_label(value) -> str:
    """Label value escaping of the text exposition format: backslash, double quote, newline."""
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    try:
        return repr(float(value))
    except (TypeError, ValueError):
        return None


def _labels(pairs) -> str:
    return "{" + ",".join(f'{key}="{escape_label(value)}"' for key, value in pairs) + "}"


# (metric suffix, type, help, function instance -> list of (extra label pairs, value))
def _single(key):
    return lambda inst: [((), inst.get(key))]


def _nested(outer, key):
    return lambda inst: [((), (inst.get(outer) or {}).get(key))]


# Usage against the kernel limits (bitcoind_info `resources`, module_utils/cgroup.py).
RESOURCE_METRICS = (
    (
        "memory_used_bytes",
        "gauge",
        "Memory used by the instance (its slice cgroup, else its RSS).",
        _nested("resources", "memory_used_bytes"),
    ),
    (
        "memory_limit_bytes",
        "gauge",
        "Memory limit the kernel enforces on the instance (absent = unlimited).",
        _nested("resources", "memory_limit_bytes"),
    ),
    (
        "cpu_seconds_total",
        "counter",
        "CPU seconds (user + system) of the running bitcoind.",
        _nested("resources", "cpu_seconds_total"),
    ),
    (
        "oom_kills_total",
        "counter",
        "Kernel OOM kills in the instance's slice (limited instances).",
        _nested("resources", "oom_kills_total"),
    ),
    ("datadir_bytes", "gauge", "Disk used by the instance's datadir.", _nested("resources", "datadir_bytes")),
)

METRICS = (
    ("up", "gauge", "1 when the instance answers RPC (state up), else 0.", lambda i: [((), i.get("state") == "up")]),
    (
        "state",
        "gauge",
        "1 for the instance's current state (up, warming_up, down, hung, auth_failed, error), 0 for the others.",
        lambda i: [((("state", s),), i.get("state") == s) for s in STATES],
    ),
    (
        "unsupervised",
        "gauge",
        "1 when RPC answers although supervisord does not report the program RUNNING.",
        lambda i: [((), bool(i.get("unsupervised")))],
    ),
    ("blocks", "gauge", "Validated blocks (getblockchaininfo.blocks).", _single("blocks")),
    ("headers", "gauge", "Known headers (getblockchaininfo.headers).", _single("headers")),
    (
        "verification_progress",
        "gauge",
        "Estimated verification progress 0..1 (getblockchaininfo.verificationprogress).",
        _single("verificationprogress"),
    ),
    (
        "initial_block_download",
        "gauge",
        "1 while in initial block download (getblockchaininfo.initialblockdownload).",
        _single("initialblockdownload"),
    ),
    (
        "size_on_disk_bytes",
        "gauge",
        "Block and undo files on disk (getblockchaininfo.size_on_disk).",
        _single("size_on_disk"),
    ),
    ("pruned", "gauge", "1 when the node prunes.", _single("pruned")),
    ("uptime_seconds", "gauge", "Seconds since bitcoind started (RPC uptime).", _single("uptime")),
    (
        "peers",
        "gauge",
        "Connected peers by kind (libre_relay, knots, core_v30_plus, core_pre_v30, other).",
        lambda i: [((("kind", c),), ((i.get("peers") or {}).get("breakdown") or {}).get(c)) for c in CATEGORIES],
    ),
    (
        "connections",
        "gauge",
        "Connected peers by direction (inbound, outbound).",
        lambda i: [((("direction", d),), (i.get("peers") or {}).get(d)) for d in ("inbound", "outbound")],
    ),
    (
        "supervisord_running",
        "gauge",
        "1 when supervisord reports the program RUNNING.",
        lambda i: [((), (i.get("supervisord") or {}).get("state") == "RUNNING" if i.get("supervisord") else None)],
    ),
    (
        "process_start_time_seconds",
        "gauge",
        "Start time of the supervised process, seconds since the epoch (supervisord start).",
        _nested("supervisord", "start"),
    ),
    (
        "restarts",
        "gauge",
        "Restarts counted in supervisord's main log since supervisord started (spawns minus one).",
        _nested("supervisord", "restarts"),
    ),
    (
        "rpc_query_seconds",
        "gauge",
        "Seconds the status queries of this instance took.",
        _single("elapsed"),
    ),
    *RESOURCE_METRICS,
)


def _info_labels(instance: dict) -> tuple:
    return (
        ("version", instance.get("version")),
        ("subversion", instance.get("subversion")),
        ("tor_mode", instance.get("tor_mode")),
        ("onion", instance.get("onion_address")),
        ("program", instance.get("program")),
    )


def fleet_status_prometheus(result, host, timestamp=None) -> str:
    """node_exporter textfile text for one host's ``bitcoind_info`` result."""
    if not host:
        raise AnsibleFilterError("fleet_status_prometheus: host label must not be empty")
    lines = []
    instances = result.get("instances") if _host_ok(result) else []
    instances = sorted(instances or [], key=lambda i: str(i.get("name", "")))
    bases = [
        (("host", host), ("instance", i.get("name")), ("impl", i.get("impl")), ("network", i.get("network")))
        for i in instances
    ]
    for suffix, kind, help_text, extract in METRICS:
        samples = []
        for base, instance in zip(bases, instances):
            for extra, value in extract(instance):
                text = format_value(value)
                if text is not None:
                    samples.append(f"{PREFIX}{suffix}{_labels(base + extra)} {text}")
        if samples:
            lines += [f"# HELP {PREFIX}{suffix} {help_text}", f"# TYPE {PREFIX}{suffix} {kind}", *samples]
    if instances:
        lines += [
            f"# HELP {PREFIX}info Static facts of the instance as labels (value always 1).",
            f"# TYPE {PREFIX}info gauge",
        ]
        lines += [f"{PREFIX}info{_labels(base + _info_labels(i))} 1" for base, i in zip(bases, instances)]
    summary = (result or {}).get("summary") if _host_ok(result) else None
    lines += [
        f"# HELP {PREFIX}status_ok 1 when bitcoind_info ran on the host, 0 when it failed.",
        f"# TYPE {PREFIX}status_ok gauge",
        f"{PREFIX}status_ok{_labels((('host', host),))} {1 if _host_ok(result) else 0}",
    ]
    if summary:
        lines += [
            f"# HELP {PREFIX}instances Instances on the host by state.",
            f"# TYPE {PREFIX}instances gauge",
        ]
        lines += [
            f"{PREFIX}instances{_labels((('host', host), ('state', s)))} {int(summary.get(s, 0))}" for s in STATES
        ]
    if timestamp is not None:
        text = format_value(timestamp)
        if text is None:
            raise AnsibleFilterError(f"fleet_status_prometheus: timestamp {timestamp!r} is not a number")
        lines += [
            f"# HELP {PREFIX}status_timestamp_seconds When this status was collected, seconds since the epoch.",
            f"# TYPE {PREFIX}status_timestamp_seconds gauge",
            f"{PREFIX}status_timestamp_seconds{_labels((('host', host),))} {text}",
        ]
    return "\n".join(lines) + "\n"


class FilterModule:
    def filters(self):
        return {
            "fleet_status_table": fleet_status_table,
            "fleet_status_report": fleet_status_report,
            "fleet_status_prometheus": fleet_status_prometheus,
            "fleet_status_targets": fleet_status_targets,
        }
