# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Property tests for tor_hidden_service (issue 17): inputs generated from its argument_spec.

tor is made inert for the per-example runs: ``tor.read_pid``/``tor.reload_tor`` are replaced
by a stand-in that plays tor's part after a SIGHUP (it reads the drop-ins with a model of
tor's config reader and writes each service's ``hostname``), and ``tor.verify_config`` by
that model (a line is ``Keyword value`` up to "\\n"; '#' starts a comment). A seeded sample
runs the real ``tor --verify-config`` (skipped only when tor is absent and CI is unset).
Per example, single and batch form: (a) refused naming an option, or accepted; no unhandled
exception; (b) nothing written when refused or in check mode, the victim directory behind a
symlink untouched; (c) accepted: every drop-in is clean, ``tor.parse_dropin`` and the tor
model read back exactly the service dir and the ports given, the service dir is 0700 owned by
tor_user, a given key is installed byte for byte; (d) no piece of the key (base64, after its
public header) in any output.
"""

from __future__ import annotations

import base64
import os
import pwd
import shutil
import stat
import subprocess

import pytest
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import tor
from ansible_collections.nodefleet.bitcoin.plugins.modules import tor_hidden_service
from ansible_collections.nodefleet.bitcoin.tests.property import harness as h
from hypothesis import given, settings
from hypothesis import strategies as st

SPEC = h.module_spec(tor_hidden_service)["argument_spec"]
SERVICE_SPEC = SPEC["services"]["options"]
ONION = "pplucon3en7jyrs5kb7kxl2dvdo5dfm4bjjmug3zktvuvfu4i3dqp6qd.onion"
HEADER_B64 = len(base64.b64encode(tor.SECRET_KEY_HEADER)) - 4  # base64 chars that encode only the header

KEY = st.binary(min_size=64, max_size=64).map(lambda body: base64.b64encode(tor.SECRET_KEY_HEADER + body).decode())
TARGET = st.sampled_from(["127.0.0.1:8334", "[::1]:8334", "localhost:80", "10.0.0.5:18445"])
PORTS = st.lists(
    st.fixed_dictionaries({"port": st.integers(1, 65535), "target": TARGET}),
    min_size=1,
    max_size=2,
    unique_by=lambda d: d["port"],
)


def tor_read(text: str) -> list[tuple[str, str]]:
    """tor's config reader as a model (config.c / confline.c): lines end at '\\n'; '#' starts a
    comment; a line is a keyword, whitespace, then the value (trimmed)."""
    out = []
    for raw in text.split("\n"):
        line = raw.split("#", 1)[0].strip(" \t\r")
        if not line:
            continue
        parts = line.split(None, 1)
        out.append((parts[0], parts[1].strip() if len(parts) > 1 else ""))
    return out


VALID = {
    "name": st.one_of(h.SAFE_NAME, st.just("svc1")),
    "state": st.sampled_from(["present", "present", "present", "absent"]),
    "service_dir": h.weighted(
        (10, st.sampled_from(["{root}/services/s1", "{root}/services/s2/"])), (3, h.dir_templates("svc"))
    ),
    "ports": PORTS,
    "secret_key": KEY,
    "force_key": st.booleans(),
    "purge": st.booleans(),
    "torrc_dir": st.just("{root}/torrc.d"),
    "torrc_file": st.just("{root}/torrc"),
    "tor_defaults_torrc": st.just("{root}/defaults"),
    "tor_user": st.sampled_from(["debian-tor", "root"]),
    "tor_pid_file": st.just("{root}/tor.pid"),
    "wait_timeout": st.just(1),
}
REQUIRED = {
    "torrc_dir",
    "torrc_file",
    "tor_defaults_torrc",
    "tor_pid_file",
    "tor_user",
    "wait_timeout",
    "name",
    "ports",
    "service_dir",
}


def nasty_for(name: str, opt: dict):
    kind = opt.get("type", "str")
    if name == "ports":
        target = h.weighted((1, TARGET), (2, h.mutated(TARGET)))
        return st.lists(
            st.fixed_dictionaries({"port": st.one_of(h.BOUNDARY_INTS, st.integers(1, 9)), "target": target}), max_size=2
        )
    if name == "secret_key":
        return st.one_of(h.mutated(KEY), KEY.map(lambda k: k[:-4]), st.just(base64.b64encode(bytes(96)).decode()))
    if kind in ("str", "path"):
        base = VALID.get(name, st.just("value"))
        if opt.get("choices"):
            base = st.sampled_from(opt["choices"])
        if name in ("torrc_dir", "torrc_file", "tor_pid_file", "service_dir"):
            return h.weighted((3, h.mutated(base)), (2, h.dir_templates("x")))
        return h.mutated(base)
    if kind == "int":
        return h.BOUNDARY_INTS
    if kind == "bool":
        return st.sampled_from(["yes", "maybe", 2])
    return st.none()


@st.composite
def service_args(draw, spec, top: bool):
    names = sorted(n for n in spec if n != "services")
    how_many = draw(st.sampled_from([0, 0, 0, 1, 1, 2]))
    attacked = draw(st.lists(st.sampled_from(names), min_size=how_many, max_size=how_many, unique=True))
    args = {}
    for name in names:
        if name in attacked:
            args[name] = draw(nasty_for(name, spec[name]))
            continue
        if name not in REQUIRED and draw(st.integers(0, 2)):
            continue
        if name in REQUIRED and not top and name not in ("name", "ports", "service_dir"):
            continue
        strategy = VALID.get(name)
        args[name] = draw(strategy if strategy is not None else nasty_for(name, spec[name]))
    if args.get("state") == "absent":
        args.pop("ports", None) if "ports" not in attacked else None
        args.pop("secret_key", None) if "secret_key" not in attacked else None
        args.pop("force_key", None) if "force_key" not in attacked else None
    else:
        if "purge" not in attacked:
            args.pop("purge", None)
        if args.get("force_key") and "secret_key" not in args and "force_key" not in attacked:
            args["force_key"] = False
    return args


@st.composite
def module_args(draw):
    if draw(st.integers(0, 3)):
        return draw(service_args(SPEC, top=True))
    top = {k: v for k, v in draw(service_args(SPEC, top=True)).items() if k.startswith("tor") or k == "wait_timeout"}
    items = draw(st.lists(service_args(SERVICE_SPEC, top=False), min_size=1, max_size=2))
    for i, item in enumerate(items):
        if isinstance(item.get("service_dir"), str) and item["service_dir"].startswith("{root}/services/"):
            item["service_dir"] = "{root}/services/b%d" % i
    top["services"] = items
    return top


def services_of(args):
    if "services" in args:
        return list(args["services"] or [])
    return [args]


def key_pieces(args) -> list[str]:
    pieces = []
    for svc in services_of(args):
        key = svc.get("secret_key") if isinstance(svc, dict) else None
        if isinstance(key, str):
            body = key[HEADER_B64:]
            pieces += [body[i : i + 8] for i in range(max(0, len(body) - 7))]
    return pieces


class InertTor:
    """tor's part: a pid that 'is tor', and after a reload, a hostname in every service dir."""

    def __init__(self, torrc_dir: str):
        self.torrc_dir = torrc_dir
        self.reloads = 0

    def read_pid(self, pid_file):
        return 4242

    def reload_tor(self, pid_file, kill=None):
        self.reloads += 1
        for entry in sorted(os.listdir(self.torrc_dir)):
            with open(os.path.join(self.torrc_dir, entry), encoding="utf-8") as handle:
                lines = tor_read(handle.read())
            for keyword, value in lines:
                if keyword.lower() == "hiddenservicedir" and os.path.isdir(value):
                    with open(os.path.join(value, "hostname"), "w", encoding="ascii") as handle:
                        handle.write(ONION + "\n")
        return 4242

    def verify_config(self, run_command, tor_bin, torrc_file, defaults_torrc):
        for entry in sorted(os.listdir(self.torrc_dir)):
            with open(os.path.join(self.torrc_dir, entry), encoding="utf-8") as handle:
                for keyword, value in tor_read(handle.read()):
                    if keyword.lower() == "hiddenserviceport" and not value.split()[0].isdigit():
                        return False, "bad HiddenServicePort"
        return True, ""


