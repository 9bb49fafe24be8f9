"""Run one collection module through the real ``ansible`` CLI, as a user does.

Shared by the module integration tests: argument_spec, check mode, diff and no_log are
exercised end to end; the JSON callback's result for localhost comes back with the raw
output (so tests can grep it for secrets).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ANSIBLE = os.path.join(os.path.dirname(sys.executable), "ansible")


def run_collection_module(module: str, args: dict, check: bool = False, diff: bool = False, verbosity: int = 0):
    """Run nodefleet.bitcoin.<module> on localhost; return (result, raw stdout+stderr)."""
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
        ANSIBLE_STDOUT_CALLBACK="json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_NOCOLOR="1",
    )
    cmd = [ANSIBLE, "localhost", "-i", "localhost,", "-c", "local"]
    cmd += ["-e", json.dumps({"ansible_python_interpreter": sys.executable})]
    cmd += ["-m", "nodefleet.bitcoin.%s" % module, "-a", json.dumps(args)]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    if verbosity:
        cmd.append("-" + "v" * verbosity)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False)
    start = proc.stdout.find("{")
    assert start >= 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout[start:])["plays"][0]["tasks"][0]["hosts"]["localhost"]
    return result, proc.stdout + proc.stderr
