#!/usr/bin/env python3
# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helper of playbooks/heal.yml, run on the node by ansible.builtin.script (standard library only).

    nodefleet_heal.py check-supervisord [--socket PATH] [--timeout S] [WATCH]
        {"state": "ok" | "hung" | "down", "error": ...}: "hung" = the socket accepts but
        supervisord does not answer XML-RPC within the timeout; "down" = nothing listens.
    nodefleet_heal.py check-socks [--port 9050] [--timeout S] [WATCH]
        {"state": "ok" | "hung" | "down"} for tor's SOCKS port (a SOCKS5 greeting).
    nodefleet_heal.py check-rpc [--timeout S] [WATCH]  < {"targets": [{name, program, host,
                                                          port, user, password}, ...]}
        {"instances": [{"name", "program", "state", "method", ...}]}: each bitcoind is asked
        RPC ``uptime`` (PROBE_METHOD), a call that takes none of Core's chain locks (no
        cs_main): a node that is busy flushing its chainstate, which holds cs_main for
        minutes during IBD and makes ``getblockchaininfo`` time out, still answers it at
        once. Only an instance that answers nothing is hung. State: "ok" | "warming_up"
        (RPC -28) | "auth_failed" | "error" (it answered) | "down" (refused) | "hung".
        The credentials come on stdin (never on a command line, never printed).

    WATCH = --window W --delay D --probes N: probe again and again, sleeping D seconds
        between two probes, until the thing answers (or is down); "hung" only when it never
        answered over at least W seconds and N probes. Without them: one probe.
    nodefleet_heal.py restart --program NAME [--stop-timeout S] [--start-timeout S]
        Restart one supervisord program whose state is unknown (hung): stopProcess (its
        stopsignal, SIGTERM for bitcoind), wait; with --stop-timeout 0 supervisord's own
        stopwaitsecs applies and supervisord sends SIGKILL after it; with --stop-timeout S > 0
        this helper asks supervisord to send SIGKILL (signalProcess) after S seconds. Then
        startProcess and wait for RUNNING. Prints the old and new pid and how it stopped.

Secrets: only check-rpc handles RPC passwords, read from stdin; no output carries them.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import math
import socket
import sys
import threading
import time
import xmlrpc.client

STOPPED_STATES = ("STOPPED", "EXITED", "FATAL", "UNKNOWN")
# The probe of a bitcoind: Core's `uptime` reads the clock and the start time and takes no
# lock (src/rpc/server.cpp); `getrpcinfo` would take only the RPC server's own mutex. Never a
# call that needs cs_main (getblockchaininfo, getblockcount, ...), which a flush holds.
PROBE_METHOD = "uptime"
RPC_IN_WARMUP = -28


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


