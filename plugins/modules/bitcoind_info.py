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
    RV(instances[].message)), V(unlisted) (with O(listed): on the host but not in the inventory)."
  - "With O(listed) (the names the inventory has for the host, present and absent), every instance the
    collection manages on the host (a program file or onion drop-in it wrote, see
    M(nodefleet.bitcoin.bitcoind_managed_info)) that O(listed) does not name is queried too and reported
    with state V(unlisted); its RV(instances[].message) says what still runs (program state, pid, the ports
    it listens on - RV(instances[].listening) - and its onion address) and what RPC answered."
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
  listed:
    description:
      - The instance names the inventory has for this host (present and absent). Managed instances on
        the host that it does not name are reported with state V(unlisted). Not given, nothing is
        reported as unlisted.
    type: list
    elements: str
  torrc_dir:
    description: Directory of the collection's tor drop-ins (used with O(listed)).
    type: path
    default: /etc/tor/torrc.d
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
        - up, warming_up, down, hung, auth_failed, error, restarting or unlisted.
        - unlisted (only with O(listed)) is reported instead of the RPC state for an instance the inventory
          no longer lists; RV(instances[].message) says what still runs and what RPC answered.
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
    best_block_time:
      description:
        - Timestamp of the tip block in epoch seconds (C(getblockchaininfo.time)), null when RPC did not answer.
        - The block header's time (set by the miner, may be up to 2 hours ahead of real time), not when
          the node received the block.
      type: int
      sample: 1714777860
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
    listening:
      description: Unlisted instances only - those of its ports some socket listens on now.
      type: list
      elements: int
      returned: when state is unlisted
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
  sample: {total: 3, up: 2, warming_up: 0, down: 1, hung: 0, auth_failed: 0, error: 0, restarting: 0, unlisted: 0}
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

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import NETWORKS, ValidationError, check_name

# The query logic lives in module_utils/instance_info.py (shared with the node-side collector
# of roles/monitoring). The names below stay importable from the module for its callers.
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.instance_info import (  # noqa: F401  # pylint: disable=unused-import
    CHAIN_TO_NETWORK,
    DEFAULT_RPC_PORTS,
    DEFAULTS,
    LOOPING_SUPERVISOR_STATES,
    RESTART_LOG_BYTES,
    STATES,
    TOR_MODES,
    apply_rpc_answers,
    assemble,
    blank_result,
    classify_state,
    collect,
    count_restarts,
    discover_names,
    empty_peers,
    guess_impl,
    is_restart_loop,
    make_tags,
    merge_credentials,
    parse_bitcoin_conf,
    parse_program_conf,
    peer_summary,
    query_instance,
    query_supervisor,
    resolve_instance,
    run_parallel,
    summarise,
    supervisor_view,
    validate,
    validate_instance,
)
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.managed import (
    list_managed,
    mark_unlisted,
    unlisted_names,
)


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
        tor_mode=dict(type="str", choices=list(TOR_MODES)),
        onion_address=dict(type="str"),
        datadir=dict(type="path"),
        conf_file=dict(type="path"),
        program=dict(type="str"),
    )
    module = AnsibleModule(
        argument_spec=dict(
            instances=dict(type="list", elements="dict", default=DEFAULTS["instances"], options=instance_options),
            names=dict(type="list", elements="str"),
            listed=dict(type="list", elements="str"),
            torrc_dir=dict(type="path", default="/etc/tor/torrc.d"),
            credentials=dict(type="raw", no_log=True),
            rpc_credentials=dict(
                type="list",
                elements="dict",
                default=DEFAULTS["rpc_credentials"],
                options=dict(
                    name=dict(type="str", required=True),
                    user=dict(type="str", required=True),
                    password=dict(type="str", required=True, no_log=True),
                ),
            ),
            timeout=dict(type="float", default=DEFAULTS["timeout"]),
            conf_dir=dict(type="path", default=DEFAULTS["conf_dir"]),
            datadir_root=dict(type="path", default=DEFAULTS["datadir_root"]),
            supervisor_url=dict(type="str", default=DEFAULTS["supervisor_url"]),
            count_restarts=dict(type="bool", default=DEFAULTS["count_restarts"]),
            restart_loop_threshold=dict(type="int", default=DEFAULTS["restart_loop_threshold"]),
            restart_loop_window=dict(type="int", default=DEFAULTS["restart_loop_window"]),
        ),
        supports_check_mode=True,
    )
    params = dict(module.params)  # a copy: the merged credentials must not reach the invocation
    started = time.monotonic()
    # fail_json is never called inside an except block (ansible-core 2.19 would attach the
    # exception's traceback to the result): keep the message, fail after the block.
    failure = None
    specs = []
    try:
        for name in params["listed"] or []:
            check_name("listed", name)
        specs = validate(params)
    except ValidationError as exc:
        failure = str(exc)
    if failure is not None:
        module.fail_json(msg=failure)
    unlisted = []
    managed = {}
    if params["listed"] is not None:
        managed = list_managed(params["conf_dir"], params["torrc_dir"], params["datadir_root"])
        unlisted = [
            name
            for name in unlisted_names(managed, params["listed"])
            if params["names"] is None or name in params["names"]
        ]
    known = {spec["name"] for spec in specs}
    result = collect(params, specs + [{"name": name} for name in unlisted if name not in known])
    mark_unlisted(result, unlisted, managed)
    result["summary"] = summarise(result["instances"])
    result["elapsed"] = round(time.monotonic() - started, 3)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
