# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tor onion-service helpers for nodefleet.bitcoin (used by tor_hidden_service).

Pure functions (validate, render, parse) plus small, injectable wrappers around the three
things that touch the running system: ``tor --verify-config``, the SIGHUP reload sent to the
pid in tor's PidFile, and waiting for tor to write an onion service's ``hostname`` file.

Key material rules: functions here take and return raw key bytes, but no message, exception
or return value built here ever contains them (or their base64 / hex form).

Only the Python standard library and ansible.module_utils may be imported here: this code
runs on the managed host.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import hmac
import ipaddress
import os
import re
import signal
import stat
import time

from ansible_collections.nodefleet.bitcoin.plugins.module_utils import safe_fs
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import (
    ValidationError,
    check_managed_dir,
    check_name,
)

# Files tor keeps in a v3 onion service directory.
SECRET_KEY_FILE = "hs_ed25519_secret_key"  # noqa: S105 (a file name)
PUBLIC_KEY_FILE = "hs_ed25519_public_key"
HOSTNAME_FILE = "hostname"
SERVICE_FILES = (SECRET_KEY_FILE, PUBLIC_KEY_FILE, HOSTNAME_FILE)

# tor's on-disk format (src/lib/crypt_ops/crypto_format.c): a 32-byte header, then the
# 64-byte expanded ed25519 secret key.
SECRET_KEY_HEADER = b"== ed25519v1-secret: type0 ==\x00\x00\x00"
SECRET_KEY_SIZE = 96

ONION_RE = re.compile(r"^[a-z2-7]{56}\.onion\Z")

DEFAULT_TORRC_DIR = "/etc/tor/torrc.d"
DEFAULT_SERVICE_ROOT = "/var/lib/tor"
DROPIN_PREFIX = "nodefleet-"
DROPIN_HEADER = "# Managed by nodefleet.bitcoin (tor_hidden_service); local edits are overwritten."

# Characters that would need quoting in a torrc value; refusing them keeps the drop-in simple
# and the parse exact.
_UNSAFE_TORRC_VALUE_RE = re.compile(r"[\s#\"'\\]")


# --------------------------------------------------------------------------- validation


def is_onion_v3(value) -> bool:
    """True for a Tor v3 address that Bitcoin Core accepts (``CNetAddr::SetTor``).

    56 base32 characters decode to pubkey (32 bytes) | checksum (2) | version (1); the
    version must be 3 and the checksum ``SHA3-256(".onion checksum" | pubkey | version)[:2]``.
    Core refuses anything else at start-up ("Cannot resolve -externalip address"), so an
    instance given such an address would never start.
    """
    if not isinstance(value, str) or not ONION_RE.match(value):
        return False
    raw = base64.b32decode(value[: -len(".onion")].upper())
    pubkey, checksum, version = raw[:32], raw[32:34], raw[34:]
    return version == b"\x03" and hashlib.sha3_256(b".onion checksum" + pubkey + version).digest()[:2] == checksum


def check_onion_address(option: str, value: str) -> str:
    """Return ``value`` if it is a v3 onion address Core accepts (see ``is_onion_v3``)."""
    if not isinstance(value, str) or not ONION_RE.match(value):
        raise ValidationError(option, f"{value!r} is not a v3 onion address (56 characters a-z2-7 + '.onion')")
    if not is_onion_v3(value):
        raise ValidationError(
            option,
            f"{value!r} is not a valid v3 onion address: its checksum or version byte is wrong "
            "(Bitcoin Core refuses it at start-up)",
        )
    return value


def check_service_dir(option: str, value: str) -> str:
    """An absolute, '..'-free path that can be written into a torrc unquoted.

    ``common.check_managed_dir``: no control characters (tab, ESC, DEL, any C0), not ``/``,
    ``//`` or a system directory such as ``/etc`` or ``/var/lib`` (the module chowns it to
    the tor user), no whitespace; and none of tor's quoting characters.
    """
    path = check_managed_dir(option, value)
    if _UNSAFE_TORRC_VALUE_RE.search(path):
        raise ValidationError(option, f"{path!r} must not contain whitespace, quotes, '#' or '\\'")
    return path


