# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""bitcoin.conf for one bitcoind instance: validate the options, render, parse.

Rules taken from Bitcoin Core (``doc/bitcoin-conf.md``, ``src/common/args.cpp``,
``src/init.cpp``, ``src/httpserver.cpp``):

* network sections are ``[main] [test] [testnet4] [signet] [regtest]``; ``addnode connect
  port bind rpcport rpcbind wallet`` are network-only options: outside the active network's
  section they are ignored (or rejected) on every network but main, so they are always
  rendered inside the section;
* ``prune`` is 0 (off), 1 (manual) or a target >= 550 MiB, and any pruning is incompatible
  with ``txindex``;
* ``rpcbind`` is ignored unless ``rpcallowip`` is also set, and bitcoind answers RPC only
  from loopback and the ``rpcallowip`` networks;
* ``#`` starts a comment anywhere on a line, so a value cannot contain it;
* Core reads the file with ``std::getline`` (lines end only at ``\n``), cuts each line at
  the first ``#``, trims ``" \t\r\n"`` and splits at the first ``=`` (``common/args.cpp``
  ``GetConfigOptions``); a key ``no<name>`` is always the negation of ``<name>``
  (``InterpretOption``);
* for a single-value setting the FIRST value in the config file wins (network section
  before the default section), unlike the command line where the last wins; the chain
  selectors are the exception (last wins) - ``common/settings.cpp`` ``GetSetting``,
  "reverse_precedence";
* ``-externalip`` soft-sets ``-discover=0`` and ``-proxy`` soft-sets ``-discover=0`` too
  (``init.cpp`` ``InitParameterInteraction``); an explicit ``discover=1`` wins over both.

Pure functions, standard library only: this code runs on the managed host.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re

from ansible_collections.nodefleet.bitcoin.plugins.module_utils import rpcauth as rpcauth_utils
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import tor
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import (
    NETWORKS,
    ValidationError,
    check_line_value,
    check_managed_dir,
    check_name,
    check_port,
    check_unique_ports,
    unsafe_char,
)

HEADER = "# Managed by nodefleet.bitcoin (bitcoind_instance); local edits are overwritten."

IMPLS = ("core", "knots", "garbageman")
TOR_MODES = ("tor-only", "clearnet", "both")
DEBUG_LOG_MODES = ("console", "file")
ZMQ_TOPICS = ("rawblock", "rawtx", "hashblock", "hashtx", "sequence")

# network -> (section name, data subdirectory or "" for the datadir itself)
NETWORK_SECTION = {
    "main": "main",
    "test": "test",
    "testnet4": "testnet4",
    "signet": "signet",
    "regtest": "regtest",
}
NETWORK_SUBDIR = {"main": "", "test": "testnet3", "testnet4": "testnet4", "signet": "signet", "regtest": "regtest"}

# network -> (p2p, rpc, onion bind) defaults, as Bitcoin Core's chainparams.
DEFAULT_PORTS = {
    "main": (8333, 8332, 8334),
    "test": (18333, 18332, 18334),
    "testnet4": (48333, 48332, 48334),
    "signet": (38333, 38332, 38334),
    "regtest": (18444, 18443, 18445),
}

# Options Core applies only inside the active network's section (ArgsManager::NETWORK_ONLY).
NETWORK_ONLY_KEYS = frozenset(("addnode", "connect", "port", "bind", "rpcport", "rpcbind", "wallet"))

