# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The JSON-RPC client against a tiny HTTP server on 127.0.0.1 that misbehaves on purpose."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.bitcoin_rpc import (
    BitcoinRpc,
    RpcAuthError,
    RpcDown,
    RpcError,
    RpcTimeout,
    RpcWarmingUp,
    basic_auth_header,
    parse_response,
)

USER, PASSWORD = "monitor", "pa:ss wörd"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Bitcoin Core's libevent server

    def log_message(self, *args):
        pass

    def _send(self, status: int, body: dict | None):
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.calls.append(request["method"])
        mode = self.server.mode
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="jsonrpc"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if mode == "warmup":
            self._send(500, {"result": None, "error": {"code": -28, "message": "Loading block index…"}, "id": 1})
        elif mode == "sleep" or (mode == "slow-after-first" and len(self.server.calls) > 1):
            time.sleep(self.server.sleep)
            self._send(200, {"result": 1, "error": None, "id": request["id"]})
        elif mode == "method-not-found":
            self._send(404, {"result": None, "error": {"code": -32601, "message": "Method not found"}, "id": 1})
        elif mode == "html":
            self.send_response(500)
            self.send_header("Content-Length", "6")
            self.end_headers()
            self.wfile.write(b"<html>")
        else:
            self._send(200, {"result": {"method": request["method"], "params": request["params"]}, "error": None})


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.block_on_close = False
    srv.mode = "ok"
    srv.sleep = 0
    srv.calls = []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def client(srv, password=PASSWORD, timeout=2.0):
    return BitcoinRpc("127.0.0.1", srv.server_address[1], USER, password, timeout=timeout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_call_returns_result_and_sends_params(server):
    rpc = client(server)
    assert rpc.call("getblockchaininfo") == {"method": "getblockchaininfo", "params": []}
    assert rpc.call("getblockhash", [7]) == {"method": "getblockhash", "params": [7]}
    assert server.calls == ["getblockchaininfo", "getblockhash"]
    rpc.close()


def test_bad_password_is_auth_failed(server):
    with pytest.raises(RpcAuthError) as err:
        client(server, password="wrong").call("uptime")
    assert err.value.state == "auth_failed"
    assert "wrong" not in str(err.value)


def test_minus_28_on_http_500_is_warming_up(server):
    server.mode = "warmup"
    with pytest.raises(RpcWarmingUp) as err:
        client(server).call("getblockchaininfo")
    assert err.value.state == "warming_up"
    assert err.value.code == -28


def test_other_rpc_error_keeps_code(server):
    server.mode = "method-not-found"
    with pytest.raises(RpcError) as err:
        client(server).call("nosuchmethod")
    assert (err.value.state, err.value.code) == ("error", -32601)


def test_non_json_answer_is_error(server):
    server.mode = "html"
    with pytest.raises(RpcError, match="HTTP 500"):
        client(server).call("uptime")


def test_refused_is_down():
    with pytest.raises(RpcDown) as err:
        BitcoinRpc("127.0.0.1", free_port(), USER, PASSWORD, timeout=2).call("uptime")
    assert err.value.state == "down"
    assert "refused" in err.value.message


def test_sleeping_server_is_hung_within_the_budget(server):
    server.mode, server.sleep = "sleep", 3
    started = time.monotonic()
    with pytest.raises(RpcTimeout) as err:
        client(server, timeout=0.5).call("uptime")
    assert err.value.state == "hung"
    assert time.monotonic() - started < 1.5


def test_deadline_covers_all_calls_not_each_call(server):
    # First call answers at once, the later ones take 0.4 s each: with a 1 s budget for the
    # whole client the third call must fail, although each call alone is under 1 s.
    server.mode, server.sleep = "slow-after-first", 0.4
    rpc = client(server, timeout=1.0)
    started = time.monotonic()
    rpc.call("a")
    rpc.call("b")
    with pytest.raises(RpcTimeout):
        rpc.call("c")
        rpc.call("d")
    assert time.monotonic() - started < 1.4
    rpc.close()


def test_stopped_listener_is_hung_not_down():
    # A listening socket that never accepts (the kernel completes the handshake): what a
    # SIGSTOPped bitcoind looks like from outside.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(RpcTimeout):
            BitcoinRpc("127.0.0.1", port, USER, PASSWORD, timeout=0.5).call("uptime")
        assert 0.4 < time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, b'{"result": 5, "error": null, "id": 1}', 5),
        (200, b'{"result": null, "error": null, "id": 1}', None),
        (401, b"", RpcAuthError),
        (403, b"", RpcAuthError),
        (500, b'{"result": null, "error": {"code": -28, "message": "Verifying blocks"}}', RpcWarmingUp),
        (200, b'{"jsonrpc": "2.0", "error": {"code": -28, "message": "Loading"}, "id": 1}', RpcWarmingUp),
        (500, b'{"result": null, "error": {"code": -8, "message": "bad param"}}', RpcError),
        (500, b"<html>", RpcError),
        (503, b'{"result": 1}', RpcError),
        (200, b"[]", RpcError),
        (200, b'{"error": null}', RpcError),
    ],
)
def test_parse_response(status, body, expected):
    if isinstance(expected, type) and issubclass(expected, Exception):
        with pytest.raises(expected):
            parse_response(status, body)
    else:
        assert parse_response(status, body) == expected


def test_basic_auth_header_is_rfc7617():
    assert basic_auth_header("u", "p:w") == "Basic " + base64.b64encode(b"u:p:w").decode()
