# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A real, offline tor for integration tests.

Usage in a test module under tests/integration::

    from tor_fixture import TorDaemon, tor  # noqa: F401  (``tor`` is a pytest fixture)

    def test_something(tor):                 # a started TorDaemon in a temp dir
        args = tor.module_args()             # torrc_dir, torrc_file, tor_pid_file,
                                             # tor_defaults_torrc, tor_user for tor_hidden_service
        service_dir = tor.service_root / "svc"   # an existing 0700 parent for HiddenServiceDirs
        tor.reload_count()                   # "Received reload signal" lines logged so far
        tor.wait_for_reloads(n)              # wait (bounded) until n reloads are logged
        tor.restart()                        # stop, then start a new tor on the same data + config

Or without pytest: ``with TorDaemon(tmp_dir) as tor: ...`` (started on enter, stopped on exit).

Layout under ``base``: ``data/`` (DataDirectory), ``torrc`` (main config, ``%include
<base>/torrc.d/*.conf``), ``torrc.d/``, ``defaults-torrc`` (empty: keeps Debian's
/usr/share/tor/tor-service-defaults-torrc, which names /var/lib/tor and debian-tor, out of the
way), ``tor.pid``, ``tor.log`` (notice level), ``services/`` (parent for service dirs).

tor runs as the current user with ``DisableNetwork 1`` (no traffic leaves the machine; onion
keys and ``hostname`` files are still created within about a second) and ``SocksPort
127.0.0.1:auto``; :attr:`TorDaemon.socks_port` is the port tor picked.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

TOR_BIN = shutil.which("tor") or "/usr/bin/tor"
RELOAD_LINE = "Received reload signal"


class TorDaemon:
    """One tor process with its own DataDirectory and config under ``base``."""

    def __init__(self, base, extra_config=(), disable_network: bool = True):
        self.base = Path(base)
        self.data_dir = self.base / "data"
        self.torrc_dir = self.base / "torrc.d"
        self.torrc_file = self.base / "torrc"
        self.defaults_torrc = self.base / "defaults-torrc"
        self.pid_file = self.base / "tor.pid"
        self.log_file = self.base / "tor.log"
        self.service_root = self.base / "services"
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.extra_config = list(extra_config)
        self.disable_network = disable_network
        self.process: subprocess.Popen | None = None
        self.socks_port: int | None = None
        self._write_layout()

    # ---------------------------------------------------------------- setup
    def _write_layout(self) -> None:
        for directory, mode in ((self.base, 0o755), (self.data_dir, 0o700), (self.service_root, 0o700)):
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(mode)
        self.torrc_dir.mkdir(exist_ok=True)
        self.torrc_dir.chmod(0o755)
        self.defaults_torrc.write_text("")
        lines = [
            f"DataDirectory {self.data_dir}",
            f"PidFile {self.pid_file}",
            "SocksPort 127.0.0.1:auto",
            f"Log notice file {self.log_file}",
            "RunAsDaemon 0",
        ]
        if self.disable_network:
            lines.append("DisableNetwork 1")
        lines += self.extra_config
        lines.append(f"%include {self.torrc_dir}/*.conf")
        self.torrc_file.write_text("\n".join(lines) + "\n")

    def module_args(self) -> dict:
        """The tor_hidden_service options that point the module at this tor."""
        return {
            "torrc_dir": str(self.torrc_dir),
            "torrc_file": str(self.torrc_file),
            "tor_defaults_torrc": str(self.defaults_torrc),
            "tor_pid_file": str(self.pid_file),
            "tor_user": self.user,
        }

    # ---------------------------------------------------------------- lifecycle
    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process and self.process.poll() is None else None

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def reload_count(self) -> int:
        """How many SIGHUP reloads every tor started here has logged (the log is appended to)."""
        return self.log_text().count(RELOAD_LINE)

    def wait_for_reloads(self, count: int, timeout: float = 10) -> int:
        """Wait until at least ``count`` reloads are logged (tor logs one before acting on a SIGHUP)."""
        deadline = time.monotonic() + timeout
        while self.reload_count() < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"tor logged {self.reload_count()} reloads, not {count}, within {timeout} s")
            time.sleep(0.05)
        return self.reload_count()

    def wait_for_log(self, needle: str, start: int = 0, timeout: float = 15) -> str:
        """Wait until ``needle`` appears in the log after character ``start``; returns the new text."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_text()[start:]
            if needle in text:
                return text
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"tor exited with {self.process.returncode}:\n{text[-2000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"tor logged no {needle!r} within {timeout} s:\n{self.log_text()[start:][-2000:]}")

    def start(self, timeout: float = 15) -> TorDaemon:
        if self.pid is not None:
            return self
        offset = len(self.log_text())
        if self.pid_file.exists():
            self.pid_file.unlink()
        self.process = subprocess.Popen(
            [TOR_BIN, "-f", str(self.torrc_file), "--defaults-torrc", str(self.defaults_torrc)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            # The main loop (and its SIGHUP handler) runs once tor logs bootstrap 0%.
            text = self.wait_for_log("Bootstrapped 0%", offset, timeout)
            deadline = time.monotonic() + timeout
            while not (self.pid_file.exists() and self.pid_file.read_text().strip() == str(self.process.pid)):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"tor wrote no pid file {self.pid_file}")
                time.sleep(0.05)
            match = re.search(r"Socks listener listening on port (\d+)", text)
            self.socks_port = int(match.group(1)) if match else None
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def restart(self, timeout: float = 15) -> TorDaemon:
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> TorDaemon:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture
def tor(tmp_path):
    """A started :class:`TorDaemon` in ``tmp_path/tor``; always stopped afterwards."""
    daemon = TorDaemon(tmp_path / "tor")
    try:
        yield daemon.start()
    finally:
        daemon.stop()
