# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prometheus metric names and the node_exporter textfile rendering of ``bitcoind_info`` results.

One implementation for everything that exports metrics: the status playbook (through the
``fleet_status_prometheus`` filter, on the controller) and the node-side collector (on the node)
both call :func:`render_textfile`, so both give the same names and values. Standard library only:
this file also runs on the managed node.

Names follow the Prometheus conventions (checked by ``promtool check metrics`` in the tests):
no label called ``instance`` (Prometheus's own target label; the instance label is ``bitcoind``),
counters end in ``_total``, ratios in ``_ratio``, durations and times in ``_seconds``, sizes in
``_bytes``.

- :data:`METRICS`: every family this module can write, name -> (type, help). Tests, the alert
  rules and the Grafana dashboard are checked against it.
- :data:`OPTIONAL_METRICS`: families written only when the data exists (memory limits,
  issue 12; OOM kills). They are in :data:`METRICS` as well.
- :data:`VOLATILE_METRICS`: families whose value moves on every collection although nothing
  happened (timestamps, ages, uptimes, query times); :func:`stable_text` drops them so a caller
  can tell "something changed" from "only the clock moved".
- :func:`render_textfile`: one host's ``bitcoind_info`` result -> textfile text.
- :func:`fleet_view`: per instance ``blocks_behind`` (the best chain height of its network that
  the given results know of, minus its height); :func:`render_fleet_textfile` renders it for one
  host. The best height counts each instance's ``headers`` too: the best header chain its own
  peers announced, which a run over a slice of the fleet sees as well as a full run.
- :func:`stale_tip_seconds`: seconds since the instance's tip block (``best_block_time``).
"""

from __future__ import annotations

import math

from ansible_collections.nodefleet.bitcoin.plugins.module_utils.instance_states import STATES
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.peer_classify import CATEGORIES

PREFIX = "nodefleet_bitcoind_"
COLLECTOR_TIMESTAMP = "nodefleet_collector_last_run_timestamp_seconds"
# The label that names a bitcoind instance. Not "instance": Prometheus sets that label to the
# scrape target and renames ours to exported_instance.
INSTANCE_LABEL = "bitcoind"
BASE_LABELS = ("host", INSTANCE_LABEL, "impl", "network")
DIRECTIONS = ("inbound", "outbound")


class MetricsError(ValueError):
    """An input render_textfile cannot render (empty host, a timestamp that is not a number)."""


# --------------------------------------------------------------------------- value helpers


def escape_label(value) -> str:
    """Label value escaping of the text exposition format: backslash, double quote, newline."""
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value) -> str | None:
    """Sample value text, or None for an unknown value (left out, never reported as 0)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if math.isnan(number) or math.isinf(number):
        return None
    return repr(number)


def _labels(pairs) -> str:
    return "{" + ",".join(f'{key}="{escape_label(value)}"' for key, value in pairs) + "}"


def _number(value):
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) or math.isinf(number) else number


def _int(value):
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def stale_tip_seconds(instance: dict, now) -> float | None:
    """Seconds since the instance's tip block (``now - best_block_time``), never negative.

    None when the block time or ``now`` is unknown. A tip time in the future (miner clocks
    may run up to two hours ahead) counts as 0.
    """
    block_time = _number((instance or {}).get("best_block_time"))
    now = _number(now)
    if block_time is None or now is None:
        return None
    return max(0.0, round(now - block_time, 3))


def host_ok(result) -> bool:
    """True when ``result`` is a usable bitcoind_info result (not failed, has an instances list)."""
    return isinstance(result, dict) and isinstance(result.get("instances"), list) and not result.get("failed")


def _instances(result) -> list:
    if not host_ok(result):
        return []
    return sorted(
        (i for i in result["instances"] if isinstance(i, dict)),
        key=lambda i: str(i.get("name", "")),
    )


# --------------------------------------------------------------------------- the families

# (name, type, help, extract) - extract(instance, now) -> list of (extra label pairs, value).
# Order here is the order in the file.


def _key(key):
    return lambda inst, now: [((), inst.get(key))]


def _nested(outer, key):
    return lambda inst, now: [((), (inst.get(outer) or {}).get(key))]


def _supervisord_running(inst, now):
    sup = inst.get("supervisord")
    return [((), sup.get("state") == "RUNNING" if isinstance(sup, dict) and sup.get("state") else None)]


