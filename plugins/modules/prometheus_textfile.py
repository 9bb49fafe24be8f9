#!/usr/bin/python
# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: prometheus_textfile
short_description: Write node_exporter textfile-collector files atomically, never through a symlink
version_added: "0.2.0"
description:
  - Writes each of O(files) into the textfile collector directory O(path) in one execution. Each file is written to a
    temp file in the directory, then renamed into place, so node_exporter never reads half a file.
  - The directory is made root's (O(owner), O(group), O(dir_mode)) and opened one component at a time without
    following a symlink. Its parent may belong to the prometheus user, who must not be able to point root's write at
    another directory; a symlink anywhere in O(path) fails the task before anything is written.
  - Every file is written on every run, so its timestamps stay fresh for the collector-stale alert. The task reports
    C(changed) only when a file is new, has another owner or mode, or its samples differ in more than the values that
    move with the clock alone (timestamps, uptimes, query times, tip ages; C(stable_text) in
    C(plugins/module_utils/metrics.py)). A scheduled status job stays green and quiet.
author:
  - nodefleet.bitcoin contributors (@nodefleet)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reads the directory and the files and reports what a run would change; writes nothing.
  diff_mode:
    support: full
    details: The old and new text of each file that changed in more than the clock. Metrics hold no secrets.
  platform:
    platforms: posix
options:
  path:
    description: The textfile collector directory (node_exporter's C(--collector.textfile.directory)). Missing components are created.
    type: path
    required: true
  files:
    description: The files to write into O(path).
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: A file name ending in C(.prom) (node_exporter reads only those), without a directory.
        type: str
        required: true
      content:
        description: The metrics text.
        type: str
        required: true
  owner:
    description: Owner of the directory and the files.
    type: str
    default: root
  group:
    description: Group of the directory and the files.
    type: str
    default: root
  mode:
    description: Mode of the files (octal string).
    type: str
    default: "0644"
  dir_mode:
    description: Mode of the directory (octal string).
    type: str
    default: "0755"
"""

EXAMPLES = r"""
- name: Write the Prometheus textfiles
  nodefleet.bitcoin.prometheus_textfile:
    path: /var/lib/prometheus/node-exporter
    files:
      - name: nodefleet_bitcoind.prom
        content: "{{ result | nodefleet.bitcoin.fleet_status_prometheus(inventory_hostname) }}"
"""

RETURN = r"""
files:
  description: One per O(files) item, in order - C(name), C(path), C(changed) (more than the clock moved) and C(written).
  returned: always
  type: list
  elements: dict
dir_changed:
  description: Whether the directory was created or got another owner, group or mode.
  returned: always
  type: bool
"""

import grp
import os
import pwd
import re

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import safe_fs
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.metrics import stable_text

NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\.prom\Z")


class TextfileError(ValueError):
    """Bad input, named by its option."""


def _mode(option: str, value: str) -> int:
    if not isinstance(value, str) or not re.match(r"^0?[0-7]{3,4}\Z", value):
        raise TextfileError(f"{option}: {value!r} is not an octal mode such as '0644'")
    mode = int(value, 8)
    if mode & ~0o7777:
        raise TextfileError(f"{option}: {value!r} is not an octal mode such as '0644'")
    return mode


def _ids(owner: str, group: str) -> tuple[int, int]:
    try:
        uid = pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise TextfileError(f"owner: no user {owner!r} on this host") from None
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        raise TextfileError(f"group: no group {group!r} on this host") from None
    return uid, gid


def check_files(files) -> list:
    """The (name, content) pairs of ``files``, refusing a name that is not a plain ``*.prom`` file name."""
    seen = set()
    pairs = []
    for index, item in enumerate(files):
        name, content = item["name"], item["content"]
        if not NAME.match(name or ""):
            raise TextfileError(
                f"files[{index}].name: {name!r} must be a plain file name ending in .prom (no directory, no leading dot)"
            )
        if name in seen:
            raise TextfileError(f"files[{index}].name: {name!r} is listed twice")
        seen.add(name)
        pairs.append((name, content))
    return pairs


def _differs(old: bytes | None, st, new: str, uid: int, gid: int, mode: int) -> bool:
    if old is None or safe_fs.attrs_differ(st, uid, gid, mode):
        return True
    try:
        old_text = old.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return stable_text(old_text) != stable_text(new)


def converge(path: str, pairs: list, uid: int, gid: int, mode: int, dir_mode: int, write: bool) -> tuple[bool, list]:
    """Whether the directory changes, and per file (name, old bytes or None, changed).

    One walk of ``path`` (one directory descriptor): every file is read and compared first, so a
    refusal (a symlink in place of a file) writes nothing; then, with ``write``, the directory's
    owner and mode are set through the descriptor and every file is written into it.
    """
    kind = safe_fs.inspect_path(path)
    if kind not in ("missing", "dir"):
        raise safe_fs.UnsafePath(path, "exists and is not a directory")
    created = kind == "missing"
    if created and not write:
        return True, [(name, None, True) for name, _content in pairs]
    depth = len([p for p in path.split("/") if p])
    with safe_fs.opened_dir(path, create=depth if created else 0, mode=dir_mode) as dir_fd:
        dir_changed = created or safe_fs.attrs_differ(os.fstat(dir_fd), uid, gid, dir_mode)
        planned = []
        for name, content in pairs:
            old = safe_fs.read_at(dir_fd, name, shown=os.path.join(path, name))
            planned.append((name, old, _differs(old, safe_fs.lstat_at(dir_fd, name), content, uid, gid, mode)))
        if write:
            safe_fs.set_attrs_fd(dir_fd, uid, gid, dir_mode)
            for name, content in pairs:
                safe_fs.write_at(dir_fd, name, content, uid=uid, gid=gid, mode=mode, shown=os.path.join(path, name))
    return dir_changed, planned


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            files=dict(
                type="list",
                elements="dict",
                required=True,
                options=dict(name=dict(type="str", required=True), content=dict(type="str", required=True)),
            ),
            owner=dict(type="str", default="root"),
            group=dict(type="str", default="root"),
            mode=dict(type="str", default="0644"),
            dir_mode=dict(type="str", default="0755"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    path = params["path"]
    try:
        if not os.path.isabs(path):
            raise TextfileError(f"path: {path!r} must be an absolute path")
        path = os.path.normpath(path)
        mode = _mode("mode", params["mode"])
        dir_mode = _mode("dir_mode", params["dir_mode"])
        pairs = check_files(params["files"])
        uid, gid = _ids(params["owner"], params["group"])
        dir_changed, planned = converge(path, pairs, uid, gid, mode, dir_mode, write=not module.check_mode)
    except TextfileError as exc:
        module.fail_json(msg=str(exc))
    except safe_fs.UnsafePath as exc:
        module.fail_json(msg=f"path: {exc}")
    except OSError as exc:
        module.fail_json(msg=f"path: cannot write into {path}: {exc.strerror or exc}")

    changed = dir_changed or any(file_changed for _name, _old, file_changed in planned)
    diff = []
    if module._diff:
        for (name, old, file_changed), (_name, content) in zip(planned, pairs):
            if not file_changed:
                continue
            diff.append(
                {
                    "before_header": os.path.join(path, name),
                    "after_header": os.path.join(path, name),
                    "before": (old or b"").decode("utf-8", "replace"),
                    "after": content,
                }
            )
    files = [
        {"name": name, "path": os.path.join(path, name), "changed": file_changed, "written": not module.check_mode}
        for name, _old, file_changed in planned
    ]
    result = dict(changed=changed, dir_changed=dir_changed, files=files)
    if diff:
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
