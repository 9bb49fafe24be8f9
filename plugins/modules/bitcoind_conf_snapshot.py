#!/usr/bin/python
# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bitcoind_conf_snapshot
short_description: Keep a copy of instances' bitcoin.conf on the host and put it back (rollback)
version_added: "0.2.0"
description:
  - The rolling upgrade (C(playbooks/upgrade.yml)) records each instance's C(bitcoin.conf) before the converge
    (O(state=saved)) and, when a health gate fails, puts the recorded file back for the instances it rolls back
    (O(state=restored)) before restarting them on the previous release.
  - The copy stays on the managed host, in a root-owned directory (O(snapshot_dir), mode 0700, each file 0600);
    nothing of the file's content is returned, shown in a diff or logged.
  - Files are read and written with the collection's symlink-refusing, descriptor-based operations
    (C(module_utils/safe_fs)) - a datadir is owned by the daemon user, who could otherwise swap a path component
    for a symlink. A restored C(bitcoin.conf) is written atomically with O(owner), O(group) and mode 0600.
  - O(state=saved) with an instance that has no C(bitcoin.conf) yet removes its old snapshot (nothing to go back
    to). O(state=restored) for an instance without a snapshot fails naming it, before anything is written.
author:
  - nodefleet.bitcoin contributors (@nodefleet)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
    details: The files hold rpcauth lines; their content is never shown.
  platform:
    platforms: posix
options:
  instances:
    description: The instances, each with its O(instances[].name) and O(instances[].datadir).
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Instance name (a safe identifier); the snapshot file is C(<snapshot_dir>/<name>.conf).
        type: str
        required: true
      datadir:
        description: The instance's datadir (absolute); the file is C(<datadir>/bitcoin.conf).
        type: str
        required: true
  state:
    description: V(saved) copies each C(bitcoin.conf) into O(snapshot_dir); V(restored) writes the copies back.
    type: str
    choices: [saved, restored]
    required: true
  snapshot_dir:
    description: Root-owned directory of the copies (created 0700 when missing, with its parent).
    type: path
    default: /var/lib/nodefleet/rollback
  owner:
    description: Owner of a restored C(bitcoin.conf).
    type: str
    default: bitcoin
  group:
    description: Group of a restored C(bitcoin.conf).
    type: str
    default: bitcoin
"""

EXAMPLES = r"""
- name: Remember bitcoin.conf before the converge
  nodefleet.bitcoin.bitcoind_conf_snapshot:
    state: saved
    instances:
      - {name: main1, datadir: /var/lib/bitcoind/main1}

- name: Put it back for a rolled-back instance
  nodefleet.bitcoin.bitcoind_conf_snapshot:
    state: restored
    instances:
      - {name: main1, datadir: /var/lib/bitcoind/main1}
"""

RETURN = r"""
saved:
  description: Instances whose snapshot was written or changed (O(state=saved)).
  returned: always
  type: list
  elements: str
missing:
  description: Instances without a C(bitcoin.conf) (O(state=saved); their old snapshot is removed).
  returned: always
  type: list
  elements: str
restored:
  description: Instances whose C(bitcoin.conf) was written back because it differed (O(state=restored)).
  returned: always
  type: list
  elements: str
"""

import grp
import os
import pwd

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import safe_fs
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import (
    ValidationError,
    check_abs_path,
    check_managed_dir,
    check_name,
)

CONF_NAME = "bitcoin.conf"


def validate(params: dict) -> tuple[list[tuple[str, str]], str]:
    snapshot_dir = check_managed_dir("snapshot_dir", params["snapshot_dir"])
    seen = set()
    out = []
    for index, item in enumerate(params["instances"]):
        name = check_name("instances[%d].name" % index, item.get("name"))
        if name in seen:
            raise ValidationError("instances[%d].name" % index, "%s is listed twice" % name)
        seen.add(name)
        datadir = check_abs_path("instances[%d].datadir" % index, item.get("datadir"))
        out.append((name, datadir))
    return out, snapshot_dir


def lookup_ids(owner: str, group: str) -> tuple[int, int]:
    try:
        uid = pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise ValidationError("owner", "user %r does not exist" % owner) from None
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValidationError("group", "group %r does not exist" % group) from None
    return uid, gid


def snapshot_path(snapshot_dir: str, name: str) -> str:
    return os.path.join(snapshot_dir, name + ".conf")


def save(instances, snapshot_dir: str, check_mode: bool) -> dict:
    saved, missing = [], []
    for name, datadir in instances:
        current = safe_fs.read_file(os.path.join(datadir, CONF_NAME))
        old = safe_fs.read_file(snapshot_path(snapshot_dir, name)) if os.path.isdir(snapshot_dir) else None
        if current is None:
            missing.append(name)
            if old is not None and not check_mode:
                with safe_fs.opened_dir(snapshot_dir) as dir_fd:
                    safe_fs.unlink_at(dir_fd, name + ".conf")
            continue
        if current != old:
            saved.append(name)
            if not check_mode:
                with safe_fs.opened_dir(snapshot_dir, create=2, mode=0o700) as dir_fd:
                    safe_fs.set_attrs_fd(dir_fd, uid=0, gid=0, mode=0o700)
                    safe_fs.write_at(dir_fd, name + ".conf", current, uid=0, gid=0, mode=0o600)
    return {"saved": saved, "missing": missing, "restored": []}


def restore(instances, snapshot_dir: str, uid: int, gid: int, check_mode: bool) -> dict:
    snapshots = {}
    for name, _datadir in instances:
        data = safe_fs.read_file(snapshot_path(snapshot_dir, name))
        if data is None:
            raise ValidationError("instances", "no snapshot of %s in %s to restore" % (name, snapshot_dir))
        snapshots[name] = data
    restored = []
    for name, datadir in instances:
        path = os.path.join(datadir, CONF_NAME)
        if safe_fs.read_file(path) != snapshots[name]:
            restored.append(name)
            if not check_mode:
                safe_fs.write_file(path, snapshots[name], uid=uid, gid=gid, mode=0o600)
    return {"saved": [], "missing": [], "restored": restored}


def main():
    module = AnsibleModule(
        argument_spec={
            "instances": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": {"name": {"type": "str", "required": True}, "datadir": {"type": "str", "required": True}},
            },
            "state": {"type": "str", "choices": ["saved", "restored"], "required": True},
            "snapshot_dir": {"type": "path", "default": "/var/lib/nodefleet/rollback"},
            "owner": {"type": "str", "default": "bitcoin"},
            "group": {"type": "str", "default": "bitcoin"},
        },
        supports_check_mode=True,
    )
    error = None
    result = None
    try:
        instances, snapshot_dir = validate(module.params)
        if module.params["state"] == "saved":
            result = save(instances, snapshot_dir, module.check_mode)
        else:
            uid, gid = lookup_ids(module.params["owner"], module.params["group"])
            result = restore(instances, snapshot_dir, uid, gid, module.check_mode)
    except ValidationError as exc:
        error = str(exc)
    except safe_fs.UnsafePath as exc:
        error = "refusing %s" % exc
    except OSError as exc:
        error = "%s: %s" % (getattr(exc, "filename", None) or "bitcoin.conf snapshot", exc.strerror or exc)
    if error is not None:
        module.fail_json(msg=error)
    module.exit_json(changed=bool(result["saved"] or result["restored"]), **result)


if __name__ == "__main__":
    main()
