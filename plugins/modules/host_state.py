#!/usr/bin/python
# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: host_state
short_description: Read the files, packages, systemd units and accounts a role decides from, in one execution
version_added: "0.2.0"
description:
  - Reads, without changing anything, what a role's tasks manage on the host - paths (C(lstat), never following
    a link, with the sha256 of a regular file), the entries of directories, dpkg packages, systemd units, users,
    groups and the last line of a file that a regexp matches - and returns it in one dict.
  - A role gathers once and skips each task whose target already is as the task would leave it (the
    C(host_path_ok), C(host_line_ok), C(host_packages_ok), C(host_unit_ok), C(host_user_ok) and C(host_group_ok)
    filters decide, with the rules of the module the task runs). A converged host then pays one execution for
    all of them instead of one per task; a host that differs runs the task as before, with its diff and
    its handlers.
  - Anything that cannot be read (a unit systemd does not know, a file too big or not regular) is returned as
    unknown, and the filters answer that the task must run.
  - Do not list files that hold secrets in O(paths), because their sha256 is returned.
author:
  - nodefleet.bitcoin contributors (@nodefleet)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Read-only; check mode runs the same reads.
  diff_mode:
    support: none
    details: Nothing is changed.
  platform:
    platforms: posix
options:
  paths:
    description: Paths to C(lstat); a regular file also gets its sha256 (up to 16 MiB).
    type: list
    elements: path
    default: []
  dirs:
    description: Directories whose entries (name, type, link target) are listed, one level deep.
    type: list
    elements: path
    default: []
  packages:
    description: dpkg package names (C(dpkg-query)); a package is installed when its status is C(installed).
    type: list
    elements: str
    default: []
  units:
    description: systemd unit names (one C(systemctl show) for all of them).
    type: list
    elements: str
    default: []
  users:
    description: User names (uid, primary gid, home, shell).
    type: list
    elements: str
    default: []
  groups:
    description: Group names (gid).
    type: list
    elements: str
    default: []
  lines:
    description: For each, the last line of O(lines[].path) that O(lines[].regexp) finds, as M(ansible.builtin.lineinfile) picks it.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: The file.
        type: path
        required: true
      regexp:
        description: A Python regular expression searched in each line.
        type: str
        required: true
"""

EXAMPLES = r"""
- name: Read what this role manages on the host
  nodefleet.bitcoin.host_state:
    paths: [/etc/supervisor/conf.d, /etc/systemd/system/supervisor.service.d/nodefleet.conf]
    packages: [supervisor]
    units: [supervisor.service]
  register: host

- name: Install the drop-in (skipped when the host already has exactly it)
  ansible.builtin.template:
    src: nodefleet.conf.j2
    dest: /etc/systemd/system/supervisor.service.d/nodefleet.conf
    owner: root
    group: root
    mode: "0644"
  when: >-
    not (host | nodefleet.bitcoin.host_path_ok('/etc/systemd/system/supervisor.service.d/nodefleet.conf',
         'file', owner='root', group='root', mode='0644',
         sha256=lookup('ansible.builtin.template', 'nodefleet.conf.j2') | hash('sha256')))
"""

RETURN = r"""
paths:
  description: Path -> C(exists) (false when missing, null when it cannot be read), C(type) (file, directory, link, other),
    C(mode) (e.g. C(0644)), C(uid), C(gid), C(owner), C(group), C(size), C(sha256) (regular files), C(target) (links).
  returned: always
  type: dict
dirs:
  description: Directory -> C(exists) and C(entries), name -> C(type) and, for a link, C(target).
  returned: always
  type: dict
packages:
  description: Package -> C(installed) and C(version).
  returned: always
  type: dict
units:
  description: Unit -> C(load), C(active) and C(unit_file) (systemd's LoadState, ActiveState, UnitFileState).
  returned: always
  type: dict
users:
  description: User -> C(exists), C(uid), C(gid), C(home), C(shell).
  returned: always
  type: dict
groups:
  description: Group -> C(exists), C(gid).
  returned: always
  type: dict
lines:
  description: One per O(lines) item, in order - C(path), C(regexp), C(readable), C(line) (the last match with its line ending, or null).
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.host_state import gather


def main():
    module = AnsibleModule(
        argument_spec=dict(
            paths=dict(type="list", elements="path", default=[]),
            dirs=dict(type="list", elements="path", default=[]),
            packages=dict(type="list", elements="str", default=[]),
            units=dict(type="list", elements="str", default=[]),
            users=dict(type="list", elements="str", default=[]),
            groups=dict(type="list", elements="str", default=[]),
            lines=dict(
                type="list",
                elements="dict",
                default=[],
                options=dict(path=dict(type="path", required=True), regexp=dict(type="str", required=True)),
            ),
        ),
        supports_check_mode=True,
    )
    params = module.params

    def run(argv):
        # No executable (a host without dpkg or systemd): unknown, so every task that needs it runs.
        if module.get_bin_path(argv[0]) is None:
            return 127, "", "%s not found" % argv[0]
        return module.run_command(argv, environ_update={"LC_ALL": "C", "SYSTEMD_PAGER": ""})

    try:
        state = gather(
            paths=params["paths"],
            dirs=params["dirs"],
            packages=params["packages"],
            units=params["units"],
            users=params["users"],
            groups=params["groups"],
            lines=params["lines"],
            run=run,
        )
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    for warning in state.pop("warnings"):
        module.warn(warning)
    module.exit_json(changed=False, **state)


if __name__ == "__main__":
    main()
