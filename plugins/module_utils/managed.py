# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the collection manages on a host, and which of it the inventory no longer lists.

The collection marks what it writes: supervisord program files start with
``supervisord.HEADER`` (``bitcoind-<name>.conf`` in the program directory), tor drop-ins start
with ``tor.DROPIN_HEADER`` (``nodefleet-<name>.conf`` in the torrc directory, naming the
service's ``HiddenServiceDir``), and every bitcoin.conf written by bitcoind_instance starts with
its header and ``# instance=<name> impl=<impl>`` (``bitcoin_conf.is_managed``; the datadirs
under ``bitcoind_home``). Files without the mark are not ours and are never listed (so never retired).

An instance is *unlisted* when its program file or its onion drop-in is on the host but the
inventory names it neither present nor absent: it may still run and hold ports. A datadir
alone (an instance retired or made absent without purge) is listed under ``datadirs`` but is
not unlisted: nothing of it runs.

Used by the bitcoind_managed_info module (on the host), by bitcoind_info (state ``unlisted``)
and by the ``unlisted_port_conflicts`` filter (on the controller). Standard library only, plus
the collection's own module_utils.
"""

from __future__ import annotations

import os

from ansible_collections.nodefleet.bitcoin.plugins.module_utils import ports as ports_util
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import safe_fs, tor
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.bitcoin_conf import is_managed
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import ValidationError, check_name
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.instance_info import (
    parse_bitcoin_conf,
    parse_program_conf,
)
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.supervisord import HEADER as PROGRAM_HEADER

PROGRAM_PREFIX = "bitcoind-"
PROGRAM_SUFFIX = ".conf"
DROPIN_SUFFIX = ".conf"


# --------------------------------------------------------------------------- pure parsing


def name_from_file(filename: str, prefix: str, suffix: str):
    """The instance name in ``<prefix><name><suffix>``, or None when it is not a valid name."""
    if not (filename.startswith(prefix) and filename.endswith(suffix)) or len(filename) <= len(prefix + suffix):
        return None
    name = filename[len(prefix) : -len(suffix)]
    try:
        check_name("name", name)
    except ValidationError:
        return None
    return name


def is_marked(text: str | None, header: str) -> bool:
    """True when ``text`` starts with the collection's ``header`` line."""
    return bool(text) and text.split("\n", 1)[0].strip() == header


def unlisted_names(managed: dict, listed) -> list:
    """Names with a program file or an onion drop-in on the host that ``listed`` does not name."""
    listed = set(listed or [])
    have = set(managed.get("programs", {})) | set(managed.get("onion_services", {}))
    return sorted(have - listed)


def conf_ports(conf: dict) -> dict:
    """``{rpc, p2p, onion, zmq}`` of a parsed bitcoin.conf (``parse_bitcoin_conf``)."""
    return {
        "rpc": conf.get("rpc_port"),
        "p2p": conf.get("p2p_port"),
        "onion": conf.get("onion_port"),
        "zmq": dict(conf.get("zmq_ports") or {}),
    }


def port_list(port_map: dict) -> list:
    """Every port number of a ``{rpc, p2p, onion, zmq: {topic: port}}`` map, sorted, no None."""
    out = set()
    for key, value in (port_map or {}).items():
        if key == "zmq":
            out.update(int(p) for p in (value or {}).values() if p is not None)
        elif value is not None:
            out.add(int(value))
    return sorted(out)