_INSTANCE_FAMILIES = (
    (
        PREFIX + "up",
        "gauge",
        "1 when the instance answers RPC (state up), else 0.",
        lambda i, now: [((), i.get("state") == "up")],
    ),
    (
        PREFIX + "state",
        "gauge",
        "1 for the instance's current state (label state: " + ", ".join(STATES) + "), 0 for the others.",
        lambda i, now: [((("state", s),), i.get("state") == s) for s in STATES],
    ),
    (
        PREFIX + "unsupervised",
        "gauge",
        "1 when RPC answers although supervisord does not report the program RUNNING.",
        lambda i, now: [((), bool(i.get("unsupervised")))],
    ),
    (PREFIX + "blocks", "gauge", "Validated blocks (getblockchaininfo blocks).", _key("blocks")),
    (PREFIX + "headers", "gauge", "Known headers (getblockchaininfo headers).", _key("headers")),
    (
        PREFIX + "best_block_timestamp_seconds",
        "gauge",
        "Time of the tip block, seconds since the epoch (getblockchaininfo time).",
        _key("best_block_time"),
    ),
    (
        PREFIX + "stale_tip_seconds",
        "gauge",
        "Seconds since the tip block at collection time (collection time minus the tip block's time).",
        lambda i, now: [((), stale_tip_seconds(i, now))],
    ),
    (
        PREFIX + "verification_progress_ratio",
        "gauge",
        "Estimated verification progress 0..1 (getblockchaininfo verificationprogress).",
        _key("verificationprogress"),
    ),
    (
        PREFIX + "initial_block_download",
        "gauge",
        "1 while in initial block download (getblockchaininfo initialblockdownload).",
        _key("initialblockdownload"),
    ),
    (
        PREFIX + "size_on_disk_bytes",
        "gauge",
        "Block and undo files on disk (getblockchaininfo size_on_disk).",
        _key("size_on_disk"),
    ),
    (PREFIX + "pruned", "gauge", "1 when the node prunes.", _key("pruned")),
    (PREFIX + "uptime_seconds", "gauge", "Seconds since bitcoind started (RPC uptime).", _key("uptime")),
    (
        PREFIX + "peers",
        "gauge",
        "Connected peers by kind (label kind: " + ", ".join(CATEGORIES) + ").",
        lambda i, now: [((("kind", c),), ((i.get("peers") or {}).get("breakdown") or {}).get(c)) for c in CATEGORIES],
    ),
    (
        PREFIX + "connections",
        "gauge",
        "Connected peers by direction (label direction: inbound, outbound).",
        lambda i, now: [((("direction", d),), (i.get("peers") or {}).get(d)) for d in DIRECTIONS],
    ),
    (
        PREFIX + "supervisord_running",
        "gauge",
        "1 when supervisord reports the program RUNNING.",
        _supervisord_running,
    ),
    (
        PREFIX + "process_start_time_seconds",
        "gauge",
        "Start time of the supervised process, seconds since the epoch (supervisord start).",
        _nested("supervisord", "start"),
    ),
    (
        PREFIX + "restarts_total",
        "counter",
        "Restarts counted in supervisord's main log since supervisord started (spawns minus one);"
        " resets when supervisord restarts.",
        _nested("supervisord", "restarts"),
    ),
    # Usage against the kernel limits: bitcoind_info's `resources` (module_utils/cgroup.py).
    (
        PREFIX + "oom_kills_total",
        "counter",
        "Kernel OOM kills in the instance's slice (limited instances; absent on cgroup v1, where the kernel"
        " counts a kill only in the victim's own scope).",
        _nested("resources", "oom_kills_total"),
    ),
    (
        PREFIX + "memory_used_bytes",
        "gauge",
        "Memory the instance uses: its slice cgroup when it has limits, else the process's RSS.",
        _nested("resources", "memory_used_bytes"),
    ),
    (
        PREFIX + "memory_limit_bytes",
        "gauge",
        "The memory limit the kernel enforces on the instance (absent = unlimited).",
        _nested("resources", "memory_limit_bytes"),
    ),
    (
        PREFIX + "cpu_seconds_total",
        "counter",
        "CPU seconds (user + system) of the running bitcoind; starts from 0 at each start.",
        _nested("resources", "cpu_seconds_total"),
    ),
    (
        PREFIX + "datadir_bytes",
        "gauge",
        "Disk used by the instance's datadir (like du).",
        _nested("resources", "datadir_bytes"),
    ),
    (
        PREFIX + "rpc_query_duration_seconds",
        "gauge",
        "Seconds the status queries of this instance took.",
        _key("elapsed"),
    ),
)

