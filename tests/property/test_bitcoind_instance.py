# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Property tests for bitcoind_instance (issue 17): generated inputs from its ARGUMENT_SPEC.

Per example, on a private example directory (host read-only but /tmp, see sandbox.py):
(a) refused naming an option, or accepted; never an unhandled exception;
(b) nothing written when refused or in check mode; the victim directory (a symlink target)
    never touched; no system directory's mode or owner changed;
(c) accepted and written: bitcoin.conf reads back identically by the collection's parser
    (``bitcoin_conf.parse``) and by a model of Core's ``GetConfigOptions`` written here from
    Core's source; every extra option, addnode and rpcallowip value comes back exactly, no
    key appears that the module did not mean to write, no double negative
    (``nodaemon=0``...) sets a forbidden option, every rpc_users password verifies; a sample
    is read by real Bitcoin Core (``Config file arg:`` log lines);
(d) no password or 8-character piece of one in stdout, stderr, diff, result or the file.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
import time

import pytest
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import bitcoin_conf, rpcauth
from ansible_collections.nodefleet.bitcoin.plugins.modules import bitcoind_instance
from ansible_collections.nodefleet.bitcoin.tests.property import harness as h
from hypothesis import given, settings
from hypothesis import strategies as st

SPEC_KW = h.module_spec(bitcoind_instance)
SPEC = SPEC_KW["argument_spec"]
ONION = "aaaqeayeaudaocajbifqydiob4ibceqtcqkrmfyydenbwha5dyp3kead.onion"

core_read = h.core_read

MANAGED_KEYS = {
    "chain",
    "server",
    "listen",
    "rpcauth",
    "txindex",
    "prune",
    "dbcache",
    "maxconnections",
    "proxy",
    "onion",
    "listenonion",
    "onlynet",
    "dnsseed",
    "discover",
    "externalip",
    "printtoconsole",
    "nodebuglogfile",
    "shrinkdebugfile",
    "port",
    "rpcport",
    "bind",
    "rpcbind",
    "rpcallowip",
    "addnode",
}
# What no extra option may set, directly or as a double negative (issue 17 group 4).
FORBIDDEN_FOR_EXTRAS = set(bitcoin_conf.FORBIDDEN_EXTRA_KEYS) | {"rpcuser", "rpcpassword", "daemon", "includeconf"}

# ----------------------------------------------------------------------- strategies

PORT = st.integers(20000, 60000)
IPS = ["127.0.0.1", "::1", "10.0.0.1", "0.0.0.0", "::"]
NETS = ["127.0.0.1", "::1", "10.0.0.0/8", "192.168.1.0/255.255.255.0", "fd00::/8", "0.0.0.0/0"]


@st.composite
def rpcauth_value(draw):
    user = draw(st.from_regex(r"\A[a-z][a-z0-9_]{0,8}\Z"))
    salt = draw(st.from_regex(r"\A[0-9a-f]{32}\Z"))
    value = rpcauth.generate(user, "pw-" + user, salt)
    return draw(st.sampled_from([value, "rpcauth=" + value]))


BENIGN_EXTRA_KEYS = ["blocksonly", "uacomment", "maxmempool", "debug", "whitelist", "connect", "wallet", "seednode"]
EXTRA_KEYS = [
    *BENIGN_EXTRA_KEYS,
    "mempoolexpiry",
    "nodaemon",
    "norpcuser",
    "norpcpassword",
    "noincludeconf",
    "nolisten",
    "noserver",
    "notxindex",
    "nonodaemon",
    "rpcuser",
    "rpcpassword",
    "includeconf",
    "conf",
    "datadir",
    "zmqpubrawtx",
    "regtest",
    "Blocksonly",
    "a-b",
    "a.b",
    "main.rpcbind",
    "x",
]
EXTRA_VALUE_TEXT = st.sampled_from(["1", "0", "abc", "203.0.113.5:8333", "net", "x y", "300", ""])
EXTRA_VALUE = st.one_of(
    EXTRA_VALUE_TEXT,
    st.booleans(),
    st.integers(-2, 100000),
    st.lists(EXTRA_VALUE_TEXT, min_size=1, max_size=3),
)
NASTY_EXTRA_VALUE = st.one_of(
    h.mutated(EXTRA_VALUE_TEXT), st.lists(h.mutated(EXTRA_VALUE_TEXT), min_size=1, max_size=3)
)