def port_conflicts(plan: dict, unlisted: list) -> list:
    """Messages for every port the plan gives an instance while an unlisted instance holds it.

    ``plan`` is the port_plan filter's output (name -> ``{rpc, p2p, onion, zmq}``); ``unlisted``
    the module's ``unlisted`` entries (``name``, ``ports``: the ports in its bitcoin.conf,
    ``listening``: those it listens on now). A port counts as held when the unlisted instance
    listens on it, or when its program is still on the host (it will take the port back at its
    next start) - in both cases giving it to another instance would make two daemons fight.
    """
    messages = []
    for entry in unlisted or []:
        held = set(entry.get("listening") or [])
        if entry.get("program_file"):
            held |= set(port_list(entry.get("ports") or {}))
        for name in sorted(plan or {}):
            if name == entry.get("name"):
                continue
            for label, port in sorted(_labelled_ports(plan[name])):
                if port in held:
                    messages.append(
                        f"port {port} ({label}) planned for instance {name} is still held by the unlisted instance "
                        f"{entry['name']} (not in the inventory, program {entry.get('program_state') or 'file present'}"
                        f"{', pid ' + str(entry['pid']) if entry.get('pid') else ''})"
                    )
    return messages


def _labelled_ports(ports: dict):
    for key, value in (ports or {}).items():
        if key == "zmq":
            for topic, port in (value or {}).items():
                yield f"zmq {topic}", int(port)
        elif value is not None:
            yield key, int(value)


def describe(entry: dict) -> str:
    """One line for a warning: what of an unlisted instance is still on the host and running."""
    parts = [
        f"program {entry.get('program') or '-'} "
        + (entry.get("program_state") or ("file present" if entry.get("program_file") else "absent"))
    ]
    if entry.get("pid"):
        parts.append(f"pid {entry['pid']}")
    parts.append("listening on " + (", ".join(str(p) for p in entry.get("listening") or []) or "no port"))
    if entry.get("onion_address"):
        parts.append(f"onion {entry['onion_address']}")
    elif entry.get("onion_dropin"):
        parts.append("onion service configured")
    if entry.get("datadir"):
        parts.append(f"datadir {entry['datadir']}")
    return (
        f"instance {entry['name']} is on the host but not in the inventory (neither present nor absent): "
        + "; ".join(parts)
        + ". Its ports stay reserved; set bitcoind_retire_unlisted=true to retire it"
    )


# --------------------------------------------------------------------------- host reads


def _read_text(path: str):
    """Text of a regular file (never through a symlink), None when missing or unreadable."""
    try:
        data = safe_fs.read_file(path)
    except (OSError, safe_fs.UnsafePath):
        return None
    if data is None:
        return None
    return data.decode("utf-8", "replace")


def _listdir(path: str) -> list:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def list_programs(conf_dir: str) -> dict:
    """name -> ``{path, program, datadir, conf_file}`` of the program files the collection wrote."""
    out = {}
    for filename in _listdir(conf_dir):
        name = name_from_file(filename, PROGRAM_PREFIX, PROGRAM_SUFFIX)
        if name is None:
            continue
        path = os.path.join(conf_dir, filename)
        text = _read_text(path)
        if not is_marked(text, PROGRAM_HEADER):
            continue
        facts = parse_program_conf(text)
        out[name] = {
            "path": path,
            "program": facts["program"] or PROGRAM_PREFIX + name,
            "datadir": facts["datadir"],
            "conf_file": facts["conf_file"],
        }
    return out


def list_onion_services(torrc_dir: str) -> dict:
    """name -> ``{dropin, service_dir, onion_address}`` of the tor drop-ins the collection wrote."""
    out = {}
    for filename in _listdir(torrc_dir):
        name = name_from_file(filename, tor.DROPIN_PREFIX, DROPIN_SUFFIX)
        if name is None:
            continue
        path = os.path.join(torrc_dir, filename)
        text = _read_text(path)
        if not is_marked(text, tor.DROPIN_HEADER):
            continue
        service_dir = tor.parse_dropin(text)["service_dir"] or tor.default_service_dir(name)
        try:
            address = tor.read_hostname(service_dir)
        except (OSError, safe_fs.UnsafePath):
            address = None
        out[name] = {"dropin": path, "service_dir": service_dir, "onion_address": address}
    return out


def list_datadirs(home: str) -> dict:
    """name -> datadir for every directory under ``home`` whose bitcoin.conf bitcoind_instance wrote."""
    out = {}
    for entry in _listdir(home):
        path = os.path.join(home, entry)
        if os.path.islink(path) or not os.path.isdir(path):
            continue
        if is_managed(_read_text(os.path.join(path, "bitcoin.conf")), entry):
            out[entry] = path
    return out


