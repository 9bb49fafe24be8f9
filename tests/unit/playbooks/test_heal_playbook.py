# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""playbooks/heal.yml read as YAML: the hang window's variables reach every confirmation probe,
the instance decision uses the lock-free RPC probe with its credentials on stdin, and nothing in
heal reads bitcoind's debug.log (bitcoind logs to supervisord's program log by default)."""

from __future__ import annotations

import json
import os

import yaml

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")
PLAYBOOK = os.path.join(ROOT, "playbooks", "heal.yml")
HELPER = os.path.join(ROOT, "playbooks", "files", "nodefleet_heal.py")


def _play() -> dict:
    with open(PLAYBOOK, encoding="utf-8") as fh:
        (play,) = yaml.safe_load(fh)
    return play


def _text(value) -> str:
    return json.dumps(value, sort_keys=True)


def _uses(task: dict, var: str, play_vars: dict, depth: int = 3) -> bool:
    """Whether the task's text references ``var``, directly or through play vars it references."""
    text = _text(task)
    if var in text:
        return True
    if depth == 0:
        return False
    return any(name in text and _uses({"v": value}, var, play_vars, depth - 1) for name, value in play_vars.items())


def test_every_confirmation_waits_the_delay_over_the_window():
    play = _play()
    play_vars = play["vars"]
    confirms = [t for t in play["tasks"] if t["name"].startswith("Watch ")]
    assert len(confirms) == 3, [t["name"] for t in confirms]  # supervisord, tor, instances
    for task in confirms:
        for var in ("heal_confirm_delay", "heal_hang_window", "heal_hang_probes"):
            assert _uses(task, var, play_vars), f"{task['name']!r} ignores {var}"
    for var in ("heal_confirm_delay", "heal_hang_window", "heal_hang_probes"):
        assert var in play_vars


def test_instances_are_decided_by_the_lock_free_probe_with_credentials_on_stdin():
    play = _play()
    (task,) = [t for t in play["tasks"] if "check-rpc" in _text(t)]
    args = task["ansible.builtin.command"]
    assert "stdin" in args and "heal_rpc_targets" in args["stdin"]
    assert "password" not in _text(args["argv"]) and "rpc_users" not in _text(args["argv"])
    assert task.get("no_log") is True
    hung = [t for t in play["tasks"] if "heal_hung" in _text(t.get("ansible.builtin.set_fact", {}))]
    assert hung and "heal_rpc_watch" in _text(hung[0]), "heal_hung must come from the uptime watch"


def test_heal_does_not_read_debug_log():
    for path in (PLAYBOOK, HELPER):
        with open(path, encoding="utf-8") as fh:
            assert "debug.log" not in fh.read(), path
