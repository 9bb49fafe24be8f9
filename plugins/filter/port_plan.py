# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Deterministic, stable, conflict-checked port plan for the bitcoind instances of one host."""

from __future__ import annotations

import hashlib

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # pragma: no cover - ansible is always present where filters run
    AnsibleFilterError = ValueError  # type: ignore[misc,assignment]

DOCUMENTATION = r"""
name: port_plan
short_description: Plan the RPC, P2P, onion-bind and ZMQ ports of a host's bitcoind instances
version_added: 0.1.0
author: nodefleet developers
description:
  - Takes the list of bitcoind instances of one host (the role variable C(bitcoind_instances))
    and returns the ports of every instance that is not C(state=absent), keyed by instance name.
  - Each instance owns a slot of O(slot_size) consecutive ports starting at
    O(base) + slot * O(slot_size). Offsets inside a slot are fixed - C(rpc) 0, C(p2p) 1,
    C(onion) (the local onion bind) 2, ZMQ C(rawblock) 3, C(rawtx) 4, C(hashblock) 5,
    C(hashtx) 6, C(sequence) 7; offsets 8 and 9 are spare.
  - The slot is the instance's C(port_slot) when set, else a stable hash of its name - the first
    8 bytes of SHA-256 of the UTF-8 name, read as a big-endian integer, modulo O(slots).
    An instance's ports therefore depend only on its own name, slot and pins, never on the
    other instances, so adding or removing an instance never moves another one.
  - Explicit pins in the instance's C(ports) dict (C(rpc), C(p2p), C(onion), and C(zmq) as a
    dict topic -> port) win over the slot.
  - Fails (before anything is changed) when two instances share a port - from a hash collision,
    an explicit slot or a pin - naming both instances and the port and telling the operator to
    set C(port_slot); when an instance uses a reserved port (tor's 9050/9051 by default); when a
    port is outside 1024-65535; or when an instance name appears twice.
  - Changing O(base), O(slot_size) or O(slots) moves every instance that has no explicit slot and
    pins; choose them once per fleet.
options:
  _input:
    description:
      - The host's instances, each a dict with at least C(name); optional C(state)
        (C(present) or C(absent)), C(port_slot) (int) and C(ports) (dict of pins).
    type: list
    elements: dict
    required: true
  base:
    description: First port of slot 0.
    type: int
    default: 20000
  slot_size:
    description: Ports per slot (at least 8).
    type: int
    default: 10
  slots:
    description:
      - Number of slots a name is hashed into. O(base) + O(slots) * O(slot_size) - 1 must not
        exceed 65535.
      - The default keeps the plan (20000-32699) below Linux's ephemeral port range
        (32768-60999), where a port can be taken by any outgoing connection's local
        end, and the instance then fails to bind it when it restarts.
    type: int
    default: 1270
  reserved:
    description:
      - Ports no instance may use, as a dict port -> what owns it.
      - Defaults to tor's SOCKS (9050) and control (9051) ports.
    type: dict
"""

EXAMPLES = r"""
- name: Plan the ports of this host's instances (runs on the controller)
  ansible.builtin.set_fact:
    bitcoind_port_plan: "{{ bitcoind_instances | nodefleet.bitcoin.port_plan(base=20000) }}"

# bitcoind_instances:
#   - {name: core-main}                      # slot from the hash of "core-main"
#   - {name: knots-signet, port_slot: 7}     # rpc 20070, p2p 20071, onion 20072, zmq 20073-20077
#   - {name: gm-regtest, ports: {p2p: 18444}}  # slot from the hash, P2P pinned
"""

RETURN = r"""
_value:
  description:
    - Dict instance name -> C({slot, rpc, p2p, onion, zmq}) where C(zmq) maps each topic
      (C(rawblock rawtx hashblock hashtx sequence)) to its port. Instances with C(state=absent)
      are left out.
  type: dict
"""

PORT_OFFSETS = {"rpc": 0, "p2p": 1, "onion": 2}
ZMQ_OFFSETS = {"rawblock": 3, "rawtx": 4, "hashblock": 5, "hashtx": 6, "sequence": 7}
MIN_SLOT_SIZE = 8
DEFAULT_RESERVED = {9050: "tor SocksPort", 9051: "tor ControlPort"}


class PortPlanError(ValueError):
    """The inventory cannot be planned; the message says what to change."""


def hashed_slot(name: str, slots: int) -> int:
    """Stable slot of ``name``: first 8 bytes of SHA-256(name) as big-endian int, modulo ``slots``."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % slots


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_port(where: str, value) -> int:
    if not _is_int(value):
        raise PortPlanError(f"{where}: {value!r} is not an integer port")
    if not 1024 <= value <= 65535:
        raise PortPlanError(f"{where}: port {value} is outside 1024-65535")
    return value


def check_layout(base, slot_size, slots) -> None:
    """Validate the slot layout parameters."""
    for label, value in (("base", base), ("slot_size", slot_size), ("slots", slots)):
        if not _is_int(value):
            raise PortPlanError(f"port_plan: {label} must be an integer, got {value!r}")
    if slot_size < MIN_SLOT_SIZE:
        raise PortPlanError(f"port_plan: slot_size must be at least {MIN_SLOT_SIZE}, got {slot_size}")
    if slots < 1:
        raise PortPlanError(f"port_plan: slots must be at least 1, got {slots}")
    if base < 1024:
        raise PortPlanError(f"port_plan: base {base} is below 1024")
    last = base + slots * slot_size - 1
    if last > 65535:
        raise PortPlanError(
            f"port_plan: base {base} + slots {slots} * slot_size {slot_size} ends at port {last}, above 65535"
        )


def instance_slot(instance: dict, slots: int, base: int, slot_size: int) -> int:
    """The instance's explicit ``port_slot`` (validated) or the hash of its name."""
    name = instance["name"]
    slot = instance.get("port_slot")
    if slot is None:
        return hashed_slot(name, slots)
    if not _is_int(slot) or slot < 0:
        raise PortPlanError(f"instance {name!r}: port_slot must be a non-negative integer, got {slot!r}")
    if base + (slot + 1) * slot_size - 1 > 65535:
        raise PortPlanError(
            f"instance {name!r}: port_slot {slot} puts its ports above 65535 (base {base}, slot_size {slot_size})"
        )
    return slot


