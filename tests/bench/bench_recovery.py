#!/usr/bin/env python3
# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Recovery times on the demo fleet, beside a floor measured in the same run (issue 9).

    flock /tmp/nodefleet-fleet.lock .venv/bin/python tests/bench/bench_recovery.py
    ... tests/bench/bench_recovery.py --kills 20 --supervisord-kills 3 --node-restarts 2 --node demo-node1

On one node of the converged demo fleet (podman containers, tests/fleet/create.yml):

1. **SIGKILL of one instance**, ``--kills`` times: kill -> a new daemon serves the datadir
   (supervisord spawned it) -> it answers RPC ``getblockcount``.
2. **The floor**, interleaved with 1 (kill by kill, alternating which goes first): the same
   supervisord restarting a trivial program (``/bin/sleep infinity``) that has the bitcoind
   program's autorestart, startsecs, startretries, user and log settings, added for the run
   through the collection's ``supervisord_program`` module and removed afterwards; kill ->
   its new process exists. What the floor cannot go below is supervisord itself; what 1 adds
   on top of it is the daemon's own start until RPC answers.
3. **SIGKILL of supervisord**, ``--supervisord-kills`` times: every instance answers RPC from a
   new daemon; then one daemon per datadir, child of the new supervisord (no orphan).
4. **Node restart** (``podman restart``, a host reboot), ``--node-restarts`` times: every
   instance answers RPC from a daemon started after the restart and tor answers SOCKS; no
   converge is run.

Every kill is injected and timed ON the node by tests/chaos/files/chaos_probe.py (the chaos
matrix's probe, millisecond clock, 50 ms polls, no supervisord call while timing), each at a
random instant up to ``--jitter`` s after the process settled. Prints a Markdown table against
the issue's targets and writes the samples to ``--out`` (build/bench/recovery.json).
Hold /tmp/nodefleet-fleet.lock while it runs: it kills processes of the shared demo fleet. The
kills count as unexpected exits for the bitcoind role's restart-loop check: a converge of that node
within 10 minutes after the bench needs `-e bitcoind_restart_loop_threshold=0`.
"""

from __future__ import annotations

import argparse
import configparser
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROBE_SRC = os.path.join(ROOT, "tests", "chaos", "files", "chaos_probe.py")
FLOOR = "nodefleet-bench-floor"
FLOOR_COMMAND = "/bin/sleep infinity"
WAKE = "nodefleet-bench-wake"
# The targets (docs/performance.md, "Recovery with real Core").
TARGETS = {"p50_ms": 1300, "p95_ms": 2500, "floor_ratio": 1.3, "supervisord_ms": 5000, "node_ms": 8000}


def _load_chaos():
    spec = importlib.util.spec_from_file_location("chaos_tool", os.path.join(ROOT, "tests", "chaos", "chaos.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


chaos = _load_chaos()


def ansible_env() -> dict:
    return dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1")


def bindir() -> str:
    return os.path.dirname(sys.executable)


def host_vars(inventory: str, node: str) -> dict:
    out = subprocess.run(
        [os.path.join(bindir(), "ansible-inventory"), "-i", inventory, "--host", node],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=ansible_env(),
    ).stdout
    return json.loads(out)


def creds_of(hv: dict) -> dict:
    """The probe's stdin: name, RPC user/password, datadir, network per instance (never printed)."""
    out = []
    for inst in hv.get("bitcoind_instances", []):
        if inst.get("state", "present") != "present":
            continue
        user = (inst.get("rpc_users") or [{}])[0]
        out.append(
            {
                "name": inst["name"],
                "user": user.get("user"),
                "password": user.get("password"),
                "datadir": inst.get("datadir"),
                "network": inst.get("network"),
            }
        )
    return {"instances": out}


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check, timeout=timeout)


def install_probe(container: str) -> None:
    podman("exec", container, "mkdir", "-p", os.path.dirname(chaos.PROBE_PATH))
    podman("cp", PROBE_SRC, f"{container}:{chaos.PROBE_PATH}")


def probe(container: str, creds: dict, *args: str, timeout: float = 900) -> dict:
    out = chaos.probe_node(container, list(args), creds, timeout)
    if "error" in out and "rc" in out:
        raise SystemExit(f"probe {' '.join(args)} failed: {out['error']}")
    return out


def program_settings(container: str, program: str) -> dict:
    """autorestart, startsecs, startretries, user, stopsignal, log settings of a bitcoind program."""
    text = podman("exec", container, "cat", f"/etc/supervisor/conf.d/{program}.conf").stdout
    parser = configparser.RawConfigParser()
    parser.read_string(text)
    sect = parser[f"program:{program}"]
    keep = ("autorestart", "startsecs", "startretries", "user", "stopsignal", "redirect_stderr")
    return {key: sect[key] for key in keep if key in sect}


