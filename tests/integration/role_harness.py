"""Run the collection's roles with ansible-playbook against localhost (connection=local) in a
throwaway collection tree, so role glue (variable resolution between roles, derived variables)
is tested for real without touching this machine.

``stub_collection(tmp, stubs)`` builds ``<tmp>/collections/ansible_collections/nodefleet/bitcoin``
whose roles/ and plugins/ are the repository's, except the roles named in ``stubs``: those keep
their real ``defaults/`` and ``meta/argument_specs.yml`` (so precedence and validation are the
real ones) but get the given task files instead of theirs. ``run_play`` runs a playbook there
and returns (rc, output, {key: value} of every ``HARNESS key=value`` debug line).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import yaml

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.dirname(sys.executable)
SEEN = re.compile(r"HARNESS (\S+?)=(.*?)(?:\"|'|$)", re.MULTILINE)


def stub_collection(tmp, stubs: dict, fake_modules: dict | None = None) -> str:
    """stubs: role name -> {task file name: list of tasks}; fake_modules: module name -> source
    (replacing the collection's module of that name). Returns the collections path."""
    root = os.path.join(str(tmp), "collections")
    coll = os.path.join(root, "ansible_collections", "nodefleet", "bitcoin")
    os.makedirs(os.path.join(coll, "roles"))
    for name in ("galaxy.yml", "meta"):
        if os.path.exists(os.path.join(REPO, name)):
            os.symlink(os.path.join(REPO, name), os.path.join(coll, name))
    if not fake_modules:
        os.symlink(os.path.join(REPO, "plugins"), os.path.join(coll, "plugins"))
    else:
        os.makedirs(os.path.join(coll, "plugins", "modules"))
        for sub in sorted(os.listdir(os.path.join(REPO, "plugins"))):
            if sub != "modules":
                os.symlink(os.path.join(REPO, "plugins", sub), os.path.join(coll, "plugins", sub))
        for module in sorted(os.listdir(os.path.join(REPO, "plugins", "modules"))):
            if module.endswith(".py") and module[:-3] not in fake_modules:
                os.symlink(
                    os.path.join(REPO, "plugins", "modules", module), os.path.join(coll, "plugins", "modules", module)
                )
        for module, source in fake_modules.items():
            with open(os.path.join(coll, "plugins", "modules", module + ".py"), "w", encoding="utf-8") as handle:
                handle.write(source)
    for role in sorted(os.listdir(os.path.join(REPO, "roles"))):
        real = os.path.join(REPO, "roles", role)
        dest = os.path.join(coll, "roles", role)
        if role not in stubs:
            os.symlink(real, dest)
            continue
        os.makedirs(os.path.join(dest, "tasks"))
        for sub in ("defaults", "meta", "vars", "files", "templates"):
            if os.path.isdir(os.path.join(real, sub)):
                os.symlink(os.path.join(real, sub), os.path.join(dest, sub))
        for task_file in sorted(os.listdir(os.path.join(real, "tasks"))):
            if task_file not in stubs[role]:
                os.symlink(os.path.join(real, "tasks", task_file), os.path.join(dest, "tasks", task_file))
        for task_file, tasks in stubs[role].items():
            with open(os.path.join(dest, "tasks", task_file), "w", encoding="utf-8") as handle:
                yaml.safe_dump(tasks, handle, sort_keys=False)
    return root


def record(key: str, template: str) -> dict:
    """A debug task whose output run_play collects as key=value."""
    return {"name": f"harness {key}", "ansible.builtin.debug": {"msg": f"HARNESS {key}={template}"}}


def run_play(tmp, collections: str, play: list, host_vars: dict, extra_args=(), hosts=None, env=None) -> tuple:
    """host_vars: the vars of the one host `testnode`, or with hosts= a dict host -> vars."""
    inventory = os.path.join(str(tmp), "inventory.yml")
    # The bitcoind role installs its exit-notify wrapper (files/): into the temp dir, never this machine's
    # /usr/local/sbin (a test's own host vars win).
    sbin = os.path.join(str(tmp), "harness-sbin")
    os.makedirs(sbin, exist_ok=True)
    local = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "bitcoind_exit_notify_path": os.path.join(sbin, "nodefleet-exit-notify"),
    }
    all_hosts = {h: {**local, **v} for h, v in (hosts or {"testnode": host_vars}).items()}
    with open(inventory, "w", encoding="utf-8") as handle:
        yaml.safe_dump({"fleet": {"hosts": all_hosts}}, handle)
    playbook = os.path.join(str(tmp), "play.yml")
    with open(playbook, "w", encoding="utf-8") as handle:
        yaml.safe_dump(play, handle, sort_keys=False)
    cfg = os.path.join(str(tmp), "ansible.cfg")
    with open(cfg, "w", encoding="utf-8") as handle:
        handle.write(f"[defaults]\ncollections_path = {collections}\nretry_files_enabled = false\n")
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=cfg,
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default",
        **(env or {}),
    )
    env.pop("ANSIBLE_COLLECTIONS_PATH", None)
    proc = subprocess.run(
        [os.path.join(BIN, "ansible-playbook"), "-i", inventory, playbook, *extra_args],
        cwd=str(tmp),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = proc.stdout + proc.stderr
    return proc.returncode, out, dict(SEEN.findall(out))
