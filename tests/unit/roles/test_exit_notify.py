# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""roles/bitcoind/files/nodefleet-exit-notify, run the way supervisord runs a program.

The test plays supervisord: it spawns the program with its stdout on a pipe, and after a kill
does what supervisord 4.2's loop does, read the pipe to EOF and call waitpid(WNOHANG) at once.
Without the wrapper a multi-threaded program is often not reapable yet at that EOF (about one
kill in three here); with it the EOF comes after the zombie exists, every time.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

WRAPPER = Path(__file__).resolve().parents[3] / "roles" / "bitcoind" / "files" / "nodefleet-exit-notify"
# A daemon with many threads, like bitcoind: it prints a line when they all run.
THREADED = (
    "import threading, time\n"
    "for _ in range(16):\n"
    "    threading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n"
    "print('ready', flush=True)\n"
    "time.sleep(600)\n"
)


def spawn(*argv: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(WRAPPER), *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as supervisord gives every program
    )


def children_of(pid: int) -> list[tuple[int, bytes]]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(text[text.rfind(")") + 2 :].split()[1]) == pid:
            found.append((int(stat.parent.name), cmdline))
    return found


def read_to_eof(proc: subprocess.Popen, timeout: float = 10) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = select.select([proc.stdout], [], [], deadline - time.monotonic())[0]
        if not ready:
            break
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            return out
        out += chunk
    raise AssertionError(f"no EOF on the program's stdout within {timeout} s")


def wait_ready(proc: subprocess.Popen) -> None:
    assert proc.stdout.readline() == b"ready\n"
    deadline = time.monotonic() + 10
    while not any(b"--watch-pidfd" in cmd for _pid, cmd in children_of(proc.pid)):
        assert time.monotonic() < deadline, "the watcher did not start"
        time.sleep(0.01)


def test_a_killed_threaded_program_is_reapable_when_its_stdout_reaches_eof():
    late = 0
    for _kill in range(40):
        proc = spawn(sys.executable, "-c", THREADED)
        wait_ready(proc)
        os.kill(proc.pid, signal.SIGKILL)
        read_to_eof(proc)
        pid, status = os.waitpid(proc.pid, os.WNOHANG)
        if not pid:
            late += 1
            status = os.waitpid(proc.pid, 0)[1]
        proc.returncode = -1  # reaped here, not by Popen
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert late == 0, f"{late} of 40 killed programs were not reapable at their EOF"


def test_the_program_keeps_the_spawned_pid_and_its_exit_status():
    proc = spawn(sys.executable, "-c", "import os; print(os.getpid(), flush=True); raise SystemExit(3)")
    assert int(proc.stdout.readline()) == proc.pid
    assert proc.wait(10) == 3


def test_the_watcher_names_neither_the_program_nor_its_arguments():
    proc = spawn(sys.executable, "-c", THREADED, "-datadir=/var/lib/bitcoind/secret-name")
    try:
        wait_ready(proc)
        (watcher,) = [cmd for _pid, cmd in children_of(proc.pid)]
        argv = [arg for arg in watcher.split(b"\0") if arg]
        assert argv[-3:-1] == [str(WRAPPER).encode(), b"--watch-pidfd"], argv
        assert b"datadir" not in watcher and b"threading" not in watcher
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_a_stop_signal_to_the_group_reaches_the_program_and_the_watcher_outlives_it():
    # The program exits 1 s after SIGTERM (bitcoind flushing); the watcher must hold stdout
    # until then, and be gone after, leaving no process behind.
    slow_stop = (
        "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: (time.sleep(1), sys.exit(0)))\n" + THREADED
    )
    proc = spawn(sys.executable, "-c", slow_stop)
    wait_ready(proc)
    ((watcher_pid, _cmd),) = children_of(proc.pid)
    started = time.monotonic()
    os.killpg(proc.pid, signal.SIGTERM)
    read_to_eof(proc)
    assert time.monotonic() - started >= 0.9, "stdout reached EOF before the program had stopped"
    pid, status = os.waitpid(proc.pid, os.WNOHANG)
    proc.returncode = 0
    assert pid == proc.pid and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    deadline = time.monotonic() + 5
    while (
        Path(f"/proc/{watcher_pid}").exists() and b"--watch-pidfd" in Path(f"/proc/{watcher_pid}/cmdline").read_bytes()
    ):
        assert time.monotonic() < deadline, "the watcher outlived the program"
        time.sleep(0.01)


def test_a_program_that_cannot_be_run_exits_127_naming_it():
    proc = spawn("/nonexistent/bitcoind", "-datadir=/x")
    out = read_to_eof(proc)
    assert proc.wait(10) == 127
    assert b"nodefleet-exit-notify: cannot run /nonexistent/bitcoind: No such file or directory" in out


@pytest.mark.parametrize("argv", [[], ["-datadir=/x"], ["--watch-pidfd"]])
def test_a_missing_program_is_a_usage_error(argv):
    proc = spawn(*argv)
    out = read_to_eof(proc)
    assert proc.wait(10) == 2
    assert out == b"usage: nodefleet-exit-notify PROGRAM [ARG...]\n"
