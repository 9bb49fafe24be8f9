#!/usr/bin/python
# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bitcoind_info
short_description: Live status of every bitcoind instance on a host
version_added: "0.1.0"
description:
  - Reports, in one module execution per host, the live status of every bitcoind instance
    (Bitcoin Core, Knots, Garbageman) on the host, queried in parallel through JSON-RPC
    (C(getblockchaininfo), C(getnetworkinfo), C(getpeerinfo), C(uptime)) and through
    supervisord's XML-RPC interface (C(supervisor.getAllProcessInfo), one call per host).
  - "Instance state: V(up) (RPC answers), V(warming_up) (RPC error -28), V(down) (connection
    refused, or supervisord reports the program not RUNNING and RPC does not answer),
    V(hung) (no RPC answer within O(timeout)), V(auth_failed) (HTTP 401/403), V(error)
    (any other RPC failure, or the instance's RPC port is unknown), V(restarting) (a restart
    loop - RV(instances[].restart_loop) - while supervisord reports the program RUNNING,
    STARTING or BACKOFF, whatever RPC answered; the RPC outcome is kept in
    RV(instances[].message))."
  - An instance whose RPC answers while supervisord does not report its program RUNNING is
    reported with its RPC state and C(unsupervised=true) (a daemon started outside
    supervision, or an orphan left behind).
  - Peers are classified by M(nodefleet.bitcoin.bitcoind_info)'s rules in this order, first
    match wins. Libre Relay (service bit 29 set, or a user agent naming Libre Relay or
    Garbageman), Knots (user agent contains Knots), Core v30+ and Core before v30 (from
    C(/Satoshi:X.Y.Z/)), other.
  - "Instances come from O(instances) (what the role knows from inventory) or, when
    O(instances) is empty, are discovered on the node from C(<conf_dir>/bitcoind-*.conf).
    Any field not given is read from the instance's bitcoin.conf (header C(# instance=<name>
    impl=<impl>), C(chain=), the network section's C(rpcport)/C(port)/C(bind)), so
    O(instances) may be as small as a name and credentials."
  - rpcauth lines cannot give back a password, so credentials are always passed in
    (O(instances[].rpc_password) or O(rpc_credentials)). An instance without
    credentials is still probed, and reports V(auth_failed) when its RPC answers.
  - Read-only. Nothing is written, so check mode runs the same queries.
author:
  - nodefleet.bitcoin contributors (@nodefleet)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Read-only; check mode runs the same queries.
  diff_mode:
    support: none
    details: Nothing is changed, so there is nothing to diff.
  platform:
    platforms: posix