def list_managed(conf_dir: str, torrc_dir: str, home: str) -> dict:
    return {
        "programs": list_programs(conf_dir),
        "onion_services": list_onion_services(torrc_dir),
        "datadirs": list_datadirs(home),
    }


def unlisted_entries(managed: dict, listed, home: str, supervisor: dict | None, proc: str = "/proc") -> list:
    """The ``unlisted`` entries: program file, supervisord state and pid, ports, onion service, datadir.

    ``supervisor`` is ``instance_info.query_supervisor``'s answer (None: not queried).
    ``listening`` are the ports of the instance's bitcoin.conf that some socket listens on now.
    """
    names = unlisted_names(managed, listed)
    if not names:
        return []
    listening_now = ports_util.listening_inodes(proc)
    processes = (supervisor or {}).get("processes", {})
    out = []
    for name in names:
        prog = managed.get("programs", {}).get(name) or {}
        onion = managed.get("onion_services", {}).get(name) or {}
        datadir = prog.get("datadir") or managed.get("datadirs", {}).get(name) or os.path.join(home, name)
        conf_file = prog.get("conf_file") or os.path.join(datadir, "bitcoin.conf")
        conf = {}
        text = _read_text(conf_file)
        if text is not None:
            try:
                conf = parse_bitcoin_conf(text)
            except ValueError:
                conf = {}
        program = prog.get("program") or PROGRAM_PREFIX + name
        info = processes.get(program) if prog else None
        planned = conf_ports(conf)
        out.append(
            {
                "name": name,
                "program": program,
                "program_file": prog.get("path"),
                "program_state": info.get("statename") if info else None,
                "pid": (info.get("pid") or None) if info else None,
                "ports": planned,
                "listening": [p for p in port_list(planned) if p in listening_now],
                "onion_dropin": onion.get("dropin"),
                "onion_service_dir": onion.get("service_dir"),
                "onion_address": onion.get("onion_address") or conf.get("onion_address"),
                "datadir": datadir if os.path.isdir(datadir) else None,
                "network": conf.get("network"),
                "impl": conf.get("impl"),
            }
        )
    for entry in out:
        entry["message"] = describe(entry)
    return out


def mark_unlisted(result: dict, names, managed: dict, proc: str = "/proc") -> None:
    """Turn bitcoind_info's entries of ``names`` (unlisted instances) into state ``unlisted``.

    The RPC outcome is kept in the message, with the program state, pid, the ports it listens
    on and its onion address; ``listening`` is added to each such entry.
    """
    wanted = set(names or [])
    if not wanted:
        return
    listening_now = ports_util.listening_inodes(proc)
    onions = managed.get("onion_services", {})
    for entry in result.get("instances", []):
        if entry.get("name") not in wanted:
            continue
        view = entry.get("supervisord") or {}
        listening = [p for p in port_list(entry.get("ports") or {}) if p in listening_now]
        onion = (onions.get(entry["name"]) or {}).get("onion_address") or entry.get("onion_address")
        if onion and not entry.get("onion_address"):
            entry["onion_address"] = onion
        rpc = entry.get("state") + (f": {entry['message']}" if entry.get("message") else "")
        parts = [f"program {entry.get('program')} {view.get('state') or 'unknown to supervisord'}"]
        if view.get("pid"):
            parts.append(f"pid {view['pid']}")
        parts.append("listening on " + (", ".join(str(p) for p in listening) or "no port"))
        if onion:
            parts.append(f"onion {onion}")
        entry["listening"] = listening
        entry["state"] = "unlisted"
        entry["message"] = "not in the inventory (neither present nor absent): " + "; ".join(parts) + f"; RPC {rpc}"
        entry["tags"] = [t for t in entry.get("tags") or [] if t != "unlisted"] + ["unlisted"]
