# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Property tests for bitcoind_info (issue 17): inputs generated from its argument_spec.

The instances' RPC ports are closed loopback ports (connection refused at once) and
supervisord is ``fake_supervisord`` (no programs), so every run is fast and talks only to
loopback. Datadirs hold hand-written bitcoin.conf files with hostile lines (vertical tabs,
NEL, U+2028 inside values, double negatives, junk) that the module reads with the
collection's parser. Per example: (a) refused naming an option, or a result; never an
unhandled exception; (b) nothing written (the module is read-only); (c) every instance in
the result has its own name and a known state (``down`` stays ``down``: a user name is not a
secret and must not mask other values, issue 17 group 8); (d) no password or 8-character
piece of one in any output.
"""

from __future__ import annotations

import os

from ansible_collections.nodefleet.bitcoin.plugins.modules import bitcoind_info
from ansible_collections.nodefleet.bitcoin.tests.integration.local_ports import free_ports
from ansible_collections.nodefleet.bitcoin.tests.property import harness as h
from ansible_collections.nodefleet.bitcoin.tests.property.fake_supervisord import FakeSupervisord
from hypothesis import given, settings
from hypothesis import strategies as st

SPEC = h.module_spec(bitcoind_info)["argument_spec"]
STATES = {"up", "warming_up", "down", "hung", "auth_failed", "error", "restarting"}
NAMES = ["a", "b1", "node-1"]
USERS = st.sampled_from(["u", "d", "o", "w", "n", "alice", "rpc", "e"])
CONF_LINES = st.sampled_from(
    [
        "rpcport={port}",
        "[regtest]\nrpcport={port}",
        "chain=regtest",
        "rpcport=1\x0brpcport={port}",
        "x=1\u2028rpcport=2",
        "norpcport=0",
        "rpcport=\x85{port}",
        "junk line",
        "-rpcport=3",
        "rpcport=99999999999999999999",
        "# instance={name} impl=core",
        "[main",
    ]
)


@st.composite
def info_args(draw, ports):
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=2, unique=True))
    attack = draw(st.sampled_from([None, None, None, "instances", "credentials", "names", "timeout", "paths"]))
    args = {
        "conf_dir": "{root}/conf.d",
        "datadir_root": "{root}/btc",
        "timeout": draw(st.sampled_from([0.5, 1.0])),
        "count_restarts": draw(st.booleans()),
    }
    if draw(st.booleans()):
        instances = []
        for i, name in enumerate(names):
            inst = {"name": name, "rpc_host": "127.0.0.1"}
            if draw(st.booleans()):
                inst["rpc_port"] = ports[i]
            if draw(st.booleans()):
                inst["rpc_user"] = draw(USERS)
                inst["rpc_password"] = draw(h.secret_text())
            if draw(st.booleans()):
                inst["network"] = draw(st.sampled_from(["main", "regtest"]))
            instances.append(inst)
        if attack == "instances":
            victim = instances[0]
            key = draw(st.sampled_from(["name", "rpc_user", "rpc_host", "datadir", "conf_file", "rpc_port", "program"]))
            victim[key] = (
                draw(h.BOUNDARY_INTS) if key == "rpc_port" else draw(h.mutated(st.just(str(victim.get(key) or "x"))))
            )
        args["instances"] = instances
    creds = {name: {"user": draw(USERS), "password": draw(h.secret_text())} for name in names if draw(st.booleans())}
    if creds:
        args["rpc_credentials"] = [dict(c, name=n) for n, c in creds.items()]
    if attack == "credentials":
        args["rpc_credentials"] = [
            {
                "name": draw(h.mutated(st.sampled_from(NAMES))),
                "user": draw(h.mutated(USERS)),
                "password": draw(h.secret_text()),
            }
        ]
    if attack == "names":
        args["names"] = draw(st.lists(h.mutated(st.sampled_from(NAMES)), min_size=1, max_size=2))
    elif draw(st.booleans()):
        args["names"] = names[:1]
    if attack == "timeout":
        args["timeout"] = draw(st.sampled_from([0, -1, 301, 1e9, float("nan")]))
    if attack == "paths":
        option = draw(st.sampled_from(["conf_dir", "datadir_root"]))
        args[option] = draw(h.dir_templates("x"))
    conf = {name: draw(st.lists(CONF_LINES, max_size=3)) for name in names}
    return args, names, conf


def passwords(args) -> list[str]:
    out = [i.get("rpc_password") for i in args.get("instances") or [] if isinstance(i, dict)]
    out += [c.get("password") for c in (args.get("credentials") or {}).values() if isinstance(c, dict)]
    out += [c.get("password") for c in args.get("rpc_credentials") or [] if isinstance(c, dict)]
    return [p for p in out if isinstance(p, str) and p]


def prepare(ex, names, conf, ports):
    os.mkdir(os.path.join(ex.root, "conf.d"))
    os.mkdir(os.path.join(ex.root, "btc"))
    for i, name in enumerate(names):
        with open(os.path.join(ex.root, "conf.d", "bitcoind-%s.conf" % name), "w", encoding="utf-8") as handle:
            handle.write("[program:bitcoind-%s]\ncommand=/bin/true\n" % name)
        datadir = os.path.join(ex.root, "btc", name)
        os.mkdir(datadir)
        lines = [line.format(port=ports[i], name=name) for line in conf[name]]
        with open(os.path.join(datadir, "bitcoin.conf"), "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")


@settings(max_examples=h.examples(200))
@given(data=st.data())
def test_bitcoind_info_reports_or_refuses_and_masks_only_passwords(data):
    ports = free_ports(3)  # free now: nothing listens, so RPC is refused at once
    args, names, conf = data.draw(info_args(ports))
    one_example(args, names, conf, ports, data.draw(st.booleans()))


def one_example(args, names, conf, ports, check=False):
    """One run with every invariant checked; returns (outcome, Run)."""
    with h.example_dir() as ex:
        prepare(ex, names, conf, ports)
        full = h.substitute(args, ex)
        with FakeSupervisord(ex.root, [os.path.join(ex.root, "empty")]) as fake:
            full["supervisor_url"] = fake.url
            before = h.snapshot(ex.root)
            watched = h.watched_attrs()
            result = h.run(bitcoind_info, full, check=check)
            after = h.snapshot(ex.root)
        h.note("args=%r conf=%r -> %r" % (full, conf, result.result))
        outcome = h.check_outcome(result, SPEC, before, after, passwords(full), watched)
        assert h.snapshot_diff(before, after) == [], "bitcoind_info wrote something"
        if outcome == "accepted":
            given = (
                set(full["names"])
                if full.get("names")
                else {i["name"] for i in full.get("instances") or []} or set(names)
            )
            for inst in result.result["instances"]:
                assert inst["name"] in given, "an instance name came back altered: %r" % inst["name"]
                assert inst["state"] in STATES, "state %r is not a state (masked?)" % inst["state"]
        h.count("bitcoind_info", outcome, str(result.result.get("msg", "")))
        return outcome, result
