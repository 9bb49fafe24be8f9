# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fleet peering: the addnode lines of one host's bitcoind instances, from the inventory alone."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping

from ansible_collections.nodefleet.bitcoin.plugins.filter.port_plan import PortPlanError, plan_ports

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # pragma: no cover - ansible is always present where filters run
    AnsibleFilterError = ValueError  # type: ignore[misc,assignment]

DOCUMENTATION = r"""
name: fleet_peers
short_description: Pick the fleet peers (addnode lines) of a host's bitcoind instances
version_added: 0.2.0
author: nodefleet developers
description:
  - Takes the inventory host names of the fleet (for example C(groups['fleet'])) and returns, for every
    present instance of O(this_host), the list of C(addnode) values that make it peer with the instances
    of the same network on the other hosts of the fleet.
  - Everything comes from the inventory (O(hostvars)), never from facts gathered in the play, so the
    result is the same when some hosts of the fleet are not in the play (AWX job slicing, C(--limit)).
  - Only hosts whose C(bitcoind_fleet_peering) is true take part (this host included); the value comes
    from the host's inventory, else from O(defaults).
  - A peer is a present instance on another host (never this host, so never the instance itself) with
    the same C(network). The implementation does not matter - Core, Knots and Garbageman speak the same
    P2P protocol (the test stand-in does not implement P2P; lines pointing at it are harmless).
  - "Clearnet: when the local instance has C(tor_mode) V(clearnet) or V(both) and the peer listens on
    clearnet (V(clearnet) or V(both)), the line is C(<peer address>:<peer P2P port>); the peer address is
    the peer host's C(bitcoind_peer_address), default its inventory name; an IPv6 address is bracketed."
  - "Onion: only with O(onion=true) (tor must be able to build circuits), when the local instance uses tor
    (V(tor-only) or V(both)), the peer has an onion service (V(tor-only), or V(both) when clearnet was not
    possible) and its address is known - read from the controller's onion key backup
    C(<onion_dir>/<peer host>/<instance>.onion). The line is C(<address>.onion:<peer P2P port>) (the onion
    service maps the P2P port to the peer's onion bind). A peer whose address is not backed up yet is left
    out until a later converge."
  - The peer's ports come from the same C(nodefleet.bitcoin.port_plan) filter on the peer host's
    C(bitcoind_instances) with the peer host's port layout (C(bitcoind_port_base), C(bitcoind_port_slot_size),
    C(bitcoind_port_slots), C(bitcoind_reserved_ports)), so the line is the port the peer really listens on.
  - The order is stable - by host name, then instance name - so an unchanged fleet renders an unchanged
    bitcoin.conf.
  - "A run on part of the fleet is refused: with O(fleet_size) set, the input must hold exactly that many hosts. An
    AWX job slice gets a pared-down inventory (only the slice's hosts), and peering computed from it would drop
    the other hosts' lines and restart their instances. C(--limit) keeps the whole inventory, so a limited run
    passes. The bitcoind role requires O(fleet_size) (C(bitcoind_fleet_size)) when this host peers."
  - A peer host whose inventory cannot be planned (a port collision, a bad value) is left out with a
    warning - its own converge fails on it - so one bad host does not stop the others; a bad inventory
    of O(this_host) fails.
options:
  _input:
    description: Inventory host names of the fleet (hosts not in the play included).
    type: list
    elements: str
    required: true
  hostvars:
    description: The C(hostvars) of the play.
    type: dict
    required: true
  this_host:
    description: Inventory name of the host whose instances get the lines.
    type: str
    required: true
  instances:
    description:
      - This host's instances; default its C(bitcoind_instances) from O(hostvars). The role passes its own
        variable so play or role vars count too.
    type: list
    elements: dict
  onion:
    description: Also peer over onion addresses (only when tor can reach the onion services).
    type: bool
    default: false
  onion_dir:
    description: The controller's onion key backup directory (C(bitcoind_onion_key_backup_dir), expanded).
    type: str
  fleet_size:
    description:
      - How many hosts the fleet has (C(bitcoind_fleet_size)). When the option is given (null included) and this host
        peers, a whole number is required and the input must hold exactly that many hosts. Leave the option out to
        skip the check.
    type: raw
  defaults:
    description:
      - Values used for a host whose inventory does not set them (the bitcoind role's defaults) -
        C(instance_defaults), C(port_base), C(port_slot_size), C(port_slots), C(reserved_ports),
        C(fleet_peering).
    type: dict
"""

EXAMPLES = r"""
- name: Addnode lines of this host's instances
  ansible.builtin.set_fact:
    bitcoind__peers: >-
      {{ groups['fleet'] | nodefleet.bitcoin.fleet_peers(hostvars, inventory_hostname,
         instances=bitcoind_instances, onion=bitcoind_fleet_peering_onion) }}
# demo-node1: core-regtest (both) -> ['demo-node2:20311', 'demo-node3:20011']
"""

