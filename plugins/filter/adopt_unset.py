# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""adopt_unset: the previous settings of an adopted daemon that the fleet's bitcoin.conf does not set."""

from __future__ import annotations

DOCUMENTATION = r"""
name: adopt_unset
short_description: Previous settings of an adopted bitcoind that the new bitcoin.conf does not set
version_added: "0.2.0"
description:
  - Takes RV(nodefleet.bitcoin.bitcoind_adopt#module:previous_settings) and the
    RV(nodefleet.bitcoin.bitcoind_instance#module:conf_options) of the instance's new C(bitcoin.conf) and
    returns the previous settings (name, value with secrets hidden, source) that the new conf neither sets nor
    negates - what the role reports so nothing is dropped silently.
options:
  _input:
    description: The previous settings, C([{name, value, source}]).
    type: list
    elements: dict
    required: true
  conf_options:
    description: Names of the settings the new conf sets.
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: Report what the inventory does not carry over
  ansible.builtin.debug:
    msg: "{{ adopted.previous_settings | nodefleet.bitcoin.adopt_unset(conf.conf_options) }}"
"""

RETURN = r"""
_value:
  description: The previous settings the new conf does not set, in input order.
  type: list
  elements: dict
"""


def adopt_unset(previous, conf_options):
    # Imported on use: Ansible loads every filter file of the collection in each worker that resolves
    # any of its filters (plugins/filter/README.md), so a module-level import would cost every task.
    from ansible_collections.nodefleet.bitcoin.plugins.module_utils.adopt import unset_settings

    return unset_settings(list(previous or []), list(conf_options or []))


class FilterModule:
    def filters(self):
        return {"adopt_unset": adopt_unset}