ADDNODE = st.sampled_from(["203.0.113.5:8333", "203.0.113.6", "[2001:db8::1]:8333", ONION + ":8333", "node.example"])

VALID = {
    "name": st.one_of(h.SAFE_NAME, st.just("node1")),
    "state": st.sampled_from(["present"] * 5 + ["absent"]),
    "purge": st.sampled_from([False] * 3 + [True]),
    "check_ports": st.just(False),
    "impl": st.sampled_from(["core", "knots", "garbageman"]),
    "network": st.sampled_from(["main", "test", "testnet4", "signet", "regtest"]),
    "datadir": h.dir_templates("node"),
    "owner": st.sampled_from(["root", "0", "nobody"]),
    "group": st.sampled_from(["root", "0", "nogroup"]),
    "rpc_port": PORT,
    "p2p_port": PORT,
    "onion_port": PORT,
    "zmq_ports": st.dictionaries(st.sampled_from(list(bitcoin_conf.ZMQ_TOPICS)), PORT, max_size=2),
    "rpcauth": st.lists(rpcauth_value(), max_size=2),
    "rpc_users": st.lists(
        st.fixed_dictionaries({"user": st.from_regex(r"\A[a-z][a-z0-9._-]{0,8}\Z"), "password": h.secret_text()}),
        max_size=2,
    ),
    "rpc_bind": st.lists(st.sampled_from(["127.0.0.1"] * 4 + ["::1"] * 2 + IPS), min_size=1, max_size=2),
    "rpc_allow_ip": st.lists(st.sampled_from(NETS), min_size=1, max_size=2),
    "tor_mode": st.sampled_from(["tor-only", "clearnet", "both"]),
    "tor_proxy": st.sampled_from(["127.0.0.1:9050", "[::1]:9050", "localhost:9050"]),
    "onion_address": st.just(ONION),
    "prune": st.sampled_from([0, 1, 550, 2000]),
    "txindex": st.booleans(),
    "dbcache": st.sampled_from([4, 450, 2048]),
    "maxconnections": st.sampled_from([0, 8, 125]),
    "extra_options": st.dictionaries(st.sampled_from(BENIGN_EXTRA_KEYS), EXTRA_VALUE, max_size=3),
    "addnode": st.lists(ADDNODE, max_size=2),
    "debug_log": st.sampled_from(["console", "file"]),
    "rpc_allow_any": st.sampled_from([False] * 4 + [True]),
}


def nasty_for(name: str, opt: dict):
    """A hostile value for one option, by its spec type."""
    kind = opt.get("type", "str")
    if kind in ("str", "path"):
        base = VALID.get(name, st.just("value"))
        if opt.get("choices"):
            base = st.sampled_from(opt["choices"])
        return h.mutated(base if name != "datadir" else st.just("{root}/node"))
    if kind == "int":
        return h.BOUNDARY_INTS
    if kind == "bool":
        return st.sampled_from(["yes", "no", "maybe", 2, None])
    if kind == "list":
        if opt.get("elements") == "dict" and name == "rpc_users":
            user = h.mutated(st.from_regex(r"\A[a-z]{1,6}\Z"))
            return st.lists(st.fixed_dictionaries({"user": user, "password": h.secret_text()}), min_size=1, max_size=2)
        element = VALID.get(name, st.lists(st.just("x")))
        return st.lists(h.mutated(element.map(lambda xs: xs[0] if xs else "x")), min_size=1, max_size=2)
    if kind == "dict":
        if name == "extra_options":
            return st.dictionaries(
                st.one_of(st.sampled_from(EXTRA_KEYS), h.mutated(st.sampled_from(EXTRA_KEYS))),
                st.one_of(EXTRA_VALUE, NASTY_EXTRA_VALUE),
                min_size=1,
                max_size=2,
            )
        return st.dictionaries(h.mutated(st.just("rawtx")), st.one_of(PORT, h.BOUNDARY_INTS), min_size=1, max_size=2)
    return st.none()


