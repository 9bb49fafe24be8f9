# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Harness of the property suite (issue 17): run a module in-process, check the invariants.

Shared by every tests/property/test_*.py:

- ``module_spec(module)``: the argument_spec (and the other AnsibleModule keywords) a module's
  ``main()`` builds, captured by a stand-in AnsibleModule, so strategies follow the real spec
  even where it is built inline;
- ``run(module, args, check, diff)``: ``main()`` the way ansible-test units runs it
  (``patch_module_args`` + the ``SystemExit`` of exit_json/fail_json), stdout/stderr captured;
- ``snapshot(*roots)``: paths, types, modes, owners, contents (and link targets) of trees,
  compared before/after a run;
- ``check_outcome(...)``: invariants (a) refused naming an option or accepted, never an
  unhandled exception, (b) nothing written when refused or in check mode, (d) no secret and no
  8-character piece of one in stdout, stderr, the diff or the result. Invariant (c) (the
  written file reads back identically) is per module, in its test file.
- strategies: nasty text (every C0 control, DEL, C1 line breaks, Unicode separators,
  whitespace at the ends, '#', ';', '%', '=', ':', '$', '..', '//', long strings) built by
  mutating valid-looking values, boundary integers, and example directories with system
  directories, '//' and symlinks to a victim directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import stat
import string
import sys
import tempfile
import threading
import traceback
from dataclasses import dataclass, field

from ansible.module_utils.testing import patch_module_args
from ansible_collections.nodefleet.bitcoin.tests.property import sandbox
from hypothesis import strategies as st

# --------------------------------------------------------------------------- example counts


def examples(default: int, slow: bool = False) -> int:
    """max_examples for one property: ``default`` (the CI budget), raised to at least
    NODEFLEET_PROPERTY_EXAMPLES for a deep run. The slow samples (real Core, real tor, the
    ansible-playbook -vvvv runs: seconds each) follow NODEFLEET_PROPERTY_SLOW_EXAMPLES instead."""
    raised = os.environ.get("NODEFLEET_PROPERTY_SLOW_EXAMPLES" if slow else "NODEFLEET_PROPERTY_EXAMPLES")
    return max(default, int(raised)) if raised else default


def note(text: str) -> None:
    """hypothesis.note inside a property test; outside one (a regression test), print it so
    pytest shows it with a failure."""
    from hypothesis import note as hypothesis_note
    from hypothesis.errors import InvalidArgument

    try:
        hypothesis_note(text)
    except InvalidArgument:
        print(text)


# Outcome counts per module, printed at the end of the run (conftest.py).
STATS: dict = {}


REASONS: dict = {}


def count(module: str, outcome: str, msg: str = "") -> None:
    if msg and os.environ.get("NODEFLEET_PROPERTY_REASONS"):
        key = (module, msg.split(":", 1)[0])
        REASONS[key] = REASONS.get(key, 0) + 1
        if os.environ.get("NODEFLEET_PROPERTY_REASONS") == "2":
            print("REFUSED", module, msg[:300], file=sys.__stderr__)
    per = STATS.setdefault(module, {})
    per[outcome] = per.get(outcome, 0) + 1


# --------------------------------------------------------------------------- argument specs


class _Captured(BaseException):
    pass


def module_spec(module) -> dict:
    """The keyword arguments ``module.main()`` passes to AnsibleModule (argument_spec, ...)."""

    class Capture:
        def __init__(self, *args, **kwargs):
            raise _Captured(kwargs)

    original = module.AnsibleModule
    module.AnsibleModule = Capture
    try:
        with patch_module_args({}):
            module.main()
    except _Captured as captured:
        return captured.args[0]
    finally:
        module.AnsibleModule = original
    raise AssertionError("%s.main() did not build an AnsibleModule" % module.__name__)


def option_names(spec: dict) -> set[str]:
    """Every option and suboption name of an argument_spec (aliases included)."""
    names = set()
    for name, opt in spec.items():
        names.add(name)
        names.update(opt.get("aliases") or ())
        if opt.get("options"):
            names |= option_names(opt["options"])
    return names


# --------------------------------------------------------------------------- running a module