def prepare(ex: h.ExampleDir) -> None:
    for sub in ("torrc.d", "services"):
        os.mkdir(os.path.join(ex.root, sub), 0o755)
    with open(os.path.join(ex.root, "torrc"), "w", encoding="utf-8") as handle:
        handle.write("SocksPort 0\n%%include %s/torrc.d/*.conf\n" % ex.root)
    open(os.path.join(ex.root, "defaults"), "w").close()
    with open(os.path.join(ex.root, "tor.pid"), "w", encoding="ascii") as handle:
        handle.write("4242\n")


def expected_path(value: str) -> str:
    return "/" + os.path.normpath(value).lstrip("/")


def check_read_back(args, result) -> None:
    tor_user = args.get("tor_user", "debian-tor")
    entry = pwd.getpwnam(tor_user)
    for svc in services_of(args):
        name = svc["name"]
        dropin = os.path.join(expected_path(args["torrc_dir"]), "nodefleet-%s.conf" % name)
        if svc.get("state", "present") == "absent":
            assert not os.path.lexists(dropin), "%s is still there" % dropin
            continue
        service_dir = expected_path(svc["service_dir"]) if svc.get("service_dir") else tor.default_service_dir(name)
        assert os.path.isfile(dropin) and not os.path.islink(dropin), dropin
        with open(dropin, encoding="utf-8") as handle:
            text = handle.read()
        h.assert_clean_config(text, dropin)
        ours = tor.parse_dropin(text)
        model = tor_read(text)
        want_ports = [(p["port"], p["target"]) for p in svc["ports"]]
        assert ours["service_dir"] == service_dir, (ours, service_dir)
        assert ours["ports"] == want_ports, (ours["ports"], want_ports)
        assert [(k, v) for k, v in model if k == "HiddenServiceDir"] == [("HiddenServiceDir", service_dir)], model
        got = [v.split() for k, v in model if k == "HiddenServicePort"]
        assert got == [[str(p), t] for p, t in want_ports], (got, want_ports)
        st_ = os.lstat(service_dir)
        assert stat.S_ISDIR(st_.st_mode) and stat.S_IMODE(st_.st_mode) == 0o700, oct(st_.st_mode)
        assert (st_.st_uid, st_.st_gid) == (entry.pw_uid, entry.pw_gid)
        if svc.get("secret_key"):
            with open(os.path.join(service_dir, tor.SECRET_KEY_FILE), "rb") as handle:
                assert handle.read() == base64.b64decode(svc["secret_key"])


