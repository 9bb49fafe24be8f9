#!/usr/bin/python
# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bitcoind_instance
short_description: Manage one bitcoind instance's datadir and bitcoin.conf
version_added: "0.1.0"
description:
  - Owns one bitcoind instance's datadir and its C(bitcoin.conf) (Bitcoin Core, Bitcoin
    Knots or Garbageman). Does not start or stop processes; supervisord_program does.
  - The config is rendered in a fixed order, so an unchanged input gives a byte-identical
    file and the module reports no change. Network-only options (C(port bind rpcport
    rpcbind addnode connect wallet)) are always written inside the network's section
    (C([main]), C([test]), C([testnet4]), C([signet]), C([regtest])), where Core applies them.
  - Every option is validated before anything is written; contradictions Core would refuse
    at start-up (pruning with txindex, a prune target below 550 MiB, duplicate ports) fail
    the task with the option named.
  - RV(restart_required) is true when the content of C(bitcoin.conf) changed (a mere
    owner or mode fix does not need a restart).
author:
  - nodefleet.bitcoin contributors (@nodefleet)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports what would change (including RV(restart_required)) and writes nothing.
  diff_mode:
    support: full
    details:
      - Before and after of C(bitcoin.conf). It holds only salted rpcauth hashes; passwords
        from O(rpc_users) never appear.
  platform:
    platforms: posix
