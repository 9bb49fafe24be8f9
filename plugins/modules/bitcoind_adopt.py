#!/usr/bin/python
# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bitcoind_adopt
short_description: Take over a hand-run bitcoind's datadir for the fleet
version_added: "0.2.0"
description:
  - Prepares an existing datadir (a chain synced by a bitcoind run by hand or by a systemd
    unit) to be run by the fleet in place. In this order, each step only when needed
    (a second run changes nothing) - keeps a copy of the previous C(bitcoin.conf) in
    O(state_dir) (root-only, it may hold an C(rpcpassword)); stops the previous daemon
    gracefully (C(systemctl stop) of O(service), then SIGTERM to every other process that
    holds the datadir's C(.lock), waiting for it to exit; bitcoind flushes and exits on
    SIGTERM as on C(bitcoin-cli stop)) and disables O(service); gives everything in the
    datadir to O(owner)/O(group) through directory descriptors (no symlink is followed);
    stages the onion service key for tor_hidden_service.
  - The previous settings are returned in RV(previous_settings) (values of secrets such as
    C(rpcpassword) hidden) so the role can report the ones its new C(bitcoin.conf) does not
    set. Nothing here writes the new C(bitcoin.conf) (bitcoind_instance does) or starts a
    daemon (supervisord_program does).
  - The onion key - with O(onion_key=core) Bitcoin Core's own C(<network dir>/onion_v3_private_key)
    (C(ED25519-V3:<base64>), written by C(listenonion=1)) is converted into tor's
    C(hs_ed25519_secret_key) format; with O(onion_key=tor) the C(hs_ed25519_secret_key) of the
    operator's O(tor_service_dir) is taken. The key file is staged root-only as
    C(<state_dir>/<name>/hs_ed25519_secret_key) and never returned; RV(onion_address) is the
    address it gives (computed from the key, identical to the one Core advertised).
  - A process that is a child of supervisord and runs with this datadir's
    C(-conf=<datadir>/bitcoin.conf -datadir=<datadir>) is the fleet's own program and is left
    alone.
author:
  - nodefleet.bitcoin contributors (@nodefleet)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports every step it would take (also in the diff) and changes nothing.
  diff_mode:
    support: full
    details:
      - Before and after of the migration as text lines (service, processes, owners, backup,
        onion key). No key material and no secret value.
  platform:
    platforms: posix