_MANAGED_BY = "it is managed by bitcoind_instance; use the %s option"
# bitcoin.conf key -> why it cannot be an extra option.
FORBIDDEN_EXTRA_KEYS = {
    "chain": _MANAGED_BY % "network",
    "testnet": _MANAGED_BY % "network",
    "testnet4": _MANAGED_BY % "network",
    "signet": _MANAGED_BY % "network",
    "regtest": _MANAGED_BY % "network",
    "rpcauth": _MANAGED_BY % "rpcauth or rpc_users",
    "rpcuser": "credentials go only through rpcauth/rpc_users (rpcuser/rpcpassword keep a plaintext password)",
    "rpcpassword": "credentials go only through rpcauth/rpc_users (rpcuser/rpcpassword keep a plaintext password)",
    "port": _MANAGED_BY % "p2p_port",
    "rpcport": _MANAGED_BY % "rpc_port",
    "bind": _MANAGED_BY % "p2p_port/onion_port/tor_mode",
    "rpcbind": _MANAGED_BY % "rpc_bind",
    "rpcallowip": _MANAGED_BY % "rpc_allow_ip",
    "proxy": _MANAGED_BY % "tor_proxy",
    "onion": _MANAGED_BY % "tor_proxy",
    "listenonion": _MANAGED_BY % "tor_mode (tor_hidden_service owns the onion key)",
    "onlynet": _MANAGED_BY % "tor_mode",
    "dnsseed": _MANAGED_BY % "tor_mode",
    "discover": _MANAGED_BY % "tor_mode",
    "externalip": _MANAGED_BY % "onion_address",
    "server": "it is always 1 (the RPC server is what the fleet talks to)",
    "listen": "it is always 1",
    "txindex": _MANAGED_BY % "txindex",
    "prune": _MANAGED_BY % "prune",
    "dbcache": _MANAGED_BY % "dbcache",
    "maxconnections": _MANAGED_BY % "maxconnections",
    "datadir": "the datadir is given on the command line by the supervisord program",
    "conf": "the config file is given on the command line by the supervisord program",
    "includeconf": "it would pull unmanaged settings into the instance",
    "daemon": "supervisord runs bitcoind in the foreground",
    "daemonwait": "supervisord runs bitcoind in the foreground",
    "printtoconsole": _MANAGED_BY % "debug_log",
    "debuglogfile": _MANAGED_BY % "debug_log",
    "shrinkdebugfile": _MANAGED_BY % "debug_log",
    "whitebind": "it would listen on addresses outside the managed binds (tor-only must not listen on clearnet)",
}
# \Z, not $: "$" also matches before a trailing newline ("txindex\n" would pass).
EXTRA_KEY_RE = re.compile(r"^[a-z0-9]+\Z")
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?\Z")
_PORT_RE = re.compile(r"^[0-9]{1,5}\Z")

DEFAULTS = {
    "state": "present",
    "purge": False,
    "impl": "core",
    "network": "main",
    "datadir": None,
    "owner": "bitcoin",
    "group": "bitcoin",
    "rpc_port": None,
    "p2p_port": None,
    "onion_port": None,
    "zmq_ports": None,
    "rpcauth": None,
    "rpc_users": None,
    "rpc_bind": ["127.0.0.1"],
    "rpc_allow_ip": ["127.0.0.1"],
    "tor_mode": "tor-only",
    "tor_proxy": "127.0.0.1:9050",
    "onion_address": None,
    "prune": None,
    "txindex": False,
    "dbcache": None,
    "maxconnections": None,
    "extra_options": None,
    "addnode": None,
    "debug_log": "console",
    "rpc_allow_any": False,
}


# --------------------------------------------------------------------------- helpers


def _choice(option: str, value, choices) -> str:
    if value not in choices:
        raise ValidationError(option, f"{value!r} is not one of: {', '.join(choices)}")
    return value


def _int(option: str, value, minimum=None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value.strip())
        else:
            raise ValidationError(option, f"{value!r} is not an integer")
    if minimum is not None and value < minimum:
        raise ValidationError(option, f"{value} is below the minimum {minimum}")
    return value


def _port(option: str, value) -> int:
    return check_port(option, _int(option, value))


def _list(option: str, value) -> list:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise ValidationError(option, "must be a list")
    return list(value)


def network_dir(datadir: str, network: str) -> str:
    """Where bitcoind keeps ``.lock``, ``debug.log``, blocks and chainstate for a network."""
    sub = NETWORK_SUBDIR[network]
    return os.path.join(datadir, sub) if sub else datadir


def _check_ip(option: str, value) -> str:
    if not isinstance(value, str):
        raise ValidationError(option, f"{value!r} is not an IP address")
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise ValidationError(option, f"{value!r} is not an IP address") from None


def _check_allow(option: str, value):
    """An rpcallowip entry: an IP, or a network as CIDR or address/netmask (as Core accepts)."""
    if not isinstance(value, str):
        raise ValidationError(option, f"{value!r} is not an IP address or network")
    text = value.strip()
    try:
        if "/" in text:
            net = ipaddress.ip_network(text, strict=False)
            return net.with_prefixlen, net
        addr = ipaddress.ip_address(text)
        return str(addr), ipaddress.ip_network(addr)
    except ValueError:
        raise ValidationError(option, f"{value!r} is not an IP address or network (CIDR)") from None


