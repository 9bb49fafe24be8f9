# Copyright (c) nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The local fleet's transport: containers.podman.podman with Ansible pipelining.

containers.podman's connection runs `podman exec` without `-i`, so the module cannot come on
stdin and the plugin declares no pipelining: every module execution costs four `podman exec`
runs (make a temp dir, chmod, run, remove). This subclass passes `-i` when Ansible sends
data on stdin and declares pipelining, so a module execution is one `podman exec`, as over
ssh with pipelining. Everything else (put_file/fetch_file through the container's mount,
options, errors) is the maintained plugin's own code.
"""

from __future__ import annotations

DOCUMENTATION = """
name: podman_pipelined
short_description: containers.podman.podman with pipelining (the local test fleet's transport)
description:
  - Runs commands in an existing podman container like C(containers.podman.podman), and sends
    modules on stdin (C(podman exec -i)) so that Ansible pipelining works.
  - Used by the local podman fleet of nodefleet.bitcoin (tests/fleet); not part of the collection.
author: nodefleet.bitcoin contributors
options:
  remote_addr:
    description: The name or ID of the container.
    default: inventory_hostname
    vars:
      - name: ansible_host
      - name: inventory_hostname
      - name: ansible_podman_host
  remote_user:
    description: User (name or UID) that runs the commands inside the container.
    ini:
      - section: defaults
        key: remote_user
    env:
      - name: ANSIBLE_REMOTE_USER
    vars:
      - name: ansible_user
  podman_extra_args:
    description: Extra arguments for the podman command line.
    default: ''
    ini:
      - section: defaults
        key: podman_extra_args
    vars:
      - name: ansible_podman_extra_args
    env:
      - name: ANSIBLE_PODMAN_EXTRA_ARGS
  podman_executable:
    description: Executable for the podman command.
    default: podman
    vars:
      - name: ansible_podman_executable
    env:
      - name: ANSIBLE_PODMAN_EXECUTABLE
"""

import shlex

from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.connection import ensure_connect
from ansible_collections.containers.podman.plugins.connection.podman import Connection as PodmanConnection


class Connection(PodmanConnection):
    """containers.podman.podman, with stdin attached when Ansible sends data (pipelining)."""

    transport = "podman_pipelined"
    has_pipelining = True

    @ensure_connect
    def exec_command(self, cmd, in_data=None, sudoable=False):
        # ConnectionBase.exec_command only logs; the parent's override is what is replaced here.
        super(PodmanConnection, self).exec_command(cmd, in_data=in_data, sudoable=sudoable)
        exec_args = ["exec"]
        if in_data is not None:
            exec_args.append("--interactive")
        if self.user:
            exec_args.extend(("--user", self.user))
        return self._podman(exec_args, shlex.split(to_native(cmd, errors="surrogate_or_strict")), in_data)
