# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bad input shows only the clean message through ansible (issue 17), for tor_hidden_service,
rpcauth_derive and bitcoind_info.

The modules used to call ``fail_json`` inside ``except`` blocks. ansible-core 2.19 then takes
the exception being handled as the failure's cause: with tracebacks shown
(``ANSIBLE_DISPLAY_TRACEBACK=error``, what a user sets to debug) the output carried the
module's internal ``ValidationError`` traceback instead of just the message. Now the message
is kept and ``fail_json`` is called after the ``except`` block, so the output is the message
(plus, only when tracebacks are asked for, the plain call stack, no exception).

Note: the deprecated ``oneline`` callback prints "An exception occurred during task
execution ... (traceback unavailable)" for every failed task in 2.19 (even
``ansible.builtin.fail``), so that line alone says nothing about a module; the default
callback, used here, does not print it for a clean failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.dirname(sys.executable)
INTERPRETER = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
PASSWORD = "Errors-Hardening-Secret-9f"

CASES = {
    "rpcauth_derive": (
        {"user": "alice", "password": PASSWORD, "salt": "0123456789abcdef0123456789abcdef\n"},
        "salt: the salt must be 32 lowercase hexadecimal characters",
    ),
    "rpcauth_derive-conf-nul": (
        {"user": "alice", "password": PASSWORD, "conf_file": "/etc/bit\x00coin.conf"},
        "conf_file: must not contain the control or line-break character",
    ),
    "bitcoind_info": (
        {"timeout": 0, "supervisor_url": ""},
        "timeout: must be more than 0 and at most 300 seconds",
    ),
    "tor_hidden_service": (
        {"name": "a", "ports": [{"port": 8333, "target": "127.0.0.1:8334"}], "service_dir": "/etc"},
        "service_dir: /etc is a system directory; refusing to manage it",
    ),
}


def run_playbook(module: str, args: dict, workdir, tracebacks: bool) -> tuple[int, str]:
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": [{f"nodefleet.bitcoin.{module}": args}]}]
    playbook = workdir / "play.yml"
    playbook.write_text(json.dumps(play))
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default",
        ANSIBLE_NOCOLOR="1",
    )
    env.pop("ANSIBLE_DISPLAY_TRACEBACK", None)
    if tracebacks:
        env["ANSIBLE_DISPLAY_TRACEBACK"] = "error"
    cmd = [os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local"]
    cmd += ["-e", f"ansible_python_interpreter={INTERPRETER}", str(playbook)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_shows_only_the_clean_message(case, tmp_path):
    module = case.split("-", 1)[0]
    args, message = CASES[case]
    rc, out = run_playbook(module, args, tmp_path, tracebacks=False)
    assert rc == 2, out
    assert message in out, out
    assert "An exception occurred" not in out
    assert "Traceback" not in out
    assert PASSWORD not in out


@pytest.mark.parametrize("case", sorted(CASES))
def test_with_tracebacks_on_no_internal_exception_is_attached(case, tmp_path):
    module = case.split("-", 1)[0]
    args, message = CASES[case]
    rc, out = run_playbook(module, args, tmp_path, tracebacks=True)
    assert rc == 2, out
    assert message in out, out
    # the module's own exception (and what it was raised from) must not be the failure's cause
    assert "ValidationError" not in out, out
    assert "UnsafePath" not in out and "ValueError" not in out, out
    assert PASSWORD not in out