def _covers_everything(nets) -> list[str]:
    """The IP versions for which ``nets`` together cover every address ("0.0.0.0/0", "::/0")."""
    full = []
    for version in (4, 6):
        same = [net for net in nets if net.version == version]
        if any(net.prefixlen == 0 for net in ipaddress.collapse_addresses(same)):
            full.append("IPv%d" % version)
    return full


def _check_rpc_network(bind: list, allow: list, allow_any: bool = False) -> tuple[list, list, list]:
    """(binds, allows, warnings). Refuses an allow list covering every address unless ``allow_any``."""
    for option, values in (("rpc_bind", bind), ("rpc_allow_ip", allow)):
        for value in _list(option, values):
            if isinstance(value, str):
                check_line_value(option, value, allow_empty=False)
    binds = [_check_ip("rpc_bind", b) for b in _list("rpc_bind", bind)]
    if not binds:
        raise ValidationError("rpc_bind", "must list at least one address (bitcoind ignores rpcbind otherwise)")
    allows = [_check_allow("rpc_allow_ip", a) for a in _list("rpc_allow_ip", allow)]
    if not allows:
        raise ValidationError(
            "rpc_allow_ip", "must list at least one address or network (bitcoind ignores rpcbind without rpcallowip)"
        )
    warnings = []
    full = _covers_everything([net for _text, net in allows])
    if full and not allow_any:
        raise ValidationError(
            "rpc_allow_ip",
            "%s covers every %s address: anyone who reaches the RPC port may try passwords; list the "
            "client networks, or set rpc_allow_any=true to allow this on purpose"
            % (", ".join(text for text, _net in allows), " and ".join(full)),
        )
    if full:
        warnings.append(
            "rpc_allow_ip: RPC is open to every %s address (rpc_allow_any=true); protect the RPC port "
            "with a firewall" % " and ".join(full)
        )
    remote = [net for _text, net in allows if not net.is_loopback]
    for text in binds:
        addr = ipaddress.ip_address(text)
        if addr.is_loopback:
            continue
        # "::" may accept IPv4 clients too (dual stack); otherwise the client network must be
        # of the bind address's IP version.
        matching = [net for net in remote if (addr.is_unspecified and addr.version == 6) or net.version == addr.version]
        if not matching:
            raise ValidationError(
                "rpc_allow_ip",
                f"rpc_bind {text} is not a loopback address, but rpc_allow_ip lists no non-loopback "
                f"IPv{addr.version} client network: bitcoind answers RPC only from loopback and the "
                "rpc_allow_ip networks, so that bind would expose the port and refuse every remote client; "
                "add the clients' network (e.g. 10.0.0.0/24) to rpc_allow_ip or bind to loopback only",
            )
    return binds, [text for text, _net in allows], warnings


def _check_proxy(value) -> tuple[str, str, int]:
    """``host:port`` of tor's SOCKS port; IPv6 hosts in brackets."""
    if not isinstance(value, str) or not value:
        raise ValidationError("tor_proxy", "must be host:port, e.g. 127.0.0.1:9050")
    check_line_value("tor_proxy", value, allow_empty=False)
    match = re.match(r"^\[([0-9A-Fa-f:.]+)\]:([0-9]{1,5})\Z", value) or re.match(
        r"^([^:\[\]\s]+):([0-9]{1,5})\Z", value
    )
    if not match:
        raise ValidationError("tor_proxy", f"{value!r} is not host:port (IPv6 in brackets), e.g. 127.0.0.1:9050")
    host, port = match.group(1), int(match.group(2))
    if value.startswith("["):
        _check_ip("tor_proxy", host)
    elif not _HOSTNAME_RE.match(host):
        raise ValidationError("tor_proxy", f"{host!r} is not a valid host name or address")
    if not 1 <= port <= 65535:
        raise ValidationError("tor_proxy", f"port {port} is outside 1-65535")
    return value, host, port