def check_virtual_port(option: str, value) -> int:
    """A HiddenServicePort virtual port: 1-65535 (onion ports are not privileged)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(option, f"{value!r} is not an integer port")
    if not 1 <= value <= 65535:
        raise ValidationError(option, f"port {value} is outside 1-65535")
    return value


def check_target(option: str, value) -> str:
    """A HiddenServicePort target ``host:port``: an IPv4 literal, ``[IPv6]`` or localhost."""
    if not isinstance(value, str) or not value:
        raise ValidationError(option, "must be a non-empty 'host:port' string")
    match = re.match(r"^(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):([0-9]{1,5})\Z", value)
    if not match:
        raise ValidationError(option, f"{value!r} is not 'host:port' (e.g. 127.0.0.1:8334 or [::1]:8334)")
    host, port = match.group(1), int(match.group(2))
    if host != "localhost":
        literal = host[1:-1] if host.startswith("[") else host
        try:
            address = ipaddress.ip_address(literal)
        except ValueError:
            raise ValidationError(
                option, f"{value!r}: host must be an IP address or localhost (tor does not resolve names here)"
            ) from None
        if address.version == 6 and not host.startswith("["):
            raise ValidationError(option, f"{value!r}: write an IPv6 target as [address]:port")
        if address.version == 4 and host.startswith("["):
            raise ValidationError(option, f"{value!r}: only IPv6 addresses go in brackets")
    if not 1 <= port <= 65535:
        raise ValidationError(option, f"{value!r}: port {port} is outside 1-65535")
    return value


def check_ports(option: str, ports) -> list[tuple[int, str]]:
    """Validate a list of ``{port, target}``; virtual ports must be distinct."""
    if not isinstance(ports, list) or not ports:
        raise ValidationError(option, "at least one {port, target} entry is required for state=present")
    result: list[tuple[int, str]] = []
    seen: dict[int, int] = {}
    for index, entry in enumerate(ports):
        item = f"{option}[{index}]"
        if not isinstance(entry, dict):
            raise ValidationError(item, "must be a dict with keys port and target")
        port = check_virtual_port(item + ".port", entry.get("port"))
        target = check_target(item + ".target", entry.get("target"))
        if port in seen:
            raise ValidationError(item + ".port", f"virtual port {port} is already mapped by {option}[{seen[port]}]")
        seen[port] = index
        result.append((port, target))
    return result


def decode_secret_key(option: str, value: str) -> bytes:
    """Decode and check a base64 ``hs_ed25519_secret_key``; messages never echo the value."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(option, "must be the base64 of an hs_ed25519_secret_key file")
    compact = "".join(value.split())
    try:
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError(option, "is not valid base64 (value not shown)") from None
    if len(raw) != SECRET_KEY_SIZE:
        raise ValidationError(
            option,
            f"decodes to {len(raw)} bytes; an hs_ed25519_secret_key file is {SECRET_KEY_SIZE} bytes (value not shown)",
        )
    if not raw.startswith(SECRET_KEY_HEADER):
        raise ValidationError(
            option, "does not start with the '== ed25519v1-secret: type0 ==' header of a v3 onion key (value not shown)"
        )
    return raw


def keys_equal(a: bytes | None, b: bytes | None) -> bool:
    """Constant-time comparison of two key files (None = no key)."""
    if a is None or b is None:
        return a is b
    return hmac.compare_digest(a, b)


def default_service_dir(name: str) -> str:
    return os.path.join(DEFAULT_SERVICE_ROOT, DROPIN_PREFIX + name)


def dropin_path(torrc_dir: str, name: str) -> str:
    return os.path.join(torrc_dir, f"{DROPIN_PREFIX}{name}.conf")


