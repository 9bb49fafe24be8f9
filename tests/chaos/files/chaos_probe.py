#!/usr/bin/env python3
# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Chaos probe: runs ON a fleet node (copied there by tests/chaos/run_cell.yml).

Standard library only. Injects one fault, measures recovery on the node's own clock with
millisecond resolution, and takes snapshots (supervisord, tor, every instance's RPC, onion
address, rpcauth lines, bitcoind processes per datadir).

Secrets: RPC credentials arrive on stdin as JSON ({"instances": [{"name", "user",
"password", "datadir"?}]}) and are never printed; every output is JSON on stdout without
them.

    chaos_probe.py snapshot
    chaos_probe.py mine     --names a,b [--blocks 1]
    chaos_probe.py inject   --target instance|all|tor|supervisord --fault F --timing steady|startup --names a,b
    chaos_probe.py wait     --t0-ms T --what rpc|tor|supervisord --names a,b --timeout S [--old-pids ...]
    chaos_probe.py run      (inject, then wait: one call, so nothing sits between the fault and the first poll)
    chaos_probe.py cleanup  (ends foreign listeners this probe started; resumes processes it stopped)
    chaos_probe.py killbench --names a --floor-program P --count N   (tests/bench/bench_recovery.py)
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import xmlrpc.client

SUPERVISOR_SOCK = "/var/run/supervisor.sock"
PROGRAM_DIR = "/etc/supervisor/conf.d"
TORRC_DIR = "/etc/tor/torrc.d"
TOR_DATA = "/var/lib/tor"
STATE_DIR = "/run/nodefleet-chaos"
NETWORK_SUBDIR = {"main": "", "test": "testnet3", "testnet4": "testnet4", "signet": "signet", "regtest": "regtest"}
REGTEST_ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
POLL_S = 0.05
FOREIGN_LIFETIME_S = 900  # a foreign listener ends by itself even if cleanup never runs
BROKEN_LINE = "nodefleet-chaos: this line breaks bitcoin.conf on purpose"


def now_ms() -> int:
    return int(time.time() * 1000)


# ---------------------------------------------------------------------------- supervisord
class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str, timeout: float):
        super().__init__()
        self._path = path
        self._timeout = timeout

    def make_connection(self, host):
        return _UnixHTTPConnection(self._path, self._timeout)


def sv_proxy(timeout: float = 3.0):
    return xmlrpc.client.ServerProxy("http://localhost/RPC2", transport=_UnixTransport(SUPERVISOR_SOCK, timeout))


def sv_all(timeout: float = 3.0) -> dict | None:
    """Program name -> process info, or None when supervisord does not answer in time."""
    try:
        infos = sv_proxy(timeout).supervisor.getAllProcessInfo()
    except (OSError, xmlrpc.client.Error, http.client.HTTPException):
        return None
    return {info["name"]: info for info in infos}


# ---------------------------------------------------------------------------- processes
def proc_table() -> list[dict]:
    """Every process: pid, ppid, state letter, argv."""
    table = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = [a.decode("utf-8", "replace") for a in fh.read().split(b"\0") if a]
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2 :].split()
        table.append({"pid": int(entry), "ppid": int(rest[1]), "state": rest[0], "argv": argv})
    return table


def is_bitcoind(argv: list[str]) -> bool:
    """bitcoind itself, or the stand-in (a Python script named bitcoind run by python3)."""
    names = [os.path.basename(a) for a in argv[:2]]
    return "bitcoind" in names


def daemon_kind(argv: list[str]) -> str:
    """``native`` (a bitcoind binary: real Core/Knots) or ``standin`` (the Python stand-in,
    which keeps every block and exchanges none with peers)."""
    return "native" if argv and os.path.basename(argv[0]) == "bitcoind" else "standin"


def daemons_by_datadir(table: list[dict]) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for proc in table:
        if not is_bitcoind(proc["argv"]):
            continue
        for arg in proc["argv"]:
            if arg.startswith("-datadir="):
                entry = {"pid": proc["pid"], "ppid": proc["ppid"], "state": proc["state"]}
                entry["kind"] = daemon_kind(proc["argv"])
                found.setdefault(os.path.normpath(arg[len("-datadir=") :]), []).append(entry)
    return found


def pids_of(table: list[dict], predicate) -> list[int]:
    return sorted(p["pid"] for p in table if p["argv"] and predicate(p["argv"]))


def _is_supervisord(argv):
    return any(os.path.basename(a) == "supervisord" for a in argv[:2])


def _is_tor(argv):
    return os.path.basename(argv[0]) == "tor"


def systemd_main_pid(unit: str) -> int:
    out = subprocess.run(
        ["systemctl", "show", "-p", "MainPID", "--value", unit], capture_output=True, text=True, timeout=10
    ).stdout.strip()
    return int(out) if out.isdigit() else 0


# ---------------------------------------------------------------------------- bitcoin.conf
def parse_conf(text: str) -> dict:
    """chain, per-section options and rpcauth lines of a bitcoin.conf (lenient: bad lines skipped)."""
    chain = "main"
    section = ""
    values: dict[str, dict[str, list[str]]] = {"": {}}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            values.setdefault(section, {})
            continue
        if "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        values[section].setdefault(key, []).append(value)
    for flag in ("regtest", "testnet", "testnet4", "signet"):
        if values[""].get(flag, ["0"])[-1] == "1":
            chain = {"testnet": "test"}.get(flag, flag)
    chain = values[""].get("chain", [chain])[-1]
    sect = values.get(chain, {})

    def opt(key):
        return (sect.get(key) or values[""].get(key) or [None])[-1]

    rpcbind = opt("rpcbind") or "127.0.0.1"
    bind = [b for b in (sect.get("bind") or values[""].get("bind") or []) if not b.endswith("=onion")]
    return {
        "chain": chain,
        "rpcport": int(opt("rpcport")) if opt("rpcport") else None,
        "p2pport": int(opt("port")) if opt("port") else None,
        "rpchost": rpcbind.rsplit(":", 1)[0] if rpcbind.count(":") == 1 else rpcbind,
        "p2pbind": bind[0].rsplit(":", 1)[0] if bind else "0.0.0.0",
        "rpcauth": values[""].get("rpcauth", []) + sect.get("rpcauth", []),
    }