INFO_METRIC = PREFIX + "info"
INFO_LABELS = ("version", "subversion", "tor_mode", "onion", "program")
STATUS_OK_METRIC = PREFIX + "status_ok"
INSTANCES_METRIC = PREFIX + "instances"
BLOCKS_BEHIND_METRIC = PREFIX + "blocks_behind"
FLEET_BEST_BLOCKS_METRIC = "nodefleet_fleet_best_blocks"
FLEET_HOSTS_METRIC = "nodefleet_fleet_hosts_seen"
FLEET_HOSTS_EXPECTED_METRIC = "nodefleet_fleet_hosts_expected"
# Its own name: the fleet file sits next to the per-node file in one textfile directory, and
# node_exporter refuses a scrape where two files hold the same series.
FLEET_TIMESTAMP = "nodefleet_fleet_last_run_timestamp_seconds"

_HELP_INFO = "Static facts of the instance as labels (" + ", ".join(INFO_LABELS) + "); value always 1."
_HELP_STATUS_OK = "1 when bitcoind_info ran on the host, 0 when it failed."
_HELP_INSTANCES = "Instances on the host by state."
_HELP_COLLECTOR = "When these metrics were collected, seconds since the epoch."
_HELP_BEHIND = (
    "Blocks the instance is behind the best chain of its network known to the run that computed it:"
    " the best blocks or headers (the peers' best header chain) of the instances in that run."
)
_HELP_FLEET_BEST = (
    "Best chain height per network (blocks or headers) among the instances of the status run that wrote this file."
)
_HELP_FLEET_HOSTS = "Hosts with a bitcoind_info result in the status run that computed the fleet view."
_HELP_FLEET_HOSTS_EXPECTED = (
    "Hosts of the status play's host pattern in the inventory (--limit does not narrow it); more than"
    " nodefleet_fleet_hosts_seen means the fleet view left hosts out."
)
_HELP_FLEET_TIMESTAMP = "When the status run computed the fleet view, seconds since the epoch."

#: name -> (type, help) of every family this module writes.
METRICS: dict = {name: (kind, help_text) for name, kind, help_text, _extract in _INSTANCE_FAMILIES}
METRICS.update(
    {
        INFO_METRIC: ("gauge", _HELP_INFO),
        STATUS_OK_METRIC: ("gauge", _HELP_STATUS_OK),
        INSTANCES_METRIC: ("gauge", _HELP_INSTANCES),
        COLLECTOR_TIMESTAMP: ("gauge", _HELP_COLLECTOR),
        BLOCKS_BEHIND_METRIC: ("gauge", _HELP_BEHIND),
        FLEET_BEST_BLOCKS_METRIC: ("gauge", _HELP_FLEET_BEST),
        FLEET_HOSTS_METRIC: ("gauge", _HELP_FLEET_HOSTS),
        FLEET_HOSTS_EXPECTED_METRIC: ("gauge", _HELP_FLEET_HOSTS_EXPECTED),
        FLEET_TIMESTAMP: ("gauge", _HELP_FLEET_TIMESTAMP),
    }
)

#: Families written only when the data exists (limits, a running process, a readable datadir).
OPTIONAL_METRICS = frozenset(
    {
        PREFIX + "oom_kills_total",
        PREFIX + "memory_used_bytes",
        PREFIX + "memory_limit_bytes",
        PREFIX + "cpu_seconds_total",
        PREFIX + "datadir_bytes",
        # Written only when the caller knows the inventory (the status play does).
        FLEET_HOSTS_EXPECTED_METRIC,
    }
)

#: Families in the fleet file (render_fleet_textfile), not in the per-node file.
FLEET_METRICS = frozenset(
    {BLOCKS_BEHIND_METRIC, FLEET_BEST_BLOCKS_METRIC, FLEET_HOSTS_METRIC, FLEET_HOSTS_EXPECTED_METRIC, FLEET_TIMESTAMP}
)

#: Families whose value moves with the clock alone: left out by stable_text.
VOLATILE_METRICS = frozenset(
    {
        COLLECTOR_TIMESTAMP,
        FLEET_TIMESTAMP,
        PREFIX + "stale_tip_seconds",
        PREFIX + "uptime_seconds",
        PREFIX + "rpc_query_duration_seconds",
        # Measurements that move on their own on an idle node, not state changes.
        PREFIX + "memory_used_bytes",
        PREFIX + "cpu_seconds_total",
        PREFIX + "datadir_bytes",
        # Core estimates it from the clock: on a node that gets no blocks it drifts on every
        # call; a node that syncs moves `blocks` as well, which is a change.
        PREFIX + "verification_progress_ratio",
    }
)