def normalise_service(spec: dict, prefix: str = "") -> dict:
    """Validate one service spec (module option names) and return a normalised copy.

    ``prefix`` names the service in messages, e.g. ``services[2].``; the single form has none.
    ``secret_key`` comes back decoded as ``secret_key_bytes`` (or None).
    """
    name = check_name(prefix + "name", spec.get("name"))
    state = spec.get("state") or "present"
    if state not in ("present", "absent"):
        raise ValidationError(prefix + "state", f"{state!r} is not one of present, absent")
    service_dir = spec.get("service_dir")
    explicit_dir = service_dir is not None
    service_dir = check_service_dir(prefix + "service_dir", service_dir) if explicit_dir else default_service_dir(name)
    ports: list[tuple[int, str]] = []
    key = None
    if state == "present":
        ports = check_ports(prefix + "ports", spec.get("ports"))
        if spec.get("secret_key") is not None:
            key = decode_secret_key(prefix + "secret_key", spec["secret_key"])
        if spec.get("purge"):
            raise ValidationError(prefix + "purge", "only applies to state=absent")
    else:
        if spec.get("secret_key") is not None:
            raise ValidationError(prefix + "secret_key", "only applies to state=present")
    if spec.get("force_key") and key is None:
        raise ValidationError(prefix + "force_key", "needs secret_key (the key to install)")
    return {
        "name": name,
        "state": state,
        "service_dir": service_dir,
        "explicit_dir": explicit_dir,
        "ports": ports,
        "secret_key_bytes": key,
        "force_key": bool(spec.get("force_key")),
        "purge": bool(spec.get("purge")),
    }


def check_batch(services: list[dict]) -> None:
    """Names and service directories must be unique across one module call."""
    names: dict[str, int] = {}
    dirs: dict[str, int] = {}
    for index, svc in enumerate(services):
        if svc["name"] in names:
            raise ValidationError(
                f"services[{index}].name", f"{svc['name']!r} is already used by services[{names[svc['name']]}]"
            )
        names[svc["name"]] = index
        if svc["state"] == "present":
            if svc["service_dir"] in dirs:
                raise ValidationError(
                    f"services[{index}].service_dir",
                    f"{svc['service_dir']!r} is already used by services[{dirs[svc['service_dir']]}]",
                )
            dirs[svc["service_dir"]] = index


# --------------------------------------------------------------------------- render / parse


def render_dropin(name: str, service_dir: str, ports: list[tuple[int, str]]) -> str:
    """The drop-in for one service; same input, byte-identical output."""
    lines = [
        DROPIN_HEADER,
        f"# service={name}",
        f"HiddenServiceDir {service_dir}",
    ]
    lines.extend(f"HiddenServicePort {port} {target}" for port, target in ports)
    return "\n".join(lines) + "\n"


def parse_dropin(text: str) -> dict:
    """Read HiddenServiceDir and HiddenServicePort lines back from a drop-in.

    Returns ``{"service_dir": str | None, "ports": [(port, target), ...]}``; unknown lines
    and comments are ignored (keywords are case-insensitive in torrc).
    """
    service_dir = None
    ports: list[tuple[int, str]] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split(None, 1)
        keyword = parts[0].lower()
        value = parts[1].strip() if len(parts) > 1 else ""
        if keyword == "hiddenservicedir" and service_dir is None:
            service_dir = value
        elif keyword == "hiddenserviceport":
            fields = value.split()
            if fields and fields[0].isdigit():
                target = fields[1] if len(fields) > 1 else f"127.0.0.1:{fields[0]}"
                ports.append((int(fields[0]), target))
    return {"service_dir": service_dir, "ports": ports}


def parse_includes(torrc_text: str) -> list[str]:
    """The values of ``%include`` lines in a torrc, in order."""
    includes = []
    for raw in torrc_text.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            continue
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[0] == "%include":
            value = parts[1].split("#", 1)[0].strip().strip('"')
            if value:
                includes.append(value)
    return includes


def include_covers(include: str, torrc_dir: str, dropin: str) -> bool:
    """True when one ``%include`` value makes tor read ``dropin`` (a file in ``torrc_dir``).

    tor accepts a directory (every non-dot file in it), a glob, or a file.
    """
    if not include.startswith("/"):
        return False
    include = include.rstrip("/") or "/"
    if include in (torrc_dir.rstrip("/"), dropin):
        return True
    if any(ch in include for ch in "*?["):
        head, tail = os.path.split(include)
        return head == torrc_dir.rstrip("/") and fnmatch.fnmatchcase(os.path.basename(dropin), tail)
    return False


