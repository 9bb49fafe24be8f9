# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Self-tests of playbooks/files/nodefleet_heal.py's hang detection against real sockets
(a unix socket and a loopback TCP port that accept and never answer, one that answers,
one that does not exist). Run by scripts/chaos.sh before the matrix."""

from __future__ import annotations

import base64
import http.server
import importlib.util
import io
import json
import os
import socket
import socketserver
import threading
import xmlrpc.server

import pytest

HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "playbooks", "files", "nodefleet_heal.py")
_spec = importlib.util.spec_from_file_location("nodefleet_heal", HELPER)
heal = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(heal)


class _Silent:
    """A listening socket that accepts connections and never answers (a hung server)."""

    def __init__(self, family, address):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind(address)
        self.sock.listen(8)
        self.address = self.sock.getsockname()

    def close(self):
        self.sock.close()


@pytest.fixture
def hung_unix(tmp_path):
    server = _Silent(socket.AF_UNIX, str(tmp_path / "hung.sock"))
    yield server.address
    server.close()


@pytest.fixture
def answering_unix(tmp_path):
    path = str(tmp_path / "ok.sock")

    class Handler(xmlrpc.server.SimpleXMLRPCRequestHandler):
        rpc_paths = ("/RPC2",)
        disable_nagle_algorithm = False  # TCP_NODELAY is not supported on a unix socket

        def log_message(self, *args):
            pass

    class UnixXMLRPCServer(xmlrpc.server.SimpleXMLRPCServer):
        address_family = socket.AF_UNIX

        def server_bind(self):
            self.socket.bind(self.server_address)

    server = UnixXMLRPCServer(path, requestHandler=Handler, logRequests=False, bind_and_activate=True)
    server.register_function(lambda: {"statename": "RUNNING", "statecode": 1}, "supervisor.getState")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield path
    server.shutdown()
    server.server_close()


def test_supervisord_that_answers_is_ok(answering_unix):
    assert heal.check_supervisord(answering_unix, 2.0) == {"state": "ok", "supervisord_state": "RUNNING", "error": ""}


def test_supervisord_that_accepts_and_never_answers_is_hung(hung_unix):
    result = heal.check_supervisord(hung_unix, 0.5)
    assert result["state"] == "hung", result


def test_supervisord_without_socket_is_down(tmp_path):
    result = heal.check_supervisord(str(tmp_path / "missing.sock"), 0.5)
    assert result["state"] == "down", result


def test_socks_hung_and_down():
    server = _Silent(socket.AF_INET, ("127.0.0.1", 0))
    port = server.address[1]
    try:
        assert heal.check_socks(port, 0.5)["state"] == "hung"
    finally:
        server.close()
    assert heal.check_socks(port, 0.5)["state"] == "down"  # nothing listens any more


def test_socks_that_answers_is_ok():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def answer():
        conn, _ = server.accept()
        conn.recv(3)
        conn.sendall(b"\x05\x00")
        conn.close()

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        assert heal.check_socks(server.getsockname()[1], 2.0) == {"state": "ok", "error": ""}
    finally:
        thread.join(5)
        server.close()


@pytest.mark.parametrize(
    "exc, expected",
    [(socket.timeout("timed out"), "hung"), (ConnectionRefusedError(), "down"), (FileNotFoundError(), "down")],
)
def test_classify_error(exc, expected):
    assert heal.classify_error(exc) == expected


# ------------------------------------------------------------------ the hang decision (issue 10, #15)


class FakeClock:
    """A monotonic clock that moves only when a probe takes time or the helper sleeps."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def scripted(clock, answers, timeout=10.0):
    """A probe that answers from a script: 'hung' costs the whole timeout, an answer its delay."""
    calls = []

    def probe():
        state, took = answers[len(calls)] if len(calls) < len(answers) else answers[-1]
        calls.append(clock())
        clock.now += timeout if state == "hung" else took
        return {"state": state, "error": "timed out" if state == "hung" else ""}

    probe.calls = calls
    return probe