RETURN = r"""
_value:
  description: Dict instance name -> list of addnode values, for every present instance of O(this_host).
  type: dict
"""

INSTANCE_KEYS = ("name", "state", "network", "tor_mode", "port_slot", "ports")
CLEARNET_LISTEN = ("clearnet", "both")
USES_TOR = ("tor-only", "both")
ROLE_DEFAULTS = {
    "instance_defaults": {"state": "present", "purge": False, "tor_mode": "tor-only"},
    "port_base": 20000,
    "port_slot_size": 10,
    "port_slots": 1270,
    "reserved_ports": None,
    "fleet_peering": False,
}
HOST_VARS = {
    "instance_defaults": "bitcoind_instance_defaults",
    "port_base": "bitcoind_port_base",
    "port_slot_size": "bitcoind_port_slot_size",
    "port_slots": "bitcoind_port_slots",
    "reserved_ports": "bitcoind_reserved_ports",
    "fleet_peering": "bitcoind_fleet_peering",
}


class FleetPeersError(ValueError):
    """The inventory cannot be turned into peers; the message says what to change."""


def _get(mapping, key, default=None):
    try:
        if key in mapping:
            return mapping[key]
    except TypeError:
        pass
    return default


def _bool(where: str, value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise FleetPeersError(f"{where}: {value!r} is not a boolean")


def _int(where: str, value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise FleetPeersError(f"{where}: {value!r} is not an integer") from None


def format_host_port(host: str, port: int) -> str:
    """``host:port``; an IPv6 literal is bracketed."""
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def host_setting(host: str, hostvars, defaults: dict, key: str):
    return _get(_get(hostvars, host, {}) or {}, HOST_VARS[key], defaults[key])


def host_instances(host: str, hostvars, defaults: dict, instances=None) -> list:
    """The host's present instances, instance defaults merged under each, with their planned ports."""
    raw = instances if instances is not None else _get(_get(hostvars, host, {}) or {}, "bitcoind_instances", [])
    if raw is None:
        raw = []
    if not isinstance(raw, (list, tuple)):
        raise FleetPeersError(f"host {host!r}: bitcoind_instances must be a list, got {type(raw).__name__}")
    inst_defaults = host_setting(host, hostvars, defaults, "instance_defaults") or {}
    if not isinstance(inst_defaults, Mapping):
        raise FleetPeersError(f"host {host!r}: bitcoind_instance_defaults must be a dict")
    merged = []
    for item in raw:
        if not isinstance(item, Mapping):
            raise FleetPeersError(f"host {host!r}: every bitcoind_instances item must be a dict")
        # Only the keys peering needs: never touch rpc_users (vaulted passwords stay unread).
        inst = {key: inst_defaults[key] for key in INSTANCE_KEYS if key in inst_defaults}
        inst.update({key: item[key] for key in INSTANCE_KEYS if key in item})
        merged.append(inst)
    try:
        plan = plan_ports(
            merged,
            base=_int(f"host {host!r}: bitcoind_port_base", host_setting(host, hostvars, defaults, "port_base")),
            slot_size=_int(
                f"host {host!r}: bitcoind_port_slot_size", host_setting(host, hostvars, defaults, "port_slot_size")
            ),
            slots=_int(f"host {host!r}: bitcoind_port_slots", host_setting(host, hostvars, defaults, "port_slots")),
            reserved=host_setting(host, hostvars, defaults, "reserved_ports"),
        )
    except PortPlanError as exc:
        raise FleetPeersError(f"host {host!r}: {exc}") from None
    out = []
    for inst in merged:
        if inst.get("state", "present") == "absent" or not inst.get("network"):
            continue
        out.append(
            {
                "name": inst["name"],
                "network": str(inst["network"]),
                "tor_mode": str(inst.get("tor_mode", "tor-only")),
                "p2p": plan[inst["name"]]["p2p"],
            }
        )
    return out


def read_onion(onion_dir, host: str, name: str):
    """The backed-up onion address of a peer, or None when there is none (yet)."""
    if not onion_dir:
        return None
    path = os.path.join(os.path.expanduser(str(onion_dir)), host, name + ".onion")
    try:
        with open(path, encoding="utf-8") as handle:
            address = handle.read().strip()
    except OSError:
        return None
    if not address.endswith(".onion") or any(ch.isspace() or ch in "#=:[]" for ch in address):
        raise FleetPeersError(f"{path}: {address!r} is not an onion address")
    return address


def peer_line(local: dict, peer: dict, host: str, address: str, onion: bool, onion_dir):
    """The addnode value for one (local, peer) pair, or None when they cannot reach each other."""
    if local["tor_mode"] in CLEARNET_LISTEN and peer["tor_mode"] in CLEARNET_LISTEN:
        return format_host_port(address, peer["p2p"])
    if onion and local["tor_mode"] in USES_TOR and peer["tor_mode"] in USES_TOR:
        onion_address = read_onion(onion_dir, host, peer["name"])
        if onion_address:
            return f"{onion_address}:{peer['p2p']}"
    return None


def _display_warning(message: str) -> None:
    try:
        from ansible.utils.display import Display

        Display().warning(message)
    except ImportError:  # pragma: no cover - ansible is always present where filters run
        pass


#: ``fleet_size`` not given: no fleet size check (callers outside the role).
UNSET = object()


def check_fleet_size(hosts, fleet_size) -> None:
    """Refuse a run whose inventory holds another number of fleet hosts than ``fleet_size``."""
    if isinstance(fleet_size, bool) or not re.match(r"^[0-9]+\Z", str(fleet_size)):
        raise FleetPeersError(f"bitcoind_fleet_size ({fleet_size!r}) must be a whole number of hosts")
    held = len({str(h) for h in hosts})
    if held != int(fleet_size):
        raise FleetPeersError(
            f"bitcoind_fleet_size: this inventory holds {held} hosts of the fleet group, bitcoind_fleet_size says"
            f" {int(fleet_size)}. Fleet peering from part of the fleet (an AWX job slice, a pared-down inventory) would"
            " drop the other hosts' addnode lines and restart their instances: run site.yml unsliced (--limit is"
            f" fine). If the fleet really has {held} hosts now, set bitcoind_fleet_size to {held}."
        )


def select_peers(
    hosts,
    hostvars,
    this_host,
    instances=None,
    onion=False,
    onion_dir=None,
    defaults=None,
    warn=_display_warning,
    fleet_size=UNSET,
) -> dict:
    """Pure selection behind the filter; raises FleetPeersError on a bad inventory of this host
    (a peer host whose inventory cannot be planned is left out with a warning)."""
    settings = dict(ROLE_DEFAULTS)
    settings.update(defaults or {})
    if isinstance(hosts, str) or not isinstance(hosts, (list, tuple)):
        raise FleetPeersError(f"fleet_peers: input must be a list of inventory host names, got {hosts!r}")
    onion = _bool("fleet_peers: onion", onion)
    local = host_instances(this_host, hostvars, settings, instances)
    result = {inst["name"]: [] for inst in local}
    if not _bool(
        f"host {this_host!r}: bitcoind_fleet_peering", host_setting(this_host, hostvars, settings, "fleet_peering")
    ):
        return result
    if fleet_size is None:
        raise FleetPeersError(
            f"bitcoind_fleet_size must be set when bitcoind_fleet_peering is true: the number of hosts of the fleet"
            f" group (this inventory holds {len({str(h) for h in hosts})}), so that a run on part of the fleet is"
            " refused instead of dropping the other hosts' peers"
        )
    if fleet_size is not UNSET:
        check_fleet_size(hosts, fleet_size)
    for host in sorted({str(h) for h in hosts} - {str(this_host)}):
        if not _bool(f"host {host!r}: bitcoind_fleet_peering", host_setting(host, hostvars, settings, "fleet_peering")):
            continue
        address = str(_get(_get(hostvars, host, {}) or {}, "bitcoind_peer_address", None) or host)
        try:
            peers = sorted(host_instances(host, hostvars, settings), key=lambda p: p["name"])
        except FleetPeersError as exc:
            # That host's own converge fails on it; the others keep converging without it.
            warn(f"fleet_peers: leaving out host {host!r}, its inventory cannot be planned: {exc}")
            continue
        for inst in local:
            for peer in peers:
                if peer["network"] != inst["network"]:
                    continue
                line = peer_line(inst, peer, host, address, onion, onion_dir)
                if line and line not in result[inst["name"]]:
                    result[inst["name"]].append(line)
    return result


def fleet_peers(
    hosts, hostvars, this_host, instances=None, onion=False, onion_dir=None, defaults=None, fleet_size=UNSET
):
    """Jinja2 filter wrapper: FleetPeersError -> AnsibleFilterError with the same message.

    ``fleet_size`` given (the role always passes ``bitcoind_fleet_size``, null included) makes it
    required when this host peers; not given at all, the check is skipped.
    """
    try:
        return select_peers(hosts, hostvars, this_host, instances, onion, onion_dir, defaults, fleet_size=fleet_size)
    except FleetPeersError as exc:
        raise AnsibleFilterError(str(exc)) from exc


class FilterModule:
    def filters(self):
        return {"fleet_peers": fleet_peers}
