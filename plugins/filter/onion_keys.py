# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""No onion key live on two hosts: find every onion key or address the inventory would have two
hosts (or two instances) serve, from the inventory and the onion key backups alone."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Mapping

try:
    from ansible.errors import AnsibleFilterError
except ImportError:  # pragma: no cover - ansible is always present where filters run
    AnsibleFilterError = ValueError  # type: ignore[misc,assignment]

# Documentation: onion_conflicts.yml and onion_backup_listing.yml beside this file.

INSTANCE_KEYS = ("name", "state", "tor_mode", "onion_secret_key")


class OnionKeysError(ValueError):
    """The inventory cannot be checked; the message says what to change."""


# --------------------------------------------------------------------------- ed25519 -> address
# Tor's hs_ed25519_secret_key holds the 64-byte *expanded* secret key (clamped scalar | prefix);
# the public key is scalar * B (RFC 8032 arithmetic, extended coordinates).

_P = 2**255 - 19
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def __getattr__(name):
    # tor's key file constants, still importable from here, loaded on first use (see onion_address_of_key).
    if name in ("SECRET_KEY_HEADER", "SECRET_KEY_SIZE"):
        from ansible_collections.nodefleet.bitcoin.plugins.module_utils import tor

        return getattr(tor, name)
    raise AttributeError(name)


def _recover_x(y: int) -> int:
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _SQRT_M1 % _P
    return _P - x if x & 1 else x


_GY = 4 * pow(5, _P - 2, _P) % _P
_GX = _recover_x(_GY)
_G = (_GX, _GY, 1, _GX * _GY % _P)


def _add(a, b):
    p1 = (a[1] - a[0]) * (b[1] - b[0]) % _P
    p2 = (a[1] + a[0]) * (b[1] + b[0]) % _P
    p3 = 2 * a[3] * b[3] * _D % _P
    p4 = 2 * a[2] * b[2] % _P
    e, f, g, h = p2 - p1, p4 - p3, p4 + p3, p2 + p1
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _public_key(scalar: int) -> bytes:
    q, point = (0, 1, 1, 0), _G
    while scalar:
        if scalar & 1:
            q = _add(q, point)
        point = _add(point, point)
        scalar >>= 1
    zinv = pow(q[2], _P - 2, _P)
    x, y = q[0] * zinv % _P, q[1] * zinv % _P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def onion_address_of_key(raw: bytes) -> str:
    """The v3 onion address of an ``hs_ed25519_secret_key`` file's content (96 bytes)."""
    # Imported on use: Ansible loads every filter file of the collection in each worker that resolves
    # any of its filters (plugins/filter/README.md), so a module-level import would cost every task.
    from ansible_collections.nodefleet.bitcoin.plugins.module_utils.tor import SECRET_KEY_HEADER, SECRET_KEY_SIZE

    if len(raw) != SECRET_KEY_SIZE or not raw.startswith(SECRET_KEY_HEADER):
        raise ValueError("not an hs_ed25519_secret_key")
    pubkey = _public_key(int.from_bytes(raw[32:64], "little"))
    checksum = hashlib.sha3_256(b".onion checksum" + pubkey + b"\x03").digest()[:2]
    return base64.b32encode(pubkey + checksum + b"\x03").decode().lower() + ".onion"


def key_fingerprint(text: str) -> str:
    """Fingerprint of a base64 key as the backups and the inventory hold it (whitespace ignored).

    The same on the controller and on a backup host (``tr -d ' \\t\\r\\n' | sha256sum``); never the key.
    """
    return hashlib.sha256("".join(str(text).split()).encode("ascii", "replace")).hexdigest()


def _key_address(text: str):
    try:
        return onion_address_of_key(base64.b64decode("".join(str(text).split()), validate=True))
    except (binascii.Error, ValueError):
        return None  # not a key: bitcoind_instance / tor_hidden_service refuse it with the option named


# --------------------------------------------------------------------------- backups


def read_backup_dir(onion_dir) -> dict:
    """{host: {instance: {"key": fingerprint, "onion": address}}} from a controller backup directory."""
    out: dict = {}
    if not onion_dir:
        return out
    root = os.path.expanduser(str(onion_dir))
    try:
        hosts = sorted(os.listdir(root))
    except OSError:
        return out
    for host in hosts:
        host_dir = os.path.join(root, host)
        if not os.path.isdir(host_dir) or os.path.islink(host_dir):
            continue
        for entry in sorted(os.listdir(host_dir)):
            name, ext = os.path.splitext(entry)
            if ext not in (".b64", ".onion"):
                continue
            try:
                with open(os.path.join(host_dir, entry), encoding="utf-8", errors="replace") as handle:
                    text = handle.read()
            except OSError:
                continue
            slot = out.setdefault(host, {}).setdefault(name, {})
            if ext == ".b64":
                slot["key"] = key_fingerprint(text)
                slot["key_address"] = _key_address(text)
            else:
                slot["onion"] = text.strip()
    return out