@dataclass
class Run:
    args: dict
    result: dict | None
    stdout: str
    stderr: str
    crash: str | None = None
    check: bool = False

    @property
    def failed(self) -> bool:
        return bool(self.result and self.result.get("failed"))


def run(module, args: dict, check: bool = False, diff: bool = True) -> Run:
    """``module.main()`` in-process with ``args``; never raises (a crash is recorded)."""
    full = dict(args, _ansible_check_mode=check, _ansible_diff=diff)
    out, err = io.StringIO(), io.StringIO()
    crash = None
    thread_crashes = []

    def excepthook(hook_args):  # a worker thread of the module died: that is a crash too
        thread_crashes.append("".join(traceback.format_exception(hook_args.exc_value)))

    previous_hook = threading.excepthook
    threading.excepthook = excepthook
    with patch_module_args(full), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            module.main()
        except SystemExit:
            pass
        except Exception:  # invariant (a) reports it
            crash = traceback.format_exc()
        finally:
            threading.excepthook = previous_hook
    if thread_crashes and crash is None:
        crash = "in a thread of the module:\n" + thread_crashes[0]
    stdout = out.getvalue()
    result = None
    start = stdout.find("{")
    if start >= 0:
        try:
            result = json.loads(stdout[start:])
        except ValueError:
            result = None
    return Run(args=args, result=result, stdout=stdout, stderr=err.getvalue(), crash=crash, check=check)


# --------------------------------------------------------------------------- snapshots


def snapshot(*roots: str) -> dict:
    """{path: (kind, mode, uid, gid, content sha256 | link target | None)} under ``roots`` (lstat, no follow)."""
    out = {}

    def record(path):
        try:
            st_ = os.lstat(path)
        except FileNotFoundError:
            out[path] = None
            return
        kind = stat.S_IFMT(st_.st_mode)
        extra = None
        if stat.S_ISREG(st_.st_mode):
            with open(path, "rb") as handle:
                extra = hashlib.sha256(handle.read()).hexdigest()
        elif stat.S_ISLNK(st_.st_mode):
            extra = os.readlink(path)
        out[path] = (kind, stat.S_IMODE(st_.st_mode), st_.st_uid, st_.st_gid, extra)

    for root in roots:
        record(root)
        if os.path.isdir(root) and not os.path.islink(root):
            for dirpath, dirnames, filenames in os.walk(root):
                for name in dirnames + filenames:
                    record(os.path.join(dirpath, name))
    return out


def snapshot_diff(before: dict, after: dict) -> list[str]:
    changes = []
    for path in sorted(set(before) | set(after)):
        if before.get(path) != after.get(path):
            changes.append("%s: %r -> %r" % (path, before.get(path), after.get(path)))
    return changes


# Paths outside the example directory whose attributes a module must never change.
WATCHED = ("/tmp", "/", "/etc", "/var", "/var/lib")


def watched_attrs() -> dict:
    out = {}
    for path in WATCHED:
        try:
            st_ = os.lstat(path)
            out[path] = (stat.S_IMODE(st_.st_mode), st_.st_uid, st_.st_gid)
        except FileNotFoundError:
            out[path] = None
    return out


# --------------------------------------------------------------------------- secrets


# Secrets are built from this alphabet (plus nasty characters between the runs), so any
# 8-character run of it in the output is a piece of a secret and never a coincidence.
SECRET_ALPHABET = "JKQVXZ"


def secret_pieces(secret: str, width: int = 8) -> set[str]:
    """Every ``width``-character window of ``secret`` made mostly of SECRET_ALPHABET runs."""
    pieces = set()
    for i in range(len(secret) - width + 1):
        window = secret[i : i + width]
        if sum(ch in SECRET_ALPHABET for ch in window) >= width - 2:
            pieces.add(window)
    if len(secret) < width and secret:
        pieces.add(secret)
    return pieces


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def leaks(text_sources: list[str], secrets: list[str], public=None) -> list[str]:
    """The pieces of ``secrets`` found in any of ``text_sources`` (raw and JSON-escaped forms).

    ``public``: the run's non-secret inputs; a piece that is also in one of them (the shrinker
    likes to make a path equal to a password) is not a leak when echoed."""
    found = []
    haystack = "\n".join(text_sources)
    public_text = "\n".join(_strings(public)) if public is not None else ""
    for secret in secrets:
        for piece in secret_pieces(secret):
            if piece in public_text:
                continue
            escaped = json.dumps(piece)[1:-1]
            if piece in haystack or escaped in haystack:
                found.append(piece)
    return sorted(set(found))