def check_rpc(host: str, port: int, user: str, password: str, timeout: float) -> dict:
    """One ``uptime`` call: {"state": ok|warming_up|auth_failed|error|down|hung, "error": ...}."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    body = json.dumps({"jsonrpc": "1.0", "id": "nodefleet-heal", "method": PROBE_METHOD, "params": []})
    headers = {"Authorization": "Basic " + token, "Content-Type": "application/json", "User-Agent": "nodefleet-heal"}
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", "/", body=body, headers=headers)
        response = conn.getresponse()
        status, data = response.status, response.read()
    except (OSError, http.client.HTTPException) as exc:
        return {"state": classify_error(exc), "error": f"{type(exc).__name__}: {exc}"}
    finally:
        conn.close()
    if status in (401, 403):
        return {"state": "auth_failed", "error": f"HTTP {status}: RPC credentials rejected"}
    try:
        answer = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        answer = None
    if not isinstance(answer, dict):
        return {"state": "error", "error": f"HTTP {status}: answer is not a JSON-RPC object"}
    error = answer.get("error")
    if error:
        code = error.get("code") if isinstance(error, dict) else None
        state = "warming_up" if code == RPC_IN_WARMUP else "error"
        return {"state": state, "error": f"RPC error {code}"}
    if status != 200:
        return {"state": "error", "error": f"HTTP {status}"}
    return {"state": "ok", "uptime": answer.get("result"), "error": ""}


def watch(probe, window: float = 0.0, delay: float = 0.0, probes: int = 1, clock=time.monotonic, sleep=time.sleep):
    """Probe until an answer, or until the hang has lasted ``window`` seconds over ``probes`` probes.

    ``probe()`` returns a dict with a "state". Anything but "hung" (an answer, even a slow or an
    unhappy one, or "down": nothing listens any more) ends the watch with that result: one slow
    answer inside the window is proof of life. "hung" is returned only when every probe timed out,
    at least ``probes`` were made and at least ``window`` seconds passed from the start of the first
    to the end of the last. ``delay`` seconds are slept between two probes (really: never skipped).
    ``clock`` and ``sleep`` are injectable so the decision is tested without waiting.
    """
    probes = max(int(probes), 1)
    start = clock()
    history = []
    while True:
        result = dict(probe())
        history.append(result["state"])
        hung_for = clock() - start
        if result["state"] != "hung" or (len(history) >= probes and hung_for >= window):
            break
        sleep(delay)
    result["probes"] = len(history)
    result["history"] = history
    result["watched_for"] = round(hung_for, 3)
    return result


def check_rpc_all(targets: list, timeout: float, watch_args: dict, clock=time.monotonic, sleep=time.sleep) -> list:
    """Watch every target at the same time (one thread each); results in the targets' order."""
    results: list = [None] * len(targets)

    def work(index, target):
        def probe():
            return check_rpc(target["host"], int(target["port"]), target["user"], target["password"], timeout)

        out = watch(probe, clock=clock, sleep=sleep, **watch_args)
        out.update({"name": target["name"], "program": target.get("program"), "method": PROBE_METHOD})
        results[index] = out

    threads = [threading.Thread(target=work, args=(i, t), daemon=True) for i, t in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


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


def _read_targets(stream) -> list:
    """check-rpc's targets from stdin; a bad input is an error naming the field, never a traceback."""
    try:
        data = json.load(stream)
    except ValueError as exc:
        raise ValueError(f"stdin: not JSON ({exc.msg})") from None
    targets = data.get("targets") if isinstance(data, dict) else None
    if not isinstance(targets, list):
        raise ValueError('stdin: expected {"targets": [...]}')
    for index, target in enumerate(targets):
        if not isinstance(target, dict):
            raise ValueError(f"targets[{index}]: not an object")
        for key, kind in (("name", str), ("host", str), ("port", int), ("user", str), ("password", str)):
            if not isinstance(target.get(key), kind) or isinstance(target.get(key), bool):
                raise ValueError(f"targets[{index}].{key}: missing or not a {kind.__name__}")
    return targets


def _positive(text: str) -> float:
    value = float(text)
    if math.isnan(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not above 0")
    return value


def _not_negative(text: str) -> float:
    value = float(text)
    if math.isnan(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} is below 0")
    return value


def main(argv=None, stdin=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["check-supervisord", "check-socks", "check-rpc", "restart"])
    parser.add_argument("--socket", default="/var/run/supervisor.sock")
    parser.add_argument("--port", type=int, default=9050)
    parser.add_argument("--timeout", type=_positive, default=10.0)
    parser.add_argument("--window", type=_not_negative, default=0.0, help="seconds a hang must last")
    parser.add_argument("--delay", type=_not_negative, default=0.0, help="seconds between two probes")
    parser.add_argument("--probes", type=int, default=1, help="probes a hang must last")
    parser.add_argument("--program")
    parser.add_argument("--stop-timeout", type=float, default=0.0)
    parser.add_argument("--start-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    watch_args = {"window": args.window, "delay": args.delay, "probes": args.probes}
    if args.command == "check-supervisord":
        out = watch(lambda: check_supervisord(args.socket, args.timeout), **watch_args)
    elif args.command == "check-socks":
        out = watch(lambda: check_socks(args.port, args.timeout), **watch_args)
    elif args.command == "check-rpc":
        try:
            targets = _read_targets(stdin if stdin is not None else sys.stdin)
        except ValueError as exc:
            out = {"failed": True, "msg": str(exc)}
        else:
            out = {"instances": check_rpc_all(targets, args.timeout, watch_args), "method": PROBE_METHOD}
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
