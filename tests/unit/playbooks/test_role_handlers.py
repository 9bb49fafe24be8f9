# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which handler each task of roles/supervisor and roles/tor notifies, and what that handler does.

A change that systemd applies after a daemon-reload (a unit drop-in: KillMode, Restart, RestartSec,
TimeoutStopSec) must never restart supervisor.service (every bitcoind of the host) or tor; a torrc
change reloads tor (SIGHUP), never restarts it; only supervisord's own settings restart supervisord.
Read from the roles' YAML, so the test needs no host.
"""

from __future__ import annotations

import os

import pytest
import yaml

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")
SYSTEMD = ("ansible.builtin.systemd_service", "ansible.builtin.systemd", "systemd_service", "systemd")
SERVICE = ("ansible.builtin.service", "service")


def _load(role: str, kind: str) -> list:
    with open(os.path.join(ROOT, "roles", role, kind, "main.yml"), encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _tasks(items: list) -> list:
    """Every task, with the ones inside block/rescue/always."""
    out = []
    for item in items:
        for key in ("block", "rescue", "always"):
            if key in item:
                out.extend(_tasks(item[key]))
        if not any(key in item for key in ("block", "rescue", "always")):
            out.append(item)
    return out


def _action(task: dict):
    for key in (*SYSTEMD, *SERVICE):
        if key in task:
            return key, task[key] or {}
    return None, {}


def _handlers(role: str) -> dict:
    """handler name (and listen topic) -> what it does: 'restart', 'reload', 'daemon-reload' or 'other'."""
    out = {}
    for handler in _load(role, "handlers"):
        args = _action(handler)[1]
        state = args.get("state")
        if state == "restarted":
            effect = "restart"
        elif state == "reloaded":
            effect = "reload"
        elif args.get("daemon_reload") and not state and not args.get("name"):
            effect = "daemon-reload"
        else:
            effect = "other"
        listen = handler.get("listen") or []
        for topic in [handler["name"], *([listen] if isinstance(listen, str) else listen)]:
            out.setdefault(topic, set()).add(effect)
    return out


def _notified(role: str, predicate) -> set:
    handlers = _handlers(role)
    tasks = [t for t in _tasks(_load(role, "tasks")) if predicate(t)]
    assert tasks, f"no task of roles/{role} matched"
    effects = set()
    for task in tasks:
        notify = task.get("notify") or []
        for name in [notify] if isinstance(notify, str) else notify:
            assert name in handlers, f"roles/{role}: task {task['name']!r} notifies unknown handler {name!r}"
            effects |= handlers[name]
    return effects


def _dest(task: dict) -> str:
    for key in ("ansible.builtin.template", "ansible.builtin.copy", "template", "copy"):
        if key in task:
            return str(task[key].get("dest", ""))
    return ""


def _is_lineinfile_on(path_var: str):
    def match(task):
        args = task.get("ansible.builtin.lineinfile") or {}
        return path_var in str(args.get("path", ""))

    return match


# ------------------------------------------------------------------ supervisor


def test_supervisor_dropin_change_only_reloads_systemd():
    effects = _notified("supervisor", lambda t: "supervisor_systemd_dropin_dir" in _dest(t))
    assert effects == {"daemon-reload"}, effects


def test_supervisor_own_configuration_change_restarts_supervisord():
    effects = _notified("supervisor", lambda t: _dest(t).endswith("nodefleet-supervisord.conf"))
    assert effects == {"restart"}, effects


def test_supervisor_package_install_restarts_nothing():
    # apt starts a newly installed supervisord itself; the drop-in then needs only a daemon-reload
    effects = _notified("supervisor", lambda t: "ansible.builtin.apt" in t)
    assert effects == set(), effects


def test_supervisor_restart_is_the_only_restart_and_follows_the_reload():
    handlers = _load("supervisor", "handlers")
    effects = [_handlers("supervisor")[h["name"]] for h in handlers]
    assert effects.count({"restart"}) == 1
    # handlers run in file order: a run that changes both reloads systemd first
    assert effects.index({"daemon-reload"}) < effects.index({"restart"})


def test_supervisor_conf_template_sets_a_bounded_main_log():
    with open(os.path.join(ROOT, "roles", "supervisor", "templates", "nodefleet-supervisord.conf.j2")) as fh:
        text = fh.read()
    assert "[supervisord]" in text
    assert "logfile_maxbytes={{ supervisor_logfile_maxbytes }}" in text
    assert "logfile_backups={{ supervisor_logfile_backups }}" in text
    with open(os.path.join(ROOT, "roles", "supervisor", "defaults", "main.yml")) as fh:
        defaults = yaml.safe_load(fh)
    assert defaults["supervisor_logfile_maxbytes"] not in (0, "0")


# ------------------------------------------------------------------ tor


def test_tor_dropin_change_only_reloads_systemd():
    effects = _notified("tor", lambda t: "/etc/systemd/system/" in _dest(t))
    assert effects == {"daemon-reload"}, effects


def test_tor_torrc_change_reloads_tor_not_restarts():
    effects = _notified("tor", _is_lineinfile_on("tor_torrc_file"))
    assert effects == {"reload"}, effects


@pytest.mark.parametrize("role", ["supervisor", "tor"])
def test_no_task_restarts_a_service_directly(role):
    for task in _tasks(_load(role, "tasks")):
        args = _action(task)[1]
        assert args.get("state") != "restarted", f"roles/{role}: {task['name']!r} restarts a service"


def test_no_handler_of_tor_restarts_tor():
    assert all("restart" not in effects for effects in _handlers("tor").values())
