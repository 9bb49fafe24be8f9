"""Helpers of the rolling-upgrade tests and bench (playbooks/upgrade.yml on the fleet).

- `releases(**variants)`: a complete `bitcoind_releases` for -e: the fleet's own releases
  (build/release/releases.json) with some implementations replaced by an upgrade fixture
  (build/release/upgrade/releases.json: good, exits, wrong-version, wrong-chain; built by
  tests/release/build_release.sh with the same signers).
- `run_upgrade(extra)`: ansible-playbook playbooks/upgrade.yml on the inventory under test.
- `identities(instances)`: what every instance answers now (supervisord pid, RPC version,
  subversion, chain), read inside its node.
- `DowntimeProbe`: polls every instance's RPC inside each node (50 ms) while a roll runs and
  returns, per instance, the windows in which RPC did not answer - how a client sees the roll.

Passwords reach a node only on the stdin of `podman exec -i`.
"""

from __future__ import annotations

import json
import subprocess
import time

from fleet_inventory import REPO_ROOT, ansible_env, inventory_path, tool
from instance_checks import node_exec, node_python, parse_supervisorctl_status

RELEASE_DIR = REPO_ROOT / "build" / "release"
UPGRADE_PLAYBOOK = REPO_ROOT / "playbooks" / "upgrade.yml"
PENDING_DIR = "/var/lib/nodefleet/pending-restart"
INSTALL_ROOT = "/opt/bitcoin"


def file_release(version: str, archive: str, rel_dir: str) -> dict:
    return {"version": version, "archive": archive, "source": "file", "dir": str(RELEASE_DIR / rel_dir)}


def base_releases() -> dict:
    manifest = json.loads((RELEASE_DIR / "releases.json").read_text())
    return {
        r["impl"]: {
            "version": r["version"],
            "archive": r["archive"],
            "source": "file",
            "dir": str(RELEASE_DIR / r["dir"]),
        }
        for r in manifest["releases"]
    }


def upgrade_fixtures() -> dict:
    return json.loads((RELEASE_DIR / "upgrade" / "releases.json").read_text())["variants"]


def releases(**variants: str) -> dict:
    """bitcoind_releases with impl=variant replaced, e.g. releases(knots="good", garbageman="exits")."""
    out = base_releases()
    fixtures = upgrade_fixtures()
    for impl, variant in variants.items():
        fix = fixtures[variant][impl]
        out[impl] = {
            "version": fix["version"],
            "archive": fix["archive"],
            "source": "file",
            "dir": str(RELEASE_DIR / fix["dir"]),
        }
    return out


def run_upgrade(extra: dict | None = None, *args: str, timeout: int = 1800) -> tuple[int, str, str]:
    """(rc, stdout, stderr) of playbooks/upgrade.yml on the inventory under test."""
    cmd = [tool("ansible-playbook"), "-i", str(inventory_path()), str(UPGRADE_PLAYBOOK), *args]
    if extra:
        cmd += ["-e", json.dumps(extra)]
    result = subprocess.run(cmd, env=ansible_env(), capture_output=True, text=True, timeout=timeout, check=False)
    return result.returncode, result.stdout, result.stderr


# Inside a node: per instance, getnetworkinfo + getblockchaininfo. Reads {"instances": [{"name",
# "port", "user", "password"}], "wait"}; prints {name: {"version", "subversion", "chain", "error"}}.
IDENTITY_SCRIPT = r"""
import base64, json, sys, time, urllib.request
req = json.load(sys.stdin)
def call(i, method):
    token = base64.b64encode(("%s:%s" % (i["user"], i["password"])).encode()).decode()
    body = json.dumps({"jsonrpc": "1.0", "id": "r", "method": method, "params": []}).encode()
    r = urllib.request.Request("http://127.0.0.1:%d/" % i["port"], data=body, method="POST",
        headers={"Authorization": "Basic " + token, "Content-Type": "application/json"})
    with urllib.request.urlopen(r, timeout=10) as resp:
        return json.loads(resp.read())["result"]
out = {}
for i in req["instances"]:
    deadline = time.monotonic() + req["wait"]
    while True:
        try:
            net, chain = call(i, "getnetworkinfo"), call(i, "getblockchaininfo")
            out[i["name"]] = {"version": net["version"], "subversion": net["subversion"],
                              "chain": chain["chain"], "error": None}
            break
        except Exception as exc:
            if time.monotonic() > deadline:
                out[i["name"]] = {"version": None, "subversion": None, "chain": None, "error": exc.__class__.__name__}
                break
            time.sleep(0.5)
print(json.dumps(out))
"""


def _rpc_targets(insts) -> list[dict]:
    return [
        {"name": i.name, "port": i.rpc, "user": i.rpc_users[0][0], "password": i.rpc_users[0][1].reveal()}
        for i in insts
    ]


