#!/usr/bin/env python3
# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helper of playbooks/heal.yml, run on the node by ansible.builtin.script (standard library only).

    nodefleet_heal.py check-supervisord [--socket PATH] [--timeout S]
        {"state": "ok" | "hung" | "down", "error": ...}: "hung" = the socket accepts but
        supervisord does not answer XML-RPC within the timeout; "down" = nothing listens.
    nodefleet_heal.py check-socks [--port 9050] [--timeout S]
        {"state": "ok" | "hung" | "down"} for tor's SOCKS port (a SOCKS5 greeting).
    nodefleet_heal.py restart --program NAME [--stop-timeout S] [--start-timeout S]
        Restart one supervisord program whose state is unknown (hung): stopProcess (its
        stopsignal, SIGTERM for bitcoind), wait; with --stop-timeout 0 supervisord's own
        stopwaitsecs applies and supervisord sends SIGKILL after it; with --stop-timeout S > 0
        this helper asks supervisord to send SIGKILL (signalProcess) after S seconds. Then
        startProcess and wait for RUNNING. Prints the old and new pid and how it stopped.

No secret is handled here: RPC checks are done by nodefleet.bitcoin.bitcoind_info.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys
import time
import xmlrpc.client

STOPPED_STATES = ("STOPPED", "EXITED", "FATAL", "UNKNOWN")


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path, timeout):
        super().__init__()
        self._path = path
        self._timeout = timeout

    def make_connection(self, host):
        return _UnixHTTPConnection(self._path, self._timeout)


def proxy(path: str, timeout: float):
    return xmlrpc.client.ServerProxy("http://localhost/RPC2", transport=_UnixTransport(path, timeout))


def classify_error(exc: BaseException) -> str:
    """'hung' for a timeout (something accepted the connection and never answered), else 'down'."""
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "hung"
    return "down"


def check_supervisord(path: str, timeout: float) -> dict:
    try:
        state = proxy(path, timeout).supervisor.getState()
    except (OSError, xmlrpc.client.Error, http.client.HTTPException) as exc:
        return {"state": classify_error(exc), "error": f"{type(exc).__name__}: {exc}"}
    return {"state": "ok", "supervisord_state": state.get("statename"), "error": ""}


def check_socks(port: int, timeout: float) -> dict:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"\x05\x01\x00")
            reply = sock.recv(2)
    except OSError as exc:
        return {"state": classify_error(exc), "error": f"{type(exc).__name__}: {exc}"}
    if reply != b"\x05\x00":
        return {"state": "down", "error": f"unexpected SOCKS reply {reply!r}"}
    return {"state": "ok", "error": ""}


def _info(server, program: str) -> dict:
    return server.supervisor.getProcessInfo(program)


def _wait_state(server, program: str, states, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    info = _info(server, program)
    while info["statename"] not in states and time.monotonic() < deadline:
        time.sleep(0.1)
        info = _info(server, program)
    return info


def restart(path: str, program: str, stop_timeout: float, start_timeout: float) -> dict:
    server = proxy(path, 30.0)
    before = _info(server, program)
    result = {"program": program, "old_pid": before["pid"], "state_before": before["statename"]}
    stopped_by = "not running"
    if before["statename"] not in STOPPED_STATES:
        if stop_timeout <= 0:
            # supervisord's own bound: stopsignal, stopwaitsecs, then SIGKILL; this blocks
            proxy(path, 24 * 3600.0).supervisor.stopProcess(program, True)
            stopped_by = "supervisord (stopsignal, SIGKILL after stopwaitsecs)"
        else:
            server.supervisor.stopProcess(program, False)
            info = _wait_state(server, program, STOPPED_STATES, stop_timeout)
            stopped_by = "stopsignal"
            if info["statename"] not in STOPPED_STATES:
                server.supervisor.signalProcess(program, "KILL")
                stopped_by = f"SIGKILL after {stop_timeout}s"
                info = _wait_state(server, program, STOPPED_STATES, 30.0)
                if info["statename"] not in STOPPED_STATES:
                    result.update({"failed": True, "msg": f"{program} did not stop after SIGKILL"})
                    return result
    server.supervisor.startProcess(program, False)
    info = _wait_state(server, program, ("RUNNING", "FATAL"), start_timeout)
    result.update({"stopped_by": stopped_by, "new_pid": info["pid"], "state": info["statename"]})
    if info["statename"] != "RUNNING":
        result.update({"failed": True, "msg": "{} is {} after the restart".format(program, info["statename"])})
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["check-supervisord", "check-socks", "restart"])
    parser.add_argument("--socket", default="/var/run/supervisor.sock")
    parser.add_argument("--port", type=int, default=9050)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--program")
    parser.add_argument("--stop-timeout", type=float, default=0.0)
    parser.add_argument("--start-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    if args.command == "check-supervisord":
        out = check_supervisord(args.socket, args.timeout)
    elif args.command == "check-socks":
        out = check_socks(args.port, args.timeout)
    else:
        try:
            out = restart(args.socket, args.program, args.stop_timeout, args.start_timeout)
        except (OSError, xmlrpc.client.Error, http.client.HTTPException) as exc:
            out = {"program": args.program, "failed": True, "msg": f"{type(exc).__name__}: {exc}"}
    json.dump(out, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
    return 1 if out.get("failed") else 0


if __name__ == "__main__":
    sys.exit(main())