#: The same values in the status report's instance entries (fleet_status_report_stable): keys of
#: the instance, of its ``supervisord`` and of its ``resources``.
VOLATILE_INSTANCE_KEYS = ("uptime", "elapsed", "stale_tip_seconds", "verificationprogress")
VOLATILE_SUPERVISORD_KEYS = ("uptime",)
VOLATILE_RESOURCE_KEYS = ("memory_used_bytes", "cpu_seconds_total", "datadir_bytes")

#: Labels of every per-instance family (extra labels: state, kind, direction; info labels).
METRIC_LABELS = {name: BASE_LABELS for name, *_rest in _INSTANCE_FAMILIES}
METRIC_LABELS[PREFIX + "state"] = (*BASE_LABELS, "state")
METRIC_LABELS[PREFIX + "peers"] = (*BASE_LABELS, "kind")
METRIC_LABELS[PREFIX + "connections"] = (*BASE_LABELS, "direction")
METRIC_LABELS.update(
    {
        INFO_METRIC: BASE_LABELS + INFO_LABELS,
        STATUS_OK_METRIC: ("host",),
        INSTANCES_METRIC: ("host", "state"),
        COLLECTOR_TIMESTAMP: ("host",),
        BLOCKS_BEHIND_METRIC: BASE_LABELS,
        FLEET_BEST_BLOCKS_METRIC: ("host", "network"),
        FLEET_HOSTS_METRIC: ("host",),
        FLEET_HOSTS_EXPECTED_METRIC: ("host",),
        FLEET_TIMESTAMP: ("host",),
    }
)


# --------------------------------------------------------------------------- rendering


def _family(name: str, samples: list) -> list:
    kind, help_text = METRICS[name]
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]


def _check_host(host) -> str:
    if not isinstance(host, str) or not host:
        raise MetricsError(f"host label must be a non-empty string, got {host!r}")
    return host


def _check_timestamp(timestamp):
    if timestamp is None:
        return None
    text = format_value(timestamp)
    if text is None:
        raise MetricsError(f"timestamp {timestamp!r} is not a number")
    return text


def _base(host: str, instance: dict) -> tuple:
    return (
        ("host", host),
        (INSTANCE_LABEL, instance.get("name")),
        ("impl", instance.get("impl")),
        ("network", instance.get("network")),
    )


def render_textfile(host: str, info: dict, timestamp: float | None = None) -> str:
    """node_exporter textfile text for one host's ``bitcoind_info`` result.

    ``info`` is the module's result (``instances`` list, ``summary``, ``supervisord``) or a
    failed/missing result, which gives ``nodefleet_bitcoind_status_ok 0`` only. ``timestamp``
    (seconds since the epoch) is the collection time: with it the text holds
    ``nodefleet_collector_last_run_timestamp_seconds`` and the stale-tip age. Unknown values
    are left out, never reported as 0. Ends in a newline.
    """
    host = _check_host(host)
    stamp = _check_timestamp(timestamp)
    now = _number(timestamp)
    instances = _instances(info)
    lines = []
    for name, _kind, _help, extract in _INSTANCE_FAMILIES:
        samples = []
        for instance in instances:
            base = _base(host, instance)
            for extra, value in extract(instance, now):
                text = format_value(value)
                if text is not None:
                    samples.append(f"{name}{_labels(base + extra)} {text}")
        if samples:
            lines += _family(name, samples)
    if instances:
        lines += _family(
            INFO_METRIC,
            [
                f"{INFO_METRIC}{_labels(_base(host, i) + tuple((k, _info_value(i, k)) for k in INFO_LABELS))} 1"
                for i in instances
            ],
        )
    ok = host_ok(info)
    lines += _family(STATUS_OK_METRIC, [f"{STATUS_OK_METRIC}{_labels((('host', host),))} {1 if ok else 0}"])
    summary = info.get("summary") if ok else None
    if isinstance(summary, dict):
        lines += _family(
            INSTANCES_METRIC,
            [
                f"{INSTANCES_METRIC}{_labels((('host', host), ('state', s)))} {_int(summary.get(s)) or 0}"
                for s in STATES
            ],
        )
    if stamp is not None:
        lines += _family(COLLECTOR_TIMESTAMP, [f"{COLLECTOR_TIMESTAMP}{_labels((('host', host),))} {stamp}"])
    return "\n".join(lines) + "\n"


def _info_value(instance: dict, key: str):
    return instance.get("onion_address") if key == "onion" else instance.get(key)


# --------------------------------------------------------------------------- fleet view


