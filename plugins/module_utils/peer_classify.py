# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Classify bitcoind peers (``getpeerinfo`` entries) by implementation.

Pure functions, standard library only. The rules are applied in this order and the first
that matches wins; the order matters because the user agents overlap (Knots announces
``/Satoshi:X.Y.Z/Knots:YYYYMMDD/`` and Garbageman is a Knots fork):

1. ``libre_relay``: service bit 29 (``1 << 29``, Libre Relay's advertised bit) is set in
   ``services`` (hex string as Core returns it, or an int), or ``servicesnames`` holds
   ``UNKNOWN[2^29]`` / ``LIBRE_RELAY``, or the user agent (``subver``) names Libre Relay
   or Garbageman (case-insensitive; Garbageman advertises the bit to look like Libre Relay).
   A Core user agent with the bit set is therefore counted as Libre Relay.
2. ``knots``: ``subver`` contains ``Knots`` (case-insensitive).
3. ``core_v30_plus`` / ``core_pre_v30``: ``subver`` contains ``/Satoshi:X.Y[.Z]`` with major
   version ``X >= 30`` / ``X < 30``.
4. ``other``: everything else (btcd's ``/btcwire:.../``, crawlers, empty user agents).
"""

from __future__ import annotations

import re

LIBRE_RELAY_BIT = 1 << 29

CATEGORIES = ("libre_relay", "knots", "core_v30_plus", "core_pre_v30", "other")

_LIBRE_UA_RE = re.compile(r"libre[ _-]?relay|garbageman", re.IGNORECASE)
_KNOTS_UA_RE = re.compile(r"knots", re.IGNORECASE)
_SATOSHI_RE = re.compile(r"/Satoshi:(\d+)\.(\d+)(?:\.(\d+))?")
_LIBRE_SERVICE_NAMES = ("UNKNOWN[2^29]", "UNKNOWN[536870912]", "LIBRE_RELAY")


def parse_services(value) -> int:
    """Return the service flags as an int from Core's 16-digit hex string (or an int)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text.startswith("0x"):
            text = text[2:]
        try:
            return int(text, 16) if text else 0
        except ValueError:
            return 0
    return 0


def core_major(subver: str) -> int | None:
    """Major version from a ``/Satoshi:X.Y.Z/`` user agent, or None."""
    match = _SATOSHI_RE.search(subver or "")
    return int(match.group(1)) if match else None


def has_libre_relay_bit(peer: dict) -> bool:
    if parse_services(peer.get("services")) & LIBRE_RELAY_BIT:
        return True
    names = peer.get("servicesnames") or []
    return any(str(name).upper() in _LIBRE_SERVICE_NAMES for name in names)


def classify_peer(peer: dict) -> str:
    """Return one of CATEGORIES for a ``getpeerinfo`` entry (see module docstring for order)."""
    subver = str(peer.get("subver") or "")
    if has_libre_relay_bit(peer) or _LIBRE_UA_RE.search(subver):
        return "libre_relay"
    if _KNOTS_UA_RE.search(subver):
        return "knots"
    major = core_major(subver)
    if major is not None:
        return "core_v30_plus" if major >= 30 else "core_pre_v30"
    return "other"


def peer_breakdown(peers) -> dict:
    """Count ``getpeerinfo`` entries per category; every category is present (0 when none)."""
    counts = dict.fromkeys(CATEGORIES, 0)
    for peer in peers or []:
        if isinstance(peer, dict):
            counts[classify_peer(peer)] += 1
        else:
            counts["other"] += 1
    return counts
