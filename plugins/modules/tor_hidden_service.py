#!/usr/bin/python
# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: tor_hidden_service
short_description: Manage Tor v3 onion services with stable addresses through torrc drop-ins
version_added: 0.1.0
description:
  - Manages one Tor v3 onion service per name (single form) or several in one call (batch form, O(services)).
  - Each service gets a C(HiddenServiceDir) (owner O(tor_user), mode C(0700)) and its C(HiddenServicePort) lines in
    a drop-in C(<torrc_dir>/nodefleet-<name>.conf) (owner root, mode C(0644)) that the main torrc must C(%include).
  - After writing, the whole configuration is checked with C(tor --verify-config); if tor rejects it, every drop-in
    is restored to its previous content, directories created by this run are removed, and the module fails with
    tor's message.
  - Tor is reloaded (SIGHUP to the pid in O(tor_pid_file), what C(systemctl reload tor@default) does) at most once
    per call and only when something changed; then the module waits for each service's C(hostname) file.
  - The address of an existing service never changes. The module never deletes or regenerates the key of an
    existing service; it only installs a key given in O(secret_key) into a directory that has none, or replaces a
    different key when O(force_key=true).
  - Key material is never shown (not in the diff, not in return values, not in error messages).
author:
  - nodefleet.bitcoin contributors (@nodefleet)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports what would change; writes nothing and does not reload tor.
  diff_mode:
    support: full
    details: Shows the drop-in text of each changed service; never key material.
  platform:
    platforms: posix