def identities(instances, wait: float = 30) -> dict:
    """(host, name) -> {pid, state, version, subversion, chain, error, link} for every instance."""
    out = {}
    by_container: dict[str, list] = {}
    for inst in instances:
        by_container.setdefault(inst.container, []).append(inst)
    for container, insts in by_container.items():
        status = parse_supervisorctl_status(node_exec(container, ["supervisorctl", "status"]).stdout)
        answers = node_python(container, IDENTITY_SCRIPT, {"instances": _rpc_targets(insts), "wait": wait})
        links = {}
        for impl in {i.impl for i in insts}:
            links[impl] = node_exec(container, ["readlink", f"{INSTALL_ROOT}/{impl}"]).stdout.strip()
        for inst in insts:
            state, pid = status.get(inst.program, (None, None))
            out[(inst.host, inst.name)] = {"state": state, "pid": pid, "link": links[inst.impl], **answers[inst.name]}
    return out


def markers(container: str) -> list[str]:
    result = node_exec(container, ["sh", "-c", f"ls -A {PENDING_DIR} 2>/dev/null; true"])
    return sorted(result.stdout.split())


# Inside a node: poll each instance's RPC (getblockcount, authenticated: a daemon warming up
# answers -28 and counts as down) every `interval` s until `stop_file` exists or `max_seconds`;
# prints {"windows": {name: [[down_from, up_again], ...]}, "polls": n} (epoch seconds; a window
# still open at the end has up_again null).
PROBE_SCRIPT = r"""
import base64, json, os, sys, time, urllib.request
req = json.load(sys.stdin)
def up(i):
    token = base64.b64encode(("%s:%s" % (i["user"], i["password"])).encode()).decode()
    body = b'{"jsonrpc": "1.0", "id": "p", "method": "getblockcount", "params": []}'
    r = urllib.request.Request("http://127.0.0.1:%d/" % i["port"], data=body, method="POST",
        headers={"Authorization": "Basic " + token, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(r, timeout=1) as resp:
            return json.loads(resp.read()).get("error") is None
    except Exception:
        return False
windows = {i["name"]: [] for i in req["instances"]}
down_since = {}
polls = 0
end = time.time() + req["max_seconds"]
print("ready", flush=True)
while time.time() < end and not os.path.exists(req["stop_file"]):
    for i in req["instances"]:
        now = time.time()
        ok = up(i)
        if not ok and i["name"] not in down_since:
            down_since[i["name"]] = now
        elif ok and i["name"] in down_since:
            windows[i["name"]].append([down_since.pop(i["name"]), now])
    polls += 1
    time.sleep(req["interval"])
for name, since in down_since.items():
    windows[name].append([since, None])
print(json.dumps({"windows": windows, "polls": polls}))
"""


class DowntimeProbe:
    """Start with `start()` before a roll, `stop()` after: {(host, name): [[from, to], ...]}."""

    def __init__(self, instances, interval: float = 0.05, max_seconds: int = 1800):
        self.instances = list(instances)
        self.interval = interval
        self.max_seconds = max_seconds
        # A path inside the node (its own /tmp), created by `touch` there to end the probe.
        self.stop_file = f"/tmp/nodefleet-rolling-probe-{int(time.time() * 1000)}"  # noqa: S108
        self.procs: dict[str, tuple[subprocess.Popen, list]] = {}

    def start(self) -> None:
        by_container: dict[str, list] = {}
        for inst in self.instances:
            by_container.setdefault(inst.container, []).append(inst)
        for container, insts in by_container.items():
            payload = {
                "instances": _rpc_targets(insts),
                "interval": self.interval,
                "max_seconds": self.max_seconds,
                "stop_file": self.stop_file,
            }
            proc = subprocess.Popen(
                ["podman", "exec", "-i", container, "python3", "-c", PROBE_SCRIPT],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            proc.stdin.write(json.dumps(payload))
            proc.stdin.close()
            ready = proc.stdout.readline().strip()
            if ready != "ready":
                raise RuntimeError(f"downtime probe in {container} did not start: {proc.stderr.read()[-2000:]}")
            self.procs[container] = (proc, insts)

    def stop(self) -> dict:
        out = {}
        for container, (proc, insts) in self.procs.items():
            node_exec(container, ["touch", self.stop_file])
            # stdin is closed already (start() wrote the payload): communicate() would flush it.
            stdout, stderr = proc.stdout.read(), proc.stderr.read()
            proc.wait(timeout=60)
            node_exec(container, ["rm", "-f", self.stop_file])
            if proc.returncode != 0:
                raise RuntimeError(f"downtime probe in {container} exited {proc.returncode}: {stderr[-2000:]}")
            windows = json.loads(stdout.strip().splitlines()[-1])["windows"]
            for inst in insts:
                out[(inst.host, inst.name)] = windows[inst.name]
        return out


def overlapping(windows_by_instance: dict) -> list[tuple]:
    """Pairs of instances of the same host whose down windows overlap: [((host, a), (host, b), wa, wb)]."""
    found = []
    keys = sorted(windows_by_instance)
    for x, a in enumerate(keys):
        for b in keys[x + 1 :]:
            if a[0] != b[0]:
                continue
            for wa in windows_by_instance[a]:
                for wb in windows_by_instance[b]:
                    a_end = wa[1] if wa[1] is not None else float("inf")
                    b_end = wb[1] if wb[1] is not None else float("inf")
                    if wa[0] < b_end and wb[0] < a_end:
                        found.append((a, b, wa, wb))
    return found