def read_file(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError:
        return None


class Instance:
    def __init__(self, spec: dict):
        self.name = spec["name"]
        self.user = spec.get("user")
        self._password = spec.get("password")
        self.datadir = os.path.normpath(spec.get("datadir") or f"/var/lib/bitcoind/{self.name}")
        self.program = f"bitcoind-{self.name}"
        self.conf_path = os.path.join(self.datadir, "bitcoin.conf")
        self.refresh()

    def refresh(self) -> None:
        """Re-read bitcoin.conf; keep the last known values when it is gone or broken."""
        text = read_file(self.conf_path)
        self.conf_text = text
        parsed = parse_conf(text or "")
        old = getattr(self, "conf", {})
        self.conf = {key: value if value else old.get(key, value) for key, value in parsed.items()}

    @property
    def network_dir(self) -> str:
        sub = NETWORK_SUBDIR.get(self.conf.get("chain") or "main", "")
        return os.path.join(self.datadir, sub) if sub else self.datadir

    def rpc(self, method: str, params: list | None = None, timeout: float = 2.0) -> tuple[bool, object]:
        """(True, result) or (False, {"code"/"http"/"error": ...}); never raises, never shows the password."""
        port = self.conf.get("rpcport")
        if not port or not self.user:
            return False, {"error": "no rpc port or user"}
        body = json.dumps({"jsonrpc": "1.0", "id": "chaos", "method": method, "params": params or []})
        token = base64.b64encode((f"{self.user}:{self._password}").encode()).decode()
        conn = http.client.HTTPConnection(self.conf.get("rpchost") or "127.0.0.1", port, timeout=timeout)
        try:
            conn.request("POST", "/", body, {"Authorization": "Basic " + token, "Content-Type": "application/json"})
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            kind = "timeout" if isinstance(exc, (socket.timeout, TimeoutError)) else type(exc).__name__
            return False, {"error": kind}
        finally:
            conn.close()
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            return False, {"http": resp.status, "error": "not json"}
        if data.get("error"):
            return False, {
                "http": resp.status,
                "code": data["error"].get("code"),
                "error": data["error"].get("message"),
            }
        if resp.status != 200:
            return False, {"http": resp.status, "error": "http status"}
        return True, data.get("result")


def load_instances(stdin_text: str) -> list[Instance]:
    data = json.loads(stdin_text) if stdin_text.strip() else {}
    return [Instance(spec) for spec in data.get("instances", [])]


def pick(instances: list[Instance], names: str | None) -> list[Instance]:
    if not names:
        return instances
    wanted = names.split(",")
    missing = set(wanted) - {i.name for i in instances}
    if missing:
        raise SystemExit("unknown instance(s): {}".format(", ".join(sorted(missing))))
    return [i for i in instances if i.name in wanted]


# ---------------------------------------------------------------------------- tor
def socks_ok(timeout: float = 1.0) -> bool:
    """tor answers a SOCKS5 greeting on 127.0.0.1:9050 (no-auth method accepted)."""
    try:
        with socket.create_connection(("127.0.0.1", 9050), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"\x05\x01\x00")
            return sock.recv(2) == b"\x05\x00"
    except OSError:
        return False


def onion_of(name: str) -> str | None:
    text = read_file(os.path.join(TOR_DATA, f"nodefleet-{name}", "hostname"))
    return text.strip() if text else None


# ---------------------------------------------------------------------------- snapshot
def snapshot(instances: list[Instance], rpc_timeout: float = 2.0) -> dict:
    table = proc_table()
    by_dir = daemons_by_datadir(table)
    sv = sv_all()
    taken = now_ms()
    out = {
        "t_ms": taken,
        "supervisord": {
            "pids": pids_of(table, _is_supervisord),
            "main_pid": systemd_main_pid("supervisor.service"),
            "xmlrpc_ok": sv is not None,
        },
        "tor": {"pids": pids_of(table, _is_tor), "socks_ok": socks_ok()},
        "instances": {},
    }
    for inst in instances:
        inst.refresh()
        info = (sv or {}).get(inst.program) or {}
        ok, result = inst.rpc("uptime", timeout=rpc_timeout)
        blocks_ok, blocks = inst.rpc("getblockcount", timeout=rpc_timeout) if ok else (False, None)
        chain = chain_state(inst, blocks, rpc_timeout) if blocks_ok else {}
        out["instances"][inst.name] = {
            "program_state": info.get("statename"),
            "program_pid": info.get("pid"),
            "program_file": os.path.exists(os.path.join(PROGRAM_DIR, inst.program + ".conf")),
            "torrc_dropin": os.path.exists(os.path.join(TORRC_DIR, f"nodefleet-{inst.name}.conf")),
            "rpc_ok": ok,
            "rpc_error": None if ok else result,
            "uptime_s": result if ok else None,
            "started_ms": taken - int(result) * 1000 if ok else None,
            "blocks": blocks if blocks_ok else None,
            "chain": inst.conf.get("chain"),
            "ports": {"rpc": inst.conf.get("rpcport"), "p2p": inst.conf.get("p2pport")},
            "onion": onion_of(inst.name),
            "rpcauth": inst.conf.get("rpcauth") if inst.conf_text else None,
            "conf_sha256": hashlib.sha256(inst.conf_text.encode()).hexdigest() if inst.conf_text else None,
            "daemons": by_dir.get(inst.datadir, []),
            "bestblockhash": chain.get("best"),
            "chain_id": chain.get("chain_id"),
            "connections": chain.get("connections"),
            "peers": chain.get("peers"),
        }
    return out


def chain_state(inst: Instance, blocks: int, rpc_timeout: float = 2.0) -> dict:
    """The instance's tip (best block hash), its chain's identity (the hash of block 1, or of
    the genesis block at height 0: two daemons that exchanged blocks share it, two chains
    mined apart do not) and its peer connections (address, direction, user agent)."""
    out: dict = {}
    ok, best = inst.rpc("getbestblockhash", timeout=rpc_timeout)
    out["best"] = best if ok else None
    ok, ident = inst.rpc("getblockhash", [1 if blocks and blocks >= 1 else 0], timeout=rpc_timeout)
    out["chain_id"] = ident if ok else None
    ok, peers = inst.rpc("getpeerinfo", timeout=rpc_timeout)
    if ok and isinstance(peers, list):
        out["connections"] = len(peers)
        out["peers"] = [
            {"addr": p.get("addr"), "inbound": p.get("inbound"), "subver": p.get("subver")} for p in peers[:8]
        ]
    return out


# ---------------------------------------------------------------------------- waiting
def wait_until(predicate, timeout: float, interval: float = POLL_S):
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def is_fresh(inst: Instance, table: list[dict], old_pids: list[int] | None, t0_ms: int, uptime_s) -> bool:
    """The daemon answering is a new one: none of ``old_pids`` serves the datadir any more, or
    (no pids known, e.g. after a reboot that reuses pid numbers) it started after ``t0_ms``."""
    if old_pids is None:
        return True
    if old_pids:
        current = [d["pid"] for d in daemons_by_datadir(table).get(inst.datadir, [])]
        return bool(current) and not set(current) & set(old_pids)
    return uptime_s is not None and uptime_s * 1000 <= now_ms() - t0_ms + 1000


def wait_rpc(
    instances: list[Instance],
    t0_ms: int,
    timeout: float,
    replaced: dict | None = None,
    tips: dict | None = None,
    tip_timeout: float = 60.0,
) -> dict:
    """Poll every instance until it answers getblockcount (from a new daemon where ``replaced``
    names one); time to recovery per instance, in ms from ``t0_ms``.

    ``tips`` ({name: {"hash", "height"}}: the fleet's tip of the instance's chain before the
    fault): after an instance answers, keep polling it (at most ``tip_timeout`` s) until its
    best block hash is that tip, and record the height it came back with (the lowest seen
    from the new daemon: Core may lose blocks it had not flushed when it is killed, and then
    fetches them from its peers)."""
    replaced = replaced or {}
    tips = tips or {}
    pending = {i.name: i for i in instances}
    first_reply: dict[str, int] = {}
    recovered: dict[str, int] = {}
    last_error: dict[str, object] = {}
    tip_pending: dict[str, Instance] = {}
    tip_deadline: dict[str, float] = {}
    height_after: dict[str, int] = {}
    min_height: dict[str, int] = {}
    tip_ms: dict[str, int] = {}
    last_tip: dict[str, object] = {}
    deadline = time.monotonic() + timeout
    while (pending and time.monotonic() < deadline) or tip_pending:
        for name, inst in list(pending.items()):
            if time.monotonic() >= deadline:
                break
            inst.refresh()
            ok, result = inst.rpc("getblockcount", timeout=1.0)
            stamp = now_ms()
            old = replaced.get(name)
            if ok and old is not None:
                up_ok, uptime = inst.rpc("uptime", timeout=1.0) if old == [] else (True, None)
                ok = up_ok and is_fresh(inst, proc_table(), old, t0_ms, uptime)
                if not ok:
                    result = {"error": "still the old daemon"}
            if ok or (isinstance(result, dict) and result.get("code") is not None):
                first_reply.setdefault(name, stamp - t0_ms)
            if ok:
                recovered[name] = stamp - t0_ms
                del pending[name]
                height_after[name] = min_height[name] = result
                if name in tips:
                    tip_pending[name] = inst
                    tip_deadline[name] = time.monotonic() + tip_timeout
            else:
                last_error[name] = result
        for name, inst in list(tip_pending.items()):
            ok, height = inst.rpc("getblockcount", timeout=1.0)
            if ok:
                min_height[name] = min(min_height[name], height)
            ok_best, best = inst.rpc("getbestblockhash", timeout=1.0) if ok else (False, None)
            stamp = now_ms()
            last_tip[name] = {"height": height if ok else None, "hash": best if ok_best else None}
            if ok_best and best == tips[name].get("hash"):
                tip_ms[name] = stamp - t0_ms
                del tip_pending[name]
            elif time.monotonic() >= tip_deadline[name]:
                del tip_pending[name]
        if pending or tip_pending:
            time.sleep(POLL_S)
    out = {
        "recovered": not pending,
        "ttr_ms": recovered,
        "first_reply_ms": first_reply,
        "not_recovered": sorted(pending),
        "last_error": {k: v for k, v in last_error.items() if k in pending},
    }
    if tips:
        out["chain"] = {
            name: {
                "fleet_tip": tips[name],
                "height_after_restart": height_after.get(name),
                "min_height": min_height.get(name),
                "tip_ms": tip_ms.get(name),
                "tip_after_rpc_ms": tip_ms[name] - recovered[name] if name in tip_ms else None,
                "last_seen": last_tip.get(name),
            }
            for name in tips
            if name in {i.name for i in instances}
        }
        out["tip_regained"] = all(out["chain"][n]["tip_ms"] is not None for n in out["chain"])
    return out


def wait_tor(t0_ms: int, timeout: float, old_pids: list[int]) -> int | None:
    """ms from t0 until a tor that is not one of ``old_pids`` answers SOCKS, or None."""

    def ready():
        pids = pids_of(proc_table(), _is_tor)
        return bool(pids) and not set(pids) & set(old_pids) and socks_ok(0.5)

    return now_ms() - t0_ms if wait_until(ready, timeout) else None


def wait_supervisord(t0_ms: int, timeout: float, old_pids: list[int]) -> int | None:
    """ms from t0 until a supervisord that is not one of ``old_pids`` answers XML-RPC, or None."""

    def ready():
        pid = systemd_main_pid("supervisor.service")
        return pid and pid not in old_pids and sv_all(1.0) is not None

    return now_ms() - t0_ms if wait_until(ready, timeout) else None


# ---------------------------------------------------------------------------- faults
SIGNALS = {"sigterm": signal.SIGTERM, "sigkill": signal.SIGKILL, "sigstop": signal.SIGSTOP}


def _record(kind: str, data: dict) -> None:
    os.makedirs(STATE_DIR, exist_ok=True)
    path = os.path.join(STATE_DIR, f"{kind}.json")
    entries = json.loads(read_file(path) or "[]")
    entries.append(data)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(entries, fh)


def _program_pid(inst: Instance) -> int | None:
    info = (sv_all() or {}).get(inst.program) or {}
    return info.get("pid") or None


def _restart_into_startup(targets: list[Instance], startup_delay: float) -> dict:
    """Stop the targets through supervisord, start them without waiting, return their new pids."""
    proxy = sv_proxy(120.0)
    for inst in targets:
        with contextlib.suppress(xmlrpc.client.Fault):
            proxy.supervisor.stopProcess(inst.program, True)
    spawned = {}
    for inst in targets:
        proxy.supervisor.startProcess(inst.program, False)
    for inst in targets:
        spawned[inst.name] = wait_until(lambda i=inst: _program_pid(i), 10.0, 0.01)
    time.sleep(startup_delay)
    states = {name: ((sv_all() or {}).get("bitcoind-" + name) or {}).get("statename") for name in spawned}
    return {"pids": spawned, "states_at_fault": states}


def _restart_unit_into_startup(unit: str, is_proc, startup_delay: float) -> dict:
    old = systemd_main_pid(unit)
    subprocess.run(["systemctl", "restart", "--no-block", unit], check=True, timeout=30)
    new = wait_until(lambda: (p := systemd_main_pid(unit)) and p != old and p, 60.0, 0.01)
    time.sleep(startup_delay)
    return {"old_pid": old, "pid": new}


# ------------------------------------------------------------------ kernel limits (issue 12)
# A memory hog inside an instance's slice: allocates (and touches) 16 MiB at a time until the
# daemon whose pid it was given is gone (the kernel's OOM killer ended it), then exits; bounded.
OOM_HOG = (
    "import os, sys, time\n"
    "pid = int(sys.argv[1]); held = []; end = time.monotonic() + 60\n"
    "while time.monotonic() < end and len(held) < 1024:\n"
    "    try:\n"
    "        os.kill(pid, 0)\n"
    "    except OSError:\n"
    "        break\n"
    "    held.append(bytearray(16 << 20))\n"
    "    for i in range(0, 16 << 20, 4096):\n"
    "        held[-1][i] = 1\n"
)
SPINNER = (
    "import time\nend = time.monotonic() + float(__import__('sys').argv[1])\nwhile time.monotonic() < end:\n    pass\n"
)


def instance_slice(pid: int) -> tuple[str, str]:
    """(slice unit, memory cgroup dir) of a limited instance's daemon, from /proc/<pid>/cgroup."""
    paths = {}
    for line in (read_file(f"/proc/{pid}/cgroup") or "").splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            paths[c] = path
    path = paths.get("memory") or paths.get("", "")
    if "/nodefleet.slice/" not in path:
        raise SystemExit(f"pid {pid} is not in a nodefleet slice (the instance has no limits): {path}")
    slice_path = path.rpartition("/")[0] if path.endswith(".scope") else path
    for base in ("/sys/fs/cgroup/memory", "/sys/fs/cgroup"):
        if os.path.exists(base + slice_path + "/cgroup.procs"):
            return os.path.basename(slice_path), base + slice_path
    raise SystemExit(f"no memory cgroup directory for {slice_path}")


def slice_cpu_quota(pid: int) -> int | None:
    """The CPU quota (percent of one CPU) the kernel enforces on the daemon's slice."""
    paths = {}
    for line in (read_file(f"/proc/{pid}/cgroup") or "").splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            paths[c] = path
    path = paths.get("cpu") or paths.get("", "")
    path = path.rpartition("/")[0] if path.endswith(".scope") else path
    v1 = read_file(f"/sys/fs/cgroup/cpu{path}/cpu.cfs_quota_us")
    if v1 is not None:
        quota, period = int(v1), int(read_file(f"/sys/fs/cgroup/cpu{path}/cpu.cfs_period_us") or 100000)
    else:
        words = (read_file(f"/sys/fs/cgroup{path}/cpu.max") or "max 100000").split()
        quota, period = (-1 if words[0] == "max" else int(words[0])), int(words[1])
    return None if quota < 0 else round(quota * 100 / period)


def oom_kills(memdir: str) -> int | None:
    text = (
        read_file(os.path.join(memdir, "memory.oom_control")) or read_file(os.path.join(memdir, "memory.events")) or ""
    )
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "oom_kill":
            return int(words[1])
    return None


def in_slice(unit: str, argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        ["systemd-run", "--scope", "--quiet", "--collect", f"--slice={unit}", "--", *argv],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def proc_cpu_seconds(pid: int) -> float:
    fields = (read_file(f"/proc/{pid}/stat") or "").rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") if len(fields) > 12 else 0.0


def rpc_latencies(neighbours: list, seconds: float) -> dict:
    """getblockcount round-trips (ms) to each neighbour, back to back for ``seconds``."""
    samples: list[float] = []
    errors = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for inst in neighbours:
            start = time.monotonic()
            ok, _ = inst.rpc("getblockcount", timeout=5.0)
            if ok:
                samples.append((time.monotonic() - start) * 1000)
            else:
                errors += 1
        time.sleep(0.05)
    samples.sort()

    def pct(p):
        return round(samples[min(len(samples) - 1, int(len(samples) * p / 100))], 1) if samples else None

    return {"n": len(samples), "errors": errors, "p50_ms": pct(50), "p95_ms": pct(95), "max_ms": pct(100)}


def inject_oom(inst, detail: dict) -> int:
    pid = _program_pid(inst)
    if not pid:
        raise SystemExit(f"no pid for {inst.name}")
    unit, memdir = instance_slice(pid)
    detail.update({"slice": unit, "pids": {inst.name: pid}, "replaced": {inst.name: [pid]}})
    detail["oom_kills_before"] = oom_kills(memdir)
    detail["failcnt_before"] = _int_file(os.path.join(memdir, "memory.failcnt"))
    detail["memory_limit"] = (
        read_file(os.path.join(memdir, "memory.limit_in_bytes")) or read_file(os.path.join(memdir, "memory.max")) or ""
    ).strip()
    # the daemon is the victim the kernel picks inside the slice (the hog is only the pressure)
    with open(f"/proc/{pid}/oom_score_adj", "w", encoding="ascii") as fh:
        fh.write("1000")
    t0 = now_ms()
    hog = in_slice(unit, [sys.executable, "-c", OOM_HOG, str(pid)])
    gone = wait_until(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), 60.0, 0.05)
    detail["daemon_killed_after_ms"] = now_ms() - t0 if gone else None
    try:
        hog.wait(30)
    except subprocess.TimeoutExpired:
        hog.kill()
    detail["oom_kills_after"] = oom_kills(memdir)
    # cgroup v1 counts an OOM kill only in the victim's own memcg (the scope, which systemd removes
    # with it); the slice's failcnt (the limit was hit) and max usage show the kernel acted there
    detail["failcnt_after"] = _int_file(os.path.join(memdir, "memory.failcnt"))
    detail["max_usage_after"] = _int_file(os.path.join(memdir, "memory.max_usage_in_bytes"))
    detail["cgroup_version"] = 1 if memdir.startswith("/sys/fs/cgroup/memory/") else 2
    return t0


def _int_file(path: str) -> int | None:
    text = (read_file(path) or "").strip()
    return int(text) if text.isdigit() else None


def _zombie(pid: int) -> bool:
    stat = read_file(f"/proc/{pid}/stat") or ""
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def inject_cpu_spin(inst, instances: list, detail: dict, seconds: float) -> int:
    pid = _program_pid(inst)
    if not pid:
        raise SystemExit(f"no pid for {inst.name}")
    unit, _ = instance_slice(pid)
    neighbours = [i for i in instances if i.name != inst.name]
    if not neighbours:
        raise SystemExit("cpu_spin needs a neighbour instance on the node")
    detail.update({"slice": unit, "pids": {inst.name: pid}, "replaced": {inst.name: None}})
    detail["neighbours"] = [i.name for i in neighbours]
    detail["cpu_quota_percent"] = slice_cpu_quota(pid)
    detail["baseline"] = rpc_latencies(neighbours, 5.0)
    count = os.cpu_count() or 1
    spinners = [in_slice(unit, [sys.executable, "-c", SPINNER, str(seconds + 2)]) for _ in range(count)]
    time.sleep(1.0)
    started = time.monotonic()
    detail["during"] = rpc_latencies(neighbours, seconds)
    wall = time.monotonic() - started + 1.0
    # the spinners' CPU (their own processes: systemd-run exec'd python, same pid)
    cpu = sum(proc_cpu_seconds(p.pid) for p in spinners)
    detail["spinners"] = count
    detail["spin_cpu_percent"] = round(cpu * 100 / wall, 1)
    for p in spinners:
        p.kill()
        p.wait(10)
    detail["target_pid_after"] = _program_pid(inst)
    return now_ms()


def inject(args, instances: list[Instance]) -> dict:
    """Inject one fault. Returns t0_ms (the instant of the fault) and what was done."""
    targets = pick(instances, args.names) if args.target in ("instance", "all") else []
    detail: dict = {"target": args.target, "fault": args.fault, "timing": args.timing}
    fault = args.fault

    if fault in SIGNALS:
        sig = SIGNALS[fault]
        if args.target in ("instance", "all"):
            if args.timing == "startup":
                detail["startup"] = _restart_into_startup(targets, args.startup_delay)
                pids = detail["startup"]["pids"]
            else:
                pids = {inst.name: _program_pid(inst) for inst in targets}
            if not all(pids.values()):
                raise SystemExit(f"no pid for {pids}")
            detail["pids"] = pids
            detail["replaced"] = {name: [pid] for name, pid in pids.items()}
            t0 = now_ms()
            for pid in pids.values():
                os.kill(pid, sig)
        else:
            unit, is_proc = {
                "tor": ("tor@default.service", _is_tor),
                "supervisord": ("supervisor.service", _is_supervisord),
            }[args.target]
            if args.timing == "startup":
                detail["startup"] = _restart_unit_into_startup(unit, is_proc, args.startup_delay)
                pid = detail["startup"]["pid"]
            else:
                pid = systemd_main_pid(unit)
            if not pid:
                raise SystemExit(f"{unit} has no main pid")
            detail["pids"] = {args.target: pid}
            if args.target == "supervisord":
                # supervisord going away takes its programs with it (KillMode=control-group):
                # every instance must come back as a new daemon, none may survive as an orphan
                by_dir = daemons_by_datadir(proc_table())
                detail["replaced"] = {i.name: [d["pid"] for d in by_dir.get(i.datadir, [])] for i in instances}
            t0 = now_ms()
            os.kill(pid, sig)
        if fault == "sigstop":
            _record("stopped", {"pids": list(detail["pids"].values())})
        return _remember({"t0_ms": t0, "detail": detail})

    if len(targets) != 1:
        raise SystemExit(f"fault {fault} needs exactly one instance in --names")
    inst = targets[0]
    if fault == "oom":
        return _remember({"t0_ms": inject_oom(inst, detail), "detail": detail})
    if fault == "cpu_spin":
        return _remember({"t0_ms": inject_cpu_spin(inst, instances, detail, args.spin_seconds), "detail": detail})
    t0 = now_ms()
    if fault == "crashloop":
        # a broken bitcoin.conf makes every start fail (Core: "parse error on line N"), then a
        # kill makes supervisord restart it: BACKOFF, BACKOFF, ... FATAL
        with open(inst.conf_path, "a", encoding="utf-8") as fh:
            fh.write(BROKEN_LINE + "\n")
        pid = _program_pid(inst)
        detail["replaced"] = {inst.name: [pid] if pid else []}
        if pid:
            os.kill(pid, signal.SIGKILL)
        state = wait_until(
            lambda: ((sv_all() or {}).get(inst.program) or {}).get("statename") == "FATAL", args.fatal_timeout, 0.2
        )
        detail["fatal_after_ms"] = now_ms() - t0 if state else None
        detail["state"] = ((sv_all() or {}).get(inst.program) or {}).get("statename")
    elif fault == "rpcauth_edit":
        text = inst.conf_text or ""
        edited, count = re.subn(
            r"^(rpcauth=[^:\n]+:[0-9a-f]+\$[0-9a-f]*)([0-9a-f])$",
            lambda m: m.group(1) + ("0" if m.group(2) != "0" else "1"),
            text,
            count=1,
            flags=re.M,
        )
        if not count:
            raise SystemExit("no rpcauth line to edit")
        with open(inst.conf_path, "w", encoding="utf-8") as fh:
            fh.write(edited)
        detail["edited"] = True
    elif fault == "program_file_deleted":
        os.unlink(os.path.join(PROGRAM_DIR, inst.program + ".conf"))
    elif fault == "torrc_dropin_deleted":
        os.unlink(os.path.join(TORRC_DIR, f"nodefleet-{inst.name}.conf"))
    elif fault == "onion_dir_deleted":
        subprocess.run(["rm", "-rf", "--", os.path.join(TOR_DATA, f"nodefleet-{inst.name}")], check=True)
    elif fault == "port_taken":
        port = inst.conf.get("p2pport")
        host = inst.conf.get("p2pbind") or "127.0.0.1"
        # the foreign process takes the port while the instance is stopped
        sv_proxy(120.0).supervisor.stopProcess(inst.program, True)
        code = (
            "import socket,time\n"
            "s=socket.socket()\n"
            # like any server (and Core): a port whose last connections are in TIME_WAIT (the
            # instance's peers) can be listened on again at once
            "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
            f"s.bind(({host!r},{port:d}))\n"
            "s.listen(1)\n"
            f"time.sleep({FOREIGN_LIFETIME_S:d})\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _record("foreign", {"pid": proc.pid, "port": port})
        bound = wait_until(lambda: proc.poll() is None and _port_bound(host, port), 5.0)
        detail.update({"foreign_pid": proc.pid, "port": port, "host": host, "bound": bool(bound), "exit": proc.poll()})
    elif fault == "stale_lock":
        # SIGKILL leaves bitcoind.pid and the network dir's .lock behind; supervisord restarts
        # the daemon on top of them. Record that they were there at the restart.
        # What a SIGKILL leaves behind is what is there at the instant of the kill: the daemon
        # cannot remove anything. (Read before the kill: supervisord restarts at once and the
        # next daemon rewrites the pid file.)
        pid = _program_pid(inst)
        # Core resolves -pid (default bitcoind.pid) against the network data dir
        pidfile = os.path.join(inst.network_dir, "bitcoind.pid")
        lockfile = os.path.join(inst.network_dir, ".lock")
        left = {
            "killed_pid": pid,
            "pidfile_left": (read_file(pidfile) or "").strip() == str(pid),
            "lockfile_left": os.path.exists(lockfile),
        }
        t0 = now_ms()
        os.kill(pid, signal.SIGKILL)
        detail["replaced"] = {inst.name: [pid]}
        detail.update(left)
    else:
        raise SystemExit(f"unknown fault {fault}")
    return _remember({"t0_ms": t0, "detail": detail})


def _remember(injected: dict) -> dict:
    os.makedirs(STATE_DIR, exist_ok=True)
    with open(os.path.join(STATE_DIR, "last_inject.json"), "w", encoding="utf-8") as fh:
        json.dump(injected, fh)
    return injected


def listening_ports(proc: str = "/proc") -> set[int]:
    """Ports with a TCP socket in LISTEN state (IPv4 and IPv6), from /proc/net/tcp{,6}."""
    ports = set()
    for name in ("tcp", "tcp6"):
        text = read_file(os.path.join(proc, "net", name)) or ""
        for line in text.splitlines()[1:]:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _port_bound(host: str, port: int) -> bool:
    """Something LISTENs on ``port`` (a failed test bind is no proof: TIME_WAIT connections of
    the instance's peers refuse a bind without SO_REUSEADDR too)."""
    return port in listening_ports()


def cleanup() -> dict:
    """End foreign listeners started by this probe; resume processes it stopped (if still stopped)."""
    ended, resumed = [], []
    for entry in json.loads(read_file(os.path.join(STATE_DIR, "foreign.json")) or "[]"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(entry["pid"], signal.SIGKILL)
            ended.append(entry["pid"])
    for entry in json.loads(read_file(os.path.join(STATE_DIR, "stopped.json")) or "[]"):
        for pid in entry["pids"]:
            stat = read_file(f"/proc/{pid}/stat") or ""
            if stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] == "T":
                os.kill(pid, signal.SIGCONT)
                resumed.append(pid)
    for name in ("foreign.json", "stopped.json"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(STATE_DIR, name))
    return {"ended": ended, "resumed": resumed}


def do_wait(args, instances: list[Instance], injected: dict | None) -> dict:
    """Wait for what ``--what`` names (rpc, tor, supervisord; comma-separated) to be back.

    t0 and the processes that must be replaced come from ``injected`` (this call's own
    injection, or the last one recorded on the node), or from --t0-ms (then instances count
    as back only when their daemon started after t0: a node restart)."""
    parts = set(args.what.split(","))
    if args.t0_ms:
        t0_ms, replaced = args.t0_ms, {i.name: [] for i in pick(instances, args.names)}
        old_tor, old_sv = [], []
    else:
        injected = injected or json.loads(read_file(os.path.join(STATE_DIR, "last_inject.json")) or "{}")
        if not injected:
            raise SystemExit("nothing injected on this node and no --t0-ms")
        t0_ms = injected["t0_ms"]
        replaced = injected["detail"].get("replaced", {})
        old_tor = injected["detail"].get("pids", {}).get("tor", []) if args.what else []
        old_sv = injected["detail"].get("pids", {}).get("supervisord", [])
        old_tor, old_sv = _as_list(old_tor), _as_list(old_sv)
    deadline = time.monotonic() + args.timeout
    out: dict = {"t0_ms": t0_ms, "ttr_ms": {}, "recovered": True}
    if "supervisord" in parts:
        ms = wait_supervisord(t0_ms, args.timeout, old_sv)
        out["recovered"] &= ms is not None
        if ms is not None:
            out["ttr_ms"]["supervisord"] = ms
    if "tor" in parts:
        ms = wait_tor(t0_ms, max(1.0, deadline - time.monotonic()), old_tor)
        out["recovered"] &= ms is not None
        if ms is not None:
            out["ttr_ms"]["tor"] = ms
    if "rpc" in parts:
        tips = json.loads(args.tips_json) if args.tips_json else {}
        rpc = wait_rpc(
            pick(instances, args.names),
            t0_ms,
            max(1.0, deadline - time.monotonic()),
            replaced,
            tips=tips,
            tip_timeout=args.tip_timeout,
        )
        out["recovered"] &= rpc["recovered"]
        out["ttr_ms"].update(rpc["ttr_ms"])
        out.update({k: rpc[k] for k in ("first_reply_ms", "not_recovered", "last_error")})
        out.update({k: rpc[k] for k in ("chain", "tip_regained") if k in rpc})
    out["max_ttr_ms"] = max(out["ttr_ms"].values()) if out["recovered"] and out["ttr_ms"] else None
    if "rpc" in parts and out["recovered"]:
        # RPC answers after the daemon's warm-up, supervisord says RUNNING only after startsecs:
        # let the after-snapshot see the settled state (not part of the time to recovery)
        programs = [i.program for i in pick(instances, args.names)]

        def all_running():
            infos = sv_all(1.0) or {}
            return all((infos.get(p) or {}).get("statename") == "RUNNING" for p in programs)

        settled = wait_until(all_running, max(1.0, deadline - time.monotonic()), 0.1)
        out["supervisord_running_ms"] = now_ms() - t0_ms if settled else None
    return out


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


# ---------------------------------------------------------------------------- recovery bench
def _settled_pid(program: str, ready, timeout: float = 90.0) -> int | None:
    """The pid of ``program`` once supervisord reports it RUNNING and ``ready(pid)`` holds."""

    def check():
        info = (sv_all(2.0) or {}).get(program) or {}
        pid = info.get("pid")
        return pid if info.get("statename") == "RUNNING" and pid and ready(pid) else None

    return wait_until(check, timeout, 0.1)


def _kill_and_time(pid: int, back, timeout: float) -> dict:
    """SIGKILL ``pid``; poll ``back()`` (no supervisord call: an XML-RPC request would wake its
    main loop and make it restart sooner than it does on its own) until it returns a dict."""
    t0 = now_ms()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    seen: dict = {}
    while time.monotonic() < deadline:
        got = back(t0, seen)
        if got:
            return got
        time.sleep(POLL_S)
    return {"timeout": True, **seen}


def killbench(inst: Instance, floor_program: str, count: int, jitter: float, seed: int = 0) -> dict:
    """SIGKILL ``inst`` and the floor program (a trivial program under the same supervisord,
    with the same autorestart/startsecs) ``count`` times each, alternating; every kill lands at a
    random instant (``jitter`` s) after the process was settled, so it hits every phase of
    supervisord's loop. bitcoind: kill -> a new daemon serves the datadir (``spawn_ms``) -> it
    answers RPC (``rpc_ms``). Floor: kill -> the program's new process exists (``spawn_ms``)."""
    import random

    rng = random.Random(seed or None)
    samples: dict = {"bitcoind": [], "floor": []}
    main_pid = systemd_main_pid("supervisor.service")

    def floor_children() -> list[int]:
        return [
            p["pid"]
            for p in proc_table()
            if p["ppid"] == main_pid and p["argv"] and os.path.basename(p["argv"][0]) == "sleep"
        ]

    def rpc_up(pid) -> bool:
        ok, _ = inst.rpc("getblockcount", timeout=1.0)
        return ok

    for round_no in range(count):
        order = ["bitcoind", "floor"] if round_no % 2 == 0 else ["floor", "bitcoind"]
        for subject in order:
            if subject == "bitcoind":
                pid = _settled_pid(inst.program, rpc_up)
            else:
                pid = _settled_pid(floor_program, lambda p: p in floor_children())
            if not pid:
                return {"error": f"{subject} did not settle (RUNNING) within 90 s", "samples": samples}
            time.sleep(rng.uniform(0.0, jitter))
            if subject == "bitcoind":

                def back(t0, seen, old=pid):
                    current = [d["pid"] for d in daemons_by_datadir(proc_table()).get(inst.datadir, [])]
                    if current and old not in current:
                        seen.setdefault("spawn_ms", now_ms() - t0)
                    if "spawn_ms" in seen:
                        ok, _ = inst.rpc("getblockcount", timeout=1.0)
                        if ok:
                            return {"spawn_ms": seen["spawn_ms"], "rpc_ms": now_ms() - t0}
                    return None

            else:

                def back(t0, seen, old=pid):
                    if [p for p in floor_children() if p != old]:
                        return {"spawn_ms": now_ms() - t0}
                    return None

            samples[subject].append(_kill_and_time(pid, back, 60.0))
    return {"samples": samples, "supervisord_pid": main_pid, "poll_s": POLL_S, "jitter_s": jitter}


def mine(instances: list[Instance], blocks: int) -> dict:
    heights = {}
    for inst in instances:
        if inst.conf.get("chain") != "regtest":
            continue
        ok, result = inst.rpc("generatetoaddress", [blocks, REGTEST_ADDRESS], timeout=10.0)
        if not ok:
            raise SystemExit(f"generatetoaddress failed on {inst.name}: {result}")
        ok, height = inst.rpc("getblockcount")
        heights[inst.name] = height if ok else None
    return {"heights": heights}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["snapshot", "mine", "inject", "wait", "run", "cleanup", "killbench"])
    parser.add_argument("--names", default="")
    parser.add_argument("--target", default="instance", choices=["instance", "all", "tor", "supervisord"])
    parser.add_argument("--fault", default="sigkill")
    parser.add_argument("--timing", default="steady", choices=["steady", "startup"])
    parser.add_argument("--what", default="rpc", help="comma-separated: rpc, tor, supervisord")
    parser.add_argument("--t0-ms", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--fatal-timeout", type=float, default=120.0)
    parser.add_argument("--startup-delay", type=float, default=0.3)
    parser.add_argument("--blocks", type=int, default=1)
    parser.add_argument("--tips-json", default="", help='{name: {"hash", "height"}}: the fleet tip to get back to')
    parser.add_argument("--tip-timeout", type=float, default=60.0)
    parser.add_argument("--floor-program", default="nodefleet-bench-floor")
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--spin-seconds", type=float, default=15.0)
    parser.add_argument("--jitter", type=float, default=1.0)
    args = parser.parse_args(argv)

    unknown = set(args.what.split(",")) - {"rpc", "tor", "supervisord"}
    if unknown:
        parser.error("--what: unknown part(s) %s (rpc, tor, supervisord)" % ", ".join(sorted(unknown)))
    instances = load_instances(sys.stdin.read() if not sys.stdin.isatty() else "")
    if args.command == "snapshot":
        out = snapshot(instances)
    elif args.command == "mine":
        out = mine(pick(instances, args.names), args.blocks)
    elif args.command == "inject":
        out = inject(args, instances)
    elif args.command == "wait":
        out = do_wait(args, instances, None)
    elif args.command == "run":
        injected = inject(args, instances)
        out = {**injected, "wait": do_wait(args, instances, injected)}
    elif args.command == "killbench":
        targets = pick(instances, args.names)
        if len(targets) != 1:
            raise SystemExit("killbench needs exactly one instance in --names")
        out = killbench(targets[0], args.floor_program, args.count, args.jitter)
    else:
        out = cleanup()
    json.dump(out, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