def leak_sources(result: Run) -> list[str]:
    sources = [result.stdout, result.stderr]
    if result.result is not None:
        sources.extend(_strings(result.result))
    if result.crash:
        sources.append(result.crash)
    return sources


# --------------------------------------------------------------------------- invariants


def names_option(msg: str, spec: dict) -> bool:
    """True when a failure message names one of the module's options."""
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", msg))
    return bool(words & option_names(spec))


def public_args(args: dict, spec: dict):
    """``args`` without the values of no_log options (at any depth of suboptions)."""
    if not isinstance(args, dict):
        return args
    out = {}
    for key, value in args.items():
        opt = spec.get(key) if isinstance(spec, dict) else None
        if isinstance(opt, dict) and opt.get("no_log"):
            continue
        sub = opt.get("options") if isinstance(opt, dict) else None
        if sub and isinstance(value, list):
            out[key] = [public_args(v, sub) for v in value]
        elif sub and isinstance(value, dict):
            out[key] = public_args(value, sub)
        else:
            out[key] = value
    return out


def check_outcome(
    result: Run,
    spec: dict,
    before: dict,
    after: dict,
    secrets=(),
    watched_before=None,
    runtime_failure=None,
    also_names=(),
) -> str:
    """Invariants (a), (b) and (d); returns "refused", "accepted" or "failed at run time" (a
    failure ``runtime_failure(msg)`` recognises as happening after validation, e.g. a program
    that did not start: its files are written). ``also_names``: paths a refusal may name instead
    of an option (the file the module owns). Raises AssertionError otherwise."""
    assert result.crash is None, "unhandled exception:\n%s" % result.crash
    assert result.result is not None, "no JSON result (MODULE FAILURE):\n%s\n%s" % (result.stdout, result.stderr)
    res = result.result
    assert "exception" not in res, "an exception was reported: %r" % res.get("exception")
    assert "Traceback (most recent call last)" not in result.stdout + result.stderr
    msg = str(res.get("msg", ""))
    assert "Read-only file system" not in json.dumps(res), (
        "the module tried to write outside /tmp (the host is read-only but /tmp): %s" % msg
    )
    if watched_before is not None:
        assert watched_attrs() == watched_before, "a system directory's mode/owner changed"
    found = leaks(leak_sources(result), list(secrets), public_args(result.args, spec))
    assert not found, "secret pieces in the output: %r" % found
    if res.get("failed"):
        assert msg, "failed without a message"
        if runtime_failure is not None and runtime_failure(msg):
            return "failed at run time"
        assert names_option(msg, spec) or any(name in msg for name in also_names), (
            "the failure message names no option: %r" % msg
        )
        changes = snapshot_diff(before, after)
        assert not changes, "refused (%s) but the tree changed:\n%s" % (msg, "\n".join(changes))
        return "refused"
    if result.check:
        changes = snapshot_diff(before, after)
        assert not changes, "check mode changed the tree:\n%s" % "\n".join(changes)
    return "accepted"


# --------------------------------------------------------------------------- a model of Core's parser

CORE_TRIM = " \t\r\n"  # common/args.cpp GetConfigOptions: TrimString(str, " \t\r\n")


def core_read(text: str) -> dict:
    """Core's GetConfigOptions as a model: lines end at '\\n' only (std::getline), '#' cuts the
    rest, lines/keys/values trimmed of space, tab, CR, LF; '[x]' starts section x; a line must be
    key=value and must not start with '-'. ValueError where Core refuses the file."""
    sections: dict = {"": []}
    current = ""
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.split("#", 1)[0].strip(CORE_TRIM)
        if not line:
            continue
        if line[0] == "[" and line[-1] == "]":
            current = line[1:-1]
            sections.setdefault(current, [])
        elif line[0] == "-" or "=" not in line:
            raise ValueError("parse error on line %d" % number)
        else:
            key, value = line.split("=", 1)
            if not key.strip(CORE_TRIM):
                raise ValueError("parse error on line %d (empty key)" % number)
            sections[current].append((key.strip(CORE_TRIM), value.strip(CORE_TRIM)))
    return sections