@st.composite
def instance_args(draw, network=None, attacked_max=2):
    """Arguments for one run: every option maybe absent or valid, and up to two attacked."""
    names = sorted(SPEC)
    how_many = draw(st.sampled_from([0, 0, 0, 1, 1, 2])) if attacked_max else 0
    attacked = draw(st.lists(st.sampled_from(names), min_size=how_many, max_size=how_many, unique=True))
    args = {}
    for name in names:
        opt = SPEC[name]
        if name in attacked:
            args[name] = draw(nasty_for(name, opt))
            continue
        required = opt.get("required") or name in ("datadir", "owner", "group", "onion_address")
        if not required and draw(st.integers(0, 2)):
            continue
        strategy = VALID.get(name)
        if strategy is None:  # an option this file does not know yet: by type
            strategy = nasty_for(name, opt)
        args[name] = draw(strategy)
    if network:
        args["network"] = network
    # Distinct ports unless a port option is attacked (collisions are tested by the attacks).
    ports = draw(st.lists(PORT, min_size=8, max_size=8, unique=True))
    for i, name in enumerate(("rpc_port", "p2p_port", "onion_port")):
        if name in args and name not in attacked:
            args[name] = ports[i]
    if isinstance(args.get("zmq_ports"), dict) and "zmq_ports" not in attacked:
        args["zmq_ports"] = {topic: ports[3 + i] for i, topic in enumerate(sorted(args["zmq_ports"]))}
    if args.get("prune") and "txindex" not in attacked and "prune" not in attacked:
        args["txindex"] = False
    if "rpc_allow_ip" not in attacked and not args.get("rpc_allow_any") and "rpc_allow_ip" in args:
        args["rpc_allow_ip"] = [n for n in args["rpc_allow_ip"] if n != "0.0.0.0/0"] or ["127.0.0.1"]
    if args.get("state") == "absent" and "purge" not in attacked and draw(st.booleans()):
        args["purge"] = True
    elif args.get("state") != "absent" and "purge" not in attacked:
        args.pop("purge", None)
    return args


def passwords(args) -> list[str]:
    users = args.get("rpc_users")
    if not isinstance(users, list):
        return []
    return [u["password"] for u in users if isinstance(u, dict) and isinstance(u.get("password"), str)]


PRE_STATES = st.sampled_from(["none", "none", "none", "conf_symlink", "conf_dir", "foreign_conf"])


def prepare(ex: h.ExampleDir, datadir: str | None, pre: str) -> None:
    """Put something in the datadir before the run (a symlinked or foreign bitcoin.conf)."""
    if pre == "none" or not isinstance(datadir, str) or not datadir.startswith(ex.root + "/"):
        return
    try:
        real = os.path.realpath(datadir)
        if not real.startswith(ex.root + "/") or real.startswith(ex.victim) or os.path.exists(real):
            return
        os.makedirs(real, 0o750)
    except (OSError, ValueError):  # a NUL, a name too long, a file in the way: no pre-state then
        return
    conf = os.path.join(real, "bitcoin.conf")
    if pre == "conf_symlink":
        os.symlink(os.path.join(ex.victim, "precious"), conf)
    elif pre == "conf_dir":
        os.mkdir(conf)
    else:
        with open(conf, "w", encoding="utf-8") as handle:
            handle.write("# a hand-written file\nrpcpassword=hunter2\n")


# ----------------------------------------------------------------------- read-back (invariant c)


