# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side rendering of ``bitcoind_info`` results: fleet table, JSON report, Prometheus text.

Filters (all pure, no I/O; the state names and peer categories come from module_utils):

``statuses | nodefleet.bitcoin.fleet_status_table(timestamp=None)``
    One fixed-width text table for the whole fleet. ``statuses`` maps inventory host ->
    the registered ``bitcoind_info`` result; a host without a result (unreachable, failed)
    gets one ``no data`` row, so a missing host is visible, not silently dropped. BEHIND is
    the fleet view (best height of the instance's network among ``statuses`` minus its
    height); TIP AGE needs ``timestamp`` (now, epoch seconds).

``statuses | nodefleet.bitcoin.fleet_status_report(generated_at=..., timestamp=None, limit=None, inventory_hosts=None)``
    The JSON document written on the controller: ``{generated_at, summary, fleet, hosts:
    {host: {ok, error, summary, supervisord, instances}}}``; instance entries are the module's
    plus ``blocks_behind`` and ``stale_tip_seconds`` (credentials are never part of them).
    ``fleet`` says what the fleet view was computed from (``fleet_tip_scope``: the hosts
    in this run, never more; ``hosts_outside_run``: the ``inventory_hosts`` it left out).

``report | nodefleet.bitcoin.fleet_status_report_stable``
    The report without the values that move with the clock alone (generated_at, uptimes,
    query times, tip ages), to tell a real change from a new timestamp.

``instances | nodefleet.bitcoin.fleet_status_targets(plan, rpc_user=None, home='/var/lib/bitcoind')``
    The ``instances`` option of ``bitcoind_info`` from what the inventory knows: the role's
    instances (defaults merged in), the ``port_plan`` filter's result, and one of each
    instance's ``rpc_users`` (``rpc_user`` when given, else the first). Absent instances are
    left out. Holds passwords: pass it straight to the module, never print it.

``result | nodefleet.bitcoin.fleet_status_prometheus(host, timestamp=None)``
    node_exporter textfile-collector text for one host: ``metrics.render_textfile``, the
    same function the node collector calls. See docs/status.md for the metric list.

``statuses | nodefleet.bitcoin.fleet_status_fleet_prometheus(host, timestamp=None, hosts_expected=None)``
    The fleet file of ``host`` (``nodefleet_fleet.prom``): ``metrics.render_fleet_textfile``.

``text | nodefleet.bitcoin.fleet_status_stable``
    Textfile text without the samples that move with the clock alone (``metrics.stable_text``).

