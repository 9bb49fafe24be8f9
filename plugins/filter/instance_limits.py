# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Validated kernel limits of a host's bitcoind instances (controller side, before any change)."""

from __future__ import annotations

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # pragma: no cover - ansible is always present where filters run
    AnsibleFilterError = ValueError  # type: ignore[misc,assignment]

DOCUMENTATION = r"""
name: instance_limits
short_description: Validate and resolve the memory/CPU/IO limits of a host's bitcoind instances
version_added: 0.2.0
author: nodefleet developers
description:
  - Takes the host's C(bitcoind_instances) and returns, per instance name, its limits (C(memory_max) in
    bytes, C(cpu_quota) in percent of one CPU, C(io_weight)), C(limited) (any limit set), its systemd
    C(slice) and the C(command_prefix) its supervisord program runs bitcoind under
    (C(systemd-run --scope --slice=<slice> ... --uid=<user> --gid=<group> --)); empty for an instance
    without limits, whose command stays exactly the plain bitcoind command.
  - Fails (naming C(bitcoind_instances[<name>].<option>) and the reason) on a malformed limit, and when
    the instance's configured memory use - C(dbcache) (default 450 MiB) + C(maxmempool) from
    C(extra_options) (default 300 MB) + O(overhead_mib) - does not fit under its C(memory_max)
    (Bitcoin Core doc/reduce-memory.md lists these as bitcoind's memory users).
options:
  _input:
    description: The host's instances (C(bitcoind_instances)).
    type: list
    elements: dict
    required: true
  defaults:
    description: Fleet defaults merged under every instance (C(bitcoind_instance_defaults)).
    type: dict
    default: {}
  overhead_mib:
    description: Memory bitcoind uses besides dbcache and the mempool, in MiB.
    type: int
    default: 256
  user:
    description: User bitcoind runs as.
    type: str
    default: bitcoin
  group:
    description: Group bitcoind runs as.
    type: str
    default: bitcoin
  bind_to:
    description: systemd unit of supervisord; the scope of a limited instance is bound to it.
    type: str
    default: supervisor.service
"""

EXAMPLES = r"""
limits: "{{ bitcoind_instances | nodefleet.bitcoin.instance_limits(defaults=bitcoind_instance_defaults) }}"
"""

RETURN = r"""
_value:
  description: Per instance name, C(memory_max), C(cpu_quota), C(io_weight), C(limited), C(slice), C(command_prefix).
  type: dict
"""


def instance_limits(
    instances,
    defaults=None,
    overhead_mib=None,
    user="bitcoin",
    group="bitcoin",
    bind_to="supervisor.service",
):
    # Imported on use: Ansible loads every filter file of the collection in each worker that resolves
    # any of its filters (plugins/filter/README.md), so a module-level import would cost every task.
    from ansible_collections.nodefleet.bitcoin.plugins.module_utils import cgroup
    from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import ValidationError

    if overhead_mib is None:
        overhead_mib = cgroup.DEFAULT_OVERHEAD_MIB
    if not isinstance(instances, list):
        raise AnsibleFilterError("instance_limits: expects the list bitcoind_instances")
    try:
        overhead = int(overhead_mib)
    except (TypeError, ValueError):
        raise AnsibleFilterError(
            "bitcoind_memory_overhead: %r is not a whole number of MiB" % (overhead_mib,)
        ) from None
    if overhead < 0:
        raise AnsibleFilterError("bitcoind_memory_overhead: must be 0 or more MiB")
    out = {}
    for raw in instances:
        if not isinstance(raw, dict) or "name" not in raw:
            raise AnsibleFilterError("bitcoind_instances: every entry must be a dict with a name")
        instance = dict(defaults or {})
        instance.update(raw)
        name = str(instance["name"])
        if instance.get("state", "present") == "absent":
            limits = {"memory_max": None, "cpu_quota": None, "io_weight": None}
        else:
            try:
                limits = cgroup.instance_limits(instance, overhead)
            except ValidationError as exc:
                raise AnsibleFilterError(str(exc)) from None
        limits.pop("needed", None)
        limited = cgroup.has_limits(limits)
        limits.update(
            limited=limited,
            slice=cgroup.slice_name(name) if limited else None,
            command_prefix=cgroup.scope_command(name, [], user, group, bind_to) if limited else [],
        )
        out[name] = limits
    return out


class FilterModule:
    def filters(self):
        return {"instance_limits": instance_limits}
