"""Run one collection module through the real ``ansible`` CLI, as a user does.

Shared by the module integration tests: argument_spec, check mode, diff and no_log are
exercised end to end; the JSON callback's result for localhost comes back with the raw
output (so tests can grep it for secrets). Two forms:

- ``run_collection_module``: an ad-hoc ``ansible localhost -m ...`` call;
- ``run_collection_module_in_playbook``: a one-task playbook, for tests that look at
  ``-vvvv`` output (an ad-hoc call prints its raw ``-a`` arguments there, a playbook task
  does not, so only this form can show that a module keeps a value out of its output).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.dirname(sys.executable)


def _cli_flags(check: bool, diff: bool, verbosity: int) -> list[str]:
    flags = []
    if check:
        flags.append("--check")
    if diff:
        flags.append("--diff")
    if verbosity:
        flags.append("-" + "v" * verbosity)
    return flags


def _run_json(cmd: list[str], expect_success: bool):
    """Run an ansible command with the JSON callback; return (localhost's result, raw output)."""
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
        ANSIBLE_STDOUT_CALLBACK="json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_NOCOLOR="1",
    )
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False)
    if expect_success:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    start = proc.stdout.find("{\n")
    assert start >= 0, f"no JSON in the output:\n{proc.stdout}\n{proc.stderr}"
    result = json.loads(proc.stdout[start:])["plays"][0]["tasks"][0]["hosts"]["localhost"]
    return result, proc.stdout + proc.stderr


def run_collection_module(
    module: str, args: dict, check: bool = False, diff: bool = False, verbosity: int = 0, expect_success: bool = False
):
    """Run nodefleet.bitcoin.<module> on localhost ad hoc; return (result, raw stdout+stderr).

    expect_success: assert that ansible exited 0 (otherwise a failed result is returned)."""
    cmd = [os.path.join(BIN, "ansible"), "localhost", "-i", "localhost,", "-c", "local"]
    cmd += ["-e", json.dumps({"ansible_python_interpreter": sys.executable})]
    cmd += ["-m", "nodefleet.bitcoin.%s" % module, "-a", json.dumps(args)]
    return _run_json(cmd + _cli_flags(check, diff, verbosity), expect_success)


def run_collection_module_in_playbook(
    module: str,
    args: dict,
    workdir: str,
    check: bool = False,
    diff: bool = False,
    verbosity: int = 0,
    interpreter: str = "/usr/bin/python3",
):
    """Run nodefleet.bitcoin.<module> as the one task of a playbook written to workdir (removed
    afterwards), with the target's interpreter; return (result, raw stdout+stderr)."""
    play = [
        {
            "hosts": "localhost",
            "gather_facts": False,
            "connection": "local",
            "tasks": [{"nodefleet.bitcoin.%s" % module: args}],
        }
    ]
    playbook = os.path.join(workdir, f"play-{time.monotonic_ns()}.yml")
    with open(playbook, "w", encoding="utf-8") as handle:
        json.dump(play, handle)
    cmd = [os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-e", "ansible_python_interpreter=" + interpreter]
    try:
        return _run_json([*cmd, playbook, *_cli_flags(check, diff, verbosity)], expect_success=False)
    finally:
        os.unlink(playbook)
