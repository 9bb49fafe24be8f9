# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""playbooks/heal.yml end to end on this machine (connection local), against a real supervisord
(a temp instance) running three programs:

- ``bitcoind-hung``: the stand-in, SIGSTOPped (the chaos matrix's hang): must be restarted;
- ``bitcoind-busy``: a daemon like Core while a flush holds cs_main: every call that needs the
  chain lock (getblockchaininfo, ...) waits, ``uptime`` answers at once: must NOT be restarted
  (the old heal.yml probed twice with getblockchaininfo and restarted it);
- ``bitcoind-fine``: the stand-in, healthy: untouched.

tor's SOCKS port is a loopback responder of the test, so nothing touches the host's services.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from ansible_collections.nodefleet.bitcoin.tests.integration.local_ports import free_ports
from ansible_collections.nodefleet.bitcoin.tests.integration.supervisord_fixture import (  # noqa: F401
    supervisord,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STANDIN = REPO / "tests" / "standin" / "bitcoind"
SALT = "0123456789abcdef0123456789abcdef"
USER, PASSWORD = "heal", "s3cret-heal-e2e-pw"

BUSY_DAEMON = textwrap.dedent(
    """\
    import http.server, json, socketserver, sys, time
    port = int(sys.argv[sys.argv.index("--port") + 1])

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if request["method"] not in ("uptime", "getrpcinfo"):
                time.sleep(3600)  # waits for cs_main, held by a flush
            body = json.dumps({"result": 77, "error": None, "id": request.get("id")}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    Server(("127.0.0.1", port), Handler).serve_forever()
    """
)


def rpcauth() -> str:
    digest = hmac.new(SALT.encode(), PASSWORD.encode(), hashlib.sha256).hexdigest()
    return f"rpcauth={USER}:{SALT}${digest}"


class SocksResponder:
    """Answers every SOCKS5 greeting with 'no authentication' (a healthy tor)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(3)
                    conn.sendall(b"\x05\x00")
                except OSError:
                    pass

    def close(self):
        self.sock.close()


def rpc_uptime(port: int) -> int:
    import base64
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        conn.request(
            "POST", "/", body='{"method":"uptime","params":[],"id":1}', headers={"Authorization": "Basic " + token}
        )
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.mark.parametrize("check", [False, True], ids=["run", "check-mode"])
def test_heal_restarts_the_hung_instance_and_leaves_the_busy_one(supervisord, tmp_path, check):  # noqa: F811
    """In check mode the same decision is reported and nothing is restarted."""
    datadir_root = tmp_path / "bitcoind"
    ports = dict(zip(["hung", "busy", "fine", "hung_p2p", "fine_p2p", "busy_p2p"], free_ports(6)))
    (tmp_path / "busy.py").write_text(BUSY_DAEMON)
    for name in ("hung", "busy", "fine"):
        datadir = datadir_root / name
        datadir.mkdir(parents=True)
        conf = datadir / "bitcoin.conf"
        conf.write_text(
            f"regtest=1\nserver=1\nlisten=0\n{rpcauth()}\n"
            f"[regtest]\nrpcport={ports[name]}\nport={ports[name + '_p2p']}\nrpcbind=127.0.0.1\nrpcallowip=127.0.0.1\n"
        )
        if name == "busy":
            command = f"{sys.executable} {tmp_path / 'busy.py'} -conf={conf} -datadir={datadir} --port {ports[name]}"
        else:
            command = f"{STANDIN} -conf={conf} -datadir={datadir}"
        supervisord.write_program(
            f"bitcoind-{name}",
            command,
            startsecs=1,
            stopwaitsecs=5,
            autorestart=True,
            environment='NODEFLEET_STANDIN_WARMUP="0.1",NODEFLEET_STANDIN_FLUSH_SECONDS="0"',
        )
    supervisord.update()
    before = {name: supervisord.wait_state(f"bitcoind-{name}", "RUNNING")["pid"] for name in ("hung", "busy", "fine")}
    deadline = time.monotonic() + 30
    while True:
        try:
            if all(rpc_uptime(ports[n]) == 200 for n in ("hung", "busy", "fine")):
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "instances did not answer uptime"
        time.sleep(0.2)

    os.kill(before["hung"], signal.SIGSTOP)
    socks = SocksResponder()
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        json.dumps(
            {
                "all": {
                    "hosts": {
                        "localhost": {
                            "ansible_connection": "local",
                            "ansible_python_interpreter": sys.executable,
                            "ansible_become": False,
                        }
                    }
                }
            }
        )
    )
    extra = {
        "heal_hosts": "localhost",
        "heal_supervisor_socket": supervisord.socket_path,
        "heal_program_dir": supervisord.conf_dir,
        "heal_datadir_root": str(datadir_root),
        "heal_socks_port": socks.port,
        "heal_xmlrpc_timeout": 2,
        "heal_socks_timeout": 2,
        "heal_rpc_timeout": 2,
        "heal_confirm_delay": 1,
        "heal_hang_window": 4,
        "heal_hang_probes": 2,
        "heal_stop_timeout": 2,
        "heal_start_timeout": 30,
        "bitcoind_instances": [
            {"name": n, "rpc_users": [{"user": USER, "password": PASSWORD}]} for n in ("busy", "fine", "hung")
        ],
    }
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_STDOUT_CALLBACK="json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_NOCOLOR="1",
    )
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [
                str(Path(sys.executable).parent / "ansible-playbook"),
                "-i",
                str(inventory),
                str(REPO / "playbooks" / "heal.yml"),
                "-e",
                json.dumps(extra),
                *(["--check"] if check else []),
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
    finally:
        socks.close()
        took = time.monotonic() - started
        info = supervisord.info("bitcoind-hung")
        if info and info.get("pid") == before["hung"]:
            os.kill(before["hung"], signal.SIGCONT)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert PASSWORD not in output

    names = ("hung", "busy", "fine")
    if check:
        info = supervisord.info("bitcoind-hung")
        assert info["pid"] == before["hung"], "check mode restarted the hung instance"
        os.kill(before["hung"], signal.SIGCONT)
        after = {name: supervisord.wait_state(f"bitcoind-{name}", "RUNNING")["pid"] for name in names}
        assert after == before
    else:
        after = {name: supervisord.wait_state(f"bitcoind-{name}", "RUNNING")["pid"] for name in names}
        assert after["hung"] != before["hung"], "the hung instance was not restarted"
        assert after["busy"] == before["busy"], "the busy instance (uptime answers) was restarted"
        assert after["fine"] == before["fine"]

    report = json.loads(output[output.find("{\n") :])
    tasks = {t["task"]["name"]: t["hosts"]["localhost"] for t in report["plays"][0]["tasks"]}
    msg = tasks["Report what was healed"]["msg"]
    assert msg["watched"] == {"busy": "ok", "hung": "hung"}, msg
    assert msg["hung"] == ["bitcoind-hung"], msg
    assert [r["program"] for r in msg["instances"]] == ([] if check else ["bitcoind-hung"]), msg
    assert msg["supervisord"] == "ok" and msg["tor"] == "ok", msg
    # the hang had to last the window (4 s over >= 2 uptime probes, 1 s apart) before the restart
    assert took >= 4
