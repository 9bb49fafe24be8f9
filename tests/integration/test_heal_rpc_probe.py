# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""heal.yml's instance probe (nodefleet_heal.py check-rpc) against a real daemon, run exactly as the
playbook runs it: ``python3 -c <helper source> check-rpc ...`` with the credentials on stdin.

For real Bitcoin Core and the stand-in: a running daemon answers ``uptime`` (ok, one probe); a
SIGSTOPped one (the chaos matrix's hang) is hung only after the whole window; a daemon that is
resumed inside the window is not hung.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from ansible_collections.nodefleet.bitcoin.tests.integration.local_ports import free_ports
from ansible_collections.nodefleet.bitcoin.tests.integration.real_core import (  # noqa: F401
    make_node,
    real_core,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
HELPER = REPO / "playbooks" / "files" / "nodefleet_heal.py"
STANDIN = REPO / "tests" / "standin" / "bitcoind"
SALT = "0123456789abcdef0123456789abcdef"
USER, PASSWORD = "heal", "s3cret-heal-pw"


def write_conf(datadir: Path, rpc_port: int, p2p_port: int) -> None:
    digest = hmac.new(SALT.encode(), PASSWORD.encode(), hashlib.sha256).hexdigest()
    datadir.mkdir(parents=True, exist_ok=True)
    (datadir / "bitcoin.conf").write_text(
        f"regtest=1\nserver=1\nlisten=0\nrpcauth={USER}:{SALT}${digest}\n"
        f"[regtest]\nrpcport={rpc_port}\nport={p2p_port}\nrpcbind=127.0.0.1\nrpcallowip=127.0.0.1\n"
    )


def run_helper(rpc_port: int, *args: str, password: str = PASSWORD) -> tuple[int, dict, str]:
    """The helper as heal.yml runs it (its source as ``python3 -c``, targets on stdin)."""
    stdin = json.dumps(
        {
            "targets": [
                {
                    "name": "n1",
                    "program": "bitcoind-n1",
                    "host": "127.0.0.1",
                    "port": rpc_port,
                    "user": USER,
                    "password": password,
                }
            ]
        }
    )
    proc = subprocess.run(
        [sys.executable, "-c", HELPER.read_text(encoding="utf-8"), "check-rpc", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.returncode, json.loads(proc.stdout), proc.stdout + proc.stderr


@pytest.fixture(params=["core", "standin"])
def daemon(request, tmp_path, make_node):  # noqa: F811 - pytest fixture injection
    if request.param == "core":
        exe = request.getfixturevalue("real_core").bitcoind
        env = {}
    else:
        exe = STANDIN
        env = {"NODEFLEET_STANDIN_WARMUP": "0.1", "NODEFLEET_STANDIN_FLUSH_SECONDS": "0"}
    rpc_port, p2p_port = free_ports(2)
    datadir = tmp_path / "n1"
    write_conf(datadir, rpc_port, p2p_port)
    node = make_node(exe, datadir, rpc_port, auth=(USER, PASSWORD), env=env)
    node.start()
    node.wait_rpc(timeout=60)
    yield node
    if node.proc is not None and node.proc.poll() is None:
        os.kill(node.proc.pid, signal.SIGCONT)


def test_a_running_daemon_answers_uptime_at_once(daemon):
    rc, out, text = run_helper(daemon.rpc_port, "--timeout", "5", "--window", "30", "--delay", "2", "--probes", "3")
    assert rc == 0, text
    (inst,) = out["instances"]
    assert out["method"] == "uptime"
    assert inst["state"] == "ok" and inst["probes"] == 1, inst
    assert isinstance(inst["uptime"], int)
    assert PASSWORD not in text


def test_wrong_credentials_are_an_answer_not_a_hang(daemon):
    _, out, text = run_helper(daemon.rpc_port, "--timeout", "5", password="wrong")
    assert out["instances"][0]["state"] == "auth_failed", text


def test_a_stopped_daemon_is_hung_only_after_the_window(daemon):
    os.kill(daemon.proc.pid, signal.SIGSTOP)
    started = time.monotonic()
    rc, out, text = run_helper(daemon.rpc_port, "--timeout", "0.5", "--window", "2", "--delay", "0.3", "--probes", "3")
    took = time.monotonic() - started
    os.kill(daemon.proc.pid, signal.SIGCONT)
    (inst,) = out["instances"]
    assert rc == 0, text
    assert inst["state"] == "hung", inst
    assert inst["probes"] >= 3 and inst["watched_for"] >= 2, inst
    assert took >= 2


def test_a_daemon_resumed_inside_the_window_is_not_hung(daemon):
    os.kill(daemon.proc.pid, signal.SIGSTOP)
    resume = threading.Timer(1.0, os.kill, args=(daemon.proc.pid, signal.SIGCONT))
    resume.start()
    try:
        _, out, _ = run_helper(daemon.rpc_port, "--timeout", "0.5", "--window", "4", "--delay", "0.3", "--probes", "3")
    finally:
        resume.cancel()
        os.kill(daemon.proc.pid, signal.SIGCONT)
    (inst,) = out["instances"]
    assert inst["state"] == "ok", inst
    assert inst["history"][0] == "hung" and inst["history"][-1] == "ok", inst