UNSAFE_IN_CONFIG = {chr(c) for c in range(0x20)} | {"\x7f"} | {chr(c) for c in range(0x80, 0xA0)} | {"\u2028", "\u2029"}


def assert_clean_config(text: str, what: str) -> None:
    """A written config text holds no control / line-break character but the "\n" that ends lines,
    and no line starts or ends with whitespace (every parser strips it)."""
    for number, line in enumerate(text.split("\n"), start=1):
        bad = sorted({c for c in line if c in UNSAFE_IN_CONFIG})
        assert not bad, "%s line %d holds %r: %r" % (what, number, bad, line)
        assert line == line.strip(" \t"), "%s line %d has whitespace at an end: %r" % (what, number, line)


# --------------------------------------------------------------------------- strategies

# Every C0 control, DEL, C1 NEL, the Unicode line/paragraph separators, and a few format
# characters that make a value look different from what it is.
CONTROL_CHARS = [chr(c) for c in range(0x20)] + ["\x7f", "\x85", "\u2028", "\u2029"]
OTHER_NASTY = ["\xa0", "\u200b", "\u202e", "\ufeff", "\x9b", "\u0085"]
SPECIAL_PIECES = [
    "#",
    ";",
    "%",
    "%%",
    "%(program_name)s",
    "%(ENV_HOME)s",
    "%(",
    "=",
    ":",
    "$",
    "..",
    "//",
    "/",
    " ",
    "\t",
    " #x",
    " ;x",
    "'",
    '"',
    "\\",
    "[",
    "]",
    "*",
    "${HOME}",
    "no",
    "-",
    ",",
]
LINE_INJECTIONS = [
    sep + payload
    for sep in ("\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")
    for payload in ("rpcallowip=0.0.0.0/0", "stopwaitsecs=99999", "HiddenServicePort 1 1.2.3.4:1", "[main]")
]

CLASSIC = ["\x00", "\n", "\r", "\t", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\u2028", "\u2029", "\x1c", "\x1e"]

nasty_piece = st.one_of(
    st.sampled_from(CLASSIC),
    st.sampled_from(CLASSIC),
    st.sampled_from(CONTROL_CHARS),
    st.sampled_from(OTHER_NASTY),
    st.sampled_from(SPECIAL_PIECES),
    st.sampled_from(LINE_INJECTIONS),
)


@st.composite
def mutated(draw, base):
    """A valid-looking value from ``base`` with nasty pieces inserted, whitespace at an end,
    or made very long."""
    value = draw(base)
    if not isinstance(value, str):
        value = str(value).lower() if isinstance(value, bool) else str(value)
    how = draw(
        st.sampled_from(
            ["insert", "insert", "insert", "prefix", "suffix", "suffix", "strip", "long", "empty", "random"]
        )
    )
    if how == "insert":
        for _ in range(draw(st.integers(1, 3))):
            pos = draw(st.integers(0, len(value)))
            value = value[:pos] + draw(nasty_piece) + value[pos:]
    elif how == "prefix":
        value = draw(st.sampled_from([" ", "\t", "\n", "\x0b", "#", ";", "\u2028"])) + value
    elif how == "suffix":
        value = value + draw(st.sampled_from(["\n", "\n", " ", "\t", "\r\n", "\x0c", "\x85", "#", ";", "\x00"]))
    elif how == "strip":
        value = " %s " % value
    elif how == "long":
        value = value + "a" * draw(st.sampled_from([200, 1000, 5000]))
    elif how == "empty":
        value = ""
    else:
        value = draw(st.text(alphabet=st.characters(codec="utf-8"), max_size=20))
    return value


@st.composite
def weighted(draw, *pairs):
    """One of several strategies, ``(weight, strategy)`` each (st.one_of would treat repeated
    branches as one). The first shrinks best: put the valid one first."""
    total = sum(weight for weight, _s in pairs)
    pick = draw(st.integers(0, total - 1))
    for weight, strategy in pairs:
        if pick < weight:
            return draw(strategy)
        pick -= weight
    raise AssertionError("unreachable")


def valid_or_nasty(valid, nasty_weight: int = 1):
    """Mostly valid values, sometimes mutated ones."""
    return weighted((3, valid), (nasty_weight, mutated(valid)))


BOUNDARY_INTS = st.one_of(
    st.sampled_from([-(2**63), -65536, -1, 0, 1, 2, 549, 550, 1023, 1024, 65535, 65536, 2**31, 2**63]),
    st.integers(-5, 70000),
)

SAFE_NAME_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
SAFE_NAME = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,10}\Z")


