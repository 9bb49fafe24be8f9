# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Live status of the bitcoind instances on one host: the one implementation.

``bitcoind_info`` (the module) and the node-side collector (``roles/monitoring``) both call
this, so a status playbook run and the collector report the same values:

- ``validate(params)`` checks the input (the module's options, ``DEFAULTS`` for what is left
  out) and returns the instance specs (given, or discovered from ``conf_dir``), raising
  ``common.ValidationError`` naming the option;
- ``collect(params, specs)`` resolves each spec against the node's program file and
  bitcoin.conf, queries every instance's RPC and supervisord in parallel within
  ``timeout`` and returns the module's result (``instances``, ``summary``, ``supervisord``,
  ``elapsed``) without ``changed``.

Standard library only (plus the collection's other module_utils): it runs on the node,
inside an Ansible module or in the collector without Ansible.
"""

from __future__ import annotations

import glob
import os
import re
import threading
import time
import xmlrpc.client

from ansible_collections.nodefleet.bitcoin.plugins.module_utils.bitcoin_conf import DEFAULT_PORTS
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.bitcoin_conf import settings as conf_settings
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.bitcoin_rpc import BitcoinRpc, RpcFailure
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.cgroup import add_resources
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import (
    NETWORKS,
    ValidationError,
    check_abs_path,
    check_line_value,
    check_name,
    check_port,
    check_rpc_user,
    read_text,
)
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.instance_states import STATES
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.peer_classify import CATEGORIES, peer_breakdown
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.supervisord import (
    SupervisorClient,
    SupervisorError,
    count_restarts,
    parse_server_url,
)

# The module's option defaults (its argument_spec uses the same values).
DEFAULTS = {
    "instances": [],
    "names": None,
    "credentials": None,
    "rpc_credentials": [],
    "timeout": 5.0,
    "conf_dir": "/etc/supervisor/conf.d",
    "datadir_root": "/var/lib/bitcoind",
    "supervisor_url": "unix:///var/run/supervisor.sock",
    "count_restarts": True,
    "restart_loop_threshold": 3,
    "restart_loop_window": 300,
}
TOR_MODES = ("tor-only", "clearnet", "both")
INSTANCE_FIELDS = (
    "name",
    "rpc_user",
    "rpc_password",
    "rpc_host",
    "rpc_port",
    "p2p_port",
    "onion_port",
    "zmq_ports",
    "network",
    "impl",
    "tor_mode",
    "onion_address",
    "datadir",
    "conf_file",
    "program",
)

# supervisord states in which it is (re)starting the program: a restart loop shows as
# "restarting" in these; a program supervisord gave up on (FATAL) or that stays stopped is "down".
LOOPING_SUPERVISOR_STATES = ("RUNNING", "STARTING", "BACKOFF")
# Core's default RPC port per network (the one table of Core's default ports: bitcoin_conf).
DEFAULT_RPC_PORTS = {network: ports[1] for network, ports in DEFAULT_PORTS.items()}
# getblockchaininfo.chain -> bitcoin.conf network name
CHAIN_TO_NETWORK = {"main": "main", "test": "test", "testnet4": "testnet4", "signet": "signet", "regtest": "regtest"}
LEGACY_CHAIN_FLAGS = ("regtest", "signet", "testnet4", "testnet")
RESTART_LOG_BYTES = 2 * 1024 * 1024
GRACE_SECONDS = 0.5

_HEADER_RE = re.compile(r"^#\s*instance=(\S+)(?:\s+impl=(\S+))?")
_PROGRAM_RE = re.compile(r"^\[program:([^\]]+)\]\s*$")


# --------------------------------------------------------------------------- pure parsing


def parse_bitcoin_conf(text: str) -> dict:
    """Instance facts from a bitcoin.conf written by bitcoind_instance (or by hand).

    Read with Core's own rules (``bitcoin_conf.settings``): the network's section before
    the top level, network-only options ignored outside their section, and for a
    single-value option the FIRST value of a config file (the command line's last-wins is
    reversed for config files). Raises ValueError for a file Core would refuse.
    """
    facts: dict = {"name": None, "impl": None}
    for raw in (text or "").split("\n"):
        header = _HEADER_RE.match(raw.strip())
        if header:
            facts["name"], facts["impl"] = header.group(1), header.group(2)
            break
    chain = conf_settings(text or "", "main")
    network = chain.get("chain") or None
    if not network:
        for flag in LEGACY_CHAIN_FLAGS:
            if chain.get(flag) not in (None, False, "0", ""):
                network = "test" if flag == "testnet" else flag
                break
    network = network if network in CHAIN_TO_NETWORK else "main"
    facts["network"] = network
    merged = conf_settings(text or "", network)

    def as_list(key):
        value = merged.get(key)
        if value is None or value is False:
            return []
        return value if isinstance(value, list) else [value]

    def first_int(key):
        value = merged.get(key)
        try:
            return int(value) if isinstance(value, str) else None
        except ValueError:
            return None

    def first_port(key):
        port = first_int(key)
        if port is not None and not 1 <= port <= 65535:
            # Core refuses to start with it ("Invalid port specified"); nothing can answer there.
            raise ValueError(f"{key}={port} is not a port (1-65535)")
        return port

    facts["rpc_port"] = first_port("rpcport")
    facts["p2p_port"] = first_port("port")
    facts["prune"] = first_int("prune") or 0
    onion_port = None
    for bind in as_list("bind"):
        if bind.endswith("=onion"):
            try:
                onion_port = int(bind[: -len("=onion")].rsplit(":", 1)[1])
            except (IndexError, ValueError):
                onion_port = None
            break
    facts["onion_port"] = onion_port
    rpc_host = None
    for addr in as_list("rpcbind"):
        host = addr.rsplit(":", 1)[0] if addr.count(":") == 1 else addr
        if host.startswith("127.") or host in ("localhost", "::1", "[::1]"):
            rpc_host = host.strip("[]")
            break
    facts["rpc_host"] = rpc_host
    onion = [v for v in as_list("externalip") if v.endswith(".onion")]
    facts["onion_address"] = onion[0] if onion else None
    if "onion" in as_list("onlynet"):
        facts["tor_mode"] = "tor-only"
    elif merged.get("proxy") or merged.get("onion") or onion:
        facts["tor_mode"] = "both"
    else:
        facts["tor_mode"] = "clearnet"
    zmq = {}
    for key, value in merged.items():
        if key.startswith("zmqpub") and isinstance(value, str):
            try:
                zmq[key[len("zmqpub") :]] = int(value.rsplit(":", 1)[1])
            except (IndexError, ValueError):
                continue
    facts["zmq_ports"] = zmq
    return facts


def parse_program_conf(text: str) -> dict:
    """Program name, ``-conf=`` and ``-datadir=`` from a supervisord program file."""
    facts: dict = {"program": None, "conf_file": None, "datadir": None}
    for raw in (text or "").splitlines():
        line = raw.strip()
        match = _PROGRAM_RE.match(line)
        if match:
            facts["program"] = match.group(1).strip()
            continue
        if line.startswith("command") and "=" in line:
            command = line.split("=", 1)[1]
            for word in command.split():
                for flag in ("conf", "datadir"):
                    prefix = f"-{flag}="
                    if word.startswith(prefix) or word.startswith("-" + prefix):
                        key = "conf_file" if flag == "conf" else flag
                        facts[key] = word.split("=", 1)[1].strip("'\"")
    return facts


def guess_impl(subversion: str | None):
    text = (subversion or "").lower()
    if "garbageman" in text:
        return "garbageman"
    if "knots" in text:
        return "knots"
    if "/satoshi:" in text:
        return "core"
    return None


def classify_state(rpc_state: str, supervisor_state: str | None, supervised_known: bool, restart_loop: bool = False):
    """Final state and ``unsupervised`` flag from the RPC outcome and supervisord's state.

    A restart loop while supervisord keeps (re)starting the program is ``restarting``,
    whatever RPC answered at this moment (a looping node may be up between two crashes).
    """
    answered = rpc_state in ("up", "warming_up", "auth_failed")
    unsupervised = bool(supervised_known and answered and supervisor_state != "RUNNING")
    if restart_loop and supervised_known and supervisor_state in LOOPING_SUPERVISOR_STATES:
        return "restarting", unsupervised
    return rpc_state, unsupervised


def is_restart_loop(restarts, threshold: int, uptime=None, window: int = 0) -> bool:
    """True when ``restarts`` (``count_restarts``; None = not counted) reaches ``threshold``
    and the program has not been RUNNING (``uptime`` seconds, None when not running) for
    more than ``window`` seconds (0: no such limit)."""
    if restarts is None or restarts < threshold:
        return False
    return not (window and uptime is not None and uptime > window)


def summarise(results: list) -> dict:
    summary = dict.fromkeys(STATES, 0)
    for result in results:
        summary[result["state"]] = summary.get(result["state"], 0) + 1
    summary["total"] = len(results)
    return summary


def make_tags(result: dict) -> list:
    tags = []
    for key in ("network", "impl", "tor_mode"):
        if result.get(key):
            tags.append(result[key])
    if result.get("pruned"):
        tags.append("pruned")
    if result.get("initialblockdownload"):
        tags.append("ibd")
    return tags


def peer_summary(peers) -> dict:
    peers = peers if isinstance(peers, list) else []
    inbound = sum(1 for peer in peers if isinstance(peer, dict) and peer.get("inbound"))
    return {
        "total": len(peers),
        "inbound": inbound,
        "outbound": len(peers) - inbound,
        "breakdown": peer_breakdown(peers),
    }


def empty_peers() -> dict:
    return {"total": None, "inbound": None, "outbound": None, "breakdown": dict.fromkeys(CATEGORIES, None)}


def apply_rpc_answers(result: dict, chain_info: dict, net_info: dict, peers, uptime) -> None:
    """Fill the status fields of ``result`` from the four RPC answers."""
    chain_info = chain_info or {}
    net_info = net_info or {}
    result["chain"] = chain_info.get("chain")
    for key in ("blocks", "headers", "verificationprogress", "initialblockdownload", "size_on_disk", "pruned"):
        result[key] = chain_info.get(key)
    best_time = chain_info.get("time")
    result["best_block_time"] = best_time if isinstance(best_time, int) and not isinstance(best_time, bool) else None
    # Core prints a progress of 1.0 as the JSON number 1; RETURN promises a float.
    if isinstance(result["verificationprogress"], (int, float)) and not isinstance(
        result["verificationprogress"], bool
    ):
        result["verificationprogress"] = float(result["verificationprogress"])
    result["version"] = net_info.get("version")
    result["subversion"] = net_info.get("subversion")
    result["uptime"] = uptime
    result["peers"] = peer_summary(peers)
    if not result.get("network") and result["chain"] in CHAIN_TO_NETWORK:
        result["network"] = CHAIN_TO_NETWORK[result["chain"]]
    if not result.get("impl"):
        result["impl"] = guess_impl(result["subversion"])


# --------------------------------------------------------------------------- input


def validate_instance(spec: dict, index: int) -> None:
    """One entry of ``instances``. The module's argument_spec already checks types and
    choices; the collector reads its instances from a JSON file, so they are checked here too."""
    option = f"instances[{index}]"
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValidationError(option, "must be a dict with a name")
    unknown = sorted(set(spec) - set(INSTANCE_FIELDS))
    if unknown:
        raise ValidationError(option, "unknown field(s) " + ", ".join(map(str, unknown)))
    check_name(option + ".name", spec["name"])
    if spec.get("network") is not None and spec["network"] not in NETWORKS:
        raise ValidationError(option + ".network", f"must be one of {', '.join(NETWORKS)}")
    if spec.get("tor_mode") is not None and spec["tor_mode"] not in TOR_MODES:
        raise ValidationError(option + ".tor_mode", f"must be one of {', '.join(TOR_MODES)}")
    for key in ("rpc_user", "rpc_password", "impl", "onion_address"):
        if spec.get(key) is not None and not isinstance(spec[key], str):
            raise ValidationError(f"{option}.{key}", "must be a string")
    if spec.get("zmq_ports") is not None and not isinstance(spec["zmq_ports"], dict):
        raise ValidationError(option + ".zmq_ports", "must be a dict topic -> port")
    for key in ("rpc_port", "p2p_port", "onion_port"):
        if spec.get(key) is not None:
            check_port(f"{option}.{key}", spec[key])
    for key in ("datadir", "conf_file"):
        if spec.get(key):
            check_abs_path(f"{option}.{key}", spec[key])
    if spec.get("program"):
        check_name(option + ".program", spec["program"])
    if spec.get("rpc_user"):
        check_rpc_user(option + ".rpc_user", spec["rpc_user"])
    if spec.get("rpc_host") is not None:
        host = check_line_value(option + ".rpc_host", spec["rpc_host"], allow_empty=False)
        if any(char.isspace() for char in host) or not host.isascii():
            raise ValidationError(option + ".rpc_host", f"{host!r} is not a host name or IP address")


def merge_credentials(rpc_credentials: list) -> dict:
    """Instance name -> {user, password} from O(rpc_credentials); a name listed twice is refused."""
    merged: dict = {}
    seen = set()
    for index, entry in enumerate(rpc_credentials):
        option = f"rpc_credentials[{index}]"
        check_name(option + ".name", entry["name"])
        check_rpc_user(option + ".user", entry["user"])
        if entry["name"] in seen:
            raise ValidationError(option + ".name", f"instance {entry['name']!r} is listed twice")
        seen.add(entry["name"])
        merged[entry["name"]] = {"user": entry["user"], "password": entry["password"]}
    return merged


def discover_names(conf_dir: str) -> list:
    names = []
    for path in sorted(glob.glob(os.path.join(conf_dir, "bitcoind-*.conf"))):
        name = os.path.basename(path)[len("bitcoind-") : -len(".conf")]
        try:
            check_name("conf_dir", name)
        except ValidationError:
            continue
        names.append(name)
    return names


def resolve_instance(spec: dict, params: dict) -> dict:
    """Merge the given fields with what the node's program file and bitcoin.conf say."""
    name = spec["name"]
    try:
        program_text = read_text(os.path.join(params["conf_dir"], f"bitcoind-{name}.conf"))
    except (OSError, UnicodeDecodeError):
        program_text = None  # unreadable program file: fall back to the defaults below
    program_facts = parse_program_conf(program_text or "")
    datadir = spec.get("datadir") or program_facts["datadir"] or os.path.join(params["datadir_root"], name)
    conf_file = spec.get("conf_file") or program_facts["conf_file"] or os.path.join(datadir, "bitcoin.conf")
    conf_text = None
    conf_error = ""
    try:
        conf_text = read_text(conf_file)
    except OSError as exc:
        conf_error = f"cannot read {conf_file}: {exc.strerror}"
    except UnicodeDecodeError:
        conf_error = f"cannot read {conf_file}: not UTF-8 text"
    conf = {}
    if conf_text is not None:
        try:
            conf = parse_bitcoin_conf(conf_text)
        except ValueError as exc:
            conf_error = f"{conf_file}: {exc}"

    def pick(key):
        value = spec.get(key)
        return value if value is not None else conf.get(key)

    network = spec.get("network") or conf.get("network")
    rpc_port = pick("rpc_port")
    if rpc_port is None and network in DEFAULT_RPC_PORTS and conf_text is not None:
        rpc_port = DEFAULT_RPC_PORTS[network]
    cred = params.get("_credentials", {}).get(name) or {}
    return {
        "name": name,
        "program": spec.get("program") or program_facts["program"] or f"bitcoind-{name}",
        "network": network,
        "impl": pick("impl"),
        "tor_mode": pick("tor_mode"),
        "onion_address": pick("onion_address"),
        "rpc_host": pick("rpc_host") or "127.0.0.1",
        "rpc_port": rpc_port,
        "ports": {
            "rpc": rpc_port,
            "p2p": pick("p2p_port"),
            "onion": pick("onion_port"),
            "zmq": pick("zmq_ports") or {},
        },
        "pruned_conf": bool(conf.get("prune")),
        "rpc_user": spec.get("rpc_user") if spec.get("rpc_user") is not None else cred.get("user", ""),
        "rpc_password": spec.get("rpc_password") if spec.get("rpc_password") is not None else cred.get("password", ""),
        "conf_error": conf_error,
        "datadir": datadir,
        "has_credentials": bool(
            (spec.get("rpc_user") is not None or cred.get("user"))
            and (spec.get("rpc_password") is not None or "password" in cred)
        ),
    }


# --------------------------------------------------------------------------- queries


def blank_result(target: dict) -> dict:
    """The result of an instance before (or without) any RPC answer."""
    return {
        "name": target["name"],
        "state": "error",
        "message": "",
        "network": target["network"],
        "impl": target["impl"],
        "chain": None,
        "version": None,
        "subversion": None,
        "uptime": None,
        "blocks": None,
        "headers": None,
        "best_block_time": None,
        "verificationprogress": None,
        "initialblockdownload": None,
        "size_on_disk": None,
        "pruned": target["pruned_conf"] or None,
        "peers": empty_peers(),
        "ports": target["ports"],
        "onion_address": target["onion_address"],
        "tor_mode": target["tor_mode"],
        "program": target["program"],
    }


def query_instance(target: dict, deadline: float) -> dict:
    """Run the four RPC calls against one instance within ``deadline`` (monotonic)."""
    started = time.monotonic()
    result = blank_result(target)
    if target["rpc_port"] is None:
        result["message"] = target["conf_error"] or "rpc_port unknown: not given and no bitcoin.conf found"
        return result
    client = BitcoinRpc(
        target["rpc_host"], target["rpc_port"], target["rpc_user"], target["rpc_password"], deadline=deadline
    )
    try:
        chain_info = client.call("getblockchaininfo")
        net_info = client.call("getnetworkinfo")
        peers = client.call("getpeerinfo")
        uptime = client.call("uptime")
        apply_rpc_answers(result, chain_info, net_info, peers, uptime)
        result["state"] = "up"
    except RpcFailure as exc:
        result["state"] = exc.state
        result["message"] = exc.message
        if exc.state == "auth_failed" and not target["has_credentials"]:
            result["message"] += " (no credentials given for this instance)"
    finally:
        client.close()
        result["elapsed"] = round(time.monotonic() - started, 3)
    return result


def query_supervisor(url: str, timeout: float, want_log: bool) -> dict:
    """``getAllProcessInfo`` (and the tail of the main log) from supervisord, one call each."""
    out = {"reachable": False, "error": "", "processes": {}, "log": None}
    try:
        client = SupervisorClient(url, timeout=timeout)
        for info in client.call("getAllProcessInfo"):
            out["processes"][info.get("name")] = info
        out["reachable"] = True
        if want_log:
            try:
                out["log"] = client.call("readLog", -RESTART_LOG_BYTES, 0)
            except (xmlrpc.client.Fault, SupervisorError):
                out["log"] = None
    except (xmlrpc.client.Fault, SupervisorError) as exc:
        out["error"] = f"supervisord: {exc}"
    return out


def supervisor_view(info: dict | None, log_text, program: str) -> dict:
    if info is None:
        return {
            "state": None,
            "pid": None,
            "start": None,
            "uptime": None,
            "exitstatus": None,
            "spawnerr": "",
            "restarts": None,
        }
    running = info.get("statename") == "RUNNING"
    return {
        "state": info.get("statename"),
        "pid": info.get("pid") or None,
        "start": info.get("start") or None,
        "uptime": (info.get("now", 0) - info.get("start", 0)) if running and info.get("start") else None,
        "exitstatus": info.get("exitstatus"),
        "spawnerr": info.get("spawnerr", ""),
        "restarts": count_restarts(log_text, program),
    }


def run_parallel(targets: list, params: dict) -> tuple:
    """Query every target and supervisord at the same time; bounded by ``timeout`` + grace."""
    timeout = params["timeout"]
    deadline = time.monotonic() + timeout
    results: dict = {}
    supervisor: dict = {}
    lock = threading.Lock()

    def work(target):
        result = query_instance(target, deadline)
        with lock:
            results[target["name"]] = result

    def work_supervisor():
        answer = query_supervisor(params["supervisor_url"], timeout, params["count_restarts"])
        with lock:
            supervisor.update(answer)

    threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in targets]
    if params["supervisor_url"]:
        threads.append(threading.Thread(target=work_supervisor, daemon=True))
    for thread in threads:
        thread.start()
    hard_deadline = deadline + GRACE_SECONDS
    for thread in threads:
        thread.join(max(0.0, hard_deadline - time.monotonic()))
    with lock:
        results = dict(results)
        supervisor = dict(supervisor)
    if params["supervisor_url"] and not supervisor:
        supervisor = {"reachable": False, "error": "supervisord did not answer within the time budget", "processes": {}}
    return results, supervisor