def test_watch_sleeps_the_confirm_delay_between_probes():
    clock = FakeClock()
    probe = scripted(clock, [("hung", 0)])
    result = heal.watch(probe, window=30, delay=2, probes=3, clock=clock, sleep=clock.sleep)
    assert result["state"] == "hung"
    # the delay is really slept between two probes (the old playbook probed again at once)
    assert clock.sleeps == [2, 2]
    assert [t - probe.calls[0] for t in probe.calls] == [0, 12, 24]
    assert result["probes"] == 3 and result["watched_for"] >= 30


def test_a_hang_must_last_the_whole_window():
    clock = FakeClock()
    probe = scripted(clock, [("hung", 0)])
    result = heal.watch(probe, window=60, delay=5, probes=2, clock=clock, sleep=clock.sleep)
    assert result["state"] == "hung"
    assert result["watched_for"] >= 60  # two probes were not enough: the window was not over
    assert result["probes"] == 5  # 0-10, 15-25, 30-40, 45-55, 60-70


def test_a_hang_needs_the_number_of_probes_too():
    clock = FakeClock()
    probe = scripted(clock, [("hung", 0)], timeout=30)
    result = heal.watch(probe, window=10, delay=1, probes=3, clock=clock, sleep=clock.sleep)
    assert result["state"] == "hung" and result["probes"] == 3


def test_one_slow_answer_inside_the_window_is_no_hang():
    clock = FakeClock()
    # first probe times out (busy), the second answers after 8 s: alive, do not heal
    probe = scripted(clock, [("hung", 0), ("ok", 8.0), ("hung", 0)])
    result = heal.watch(probe, window=30, delay=2, probes=3, clock=clock, sleep=clock.sleep)
    assert result["state"] == "ok"
    assert result["history"] == ["hung", "ok"]


def test_a_probe_that_answers_at_once_is_not_repeated():
    clock = FakeClock()
    probe = scripted(clock, [("ok", 0.01)])
    result = heal.watch(probe, window=30, delay=2, probes=3, clock=clock, sleep=clock.sleep)
    assert result["state"] == "ok" and result["probes"] == 1 and clock.sleeps == []


@pytest.mark.parametrize("state", ["down", "warming_up", "auth_failed", "error"])
def test_anything_but_a_timeout_ends_the_watch_without_a_hang(state):
    clock = FakeClock()
    probe = scripted(clock, [("hung", 0), (state, 0.01)])
    result = heal.watch(probe, window=30, delay=2, probes=3, clock=clock, sleep=clock.sleep)
    assert result["state"] == state


def test_without_a_window_one_probe_decides():
    clock = FakeClock()
    probe = scripted(clock, [("hung", 0)])
    assert heal.watch(probe, clock=clock, sleep=clock.sleep)["probes"] == 1


# ------------------------------------------------------------------ the RPC probe takes no chain lock


PASSWORD = "s3cret-pw"  # a test credential of the fake daemon below


class FakeBitcoind:
    """A loopback JSON-RPC server that behaves like bitcoind whose cs_main is held by a flush:
    calls that need cs_main never answer (until released), `uptime` answers at once. Records
    every method and Authorization header it gets."""

    LOCK_FREE = ("uptime", "getrpcinfo")

    def __init__(self, user="heal", password=PASSWORD, warmup=False):
        self.methods = []
        self.auth = []
        self.released = threading.Event()
        outer = self
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.methods.append(request["method"])
                outer.auth.append(self.headers.get("Authorization"))
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.end_headers()
                    return
                if warmup:
                    status, body = 500, {"result": None, "error": {"code": -28, "message": "Loading block index…"}}
                elif request["method"] in outer.LOCK_FREE:
                    status, body = 200, {"result": 4242, "error": None}
                else:
                    outer.released.wait(30)  # waits for cs_main
                    status, body = 200, {"result": {}, "error": None}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def busy_bitcoind():
    server = FakeBitcoind()
    yield server
    server.close()


