# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ports the plan would give an instance while an unlisted instance still holds them."""

from __future__ import annotations

DOCUMENTATION = r"""
name: unlisted_port_conflicts
short_description: Ports of the plan still held by instances the inventory no longer lists
version_added: 0.2.0
author: nodefleet developers
description:
  - Takes the port plan of a host (the C(port_plan) filter's output) and the C(unlisted) list of
    M(nodefleet.bitcoin.bitcoind_managed_info), and returns one message per planned port that an
    unlisted instance still holds - it listens on it now, or its program file is still on the host
    (it takes the port back at its next start). Each message names the port, both instances and
    what still runs.
  - An empty list means the plan is safe. The bitcoind role fails the converge before any change
    when the list is not empty.
options:
  _input:
    description: The port plan, instance name -> C({rpc, p2p, onion, zmq}).
    type: dict
    required: true
  unlisted:
    description: The C(unlisted) list M(nodefleet.bitcoin.bitcoind_managed_info) returns.
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
- name: Fail when a planned port is still held by an unlisted instance
  ansible.builtin.assert:
    that: conflicts | length == 0
    fail_msg: "{{ conflicts | join('; ') }}"
  vars:
    conflicts: "{{ bitcoind_port_plan | nodefleet.bitcoin.unlisted_port_conflicts(managed.unlisted) }}"
"""

RETURN = r"""
_value:
  description: One message per conflicting port (empty when there is none).
  type: list
  elements: str
"""


def unlisted_port_conflicts(plan, unlisted):
    # Imported on use: Ansible loads every filter file of the collection in each worker that resolves
    # any of its filters (plugins/filter/README.md), so a module-level import would cost every task.
    from ansible_collections.nodefleet.bitcoin.plugins.module_utils.managed import port_conflicts

    return port_conflicts(plan or {}, unlisted or [])


class FilterModule:
    def filters(self):
        return {"unlisted_port_conflicts": unlisted_port_conflicts}