def torrc_includes(torrc_text: str, torrc_dir: str, dropin: str) -> bool:
    return any(include_covers(inc, torrc_dir, dropin) for inc in parse_includes(torrc_text))


def tor_messages(output: str, limit: int = 10) -> str:
    """The [warn]/[err] lines of tor's output without timestamps, joined for an error message."""
    picked = []
    for line in output.splitlines():
        match = re.search(r"\[(warn|err)\]\s*(.*)$", line)
        if match and "running Tor as root" not in match.group(2):
            picked.append(match.group(2).strip())
    if not picked:
        picked = [line.strip() for line in output.splitlines() if line.strip()][-3:]
    return " | ".join(picked[:limit])


# --------------------------------------------------------------------------- service dir
#
# A service directory belongs to the tor user (debian-tor): everything that touches it goes
# through safe_fs (directory descriptors opened O_NOFOLLOW from /, files opened O_NOFOLLOW),
# so a symlink planted in or instead of the directory is refused (safe_fs.UnsafePath), never
# followed. Callers map UnsafePath to a ValidationError naming their option.


def read_bytes(path: str) -> bytes | None:
    """A root-owned or kernel file (``/proc/<pid>/comm``); never used inside a service dir."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def read_secret_key(service_dir: str) -> bytes | None:
    """The key file's bytes, None when missing; ``UnsafePath`` for a symlink on the way."""
    return safe_fs.read_file(os.path.join(service_dir, SECRET_KEY_FILE))


def read_hostname(service_dir: str) -> str | None:
    """The onion address tor wrote, or None when missing or not (yet) a valid address.

    ``UnsafePath`` when the directory or the hostname file is a symlink.
    """
    data = safe_fs.read_file(os.path.join(service_dir, HOSTNAME_FILE))
    if data is None:
        return None
    value = data.decode("ascii", "replace").strip()
    return value if ONION_RE.match(value) else None


def looks_like_service_dir(path: str) -> bool:
    """True for an empty dir or one holding only what tor puts in an onion service dir.

    Listed through a descriptor (``UnsafePath`` for a symlink in the path).
    """
    allowed = set(SERVICE_FILES) | {"authorized_clients", "onion_service_non_anonymous"}
    try:
        fd = safe_fs.open_dir(path)
    except FileNotFoundError:
        return False
    try:
        entries = os.listdir(fd)
    finally:
        os.close(fd)
    return all(entry in allowed for entry in entries)


def _remove_at(parent_fd: int, name: str) -> None:
    """Remove ``name`` (a file, a symlink, or a directory tree) below ``parent_fd``, never following a link."""
    st = os.lstat(name, dir_fd=parent_fd)
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=parent_fd)
        return
    fd = os.open(name, safe_fs.DIR_FLAGS, dir_fd=parent_fd)  # O_NOFOLLOW: a swapped-in link fails
    try:
        for entry in os.listdir(fd):
            _remove_at(fd, entry)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)


def remove_service_dir(path: str) -> bool:
    """Delete a service directory and what is in it through descriptors; False when missing.

    The parent is opened with ``safe_fs.open_dir`` (no symlink anywhere on the way) and the
    directory itself must not be a symlink (``UnsafePath``); nothing outside it is touched.
    """
    parent, name = os.path.split(path.rstrip("/"))
    try:
        parent_fd = safe_fs.open_dir(parent or "/")
    except FileNotFoundError:
        return False
    try:
        st = safe_fs.lstat_at(parent_fd, name)
        if st is None:
            return False
        if stat.S_ISLNK(st.st_mode):
            raise safe_fs.UnsafePath(path, "is a symlink; refusing to delete through it")
        if not stat.S_ISDIR(st.st_mode):
            raise safe_fs.UnsafePath(path, "exists and is not a directory")
        _remove_at(parent_fd, name)
        return True
    finally:
        os.close(parent_fd)