def rendered(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def normal_net(text: str) -> str:
    text = text.strip()
    if "/" in text:
        return ipaddress.ip_network(text, strict=False).with_prefixlen
    return str(ipaddress.ip_address(text))


def check_read_back(args: dict, result: dict) -> None:
    conf = result["conf_file"]
    assert not os.path.islink(conf), "bitcoin.conf is a symlink"
    with open(conf, encoding="utf-8") as handle:
        text = handle.read()
    h.assert_clean_config(text, "bitcoin.conf")
    try:
        model = core_read(text)
    except ValueError as exc:
        raise AssertionError("Core (model) refuses the written file: %s\n%s" % (exc, text)) from None
    ours = bitcoin_conf.parse(text)
    assert ours == model, "bitcoin_conf.parse and Core read the file differently:\n%r\n%r" % (ours, model)
    network = args.get("network", "main")
    section = bitcoin_conf.NETWORK_SECTION[network]
    assert set(model) <= {"", section}, "unexpected sections: %r" % sorted(model)
    extras = args.get("extra_options") or {}
    for key, raw in extras.items():
        expected = [rendered(v) for v in (raw if isinstance(raw, list) else [raw])]
        where = section if key in bitcoin_conf.NETWORK_ONLY_KEYS else ""
        got = [v for k, v in model.get(where, []) if k == key]
        assert got == expected, "extra_options.%s written as %r, Core reads %r" % (key, expected, got)
        name = key[2:] if key.startswith("no") else key
        assert name not in FORBIDDEN_FOR_EXTRAS, "extra_options.%s sets the forbidden %s (double negative)" % (
            key,
            name,
        )
    allowed = MANAGED_KEYS | set(extras)
    for where, pairs in model.items():
        for key, _value in pairs:
            assert key in allowed or key.startswith("zmqpub"), "a key nobody asked for: [%s] %s" % (where, key)
    allow = [v for k, v in model[section] if k == "rpcallowip"]
    given_allow = args.get("rpc_allow_ip", ["127.0.0.1"])
    assert sorted(set(allow)) == sorted({normal_net(a) for a in given_allow}), (allow, given_allow)
    if args.get("addnode"):
        got = [v for k, v in model[section] if k == "addnode"]
        assert got == list(args["addnode"]), (got, args["addnode"])
    values = [v for k, v in model[""] if k == "rpcauth"]
    for user in args.get("rpc_users") or []:
        assert any(rpcauth.verify(v, user["user"], user["password"]) for v in values), user["user"]
    found = h.leaks([text], passwords(args))
    assert not found, "a password piece is in bitcoin.conf: %r" % found
    assert oct(os.stat(conf).st_mode & 0o777) == "0o600"


# ----------------------------------------------------------------------- the property


def one_example(args, check=False, pre="none"):
    """One run with every invariant checked; returns (outcome, Run)."""
    with h.example_dir() as ex:
        full = h.substitute(args, ex, keys=True)
        prepare(ex, full.get("datadir"), pre)
        before = h.snapshot(ex.root)
        victim_before = h.snapshot(ex.victim)
        watched = h.watched_attrs()
        result = h.run(bitcoind_instance, full, check=check)
        after = h.snapshot(ex.root)
        h.note("args=%r check=%r pre=%r -> %r" % (full, check, pre, result.result))
        outcome = h.check_outcome(result, SPEC, before, after, passwords(full), watched)
        assert h.snapshot(ex.victim) == victim_before, "the victim directory changed"
        if outcome == "accepted" and not check and full.get("state", "present") == "present":
            check_read_back(full, result.result)
        h.count(
            "bitcoind_instance", "%s%s" % (outcome, " (check mode)" if check else ""), str(result.result.get("msg", ""))
        )
        return outcome, result


@settings(max_examples=h.examples(400))
@given(args=instance_args(), check=st.sampled_from([False, False, True]), pre=PRE_STATES)
def test_bitcoind_instance_refuses_or_round_trips(args, check, pre):
    one_example(args, check, pre)


# ----------------------------------------------------------------------- real Core reads it back


def core_logged_args(bitcoind, datadir, timeout=30.0) -> tuple[dict, str]:
    """Start real Core on the written file, collect its ``Config file arg:`` lines, stop it."""
    conf = os.path.join(datadir, "bitcoin.conf")
    cmd = [str(bitcoind), "-conf=%s" % conf, "-datadir=%s" % datadir, "-connect=0", "-printtoconsole=1"]
    cmd += ["-nodebuglogfile", "-listenonion=0", "-dnsseed=0", "-fixedseeds=0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    lines = []
    deadline = time.monotonic() + timeout
    try:
        os.set_blocking(proc.stdout.fileno(), False)
        buf = b""
        while time.monotonic() < deadline:
            chunk = proc.stdout.read() or b""
            buf += chunk
            text = buf.decode("utf-8", "replace")
            if proc.poll() is not None or "Using at most" in text or "init message: Loading" in text:
                break
            time.sleep(0.05)
        buf += proc.stdout.read() or b""
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        proc.stdout.close()
    output = buf.decode("utf-8", "replace")
    logged: dict = {}
    for line in output.splitlines():
        match = re.search(r"Config file arg: (?:\[([^\]]*)\] )?([^=]+)=(.*)$", line)
        if match:
            logged.setdefault((match.group(1) or "", match.group(2)), []).append(match.group(3))
        lines.append(line)
    return logged, output


CORE_EXTRA_KEYS = ["uacomment", "blocksonly", "maxmempool", "whitelist", "debug", "seednode"]


@st.composite
def core_args(draw):
    args = draw(instance_args(network="regtest", attacked_max=0))
    args.update(state="present", check_ports=False, tor_mode=draw(st.sampled_from(["tor-only", "both"])))
    for name in ("zmq_ports", "purge", "datadir", "rpc_allow_any", "debug_log"):
        args.pop(name, None)
    args["extra_options"] = draw(
        st.dictionaries(st.sampled_from(CORE_EXTRA_KEYS), h.valid_or_nasty(EXTRA_VALUE_TEXT, 2), max_size=3)
    )
    return args


@pytest.fixture(scope="module")
def core_bin(request, tmp_path_factory):
    from ansible_collections.nodefleet.bitcoin.tests.integration import real_core as rc

    archive, reason = rc.find_archive()
    if archive is None:
        rc.skip_or_fail(reason)
    rc.verify_archive(archive)
    import tarfile

    dest = tmp_path_factory.mktemp("core")
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="tar")
    (top,) = os.listdir(dest)
    return dest / top / "bin" / "bitcoind"


def unescape_univalue(text: str) -> str:
    """A logged value: UniValue JSON of the string (``"..."`` with \\uXXXX escapes)."""
    import json

    return json.loads(text)


def test_real_core_reads_back_what_was_written(core_bin):
    """A seeded sample of accepted regtest configs, read by real Core: every extra value as written."""
    from ansible_collections.nodefleet.bitcoin.tests.integration.local_ports import free_ports

    checked = []

    @settings(max_examples=h.examples(10, slow=True))
    @given(args=core_args())
    def inner(args):
        with h.example_dir() as ex:
            rpc, p2p, onion = free_ports(3)
            full = dict(args, datadir=os.path.join(ex.root, "node"), rpc_port=rpc, p2p_port=p2p, onion_port=onion)
            result = h.run(bitcoind_instance, full)
            if result.failed:
                return
            assert result.result is not None and result.crash is None
            logged, output = core_logged_args(core_bin, full["datadir"])
            h.note(output[-3000:])
            assert "Error reading configuration file" not in output, output[-2000:]
            for key, raw in (full.get("extra_options") or {}).items():
                expected = [rendered(v) for v in (raw if isinstance(raw, list) else [raw])]
                got = logged.get(("", key))
                if got is None:
                    continue  # Core logs only the options it knows; unknown ones are ignored
                values = []
                for v in got:
                    parsed = unescape_univalue(v)
                    values.extend(parsed if isinstance(parsed, list) else [parsed])
                assert values == expected, "extra_options.%s: written %r, real Core read %r" % (key, expected, values)
            checked.append(full)
            h.count("bitcoind_instance (real Core)", "read back")

    inner()
    assert checked, "no generated example was accepted, so real Core read nothing"
