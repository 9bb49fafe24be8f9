"""What each bitcoind instance of the fleet should be, and how to look at it on a node.

The expectations come from the inventory through the bitcoind role itself
(`instance_plan.yml`: the role's defaults, validation and port plan), never from values
written here. The observations come from `podman exec` into the node, as the other checks
of this scenario do (fleet_inventory.py).

RPC passwords from the inventory are wrapped in `Secret`, whose repr hides the value, so a
failing assertion, `pytest -l` or a traceback never prints one. They reach a node only on
the stdin of `podman exec -i`, never on an argv (the node's or this machine's).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from fleet_inventory import ansible_env, inventory_path, tool

PLAN_PLAYBOOK = Path(__file__).resolve().parent / "instance_plan.yml"
PLAN_TASK = "Report the plan"
TOR_MODES_WITH_ONION = ("tor-only", "both")
EXEC_TIMEOUT = 60
# The IPv4 wildcard (`bind=0.0.0.0:<p2p>` for clearnet and both), as ss prints it.
ANY_IPV4 = str(ipaddress.IPv4Address(0))


class Secret:
    """A password from the inventory; str() and repr() never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = str(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Instance:
    """One planned instance on one fleet host, with the role's defaults applied."""

    host: str
    container: str
    name: str
    impl: str
    network: str
    tor_mode: str
    datadir: str
    user: str
    rpc_bind: tuple[str, ...]
    rpc: int
    p2p: int
    onion: int
    zmq: tuple[tuple[str, int], ...]
    rpc_users: tuple[tuple[str, Secret], ...] = field(repr=False, default=())

    @property
    def program(self) -> str:
        return f"bitcoind-{self.name}"

    @property
    def conf_file(self) -> str:
        return f"{self.datadir}/bitcoin.conf"

    @property
    def onion_dir(self) -> str:
        return f"/var/lib/tor/nodefleet-{self.name}"

    @property
    def torrc_dropin(self) -> str:
        return f"/etc/tor/torrc.d/nodefleet-{self.name}.conf"

    @property
    def has_onion(self) -> bool:
        return self.tor_mode in TOR_MODES_WITH_ONION


# --- the plan (pure) ------------------------------------------------------------------------


def instances_from_report(report: dict, containers: dict[str, str]) -> list[Instance]:
    """Instances from the json-callback output of instance_plan.yml.

    `containers` maps inventory hostname -> container name; every fleet host must have
    reported a plan (a host missing from the report is an error, not an empty host).
    """
    task = None
    for play in report.get("plays", []):
        for entry in play.get("tasks", []):
            if entry.get("task", {}).get("name") == PLAN_TASK:
                task = entry
    if task is None:
        raise RuntimeError(f"instance_plan.yml output has no {PLAN_TASK!r} task")
    found: list[Instance] = []
    for host, container in containers.items():
        result = task["hosts"].get(host)
        if result is None or "msg" not in result:
            raise RuntimeError(f"instance_plan.yml reported no plan for {host}")
        found.extend(host_instances(host, container, result["msg"]))
    return found


def host_instances(host: str, container: str, plan: dict) -> list[Instance]:
    """The Instance records of one host from its plan (role user, home, rpc_bind, zmq topics, ports)."""
    out = []
    for item in plan["instances"]:
        name = item["name"]
        ports = plan["ports"][name]
        topics = item.get("zmq_topics", plan["zmq_topics"])
        out.append(
            Instance(
                host=host,
                container=container,
                name=name,
                impl=item["impl"],
                network=item["network"],
                tor_mode=item["tor_mode"],
                datadir=item.get("datadir") or f"{plan['home']}/{name}",
                user=plan["user"],
                rpc_bind=tuple(plan["rpc_bind"]),
                rpc=int(ports["rpc"]),
                p2p=int(ports["p2p"]),
                onion=int(ports["onion"]),
                zmq=tuple(sorted((topic, int(port)) for topic, port in ports["zmq"].items() if topic in topics)),
                rpc_users=tuple((u["user"], Secret(u["password"])) for u in item.get("rpc_users", [])),
            )
        )
    return out


def planned_listeners(instance: Instance) -> set[tuple[str, int]]:
    """(address, port) pairs the instance must listen on, per the bitcoin.conf contract.

    RPC on each rpc_bind address; P2P on 127.0.0.1 (tor-only) or 0.0.0.0 (clearnet, both);
    the onion bind on 127.0.0.1 (tor-only, both); each configured ZMQ topic on 127.0.0.1.
    """
    want = {(normalise_address(addr), instance.rpc) for addr in instance.rpc_bind}
    want.add(("127.0.0.1" if instance.tor_mode == "tor-only" else ANY_IPV4, instance.p2p))
    if instance.has_onion:
        want.add(("127.0.0.1", instance.onion))
    want.update(("127.0.0.1", port) for _topic, port in instance.zmq)
    return want


# --- parsing what a node says (pure) -------------------------------------------------------


def normalise_address(addr: str) -> str:
    """`[::1]` -> `::1`, `*` -> the IPv4 wildcard; anything else unchanged."""
    addr = addr.strip()
    if addr.startswith("[") and addr.endswith("]"):
        addr = addr[1:-1]
    if "%" in addr:  # link-local zone, e.g. fe80::1%eth0
        addr = addr.split("%", 1)[0]
    return ANY_IPV4 if addr == "*" else addr


def is_loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(normalise_address(addr)).is_loopback
    except ValueError:
        return False


def parse_supervisorctl_status(text: str) -> dict[str, tuple[str, int | None]]:
    """`supervisorctl status` lines -> program -> (state, pid or None)."""
    out: dict[str, tuple[str, int | None]] = {}
    for line in text.splitlines():
        fields = line.split(None, 2)
        if len(fields) < 2:
            continue
        name, state = fields[0], fields[1]
        pid = None
        rest = fields[2] if len(fields) > 2 else ""
        if rest.startswith("pid "):
            pid_text = rest[4:].split(",", 1)[0].strip()
            pid = int(pid_text) if pid_text.isdigit() else None
        out[name] = (state, pid)
    return out


def parse_ss_listeners(text: str) -> list[tuple[str, int, tuple[int, ...]]]:
    """`ss -H -ltnp` lines -> (local address, port, pids). pids is empty when ss cannot see the owner."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[0] != "LISTEN":
            continue
        local = fields[3]
        addr, _, port = local.rpartition(":")
        if not port.isdigit():
            continue
        users = " ".join(fields[5:])
        pids = tuple(
            int(chunk.split(",", 1)[0]) for chunk in users.split("pid=")[1:] if chunk.split(",", 1)[0].isdigit()
        )
        out.append((normalise_address(addr), int(port), pids))
    return out


def conf_values(text: str, key: str) -> list[str]:
    """Values of `key=` lines of a bitcoin.conf (any section), in order."""
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or "=" not in stripped:
            continue
        name, value = stripped.split("=", 1)
        if name.strip() == key:
            out.append(value.strip())
    return out


def hidden_service_ports(text: str) -> list[tuple[int, str]]:
    """`HiddenServicePort <virtual> <target>` lines of a torrc drop-in."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[0] == "HiddenServicePort" and fields[1].isdigit():
            out.append((int(fields[1]), fields[2]))
    return out


# --- talking to a node ---------------------------------------------------------------------


def node_exec(
    container: str, argv: list[str], *, user: str | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess:
    """Run argv inside the node with `podman exec` (stdin, when given, through `-i`)."""
    cmd = ["podman", "exec"]
    if stdin is not None:
        cmd.append("-i")
    if user:
        cmd += ["--user", user]
    cmd += [container, *argv]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=EXEC_TIMEOUT, check=False)


def node_python(container: str, script: str, payload: dict, *, user: str | None = None) -> dict:
    """Run a Python script in the node, feeding it JSON on stdin; returns its JSON stdout."""
    result = node_exec(container, ["python3", "-c", script], user=user, stdin=json.dumps(payload))
    if result.returncode != 0:
        raise RuntimeError(f"python3 in {container} exited {result.returncode}: {result.stderr[-2000:]}")
    return json.loads(result.stdout)


def plan_report() -> dict:
    """Run instance_plan.yml on the inventory under test (json callback); fails loudly."""
    result = subprocess.run(
        [tool("ansible-playbook"), "-i", str(inventory_path()), str(PLAN_PLAYBOOK)],
        env={**ansible_env(), "ANSIBLE_STDOUT_CALLBACK": "json"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        # The json output holds the passwords of the plan: show only stderr and failed task names.
        raise RuntimeError(f"instance_plan.yml failed (rc {result.returncode}): {result.stderr[-2000:]}")
    return json.loads(result.stdout)


# Inside the node: one JSON-RPC getblockchaininfo per credential. Reads
# {"host", "port", "calls": [{"user", "password"}], "wait"} on stdin; prints
# [{"status", "chain", "error"}] (no credential in the output). Retries while the daemon
# is still warming up (-28) or not accepting connections yet, for at most `wait` seconds.
RPC_SCRIPT = r"""
import base64, json, sys, time, urllib.error, urllib.request
req = json.load(sys.stdin)
url = "http://%s:%d/" % (("[%s]" % req["host"]) if ":" in req["host"] else req["host"], req["port"])
body = json.dumps({"jsonrpc": "1.0", "id": "verify", "method": "getblockchaininfo", "params": []}).encode()
def call(user, password):
    token = base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
    request = urllib.request.Request(url, data=body, method="POST",
        headers={"Authorization": "Basic " + token, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            status, text = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read()
    except OSError as exc:
        return {"status": None, "chain": None, "error": "connect: %s" % exc.__class__.__name__}
    try:
        doc = json.loads(text)
    except ValueError:
        doc = {}
    result = doc.get("result") or {}
    error = doc.get("error") or None
    return {"status": status, "chain": result.get("chain"),
            "error": (error or {}).get("code") if isinstance(error, dict) else None}
out = []
deadline = time.monotonic() + req["wait"]
for c in req["calls"]:
    while True:
        got = call(c["user"], c["password"])
        retry = got["status"] is None or got["error"] == -28
        if not retry or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    out.append(got)
print(json.dumps(out))
"""

# Inside the node: which processes carry a secret (or -rpcpassword) on their argv. Reads
# {"secrets": [...]} on stdin; prints [{"pid", "comm", "secret_index" | "rpcpassword"}]
# (never the secret or the command line itself). Skips itself.
CMDLINE_SCRIPT = r"""
import json, os, sys
secrets = [s.encode() for s in json.load(sys.stdin)["secrets"] if s]
me = os.getpid()
hits = []
scanned = 0
for entry in os.listdir("/proc"):
    if not entry.isdigit() or int(entry) == me:
        continue
    try:
        with open("/proc/%s/cmdline" % entry, "rb") as fh:
            argv = fh.read()
        with open("/proc/%s/comm" % entry) as fh:
            comm = fh.read().strip()
    except OSError:
        continue
    scanned += 1
    for index, secret in enumerate(secrets):
        if secret in argv:
            hits.append({"pid": int(entry), "comm": comm, "secret_index": index})
    if b"-rpcpassword" in argv:
        hits.append({"pid": int(entry), "comm": comm, "rpcpassword": True})
print(json.dumps({"scanned": scanned, "hits": hits}))
"""