def instance_ports(instance: dict, slot: int, base: int, slot_size: int) -> dict:
    """Ports of one instance: slot defaults overridden by its pins."""
    name = instance["name"]
    pins = instance.get("ports") or {}
    if not isinstance(pins, dict):
        raise PortPlanError(f"instance {name!r}: ports must be a dict of pins, got {pins!r}")
    unknown = sorted(set(pins) - set(PORT_OFFSETS) - {"zmq"})
    if unknown:
        raise PortPlanError(
            f"instance {name!r}: unknown key(s) in ports: {', '.join(unknown)} (allowed: rpc, p2p, onion, zmq)"
        )
    zmq_pins = pins.get("zmq") or {}
    if not isinstance(zmq_pins, dict):
        raise PortPlanError(f"instance {name!r}: ports.zmq must be a dict topic -> port, got {zmq_pins!r}")
    unknown = sorted(set(zmq_pins) - set(ZMQ_OFFSETS))
    if unknown:
        raise PortPlanError(
            f"instance {name!r}: unknown ZMQ topic(s) in ports.zmq: {', '.join(unknown)} "
            f"(allowed: {', '.join(ZMQ_OFFSETS)})"
        )
    start = base + slot * slot_size
    plan: dict = {"slot": slot}
    for key, offset in PORT_OFFSETS.items():
        pinned = pins.get(key)
        plan[key] = start + offset if pinned is None else _check_port(f"instance {name!r}: ports.{key}", pinned)
    plan["zmq"] = {}
    for topic, offset in ZMQ_OFFSETS.items():
        pinned = zmq_pins.get(topic)
        plan["zmq"][topic] = (
            start + offset if pinned is None else _check_port(f"instance {name!r}: ports.zmq.{topic}", pinned)
        )
    return plan


def port_uses(plan: dict):
    """Yield (label, port) for every port of one instance's plan."""
    for key in PORT_OFFSETS:
        yield key, plan[key]
    for topic, port in plan["zmq"].items():
        yield f"zmq {topic}", port


def check_conflicts(plans: dict, reserved: dict) -> None:
    """Fail on a port used twice (within or across instances) or a reserved port."""
    owners: dict = {}
    for name, plan in plans.items():
        for label, port in port_uses(plan):
            if port in reserved:
                raise PortPlanError(
                    f"instance {name!r}: {label} port {port} is reserved for {reserved[port]}; "
                    "set port_slot or pin another port"
                )
            if port in owners:
                other_name, other_label = owners[port]
                if other_name == name:
                    raise PortPlanError(
                        f"instance {name!r}: port {port} is used for both {other_label} and {label}; pin distinct ports"
                    )
                hint = ""
                if plans[other_name]["slot"] == plan["slot"]:
                    hint = f" (both are in slot {plan['slot']})"
                raise PortPlanError(
                    f"port collision: port {port} is used by instance {other_name!r} ({other_label}) and "
                    f"instance {name!r} ({label}){hint}; "
                    "set port_slot on one of them (or pin its ports) so their ports differ"
                )
            owners[port] = (name, label)


def normalise_reserved(reserved) -> dict:
    if reserved is None:
        return dict(DEFAULT_RESERVED)
    if isinstance(reserved, (list, tuple)):
        reserved = {port: "a reserved service" for port in reserved}
    if not isinstance(reserved, dict):
        raise PortPlanError(f"port_plan: reserved must be a dict port -> owner, got {reserved!r}")
    result = {}
    for port, owner in reserved.items():
        try:
            result[int(port)] = str(owner)
        except (TypeError, ValueError):
            raise PortPlanError(f"port_plan: reserved port {port!r} is not an integer") from None
    return result


def plan_ports(instances, base: int = 20000, slot_size: int = 10, slots: int = 1270, reserved=None) -> dict:
    """Pure planner behind the filter; raises PortPlanError on any problem."""
    check_layout(base, slot_size, slots)
    reserved_ports = normalise_reserved(reserved)
    if not isinstance(instances, (list, tuple)):
        raise PortPlanError(f"port_plan: input must be a list of instance dicts, got {instances!r}")
    plans: dict = {}
    seen: set = set()
    for index, instance in enumerate(instances):
        if not isinstance(instance, dict) or not isinstance(instance.get("name"), str) or not instance["name"]:
            raise PortPlanError(f"port_plan: item {index} must be a dict with a non-empty string 'name'")
        name = instance["name"]
        if name in seen:
            raise PortPlanError(f"port_plan: instance name {name!r} appears more than once")
        seen.add(name)
        if instance.get("state", "present") == "absent":
            continue
        slot = instance_slot(instance, slots, base, slot_size)
        plans[name] = instance_ports(instance, slot, base, slot_size)
    check_conflicts(plans, reserved_ports)
    return plans


def port_plan(instances, base=20000, slot_size=10, slots=1270, reserved=None):
    """Jinja2 filter wrapper: PortPlanError -> AnsibleFilterError with the same message."""
    try:
        return plan_ports(instances, base=base, slot_size=slot_size, slots=slots, reserved=reserved)
    except PortPlanError as exc:
        raise AnsibleFilterError(str(exc)) from exc


class FilterModule:
    def filters(self):
        return {"port_plan": port_plan}
