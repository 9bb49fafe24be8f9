# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A supervisord stand-in for the property suite: the XML-RPC wire protocol on a unix socket,
with supervisor's OWN config parser behind ``reloadConfig``.

A real supervisord per example would start and wait for programs (seconds each). This one
answers the calls supervisord_program makes (getState, getAllProcessInfo, reloadConfig,
add/removeProcessGroup, start/stopProcess(Group), tail*Log, readLog) from a thread of the
test process, and:

- ``reloadConfig`` reads the files exactly as supervisord 4.2.5 does
  (``supervisor.options.ServerOptions.process_config`` on a main config whose ``[include]``
  covers the example's conf dirs): a file supervisord refuses is a CANT_REREAD fault, as
  there; the parsed ``ProcessConfig`` objects are kept for the read-back invariant;
- processes "start" at once: RUNNING, or FATAL for a command whose executable ends in
  ``false`` (so the failed-start path, with its log tail, is exercised);
- a process's stdout log holds its environment values at a drawn offset, the way a program
  that prints its environment would, so a log tail cut by a window can hold half a secret.
"""

from __future__ import annotations

import os
import socket
import socketserver
import threading
import time
import xmlrpc.client
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

from supervisor.options import ServerOptions

FAULT_BAD_NAME = 10
FAULT_ALREADY_STARTED = 60
FAULT_NOT_RUNNING = 70
FAULT_ALREADY_ADDED = 90
FAULT_STILL_RUNNING = 91
FAULT_CANT_REREAD = 92

STATE_CODES = {"STOPPED": 0, "STARTING": 10, "RUNNING": 20, "BACKOFF": 30, "STOPPING": 40, "EXITED": 100, "FATAL": 200}

MAIN_CONF = """\
[unix_http_server]
file={sock}

[supervisord]
logfile={root}/supervisord.log
pidfile={root}/supervisord.pid
childlogdir={root}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[include]
files = {includes}
"""


def read_configs(main_conf: str) -> dict:
    """{group name: ProcessGroupConfig} as supervisord reads them; ValueError when it refuses."""
    options = ServerOptions()
    options.configfile = main_conf
    options.process_config(do_usage=False)
    return {group.name: group for group in options.process_group_configs}


class _Handler(SimpleXMLRPCRequestHandler):
    rpc_paths = ("/RPC2", "/")
    disable_nagle_algorithm = False  # a unix socket has no TCP_NODELAY

    def address_string(self):
        return "unix"

    def log_message(self, *args):
        pass


class _UnixServer(socketserver.ThreadingMixIn, SimpleXMLRPCServer):
    address_family = socket.AF_UNIX
    daemon_threads = True
    allow_reuse_address = False

    def server_bind(self):
        self.socket.bind(self.server_address)


class FakeSupervisord:
    def __init__(self, root: str, conf_dirs: list[str], log_offset: int = 0):
        self.root = root
        self.sock = os.path.join(root, "sv.sock")
        self.main_conf = os.path.join(root, "supervisord.conf")
        includes = " ".join(os.path.join(d, "*.conf") for d in conf_dirs)
        with open(self.main_conf, "w", encoding="utf-8") as handle:
            handle.write(MAIN_CONF.format(sock=self.sock, root=root, includes=includes))
        self.active: dict = {}  # name -> ProcessGroupConfig loaded
        self.pending: dict = {}  # name -> ProcessGroupConfig from the last reloadConfig
        self.states: dict = {}
        self.pids: dict = {}
        self.log_offset = log_offset
        self.main_log = "2026-01-01 00:00:00,000 INFO supervisord started with pid 1\n"
        self.reread_error = None
        self.calls: list = []
        self.server = _UnixServer(self.sock, requestHandler=_Handler, logRequests=False, allow_none=True)
        for name in (
            "getState",
            "getAllProcessInfo",
            "getProcessInfo",
            "reloadConfig",
            "addProcessGroup",
            "removeProcessGroup",
            "startProcess",
            "stopProcess",
            "stopProcessGroup",
            "tailProcessStdoutLog",
            "tailProcessStderrLog",
            "readLog",
        ):
            self.server.register_function(self._logged(name, getattr(self, name)), "supervisor." + name)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return "unix://" + self.sock

    def _logged(self, name, fn):
        def call(*args):
            self.calls.append(name)
            return fn(*args)

        return call

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    # -- supervisor.* -------------------------------------------------------------------
    def getState(self):
        return {"statecode": 1, "statename": "RUNNING"}

    def _info(self, name):
        state = self.states.get(name, "STOPPED")
        now = int(time.time())
        return {
            "name": name,
            "group": name,
            "statename": state,
            "state": STATE_CODES[state],
            "pid": self.pids.get(name, 0) if state == "RUNNING" else 0,
            "start": now - 100 if state != "STOPPED" else 0,
            "stop": 0,
            "now": now,
            "spawnerr": "",
            "exitstatus": 0,
            "logfile": "",
            "stdout_logfile": "",
            "stderr_logfile": "",
            "description": "",
        }

    def getAllProcessInfo(self):
        return [self._info(name) for name in sorted(self.active)]

    def getProcessInfo(self, namespec):
        name = namespec.split(":", 1)[0]
        if name not in self.active:
            raise xmlrpc.client.Fault(FAULT_BAD_NAME, "BAD_NAME: %s" % namespec)
        return self._info(name)

    def reloadConfig(self):
        try:
            self.pending = read_configs(self.main_conf)
        except ValueError as exc:
            self.reread_error = str(exc)
            raise xmlrpc.client.Fault(FAULT_CANT_REREAD, "CANT_REREAD: %s" % exc) from None
        added = sorted(set(self.pending) - set(self.active))
        changed = sorted(n for n in set(self.pending) & set(self.active) if self.pending[n] != self.active[n])
        removed = sorted(set(self.active) - set(self.pending))
        return [[added, changed, removed]]

    def _spawn(self, name):
        command = self.active[name].process_configs[0].command
        self.states[name] = "FATAL" if command.split()[0].endswith("false") else "RUNNING"
        self.pids[name] = 4242
        self.main_log += "2026-01-01 00:00:01,000 INFO spawned: '%s' with pid 4242\n" % name

    def addProcessGroup(self, name):
        if name not in self.pending:
            raise xmlrpc.client.Fault(FAULT_BAD_NAME, "BAD_NAME: %s" % name)
        if name in self.active:
            raise xmlrpc.client.Fault(FAULT_ALREADY_ADDED, "ALREADY_ADDED: %s" % name)
        self.active[name] = self.pending[name]
        self.states[name] = "STOPPED"
        if self.active[name].process_configs[0].autostart:
            self._spawn(name)
        return True

    def removeProcessGroup(self, name):
        if name not in self.active:
            raise xmlrpc.client.Fault(FAULT_BAD_NAME, "BAD_NAME: %s" % name)
        if self.states.get(name) in ("RUNNING", "STARTING", "BACKOFF", "STOPPING"):
            raise xmlrpc.client.Fault(FAULT_STILL_RUNNING, "STILL_RUNNING: %s" % name)
        del self.active[name]
        self.states.pop(name, None)
        return True

    def startProcess(self, namespec, wait=True):
        name = namespec.split(":", 1)[0]
        if name not in self.active:
            raise xmlrpc.client.Fault(FAULT_BAD_NAME, "BAD_NAME: %s" % namespec)
        if self.states.get(name) == "RUNNING":
            raise xmlrpc.client.Fault(FAULT_ALREADY_STARTED, "ALREADY_STARTED: %s" % namespec)
        self._spawn(name)
        return True

    def stopProcess(self, namespec, wait=True):
        name = namespec.split(":", 1)[0]
        if name not in self.active:
            raise xmlrpc.client.Fault(FAULT_BAD_NAME, "BAD_NAME: %s" % namespec)
        if self.states.get(name) not in ("RUNNING", "STARTING", "BACKOFF"):
            raise xmlrpc.client.Fault(FAULT_NOT_RUNNING, "NOT_RUNNING: %s" % namespec)
        self.states[name] = "STOPPED"
        return True

    def stopProcessGroup(self, name, wait=True):
        if name not in self.active:
            raise xmlrpc.client.Fault(FAULT_BAD_NAME, "BAD_NAME: %s" % name)
        if self.states.get(name) in ("RUNNING", "STARTING", "BACKOFF"):
            self.states[name] = "STOPPED"
        return [{"name": name, "group": name, "status": 80, "description": "OK"}]

    def _log(self, name) -> str:
        config = self.active.get(name)
        env = (config.process_configs[0].environment or {}) if config else {}
        body = "".join("%s=%s\n" % (k, v) for k, v in sorted(env.items()))
        # The env dump sits ``log_offset`` bytes before the end, so a 2000-byte window may cut a value.
        return "starting\n" + body + "." * self.log_offset + "\n"

    def tailProcessStdoutLog(self, namespec, offset, length):
        text = self._log(namespec.split(":", 1)[0])
        return [text[-length:], len(text), False]

    def tailProcessStderrLog(self, namespec, offset, length):
        return ["", 0, False]

    def readLog(self, offset, length):
        return self.main_log[offset:] if offset < 0 else self.main_log[offset : offset + length or None]
