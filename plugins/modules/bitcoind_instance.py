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
        unless the datadir holds a C(bitcoin.conf) this module wrote for this O(name).
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
        are created (mode 0755).
      - Defaults to C(/var/lib/bitcoind/<name>).
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
    type: list
    elements: dict
    suboptions:
      user:
        description: User name (no C(:), C($), C(#), C(=) or whitespace).
        type: str
        required: true
      password:
        description: Password; never logged, returned or written.
        type: str
        required: true
  rpc_bind:
    description:
      - IP addresses the RPC server binds (C(rpcbind=)). A non-loopback address needs a
        non-loopback client network of the same IP version in O(rpc_allow_ip), because
        bitcoind answers RPC only from loopback and the allowed networks.
    type: list
    elements: str
    default: [127.0.0.1]
  rpc_allow_ip:
    description: Client addresses or networks (CIDR or address/netmask) allowed to use RPC (C(rpcallowip=)).
    type: list
    elements: str
    default: [127.0.0.1]
  tor_mode:
    description:
      - V(tor-only) - P2P only through Tor (C(onlynet=onion), C(dnsseed=0), C(discover=0),
        P2P bound on loopback).
      - V(both) - Tor and clearnet.
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
      - Network-only options (C(addnode), C(connect), C(wallet)) go into the network's section.
    type: dict
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
    extra_options:
      blocksonly: true
      addnode: [203.0.113.5]

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

import grp
import os
import pwd
import shutil

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import bitcoin_conf
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import (
    ValidationError,
    attributes_differ,
    file_diff,
    read_text,
    set_attributes,
    write_file_atomic,
)
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.ports import foreign_listeners

DIR_MODE = "0750"
CONF_MODE = "0600"

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
}


def check_account(option: str, value: str, lookup_name, lookup_id) -> None:
    """Raise ValidationError naming ``option`` when the user/group does not exist here."""
    try:
        if value.isdigit():
            lookup_id(int(value))
        else:
            lookup_name(value)
    except KeyError:
        kind = "user" if option == "owner" else "group"
        raise ValidationError(option, f"{kind} {value!r} does not exist on this host") from None


def plan_present(n: dict, current: str | None, datadir_exists: bool) -> dict:
    """What state=present changes, from the normalised input and the current file.

    Returns {content, content_changed, dir_changed, file_attrs_changed}.
    """
    content = bitcoin_conf.render(n)
    content_changed = current != content
    dir_changed = not datadir_exists or attributes_differ(n["datadir"], n["owner"], n["group"], DIR_MODE)
    file_attrs_changed = current is not None and attributes_differ(n["conf_file"], n["owner"], n["group"], CONF_MODE)
    return {
        "content": content,
        "content_changed": content_changed,
        "dir_changed": dir_changed,
        "file_attrs_changed": file_attrs_changed,
    }


def account_uid(owner) -> int | None:
    try:
        return int(owner) if str(owner).isdigit() else pwd.getpwnam(owner).pw_uid
    except KeyError:
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


def ensure_present(module, n: dict) -> dict:
    datadir, conf_file = n["datadir"], n["conf_file"]
    check_account("owner", n["owner"], pwd.getpwnam, pwd.getpwuid)
    check_account("group", n["group"], grp.getgrnam, grp.getgrgid)
    if os.path.lexists(datadir) and not os.path.isdir(datadir):
        raise ValidationError("datadir", f"{datadir} exists and is not a directory")
    if os.path.isdir(conf_file) or (os.path.islink(conf_file)):
        raise ValidationError("datadir", f"{conf_file} is a directory or a symlink; refusing to replace it")
    if module.params["check_ports"]:
        check_ports_free(n)
    current = read_text(conf_file) if os.path.isdir(datadir) else None
    n = bitcoin_conf.with_rpc_users(n, current)
    plan = plan_present(n, current, os.path.isdir(datadir))
    changed = plan["content_changed"] or plan["dir_changed"] or plan["file_attrs_changed"]

    if changed and not module.check_mode:
        parent = os.path.dirname(datadir)
        if not os.path.isdir(parent):
            os.makedirs(parent, mode=0o755)
        if not os.path.isdir(datadir):
            os.mkdir(datadir, 0o700)
        set_attributes(module, datadir, n["owner"], n["group"], DIR_MODE)
        if plan["content_changed"]:
            write_file_atomic(module, conf_file, plan["content"], n["owner"], n["group"], CONF_MODE)
        else:
            set_attributes(module, conf_file, n["owner"], n["group"], CONF_MODE)

    result = {
        "changed": changed,
        "restart_required": plan["content_changed"],
        "conf_file": conf_file,
        "datadir": datadir,
        "network_dir": n["network_dir"],
        "ports": n["ports"],
    }
    if module._diff:
        result["diff"] = file_diff(conf_file, current, plan["content"])
    return result


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
    if not n["purge"] or not os.path.lexists(datadir):
        return result
    if os.path.islink(datadir) or not os.path.isdir(datadir):
        raise ValidationError("purge", f"refusing to remove {datadir}: it is not a directory (or is a symlink)")
    current = read_text(conf_file) if os.path.isfile(conf_file) else None
    if not bitcoin_conf.is_managed(current, n["name"]):
        raise ValidationError(
            "purge",
            f"refusing to remove {datadir}: it does not contain a bitcoin.conf written by "
            f"nodefleet.bitcoin (bitcoind_instance) for instance {n['name']!r}",
        )
    if not module.check_mode:
        shutil.rmtree(datadir)
    result.update(changed=True, purged=True)
    if module._diff:
        result["diff"] = file_diff(conf_file, current, None)
    return result


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    try:
        n = bitcoin_conf.validate(module.params)
        result = ensure_present(module, n) if n["state"] == "present" else ensure_absent(module, n)
    except ValidationError as exc:
        module.fail_json(msg=str(exc))
    except (OSError, UnicodeDecodeError) as exc:
        module.fail_json(msg=f"datadir: cannot manage {module.params.get('datadir') or 'the datadir'}: {exc}")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