options:
  name:
    description: Instance name (C(^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$)); names the state directory.
    type: str
    required: true
  datadir:
    description:
      - The existing datadir, adopted in place (the instance's datadir). Must exist and hold
        the chain of O(network) (C(<network dir>/blocks)); no symlink anywhere in its path.
    type: path
    required: true
  network:
    description: The network the datadir holds (selects the network directory and conf section).
    type: str
    choices: [main, test, testnet4, signet, regtest]
    required: true
  conf:
    description:
      - The previous daemon's config file; default C(<datadir>/bitcoin.conf). A missing file
        counts as no settings.
    type: path
  service:
    description:
      - The systemd unit that ran the previous daemon (e.g. C(bitcoind.service)); stopped and
        disabled. Omit for a bitcoind started by hand (it is found through the datadir's C(.lock)).
    type: str
  onion_key:
    description:
      - Where the onion address comes from. V(core) - Core's own C(onion_v3_private_key) in the
        network directory. V(tor) - the C(hs_ed25519_secret_key) in O(tor_service_dir). V(none) -
        no key is staged (the instance gets a new address, or the inventory's own key).
    type: str
    choices: [core, tor, none]
    default: core
  tor_service_dir:
    description: With O(onion_key=tor), the operator's HiddenServiceDir holding the key.
    type: path
  owner:
    description: User that runs the adopted instance; everything in the datadir is given to it.
    type: str
    default: bitcoin
  group:
    description: Group of the adopted datadir.
    type: str
    default: bitcoin
  state_dir:
    description: Root-only directory for the backup, the staged key and the adoption record.
    type: path
    default: /var/lib/nodefleet/adopt
  stop_timeout:
    description:
      - Seconds to wait for the previous daemon to exit after SIGTERM (a large dbcache takes
        minutes to flush). The module fails when it is still running after that.
    type: int
    default: 600
"""

EXAMPLES = r"""
- name: Adopt the chain a systemd unit ran in /srv/bitcoin, keeping Core's onion address
  nodefleet.bitcoin.bitcoind_adopt:
    name: core-main
    datadir: /srv/bitcoin
    network: main
    conf: /etc/bitcoin/bitcoin.conf
    service: bitcoind.service
    onion_key: core
  register: adopted

- name: Adopt a bitcoind started by hand, with the operator's own tor onion service key
  nodefleet.bitcoin.bitcoind_adopt:
    name: core-test
    datadir: /home/satoshi/.bitcoin
    network: test
    onion_key: tor
    tor_service_dir: /var/lib/tor/bitcoin-service
"""

RETURN = r"""
previous_settings:
  description:
    - The settings the previous daemon ran with - from its C(bitcoin.conf) (as Core reads it for
      O(network)) and from its command line (recorded at the run that stopped it). Values of
      settings whose name contains password, secret, cookie, auth or key are C((hidden)).
  returned: always
  type: list
  elements: dict
  sample: [{name: txindex, value: "1", source: bitcoin.conf}, {name: rpcpassword, value: (hidden), source: bitcoin.conf}]
backup:
  description: Path of the copy of the previous C(bitcoin.conf) (root 0600), or null when there was none.
  returned: always
  type: str
service:
  description: O(service) before the run - C(name), C(load_state), C(active_state), C(unit_file_state); null without O(service).
  returned: always
  type: dict
stopped:
  description: The previous daemons stopped (or to be stopped in check mode) - C(pid), C(how) (V(systemctl) or V(SIGTERM)), C(argv).
  returned: always
  type: list
  elements: dict
ownership:
  description: C(changed) (entries given to O(owner)), and the paths not changed - C(symlinks), C(hardlinks), C(skipped).
  returned: always
  type: dict
onion_address:
  description: The address of the staged key (null with O(onion_key=none)).
  returned: always
  type: str
  sample: eh656z5zpip5of3q5hds33q2kbkur2finhkqwtily6pf43novx3ddtyd.onion
tor_key_file:
  description: Where the key for tor_hidden_service is staged (root 0600), null with O(onion_key=none).
  returned: always
  type: str
"""

import contextlib
import grp
import hashlib
import json
import os
import pwd
import re
import signal
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import adopt, bitcoin_conf, safe_fs, tor
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import (
    ValidationError,
    check_abs_path,
    check_managed_dir,
    check_name,
)

ARGUMENT_SPEC = {
    "name": {"type": "str", "required": True},
    "datadir": {"type": "path", "required": True},
    "network": {"type": "str", "required": True, "choices": list(bitcoin_conf.NETWORK_SUBDIR)},
    "conf": {"type": "path"},
    "service": {"type": "str"},
    "onion_key": {"type": "str", "choices": ["core", "tor", "none"], "default": "core"},
    "tor_service_dir": {"type": "path"},
    "owner": {"type": "str", "default": "bitcoin"},
    "group": {"type": "str", "default": "bitcoin"},
    "state_dir": {"type": "path", "default": "/var/lib/nodefleet/adopt"},
    "stop_timeout": {"type": "int", "default": 600},
}

SERVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9@._:\\-]{0,250}\Z")
CORE_KEY_FILE = "onion_v3_private_key"
RECORD_FILE = "adopted.json"
ACTIVE_STATES = ("active", "activating", "reloading", "deactivating")
ENABLED_STATES = ("enabled", "enabled-runtime")


def validate(p: dict, check_mode: bool = False) -> dict:
    """Normalised options; in check mode an owner/group this run creates (not there yet) is None."""
    n = dict(p)
    n["name"] = check_name("name", p["name"])
    n["datadir"] = check_managed_dir("datadir", p["datadir"]).rstrip("/")
    n["network_dir"] = bitcoin_conf.network_dir(n["datadir"], p["network"])
    n["conf"] = check_abs_path("conf", p["conf"]) if p.get("conf") else os.path.join(n["datadir"], "bitcoin.conf")
    if p.get("service") is not None and not SERVICE_RE.match(p["service"]):
        raise ValidationError("service", f"{p['service']!r} is not a systemd unit name")
    if p["onion_key"] == "tor":
        if not p.get("tor_service_dir"):
            raise ValidationError(
                "tor_service_dir", "is required with onion_key=tor (the HiddenServiceDir with the key)"
            )
        n["tor_service_dir"] = check_abs_path("tor_service_dir", p["tor_service_dir"])
    elif p.get("tor_service_dir"):
        raise ValidationError("tor_service_dir", "only applies to onion_key=tor")
    n["state_dir"] = check_managed_dir("state_dir", p["state_dir"]).rstrip("/")
    if n["state_dir"] == n["datadir"] or n["state_dir"].startswith(n["datadir"] + "/"):
        raise ValidationError("state_dir", "must be outside the datadir (the daemon user controls it)")
    if not isinstance(p["stop_timeout"], int) or p["stop_timeout"] < 1:
        raise ValidationError("stop_timeout", "must be at least 1 second")
    for option, lookup, field in (("owner", pwd.getpwnam, "pw_uid"), ("group", grp.getgrnam, "gr_gid")):
        try:
            n["uid" if option == "owner" else "gid"] = getattr(lookup(p[option]), field)
        except KeyError:
            if not check_mode:
                raise ValidationError(option, f"{p[option]!r} does not exist on this host") from None
            n["uid" if option == "owner" else "gid"] = None
    return n


# --------------------------------------------------------------------------- reading


def _read(path: str, option: str) -> bytes | None:
    try:
        return safe_fs.read_file(path)
    except safe_fs.UnsafePath as exc:
        raise ValidationError(option, f"{exc.path} {exc.reason}") from None


def inspect_datadir(n: dict) -> None:
    try:
        kind = safe_fs.inspect_path(n["datadir"])
        blocks = safe_fs.inspect_path(os.path.join(n["network_dir"], "blocks")) if kind == "dir" else "missing"
    except safe_fs.UnsafePath as exc:
        raise ValidationError("datadir", f"{exc.path} {exc.reason}") from None
    if kind != "dir":
        raise ValidationError("datadir", f"{n['datadir']} is not an existing directory: nothing to adopt")
    if blocks != "dir":
        raise ValidationError(
            "datadir",
            f"{n['network_dir']} holds no {n['network']} chain (no blocks/ directory): wrong network or datadir?",
        )
    if n["uid"] is None:  # check mode before the user exists: it will be created with the run
        return
    groups = {n["gid"]} | {g.gr_gid for g in grp.getgrall() if n["owner"] in g.gr_mem}
    blocked = adopt.traversal_problem(n["datadir"], n["uid"], groups)
    if blocked:
        raise ValidationError(
            "datadir",
            f"user {n['owner']!r} cannot enter {blocked} (no search permission), so it could not run the instance",
        )


def read_record(n: dict) -> dict:
    data = _read(os.path.join(n["state_dir"], n["name"], RECORD_FILE), "state_dir")
    if not data:
        return {}
    try:
        record = json.loads(data.decode("utf-8"))
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def plan_conf(n: dict, record: dict) -> dict:
    """The previous conf text and where its backup is (or goes)."""
    data = _read(n["conf"], "conf")
    text = data.decode("utf-8", "replace") if data is not None else None
    state = os.path.join(n["state_dir"], n["name"])
    if text is not None and not bitcoin_conf.is_managed(text, n["name"]):
        backup = os.path.join(state, "bitcoin.conf." + hashlib.sha256(data).hexdigest()[:12])
        existing = _read(backup, "state_dir")
        return {"text": text, "backup": backup, "write": existing != data, "data": data}
    backup = record.get("backup")
    old = _read(backup, "state_dir") if isinstance(backup, str) and backup.startswith(state + "/") else None
    return {"text": old.decode("utf-8", "replace") if old else None, "backup": backup if old else None, "write": False}


def systemctl_state(module, unit: str) -> dict:
    systemctl = module.get_bin_path("systemctl", required=True)
    props = "LoadState,ActiveState,UnitFileState,MainPID"
    rc, out, err = module.run_command([systemctl, "show", unit, "--property=" + props])
    if rc != 0:
        raise ValidationError("service", f"systemctl show {unit} failed: {(err or out).strip()}")
    values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return {
        "name": unit,
        "load_state": values.get("LoadState", ""),
        "active_state": values.get("ActiveState", ""),
        "unit_file_state": values.get("UnitFileState", ""),
        "main_pid": int(values["MainPID"]) if values.get("MainPID", "").isdigit() else 0,
    }


def our_program(pid: int, n: dict) -> bool:
    argv = adopt.process_argv(pid) or []
    own = {f"-conf={n['datadir']}/bitcoin.conf", f"-datadir={n['datadir']}"}
    return adopt.is_supervised(pid) and own.issubset(argv)


def holders(n: dict) -> list[int]:
    """Pids of daemons on this datadir that are not the fleet's program."""
    try:
        with safe_fs.opened_dir(n["network_dir"]) as fd:
            lock_st = safe_fs.lstat_at(fd, adopt.LOCK_FILE)
            pid_data = safe_fs.read_at(fd, adopt.PID_FILE)
    except (FileNotFoundError, safe_fs.UnsafePath):
        lock_st, pid_data = None, None
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as handle:
            locks = handle.read()
    except OSError:
        locks = ""
    pids = set(adopt.lock_holders(lock_st, locks))
    from_file = adopt.pid_from_file(pid_data)
    if from_file and f"-datadir={n['datadir']}" in (adopt.process_argv(from_file) or []):
        pids.add(from_file)
    return sorted(p for p in pids if p != os.getpid() and adopt.alive(p) and not our_program(p, n))


def plan_key(n: dict) -> dict:
    state = os.path.join(n["state_dir"], n["name"])
    staged_path = os.path.join(state, tor.SECRET_KEY_FILE)
    staged = _read(staged_path, "state_dir")
    if n["onion_key"] == "none":
        return {"file": None, "address": None, "write": False}
    if n["onion_key"] == "core":
        path = os.path.join(n["network_dir"], CORE_KEY_FILE)
        raw = _read(path, "onion_key")
        if raw is None:
            if staged is None:
                raise ValidationError(
                    "onion_key",
                    f"core: {path} does not exist (Core writes it with listenonion=1); use onion_key: none "
                    "for a new address or onion_key: tor with the operator's key",
                )
            secret = staged
        else:
            secret = tor.core_key_to_tor("onion_key", raw)[tor.SECRET_KEY_FILE]
    else:
        path = os.path.join(n["tor_service_dir"], tor.SECRET_KEY_FILE)
        raw = _read(path, "tor_service_dir")
        if raw is None:
            raise ValidationError("tor_service_dir", f"{path} does not exist")
        if len(raw) != tor.SECRET_KEY_SIZE or not raw.startswith(tor.SECRET_KEY_HEADER):
            raise ValidationError("tor_service_dir", f"{path} is not a v3 hs_ed25519_secret_key file (value not shown)")
        secret = raw
    address = tor.onion_address_from_public_key(tor.public_key_from_secret_file(secret))
    return {
        "file": staged_path,
        "address": address,
        "write": not tor.keys_equal(staged, secret),
        "data": secret,
    }


# --------------------------------------------------------------------------- acting


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in pids if adopt.alive(p)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.2)


def write_state_file(n: dict, name: str, data: bytes) -> None:
    with safe_fs.opened_dir(n["state_dir"], create=len(n["state_dir"].strip("/").split("/")), mode=0o700) as top:
        safe_fs.set_attrs_fd(top, 0, 0, 0o700)
        sub, _created = safe_fs.mkdir_at(top, n["name"], 0o700)
        try:
            safe_fs.set_attrs_fd(sub, 0, 0, 0o700)
            safe_fs.write_at(sub, name, data, uid=0, gid=0, mode=0o600)
        finally:
            os.close(sub)


def run(module) -> dict:
    n = validate(module.params, module.check_mode)
    inspect_datadir(n)
    record = read_record(n)
    conf = plan_conf(n, record)
    try:
        previous = adopt.conf_settings(conf["text"], n["network"]) if conf["text"] else []
    except ValueError as exc:
        raise ValidationError("conf", f"{n['conf']}: Core would refuse this file ({exc})") from None

    service = systemctl_state(module, n["service"]) if n.get("service") else None
    warnings = []
    stop_unit = disable_unit = False
    stopped = []
    if service:
        if service["load_state"] == "not-found":
            warnings.append(f"service: {n['service']} does not exist; nothing to stop or disable")
        else:
            stop_unit = service["active_state"] in ACTIVE_STATES
            disable_unit = service["unit_file_state"] in ENABLED_STATES
            if stop_unit and service["main_pid"]:
                stopped.append(
                    {"pid": service["main_pid"], "how": "systemctl", "argv": adopt.process_argv(service["main_pid"])}
                )
    hand_run = [p for p in holders(n) if not (stop_unit and p == (service or {}).get("main_pid"))]
    stopped += [{"pid": p, "how": "SIGTERM", "argv": adopt.process_argv(p)} for p in hand_run]

    cmdline = []
    for entry in stopped:
        cmdline += adopt.command_line_settings(entry["argv"] or [])
    cmdline = cmdline or record.get("command_line") or []
    previous_settings = previous + [s for s in cmdline if isinstance(s, dict)]

    try:
        ownership = adopt.fix_ownership(n["datadir"], n["uid"], n["gid"], apply=False)
    except safe_fs.UnsafePath as exc:
        raise ValidationError("datadir", f"{exc.path} {exc.reason}") from None
    key = plan_key(n)

    new_record = {
        "name": n["name"],
        "datadir": n["datadir"],
        "network": n["network"],
        "conf": n["conf"],
        "backup": conf["backup"],
        "service": n.get("service"),
        "onion_address": key["address"],
        "command_line": cmdline,
    }
    record_data = (json.dumps(new_record, indent=1, sort_keys=True) + "\n").encode("utf-8")
    record_changed = record != new_record
    changed = bool(
        conf["write"] or stop_unit or disable_unit or stopped or ownership["changed"] or key["write"] or record_changed
    )

    result = {
        "changed": changed,
        "previous_settings": previous_settings,
        "backup": conf["backup"],
        "service": {k: v for k, v in service.items() if k != "main_pid"} if service else None,
        "stopped": [{"pid": s["pid"], "how": s["how"], "argv": _masked(s["argv"])} for s in stopped],
        "ownership": ownership,
        "onion_address": key["address"],
        "tor_key_file": key["file"],
    }
    if module._diff:
        result["diff"] = plan_diff(n, conf, service, stop_unit, disable_unit, stopped, ownership, key)

    if changed and not module.check_mode:
        if conf["write"]:
            write_state_file(n, os.path.basename(conf["backup"]), conf["data"])
        systemctl = module.get_bin_path("systemctl", required=True) if service else None
        if stop_unit:
            rc, out, err = module.run_command([systemctl, "stop", n["service"]])
            if rc != 0:
                raise ValidationError("service", f"systemctl stop {n['service']} failed: {(err or out).strip()}")
        if disable_unit:
            rc, out, err = module.run_command([systemctl, "disable", n["service"]])
            if rc != 0:
                raise ValidationError("service", f"systemctl disable {n['service']} failed: {(err or out).strip()}")
        for pid in hand_run:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        left = wait_gone([s["pid"] for s in stopped], n["stop_timeout"])
        left += [p for p in holders(n) if p not in left]
        if left:
            raise ValidationError(
                "stop_timeout",
                f"the previous daemon (pid {', '.join(map(str, left))}) still holds {n['datadir']} after "
                f"{n['stop_timeout']} s; nothing else was changed after stopping it",
            )
        try:
            ownership = adopt.fix_ownership(n["datadir"], n["uid"], n["gid"], apply=True)
        except safe_fs.UnsafePath as exc:
            raise ValidationError("datadir", f"{exc.path} {exc.reason}") from None
        result["ownership"] = ownership
        if key["write"]:
            write_state_file(n, tor.SECRET_KEY_FILE, key["data"])
        if record_changed:
            write_state_file(n, RECORD_FILE, record_data)
    for text in ownership["symlinks"]:
        warnings.append(f"datadir: {n['datadir']}/{text} is a symlink; not followed: give its target to {n['owner']}")
    for text in ownership["hardlinks"]:
        warnings.append(f"datadir: {n['datadir']}/{text} has several hard links; its owner was not changed")
    for warning in warnings:
        module.warn(warning)
    return result


def _masked(argv):
    if not argv:
        return argv
    out = []
    for arg in argv:
        key = arg.lstrip("-").split("=", 1)[0]
        out.append(f"{arg.split('=', 1)[0]}={adopt.HIDDEN}" if "=" in arg and adopt.is_secret(key) else arg)
    return out


def plan_diff(n, conf, service, stop_unit, disable_unit, stopped, ownership, key) -> dict:
    before, after = [], []
    if service:
        before.append(f"service {service['name']}: {service['active_state']}, {service['unit_file_state']}")
        after.append(
            f"service {service['name']}: {'inactive' if stop_unit else service['active_state']}, "
            f"{'disabled' if disable_unit else service['unit_file_state']}"
        )
    for s in stopped:
        before.append(f"daemon pid {s['pid']} on {n['datadir']}: {' '.join(_masked(s['argv']) or ['?'])}")
        after.append(f"daemon pid {s['pid']}: stopped ({s['how']})")
    before.append(f"entries of {n['datadir']} not owned by {n['owner']}:{n['group']}: {ownership['changed']}")
    after.append(f"entries of {n['datadir']} not owned by {n['owner']}:{n['group']}: 0")
    before.append(f"previous conf {n['conf']}: {'backup ' + conf['backup'] if not conf['write'] else 'no backup'}")
    after.append(f"previous conf {n['conf']}: backup {conf['backup']}" if conf["backup"] else "no previous conf")
    if key["file"]:
        before.append(f"onion key for tor: {'staged' if not key['write'] else 'not staged'}")
        after.append(f"onion key for tor: staged in {key['file']} (address {key['address']})")
    return {
        "before": "\n".join(before) + "\n",
        "after": "\n".join(after) + "\n",
        "before_header": f"adoption of {n['datadir']} ({n['name']})",
        "after_header": f"adoption of {n['datadir']} ({n['name']})",
    }


def main():
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
    )
    result, error = None, None
    try:
        result = run(module)
    except ValidationError as exc:
        error = str(exc)
    except (OSError, ValueError) as exc:
        error = f"datadir: cannot adopt {module.params.get('datadir')}: {exc}"
    if error is not None:
        module.fail_json(msg=error)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