def _is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _extra_value(option: str, value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise ValidationError(option, f"{value!r} is not a string, integer or boolean")
    # Written only when bitcoind and parse() both read back exactly this value: no control or
    # line-break character (check_line_value), no leading/trailing blank, no '#'.
    check_line_value(option, value)
    if "#" in value:
        raise ValidationError(option, "the value contains '#', which starts a comment in bitcoin.conf")
    return value


def _check_extra(extra) -> list[tuple[str, list[str]]]:
    """Sorted [(key, [values])] of validated extra options."""
    if extra is None:
        return []
    if not isinstance(extra, dict):
        raise ValidationError("extra_options", "must be a dict of option name -> value")
    out = []
    for key in sorted(extra, key=str):
        # A key with a control character is shown quoted, so the message stays one line.
        option = (
            f"extra_options.{key}" if isinstance(key, str) and unsafe_char(key) is None else f"extra_options.{key!r}"
        )
        if not isinstance(key, str) or not EXTRA_KEY_RE.match(key):
            raise ValidationError(option, "option names must be lowercase letters and digits only (no '-', '.', '=')")
        # Core reads "no<name>" as the negation of <name> (whatever the value: "noX=0" is X=1),
        # so a negated managed or forbidden option is refused like the option itself.
        base = key
        while base.startswith("no"):
            base = base[2:]
        if not base:
            raise ValidationError(option, f"{key!r} is not an option name")
        negated = "" if base == key else f" ({key!r} is the negated form of {base!r}, which Core applies)"
        if base in FORBIDDEN_EXTRA_KEYS:
            raise ValidationError(option, f"{key!r} cannot be set here{negated}: {FORBIDDEN_EXTRA_KEYS[base]}")
        if base.startswith("zmqpub"):
            raise ValidationError(option, f"{key!r} cannot be set here{negated}: " + _MANAGED_BY % "zmq_ports")
        if base == "addnode" and base != key:
            raise ValidationError(option, f"{key!r} cannot be set here{negated}: " + _MANAGED_BY % "addnode")
        raw = extra[key]
        values = raw if isinstance(raw, (list, tuple)) else [raw]
        checked = [_extra_value(option, v) for v in values]
        if key == "addnode":
            checked = [_check_addnode(option, v) for v in checked]
        out.append((key, checked))
    return out


def _check_addnode(option: str, value) -> str:
    """``host``, ``host:port``, ``[ipv6]`` or ``[ipv6]:port``; host a DNS name, IPv4, IPv6 or .onion."""
    if not isinstance(value, str):
        raise ValidationError(option, f"{value!r} is not a string host or host:port")
    check_line_value(option, value, allow_empty=False)
    if any(char.isspace() for char in value) or "#" in value or "=" in value:
        raise ValidationError(option, f"{value!r} must not contain whitespace, '#' or '='")
    port = None
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValidationError(option, f"{value!r} is not [ipv6] or [ipv6]:port")
        port = rest[1:] if rest else None
        try:
            if ipaddress.ip_address(host).version != 6:
                raise ValueError(host)
        except ValueError:
            raise ValidationError(option, f"{host!r} in brackets is not an IPv6 address") from None
    elif value.count(":") > 1:
        try:
            ipaddress.IPv6Address(value)
        except ValueError:
            raise ValidationError(option, f"{value!r} is not an IPv6 address (use [ipv6]:port with a port)") from None
    else:
        host, sep, port_text = value.partition(":")
        port = port_text if sep else None
        if not _HOSTNAME_RE.match(host) or ".." in host:
            raise ValidationError(option, f"{host!r} is not a host name, IPv4 address or .onion address")
        if host.endswith(".onion"):
            tor.check_onion_address(option, host)
    if port is not None and (not _PORT_RE.match(port) or not 1 <= int(port) <= 65535):
        raise ValidationError(option, f"the port in {value!r} is not 1-65535")
    return value


# --------------------------------------------------------------------------- validate


def validate(params: dict) -> dict:
    """Check every option and return the normalised instance description.

    Raises ValidationError(option, reason) on the first problem, before anything is
    written. Missing keys take the module's defaults, so tests can pass partial dicts.
    """
    p = dict(DEFAULTS)
    p.update({k: v for k, v in params.items() if v is not None})

    name = check_name("name", p.get("name"))
    state = _choice("state", p["state"], ("present", "absent"))
    network = _choice("network", p["network"], NETWORKS)
    purge = p["purge"]
    if not isinstance(purge, bool):
        raise ValidationError("purge", "must be a boolean")
    if purge and state != "absent":
        raise ValidationError("purge", "only applies with state=absent")
    datadir = check_managed_dir("datadir", p["datadir"] if p["datadir"] is not None else f"/var/lib/bitcoind/{name}")
    # Linux limits (NAME_MAX 255 bytes a component, PATH_MAX 4096): refuse up front with the
    # option named instead of failing half-way with ENAMETOOLONG.
    if any(len(part.encode("utf-8")) > 255 for part in datadir.split("/")) or len(datadir.encode("utf-8")) > 4000:
        raise ValidationError("datadir", "is too long (at most 255 bytes a path component and 4000 in all)")

    result = {
        "name": name,
        "state": state,
        "purge": purge,
        "network": network,
        "section": NETWORK_SECTION[network],
        "datadir": datadir,
        "conf_file": os.path.join(datadir, "bitcoin.conf"),
        "network_dir": network_dir(datadir, network),
    }
    if state == "absent":
        return result

    impl = _choice("impl", p["impl"], IMPLS)
    tor_mode = _choice("tor_mode", p["tor_mode"], TOR_MODES)
    debug_log = _choice("debug_log", p["debug_log"], DEBUG_LOG_MODES)
    for option in ("owner", "group"):
        value = p[option]
        # Control characters (NUL among them) first: pwd/grp raise ValueError on a NUL.
        if isinstance(value, str) and unsafe_char(value) is not None:
            raise ValidationError(option, f"must not contain the control character {unsafe_char(value)!r}")
        if not isinstance(value, str) or not value or len(value) > 64 or any(c.isspace() or c in ":/" for c in value):
            raise ValidationError(option, f"{value!r} is not a valid user/group name")

    default_p2p, default_rpc, default_onion = DEFAULT_PORTS[network]
    p2p = _port("p2p_port", p["p2p_port"] if p["p2p_port"] is not None else default_p2p)
    rpc = _port("rpc_port", p["rpc_port"] if p["rpc_port"] is not None else default_rpc)
    onion = None
    if tor_mode != "clearnet":
        onion = _port("onion_port", p["onion_port"] if p["onion_port"] is not None else default_onion)
    elif p["onion_port"] is not None:
        _port("onion_port", p["onion_port"])

    zmq_in = p["zmq_ports"] or {}
    if not isinstance(zmq_in, dict):
        raise ValidationError("zmq_ports", "must be a dict of topic -> port")
    zmq = {}
    for topic in sorted(zmq_in, key=str):
        if topic not in ZMQ_TOPICS:
            topics = ", ".join(ZMQ_TOPICS)
            raise ValidationError("zmq_ports", f"unknown topic {topic!r}; topics are: {topics}")
        zmq[topic] = _port(f"zmq_ports.{topic}", zmq_in[topic])

    proxy = host = proxy_port = None
    if tor_mode != "clearnet":
        proxy, host, proxy_port = _check_proxy(p["tor_proxy"])

    # Order matters for the message: the later option is named, the earlier is "also used by".
    named_ports = {}
    if proxy_port is not None and _is_loopback_host(host):
        named_ports["tor_proxy"] = proxy_port
    named_ports.update({"p2p_port": p2p, "rpc_port": rpc, "onion_port": onion})
    named_ports.update({f"zmq_ports.{t}": port for t, port in zmq.items()})
    check_unique_ports(named_ports)

    onion_address = p["onion_address"]
    if onion_address is not None:
        tor.check_onion_address("onion_address", onion_address)
    if tor_mode != "clearnet" and onion_address is None:
        raise ValidationError(
            "onion_address",
            f"is required when tor_mode is {tor_mode} (bitcoind advertises it as externalip); "
            "get it from tor_hidden_service",
        )

    prune = _int("prune", p["prune"])
    if prune is not None:
        if prune < 0:
            raise ValidationError("prune", "cannot be negative (0 is off, 1 is manual pruning, 550+ is a MiB target)")
        if 2 <= prune <= 549:
            raise ValidationError(
                "prune", f"{prune} is not allowed: 0 is off, 1 is manual pruning, a target must be at least 550 MiB"
            )
    txindex = p["txindex"]
    if not isinstance(txindex, bool):
        raise ValidationError("txindex", "must be a boolean")
    if txindex and prune:
        raise ValidationError("prune", f"pruning (prune={prune}) is incompatible with txindex=true in Bitcoin Core")
    dbcache = _int("dbcache", p["dbcache"], minimum=4)
    maxconnections = _int("maxconnections", p["maxconnections"], minimum=0)

    rpc_allow_any = p["rpc_allow_any"]
    if not isinstance(rpc_allow_any, bool):
        raise ValidationError("rpc_allow_any", "must be a boolean")
    rpc_bind, rpc_allow_ip, warnings = _check_rpc_network(p["rpc_bind"], p["rpc_allow_ip"], rpc_allow_any)
    addnode = [_check_addnode(f"addnode[{index}]", value) for index, value in enumerate(_list("addnode", p["addnode"]))]

    rpcauth_values = []
    for index, value in enumerate(_list("rpcauth", p["rpcauth"])):
        rpcauth_values.append(rpcauth_utils.normalise(value, f"rpcauth[{index}]"))

    rpc_users = []
    seen_users = set()
    for index, entry in enumerate(_list("rpc_users", p["rpc_users"])):
        option = f"rpc_users[{index}]"
        if not isinstance(entry, dict):
            raise ValidationError(option, "must be a dict with user and password")
        user = rpcauth_utils.check_user(option + ".user", entry.get("user"))
        password = rpcauth_utils.check_password(option + ".password", entry.get("password"))
        previous = _previous_passwords(option + ".previous_passwords", entry.get("previous_passwords"), password)
        if user in seen_users:
            raise ValidationError(
                option + ".user",
                f"user {user!r} is listed twice; give each user one entry (old passwords of a rotation go "
                "in its previous_passwords)",
            )
        seen_users.add(user)
        rpc_users.append((user, password, previous))

    extra = _check_extra(p["extra_options"])

    result.update(
        {
            "impl": impl,
            "owner": p["owner"],
            "group": p["group"],
            "tor_mode": tor_mode,
            "tor_proxy": proxy,
            "onion_address": onion_address if tor_mode != "clearnet" else None,
            "ports": {"rpc": rpc, "p2p": p2p, "onion": onion, "zmq": zmq},
            "rpc_bind": rpc_bind,
            "rpc_allow_ip": rpc_allow_ip,
            "rpcauth": rpcauth_values,
            "rpc_users": rpc_users,
            "prune": prune,
            "txindex": txindex,
            "dbcache": dbcache,
            "maxconnections": maxconnections,
            "extra_options": extra,
            "addnode": addnode,
            "debug_log": debug_log,
            "warnings": warnings,
        }
    )
    return result


def _previous_passwords(option: str, value, password: str) -> tuple:
    """The old passwords still accepted during a rotation (``rpc_users[i].previous_passwords``).

    A list of non-empty strings, none equal to the current password or to another one. The
    error names the option and the position, never a password.
    """
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise ValidationError(option, "must be a list of passwords")
    seen = [password]
    for index, old in enumerate(value):
        rpcauth_utils.check_password(f"{option}[{index}]", old)
        if old in seen:
            what = "the current password" if old == password else "listed twice"
            raise ValidationError(f"{option}[{index}]", f"is {what}; each password may appear once per user")
        seen.append(old)
    return tuple(value)


def with_rpc_users(normalised: dict, current_text: str | None) -> dict:
    """Resolve ``rpc_users`` into rpcauth values; returns a copy with the full ``rpcauth`` list.

    For each user, a value already in the current bitcoin.conf (or among the ``rpcauth``
    values) that verifies against the password is kept; a new salt is drawn only when none
    does. A user with ``previous_passwords`` (a rotation window) gets one line per password,
    the current one first; an old password no longer listed loses its line. Duplicates are
    dropped, first occurrence wins.
    """
    out = copy.copy(normalised)
    existing = rpcauth_utils.lines_from_conf(current_text) + list(normalised.get("rpcauth", []))
    values = list(normalised.get("rpcauth", []))
    for user, password, previous in normalised.get("rpc_users", []):
        user_values, _changed = rpcauth_utils.keep_or_derive_all(user, [password, *previous], existing)
        values.extend(user_values)
    deduped = []
    for value in values:
        if value not in deduped:
            deduped.append(value)
    out["rpcauth"] = deduped
    return out


# --------------------------------------------------------------------------- render


def render(n: dict) -> str:
    """The bitcoin.conf text for a normalised instance; identical input, identical bytes."""
    lines = [
        HEADER,
        f"# instance={n['name']} impl={n['impl']}",
        f"chain={n['network']}",
        "server=1",
        "listen=1",
    ]
    lines += [f"rpcauth={value}" for value in n["rpcauth"]]
    if n["txindex"]:
        lines.append("txindex=1")
    for key in ("prune", "dbcache", "maxconnections"):
        if n[key] is not None:
            lines.append(f"{key}={n[key]}")
    uses_tor = n["tor_mode"] != "clearnet"
    if n["tor_mode"] == "tor-only":
        # Everything through Tor, only onion peers, no clearnet address learnt or advertised.
        lines += [f"proxy={n['tor_proxy']}", f"onion={n['tor_proxy']}"]
    elif uses_tor:
        # both: Tor only for .onion peers (onion=, no proxy=: proxy= would send every clearnet
        # connection out through Tor exits); clearnet connections go direct.
        lines.append(f"onion={n['tor_proxy']}")
    lines.append("listenonion=0")
    if n["tor_mode"] == "tor-only":
        lines += ["onlynet=onion", "dnsseed=0", "discover=0"]
    elif uses_tor:
        # externalip= soft-sets discover=0, which stops Core advertising the clearnet address
        # its peers see; discover=1 keeps the clearnet address advertised next to the onion.
        lines.append("discover=1")
    if uses_tor:
        lines.append(f"externalip={n['onion_address']}")
    if n.get("debug_log", "console") == "console":
        # Only stdout (supervisord rotates it); no debug.log growing in the datadir.
        lines += ["printtoconsole=1", "nodebuglogfile=1"]
    else:
        lines += ["printtoconsole=0", "shrinkdebugfile=1"]
    ports = n["ports"]
    lines += [f"zmqpub{topic}=tcp://127.0.0.1:{ports['zmq'][topic]}" for topic in sorted(ports["zmq"])]
    section_extra = []
    for key, values in n["extra_options"]:
        target = section_extra if key in NETWORK_ONLY_KEYS else lines
        target += [f"{key}={v}" for v in values]

    lines += ["", f"[{n['section']}]"]
    lines += [f"port={ports['p2p']}", f"rpcport={ports['rpc']}"]
    # tor-only: P2P only on loopback (tor reaches it through the onion bind); else all interfaces.
    p2p_host = "127.0.0.1" if n["tor_mode"] == "tor-only" else "0.0.0.0"  # noqa: S104
    lines.append(f"bind={p2p_host}:{ports['p2p']}")
    if uses_tor:
        lines.append(f"bind=127.0.0.1:{ports['onion']}=onion")
    lines += [f"rpcbind={addr}" for addr in n["rpc_bind"]]
    lines += [f"rpcallowip={addr}" for addr in n["rpc_allow_ip"]]
    lines += [f"addnode={node}" for node in n.get("addnode", [])]
    lines += section_extra
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- parse


# Core trims these around a line, a key and a value (common/args.cpp GetConfigOptions).
CORE_TRIM = " \t\r\n"

# Options Core reads as lists (GetArgs): every value counts. All others are single values.
LIST_KEYS = frozenset(
    (
        "addnode",
        "bind",
        "connect",
        "debug",
        "debugexclude",
        "deprecatedrpc",
        "externalip",
        "includeconf",
        "loglevel",
        "onlynet",
        "rpcallowip",
        "rpcauth",
        "rpcbind",
        "rpcwhitelist",
        "seednode",
        "signetseednode",
        "uacomment",
        "wallet",
        "whitebind",
        "whitelist",
    )
)
# Chain selectors: Core's exception to first-wins in the config file (last wins), top level only.
CHAIN_KEYS = frozenset(("chain", "regtest", "testnet", "testnet4", "signet"))


def _lines(text: str):
    """(line number, raw line, trimmed line without comment) the way Core splits the file."""
    # std::getline: a line ends only at "\n" (not at \r, \v, \f, \x1c, \x85, \u2028 ...).
    for number, raw in enumerate(text.split("\n"), start=1):
        yield number, raw, raw.split("#", 1)[0].strip(CORE_TRIM)


def parse(text: str) -> dict[str, list[tuple[str, str]]]:
    """Parse bitcoin.conf text the way Core reads it: ``{section: [(key, value)]}``.

    The global part is section ``""``. As Core (``GetConfigOptions``): lines end only at
    ``\n``; ``#`` starts a comment anywhere; lines, keys and values are trimmed of
    ``" \t\r\n"`` (nothing else); ``[name]`` starts a section (the name is not trimmed).
    A non-empty line that is neither ``[section]`` nor ``key=value``, or a key starting with
    ``-``, raises ValueError naming the line number, as Core refuses such a file.
    """
    sections: dict[str, list[tuple[str, str]]] = {"": []}
    current = ""
    for number, raw, line in _lines(text):
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections.setdefault(current, [])
            continue
        if line.startswith("-"):
            raise ValueError(f"parse error on line {number}: {raw!r} (options must be given without leading -)")
        key, sep, value = line.partition("=")
        if not sep or not key.strip(CORE_TRIM):
            raise ValueError(f"parse error on line {number}: {raw!r}")
        sections[current].append((key.strip(CORE_TRIM), value.strip(CORE_TRIM)))
    return sections


_NEGATED = object()


def _interpret(key: str, value: str):
    """(name, value or _NEGATED) as Core's InterpretOption/InterpretValue for a config line."""
    if key.startswith("no"):
        # "-nofoo=0" is a (discouraged) double negative: foo=1. Anything else negates foo.
        if value and not _interpret_bool(value):
            return key[2:], "1"
        return key[2:], _NEGATED
    return key, value


def _interpret_bool(value: str) -> bool:
    """Core's InterpretBool: empty is true, otherwise the leading integer (LocaleIndependentAtoi) != 0."""
    if value == "":
        return True
    match = re.match(r"[ \t\n\v\f\r]*([+-]?[0-9]+)", value)
    return bool(match) and int(match.group(1)) != 0


def settings(text: str, network: str = "main") -> dict:
    """The settings Core derives from a bitcoin.conf for ``network``: ``{name: value}``.

    Core's rules (``common/settings.cpp`` GetSetting / GetSettingsList, ``common/args.cpp``):

    * the network's section (``[regtest]`` or ``regtest.`` prefixed keys) is consulted
      before the default section; network-only options (``NETWORK_ONLY_KEYS``) in the
      default section are ignored except on main;
    * a single-value setting takes the FIRST value after the last negation in the first
      section that sets it (config files reverse the command line's last-wins) - except
      the chain selectors (``chain``, ``regtest`` ...), where the last value wins;
    * ``no<name>`` negates ``<name>`` (value ``False``; ``no<name>=0`` is ``"1"``);
    * list settings (``LIST_KEYS``: rpcauth, addnode, bind, rpcallowip ...) are lists: the
      section's values after its last negation, then, unless the section negated it, the
      default section's.

    Raises ValueError for a file Core would refuse (see ``parse``).
    """
    section = NETWORK_SECTION.get(network, network)
    top: dict[str, list] = {}
    net: dict[str, list] = {}
    current = ""
    parse(text)  # raise on a file Core refuses
    for _number, _raw, line in _lines(text):
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            continue
        key, _sep, value = line.partition("=")
        key, value = key.strip(CORE_TRIM), value.strip(CORE_TRIM)
        where = current
        if where == "" and "." in key:
            where, key = key.rsplit(".", 1)
        name, interpreted = _interpret(key, value)
        if where == "":
            top.setdefault(name, []).append(interpreted)
        elif where == section:
            net.setdefault(name, []).append(interpreted)

    def span(values):
        last = max((i for i, v in enumerate(values) if v is _NEGATED), default=-1)
        return values[last + 1 :], last >= 0

    result: dict = {}
    for name in sorted(set(top) | set(net)):
        use_top = network == "main" or name not in NETWORK_ONLY_KEYS
        if name in CHAIN_KEYS:
            values, negated = span(top.get(name, []))
            if values:
                result[name] = values[-1]
            elif negated:
                result[name] = False
            continue
        if name in LIST_KEYS:
            out: list = []
            values, negated = span(net.get(name, []))
            out += values
            seen = bool(net.get(name))
            if not negated and use_top:
                top_values, _top_negated = span(top.get(name, []))
                out += top_values
                seen = seen or bool(top.get(name))
            if seen:
                result[name] = out  # [] when negated
            continue
        for source in (net.get(name, []), top.get(name, []) if use_top else []):
            values, negated = span(source)
            if values:
                result[name] = values[0]
                break
            if negated:
                result[name] = False
                break
    return result


def is_managed(text: str | None, name: str) -> bool:
    """True when ``text`` is a bitcoin.conf this module wrote for instance ``name``."""
    if not text:
        return False
    lines = text.split("\n")  # lines as Core reads them (only "\n" ends a line)
    return len(lines) >= 2 and lines[0] == HEADER and lines[1].startswith(f"# instance={name} impl=")


def network_of(text: str) -> str:
    """The network a bitcoin.conf selects (``chain=``, else ``regtest=1``/``signet=1``/``testnet4=1``/``testnet=1``,
    else main), read with Core's rules (``settings``). Raises ValueError for a file Core would refuse."""
    top = settings(text or "", "main")
    chain = top.get("chain")
    if chain in NETWORK_SUBDIR:
        return chain
    for flag in ("regtest", "signet", "testnet4", "testnet"):
        if top.get(flag) not in (None, False, "0", ""):
            return "test" if flag == "testnet" else flag
    return "main"
