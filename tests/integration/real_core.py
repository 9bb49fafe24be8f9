# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Real Bitcoin Core for the integration tests: found, verified, unpacked once, run as supervisord runs it.

The archive is the one ``tests/release/build_release.sh`` packages as the ``core`` release:
``bitcoin-<version>-x86_64-linux-gnu.tar.gz`` in ``$NODEFLEET_CORE_ARCHIVE_DIR`` (default
``../shared/bitcoin-core`` next to the repository), with the ``SHA256SUMS`` beside it that must
list it. Usage::

    from ansible_collections.nodefleet.bitcoin.tests.integration.real_core import (  # noqa: F401
        make_node, real_core,
    )

    def test_x(real_core, make_node, tmp_path):
        node = make_node(real_core.bitcoind, datadir, rpc_port)   # not started yet
        node.start()                  # exactly: bitcoind -conf=<datadir>/bitcoin.conf -datadir=<datadir>
        node.wait_rpc()
        node.result("getblockchaininfo")
        assert node.stop() == 0       # SIGTERM

When the archive is absent the ``real_core`` fixture skips with the reason, unless ``CI`` is
set (``.ci/run`` sets CI=1): then it fails, because CI must run these tests. The first use in
a pytest run prints one line saying which daemon core uses.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import os
import signal
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from ansible_collections.nodefleet.bitcoin.tests.integration import ci_gate

REPO = Path(__file__).resolve().parents[2]
PLATFORM = "x86_64-linux-gnu"
ARCHIVE_DIR_ENV = "NODEFLEET_CORE_ARCHIVE_DIR"


def archive_dir() -> Path:
    """Where the real Core archive is looked for (same rule as build_release.sh)."""
    value = os.environ.get(ARCHIVE_DIR_ENV)
    return Path(value) if value else REPO.parent / "shared" / "bitcoin-core"


def find_archive() -> tuple[Path | None, str]:
    """(the archive, "") when exactly one is there, else (None, why not)."""
    directory = archive_dir()
    if not directory.is_dir():
        return None, f"no real Bitcoin Core: {directory} does not exist (set {ARCHIVE_DIR_ENV})"
    found = sorted(directory.glob(f"bitcoin-*-{PLATFORM}.tar.gz"))
    if len(found) != 1:
        return None, f"no real Bitcoin Core: {len(found)} bitcoin-*-{PLATFORM}.tar.gz in {directory} (need one)"
    return found[0], ""


def verify_archive(archive: Path) -> str:
    """The archive's sha256, after checking that the SHA256SUMS beside it lists it (AssertionError if not)."""
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    sums = archive.parent / "SHA256SUMS"
    assert sums.is_file(), f"{sums} is missing: the real Core archive cannot be verified"
    listed = {}
    for line in sums.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 2:
            listed[parts[1].lstrip("*")] = parts[0]
    assert listed.get(archive.name) == digest, f"{archive} has sha256 {digest}, {sums} lists {listed.get(archive.name)}"
    return digest


def version_of(archive: Path) -> str:
    return archive.name[len("bitcoin-") : -len(f"-{PLATFORM}.tar.gz")]


def skip_or_fail(reason: str):
    """Skip with the reason, or fail when CI is set (CI must run the real-Core tests)."""
    ci_gate.skip_or_fail(f"{reason}; CI must run the real-Core tests")


@dataclass(frozen=True)
class RealCore:
    archive: Path
    version: str
    sha256: str
    root: Path  # the unpacked top directory (bin/, lib/)

    @property
    def bitcoind(self) -> Path:
        return self.root / "bin" / "bitcoind"

    @property
    def subversion(self) -> str:
        return f"/Satoshi:{self.version}/"

    def describe(self) -> str:
        return f"real Bitcoin Core {self.version} ({self.archive}, sha256 {self.sha256[:16]}...)"


_announced = False


def announce(config, line: str) -> None:
    """Print ``line`` once per pytest run, past output capture."""
    global _announced
    if _announced:
        return
    _announced = True
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        if reporter is not None:
            reporter.write_line(f"\n[nodefleet] {line}")
        else:
            print(f"[nodefleet] {line}")