@st.composite
def secret_text(draw, nasty: bool = True):
    """A secret: runs of SECRET_ALPHABET (so pieces are recognisable), maybe nasty characters between."""
    runs = draw(st.lists(st.text(alphabet=SECRET_ALPHABET, min_size=8, max_size=14), min_size=1, max_size=3))
    if not nasty:
        return "".join(runs)
    seps = [
        draw(st.one_of(st.just(""), st.sampled_from(CONTROL_CHARS + OTHER_NASTY + ["%", "'", '"', " ;", " #", "="])))
        for _ in runs
    ]
    return "".join(sep + run for sep, run in zip(seps, runs))


# --------------------------------------------------------------------------- example directories


@dataclass
class ExampleDir:
    """One example's private tree: ``root`` with a victim dir, symlinks to it, a plain file."""

    root: str
    victim: str = field(init=False)

    def __post_init__(self):
        self.victim = os.path.join(self.root, "victim")
        os.mkdir(self.victim, 0o755)
        with open(os.path.join(self.victim, "precious"), "w", encoding="utf-8") as handle:
            handle.write("do not touch\n")
        os.chmod(os.path.join(self.victim, "precious"), 0o644)
        os.symlink(self.victim, os.path.join(self.root, "link"))
        with open(os.path.join(self.root, "plainfile"), "w", encoding="utf-8") as handle:
            handle.write("a file\n")

    def path(self, template: str) -> str:
        return template.replace("{root}", self.root)


@contextlib.contextmanager
def example_dir():
    base = tempfile.mkdtemp(prefix="ex-", dir="/tmp")
    try:
        yield ExampleDir(base)
    finally:
        import shutil

        # chmod back what a buggy module may have made unreadable, then remove.
        for dirpath, dirnames, _filenames in os.walk(base):
            for name in dirnames:
                with contextlib.suppress(OSError):
                    os.chmod(os.path.join(dirpath, name), 0o700)
        shutil.rmtree(base, ignore_errors=True)


# Path templates: {root} is the example directory. The sandbox makes the absolute system ones safe.
SYSTEM_PATHS = ["/", "//", "///", "/etc", "//etc", "/var/lib", "/var/lib/", "/tmp", "/usr/local", "/etc/tor"]


def dir_templates(leaf: str) -> st.SearchStrategy:
    """A directory option's value: mostly a fresh dir under the example, plus the tricky kinds."""
    good = st.sampled_from(["{root}/%s" % leaf, "{root}/d/%s" % leaf, "{root}/d/%s/" % leaf])
    tricky = st.sampled_from(
        [
            "{root}//%s" % leaf,
            "/{root}/%s" % leaf,
            "{root}/./%s" % leaf,
            "{root}/link",
            "{root}/link/%s" % leaf,
            "{root}/d/../victim",
            "{root}/plainfile",
            "{root}/plainfile/%s" % leaf,
            "{root}",
            "relative/%s" % leaf,
            "",
        ]
    )
    options = [(12, good), (2, tricky), (1, mutated(good))]
    if sandbox.ACTIVE:
        options.append((1, st.sampled_from(SYSTEM_PATHS)))
    return weighted(*options)


PRINTABLE = string.ascii_letters + string.digits


def substitute(value, ex, keys: bool = False):
    """``value`` with every ``{root}``-style template string made a path of example ``ex``
    (recursively through lists and dict values; dict keys too when ``keys``)."""
    if isinstance(value, str):
        return ex.path(value)
    if isinstance(value, list):
        return [substitute(v, ex, keys) for v in value]
    if isinstance(value, dict):
        return {(substitute(k, ex) if keys else k): substitute(v, ex, keys) for k, v in value.items()}
    return value
