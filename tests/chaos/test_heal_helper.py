# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Self-tests of playbooks/files/nodefleet_heal.py's hang detection against real sockets
(a unix socket and a loopback TCP port that accept and never answer, one that answers,
one that does not exist). Run by scripts/chaos.sh before the matrix."""

from __future__ import annotations

import importlib.util
import os
import socket
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
