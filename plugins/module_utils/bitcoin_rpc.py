# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small JSON-RPC client for bitcoind (Bitcoin Core, Knots, Garbageman).

Standard library only: this code runs on the managed host.

Every failure is mapped to one exception class whose ``state`` attribute is the instance
state ``bitcoind_info`` reports:

=====================  ==============  ==================================================
exception              state           cause
=====================  ==============  ==================================================
RpcDown                ``down``        connection refused / reset before an answer
RpcTimeout             ``hung``        connect or read did not finish before the deadline
RpcAuthError           ``auth_failed`` HTTP 401 or 403 (bad rpcauth credentials)
RpcWarmingUp           ``warming_up``  RPC error -28 (RPC_IN_WARMUP: loading block index)
RpcError               ``error``       any other RPC error, HTTP status or bad answer
=====================  ==============  ==================================================

Bitcoin Core answers a legacy (JSON-RPC 1.0) request that fails with HTTP 500 (or 404
for an unknown method) and a JSON body ``{"result": null, "error": {"code", "message"}}``;
the body is parsed whatever the HTTP status, so -28 is recognised on any status.

One client talks to one instance through one ``http.client.HTTPConnection`` (re-opened
automatically when the server closes it) and enforces a single *deadline*: every socket
operation gets the time left until the deadline, so a hung daemon costs at most the
instance's budget, not the budget once per call.
"""

from __future__ import annotations

import base64
import errno
import http.client
import json
import socket
import time

# RPC_IN_WARMUP in Bitcoin Core's src/rpc/protocol.h
RPC_IN_WARMUP = -28


class RpcFailure(Exception):
    """Base class: ``state`` is the instance state this failure means."""

    state = "error"

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.message = message
        self.code = code


class RpcDown(RpcFailure):
    state = "down"


class RpcTimeout(RpcFailure):
    state = "hung"


class RpcAuthError(RpcFailure):
    state = "auth_failed"


class RpcWarmingUp(RpcFailure):
    state = "warming_up"


class RpcError(RpcFailure):
    state = "error"


def basic_auth_header(user: str, password: str) -> str:
    """The ``Authorization`` header value for HTTP Basic auth (RFC 7617, UTF-8)."""
    token = base64.b64encode((f"{user}:{password}").encode()).decode("ascii")
    return "Basic " + token


def parse_response(status: int, body: bytes):
    """Return the ``result`` of a JSON-RPC answer or raise the matching RpcFailure.

    Pure: takes the HTTP status and body, so the mapping is unit-tested without a server.
    """
    if status in (401, 403):
        raise RpcAuthError(f"HTTP {status}: RPC credentials rejected")
    try:
        answer = json.loads(body.decode("utf-8")) if body else None
    except (UnicodeDecodeError, ValueError):
        answer = None
    if not isinstance(answer, dict):
        raise RpcError(f"HTTP {status}: answer is not a JSON-RPC object")
    error = answer.get("error")
    if error:
        code = error.get("code") if isinstance(error, dict) else None
        message = error.get("message", "") if isinstance(error, dict) else str(error)
        if code == RPC_IN_WARMUP:
            raise RpcWarmingUp(f"warming up: {message}", code=code)
        raise RpcError(f"RPC error {code}: {message}", code=code)
    if status != 200:
        raise RpcError(f"HTTP {status} without a JSON-RPC error")
    if "result" not in answer:
        raise RpcError("answer has no 'result'")
    return answer["result"]


class BitcoinRpc:
    """JSON-RPC over HTTP with Basic auth to one bitcoind, bounded by one deadline."""

    def __init__(self, host: str, port: int, user: str, password: str, timeout: float = 5.0, deadline=None):
        self.host = host
        self.port = port
        self._auth = basic_auth_header(user, password)
        # monotonic deadline shared by every call made through this client
        self.deadline = deadline if deadline is not None else time.monotonic() + timeout
        self._conn: http.client.HTTPConnection | None = None
        self._next_id = 0

    def _remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise RpcTimeout("no answer within the time budget")
        return left

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def call(self, method: str, params=None):
        """Call ``method``; return its result or raise an RpcFailure subclass."""
        self._next_id += 1
        payload = json.dumps(
            {"jsonrpc": "1.0", "id": self._next_id, "method": method, "params": list(params or [])}
        ).encode("utf-8")
        headers = {
            "Authorization": self._auth,
            "Content-Type": "application/json",
            "User-Agent": "nodefleet.bitcoin",
        }
        try:
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self._remaining())
            conn = self._conn
            if conn.sock is None:
                conn.timeout = self._remaining()
                conn.connect()
            conn.sock.settimeout(self._remaining())
            conn.request("POST", "/", body=payload, headers=headers)
            response = conn.getresponse()
            # the body may arrive in pieces: keep the socket timeout at the time left
            if conn.sock is not None:
                conn.sock.settimeout(self._remaining())
            body = response.read()
            status = response.status
            if response.will_close:
                self.close()
        except RpcFailure:
            self.close()
            raise
        except (socket.timeout, TimeoutError) as exc:
            self.close()
            raise RpcTimeout(f"{method}: no answer within the time budget ({exc})") from None
        except ConnectionRefusedError:
            self.close()
            raise RpcDown(f"connection refused on {self.host}:{self.port}") from None
        except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected) as exc:
            self.close()
            raise RpcDown(f"connection closed by {self.host}:{self.port} before an answer ({exc})") from None
        except http.client.HTTPException as exc:
            self.close()
            raise RpcError(f"{method}: bad HTTP answer ({exc})") from None
        except OSError as exc:
            self.close()
            if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                raise RpcDown(f"cannot connect to {self.host}:{self.port} ({exc.strerror})") from None
            raise RpcError(f"{method}: {exc}") from None
        return parse_response(status, body)