options:
  name:
    description:
      - Instance name, C(^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$). Used in the default datadir and
        in the config header.
    type: str
    required: true
  state:
    description:
      - V(present) creates the datadir and writes C(bitcoin.conf).
      - V(absent) stops managing the instance. The datadir and everything in it are kept
        unless O(purge=true).
    type: str
    choices: [present, absent]
    default: present
  purge:
    description:
      - With O(state=absent), remove the datadir recursively (chain data included). Refused
        unless the datadir holds a C(bitcoin.conf) this module wrote for this O(name), and
        for a symlinked datadir. Symlinks inside it are removed, never followed.
      - Stop the daemon first; this module does not stop processes.
    type: bool
    default: false
  check_ports:
    description:
      - With O(state=present), fail before anything is written when one of the instance's
        ports (RPC, P2P, onion bind, ZMQ) is held by a process that is not this instance's
        bitcoind (found from C(/proc), LISTEN sockets and their owners; the instance's own
        daemon is recognised by C(-datadir=) on its command line).
      - bitcoind binds its P2P and onion ports only at the end of start-up, possibly long
        after supervisord counted it as started, so without this check a foreign listener
        surfaces as a crash loop much later. The error names the option, the port and the
        holder.
    type: bool
    default: true
  impl:
    description: Which implementation runs the instance (recorded in the config header).
    type: str
    choices: [core, knots, garbageman]
    default: core
  network:
    description: Bitcoin network; written as C(chain=) and selects the config section.
    type: str
    choices: [main, test, testnet4, signet, regtest]
    default: main
  datadir:
    description:
      - Absolute path of the datadir, without C(..) components. Missing parent directories
        are created (owned by the user running the module, mode 0755).
      - Defaults to C(/var/lib/bitcoind/<name>).
      - Refused - the filesystem root, system directories (C(/etc), C(/var/lib), C(/usr) ...),
        whitespace or control characters, and a symlink anywhere in the path or as the
        network directory (the bitcoin user owns the datadir and could point it elsewhere).
        Everything inside the datadir is done through directory descriptors, never by path,
        and a C(bitcoin.conf) that is a symlink or has several hard links is replaced by a
        new file, its target never read or changed.
    type: str
  owner:
    description: User owning the datadir (mode 0750) and C(bitcoin.conf) (mode 0600). Must exist.
    type: str
    default: bitcoin
  group:
    description: Group of the datadir and C(bitcoin.conf). Must exist.
    type: str
    default: bitcoin
  rpc_port:
    description:
      - RPC port, 1024-65535. Defaults to Core's default for the network (8332, 18332,
        48332, 38332, 18443).
    type: int
  p2p_port:
    description:
      - P2P port, 1024-65535. Defaults to Core's default for the network (8333, 18333,
        48333, 38333, 18444).
    type: int
  onion_port:
    description:
      - Local port bitcoind binds for inbound onion connections (C(bind=127.0.0.1:<port>=onion));
        tor maps the onion service's virtual port O(p2p_port) to it. Not used with
        O(tor_mode=clearnet).
      - Defaults to Core's default for the network (8334, 18334, 48334, 38334, 18445).
    type: int
  zmq_ports:
    description:
      - ZMQ publishers, topic -> port, written as C(zmqpub<topic>=tcp://127.0.0.1:<port>).
      - Topics are C(rawblock), C(rawtx), C(hashblock), C(hashtx) and C(sequence).
    type: dict
  rpcauth:
    description:
      - rpcauth values C(user:salt$hash) (with or without C(rpcauth=)), written one line
        each, in the given order, before the lines from O(rpc_users).
      - Salted hashes, not secrets; they are not returned by the module.
    type: list
    elements: str
  rpc_users:
    description:
      - RPC users with their passwords. For each user, an C(rpcauth=) line already in the
        current C(bitcoin.conf) (or in O(rpcauth)) that still verifies against the password
        is kept; when none does, a new line is derived, under the salt of the user's one line
        if there is exactly one, else a fresh salt (same code as
        M(nodefleet.bitcoin.rpcauth_derive)). So re-running with the same password changes
        nothing, an edited line is repaired to the original, and a password change rotates
        the line.
      - Rotation with overlap - list the new password in O(rpc_users[].password) and the old
        one(s) in O(rpc_users[].previous_passwords) - the user gets one C(rpcauth=) line per
        password (current first), so clients still on an old password keep working while they
        are switched. A later run without an old password drops its line. Either way the
        content of C(bitcoin.conf) changes, so RV(restart_required) is true (bitcoind reads
        rpcauth only at start-up).
    type: list
    elements: dict
    suboptions:
      user:
        description:
          - User name, 1-64 printable ASCII characters without C(:), C($), C(#), C(=),
            whitespace or control characters (the same rule applies to the user part of
            O(rpcauth) values).
        type: str
        required: true
      password:
        description:
          - The current password; never logged, returned or written. The collection's own
            RPC use (M(nodefleet.bitcoin.bitcoind_info), the status and heal playbooks) uses
            this one.
        type: str
        required: true
      previous_passwords:
        description:
          - Old passwords that still authenticate during a rotation window, one C(rpcauth=)
            line each (salts kept across runs). Remove them once every client uses
            O(rpc_users[].password). Never logged, returned or written.
          - Each must be non-empty and differ from the current password and from each other.
        type: list
        elements: str
        default: []
        version_added: "0.2.0"
  rpc_bind:
    description:
      - IP addresses the RPC server binds (C(rpcbind=)). A non-loopback address needs a
        non-loopback client network of the same IP version in O(rpc_allow_ip), because
        bitcoind answers RPC only from loopback and the allowed networks.
    type: list
    elements: str
    default: [127.0.0.1]
  rpc_allow_ip:
    description:
      - Client addresses or networks (CIDR or address/netmask) allowed to use RPC (C(rpcallowip=)).
      - A list that covers every address of an IP version (C(0.0.0.0/0), C(0.0.0.0/0.0.0.0),
        C(::/0), or networks that add up to it) is refused unless O(rpc_allow_any=true).
    type: list
    elements: str
    default: [127.0.0.1]
  rpc_allow_any:
    description:
      - Allow an O(rpc_allow_ip) list that covers every address. The task then returns a
        warning; protect the RPC port some other way (firewall).
    type: bool
    default: false
    version_added: "0.2.0"
  tor_mode:
    description:
      - V(tor-only) - P2P only through Tor (C(onlynet=onion), C(dnsseed=0), C(discover=0),
        P2P bound on loopback).
      - V(both) - reachable on the onion and on clearnet. Tor is used only for C(.onion)
        peers (C(onion=), no C(proxy=)); clearnet peers are connected directly. The onion is
        advertised (C(externalip=)) with C(discover=1), because C(externalip=) alone makes
        Core stop advertising the clearnet address its peers see.
      - V(clearnet) - no Tor settings at all.
      - C(listenonion=0) is always written; M(nodefleet.bitcoin.tor_hidden_service) owns the onion key.
    type: str
    choices: [tor-only, clearnet, both]
    default: tor-only
  tor_proxy:
    description: Tor's SOCKS port as C(host:port) (IPv6 in brackets), used for C(proxy=) and C(onion=).
    type: str
    default: 127.0.0.1:9050
  onion_address:
    description:
      - The instance's v3 onion address (56 characters C(a-z2-7) then C(.onion)), written
        as C(externalip=). Required unless O(tor_mode=clearnet).
    type: str
  prune:
    description: Pruning in MiB - 0 off, 1 manual, 550 or more a target. Incompatible with O(txindex).
    type: int
  txindex:
    description: Maintain the full transaction index.
    type: bool
    default: false
  dbcache:
    description: Database cache in MiB (at least 4).
    type: int
  maxconnections:
    description: Maximum number of peer connections.
    type: int
  extra_options:
    description:
      - Further bitcoin.conf options, name -> value (string, integer, boolean as 1/0, or a
        list for a repeated option). Written sorted by name after the managed options.
      - Names are lowercase letters and digits and must not be an option the module manages
        (for example C(port), C(rpcbind), C(prune), C(zmqpub*)); C(rpcuser) and
        C(rpcpassword) are never allowed - credentials go only through rpcauth.
      - Values are single lines without C(#) (it starts a comment in bitcoin.conf).
      - The negated form C(no<name>) of a managed or forbidden option (C(noproxy),
        C(nolisten), C(nodaemon), C(norpcuser) ...) is refused like the option itself, because Core
        reads C(no<name>) as the negation of C(<name>) whatever its value.
      - Network-only options (C(addnode), C(connect), C(wallet)) go into the network's section;
        C(addnode) values are checked as for O(addnode).
    type: dict
  addnode:
    description:
      - Peers to keep a connection to, written as C(addnode=) lines inside the network's
        section (Core ignores them outside it on every network but main).
      - Each is C(host), C(host:port), C([ipv6]) or C([ipv6]:port); the host a DNS name, an
        IPv4 address, an IPv6 address or a v3 C(.onion) address; the port 1-65535. No
        whitespace, C(#) or C(=).
    type: list
    elements: str
    version_added: "0.2.0"
  debug_log:
    description:
      - V(console) - C(printtoconsole=1) and C(nodebuglogfile=1) - Core writes no
        C(debug.log); its log goes to stdout only, which supervisord captures and rotates.
      - V(file) - Core's own C(debug.log) in the network directory (C(printtoconsole=0),
        C(shrinkdebugfile=1)). Core shrinks it only at start-up, so it grows without bound
        between restarts.
    type: str
    choices: [console, file]
    default: console
    version_added: "0.2.0"
seealso:
  - module: nodefleet.bitcoin.rpcauth_derive
  - module: nodefleet.bitcoin.tor_hidden_service
  - module: nodefleet.bitcoin.supervisord_program
"""

EXAMPLES = r"""
- name: A Tor-only mainnet Knots instance
  nodefleet.bitcoin.bitcoind_instance:
    name: knots1
    impl: knots
    network: main
    rpc_port: 8432
    p2p_port: 8433
    onion_port: 8434
    zmq_ports:
      rawblock: 28432
    onion_address: "{{ tor_services.knots1.onion_address }}"
    rpc_users:
      - user: monitor
        password: "{{ vault_monitor_rpc_password }}"
    dbcache: 2048
  register: knots1

- name: A pruned signet node on clearnet with an extra option
  nodefleet.bitcoin.bitcoind_instance:
    name: signet1
    network: signet
    tor_mode: clearnet
    prune: 550
    addnode: [203.0.113.5, "signet-peer.example.org:38333"]
    extra_options:
      blocksonly: true

- name: Stop managing an instance but keep its chain data
  nodefleet.bitcoin.bitcoind_instance:
    name: old1
    state: absent

- name: Remove an instance and its datadir
  nodefleet.bitcoin.bitcoind_instance:
    name: old2
    state: absent
    purge: true
"""

RETURN = r"""
conf_options:
  description:
    - Names of the settings Core takes from the rendered C(bitcoin.conf) for O(network) (negations
      as their base name), sorted; no values. V(state=present) only.
  returned: when state is present
  type: list
  elements: str
  sample: [bind, chain, listen, rpcauth, rpcport, server]
restart_required:
  description: True when the content of bitcoin.conf changed (or would, in check mode).
  returned: always
  type: bool
conf_file:
  description: Path of the instance's bitcoin.conf.
  returned: always
  type: str
  sample: /var/lib/bitcoind/main1/bitcoin.conf
datadir:
  description: The instance's datadir.
  returned: always
  type: str
  sample: /var/lib/bitcoind/main1
addnode:
  description: The O(addnode) peers written into the network's section.
  returned: when O(state=present)
  type: list
  elements: str
  sample: ["203.0.113.5:8333", "aaaqeayeaudaocajbifqydiob4ibceqtcqkrmfyydenbwha5dyp3kead.onion"]
network_dir:
  description: Where bitcoind keeps the network's data (C(.lock), C(debug.log), C(blocks/)).
  returned: always
  type: str
  sample: /var/lib/bitcoind/test1/testnet3
ports:
  description: The ports the instance uses; C(onion) is null with O(tor_mode=clearnet).
  returned: when O(state=present)
  type: dict
  sample: {"rpc": 8332, "p2p": 8333, "onion": 8334, "zmq": {"rawblock": 28332}}
purged:
  description: True when the datadir was (or would be, in check mode) removed.
  returned: when O(state=absent)
  type: bool
"""

import errno
import grp
import os
import pwd
import shutil
import stat
import sys

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import bitcoin_conf, safe_fs
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import ValidationError, file_diff
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.ports import foreign_listeners

DIR_MODE = 0o750
CONF_MODE = 0o600
CONF_NAME = "bitcoin.conf"

ARGUMENT_SPEC = {
    "name": {"type": "str", "required": True},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
    "purge": {"type": "bool", "default": False},
    "check_ports": {"type": "bool", "default": True},
    "impl": {"type": "str", "choices": list(bitcoin_conf.IMPLS), "default": "core"},
    "network": {"type": "str", "choices": list(bitcoin_conf.NETWORK_SECTION), "default": "main"},
    "datadir": {"type": "str"},
    "owner": {"type": "str", "default": "bitcoin"},
    "group": {"type": "str", "default": "bitcoin"},
    "rpc_port": {"type": "int"},
    "p2p_port": {"type": "int"},
    "onion_port": {"type": "int"},
    "zmq_ports": {"type": "dict"},
    "rpcauth": {"type": "list", "elements": "str"},
    "rpc_users": {
        "type": "list",
        "elements": "dict",
        "options": {
            "user": {"type": "str", "required": True},
            "password": {"type": "str", "required": True, "no_log": True},
            "previous_passwords": {"type": "list", "elements": "str", "no_log": True, "default": []},
        },
    },
    "rpc_bind": {"type": "list", "elements": "str", "default": ["127.0.0.1"]},
    "rpc_allow_ip": {"type": "list", "elements": "str", "default": ["127.0.0.1"]},
    "tor_mode": {"type": "str", "choices": list(bitcoin_conf.TOR_MODES), "default": "tor-only"},
    "tor_proxy": {"type": "str", "default": "127.0.0.1:9050"},
    "onion_address": {"type": "str"},
    "prune": {"type": "int"},
    "txindex": {"type": "bool", "default": False},
    "dbcache": {"type": "int"},
    "maxconnections": {"type": "int"},
    "extra_options": {"type": "dict"},
    "addnode": {"type": "list", "elements": "str"},
    "debug_log": {"type": "str", "choices": list(bitcoin_conf.DEBUG_LOG_MODES), "default": "console"},
    "rpc_allow_any": {"type": "bool", "default": False},
}


def check_account(option: str, value: str, lookup_name, lookup_id) -> int:
    """The uid/gid of ``value``; ValidationError naming ``option`` when it does not exist here."""
    try:
        if value.isdigit():
            lookup_id(int(value))
            return int(value)
        entry = lookup_name(value)
    except (KeyError, ValueError, OverflowError):
        kind = "user" if option == "owner" else "group"
        raise ValidationError(option, f"{kind} {value!r} does not exist on this host") from None
    return entry.pw_uid if hasattr(entry, "pw_uid") else entry.gr_gid


def account_uid(owner) -> int | None:
    try:
        return int(owner) if str(owner).isdigit() else pwd.getpwnam(owner).pw_uid
    except (KeyError, ValueError):
        return None


def check_ports_free(n: dict) -> None:
    """Raise naming the option when a planned port is held by another process."""
    ports = n["ports"]
    named = {"rpc_port": ports["rpc"], "p2p_port": ports["p2p"]}
    if ports.get("onion") is not None:
        named["onion_port"] = ports["onion"]
    named.update({"zmq_ports.%s" % topic: port for topic, port in sorted(ports["zmq"].items())})
    conflicts = foreign_listeners(named, n["datadir"], owner_uid=account_uid(n["owner"]))
    if conflicts:
        option, port, pid, command = conflicts[0]
        holder = "pid %d: %s" % (pid, command) if pid else command
        raise ValidationError(
            option,
            "port %d is already in use by another process (%s); stop it or move this "
            "instance's ports (port plan) before converging %s" % (port, holder, n["name"]),
        )


def _unsafe(exc: safe_fs.UnsafePath) -> ValidationError:
    return ValidationError("datadir", f"{exc.path} {exc.reason}")


def inspect_datadir(n: dict) -> str:
    """ "missing" or "dir"; refuses a symlink anywhere in the datadir or network dir path.

    Nothing is followed or written (also used in check mode).
    """
    datadir = n["datadir"]
    try:
        kind = safe_fs.inspect_path(datadir)
        if kind not in ("missing", "dir"):
            raise ValidationError("datadir", f"{datadir} exists and is not a directory")
        if kind == "dir" and n["network_dir"] != datadir:
            sub = safe_fs.inspect_path(n["network_dir"])
            if sub not in ("missing", "dir"):
                raise ValidationError("datadir", f"{n['network_dir']} (the network directory) is not a directory")
    except safe_fs.UnsafePath as exc:
        raise _unsafe(exc) from None
    return kind


def read_current(dir_fd: int, n: dict) -> tuple[str | None, os.stat_result | None, bool]:
    """(content, lstat, replace) of bitcoin.conf in the opened datadir; nothing followed.

    ``replace`` is True for a symlink or a file with more than one hard link: such a file is
    never read (it could be another file's content, e.g. a link to /etc/shadow, which would
    land in the diff) nor chowned (fchown would change the other file); it is replaced by a
    new regular file (rename over the name).
    """
    st = safe_fs.lstat_at(dir_fd, CONF_NAME)
    if st is None:
        return None, None, False
    if stat.S_ISLNK(st.st_mode) or (stat.S_ISREG(st.st_mode) and st.st_nlink > 1):
        return None, st, True
    if not stat.S_ISREG(st.st_mode):
        raise ValidationError("datadir", f"{n['conf_file']} exists and is not a regular file; refusing to replace it")
    data = safe_fs.read_at(dir_fd, CONF_NAME, shown=n["conf_file"])
    return (data.decode("utf-8") if data is not None else None), st, False


def _check_network_dir_at(dir_fd: int, n: dict) -> None:
    sub = bitcoin_conf.NETWORK_SUBDIR[n["network"]]
    if not sub:
        return
    st = safe_fs.lstat_at(dir_fd, sub)
    if st is not None and not stat.S_ISDIR(st.st_mode):
        what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
        raise ValidationError("datadir", f"{n['network_dir']} (the network directory) is {what}; refusing it")


def ensure_present(module, n: dict) -> dict:
    datadir, conf_file = n["datadir"], n["conf_file"]
    uid = check_account("owner", n["owner"], pwd.getpwnam, pwd.getpwuid)
    gid = check_account("group", n["group"], grp.getgrnam, grp.getgrgid)
    kind = inspect_datadir(n)
    if module.params["check_ports"]:
        check_ports_free(n)

    current, conf_st, conf_replace, dir_st = None, None, False, None
    if kind == "dir":
        try:
            with safe_fs.opened_dir(datadir) as dir_fd:
                dir_st = os.fstat(dir_fd)
                _check_network_dir_at(dir_fd, n)
                current, conf_st, conf_replace = read_current(dir_fd, n)
        except safe_fs.UnsafePath as exc:
            raise _unsafe(exc) from None

    n = bitcoin_conf.with_rpc_users(n, current)
    content = bitcoin_conf.render(n)
    content_changed = conf_replace or current != content
    dir_changed = safe_fs.attrs_differ(dir_st, uid, gid, DIR_MODE)
    file_attrs_changed = current is not None and safe_fs.attrs_differ(conf_st, uid, gid, CONF_MODE)
    changed = content_changed or dir_changed or file_attrs_changed

    if changed and not module.check_mode:
        parent, base = os.path.split(datadir)
        try:
            # The parent (/var/lib/bitcoind by default) may be created, root-owned 0755; every
            # existing component is opened O_NOFOLLOW, so a symlink anywhere is refused.
            with safe_fs.opened_dir(parent, create=len(parent.strip("/").split("/")), mode=0o755) as parent_fd:
                dir_fd, _created = safe_fs.mkdir_at(parent_fd, base, 0o700, shown=datadir)
                try:
                    safe_fs.set_attrs_fd(dir_fd, uid, gid, DIR_MODE)
                    _check_network_dir_at(dir_fd, n)
                    if content_changed:
                        safe_fs.write_at(dir_fd, CONF_NAME, content, uid=uid, gid=gid, mode=CONF_MODE, shown=conf_file)
                    elif file_attrs_changed:
                        safe_fs.set_attrs_at(dir_fd, CONF_NAME, uid, gid, CONF_MODE, shown=conf_file)
                finally:
                    os.close(dir_fd)
        except safe_fs.UnsafePath as exc:
            raise _unsafe(exc) from None

    result = {
        "changed": changed,
        "restart_required": content_changed,
        "conf_file": conf_file,
        "datadir": datadir,
        "network_dir": n["network_dir"],
        "ports": n["ports"],
        "addnode": n["addnode"],
        # Names of the settings the rendered conf gives Core (no values): what an adopted
        # daemon's previous settings are compared with (bitcoind_adopt).
        "conf_options": sorted(bitcoin_conf.settings(content, n["network"])),
    }
    if module._diff:
        result["diff"] = file_diff(conf_file, current, content)
    return result


def open_child_dir(parent_fd: int, name: str, shown: str) -> int:
    """O_NOFOLLOW|O_DIRECTORY descriptor of ``name`` in ``parent_fd``; UnsafePath for a symlink."""
    try:
        return os.open(name, safe_fs.DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise safe_fs.UnsafePath(shown, "is a symlink or not a directory; refusing to follow it") from None
        raise


def remove_tree_at(parent_fd: int, name: str, expected: os.stat_result) -> None:
    """Remove the directory ``name`` in ``parent_fd`` recursively without following symlinks.

    Relies on shutil.rmtree's fd-based walk (``shutil.rmtree.avoids_symlink_attacks`` is True
    on Linux: every level is opened with O_NOFOLLOW relative to its parent's descriptor and
    checked with samestat, so a directory swapped for a symlink is unlinked, never entered).
    With Python 3.11+ the walk starts at ``parent_fd`` (``dir_fd=``), so no path component
    above the datadir is resolved by name again.
    """
    st = safe_fs.lstat_at(parent_fd, name)
    if st is None or not stat.S_ISDIR(st.st_mode) or (st.st_dev, st.st_ino) != (expected.st_dev, expected.st_ino):
        raise ValidationError("datadir", f"{name} changed while it was being removed; refusing to continue")
    if not shutil.rmtree.avoids_symlink_attacks:
        raise ValidationError("purge", "this platform's shutil.rmtree is not safe against symlink attacks")
    if sys.version_info >= (3, 11):
        shutil.rmtree(name, dir_fd=parent_fd)
    else:  # pragma: no cover - managed hosts run 3.11 (Debian 12)
        shutil.rmtree("/proc/self/fd/%d/%s" % (parent_fd, name))


def ensure_absent(module, n: dict) -> dict:
    datadir, conf_file = n["datadir"], n["conf_file"]
    result = {
        "changed": False,
        "restart_required": False,
        "purged": False,
        "conf_file": conf_file,
        "datadir": datadir,
        "network_dir": n["network_dir"],
    }
    if not n["purge"]:
        return result
    try:
        kind = safe_fs.inspect_path(datadir)
    except safe_fs.UnsafePath as exc:
        raise _unsafe(exc) from None
    if kind == "missing":
        return result
    if kind != "dir":
        raise ValidationError("purge", f"refusing to remove {datadir}: it is not a directory")
    parent, base = os.path.split(datadir)
    try:
        with safe_fs.opened_dir(parent) as parent_fd:
            dir_fd = open_child_dir(parent_fd, base, datadir)
            try:
                dir_st = os.fstat(dir_fd)
                current, _st, is_link = read_current(dir_fd, n)
            finally:
                os.close(dir_fd)
            if is_link or not bitcoin_conf.is_managed(current, n["name"]):
                raise ValidationError(
                    "purge",
                    f"refusing to remove {datadir}: it does not contain a bitcoin.conf written by "
                    f"nodefleet.bitcoin (bitcoind_instance) for instance {n['name']!r}",
                )
            if not module.check_mode:
                remove_tree_at(parent_fd, base, dir_st)
    except safe_fs.UnsafePath as exc:
        raise _unsafe(exc) from None
    result.update(changed=True, purged=True)
    if module._diff:
        result["diff"] = file_diff(conf_file, current, None)
    return result


def run(module) -> dict:
    n = bitcoin_conf.validate(module.params)
    result = ensure_present(module, n) if n["state"] == "present" else ensure_absent(module, n)
    for warning in n.get("warnings", []):
        module.warn(warning)
    return result


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    result, error = None, None
    # fail_json is never called inside an except block: ansible-core would print
    # "An exception occurred during task execution" before the message.
    try:
        result = run(module)
    except ValidationError as exc:
        error = str(exc)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        error = f"datadir: cannot manage {module.params.get('datadir') or 'the datadir'}: {exc}"
    if error is not None:
        module.fail_json(msg=error)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