@pytest.fixture(scope="session")
def real_core(tmp_path_factory, request) -> RealCore:
    """The real Core, unpacked once per run (skips or, in CI, fails when it is absent)."""
    archive, reason = find_archive()
    if archive is None:
        announce(request.config, f"core daemon: the STAND-IN (tests/standin/bitcoind): {reason}")
        skip_or_fail(reason)
    digest = verify_archive(archive)
    dest = tmp_path_factory.mktemp("real-core")
    with tarfile.open(archive) as tar:
        tops = {name.split("/", 1)[0] for name in tar.getnames()}
        assert len(tops) == 1, tops
        tar.extractall(dest, filter="tar")
    core = RealCore(archive=archive, version=version_of(archive), sha256=digest, root=dest / tops.pop())
    assert core.bitcoind.is_file() and os.access(core.bitcoind, os.X_OK), core.bitcoind
    announce(request.config, f"core daemon: {core.describe()}")
    return core


# -- one daemon process --------------------------------------------------------------------


class Node:
    """One bitcoind process (real Core or the stand-in) on a datadir; RPC over loopback."""

    def __init__(self, exe: Path, datadir: Path, rpc_port: int, auth=("u", "p"), env=None, conf: Path | None = None):
        self.exe = Path(exe)
        self.datadir = Path(datadir)
        self.conf = conf or self.datadir / "bitcoin.conf"
        self.rpc_port = rpc_port
        self.auth = auth
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.out_path = self.datadir.parent / f"{self.datadir.name}.out"

    def command(self, extra=()) -> list[str]:
        """The supervisord program's command (roles/bitcoind/vars/main.yml), plus ``extra``."""
        return [str(self.exe), f"-conf={self.conf}", f"-datadir={self.datadir}", *extra]

    def start(self, extra=()) -> subprocess.Popen:
        out = open(self.out_path, "ab")  # noqa: SIM115 - the child holds it; closed below
        try:
            self.proc = subprocess.Popen(
                self.command(extra),
                env=dict(os.environ, **self.env),
                stdout=out,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        finally:
            out.close()
        return self.proc

    def output(self) -> str:
        return self.out_path.read_text(encoding="utf-8", errors="replace") if self.out_path.exists() else ""

    def rpc(self, method: str, params=(), auth=None, timeout: float = 5.0):
        """(HTTP status, parsed JSON body or None, headers) for one JSON-RPC 1.0 call."""
        user, password = auth or self.auth
        body = json.dumps({"jsonrpc": "1.0", "id": 1, "method": method, "params": list(params)})
        conn = http.client.HTTPConnection("127.0.0.1", self.rpc_port, timeout=timeout)
        try:
            conn.request(
                "POST",
                "/",
                body=body,
                headers={
                    "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode(),
                    "Content-Type": "application/json",
                },
            )
            resp = conn.getresponse()
            raw = resp.read()
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = None
            return resp.status, parsed, {k.lower(): v for k, v in resp.getheaders()}
        finally:
            conn.close()

    def result(self, method: str, params=()):
        status, reply, _ = self.rpc(method, params)
        assert status == 200 and reply and reply.get("error") is None, (method, status, reply)
        return reply["result"]

    def wait_rpc(self, timeout: float = 30.0, accept_warmup: bool = False) -> dict:
        """Poll until RPC answers (``uptime``); with accept_warmup, a -28 answer is enough.

        Returns the last reply. Fails at once when the process ends."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.exe.name} exited with {self.proc.returncode} before RPC answered:\n"
                    f"stderr: {self.stderr()}\nstdout: {self.output()[-3000:]}"
                )
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, reply, _ = self.rpc("uptime", timeout=2.0)
                last = (status, reply)
                if status == 200:
                    return reply
                if accept_warmup and reply and (reply.get("error") or {}).get("code") == -28:
                    return reply
            time.sleep(0.02)
        raise AssertionError(f"RPC of {self.exe} did not answer within {timeout}s (last: {last})")

    def stderr(self) -> str:
        if self.proc is None or self.proc.stderr is None or self.proc.poll() is None:
            return ""
        with contextlib.suppress(ValueError, OSError):
            return self.proc.stderr.read().decode(errors="replace")
        return ""

    def stop(self, sig=signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig`` and wait for the exit; returns the exit status."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def run(self, extra=(), timeout: float = 30.0) -> subprocess.CompletedProcess:
        """Run to completion (a start expected to fail): exit status, stdout, stderr."""
        return subprocess.run(
            self.command(extra),
            env=dict(os.environ, **self.env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture
def make_node():
    """Factory for :class:`Node`; every node is SIGKILLed at the end of the test if still running."""
    nodes: list[Node] = []

    def factory(exe, datadir, rpc_port, **kw) -> Node:
        node = Node(exe, datadir, rpc_port, **kw)
        nodes.append(node)
        return node

    yield factory
    for node in nodes:
        node.kill()


def wait_for(predicate, timeout: float, what: str):
    """Poll ``predicate`` every 0.1 s until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout}s (last: {value})")