def assemble(targets: list, results: dict, supervisor: dict, params: dict) -> list:
    out = []
    queried = bool(params["supervisor_url"]) and supervisor.get("reachable")
    for target in targets:
        result = results.get(target["name"])
        if result is None:  # thread still blocked past the deadline
            result = blank_result(target)
            result["state"] = "hung"
            result["message"] = f"no answer within the time budget ({params['timeout']}s)"
            result["elapsed"] = params["timeout"]
        info = supervisor.get("processes", {}).get(target["program"]) if queried else None
        result["supervisord"] = supervisor_view(info, supervisor.get("log"), target["program"]) if queried else None
        sup_state = info.get("statename") if info else None
        view = result["supervisord"] or {}
        restarts = view.get("restarts")
        threshold = params["restart_loop_threshold"]
        result["restart_loop"] = is_restart_loop(restarts, threshold, view.get("uptime"), params["restart_loop_window"])
        rpc_state = result["state"]
        result["state"], result["unsupervised"] = classify_state(
            rpc_state, sup_state, bool(queried), result["restart_loop"]
        )
        if result["state"] == "down" and queried and sup_state and sup_state != "RUNNING":
            result["message"] = f"{result['message']}; supervisord state {sup_state}"
        if result["state"] == "restarting":
            rpc_said = rpc_state + (f": {result['message']}" if result["message"] else "")
            result["message"] = (
                f"restart loop: supervisord restarted {target['program']} {restarts} times since it started "
                f"(restart_loop_threshold={threshold}), now {sup_state}; RPC {rpc_said}"
            )
        result["tags"] = make_tags(result)
        out.append(result)
    return sorted(out, key=lambda r: r["name"])