``new | nodefleet.bitcoin.fleet_status_changed(stat_result, slurp_result, kind='textfile')``
    Whether writing ``new`` over the file that ``stat``/``slurp`` saw changes more than the
    clock (the ``changed_when`` of status.yml's writes).
"""

from __future__ import annotations

import base64
import copy
import json

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # pragma: no cover - ansible is always present where filters run
    AnsibleFilterError = ValueError  # type: ignore[misc,assignment]

# One list of state names (bitcoind_info decides them) and of peer categories (the peer
# classification): imported, never repeated here.
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.instance_states import STATES
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.peer_classify import CATEGORIES


def _metrics():
    """module_utils.metrics (and through it cgroup), imported on first use.

    Ansible loads every filter file of the collection in each worker that resolves any of its
    filters (plugins/filter/README.md): a module-level import of these big modules would cost
    every task of a converge, not only the status play that uses them.
    """
    from ansible_collections.nodefleet.bitcoin.plugins.module_utils import metrics

    return metrics


def format_resources(resources):
    from ansible_collections.nodefleet.bitcoin.plugins.module_utils.cgroup import format_resources as fmt

    return fmt(resources)


CATEGORY_SHORT = ("LR", "KN", "C30+", "C<30", "OT")
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
    "BEHIND",
    "TIP AGE",
    "PROGRESS",
    "PEERS (LR KN C30+ C<30 OT)",
    "RPC/P2P",
    "ONION",
    "RESOURCES (MEM/LIMIT CPU/QUOTA OOM DISK)",
    "UPTIME",
    "NOTE",
)


def format_behind(value) -> str:
    return "-" if value is None else str(value)


def table_rows(statuses, timestamp=None) -> list:
    behind = _metrics().fleet_view(_check_statuses(statuses))["behind"]
    rows = []
    for host in sorted(statuses):
        result = statuses[host]
        if not _host_ok(result):
            rows.append((str(host), "-", NO_DATA, *["-"] * (len(COLUMNS) - 4), _host_error(result)))
            continue
        instances = sorted(result["instances"], key=lambda i: str(i.get("name", "")))
        if not instances:
            rows.append((str(host), "-", "no instances", *["-"] * (len(COLUMNS) - 4), ""))
        for instance in instances:
            rows.append(
                (
                    str(host),
                    str(instance.get("name", "?")),
                    format_state(instance),
                    format_height(instance),
                    format_behind(behind.get(host, {}).get(str(instance.get("name")))),
                    format_duration(_metrics().stale_tip_seconds(instance, timestamp)),
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


def fleet_status_table(statuses, timestamp=None) -> str:
    """The fleet as a fixed-width table followed by one totals line (TIP AGE needs ``timestamp``)."""
    rows = [COLUMNS, *table_rows(statuses, timestamp)]
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


FLEET_TIP_SCOPE = "hosts in this run"


def fleet_status_report(statuses, generated_at=None, timestamp=None, limit=None, inventory_hosts=None) -> dict:
    """The controller-side JSON document (see module docstring)."""
    view = _metrics().fleet_view(_check_statuses(statuses))
    hosts = {}
    for host in sorted(statuses):
        result = statuses[host]
        ok = _host_ok(result)
        instances = []
        if ok:
            for instance in sorted(result["instances"], key=lambda i: str(i.get("name", ""))):
                entry = dict(instance)
                entry["blocks_behind"] = view["behind"].get(host, {}).get(str(instance.get("name")))
                entry["stale_tip_seconds"] = _metrics().stale_tip_seconds(instance, timestamp)
                instances.append(entry)
        hosts[str(host)] = {
            "ok": ok,
            "error": "" if ok else _host_error(result),
            "summary": result.get("summary") if ok else None,
            "supervisord": result.get("supervisord") if ok else None,
            "instances": instances,
        }
    fleet = {
        # blocks_behind compares with the best height among these hosts only: with --limit
        # that is a slice of the fleet, and the report says so rather than claim fleet-wide.
        "fleet_tip_scope": FLEET_TIP_SCOPE,
        "limit": limit or None,
        "hosts": sorted(str(h) for h in statuses),
        "hosts_with_data": view["hosts_seen"],
        # Said, never guessed: the hosts the fleet view should have covered and did not.
        "hosts_outside_run": sorted({str(h) for h in (inventory_hosts or [])} - {str(h) for h in statuses}),
        "best_blocks": view["tips"],
    }
    return {"generated_at": generated_at, "summary": fleet_totals(statuses), "fleet": fleet, "hosts": hosts}


def fleet_status_report_stable(report) -> dict:
    """``report`` (a dict, or its JSON text) without the values that move with the clock alone.

    generated_at, uptimes, query times, tip ages, verification progress estimates and the measured
    memory, CPU and disk use (``metrics.VOLATILE_*_KEYS``, the same values ``stable_text`` leaves
    out of the textfiles).

    Anything that is not a report (a missing file's empty content) gives ``{}``.
    """
    if isinstance(report, (str, bytes)):
        try:
            report = json.loads(report)
        except ValueError:
            return {}
    if not isinstance(report, dict):
        return {}
    stable = copy.deepcopy(report)
    stable.pop("generated_at", None)
    for host in (stable.get("hosts") or {}).values():
        if not isinstance(host, dict):
            continue
        if isinstance(host.get("supervisord"), dict):
            host["supervisord"].pop("elapsed", None)
        for instance in host.get("instances") or []:
            if not isinstance(instance, dict):
                continue
            for key in _metrics().VOLATILE_INSTANCE_KEYS:
                instance.pop(key, None)
            for sub, keys in (
                ("supervisord", _metrics().VOLATILE_SUPERVISORD_KEYS),
                ("resources", _metrics().VOLATILE_RESOURCE_KEYS),
            ):
                if isinstance(instance.get(sub), dict):
                    for key in keys:
                        instance[sub].pop(key, None)
    return stable


# --------------------------------------------------------------------------- Prometheus


def fleet_status_prometheus(result, host, timestamp=None) -> str:
    """node_exporter textfile text for one host's ``bitcoind_info`` result (metrics.render_textfile)."""
    try:
        return _metrics().render_textfile(host, result if isinstance(result, dict) else {}, timestamp)
    except _metrics().MetricsError as exc:
        raise AnsibleFilterError(f"fleet_status_prometheus: {exc}") from None


def fleet_status_fleet_prometheus(statuses, host, timestamp=None, hosts_expected=None) -> str:
    """The fleet file (blocks_behind, per-network best height) for ``host`` (metrics.render_fleet_textfile)."""
    try:
        return _metrics().render_fleet_textfile(host, _check_statuses(statuses), timestamp, hosts_expected)
    except _metrics().MetricsError as exc:
        raise AnsibleFilterError(f"fleet_status_fleet_prometheus: {exc}") from None


def fleet_status_stable(text) -> str:
    """Textfile text without the clock-driven samples (metrics.stable_text), for changed_when."""
    return _metrics().stable_text(text)


def fleet_status_changed(new, stat_result, slurp_result=None, kind="textfile", mode="0644") -> bool:
    """Whether writing ``new`` changes anything but the clock (for a quiet scheduled status job).

    ``stat_result`` / ``slurp_result`` are the registered ``stat`` and ``slurp`` results of the
    file before the write (slurp skipped or failed when it did not exist). True when the file
    is missing, is not a regular file, has another mode, or its content differs from ``new``
    in more than the values that move with the clock (``kind``: ``textfile`` compares with
    fleet_status_stable, ``report`` with fleet_status_report_stable).
    """
    if kind not in ("textfile", "report"):
        raise AnsibleFilterError(f"fleet_status_changed: kind must be textfile or report, got {kind!r}")
    stat = (stat_result or {}).get("stat") if isinstance(stat_result, dict) else None
    if not isinstance(stat, dict) or not stat.get("exists") or not stat.get("isreg") or stat.get("mode") != mode:
        return True
    content = (slurp_result or {}).get("content") if isinstance(slurp_result, dict) else None
    if not isinstance(content, str):
        return True
    try:
        old = base64.b64decode(content).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return True
    if kind == "report":
        new_report = json.loads(new) if isinstance(new, str) else new
        return fleet_status_report_stable(new_report) != fleet_status_report_stable(old)
    return _metrics().stable_text(new if isinstance(new, str) else "") != _metrics().stable_text(old)


class FilterModule:
    def filters(self):
        return {
            "fleet_status_table": fleet_status_table,
            "fleet_status_report": fleet_status_report,
            "fleet_status_prometheus": fleet_status_prometheus,
            "fleet_status_targets": fleet_status_targets,
            "fleet_status_fleet_prometheus": fleet_status_fleet_prometheus,
            "fleet_status_stable": fleet_status_stable,
            "fleet_status_report_stable": fleet_status_report_stable,
            "fleet_status_changed": fleet_status_changed,
        }