options:
  instances:
    description:
      - The instances to report on. When empty, every C(bitcoind-*.conf) program file in
        O(conf_dir) is an instance.
      - Fields left out are read from the instance's bitcoin.conf.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Instance name.
        type: str
        required: true
      rpc_user:
        description:
          - RPC user name (falls back to O(rpc_credentials)).
          - 1-64 printable ASCII characters without whitespace, control characters, C(:), C(#) or C(=).
        type: str
      rpc_password:
        description: RPC password (falls back to O(rpc_credentials)). Never returned.
        type: str
      rpc_host:
        description: Address to connect to. Default the first loopback C(rpcbind) of the conf, else C(127.0.0.1).
        type: str
      rpc_port:
        description: RPC port. Default the conf's C(rpcport), else the network's default port.
        type: int
      p2p_port:
        description: P2P port (reported only).
        type: int
      onion_port:
        description: Local onion bind port (reported only).
        type: int
      zmq_ports:
        description: ZMQ topic -> port (reported only).
        type: dict
      network:
        description: Network of the instance.
        type: str
        choices: [main, test, testnet4, signet, regtest]
      impl:
        description: Implementation (C(core), C(knots), C(garbageman)).
        type: str
      tor_mode:
        description: Tor mode (reported as a tag).
        type: str
        choices: [tor-only, clearnet, both]
      onion_address:
        description: The instance's onion address (reported only).
        type: str
      datadir:
        description: Datadir. Default from the program's C(-datadir=), else O(datadir_root)/<name>.
        type: path
      conf_file:
        description: bitcoin.conf. Default from the program's C(-conf=), else <datadir>/bitcoin.conf.
        type: path
      program:
        description: supervisord program name.
        type: str
  names:
    description: Report only these instances (applies to O(instances) and to discovery).
    type: list
    elements: str
  rpc_credentials:
    description:
      - RPC credentials per instance, used for instances whose O(instances[].rpc_user) or
        O(instances[].rpc_password) is not given, and for discovered instances.
      - Only the password is secret (C(no_log)); user and instance names stay readable in the
        output. The older dict form O(credentials) is removed; it had to be C(no_log) as a
        whole, which masked every user and instance name in the output.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Instance name.
        type: str
        required: true
      user:
        description: RPC user name (same rule as O(instances[].rpc_user)).
        type: str
        required: true
      password:
        description: RPC password. Never returned.
        type: str
        required: true
  credentials:
    description:
      - Removed; giving it fails with a message that names O(rpc_credentials). The older dict
        form (instance name -> C({user, password})) had to be C(no_log) as a whole, which
        masked every user and instance name wherever it appeared in the output. Move each
        entry to O(rpc_credentials) as C({name, user, password}).
      - Still declared (and C(no_log)) only so that a playbook that passes it cannot echo its
        passwords in an "unsupported parameter" error.
    type: raw
  timeout:
    description:
      - Time budget in seconds for each instance, all RPC calls included (connect, every
        read). Instances are queried in parallel, so a run costs about O(timeout) at most.
    type: float
    default: 5
  conf_dir:
    description: supervisord's program directory (discovery, C(-conf=)/C(-datadir=) of each program).
    type: path
    default: /etc/supervisor/conf.d
  datadir_root:
    description: Parent of the instance datadirs when a datadir is not known otherwise.
    type: path
    default: /var/lib/bitcoind
  supervisor_url:
    description:
      - supervisord XML-RPC URL (C(unix:///path) or C(http://host:port)). Empty string skips
        supervisord; the states then come from RPC alone.
    type: str
    default: unix:///var/run/supervisor.sock
  count_restarts:
    description:
      - Count restarts from supervisord's main log (C(supervisor.readLog), last 2 MiB),
        see C(instances[].supervisord.restarts).
    type: bool
    default: true
  restart_loop_threshold:
    description:
      - An instance is in a restart loop (RV(instances[].restart_loop)) when
        C(instances[].supervisord.restarts) is at least this many, that is this many restarts
        within the log window read (since supervisord last started, last 2 MiB of its main
        log). Deliberate restarts (C(supervisorctl restart), a rolling upgrade) count too.
      - Needs O(count_restarts=true); without it RV(instances[].restart_loop) is always false.
    type: int
    default: 3
  restart_loop_window:
    description:
      - Seconds a program must stay RUNNING to count as out of a restart loop again. The restart count covers
        everything since supervisord started, so without this a program that looped once would be reported in
        a loop until supervisord restarts; with it, a program RUNNING for longer than this is not in a loop
        whatever its count (V(0) turns this off - then the count alone decides).
    type: int
    default: 300
notes:
  - "supervisord has no restart counter. C(instances[].supervisord.restarts) is the number of
    C(spawned: '<program>') lines in supervisord's main log since its last
    C(supervisord started) line, minus one (a lower bound when the log window does not
    reach that line); C(null) when the log cannot be read."
seealso:
  - module: nodefleet.bitcoin.bitcoind_instance
  - module: nodefleet.bitcoin.supervisord_program
"""

EXAMPLES = r"""
- name: Status of every instance on the host, credentials from the vault
  nodefleet.bitcoin.bitcoind_info:
    rpc_credentials:
      - {name: main1, user: monitor, password: "{{ vault_main1_rpc_password }}"}
      - {name: test1, user: monitor, password: "{{ vault_test1_rpc_password }}"}
  register: status

- name: Fail when an instance is in a restart loop (5 restarts since supervisord started)
  nodefleet.bitcoin.bitcoind_info:
    rpc_credentials: "{{ status_rpc_credentials }}"
    restart_loop_threshold: 5
  register: loops
  failed_when: loops.instances | selectattr('restart_loop') | list | length > 0

- name: Status of instances the role knows, with a 3 s budget
  nodefleet.bitcoin.bitcoind_info:
    instances:
      - name: main1
        rpc_port: 8332
        rpc_user: monitor
        rpc_password: "{{ vault_main1_rpc_password }}"
        network: main
        impl: knots
    timeout: 3
  register: status

- name: Fail when an instance is not up
  ansible.builtin.assert:
    that: status.summary.up == status.summary.total
"""

RETURN = r"""
instances:
  description: One entry per instance, sorted by name.
  returned: always
  type: list
  elements: dict
  contains:
    name: {description: Instance name., type: str, sample: main1}
    state:
      description:
        - up, warming_up, down, hung, auth_failed, error or restarting.
        - restarting (added with O(restart_loop_threshold)) is reported instead of the RPC state when
          RV(instances[].restart_loop) is true and supervisord reports the program RUNNING, STARTING or
          BACKOFF; RV(instances[].message) then says how many restarts and what RPC answered.
      type: str
      sample: up
    restart_loop:
      description:
        - True when supervisord restarted the program at least O(restart_loop_threshold) times in the
          log window read (C(instances[].supervisord.restarts)) and it has not been RUNNING for longer
          than O(restart_loop_window) since its last start; false otherwise, also when restarts are not
          counted or supervisord was not queried.
      type: bool
      sample: false
    message: {description: Why the state is not up (empty when up)., type: str, sample: connection refused on 127.0.0.1:8332}
    unsupervised: {description: RPC answers although supervisord does not report the program RUNNING., type: bool, sample: false}
    impl: {description: "Implementation (given, from the conf header, else guessed from the user agent).", type: str, sample: knots}
    network: {description: "Network from the input or the conf, else from RPC C(chain).", type: str, sample: main}
    chain: {description: C(getblockchaininfo.chain)., type: str, sample: main}
    version: {description: C(getnetworkinfo.version)., type: int, sample: 300000}
    subversion: {description: C(getnetworkinfo.subversion)., type: str, sample: /Satoshi:30.0.0/}
    uptime: {description: RPC C(uptime) in seconds., type: int, sample: 3600}
    blocks: {description: Validated blocks., type: int, sample: 900000}
    headers: {description: Known headers., type: int, sample: 900000}
    verificationprogress: {description: Estimated progress 0..1., type: float, sample: 0.9999}
    initialblockdownload: {description: In initial block download., type: bool, sample: false}
    size_on_disk: {description: Block and undo files in bytes., type: int, sample: 700000000000}
    pruned: {description: The node prunes., type: bool, sample: false}
    peers:
      description: Connected peers.
      type: dict
      sample:
        total: 10
        inbound: 2
        outbound: 8
        breakdown: {libre_relay: 1, knots: 2, core_v30_plus: 3, core_pre_v30: 3, other: 1}
    ports: {description: "C({rpc, p2p, onion, zmq})", type: dict, sample: {rpc: 8332, p2p: 8333, onion: 8334, zmq: {}}}
    onion_address: {description: "Onion address, if known.", type: str}
    tor_mode: {description: "tor-only, clearnet or both, if known.", type: str}
    tags: {description: "Network, impl, tor mode, C(pruned), C(ibd).", type: list, elements: str, sample: [main, knots, tor-only]}
    program: {description: supervisord program name., type: str, sample: bitcoind-main1}
    supervisord:
      description: "supervisord's view: C(state) (e.g. RUNNING, or null when the program is unknown),
        C(pid), C(start) (epoch seconds), C(uptime) (seconds since start while running), C(exitstatus),
        C(spawnerr), C(restarts); null when supervisord was not queried or not reachable."
      type: dict
    resources:
      description:
        - "Usage against the kernel limits (module_utils/cgroup.py): C(memory_used_bytes) (the instance's slice
          cgroup when it has limits, else the process's RSS), C(memory_limit_bytes) (the kernel's memory limit,
          null = unlimited), C(cpu_seconds_total) (user + system CPU seconds of the running bitcoind, from 0 at each
          start), C(cpu_quota_percent) (null = unlimited), C(oom_kills_total) (OOM kills in the instance's slice,
          kept across restarts; null without limits and on cgroup v1, where the kernel counts a kill only in the
          victim's own scope, which systemd removes with it), C(datadir_bytes) (disk used by the datadir, like du),
          C(cgroup) (the process's cgroup). Values are null when unknown (not running)."
      type: dict
      sample: {memory_used_bytes: 52428800, memory_limit_bytes: 1073741824, cpu_seconds_total: 12.5,
        cpu_quota_percent: 150, oom_kills_total: 0, datadir_bytes: 1048576,
        cgroup: /nodefleet.slice/nodefleet-main1.slice/run-r1.scope}
    elapsed: {description: Seconds this instance's queries took., type: float}
summary:
  description: Number of instances per state, and C(total).
  returned: always
  type: dict
  sample: {total: 3, up: 2, warming_up: 0, down: 1, hung: 0, auth_failed: 0, error: 0, restarting: 0}
supervisord:
  description: Whether supervisord answered (C(reachable)) and its error otherwise.
  returned: always
  type: dict
  sample: {reachable: true, error: ""}
elapsed:
  description: Wall time of the whole run in seconds.
  returned: always
  type: float
"""

import glob
import os
import re
import threading
import time
import xmlrpc.client

from ansible.module_utils.basic import AnsibleModule
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
    option = f"instances[{index}]"
    check_name(option + ".name", spec["name"])
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


def main():
    instance_options = dict(
        name=dict(type="str", required=True),
        rpc_user=dict(type="str"),
        rpc_password=dict(type="str", no_log=True),
        rpc_host=dict(type="str"),
        rpc_port=dict(type="int"),
        p2p_port=dict(type="int"),
        onion_port=dict(type="int"),
        zmq_ports=dict(type="dict"),
        network=dict(type="str", choices=list(NETWORKS)),
        impl=dict(type="str"),
        tor_mode=dict(type="str", choices=["tor-only", "clearnet", "both"]),
        onion_address=dict(type="str"),
        datadir=dict(type="path"),
        conf_file=dict(type="path"),
        program=dict(type="str"),
    )
    module = AnsibleModule(
        argument_spec=dict(
            instances=dict(type="list", elements="dict", default=[], options=instance_options),
            names=dict(type="list", elements="str"),
            credentials=dict(type="raw", no_log=True),
            rpc_credentials=dict(
                type="list",
                elements="dict",
                default=[],
                options=dict(
                    name=dict(type="str", required=True),
                    user=dict(type="str", required=True),
                    password=dict(type="str", required=True, no_log=True),
                ),
            ),
            timeout=dict(type="float", default=5.0),
            conf_dir=dict(type="path", default="/etc/supervisor/conf.d"),
            datadir_root=dict(type="path", default="/var/lib/bitcoind"),
            supervisor_url=dict(type="str", default="unix:///var/run/supervisor.sock"),
            count_restarts=dict(type="bool", default=True),
            restart_loop_threshold=dict(type="int", default=3),
            restart_loop_window=dict(type="int", default=300),
        ),
        supports_check_mode=True,
    )
    params = dict(module.params)  # a copy: the merged credentials must not reach the invocation
    started = time.monotonic()
    # fail_json is never called inside an except block (ansible-core 2.19 would attach the
    # exception's traceback to the result): keep the message, fail after the block.
    failure = None
    try:
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
    except ValidationError as exc:
        failure = str(exc)
    if failure is not None:
        module.fail_json(msg=failure)

    if params["names"] is not None:
        unknown = sorted(set(params["names"]) - seen)
        if unknown:
            module.fail_json(msg="names: unknown instance(s) " + ", ".join(unknown))
        specs = [spec for spec in specs if spec["name"] in params["names"]]
    targets = [resolve_instance(spec, params) for spec in specs]
    results, supervisor = run_parallel(targets, params)
    instances = assemble(targets, results, supervisor, params)
    add_resources(instances, {target["name"]: target["datadir"] for target in targets})
    module.exit_json(
        changed=False,
        instances=instances,
        summary=summarise(instances),
        supervisord={"reachable": bool(supervisor.get("reachable")), "error": supervisor.get("error", "")},
        elapsed=round(time.monotonic() - started, 3),
    )


if __name__ == "__main__":
    main()