def onion_backup_listing(lines) -> dict:
    """Parse a backup host's listing - ``<host>/<instance>.b64<TAB><sha256>`` and
    ``<host>/<instance>.onion<TAB><address>`` lines - into the shape of ``read_backup_dir``."""
    out: dict = {}
    for line in lines or []:
        path, sep, value = str(line).partition("\t")
        host, slash, entry = path.partition("/")
        name, ext = os.path.splitext(entry)
        if not sep or not slash or not name or "/" in entry or ext not in (".b64", ".onion"):
            continue
        slot = out.setdefault(host, {}).setdefault(name, {})
        if ext == ".b64":
            slot["key"] = value.split()[0] if value.split() else ""
        else:
            slot["onion"] = value.strip()
    return out


# --------------------------------------------------------------------------- the check


def _get(mapping, key, default=None):
    try:
        if key in mapping:
            return mapping[key]
    except TypeError:
        pass
    return default


def _served(host: str, hostvars, instances, defaults: dict) -> list[dict]:
    """The host's present, tor-enabled instances with their own onion_secret_key (if any)."""
    vars_ = _get(hostvars, host, {}) or {}
    raw = instances if instances is not None else _get(vars_, "bitcoind_instances", [])
    if raw is None:
        raw = []
    if not isinstance(raw, (list, tuple)):
        raise OnionKeysError(f"host {host!r}: bitcoind_instances must be a list, got {type(raw).__name__}")
    inst_defaults = _get(vars_, "bitcoind_instance_defaults", None)
    if inst_defaults is None:
        inst_defaults = defaults or {}
    if not isinstance(inst_defaults, Mapping):
        raise OnionKeysError(f"host {host!r}: bitcoind_instance_defaults must be a dict")
    out = []
    for item in raw:
        if not isinstance(item, Mapping) or not item.get("name"):
            continue  # the host's own validation names it
        # Only the keys this check needs: rpc_users (vaulted passwords) stay unread.
        inst = {key: inst_defaults[key] for key in INSTANCE_KEYS if key in inst_defaults}
        inst.update({key: item[key] for key in INSTANCE_KEYS if key in item})
        if inst.get("state", "present") != "present" or inst.get("tor_mode", "tor-only") == "clearnet":
            continue
        out.append(inst)
    return out


def find_conflicts(hosts, hostvars, this_host=None, instances=None, onion_dir=None, backups=None, defaults=None):
    """Pure check behind the filter: sorted messages, one per key or address served more than once."""
    if isinstance(hosts, str) or not isinstance(hosts, (list, tuple)):
        raise OnionKeysError(f"onion_conflicts: input must be a list of inventory host names, got {hosts!r}")
    if backups is None:
        backups = read_backup_dir(onion_dir)
    by_key: dict = {}
    by_address: dict = {}
    for host in sorted({str(h) for h in hosts}):
        own = instances if (this_host is not None and host == str(this_host)) else None
        for inst in _served(host, hostvars, own, defaults):
            name = str(inst["name"])
            where = (host, name)
            backup = _get(_get(backups, host, {}) or {}, name, {}) or {}
            secret = inst.get("onion_secret_key")
            if secret:
                fingerprint, address, source = key_fingerprint(secret), _key_address(secret), "onion_secret_key"
            else:
                fingerprint, address, source = backup.get("key"), backup.get("key_address"), "backup"
            addresses = {a for a in (address, None if secret else backup.get("onion")) if a}
            if fingerprint:
                by_key.setdefault(fingerprint, []).append((where, source))
            for addr in addresses:
                by_address.setdefault(addr, []).append((where, source))
    messages = []
    flagged = set()
    for claims in by_key.values():
        if len({w for w, _s in claims}) > 1:
            flagged.add(frozenset(w for w, _s in claims))
            messages.append("the same onion key would be served by " + _describe(claims))
    for address, claims in by_address.items():
        if len({w for w, _s in claims}) > 1 and frozenset(w for w, _s in claims) not in flagged:
            messages.append(f"onion address {address} would be served by " + _describe(claims))
    return sorted(messages)


def _describe(claims) -> str:
    seen = []
    for (host, name), source in sorted(claims):
        origin = "its onion_secret_key" if source == "onion_secret_key" else "its key backup"
        text = f"host {host} instance {name} ({origin})"
        if text not in seen:
            seen.append(text)
    return " and ".join(seen)


def onion_conflicts(hosts, hostvars, this_host=None, instances=None, onion_dir=None, backups=None, defaults=None):
    """Jinja2 filter wrapper: OnionKeysError -> AnsibleFilterError with the same message."""
    try:
        return find_conflicts(hosts, hostvars, this_host, instances, onion_dir, backups, defaults)
    except OnionKeysError as exc:
        raise AnsibleFilterError(str(exc)) from exc


class FilterModule:
    def filters(self):
        return {"onion_conflicts": onion_conflicts, "onion_backup_listing": onion_backup_listing}