def wait_for_hostname(service_dir: str, timeout: float, clock=time.monotonic, sleep=time.sleep) -> str | None:
    """Poll for a valid ``hostname`` file; the address, or None after ``timeout`` seconds."""
    deadline = clock() + timeout
    while True:
        address = read_hostname(service_dir)
        if address is not None:
            return address
        if clock() >= deadline:
            return None
        sleep(0.1)


# --------------------------------------------------------------------------- running tor


def read_pid(pid_file: str) -> int:
    """The live tor pid from tor's PidFile; ValidationError naming tor_pid_file otherwise."""
    try:
        with open(pid_file, encoding="ascii") as handle:
            text = handle.read().strip()
    except FileNotFoundError:
        raise ValidationError("tor_pid_file", f"{pid_file} does not exist: tor is not running") from None
    except OSError as exc:
        raise ValidationError("tor_pid_file", f"cannot read {pid_file}: {exc.strerror}") from None
    if not text.isdigit() or int(text) <= 1:
        raise ValidationError("tor_pid_file", f"{pid_file} does not hold a process id")
    pid = int(text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise ValidationError(
            "tor_pid_file", f"process {pid} from {pid_file} is not running: tor is not running"
        ) from None
    except PermissionError:
        pass
    comm = read_bytes(f"/proc/{pid}/comm")
    if comm is not None and comm.strip() != b"tor":
        raise ValidationError(
            "tor_pid_file",
            f"process {pid} from {pid_file} is {comm.strip().decode('ascii', 'replace')!r}, not tor (stale pid file?)",
        )
    return pid


def reload_tor(pid_file: str, kill=os.kill) -> int:
    """Send SIGHUP to tor (what ``systemctl reload tor@default`` does); return the pid."""
    pid = read_pid(pid_file)
    try:
        kill(pid, signal.SIGHUP)
    except OSError as exc:
        raise ValidationError("tor_pid_file", f"cannot signal tor (pid {pid}): {exc.strerror}") from None
    return pid


def verify_command(tor_bin: str, torrc_file: str, defaults_torrc: str | None) -> list[str]:
    """argv of the check Debian's tor@default runs before every start and reload."""
    argv = [tor_bin, "--verify-config", "-f", torrc_file]
    if defaults_torrc:
        argv += ["--defaults-torrc", defaults_torrc]
    return argv


def verify_config(run_command, tor_bin: str, torrc_file: str, defaults_torrc: str | None) -> tuple[bool, str]:
    """Run ``tor --verify-config``; ``(ok, tor's warnings/errors)``. ``run_command`` is module.run_command."""
    rc, out, err = run_command(verify_command(tor_bin, torrc_file, defaults_torrc))
    return rc == 0, tor_messages((out or "") + "\n" + (err or ""))


# --------------------------------------------------------------------------- Core's own key
#
# Bitcoin Core with ``listenonion=1`` asks tor (ADD_ONION NEW:ED25519-V3) for a service and
# keeps the key tor returned in ``<network dir>/onion_v3_private_key`` as
# ``ED25519-V3:<base64 of the 64-byte expanded ed25519 secret key>`` (src/torcontrol.cpp).
# tor keeps the same 64 bytes behind a 32-byte header in ``hs_ed25519_secret_key``; the
# public key is the first half of the expanded key (the clamped scalar ``a``, little endian)
# times the ed25519 base point, and ``hostname`` is the v3 address of that public key.

CORE_KEY_PREFIX = "ED25519-V3:"
PUBLIC_KEY_HEADER = b"== ed25519v1-public: type0 ==\x00\x00\x00"

_ED_P = 2**255 - 19
_ED_D = (-121665 * pow(121666, _ED_P - 2, _ED_P)) % _ED_P
_ED_BY = (4 * pow(5, _ED_P - 2, _ED_P)) % _ED_P


def _ed_recover_x(y: int) -> int:
    xx = (y * y - 1) * pow(_ED_D * y * y + 1, _ED_P - 2, _ED_P) % _ED_P
    x = pow(xx, (_ED_P + 3) // 8, _ED_P)
    if (x * x - xx) % _ED_P:
        x = x * pow(2, (_ED_P - 1) // 4, _ED_P) % _ED_P
    return _ED_P - x if x & 1 else x


_ED_BX = _ed_recover_x(_ED_BY)


def _ed_add(p1: tuple, p2: tuple) -> tuple:
    """Point addition in extended coordinates (X, Y, Z, T), a = -1 twisted Edwards."""
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    a = (y1 - x1) * (y2 - x2) % _ED_P
    b = (y1 + x1) * (y2 + x2) % _ED_P
    c = 2 * t1 * t2 * _ED_D % _ED_P
    d = 2 * z1 * z2 % _ED_P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _ED_P, g * h % _ED_P, f * g % _ED_P, e * h % _ED_P)


def ed25519_public_from_scalar(scalar_bytes: bytes) -> bytes:
    """The 32-byte ed25519 public key ``a * B`` for the little-endian scalar ``a`` (32 bytes)."""
    scalar = int.from_bytes(scalar_bytes, "little")
    result = (0, 1, 1, 0)
    addend = (_ED_BX, _ED_BY, 1, _ED_BX * _ED_BY % _ED_P)
    while scalar:
        if scalar & 1:
            result = _ed_add(result, addend)
        addend = _ed_add(addend, addend)
        scalar >>= 1
    x, y, z, _t = result
    zinv = pow(z, _ED_P - 2, _ED_P)
    x, y = x * zinv % _ED_P, y * zinv % _ED_P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def onion_address_from_public_key(public_key: bytes) -> str:
    """The v3 address (``<56 base32>.onion``) of a 32-byte ed25519 public key."""
    version = b"\x03"
    checksum = hashlib.sha3_256(b".onion checksum" + public_key + version).digest()[:2]
    return base64.b32encode(public_key + checksum + version).decode("ascii").lower() + ".onion"


def public_key_from_secret_file(secret_file: bytes) -> bytes:
    """The public key of a 96-byte ``hs_ed25519_secret_key`` file's expanded key."""
    return ed25519_public_from_scalar(secret_file[len(SECRET_KEY_HEADER) : len(SECRET_KEY_HEADER) + 32])


def core_key_to_tor(option: str, text) -> dict:
    """Convert Core's ``onion_v3_private_key`` text into tor's HiddenServiceDir files.

    Returns ``{"hs_ed25519_secret_key": bytes, "hs_ed25519_public_key": bytes, "hostname":
    bytes, "onion_address": str}`` (the file contents tor writes itself: 96, 64 bytes and the
    address with a newline). Anything else fails with a ValidationError naming ``option``
    that never echoes the value.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise ValidationError(option, "is not an ASCII 'ED25519-V3:<base64>' key (value not shown)") from None
    if not isinstance(text, str):
        raise ValidationError(option, "must be the text of Core's onion_v3_private_key file")
    text = text.strip()
    if not text.startswith(CORE_KEY_PREFIX):
        raise ValidationError(
            option, "does not start with 'ED25519-V3:' (Bitcoin Core's onion_v3_private_key format; value not shown)"
        )
    try:
        expanded = base64.b64decode(text[len(CORE_KEY_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError(option, "holds invalid base64 after 'ED25519-V3:' (value not shown)") from None
    if len(expanded) != 64:
        raise ValidationError(
            option, f"decodes to {len(expanded)} bytes; an expanded ed25519 secret key is 64 (value not shown)"
        )
    # An expanded key tor made is clamped: low 3 bits clear, bit 255 clear, bit 254 set.
    if expanded[0] & 7 or expanded[31] & 0xC0 != 0x40:
        raise ValidationError(option, "is not a clamped ed25519 expanded secret key (value not shown)")
    public = ed25519_public_from_scalar(expanded[:32])
    address = onion_address_from_public_key(public)
    return {
        SECRET_KEY_FILE: SECRET_KEY_HEADER + expanded,
        PUBLIC_KEY_FILE: PUBLIC_KEY_HEADER + public,
        HOSTNAME_FILE: (address + "\n").encode("ascii"),
        "onion_address": address,
    }