options:
  name:
    description:
      - Name of the service (single form); letters, digits, C(_) and C(-), up to 64 characters.
      - Mutually exclusive with O(services).
    type: str
  state:
    description:
      - V(present) configures the service; V(absent) removes its drop-in and keeps its directory (keys) unless
        O(purge=true).
      - Single form only; defaults to V(present).
    type: str
    choices: [present, absent]
  service_dir:
    description:
      - The C(HiddenServiceDir). Absolute, without C(..), whitespace, control characters, quotes or C(#); not
        C(/) or a system directory such as C(/etc) or C(/var/lib). Its parent must exist.
      - Neither the directory nor any directory above it may be a symlink (the module refuses, naming this
        option, and changes nothing); the files tor keeps in it must not be symlinks either.
      - Defaults to C(/var/lib/tor/nodefleet-<name>). With O(state=absent) and O(purge=true) the directory named in
        the existing drop-in is purged when this is not given.
    type: path
  ports:
    description:
      - The C(HiddenServicePort) mappings (required for O(state=present)); virtual ports must be distinct.
    type: list
    elements: dict
    suboptions:
      port:
        description: Virtual port on the onion address (1-65535), e.g. the bitcoind P2P port.
        type: int
        required: true
      target:
        description: Where tor forwards to, C(host:port) with an IPv4 address, C([IPv6]) or C(localhost).
        type: str
        required: true
  secret_key:
    description:
      - Base64 of the service's C(hs_ed25519_secret_key) file (96 bytes starting with the
        C(ed25519v1-secret type0) header), e.g. from a vault or a backup taken with M(ansible.builtin.slurp).
      - Installed (mode C(0600), owner O(tor_user)) when the directory has no key. If the directory holds a different
        key the module fails unless O(force_key=true).
    type: str
  force_key:
    description:
      - Replace an existing, different key with O(secret_key). This changes the service's onion address to the one of
        O(secret_key); C(hostname) and the public key are removed so tor derives them again.
    type: bool
    default: false
  purge:
    description:
      - With O(state=absent), also delete the service directory and its keys (the address is lost).
    type: bool
    default: false
  services:
    description:
      - Batch form; mutually exclusive with O(name). All drop-ins are written first, tor is verified and reloaded
        once if anything changed, then every hostname is awaited.
    type: list
    elements: dict
    suboptions:
      name:
        description: As O(name).
        type: str
        required: true
      state:
        description: As O(state).
        type: str
        choices: [present, absent]
        default: present
      service_dir:
        description: As O(service_dir).
        type: path
      ports:
        description: As O(ports).
        type: list
        elements: dict
        suboptions:
          port:
            description: As O(ports[].port).
            type: int
            required: true
          target:
            description: As O(ports[].target).
            type: str
            required: true
      secret_key:
        description: As O(secret_key).
        type: str
      force_key:
        description: As O(force_key).
        type: bool
        default: false
      purge:
        description: As O(purge).
        type: bool
        default: false
  torrc_dir:
    description: Directory for the drop-ins; must exist and be included by O(torrc_file).
    type: path
    default: /etc/tor/torrc.d
  torrc_file:
    description:
      - The main torrc. The module fails if it has no C(%include) of O(torrc_dir) (the directory, a glob in it such
        as C(/etc/tor/torrc.d/*.conf), or the drop-in file itself).
    type: path
    default: /etc/tor/torrc
  tor_defaults_torrc:
    description:
      - Passed as C(--defaults-torrc) to C(tor --verify-config), as Debian's C(tor@default) does.
      - Defaults to C(/usr/share/tor/tor-service-defaults-torrc) when that file exists; an empty string passes none.
    type: path
  tor_user:
    description: User tor runs as; owns service directories and keys (group = its primary group).
    type: str
    default: debian-tor
  tor_pid_file:
    description: Tor's C(PidFile); the reload is a SIGHUP to that pid. The module fails if tor is not running.
    type: path
    default: /run/tor/tor.pid
  wait_timeout:
    description: Seconds to wait for tor to write each C(hostname) file after a reload.
    type: int
    default: 30
notes:
  - Run as root (the drop-ins are root-owned and the service directories belong to O(tor_user)).
  - Everything inside a service directory (which O(tor_user) controls) and in O(torrc_dir) is done through
    directory descriptors opened without following symlinks - owner and mode are set on the open directory or
    file, never by path - so a symlink swapped in by the tor user cannot redirect a chown, chmod, write or
    delete to another file.
  - Back up keys with M(ansible.builtin.slurp) of C(<service_dir>/hs_ed25519_secret_key) under C(no_log).
seealso:
  - name: Tor manual, HiddenServiceDir and HiddenServicePort
    description: Onion service options.
    link: https://2019.www.torproject.org/docs/tor-manual.html.en#HiddenServiceDir
"""

EXAMPLES = r"""
- name: Onion service for one bitcoind instance
  nodefleet.bitcoin.tor_hidden_service:
    name: core-main
    ports:
      - port: 8333
        target: 127.0.0.1:8334
  register: onion

- name: All instances of a host, one tor reload
  nodefleet.bitcoin.tor_hidden_service:
    services:
      - name: core-main
        ports: [{port: 8333, target: "127.0.0.1:8334"}]
      - name: knots-signet
        ports: [{port: 38333, target: "127.0.0.1:38334"}]
      - name: old-node
        state: absent

- name: Restore a service's key from the vault (same address on a new host)
  nodefleet.bitcoin.tor_hidden_service:
    name: core-main
    ports: [{port: 8333, target: "127.0.0.1:8334"}]
    secret_key: "{{ vault_onion_keys['core-main'] }}"
  no_log: true

- name: Remove a service and its keys
  nodefleet.bitcoin.tor_hidden_service:
    name: old-node
    state: absent
    purge: true
"""

RETURN = r"""
onion_address:
  description: The service's address from its C(hostname) file (single form; null when absent, or in check mode
    before tor created it).
  returned: single form
  type: str
  sample: pplucon3en7jyrs5kb7kxl2dvdo5dfm4bjjmug3zktvuvfu4i3dqp6qd.onion
service_dir:
  description: The C(HiddenServiceDir) (single form).
  returned: single form
  type: str
  sample: /var/lib/tor/nodefleet-core-main
torrc_dropin:
  description: Path of the service's drop-in (single form).
  returned: single form
  type: str
  sample: /etc/tor/torrc.d/nodefleet-core-main.conf
services:
  description: Per service name, C(onion_address), C(service_dir), C(torrc_dropin), C(state) and C(changed).
  returned: always
  type: dict
  sample:
    core-main:
      onion_address: pplucon3en7jyrs5kb7kxl2dvdo5dfm4bjjmug3zktvuvfu4i3dqp6qd.onion
      service_dir: /var/lib/tor/nodefleet-core-main
      torrc_dropin: /etc/tor/torrc.d/nodefleet-core-main.conf
      state: present
      changed: false
reloaded:
  description: Whether tor was sent SIGHUP by this run (at most once).
  returned: always
  type: bool
  sample: false
"""

import contextlib
import os
import pwd
import re

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import safe_fs, tor
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import (
    ValidationError,
    check_abs_path,
    file_diff,
    read_text,
)
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.safe_fs import UnsafePath

DEBIAN_DEFAULTS_TORRC = "/usr/share/tor/tor-service-defaults-torrc"
DROPIN_MODE = 0o644
SERVICE_DIR_MODE = 0o700
KEY_MODE = 0o600
PORT_SPEC = dict(port=dict(type="int", required=True), target=dict(type="str", required=True))
SERVICE_OPTIONS = ("state", "service_dir", "ports", "secret_key", "force_key", "purge")


def argument_spec() -> dict:
    return dict(
        name=dict(type="str"),
        state=dict(type="str", choices=["present", "absent"]),
        service_dir=dict(type="path"),
        ports=dict(type="list", elements="dict", options=PORT_SPEC),
        secret_key=dict(type="str", no_log=True),
        force_key=dict(type="bool", default=False),
        purge=dict(type="bool", default=False),
        services=dict(
            type="list",
            elements="dict",
            options=dict(
                name=dict(type="str", required=True),
                state=dict(type="str", choices=["present", "absent"], default="present"),
                service_dir=dict(type="path"),
                ports=dict(type="list", elements="dict", options=PORT_SPEC),
                secret_key=dict(type="str", no_log=True),
                force_key=dict(type="bool", default=False),
                purge=dict(type="bool", default=False),
            ),
        ),
        torrc_dir=dict(type="path", default=tor.DEFAULT_TORRC_DIR),
        torrc_file=dict(type="path", default="/etc/tor/torrc"),
        tor_defaults_torrc=dict(type="path"),
        tor_user=dict(type="str", default="debian-tor"),
        tor_pid_file=dict(type="path", default="/run/tor/tor.pid"),
        wait_timeout=dict(type="int", default=30),
    )


def service_specs(params: dict) -> tuple[list[dict], bool]:
    """The batch list (module option names) and whether the call used the batch form."""
    if params.get("services") is not None:
        for option in ("state", "service_dir", "ports", "secret_key"):
            if params.get(option) is not None:
                raise ValidationError(option, "belongs inside each services[] entry in the batch form")
        for option in ("force_key", "purge"):
            if params.get(option):
                raise ValidationError(option, "belongs inside each services[] entry in the batch form")
        if not params["services"]:
            raise ValidationError("services", "must list at least one service")
        return list(params["services"]), True
    single = {"name": params.get("name")}
    single.update({option: params.get(option) for option in SERVICE_OPTIONS})
    return [single], False


def validate(params: dict) -> tuple[list[dict], bool, dict]:
    """Check every input without touching the system; returns (services, batch, settings)."""
    specs, batch = service_specs(params)
    services = [tor.normalise_service(spec, f"services[{i}]." if batch else "") for i, spec in enumerate(specs)]
    tor.check_batch(services)
    settings = {
        "torrc_dir": check_abs_path("torrc_dir", params["torrc_dir"]),
        "torrc_file": check_abs_path("torrc_file", params["torrc_file"]),
        "tor_pid_file": check_abs_path("tor_pid_file", params["tor_pid_file"]),
        "tor_user": params["tor_user"],
        "wait_timeout": params["wait_timeout"],
    }
    if params["wait_timeout"] is None or params["wait_timeout"] < 1:
        raise ValidationError("wait_timeout", "must be at least 1 second")
    defaults = params.get("tor_defaults_torrc")
    if defaults is None:
        defaults = DEBIAN_DEFAULTS_TORRC if os.path.exists(DEBIAN_DEFAULTS_TORRC) else ""
    if defaults:
        defaults = check_abs_path("tor_defaults_torrc", defaults)
    settings["tor_defaults_torrc"] = defaults
    for svc in services:
        svc["dropin"] = tor.dropin_path(settings["torrc_dir"], svc["name"])
    return services, batch, settings


# A POSIX user name as Debian's adduser allows it (no NUL, control characters or spaces).
TOR_USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\Z")


def check_system(services: list[dict], settings: dict) -> tuple[int, int]:
    """Preconditions on the host (files, user, includes); returns tor_user's (uid, gid)."""
    if not isinstance(settings["tor_user"], str) or not TOR_USER_RE.match(settings["tor_user"]):
        raise ValidationError("tor_user", "{!r} is not a user name".format(settings["tor_user"]))
    try:
        entry = pwd.getpwnam(settings["tor_user"])
    except KeyError:
        raise ValidationError("tor_user", "user {!r} does not exist".format(settings["tor_user"])) from None
    try:
        kind = safe_fs.inspect_path(settings["torrc_dir"])
    except UnsafePath as exc:
        raise ValidationError("torrc_dir", f"{exc.path} {exc.reason}") from None
    if kind != "dir":
        raise ValidationError("torrc_dir", "{} is not an existing directory".format(settings["torrc_dir"]))
    try:
        torrc = read_text(settings["torrc_file"])
    except UnicodeDecodeError:
        raise ValidationError("torrc_file", "{} is not UTF-8 text".format(settings["torrc_file"])) from None
    except OSError as exc:
        raise ValidationError("torrc_file", "cannot read {}: {}".format(settings["torrc_file"], exc.strerror)) from None
    if torrc is None:
        raise ValidationError("torrc_file", "{} does not exist".format(settings["torrc_file"]))
    for svc in services:
        if not tor.torrc_includes(torrc, settings["torrc_dir"], svc["dropin"]):
            raise ValidationError(
                "torrc_file",
                "{} does not include the drop-in {}; add '%include {}/*.conf' to it".format(
                    settings["torrc_file"], svc["dropin"], settings["torrc_dir"]
                ),
            )
    if settings["tor_defaults_torrc"] and not os.path.isfile(settings["tor_defaults_torrc"]):
        raise ValidationError("tor_defaults_torrc", "{} does not exist".format(settings["tor_defaults_torrc"]))
    return entry.pw_uid, entry.pw_gid


def read_dropin(svc: dict) -> str | None:
    """The service's current drop-in (root-owned torrc_dir, still read without following links)."""
    try:
        data = safe_fs.read_file(svc["dropin"])
    except UnsafePath as exc:
        raise ValidationError("torrc_dir", f"{exc.path} {exc.reason}") from None
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError("torrc_dir", f"{svc['dropin']} is not UTF-8 text") from None


def plan_service(svc: dict, uid: int, gid: int, prefix: str) -> dict:
    """What must change for one service; reads the host, writes nothing.

    A symlink as the service directory, above it or for a file tor keeps in it is refused,
    naming ``service_dir``.
    """
    before = read_dropin(svc)
    try:
        return _plan_service(svc, before, uid, gid, prefix)
    except UnsafePath as exc:
        raise ValidationError(prefix + "service_dir", f"{exc.path} {exc.reason}") from None


def _plan_service(svc: dict, before: str | None, uid: int, gid: int, prefix: str) -> dict:
    plan = {"before": before, "after": None, "create_dir": False, "fix_dir": False, "write_key": False}
    plan["replace_key"] = plan["need_reload"] = plan["purge_dir"] = None
    if svc["state"] == "absent":
        plan["dropin_changed"] = before is not None
        plan["need_reload"] = before is not None
        if svc["purge"]:
            target = svc["service_dir"]
            if not svc["explicit_dir"] and before is not None:
                named = tor.parse_dropin(before)["service_dir"]
                if named:
                    # the drop-in may have been edited by hand: the same rules as the option
                    target = tor.check_service_dir(prefix + "purge", named)
            if safe_fs.inspect_path(target) == "dir":
                if not tor.looks_like_service_dir(target):
                    raise ValidationError(
                        prefix + "purge",
                        f"{target} holds files tor does not put in an onion service directory; refusing to delete it",
                    )
                plan["purge_dir"] = target
        return plan

    directory = svc["service_dir"]
    parent = os.path.dirname(directory)
    parent_kind = safe_fs.inspect_path(parent)
    if parent_kind == "missing":
        raise ValidationError(prefix + "service_dir", f"parent directory {parent} does not exist")
    if parent_kind != "dir":
        raise ValidationError(prefix + "service_dir", f"parent {parent} is not a directory")
    kind = safe_fs.inspect_path(directory)
    if kind not in ("missing", "dir"):
        raise ValidationError(prefix + "service_dir", f"{directory} exists and is not a directory")
    after = tor.render_dropin(svc["name"], directory, svc["ports"])
    plan["after"] = after
    plan["dropin_changed"] = before != after
    plan["create_dir"] = kind == "missing"
    if not plan["create_dir"]:
        with safe_fs.opened_dir(directory) as dir_fd:
            plan["fix_dir"] = safe_fs.attrs_differ(os.fstat(dir_fd), uid, gid, SERVICE_DIR_MODE)
    existing_key = None if plan["create_dir"] else tor.read_secret_key(directory)
    wanted = svc["secret_key_bytes"]
    if wanted is not None:
        if existing_key is None:
            plan["write_key"] = True
        elif not tor.keys_equal(existing_key, wanted):
            if not svc["force_key"]:
                raise ValidationError(
                    prefix + "secret_key",
                    f"{directory} already holds a different key; replacing the key of an existing service would change its "
                    "onion address. Set force_key=true to replace it (the key material is not shown)",
                )
            plan["write_key"] = plan["replace_key"] = True
    hostname_missing = plan["create_dir"] or tor.read_hostname(directory) is None
    plan["need_reload"] = plan["dropin_changed"] or plan["create_dir"] or plan["write_key"] or hostname_missing
    if before is not None:
        old_dir = tor.parse_dropin(before)["service_dir"]
        plan["moved_from"] = old_dir if old_dir and old_dir != directory else None
    return plan


def write_dropin(path: str, text: str) -> None:
    """Atomically replace a drop-in (root:root 0644), through the torrc_dir descriptor."""
    safe_fs.write_file(path, text, uid=0, gid=0, mode=DROPIN_MODE)


def remove_dropin(path: str) -> None:
    with safe_fs.opened_dir(os.path.dirname(path)) as dir_fd:
        safe_fs.unlink_at(dir_fd, os.path.basename(path))


def ensure_service_dir(directory: str, uid: int, gid: int, fix: bool) -> bool:
    """Create (or open) the service dir below its parent's descriptor; owner/mode set by fd.

    Returns whether this call created it. ``mkdir_at`` refuses a symlink at the name, and
    the parent is opened with no symlink on the way, so nothing but that directory is
    chowned or chmodded.
    """
    parent, name = os.path.split(directory)
    with safe_fs.opened_dir(parent) as parent_fd:
        dir_fd, created = safe_fs.mkdir_at(parent_fd, name, SERVICE_DIR_MODE, shown=directory)
        try:
            if created or fix:
                safe_fs.set_attrs_fd(dir_fd, uid, gid, SERVICE_DIR_MODE)
        finally:
            os.close(dir_fd)
    return created


def apply_dirs_and_dropins(services, plans, uid, gid, prefixes, created: list) -> None:
    """Create/fix service dirs, write or remove drop-ins; appends the dirs created to ``created``."""
    for svc, plan, prefix in zip(services, plans, prefixes):
        if svc["state"] == "present":
            if plan["create_dir"] or plan["fix_dir"]:
                try:
                    if ensure_service_dir(svc["service_dir"], uid, gid, plan["fix_dir"]):
                        created.append(svc["service_dir"])
                except UnsafePath as exc:
                    raise ValidationError(prefix + "service_dir", f"{exc.path} {exc.reason}") from None
            if plan["dropin_changed"]:
                write_dropin(svc["dropin"], plan["after"])
        elif plan["dropin_changed"]:
            remove_dropin(svc["dropin"])


def rollback(services, plans, created) -> None:
    """Put every drop-in back as it was and remove directories this run created.

    Best effort, step by step: one step failing does not keep the others from running, and
    the error that caused the rollback is the one reported.
    """
    for svc, plan in zip(services, plans):
        if not plan["dropin_changed"]:
            continue
        with contextlib.suppress(OSError, UnsafePath):
            if plan["before"] is None:
                remove_dropin(svc["dropin"])
            else:
                write_dropin(svc["dropin"], plan["before"])
    for directory in created:
        with contextlib.suppress(OSError, UnsafePath):
            tor.remove_service_dir(directory)


def install_keys(services, plans, uid, gid, prefixes) -> None:
    """Write restored/forced keys; drop the derived files so tor writes them for this key.

    Everything through the service dir's descriptor: the key's temp file gets owner and
    mode by fd and is renamed into place within the directory.
    """
    for svc, plan, prefix in zip(services, plans, prefixes):
        if not plan["write_key"]:
            continue
        try:
            with safe_fs.opened_dir(svc["service_dir"]) as dir_fd:
                for derived in (tor.HOSTNAME_FILE, tor.PUBLIC_KEY_FILE):
                    safe_fs.unlink_at(dir_fd, derived)
                safe_fs.write_at(
                    dir_fd,
                    tor.SECRET_KEY_FILE,
                    svc["secret_key_bytes"],
                    uid=uid,
                    gid=gid,
                    mode=KEY_MODE,
                    shown=os.path.join(svc["service_dir"], tor.SECRET_KEY_FILE),
                )
        except UnsafePath as exc:
            raise ValidationError(prefix + "service_dir", f"{exc.path} {exc.reason}") from None


def run(module) -> dict:
    services, batch, settings = validate(module.params)
    uid, gid = check_system(services, settings)
    prefixes = [f"services[{index}]." if batch else "" for index in range(len(services))]
    plans = [plan_service(svc, uid, gid, prefix) for svc, prefix in zip(services, prefixes)]
    for svc, plan in zip(services, plans):
        if plan.get("moved_from"):
            module.warn(
                "service {} moves from {} to {}: unless the new directory holds the same key, its onion address "
                "changes".format(svc["name"], plan["moved_from"], svc["service_dir"])
            )

    need_reload = any(plan["need_reload"] for plan in plans)
    dropins_changed = any(plan["dropin_changed"] for plan in plans)
    results = {}
    for svc, plan in zip(services, plans):
        changed = bool(plan["need_reload"] or plan["fix_dir"] or plan["purge_dir"])
        results[svc["name"]] = {
            "state": svc["state"],
            "service_dir": plan["purge_dir"] or svc["service_dir"],
            "torrc_dropin": svc["dropin"],
            "changed": changed,
            "onion_address": None,
        }
    changed = any(r["changed"] for r in results.values())
    diffs = [
        file_diff(svc["dropin"], plan["before"], plan["after"])
        for svc, plan in zip(services, plans)
        if plan["dropin_changed"]
    ]

    reloaded = False
    if changed and not module.check_mode:
        if need_reload:
            tor.read_pid(settings["tor_pid_file"])  # fail before writing anything when tor is down
        created: list[str] = []
        try:
            apply_dirs_and_dropins(services, plans, uid, gid, prefixes, created)
        except BaseException:
            rollback(services, plans, created)  # nothing half-written: drop-ins back, new dirs gone
            raise
        if dropins_changed or created:
            ok, message = tor.verify_config(
                module.run_command,
                module.get_bin_path("tor", required=True),
                settings["torrc_file"],
                settings["tor_defaults_torrc"],
            )
            if not ok:
                rollback(services, plans, created)
                raise ValidationError(
                    "torrc_file",
                    f"tor --verify-config rejected the configuration; previous drop-ins restored: {message}",
                )
        install_keys(services, plans, uid, gid, prefixes)
        if need_reload:
            tor.reload_tor(settings["tor_pid_file"])
            reloaded = True
        for plan, prefix in zip(plans, prefixes):
            if plan["purge_dir"]:
                try:
                    tor.remove_service_dir(plan["purge_dir"])
                except UnsafePath as exc:
                    raise ValidationError(prefix + "purge", f"{exc.path} {exc.reason}") from None

    for svc, prefix in zip(services, prefixes):
        if svc["state"] != "present":
            continue
        try:
            if module.check_mode:
                address = tor.read_hostname(svc["service_dir"])
            else:
                address = tor.wait_for_hostname(svc["service_dir"], settings["wait_timeout"])
        except UnsafePath as exc:
            raise ValidationError(prefix + "service_dir", f"{exc.path} {exc.reason}") from None
        if address is None and not module.check_mode:
            raise ValidationError(
                "wait_timeout",
                f"tor wrote no valid {svc['service_dir']}/hostname within {settings['wait_timeout']} s; see tor's log",
            )
        results[svc["name"]]["onion_address"] = address

    result = {"changed": changed, "reloaded": reloaded, "services": results}
    if not batch:
        only = results[services[0]["name"]]
        result.update(
            onion_address=only["onion_address"], service_dir=only["service_dir"], torrc_dropin=only["torrc_dropin"]
        )
    if module._diff:
        result["diff"] = diffs if batch else (diffs[0] if diffs else {"before": "", "after": ""})
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        mutually_exclusive=[("name", "services")],
        required_one_of=[("name", "services")],
        supports_check_mode=True,
    )
    # fail_json is never called inside an except block (ansible-core 2.19 would attach the
    # exception's traceback to the result): keep the message, fail after the block.
    failure = None
    try:
        result = run(module)
    except ValidationError as exc:
        failure = str(exc)
    except UnsafePath as exc:
        failure = f"{exc.path} {exc.reason}"
    except OSError as exc:
        failure = "{}: {}".format(exc.filename or "tor_hidden_service", exc.strerror or exc)
    if failure is not None:
        module.fail_json(msg=failure)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