def fleet_tips(results_by_host: dict) -> dict:
    """network -> best chain height among the instances of every usable result.

    An instance counts with its ``blocks`` and, when it has a height, its ``headers`` (the best
    header chain its peers announced, proof of work checked by bitcoind): an instance whose
    peers know a longer chain shows behind even when no instance of the run has those blocks
    yet - so a run over part of the fleet (``--limit``, an AWX slice) does not call an instance
    in sync because the instances ahead of it were outside the run.
    """
    tips: dict = {}
    for result in (results_by_host or {}).values():
        for instance in _instances(result):
            blocks, network = _int(instance.get("blocks")), instance.get("network")
            if blocks is None or not network:
                continue
            best = max(blocks, _int(instance.get("headers")) or 0)
            if best > tips.get(network, -1):
                tips[network] = best
    return tips


def blocks_behind(instance: dict, tips: dict) -> int | None:
    """Best height of the instance's network (``tips``) minus its height; None when unknown."""
    blocks = _int((instance or {}).get("blocks"))
    tip = tips.get((instance or {}).get("network"))
    if blocks is None or tip is None:
        return None
    return max(0, tip - blocks)


def fleet_view(results_by_host: dict) -> dict:
    """``{tips: {network: height}, hosts_seen: n, behind: {host: {instance: blocks_behind}}}``.

    Computed only from the results given: with ``--limit``, only from the hosts in that run.
    """
    tips = fleet_tips(results_by_host)
    behind = {}
    for host, result in (results_by_host or {}).items():
        behind[host] = {str(i.get("name")): blocks_behind(i, tips) for i in _instances(result)}
    hosts_seen = sum(1 for result in (results_by_host or {}).values() if host_ok(result))
    return {"tips": tips, "hosts_seen": hosts_seen, "behind": behind}


def render_fleet_textfile(
    host: str, results_by_host: dict, timestamp: float | None = None, hosts_expected: int | None = None
) -> str:
    """The fleet-wide values for ``host``'s instances (``nodefleet_fleet.prom``).

    ``results_by_host`` maps every host of the run to its bitcoind_info result; ``host`` must
    be one of them (its own result may be failed: then only the per-network tips are written).
    ``hosts_expected``: how many hosts the fleet view should have covered (the status play's
    host pattern in the whole inventory), written beside the hosts seen so a consumer of the
    file alone can tell a partial view.
    """
    host = _check_host(host)
    stamp = _check_timestamp(timestamp)
    if hosts_expected is not None:
        expected = _int(hosts_expected)
        if expected is None or expected < 0:
            raise MetricsError(f"hosts_expected must be a count of hosts, got {hosts_expected!r}")
    if not isinstance(results_by_host, dict):
        raise MetricsError("results_by_host must be a dict host -> bitcoind_info result")
    tips = fleet_tips(results_by_host)
    lines = []
    samples = []
    for instance in _instances(results_by_host.get(host)):
        text = format_value(blocks_behind(instance, tips))
        if text is not None:
            samples.append(f"{BLOCKS_BEHIND_METRIC}{_labels(_base(host, instance))} {text}")
    if samples:
        lines += _family(BLOCKS_BEHIND_METRIC, samples)
    if tips:
        lines += _family(
            FLEET_BEST_BLOCKS_METRIC,
            [f"{FLEET_BEST_BLOCKS_METRIC}{_labels((('host', host), ('network', n)))} {tips[n]}" for n in sorted(tips)],
        )
    hosts_seen = sum(1 for result in results_by_host.values() if host_ok(result))
    lines += _family(FLEET_HOSTS_METRIC, [f"{FLEET_HOSTS_METRIC}{_labels((('host', host),))} {hosts_seen}"])
    if hosts_expected is not None:
        lines += _family(
            FLEET_HOSTS_EXPECTED_METRIC, [f"{FLEET_HOSTS_EXPECTED_METRIC}{_labels((('host', host),))} {expected}"]
        )
    if stamp is not None:
        lines += _family(FLEET_TIMESTAMP, [f"{FLEET_TIMESTAMP}{_labels((('host', host),))} {stamp}"])
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- change detection


def stable_text(text) -> str:
    """``text`` without the samples of VOLATILE_METRICS (their HELP/TYPE lines stay).

    Two collections whose stable_text is equal differ only in the clock: a caller writes the
    new file anyway (fresh timestamps) but does not report a change.
    """
    if not isinstance(text, str):
        return ""
    kept = []
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if not line.startswith("#") and name in VOLATILE_METRICS:
            continue
        kept.append(line)
    return "\n".join(kept)