def test_probe_method_takes_no_chain_lock():
    assert heal.PROBE_METHOD in ("uptime", "getrpcinfo")


def test_rpc_probe_of_a_node_busy_flushing_is_ok(busy_bitcoind):
    result = heal.check_rpc("127.0.0.1", busy_bitcoind.port, "heal", "s3cret-pw", 2.0)
    assert result["state"] == "ok", result
    assert busy_bitcoind.methods == ["uptime"]
    assert result["uptime"] == 4242


def test_rpc_probe_sends_the_credentials_and_maps_a_rejection(busy_bitcoind):
    assert heal.check_rpc("127.0.0.1", busy_bitcoind.port, "heal", "wrong", 2.0)["state"] == "auth_failed"
    assert busy_bitcoind.auth[-1].startswith("Basic ")


def test_rpc_probe_warming_up_is_no_hang():
    server = FakeBitcoind(warmup=True)
    try:
        assert heal.check_rpc("127.0.0.1", server.port, "heal", "s3cret-pw", 2.0)["state"] == "warming_up"
    finally:
        server.close()


def test_rpc_probe_of_a_silent_port_is_hung_and_of_a_closed_port_down():
    server = _Silent(socket.AF_INET, ("127.0.0.1", 0))
    port = server.address[1]
    try:
        assert heal.check_rpc("127.0.0.1", port, "u", "p", 0.5)["state"] == "hung"
    finally:
        server.close()
    assert heal.check_rpc("127.0.0.1", port, "u", "p", 0.5)["state"] == "down"


def test_check_rpc_command_reads_credentials_from_stdin_and_never_prints_them(busy_bitcoind, capsys):
    stdin = io.StringIO(
        json.dumps(
            {
                "targets": [
                    {
                        "name": "a",
                        "program": "bitcoind-a",
                        "host": "127.0.0.1",
                        "port": busy_bitcoind.port,
                        "user": "heal",
                        "password": "s3cret-pw",
                    }
                ]
            }
        )
    )
    rc = heal.main(["check-rpc", "--timeout", "2", "--window", "30", "--delay", "2", "--probes", "3"], stdin=stdin)
    out = capsys.readouterr().out
    assert rc == 0
    assert "s3cret-pw" not in out
    result = json.loads(out)
    assert result["method"] == "uptime"
    (inst,) = result["instances"]
    assert inst["name"] == "a" and inst["program"] == "bitcoind-a" and inst["state"] == "ok"
    assert inst["probes"] == 1  # it answered: no second probe, no wait


def test_check_rpc_command_refuses_bad_input(capsys):
    rc = heal.main(["check-rpc"], stdin=io.StringIO('{"targets": [{"name": "a"}]}'))
    out = json.loads(capsys.readouterr().out)
    assert rc == 1 and out["failed"] and "targets[0].host" in out["msg"]


def test_check_rpc_all_watches_each_instance_over_the_window(busy_bitcoind):
    """One hung instance among answering ones: only it is called hung, after the whole window."""
    silent = _Silent(socket.AF_INET, ("127.0.0.1", 0))
    clock_lock = threading.Lock()
    slept = []

    def sleep(seconds):
        with clock_lock:
            slept.append(seconds)

    targets = [
        {"name": "busy", "host": "127.0.0.1", "port": busy_bitcoind.port, "user": "heal", "password": "s3cret-pw"},
        {"name": "stuck", "host": "127.0.0.1", "port": silent.address[1], "user": "heal", "password": "x"},
    ]
    try:
        results = heal.check_rpc_all(targets, 0.3, {"window": 0.5, "delay": 0.05, "probes": 2}, sleep=sleep)
    finally:
        silent.close()
    by_name = {r["name"]: r for r in results}
    assert by_name["busy"]["state"] == "ok" and by_name["busy"]["probes"] == 1
    assert by_name["stuck"]["state"] == "hung" and by_name["stuck"]["probes"] >= 2
    assert by_name["stuck"]["watched_for"] >= 0.5
    assert slept and all(s == 0.05 for s in slept)