def floor_program(inventory: str, node: str, settings: dict, state: str, name: str = FLOOR, command=None) -> dict:
    """Add (state=started) or remove (state=absent) the floor program with the collection's module."""
    args: dict = {"name": name, "state": state}
    if state != "absent" and command:
        args.update({"command": command, "autostart": True, "autorestart": "true", "startsecs": 1})
        args["stdout_logfile"] = "NONE"
    elif state != "absent":
        args.update(
            {
                "command": FLOOR_COMMAND,
                "autostart": True,
                "autorestart": settings.get("autorestart", "true"),
                "startsecs": int(settings.get("startsecs", 1)),
                "startretries": int(settings.get("startretries", 3)),
                "stopsignal": settings.get("stopsignal", "TERM"),
                "redirect_stderr": settings.get("redirect_stderr", "true") == "true",
                "stdout_logfile": f"/tmp/{FLOOR}.log",
            }
        )
        if settings.get("user"):
            args["user"] = settings["user"]
    play = [
        {
            "name": "bench floor program",
            "hosts": node,
            "gather_facts": False,
            "tasks": [{"name": f"{name} {state}", "nodefleet.bitcoin.supervisord_program": args}],
        }
    ]
    with tempfile.NamedTemporaryFile("w", suffix=".yml", dir="/tmp", delete=False) as fh:
        json.dump(play, fh)
        path = fh.name
    try:
        os.environ["ANSIBLE_CONFIG"] = os.path.join(ROOT, "ansible.cfg")
        summary = chaos.run_playbook(
            [os.path.join(bindir(), "ansible-playbook"), "-i", inventory, path], None, timeout=300
        )
    finally:
        os.unlink(path)
    if summary["rc"] != 0:
        raise SystemExit(f"supervisord_program {state} for {name} failed: {summary}")
    return summary