@settings(max_examples=h.examples(300))
@given(args=module_args(), check=st.sampled_from([False, False, True]))
def test_tor_hidden_service_refuses_or_round_trips(args, check, monkeypatch_module):
    one_example(args, check, monkeypatch_module)


def one_example(args, check, monkeypatch):
    """One run with every invariant checked; returns (outcome, Run)."""
    with h.example_dir() as ex:
        prepare(ex)
        full = h.substitute(args, ex)
        inert = InertTor(os.path.join(ex.root, "torrc.d"))
        monkeypatch.setattr(tor, "read_pid", inert.read_pid)
        monkeypatch.setattr(tor, "reload_tor", inert.reload_tor)
        monkeypatch.setattr(tor, "verify_config", inert.verify_config)
        before = h.snapshot(ex.root)
        victim = h.snapshot(ex.victim)
        watched = h.watched_attrs()
        result = h.run(tor_hidden_service, full, check=check)
        after = h.snapshot(ex.root)
        h.note("args=%r check=%r -> %r" % (full, check, result.result))
        outcome = h.check_outcome(result, SPEC, before, after, [], watched)
        leaked = [p for p in key_pieces(full) if any(p in s for s in h.leak_sources(result))]
        assert not leaked, "key material in the output: %r" % leaked[:3]
        assert h.snapshot(ex.victim) == victim, "the victim directory changed"
        if outcome == "accepted" and not check:
            check_read_back(full, result.result)
        h.count("tor_hidden_service", outcome + (" (check mode)" if check else ""), str(result.result.get("msg", "")))
        return outcome, result


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


# --------------------------------------------------------------------------- real tor --verify-config


@pytest.fixture(scope="module")
def tor_bin():
    path = shutil.which("tor")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("tor is not installed; CI must run the real tor check", pytrace=False)
        pytest.skip("tor is not installed (CI unset)")
    return path


def test_real_tor_verifies_what_was_written(tor_bin, monkeypatch_module):
    """A seeded sample of accepted single-form services: real ``tor --verify-config`` accepts the torrc."""
    checked = []

    @settings(max_examples=h.examples(6, slow=True))
    @given(name=h.SAFE_NAME, ports=PORTS)
    def inner(name, ports):
        with h.example_dir() as ex:
            prepare(ex)
            inert = InertTor(os.path.join(ex.root, "torrc.d"))
            monkeypatch_module.setattr(tor, "read_pid", inert.read_pid)
            monkeypatch_module.setattr(tor, "reload_tor", inert.reload_tor)
            monkeypatch_module.setattr(tor, "verify_config", inert.verify_config)
            args = {
                "name": name,
                "ports": ports,
                "service_dir": os.path.join(ex.root, "services", "s"),
                "torrc_dir": os.path.join(ex.root, "torrc.d"),
                "torrc_file": os.path.join(ex.root, "torrc"),
                "tor_defaults_torrc": os.path.join(ex.root, "defaults"),
                "tor_pid_file": os.path.join(ex.root, "tor.pid"),
                "tor_user": "root",
                "wait_timeout": 1,
            }
            result = h.run(tor_hidden_service, args)
            assert result.result and not result.failed, result.result
            with open(os.path.join(ex.root, "torrc"), "a", encoding="utf-8") as handle:
                handle.write("DataDirectory %s/data\n" % ex.root)
            proc = subprocess.run(
                [tor_bin, "--verify-config", "-f", args["torrc_file"], "--defaults-torrc", args["tor_defaults_torrc"]],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
            checked.append(name)
            h.count("tor_hidden_service (real tor --verify-config)", "accepted")

    inner()
    assert checked


def prepare_args() -> dict:
    """The host settings of an example (``{root}`` templates), for the regression tests."""
    return {
        "torrc_dir": "{root}/torrc.d",
        "torrc_file": "{root}/torrc",
        "tor_defaults_torrc": "{root}/defaults",
        "tor_pid_file": "{root}/tor.pid",
        "tor_user": "root",
        "wait_timeout": 1,
    }
