# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Would the task that manages this change nothing? Answered from the host_state module's result.

One filter per kind of task (documented in the host_*.yml files beside this one); the rules are
in module_utils/host_state.py, which the host_state module uses to read the host.
"""

from __future__ import annotations


def _rules():
    # Imported on use: Ansible loads every filter file of the collection in each worker that resolves
    # any of its filters (plugins/filter/README.md), so a module-level import would cost every task.
    from ansible_collections.nodefleet.bitcoin.plugins.module_utils import host_state

    return host_state


def host_path_ok(host, path, state, owner=None, group=None, mode=None, sha256=None, target=None):
    return _rules().path_ok(host, path, state, owner=owner, group=group, mode=mode, sha256=sha256, target=target)


def host_line_ok(host, path, regexp, line):
    return _rules().line_ok(host, path, regexp, line)


def host_packages_ok(host, names):
    return _rules().packages_ok(host, names)


def host_unit_ok(host, name, enabled=None, started=None):
    return _rules().unit_ok(host, name, enabled=enabled, started=started)


def host_user_ok(host, name, group=None, home=None, shell=None):
    return _rules().user_ok(host, name, group=group, home=home, shell=shell)


def host_group_ok(host, name):
    return _rules().group_ok(host, name)


def host_dir_entries(host, path, type=None):
    return _rules().dir_entries(host, path, entry_type=type)


class FilterModule:
    def filters(self):
        return {
            "host_path_ok": host_path_ok,
            "host_line_ok": host_line_ok,
            "host_packages_ok": host_packages_ok,
            "host_unit_ok": host_unit_ok,
            "host_user_ok": host_user_ok,
            "host_group_ok": host_group_ok,
            "host_dir_entries": host_dir_entries,
        }