# --------------------------------------------------------------------------- entry points


def validate(params: dict) -> list:
    """Check ``params`` (the module's options; missing keys take ``DEFAULTS``) and return the
    instance specs to query, in order. Raises ValidationError naming the option.

    ``params`` gets ``_credentials`` (instance name -> {user, password}) added: callers keep
    it out of anything they print.
    """
    for key, value in DEFAULTS.items():
        params.setdefault(key, value)
    if not 0 < params["timeout"] <= 300:
        raise ValidationError("timeout", "must be more than 0 and at most 300 seconds")
    check_abs_path("conf_dir", params["conf_dir"])
    check_abs_path("datadir_root", params["datadir_root"])
    if params["supervisor_url"]:
        try:
            parse_server_url(params["supervisor_url"])
        except ValidationError as exc:
            raise ValidationError("supervisor_url", exc.reason) from None
    if params["restart_loop_threshold"] < 1:
        raise ValidationError("restart_loop_threshold", "must be at least 1")
    if params["restart_loop_window"] < 0:
        raise ValidationError("restart_loop_window", "must be 0 (no limit) or a number of seconds")
    if params["credentials"] is not None:
        raise ValidationError(
            "credentials",
            "this option was removed (its dict form masked every user and instance name in the "
            "output); pass rpc_credentials: a list of {name, user, password}",
        )
    params["_credentials"] = merge_credentials(params["rpc_credentials"])
    for index, spec in enumerate(params["instances"]):
        validate_instance(spec, index)
    for name in params["names"] or []:
        check_name("names", name)
    specs = params["instances"] or [{"name": name} for name in discover_names(params["conf_dir"])]
    seen = set()
    for spec in specs:
        if spec["name"] in seen:
            raise ValidationError("instances", f"instance {spec['name']!r} is listed twice")
        seen.add(spec["name"])
    if params["names"] is not None:
        unknown = sorted(set(params["names"]) - seen)
        if unknown:
            raise ValidationError("names", "unknown instance(s) " + ", ".join(unknown))
        specs = [spec for spec in specs if spec["name"] in params["names"]]
    return specs


def collect(params: dict, specs: list) -> dict:
    """Query ``specs`` (from ``validate``) and return the module's result without ``changed``."""
    started = time.monotonic()
    targets = [resolve_instance(spec, params) for spec in specs]
    results, supervisor = run_parallel(targets, params)
    instances = assemble(targets, results, supervisor, params)
    # Usage against the kernel limits (module_utils/cgroup.py), for the module and the collector alike.
    add_resources(instances, {target["name"]: target["datadir"] for target in targets})
    return {
        "instances": instances,
        "summary": summarise(instances),
        "supervisord": {"reachable": bool(supervisor.get("reachable")), "error": supervisor.get("error", "")},
        "elapsed": round(time.monotonic() - started, 3),
    }