def settle(container: str, creds: dict, timeout: float = 120) -> dict:
    """Every instance answers RPC and is RUNNING, supervisord and tor answer (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        snap = probe(container, creds, "snapshot")
        insts = snap["instances"].values()
        ok = (
            snap["supervisord"]["xmlrpc_ok"]
            and snap["tor"]["socks_ok"]
            and all(i["rpc_ok"] and i["program_state"] == "RUNNING" for i in insts)
        )
        if ok or time.monotonic() > deadline:
            return {"ok": ok, "snapshot": snap}
        time.sleep(1)


def stats(values: list[float]) -> dict:
    return {
        "n": len(values),
        "p50": chaos.percentile(values, 50),
        "p95": chaos.percentile(values, 95),
        "max": max(values) if values else None,
    }


def pick_instance(hv: dict, wanted: str) -> str:
    present = [i for i in hv.get("bitcoind_instances", []) if i.get("state", "present") == "present"]
    if wanted != "auto":
        return wanted
    for inst in present:
        if inst.get("impl") == "core" and inst.get("network") == "regtest":
            return inst["name"]
    return present[0]["name"]


TIMELINE = (
    ("main_process_exited", "Main process exited"),
    ("cgroup_stopped", "(Deactivated successfully|Failed with result|Consumed)"),
    ("restart_scheduled", "Scheduled restart job"),
    ("unit_started", "Started supervisor"),
    ("supervisord_started", "supervisord started with pid"),
    ("first_spawn", "spawned: "),
)


def supervisord_timeline(container: str, t0_ms: int) -> dict:
    """ms after t0 of each step of a supervisord restart, from the journal (systemd's and
    supervisord's own lines, epoch timestamps)."""
    import re

    out = podman(
        "exec",
        container,
        "journalctl",
        "-u",
        "supervisor.service",
        "-o",
        "short-unix",
        "--no-pager",
        "--since",
        "@%d" % (t0_ms // 1000 - 1),
        check=False,
    ).stdout
    steps: dict = {}
    for line in out.splitlines():
        head, _, rest = line.partition(" ")
        try:
            stamp = int(float(head) * 1000)
        except ValueError:
            continue
        if stamp < t0_ms:
            continue
        for key, pattern in TIMELINE:
            if key not in steps and re.search(pattern, rest):
                steps[key] = stamp - t0_ms
    return steps


def orphan_check(node: str, snap: dict) -> dict:
    check = chaos.check_processes({node: snap})[0]
    return {"ok": check["ok"], "value": check["value"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inventory", default=os.path.join(ROOT, "inventories", "demo", "hosts.yml"))
    parser.add_argument("--node", default="demo-node1")
    parser.add_argument("--instance", default="auto", help="auto: the node's first regtest Core instance")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--supervisord-kills", type=int, default=3)
    parser.add_argument("--node-restarts", type=int, default=2)
    parser.add_argument("--jitter", type=float, default=1.0)
    parser.add_argument(
        "--wake-ms",
        type=int,
        default=0,
        help="experiment: during the instance/floor kills, a program that prints a line every N ms keeps "
        "waking supervisord's main loop (its poll timeout is 1 s); 0 (default): none",
    )
    parser.add_argument("--out", default=os.path.join(ROOT, "build", "bench", "recovery.json"))
    args = parser.parse_args()

    hv = host_vars(args.inventory, args.node)
    container = hv.get("ansible_host") or f"nodefleet-{args.node}"
    creds = creds_of(hv)
    names = [i["name"] for i in creds["instances"]]
    name = pick_instance(hv, args.instance)
    install_probe(container)
    release = os.path.join(ROOT, "build", "release", "releases.json")
    daemons = {}
    if os.path.exists(release):
        with open(release, encoding="utf-8") as fh:
            daemons = {r["impl"]: r.get("daemon", r.get("kind", "?")) for r in json.load(fh).get("releases", [])}
    if not settle(container, creds)["ok"]:
        raise SystemExit(f"{args.node} is not healthy before the bench")
    started = time.time()
    result: dict = {
        "node": args.node,
        "instance": name,
        "daemons": daemons,
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg(),
    }

    # 1 + 2: one instance beside the floor
    settings = program_settings(container, f"bitcoind-{name}")
    result["program_settings"] = settings
    floor_program(args.inventory, args.node, settings, "started")
    if args.wake_ms:
        wake = f"/bin/sh -c 'while :; do echo; sleep {args.wake_ms / 1000:.3f}; done'"
        floor_program(args.inventory, args.node, settings, "started", name=WAKE, command=wake)
        result["wake_ms"] = args.wake_ms
    try:
        kb = probe(
            container,
            creds,
            "killbench",
            "--names",
            name,
            "--floor-program",
            FLOOR,
            "--count",
            str(args.kills),
            "--jitter",
            str(args.jitter),
        )
    finally:
        floor_program(args.inventory, args.node, settings, "absent")
        if args.wake_ms:
            floor_program(args.inventory, args.node, settings, "absent", name=WAKE)
    if kb.get("error"):
        raise SystemExit(f"killbench: {kb['error']}")
    bitcoind = kb["samples"]["bitcoind"]
    floor = kb["samples"]["floor"]
    if any(s.get("timeout") for s in bitcoind + floor):
        raise SystemExit(f"a killed process did not come back within 60 s: {kb['samples']}")
    result["instance_kill"] = {
        "rpc": stats([s["rpc_ms"] for s in bitcoind]),
        "spawn": stats([s["spawn_ms"] for s in bitcoind]),
        "floor": stats([s["spawn_ms"] for s in floor]),
        "samples": kb["samples"],
    }

    # 3: supervisord
    sv_runs = []
    for _ in range(args.supervisord_kills):
        if not settle(container, creds)["ok"]:
            raise SystemExit(f"{args.node} did not settle before a supervisord kill")
        out = probe(
            container,
            creds,
            "run",
            "--what",
            "supervisord,rpc",
            "--target",
            "supervisord",
            "--fault",
            "sigkill",
            "--names",
            ",".join(names),
            "--timeout",
            "90",
        )
        wait = out["wait"]
        after = settle(container, creds)
        sv_runs.append(
            {
                "recovered": wait["recovered"],
                "every_instance_ms": wait.get("max_ttr_ms"),
                "ttr_ms": wait["ttr_ms"],
                "no_orphan": orphan_check(args.node, after["snapshot"]),
                "timeline_ms": supervisord_timeline(container, out["t0_ms"]),
            }
        )
    result["supervisord_kill"] = {
        "every_instance": stats([r["every_instance_ms"] for r in sv_runs if r["every_instance_ms"] is not None]),
        "runs": sv_runs,
    }

    # 4: node restart, no converge
    node_runs = []
    for _ in range(args.node_restarts):
        if not settle(container, creds)["ok"]:
            raise SystemExit(f"{args.node} did not settle before a node restart")
        t0 = int(time.time() * 1000)
        podman("restart", "--time", "60", container, timeout=180)
        wait = probe(
            container,
            creds,
            "wait",
            "--what",
            "rpc,tor",
            "--t0-ms",
            str(t0),
            "--names",
            ",".join(names),
            "--timeout",
            "180",
        )
        after = settle(container, creds)
        node_runs.append(
            {
                "recovered": wait["recovered"],
                "everything_ms": wait.get("max_ttr_ms"),
                "ttr_ms": wait["ttr_ms"],
                "no_orphan": orphan_check(args.node, after["snapshot"]),
            }
        )
    result["node_restart"] = {
        "everything": stats([r["everything_ms"] for r in node_runs if r["everything_ms"] is not None]),
        "runs": node_runs,
    }
    result["duration_s"] = round(time.time() - started, 1)
    result["load_after"] = os.getloadavg()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2, sort_keys=True)
        fh.write("\n")
    print(render(result))
    return 0


SECOND_TICK_MS = 1500  # supervisord polls with a 1 s timeout: a spawn later than this waited a second tick


def second_tick_line(samples: dict) -> str:
    """How many kills waited one more supervisord tick before the respawn, instance vs floor.

    supervisord reaps right after it reads the EOF of the dead process's output pipe; when the
    kernel has not made the process a zombie yet, the reap finds nothing and the exit is only seen
    at the next 1 s poll timeout, then the spawn a tick later (about 2 s instead of 1 s). The p95
    of each series is therefore set by how often that happens.
    """
    parts = []
    for key, what in (("bitcoind", "instance"), ("floor", "floor")):
        spawns = [s["spawn_ms"] for s in samples.get(key, []) if s.get("spawn_ms") is not None]
        if spawns:
            late = sum(1 for v in spawns if v >= SECOND_TICK_MS)
            parts.append(f"{what} {late}/{len(spawns)} ({100.0 * late / len(spawns):.0f} %)")
    return "Kills whose respawn waited a second supervisord tick (spawn >= %d ms): %s" % (
        SECOND_TICK_MS,
        ", ".join(parts) or "-",
    )


def render(r: dict) -> str:
    ik = r["instance_kill"]
    rpc, spawn, floor = ik["rpc"], ik["spawn"], ik["floor"]
    ratio = rpc["p95"] / floor["p95"] if floor["p95"] else None
    sv = r["supervisord_kill"]
    node = r["node_restart"]
    sv_orphans = all(run["no_orphan"]["ok"] for run in sv["runs"])
    sv_back = all(run["recovered"] for run in sv["runs"])
    node_back = all(run["recovered"] for run in node["runs"])

    def mark(ok):
        return "yes" if ok else "**no**"

    def row(what, s):
        return f"| {what} | {s['n']} | {s['p50']} | {s['p95']} | {s['max']} |"

    timeline = "; ".join(
        "supervisord kill #%d: %s, every instance %s"
        % (i + 1, ", ".join(f"{k} +{v}" for k, v in run.get("timeline_ms", {}).items()), run["every_instance_ms"])
        for i, run in enumerate(sv["runs"])
    )
    lines = [
        f"{r['node']}/{r['instance']} ({r['daemons'].get('core', '?')} core), {r['cpus']} CPUs, "
        f"load {r['load_before'][0]:.1f} before, {r['duration_s']} s; program "
        + ", ".join(f"{k}={v}" for k, v in sorted(r["program_settings"].items()))
        + (f"; EXPERIMENT: supervisord woken every {r['wake_ms']} ms" if r.get("wake_ms") else ""),
        "",
        "| measured (ms) | n | p50 | p95 | max |",
        "|---|---|---|---|---|",
        row("SIGKILL one instance: kill -> RPC answers", rpc),
        row("SIGKILL one instance: kill -> new daemon spawned", spawn),
        row("floor: SIGKILL `sleep infinity` (same supervisord, same settings) -> running again", floor),
        row("SIGKILL supervisord: kill -> every instance answers RPC", sv["every_instance"]),
        row("node restart: restart -> every instance answers RPC, tor answers", node["everything"]),
        "",
        "| target | measured | met |",
        "|---|---|---|",
        f"| instance SIGKILL p50 <= {TARGETS['p50_ms']} ms | {rpc['p50']} ms | "
        f"{mark(rpc['p50'] <= TARGETS['p50_ms'])} |",
        f"| instance SIGKILL p95 <= {TARGETS['p95_ms']} ms | {rpc['p95']} ms | "
        f"{mark(rpc['p95'] <= TARGETS['p95_ms'])} |",
        f"| instance p95 <= {TARGETS['floor_ratio']} x floor p95 ({floor['p95']} ms) | "
        f"{ratio:.2f} x | {mark(ratio is not None and ratio <= TARGETS['floor_ratio'])} |",
        f"| supervisord SIGKILL: every instance <= {TARGETS['supervisord_ms']} ms, no orphan | "
        f"max {sv['every_instance']['max']} ms, orphans: {'none' if sv_orphans else 'FOUND'} | "
        f"{mark(sv_back and sv_orphans and (sv['every_instance']['max'] or 1e9) <= TARGETS['supervisord_ms'])} |",
        f"| node restart: everything <= {TARGETS['node_ms']} ms, no converge | max {node['everything']['max']} ms | "
        f"{mark(node_back and (node['everything']['max'] or 1e9) <= TARGETS['node_ms'])} |",
        "",
        "Timeline (ms after the kill): " + (timeline or "-"),
        "",
        second_tick_line(ik.get("samples", {})),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
