#!/usr/bin/python
# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bitcoind_managed_info
short_description: What nodefleet.bitcoin manages on a host, and which instances the inventory no longer lists
version_added: "0.2.0"
description:
  - Lists, in one execution, the supervisord program files the collection wrote (C(bitcoind-<name>.conf) in
    O(conf_dir) whose first line is the M(nodefleet.bitcoin.supervisord_program) header), the tor onion services
    it configured (C(nodefleet-<name>.conf) drop-ins in O(torrc_dir) with the
    M(nodefleet.bitcoin.tor_hidden_service) header, their C(HiddenServiceDir) and address) and the instance
    datadirs under O(home) (a C(bitcoin.conf) whose first line is C(# instance=<name>)). Files without the
    collection's mark are never listed.
  - An instance with a program file or an onion drop-in that O(listed) does not name is B(unlisted). For each,
    supervisord's program state and pid (one C(getAllProcessInfo) call), the ports of its bitcoin.conf, those it
    listens on now (from C(/proc/net/tcp)), its onion address and datadir are reported, and, with O(warn=true),
    a warning naming it and what still runs.
  - A datadir alone (an instance retired or made absent without purge) is listed in RV(managed.datadirs) but is
    not unlisted.
  - Read-only; check mode runs the same reads. Never returns key material.
author:
  - nodefleet.bitcoin contributors (@nodefleet)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Read-only; check mode runs the same reads.
  diff_mode:
    support: none
    details: Nothing is changed.
  platform:
    platforms: posix
options:
  listed:
    description:
      - The instance names the inventory has for this host (present and absent ones).
    type: list
    elements: str
    required: true
  conf_dir:
    description: supervisord's program directory.
    type: path
    default: /etc/supervisor/conf.d
  torrc_dir:
    description: The directory of the tor drop-ins (M(nodefleet.bitcoin.tor_hidden_service)'s O(torrc_dir)).
    type: path
    default: /etc/tor/torrc.d
  home:
    description: Parent of the instance datadirs (the role's C(bitcoind_home)).
    type: path
    default: /var/lib/bitcoind
  supervisor_url:
    description: supervisord XML-RPC URL; empty string skips supervisord (no program state or pid).
    type: str
    default: unix:///var/run/supervisor.sock
  timeout:
    description: Seconds to wait for supervisord.
    type: float
    default: 5
  warn:
    description: Emit one warning per unlisted instance.
    type: bool
    default: true
seealso:
  - module: nodefleet.bitcoin.bitcoind_info
  - module: nodefleet.bitcoin.supervisord_program
  - module: nodefleet.bitcoin.tor_hidden_service
"""

EXAMPLES = r"""
- name: Report the instances on the host that the inventory no longer lists
  nodefleet.bitcoin.bitcoind_managed_info:
    listed: "{{ bitcoind_instances | map(attribute='name') | list }}"
  register: managed

- name: Fail when an unlisted instance still runs
  ansible.builtin.assert:
    that: managed.unlisted | selectattr('pid') | list | length == 0
"""

RETURN = r"""
managed:
  description: What the collection manages on the host.
  returned: always
  type: dict
  contains:
    programs:
      description: Instance name -> C({path, program, datadir, conf_file}) of each program file.
      type: dict
    onion_services:
      description: Instance name -> C({dropin, service_dir, onion_address}) of each tor drop-in.
      type: dict
    datadirs:
      description: Instance name -> datadir.
      type: dict
unlisted:
  description: One entry per unlisted instance, sorted by name.
  returned: always
  type: list
  elements: dict
  contains:
    name: {description: Instance name., type: str, sample: old1}
    program: {description: supervisord program name., type: str, sample: bitcoind-old1}
    program_file: {description: The program file (null when only the onion drop-in is left)., type: str}
    program_state: {description: supervisord's state of the program (null when unknown)., type: str, sample: RUNNING}
    pid: {description: The program's pid (null when not running)., type: int, sample: 4242}
    ports: {description: "The ports of its bitcoin.conf, C({rpc, p2p, onion, zmq})", type: dict}
    listening: {description: Those of its ports some socket listens on now., type: list, elements: int}
    onion_dropin: {description: The tor drop-in (null when none)., type: str}
    onion_service_dir: {description: The service's HiddenServiceDir (keys)., type: str}
    onion_address: {description: Its onion address when known., type: str}
    datadir: {description: Its datadir (null when it does not exist)., type: str}
    network: {description: Network from its bitcoin.conf., type: str}
    impl: {description: Implementation from its bitcoin.conf header., type: str}
    message: {description: The warning text., type: str}
supervisord:
  description: Whether supervisord answered (C(reachable)) and its error otherwise.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import ValidationError, check_name
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.instance_info import query_supervisor
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.managed import (
    list_managed,
    unlisted_entries,
    unlisted_names,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            listed=dict(type="list", elements="str", required=True),
            conf_dir=dict(type="path", default="/etc/supervisor/conf.d"),
            torrc_dir=dict(type="path", default="/etc/tor/torrc.d"),
            home=dict(type="path", default="/var/lib/bitcoind"),
            supervisor_url=dict(type="str", default="unix:///var/run/supervisor.sock"),
            timeout=dict(type="float", default=5),
            warn=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    params = module.params
    failure = None
    try:
        for name in params["listed"]:
            check_name("listed", name)
    except ValidationError as exc:
        failure = str(exc)
    if failure is not None:
        module.fail_json(msg=failure)
    managed = list_managed(params["conf_dir"], params["torrc_dir"], params["home"])
    supervisor = None
    if params["supervisor_url"] and unlisted_names(managed, params["listed"]):
        supervisor = query_supervisor(params["supervisor_url"], params["timeout"], False)
    unlisted = unlisted_entries(managed, params["listed"], params["home"], supervisor)
    if params["warn"]:
        for entry in unlisted:
            module.warn(entry["message"])
    module.exit_json(
        changed=False,
        managed=managed,
        unlisted=unlisted,
        supervisord={
            "reachable": bool((supervisor or {}).get("reachable")),
            "error": (supervisor or {}).get("error", ""),
        },
    )


if __name__ == "__main__":
    main()
