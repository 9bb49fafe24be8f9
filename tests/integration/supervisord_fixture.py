# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A real supervisord in a temp dir, for integration tests.

Usage from any test module::

    from ansible_collections.nodefleet.bitcoin.tests.integration.supervisord_fixture import (
        supervisord,  # noqa: F401  (the pytest fixture)
    )

    @pytest.mark.integration
    def test_x(supervisord):
        supervisord.write_program("sleeper", "/bin/sleep 1000", startsecs=0)
        supervisord.update()                       # reloadConfig + add/update/remove, like supervisorctl update
        info = supervisord.wait_state("sleeper", "RUNNING")
        ... supervisord.server_url, supervisord.conf_dir ...

Or without pytest: ``with running_supervisord() as sv: ...``.

The instance has its own ``supervisord.conf`` (``[unix_http_server] file=<root>/supervisor.sock``,
``[rpcinterface:supervisor]``, ``[supervisord] nodaemon``, ``[include] files=<root>/conf.d/*.conf``),
is started as a subprocess of the test and is always torn down: supervisord is asked to
shut down (it stops its programs), is killed if it does not exit in time, and any program
process it leaves behind is killed by pid. The root is a short path under /tmp because a unix
socket path is limited to 107 bytes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import xmlrpc.client

import pytest
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.supervisord import SupervisorClient, SupervisorError
from ansible_collections.nodefleet.bitcoin.tests.integration.ci_gate import skip_or_fail

SUPERVISORD_CONF = """\
[unix_http_server]
file={root}/supervisor.sock
chmod=0700

[supervisord]
nodaemon=true
logfile={root}/supervisord.log
pidfile={root}/supervisord.pid
childlogdir={root}/logs
loglevel=info

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{root}/supervisor.sock

[include]
files={root}/conf.d/*.conf
"""

START_TIMEOUT = 20.0
STOP_TIMEOUT = 30.0


def supervisord_binary() -> str | None:
    return shutil.which("supervisord") or ("/usr/bin/supervisord" if os.path.exists("/usr/bin/supervisord") else None)


class Supervisord:
    """One supervisord process with its own config, socket, logs and conf.d under ``root``."""

    def __init__(self, root: str | None = None):
        self.root = root or tempfile.mkdtemp(prefix="sv-", dir="/tmp")
        self.conf_dir = os.path.join(self.root, "conf.d")
        self.log_dir = os.path.join(self.root, "logs")
        self.conf_file = os.path.join(self.root, "supervisord.conf")
        self.socket_path = os.path.join(self.root, "supervisor.sock")
        self.server_url = "unix://" + self.socket_path
        self.proc: subprocess.Popen | None = None
        self._seen_pids: set[int] = set()

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> Supervisord:
        binary = supervisord_binary()
        if binary is None:
            raise RuntimeError("supervisord is not installed (apt-get install supervisor)")
        os.makedirs(self.conf_dir, exist_ok=True)
        os.makedirs(self.log_dir, exist_ok=True)
        with open(self.conf_file, "w", encoding="utf-8") as handle:
            handle.write(SUPERVISORD_CONF.format(root=self.root))
        out = open(os.path.join(self.root, "supervisord.out"), "wb")  # noqa: SIM115 - closed in stop()
        self._out = out
        self.proc = subprocess.Popen(
            [binary, "-n", "-c", self.conf_file], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"supervisord exited with {self.proc.returncode}: {self.output()}")
            try:
                if self.client(timeout=2).call("getState")["statename"] == "RUNNING":
                    return self
            except (SupervisorError, xmlrpc.client.Fault):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"supervisord did not answer within {START_TIMEOUT}s")
            time.sleep(0.1)

    def stop(self) -> None:
        """Shut supervisord down (it stops its programs); kill what is left. Never raises."""
        if self.proc is None:
            return
        with contextlib.suppress(Exception):
            self._remember_pids()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        for pid in self._seen_pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self._out.close()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def _remember_pids(self) -> None:
        for info in self.client(timeout=5).call("getAllProcessInfo"):
            if info["pid"]:
                self._seen_pids.add(info["pid"])

    # -- helpers -----------------------------------------------------------------------
    def client(self, timeout: float = 10.0) -> SupervisorClient:
        return SupervisorClient(self.server_url, timeout=timeout)

    def output(self) -> str:
        with open(os.path.join(self.root, "supervisord.out"), encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def write_program(self, name: str, command: str, **options) -> str:
        """Write ``conf.d/<name>.conf`` with ``[program:<name>]`` (options rendered verbatim)."""
        lines = [f"[program:{name}]", f"command={command}"]
        options.setdefault("stdout_logfile", os.path.join(self.log_dir, f"{name}.out"))
        options.setdefault("stderr_logfile", os.path.join(self.log_dir, f"{name}.err"))
        for key, value in options.items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            lines.append(f"{key}={value}")
        path = os.path.join(self.conf_dir, f"{name}.conf")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        return path

    def update(self) -> tuple:
        """What ``supervisorctl update`` does: reloadConfig, then add/update/remove every group."""
        client = self.client()
        added, changed, removed = client.reload_config()
        for name in changed + removed:
            client.call("stopProcessGroup", name, True)
            client.call("removeProcessGroup", name)
        for name in added + changed:
            client.call("addProcessGroup", name)
        return added, changed, removed

    def groups(self) -> list:
        """Names of the loaded process groups, sorted."""
        return sorted({info["group"] for info in self.client().call("getAllProcessInfo")})

    def info(self, name: str) -> dict | None:
        """getProcessInfo for program ``name`` (group = process name), None when not loaded."""
        try:
            info = self.client().call("getProcessInfo", f"{name}:{name}")
        except xmlrpc.client.Fault:
            return None
        if info.get("pid"):
            self._seen_pids.add(info["pid"])
        return info

    def wait_state(self, name: str, states, timeout: float = 20.0) -> dict:
        """Poll until the program's state name is one of ``states``; return its info or raise AssertionError."""
        wanted = (states,) if isinstance(states, str) else tuple(states)
        deadline = time.monotonic() + timeout
        info = None
        while time.monotonic() < deadline:
            info = self.info(name)
            if info and info["statename"] in wanted:
                return info
            time.sleep(0.1)
        raise AssertionError(f"{name} did not reach {wanted} within {timeout}s (last: {info})")


@contextlib.contextmanager
def running_supervisord():
    """Context manager: a started :class:`Supervisord`, always stopped and removed afterwards."""
    sv = Supervisord()
    try:
        sv.start()
        yield sv
    finally:
        sv.cleanup()


@pytest.fixture
def supervisord():
    """Pytest fixture: a fresh real supervisord per test (skips when supervisord is not installed)."""
    if supervisord_binary() is None:
        skip_or_fail("supervisord is not installed (scripts/setup.sh installs it)")
    with running_supervisord() as sv:
        yield sv
