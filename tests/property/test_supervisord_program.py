# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Property tests for supervisord_program (issue 17): inputs generated from its argument_spec.

The module talks to ``fake_supervisord.FakeSupervisord`` (the XML-RPC protocol on a unix
socket, supervisor 4.2.5's own parser behind reloadConfig). Per example, single and batch form:
(a) refused naming an option, or accepted; never an unhandled exception;
(b) nothing written when refused (every program file, single and batch) or in check mode;
    the victim directory behind a symlinked program file untouched;
(c) accepted and written: each program file is a regular 0600 file without control characters
    or line breaks inside a line; ``supervisord.parse_program`` and supervisor's own
    ``UnhosedConfigParser`` read the same raw values; supervisor's ``ServerOptions`` gives back
    every option exactly as given (command, directory, environment, user, numbers, signals,
    log files and sizes);
(d) no environment value (all are secrets) or 8-character piece of one in stdout, stderr, the
    diff, the result or a failed start's log tail (the log holds the values at a drawn offset,
    so the 2000-byte window can cut one in half).
"""

from __future__ import annotations

import os
import pwd
import shlex
import signal

from ansible_collections.nodefleet.bitcoin.plugins.module_utils import supervisord as sv
from ansible_collections.nodefleet.bitcoin.plugins.modules import supervisord_program
from ansible_collections.nodefleet.bitcoin.tests.property import harness as h
from ansible_collections.nodefleet.bitcoin.tests.property.fake_supervisord import FakeSupervisord, read_configs
from hypothesis import given, settings
from hypothesis import strategies as st
from supervisor import datatypes
from supervisor.options import UnhosedConfigParser

SPEC = h.module_spec(supervisord_program)["argument_spec"]
PROGRAM_SPEC = SPEC["programs"]["options"]

COMMAND_TEXT = st.sampled_from(
    [
        "/bin/sleep 1000",
        "/opt/bitcoin/bin/bitcoind -conf=/srv/btc/a/bitcoin.conf -datadir=/srv/btc/a",
        "/bin/sh -c 'echo 50%% done'",
        "/bin/echo 100% literal",
        '/bin/echo "a b"',
        "/bin/false",
        "/usr/bin/env X=1 /bin/sleep 5",
    ]
)
COMMAND_LIST = st.sampled_from([["/bin/sleep", "1000"], ["/bin/echo", "a b", "100%"], ["/bin/echo", "it's"]])
ENV_KEY = st.sampled_from(["RPC_PASSWORD", "TOKEN", "A_B", "_X1"])
ENV_VALUE = h.weighted((6, h.secret_text()), (1, st.integers(0, 99999).map(lambda n: "JKQVXZ%05dJKQVXZ" % n)))

VALID = {
    "name": st.one_of(h.SAFE_NAME, st.just("prog1")),
    "state": st.sampled_from(["present", "present", "started", "stopped", "restarted", "absent"]),
    "command": h.weighted((4, COMMAND_TEXT), (1, COMMAND_LIST)),
    "directory": st.sampled_from(["{root}/work", "{root}/work/", "/"]),
    "user": st.sampled_from(["root", "nobody"]),
    "environment": st.dictionaries(ENV_KEY, ENV_VALUE, max_size=3),
    "numprocs": st.just(1),
    "priority": st.integers(0, 999),
    "autostart": st.booleans(),
    "autorestart": st.sampled_from(["true", "false", "unexpected", True, False]),
    "startsecs": st.integers(0, 10),
    "startretries": st.integers(0, 5),
    "exitcodes": st.lists(st.integers(0, 255), min_size=1, max_size=3),
    "stopsignal": st.sampled_from(["TERM", "INT", "KILL", "sigterm", "HUP"]),
    "stopwaitsecs": st.integers(1, 600),
    "stopasgroup": st.booleans(),
    "killasgroup": st.just(True),
    "redirect_stderr": st.booleans(),
    "stdout_logfile": st.sampled_from(["{root}/logs/out.log", "AUTO", "NONE", "{root}/logs/100%.log"]),
    "stdout_logfile_maxbytes": st.sampled_from(["50MB", "0", "1024KB", "1GB", "10"]),
    "stdout_logfile_backups": st.integers(0, 10),
    "stderr_logfile": st.sampled_from(["{root}/logs/err.log", "AUTO", "NONE"]),
    "conf_dir": h.weighted((10, st.just("{root}/conf.d")), (2, h.dir_templates("conf.d"))),
    "wait_timeout": st.integers(1, 3),
    "reload_when": st.sampled_from(["restart", "now"]),
    "serial_restarts": st.booleans(),
}
SKIP_TOP = {"server_url", "programs", "restart_loop_threshold", "restart_loop_window"}


def nasty_for(name: str, opt: dict):
    kind = opt.get("type", "str")
    if name == "environment":
        return st.dictionaries(
            h.weighted((2, ENV_KEY), (2, h.mutated(ENV_KEY))),
            h.weighted((1, ENV_VALUE), (3, h.mutated(ENV_VALUE))),
            min_size=1,
            max_size=2,
        )
    if name == "command":
        return st.one_of(
            h.mutated(COMMAND_TEXT), st.lists(h.mutated(st.sampled_from(["/bin/echo", "x"])), min_size=1, max_size=3)
        )
    if name == "exitcodes":
        return st.lists(h.BOUNDARY_INTS, max_size=2)
    if kind in ("str", "path", "raw"):
        base = VALID.get(name, st.just("value"))
        if opt.get("choices"):
            base = st.sampled_from(opt["choices"])
        return h.mutated(base)
    if kind == "int":
        return h.BOUNDARY_INTS
    if kind == "bool":
        return st.sampled_from(["yes", "maybe", 2])
    if kind == "dict":
        return st.dictionaries(h.mutated(st.just("K")), h.mutated(st.just("v")), max_size=2)
    return st.none()


@st.composite
def program_args(draw, spec, attacked_max=2, top=True):
    names = sorted(n for n in spec if n not in SKIP_TOP)
    how_many = draw(st.sampled_from([0, 0, 0, 1, 1, 2])) if attacked_max else 0
    attacked = draw(st.lists(st.sampled_from(names), min_size=how_many, max_size=how_many, unique=True))
    args = {}
    for name in names:
        opt = spec[name]
        if name in attacked:
            args[name] = draw(nasty_for(name, opt))
            continue
        required = name in ("name", "command", "conf_dir")
        if not required and draw(st.integers(0, 2)):
            continue
        strategy = VALID.get(name)
        args[name] = draw(strategy if strategy is not None else nasty_for(name, opt))
    if args.get("stopasgroup") and "killasgroup" not in attacked:
        args["killasgroup"] = True
    return args


@st.composite
def module_args(draw):
    if draw(st.integers(0, 3)):
        return draw(program_args(SPEC))
    top = {k: v for k, v in draw(program_args(SPEC, attacked_max=0)).items() if k in ("conf_dir", "wait_timeout")}
    items = draw(st.lists(program_args(PROGRAM_SPEC), min_size=1, max_size=2))
    for item in items:
        if draw(st.booleans()):
            item.pop("conf_dir", None)
    top["programs"] = items
    return top


def programs_of(args: dict) -> list[dict]:
    if "programs" in args:
        return [dict(item, conf_dir=item.get("conf_dir") or args.get("conf_dir")) for item in args["programs"] or []]
    return [args]


def secrets_of(args: dict) -> list[str]:
    out = []
    for prog in programs_of(args):
        env = prog.get("environment")
        if isinstance(env, dict):
            out += [str(v) for v in env.values() if isinstance(v, (str, int)) and str(v)]
    return out


PRE = st.sampled_from(["none", "none", "none", "file_symlink", "file_is_dir", "dir_symlink", "handwritten"])


def prepare(ex: h.ExampleDir, args: dict, pre: str) -> None:
    os.makedirs(os.path.join(ex.root, "conf.d"))
    os.makedirs(os.path.join(ex.root, "work"))
    os.makedirs(os.path.join(ex.root, "logs"))
    prog = programs_of(args)[0]
    name = prog.get("name")
    if pre == "none" or not isinstance(name, str) or not h.SAFE_NAME_RE.match(name):
        return
    path = os.path.join(ex.root, "conf.d", name + ".conf")
    if pre == "file_symlink":
        os.symlink(os.path.join(ex.victim, "precious"), path)
    elif pre == "file_is_dir":
        os.mkdir(path)
    elif pre == "dir_symlink":
        os.symlink(ex.victim, path)
    else:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write('[program:%s]\ncommand=/bin/true\nenvironment=OLD="JKQVXZJKQVXZold"\n' % name)


# --------------------------------------------------------------------------- read-back (c)


def expected_path(value: str) -> str:
    return "/" + os.path.normpath(value).lstrip("/")


def check_read_back(fake: FakeSupervisord, args: dict) -> None:
    groups = read_configs(fake.main_conf)
    for prog in programs_of(args):
        if prog.get("state", "present") == "absent":
            assert not os.path.lexists(os.path.join(expected_path(prog["conf_dir"]), prog["name"] + ".conf"))
            continue
        path = os.path.join(expected_path(prog["conf_dir"]), prog["name"] + ".conf")
        assert os.path.isfile(path) and not os.path.islink(path), path
        st_ = os.lstat(path)
        assert (st_.st_mode & 0o777, st_.st_uid) == (0o600, 0), "mode/owner of %s" % path
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        h.assert_clean_config(text, path)
        raw = UnhosedConfigParser()
        raw.read_string(text)
        ours = sv.parse_program(text)
        theirs = {s: dict(raw.items(s, raw=True)) for s in raw.sections()}
        assert ours == theirs, "parse_program and supervisor's parser read %s differently:\n%r\n%r" % (
            path,
            ours,
            theirs,
        )
        group = groups.get(prog["name"])
        assert group is not None, "supervisord does not load %s from %s" % (prog["name"], path)
        (pc,) = group.process_configs
        compare(prog, pc)


def compare(prog: dict, pc) -> None:
    def same(option, got, want):
        assert got == want, "%s: given %r, supervisord reads %r" % (option, want, got)

    command = prog.get("command")
    if isinstance(command, list):
        same("command", shlex.split(pc.command), command)
    elif command is not None:
        same("command", pc.command, command.strip())
    if prog.get("directory") is not None:
        same("directory", pc.directory, expected_path(prog["directory"]))
    if prog.get("environment") is not None:
        same("environment", pc.environment or {}, {k: sv.to_text(v) for k, v in prog["environment"].items()})
    if prog.get("user") is not None:
        same("user", pc.uid, pwd.getpwnam(prog["user"]).pw_uid)
    for option in ("priority", "startsecs", "startretries", "stopwaitsecs", "stdout_logfile_backups", "numprocs"):
        if prog.get(option) is not None and hasattr(pc, option):
            same(option, getattr(pc, option), prog[option])
    for option in ("autostart", "stopasgroup", "killasgroup", "redirect_stderr"):
        if prog.get(option) is not None:
            same(option, bool(getattr(pc, option)), bool(prog[option]))
    if prog.get("autorestart") is not None:
        same("autorestart", pc.autorestart, datatypes.auto_restart(sv.to_text(prog["autorestart"]).lower()))
    if prog.get("exitcodes") is not None:
        same("exitcodes", list(pc.exitcodes), list(prog["exitcodes"]))
    if prog.get("stopsignal") is not None:
        name = prog["stopsignal"].upper()
        same("stopsignal", pc.stopsignal, getattr(signal, name if name.startswith("SIG") else "SIG" + name))
    for option in ("stdout_logfile", "stderr_logfile"):
        value = prog.get(option)
        if value is None:
            continue
        want = {"AUTO": datatypes.Automatic, "NONE": None}.get(value.upper())
        if value.upper() not in ("AUTO", "NONE"):
            want = expected_path(value)
        same(option, getattr(pc, option), want)
    if prog.get("stdout_logfile_maxbytes") is not None:
        same(
            "stdout_logfile_maxbytes",
            pc.stdout_logfile_maxbytes,
            datatypes.byte_size(prog["stdout_logfile_maxbytes"].upper()),
        )


# --------------------------------------------------------------------------- the property


def program_files(args: dict) -> list[str]:
    out = []
    for prog in programs_of(args):
        if isinstance(prog.get("conf_dir"), str) and isinstance(prog.get("name"), str):
            out.append(os.path.join(expected_path(prog["conf_dir"]), prog["name"] + ".conf"))
    return out


def start_failure(msg: str) -> bool:
    """A failure after the files were written and applied: a program that did not start."""
    return "(state FATAL)" in msg or "did not reach RUNNING" in msg


@settings(max_examples=h.examples(300))
@given(args=module_args(), check=st.sampled_from([False, False, True]), pre=PRE, log_offset=st.integers(1900, 2000))
def test_supervisord_program_refuses_or_round_trips(args, check, pre, log_offset):
    one_example(args, check, pre, log_offset)


def one_example(args, check=False, pre="none", log_offset=1950):
    """One run with every invariant checked; returns (outcome, Run)."""
    with h.example_dir() as ex:
        full = h.substitute(args, ex)
        prepare(ex, full, pre)
        conf_dirs = sorted(
            {
                expected_path(p["conf_dir"])
                for p in programs_of(full)
                if isinstance(p.get("conf_dir"), str) and p["conf_dir"].startswith(ex.root)
            }
            | {os.path.join(ex.root, "conf.d")}
        )
        with FakeSupervisord(ex.root, conf_dirs, log_offset=log_offset) as fake:
            full["server_url"] = fake.url
            before = h.snapshot(ex.root)
            victim = h.snapshot(ex.victim)
            watched = h.watched_attrs()
            result = h.run(supervisord_program, full, check=check)
            after = h.snapshot(ex.root)
            h.note("args=%r check=%r pre=%r -> %r calls=%r" % (full, check, pre, result.result, fake.calls))
            outcome = h.check_outcome(
                result,
                SPEC,
                before,
                after,
                secrets_of(full),
                watched,
                runtime_failure=start_failure,
                also_names=program_files(full),
            )
            assert h.snapshot(ex.victim) == victim, "the victim directory changed"
            if outcome != "refused" and not check:
                check_read_back(fake, full)
        h.count("supervisord_program", outcome + (" (check mode)" if check else ""), str(result.result.get("msg", "")))
        return outcome, result
