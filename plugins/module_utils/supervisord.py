# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""supervisord helpers: an XML-RPC client and the pure render/parse of a [program:x] section.

The client speaks supervisord's XML-RPC interface the way supervisorctl does: plain
``xmlrpc.client`` over an ``http.client.HTTPConnection`` whose ``connect()`` opens an
AF_UNIX socket (``unix:///var/run/supervisor.sock``), or over TCP for ``http://`` URLs
(``[inet_http_server]``). Every socket operation has a timeout.

The renderer follows supervisor 4.2's own parser (``supervisor/options.py``):

- the file is read by ``RawConfigParser`` with ``inline_comment_prefixes=(';', '#')``, so a
  value must not contain whitespace followed by ``;`` or ``#`` and must not hold newlines;
- every value is then %-expanded (``%(program_name)s``, ``%(ENV_X)s``, ...), so a literal
  ``%`` is written ``%%``: the renderer escapes every ``%`` (values are literal, what
  supervisord reads back is what the user gave);
- the file is read in text mode (universal newlines: ``\n``, ``\r\n`` and ``\r`` end a
  line, nothing else), and every value is checked with ``common.check_line_value`` (no
  control or line-break character of any parser, no leading/trailing whitespace);
- ``command`` is split by ``shlex.split`` (POSIX mode) when the process is spawned; a
  command given as a list is quoted with ``shlex.quote`` so every word reads back as given;
- ``environment`` is split by ``supervisor.datatypes.dict_of_key_value_pairs``: a
  *non-POSIX* ``shlex`` (backslash is NOT an escape character; a quoted token keeps its
  quotes, which are then stripped with ``str.strip('\\'"')``). A value is therefore quoted
  with ``"`` (or ``'`` when it contains ``"``); a value containing both quote characters, or
  starting/ending with one, cannot be represented and is rejected.

Only the Python standard library may be imported here: this code runs on the managed host.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shlex
import socket
import time
import xmlrpc.client
from urllib.parse import urlsplit

from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import (
    ValidationError,
    check_abs_path,
    check_line_value,
    check_managed_dir,
    check_name,
    unsafe_char,
)

# Process states (supervisor/states.py).
STOPPED = "STOPPED"
STARTING = "STARTING"
RUNNING = "RUNNING"
BACKOFF = "BACKOFF"
STOPPING = "STOPPING"
EXITED = "EXITED"
FATAL = "FATAL"
UNKNOWN = "UNKNOWN"
# supervisor's RUNNING_STATES: stopProcess accepts these (BACKOFF included: it goes to STOPPED).
ACTIVE_STATES = (RUNNING, BACKOFF, STARTING)
STOPPED_STATES = (STOPPED, EXITED, FATAL, UNKNOWN)

# XML-RPC fault codes (supervisor/xmlrpc.py).
FAULT_BAD_NAME = 10
FAULT_NO_FILE = 20
FAULT_NOT_EXECUTABLE = 21
FAULT_SPAWN_ERROR = 50
FAULT_ALREADY_STARTED = 60
FAULT_NOT_RUNNING = 70
FAULT_ALREADY_ADDED = 90
FAULT_STILL_RUNNING = 91
FAULT_CANT_REREAD = 92

MASK = "********"
HEADER = "; Managed by nodefleet.bitcoin (supervisord_program); local edits are overwritten."

STOP_SIGNALS = ("TERM", "HUP", "INT", "QUIT", "KILL", "USR1", "USR2")
AUTORESTART_VALUES = ("true", "false", "unexpected")
# \Z, not $: "$" also matches before a trailing newline ("FOO\n", "50MB\n").
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
BYTES_RE = re.compile(r"^[0-9]+(KB|MB|GB)?\Z")
USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}\$?\Z")
# What a text-mode file read (configparser, supervisord) ends a line at: nothing else.
FILE_LINE_RE = re.compile(r"\r\n|\r|\n")
# Shortest piece of a secret that is masked wherever it appears (see scrub).
SECRET_PIECE = 8
# RawConfigParser(inline_comment_prefixes=(';', '#')) cuts a value at whitespace + ';'/'#'.
INLINE_COMMENT_RE = re.compile(r"\s[;#]")

# Program options in the order they are rendered, with their kind.
PROGRAM_OPTIONS = (
    ("command", "str"),
    ("directory", "str"),
    ("user", "str"),
    ("environment", "env"),
    ("numprocs", "int"),
    ("priority", "int"),
    ("autostart", "bool"),
    ("autorestart", "str"),
    ("startsecs", "int"),
    ("startretries", "int"),
    ("exitcodes", "intlist"),
    ("stopsignal", "str"),
    ("stopwaitsecs", "int"),
    ("stopasgroup", "bool"),
    ("killasgroup", "bool"),
    ("redirect_stderr", "bool"),
    ("stdout_logfile", "str"),
    ("stdout_logfile_maxbytes", "str"),
    ("stdout_logfile_backups", "int"),
    ("stderr_logfile", "str"),
)
PROGRAM_OPTION_NAMES = tuple(name for name, _kind in PROGRAM_OPTIONS)

# supervisord's own defaults, used when an option is not set (supervisor/options.py).
SUPERVISOR_DEFAULTS = {"autostart": True, "startsecs": 1, "startretries": 3, "stopwaitsecs": 10}


class SupervisorError(Exception):
    """supervisord could not be reached or refused a call; the message says why."""


# --------------------------------------------------------------------------- validation


def check_value(option: str, value: str) -> str:
    """Check a string that goes into a [program:x] value line (literally: ``%`` is escaped on render).

    Refuses what would not read back identically through supervisord's parser and the
    collection's: control and line-break characters, leading/trailing whitespace
    (``check_line_value``), and whitespace followed by ``;``/``#`` (an inline comment).
    """
    check_line_value(option, value)
    if INLINE_COMMENT_RE.search(value):
        raise ValidationError(
            option, "must not contain whitespace followed by ';' or '#' (supervisord reads it as a comment)"
        )
    return value


def escape_percent(value: str) -> str:
    """A literal value for supervisord's %-expansion."""
    return value.replace("%", "%%")


def command_line(value) -> str:
    """The command line for a ``command`` given as a string (verbatim) or a list of words (quoted)."""
    if isinstance(value, (list, tuple)):
        return " ".join(shlex.quote(word) for word in value)
    return value


def check_command(option: str, value):
    """A command as a string (a command line, split by supervisord with POSIX shlex) or a list of words.

    Returns the normalised value: a string stays a string (stripped), a list stays a list of
    strings; ``command_line()`` renders either.
    """
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValidationError(option, "must be a non-empty list of words")
        words = []
        for index, word in enumerate(value):
            if not isinstance(word, str) or not word:
                raise ValidationError(f"{option}[{index}]", f"{word!r} is not a non-empty string")
            bad = unsafe_char(word)
            if bad is not None:
                raise ValidationError(
                    f"{option}[{index}]", f"must not contain the control or line-break character {bad!r}"
                )
            words.append(word)
        line = command_line(words)
        check_value(option, line)
        result = words
    else:
        if not isinstance(value, str) or not value.strip():
            raise ValidationError(option, "must be a non-empty command line (a string) or a list of words")
        line = value.strip()
        check_value(option, line)
        result = line
    try:
        split = shlex.split(line)
    except ValueError as exc:
        raise ValidationError(option, f"cannot be split into words: {exc}") from None
    if not split or not split[0].startswith("/"):
        raise ValidationError(option, f"the first word must be an absolute path to the executable, got {line!r}")
    return result


def quote_env_value(key: str, value: str) -> str:
    """Quote one environment value for supervisor's environment= parser, or raise."""
    option = f"environment.{key}"
    check_line_value(option, value)  # its messages name the character, never the (secret) value
    if INLINE_COMMENT_RE.search(value):
        raise ValidationError(
            option, "value must not contain whitespace followed by ';' or '#' (supervisord reads it as a comment)"
        )
    if value[:1] in ("'", '"') or value[-1:] in ("'", '"'):
        raise ValidationError(option, "value must not start or end with a quote character (supervisord strips them)")
    if '"' not in value:
        quote = '"'
    elif "'" not in value:
        quote = "'"
    else:
        raise ValidationError(
            option, "value must not contain both ' and \" (supervisord's parser has no escape character)"
        )
    return quote + value.replace("%", "%%") + quote


def render_environment(environment: dict) -> str:
    """``KEY="value",...`` in key order, ready for supervisor's %-expansion and parser."""
    parts = []
    for key in sorted(environment):
        if not isinstance(key, str) or not ENV_KEY_RE.match(key):
            raise ValidationError("environment", f"{key!r} is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)")
        parts.append(f"{key}={quote_env_value(key, to_text(environment[key]))}")
    return ",".join(parts)


def parse_environment(text: str) -> dict:
    """Parse an ``environment=`` value exactly as supervisor does (expansion of ``%%`` included).

    Mirrors ``supervisor.datatypes.dict_of_key_value_pairs`` (a non-POSIX shlex) after
    supervisor's %-expansion; the unit tests compare both on the same input.
    """
    lexer = shlex.shlex(text.replace("%%", "%"))
    lexer.wordchars += "/.+-():"
    tokens = list(lexer)
    result = {}
    i = 0
    while i < len(tokens):
        k_eq_v = tokens[i : i + 3]
        if len(k_eq_v) != 3 or k_eq_v[1] != "=":
            raise ValueError(f"Unexpected end of key/value pairs in value {text!r}")
        result[k_eq_v[0]] = k_eq_v[2].strip("'\"")
        i += 4
    return result


def to_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value}"


def normalize_program(raw: dict, index: str | None = None) -> dict:
    """Validate one program's options and return them normalised (pure; raises ValidationError).

    ``raw`` holds the module options of one program (``None`` = not set). ``index`` is the
    prefix used in error messages for the batch form (e.g. ``programs[2]``).
    """

    def opt(name):
        return f"{index}.{name}" if index else name

    prog = dict(raw)
    check_name(opt("name"), prog.get("name"))
    state = prog.get("state") or "present"
    if state not in ("present", "started", "stopped", "restarted", "absent"):
        raise ValidationError(opt("state"), f"{state!r} is not one of present, started, stopped, restarted, absent")
    prog["state"] = state
    prog["conf_dir"] = check_managed_dir(opt("conf_dir"), prog.get("conf_dir") or "/etc/supervisor/conf.d")
    if state == "absent":
        return prog
    if prog.get("command") is None:
        raise ValidationError(opt("command"), f"is required when state is {state}")
    prog["command"] = check_command(opt("command"), prog["command"])
    if prog.get("directory") is not None:
        prog["directory"] = check_value(opt("directory"), check_abs_path(opt("directory"), prog["directory"]))
    if prog.get("user") is not None:
        user = to_text(prog["user"])
        if not isinstance(prog["user"], str) or not USER_RE.match(user):
            raise ValidationError(opt("user"), f"{user!r} is not a valid user name")
        import pwd

        try:
            pwd.getpwnam(user)
        except KeyError:
            raise ValidationError(opt("user"), f"no such user {user!r} on this host") from None
        prog["user"] = user
    env = prog.get("environment")
    if env is not None:
        if not isinstance(env, dict):
            raise ValidationError(opt("environment"), "must be a dict of variable name -> value")
        try:
            render_environment(env)
        except ValidationError as exc:
            raise ValidationError(opt(exc.option), exc.reason) from None
    for name, minimum in (
        ("numprocs", 1),
        ("priority", 0),
        ("startsecs", 0),
        ("startretries", 0),
        ("stopwaitsecs", 1),
        ("stdout_logfile_backups", 0),
    ):
        value = prog.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError(opt(name), f"{value!r} is not an integer")
        if value < minimum:
            raise ValidationError(opt(name), f"must be >= {minimum}, got {value}")
    if prog.get("numprocs") not in (None, 1):
        raise ValidationError(
            opt("numprocs"), "only 1 is supported (one process per program; declare one program per instance)"
        )
    if prog.get("autorestart") is not None:
        value = to_text(prog["autorestart"]).lower()
        if value not in AUTORESTART_VALUES:
            raise ValidationError(
                opt("autorestart"), "{!r} is not one of {}".format(prog["autorestart"], ", ".join(AUTORESTART_VALUES))
            )
        prog["autorestart"] = value
    if prog.get("stopsignal") is not None:
        value = to_text(prog["stopsignal"]).upper()
        value = value[3:] if value.startswith("SIG") else value
        if value not in STOP_SIGNALS:
            raise ValidationError(
                opt("stopsignal"), "{!r} is not one of {}".format(prog["stopsignal"], ", ".join(STOP_SIGNALS))
            )
        prog["stopsignal"] = value
    if prog.get("exitcodes") is not None:
        codes = prog["exitcodes"]
        if not isinstance(codes, list) or not codes:
            raise ValidationError(opt("exitcodes"), "must be a non-empty list of exit codes")
        for code in codes:
            if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 255:
                raise ValidationError(opt("exitcodes"), f"{code!r} is not an exit code (0-255)")
    if prog.get("stopasgroup") and prog.get("killasgroup") is False:
        raise ValidationError(opt("killasgroup"), "cannot be false when stopasgroup is true (supervisord refuses it)")
    if prog.get("redirect_stderr") and prog.get("stderr_logfile") is not None:
        raise ValidationError(
            opt("stderr_logfile"), "must not be set with redirect_stderr=true (supervisord ignores it then)"
        )
    for name in ("stdout_logfile", "stderr_logfile"):
        value = prog.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ValidationError(opt(name), f"{value!r} is not a string")
        if value.upper() in ("NONE", "AUTO"):
            prog[name] = value.upper()
        else:
            prog[name] = check_value(opt(name), check_abs_path(opt(name), value))
    if prog.get("stdout_logfile_maxbytes") is not None:
        value = to_text(prog["stdout_logfile_maxbytes"]).upper()
        check_line_value(opt("stdout_logfile_maxbytes"), value)
        if not BYTES_RE.match(value):
            raise ValidationError(
                opt("stdout_logfile_maxbytes"), f"{value!r} is not a byte size like 50MB, 1024KB or 0"
            )
        prog["stdout_logfile_maxbytes"] = value
    return prog


# --------------------------------------------------------------------------- render / parse


def render_program(prog: dict) -> str:
    """The whole conf.d file for one program: header, section, the options that are set."""
    lines = [HEADER, "[program:{}]".format(prog["name"])]
    for name, kind in PROGRAM_OPTIONS:
        value = prog.get(name)
        if value is None:
            continue
        if kind == "env":
            text = render_environment(value)
        elif kind == "bool":
            text = "true" if value else "false"
        elif kind == "intlist":
            text = ",".join(str(code) for code in value)
        elif name == "command":
            text = escape_percent(command_line(value))
        elif name in ("stdout_logfile", "stderr_logfile"):
            # supervisord %-expands log file names twice (saneget, then with the process's expansions)
            text = escape_percent(escape_percent(to_text(value)))
        else:
            text = escape_percent(to_text(value))
        lines.append(f"{name}={text}")
    return "\n".join(lines) + "\n"


def parse_program(text: str) -> dict:
    """Parse a conf.d file: ``{section_name: {option: raw value}}`` (comments skipped).

    A minimal reader for the files this module writes (and hand-written ones of the same
    shape): enough to find a program's sections and its environment line. Values are raw,
    as written in the file (not %-expanded).

    Lines end where a text-mode file read ends them (``\n``, ``\r\n``, ``\r``) and nowhere
    else: ``str.splitlines`` would also split at ``\x0b \x0c \x1c-\x1e \x85 \u2028 \u2029``,
    which supervisord keeps inside a value.
    """
    sections: dict = {}
    current = None
    for line in FILE_LINE_RE.split(text):
        stripped = line.strip()
        if not stripped or stripped[0] in ";#":
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            current = sections.setdefault(stripped[1:-1].strip(), {})
            continue
        if current is None:
            continue
        sep = min((i for i in (stripped.find("="), stripped.find(":")) if i > 0), default=-1)
        if sep < 0:
            continue
        value = stripped[sep + 1 :].strip()
        match = INLINE_COMMENT_RE.search(value)
        if match:
            value = value[: match.start()].rstrip()
        current[stripped[:sep].strip().lower()] = value
    return sections


# Options supervisord only reads when the process is next spawned, stopped or exits (or at its own
# start-up): a change limited to these need not restart a running program. supervisord still
# keeps the loaded values in memory until the group is re-added (removeProcessGroup +
# addProcessGroup, which restarts the process), so such a change is written and left
# *pending* (see supervisord_program's reload_when).
SOFT_OPTIONS = (
    "priority",
    "autostart",
    "autorestart",
    "startsecs",
    "startretries",
    "exitcodes",
    "stopsignal",
    "stopwaitsecs",
    "stdout_logfile_maxbytes",
    "stdout_logfile_backups",
)
# A comment the module writes into a program file whose settings supervisord has not loaded
# yet: what is loaded (a digest of every other option, the raw values of SOFT_OPTIONS).
LOADED_MARKER = "; nodefleet-loaded: "


def program_options(text: str | None) -> dict | None:
    """The raw options of the single ``[program:x]`` section of a file (None: no file or no section)."""
    if text is None:
        return None
    sections = [opts for name, opts in parse_program(text).items() if name.startswith("program:")]
    return dict(sections[0]) if len(sections) == 1 else None


def hard_digest(options: dict) -> str:
    """Digest of the options a change of which needs the group re-added (all but SOFT_OPTIONS)."""
    hard = {k: v for k, v in sorted(options.items()) if k not in SOFT_OPTIONS}
    return hashlib.sha256(json.dumps(hard, sort_keys=True).encode("utf-8")).hexdigest()[:32]


def loaded_state(options: dict) -> dict:
    """What supervisord has loaded, in the marker's form, for a file it has loaded as it is."""
    return {"hard": hard_digest(options), "soft": {k: options[k] for k in SOFT_OPTIONS if k in options}}


def read_marker(text: str | None) -> dict | None:
    """The loaded state recorded in a program file by a deferred change, None when there is none."""
    for line in FILE_LINE_RE.split(text or ""):
        if line.startswith(LOADED_MARKER):
            try:
                data = json.loads(line[len(LOADED_MARKER) :])
            except ValueError:
                return None
            if isinstance(data, dict) and isinstance(data.get("hard"), str) and isinstance(data.get("soft"), dict):
                return data
            return None
    return None


def render_marker(loaded: dict) -> str:
    return LOADED_MARKER + json.dumps(
        {"hard": loaded["hard"], "soft": {k: loaded["soft"][k] for k in sorted(loaded["soft"])}},
        sort_keys=True,
        separators=(",", ":"),
    )


def with_marker(text: str, loaded: dict | None) -> str:
    """``text`` (render_program's output) with the loaded-state comment after the header line."""
    if loaded is None:
        return text
    header, _sep, rest = text.partition("\n")
    return f"{header}\n{render_marker(loaded)}\n{rest}"


def soft_changes(loaded: dict, wanted: dict) -> tuple:
    """(hard changed?, sorted soft option names that differ) between a loaded state and wanted options."""
    target = loaded_state(wanted)
    soft = sorted(k for k in SOFT_OPTIONS if loaded["soft"].get(k) != target["soft"].get(k))
    return loaded["hard"] != target["hard"], soft


def _environment_of(text: str | None) -> dict | None:
    """The parsed environment of every section in a conf.d file (None if unparsable)."""
    if not text:
        return {}
    result = {}
    for section, options in parse_program(text).items():
        if "environment" in options:
            try:
                result[section] = parse_environment(options["environment"])
            except ValueError:
                return None
    return result


def _env_keys_masked(value: str) -> str:
    try:
        env = parse_environment(value.strip())
    except ValueError:
        return MASK
    if not all(ENV_KEY_RE.match(k) for k in env):
        return MASK
    return ",".join(f'{k}="{MASK}"' for k in sorted(env))


def mask_text(text: str | None, secrets=()) -> str | None:
    """``text`` with every environment line replaced by ``KEY="********",...`` (for diffs and logs).

    The text is cut at ``\n`` only (never ``str.splitlines``), so a physical line is masked as
    a whole whatever it holds; continuation lines of an environment value (lines starting
    with whitespace, as configparser reads them) are masked too; a line that cannot be read
    as an environment value is masked completely. ``secrets`` are then scrubbed (``scrub``).
    """
    if text is None:
        return None
    out = []
    in_env = False
    for line in text.split("\n"):
        seps = [i for i in (line.find("="), line.find(":")) if i > 0]
        sep = min(seps) if seps else -1
        key, value = (line[:sep], line[sep + 1 :]) if sep > 0 else (line, "")
        if in_env and line[:1].isspace() and line.strip():
            out.append(" " + MASK)
            continue
        in_env = False
        if sep > 0 and key.strip().lower() == "environment":
            out.append(f"{key.rstrip()}={_env_keys_masked(value)}")
            in_env = True
            continue
        out.append(line)
    return scrub("\n".join(out), secrets)


def masked_diff(path: str, before: str | None, after: str | None, secrets=()) -> dict:
    """A diff dict that never holds an environment value.

    Values are masked on both sides; when only values changed, the masked texts would be
    equal, so a comment naming the changed variables (never their values) is added to
    ``after``.
    """
    before_masked = mask_text(before, secrets)
    after_masked = mask_text(after, secrets)
    if before is not None and after is not None and before != after:
        env_before, env_after = _environment_of(before), _environment_of(after)
        if env_before is None or env_after is None:
            changed_keys = ["(unparsable)"]
        else:
            changed_keys = []
            for section in sorted(set(env_before) | set(env_after)):
                old, new = env_before.get(section, {}), env_after.get(section, {})
                changed_keys.extend(k for k in sorted(set(old) & set(new)) if old[k] != new[k])
        if changed_keys:
            after_masked += "; environment value changed: {} (values not shown)\n".format(", ".join(changed_keys))
    return {
        "before": before_masked or "",
        "after": after_masked or "",
        "before_header": path if before is not None else f"{path} (absent)",
        "after_header": path if after is not None else f"{path} (absent)",
    }


def scrub(text: str, secrets) -> str:
    """``text`` with every secret and every piece of one of SECRET_PIECE (8) or more characters masked.

    A log tail is a window cut at a byte offset, so a secret at its edge shows up only in
    part; masking every 8-character substring of every secret wherever it occurs covers
    those parts too (and a secret split across two messages). A secret shorter than that is
    masked where it occurs whole. Overlapping matches are merged into one mask.
    """
    if not text:
        return text
    covered = bytearray(len(text))
    for secret in {f"{s}" for s in secrets if f"{s}"}:
        pieces = (
            {secret}
            if len(secret) <= SECRET_PIECE
            else {secret[i : i + SECRET_PIECE] for i in range(len(secret) - SECRET_PIECE + 1)}
        )
        for piece in pieces:
            start = text.find(piece)
            while start >= 0:
                covered[start : start + len(piece)] = b"\x01" * len(piece)
                start = text.find(piece, start + 1)
    if not any(covered):
        return text
    out = []
    index = 0
    while index < len(text):
        if covered[index]:
            while index < len(text) and covered[index]:
                index += 1
            out.append(MASK)
        else:
            out.append(text[index])
            index += 1
    return "".join(out)


# supervisord's main log: "2026-12-01 21:50:00,123 WARN exited: NAME (exit status 1; not expected)"
# and "... exited: NAME (terminated by SIGKILL; not expected)" (process.py, ProcessStates.EXITED/BACKOFF).
LOG_TIME_RE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:,(\d{1,6}))?\s")


def log_line_time(line: str):
    """Epoch seconds of a supervisord log line (its local-time timestamp), None without one."""
    match = LOG_TIME_RE.match(line)
    if not match:
        return None
    try:
        seconds = time.mktime(time.strptime(match.group(1), "%Y-%m-%d %H:%M:%S"))
    except (ValueError, OverflowError):
        return None
    fraction = match.group(2)
    return seconds + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


def unexpected_exit_lines(log_text: str | None, program: str, since: float | None = None) -> list | None:
    """Lines of supervisord's main log recording an unexpected exit of ``program`` at or after ``since``.

    Counts ``exited: NAME (...; not expected)``: a non-zero (or not-listed) exit status and
    every death by a signal supervisord did not send. Not counted: ``exited: ... expected``,
    ``stopped: ...`` (a stop asked for, by this module or anyone), spawns. ``since`` is epoch
    seconds (None: the whole text). None when there is no log text.
    """
    if log_text is None:
        return None
    needle = f"exited: {program} ("
    found = []
    for line in log_text.split("\n"):
        if needle not in line or not line.rstrip().endswith("; not expected)"):
            continue
        if since is not None:
            when = log_line_time(line)
            if when is None or when < since:
                continue
        found.append(line.rstrip("\r"))
    return found


def log_lines_about(log_text: str | None, program: str, limit: int = 10) -> list:
    """The last ``limit`` lines of the main log that name ``program`` (spawned/exited/gave up/...)."""
    if not log_text:
        return []
    needles = (f" {program} (", f"'{program}'", f": {program} ")
    lines = [line.rstrip("\r") for line in log_text.split("\n") if any(n in line for n in needles)]
    return lines[-limit:]


def count_restarts(log_text: str, program: str):
    """Restarts of ``program`` in supervisord's main log since supervisord last started.

    Spawn lines (``spawned: 'NAME' with pid N``) after the last ``supervisord started`` line,
    minus one; None when the program was never spawned in that window.
    """
    if log_text is None:
        return None
    lines = log_text.splitlines()
    start = 0
    for index, line in enumerate(lines):
        if "supervisord started with pid" in line:
            start = index
    needle = f"spawned: '{program}' with pid"
    spawns = sum(1 for line in lines[start:] if needle in line)
    return max(spawns - 1, 0) if spawns else None


# --------------------------------------------------------------------------- XML-RPC client


class UnixStreamHTTPConnection(http.client.HTTPConnection):
    """An HTTPConnection to an AF_UNIX socket (what supervisorctl uses for unix:// URLs)."""

    def __init__(self, socket_path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class TimeoutTransport(xmlrpc.client.Transport):
    """xmlrpc Transport with a bounded timeout, over TCP or an AF_UNIX socket."""

    def __init__(self, timeout: float, socket_path: str | None = None):
        super().__init__()
        self.timeout = timeout
        self.socket_path = socket_path

    def make_connection(self, host):
        if self._connection and host == self._connection[0]:
            return self._connection[1]
        if self.socket_path is not None:
            conn = UnixStreamHTTPConnection(self.socket_path, self.timeout)
        else:
            conn = super().make_connection(host)
            conn.timeout = self.timeout
        self._connection = host, conn
        return conn


class TimeoutSafeTransport(xmlrpc.client.SafeTransport):
    """xmlrpc SafeTransport (https) with a bounded timeout."""

    def __init__(self, timeout: float):
        super().__init__()
        self.timeout = timeout

    def make_connection(self, host):
        conn = super().make_connection(host)
        conn.timeout = self.timeout
        return conn


def parse_server_url(url: str) -> tuple:
    """``(uri, socket_path)`` for ServerProxy; raises ValidationError for unusable URLs."""
    if not isinstance(url, str) or not url:
        raise ValidationError("server_url", "must be unix:///path/to/supervisor.sock or http://host:port")
    if url.startswith("unix://"):
        path = url[len("unix://") :]
        if not path.startswith("/"):
            raise ValidationError("server_url", f"{url!r}: the socket path must be absolute (unix:///...)")
        return "http://localhost/RPC2", path
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("server_url", f"{url!r} is neither unix:///path nor http(s)://host:port")
    path = parts.path if parts.path not in ("", "/") else "/RPC2"
    return f"{parts.scheme}://{parts.netloc}{path}", None


class SupervisorClient:
    """A thin, timeout-bounded client for supervisord's ``supervisor.*`` XML-RPC namespace."""

    def __init__(self, server_url: str, timeout: float = 30.0):
        self.server_url = server_url
        uri, socket_path = parse_server_url(server_url)
        if socket_path is not None:
            transport = TimeoutTransport(timeout, socket_path)
        elif uri.startswith("https:"):
            transport = TimeoutSafeTransport(timeout)
        else:
            transport = TimeoutTransport(timeout)
        self._proxy = xmlrpc.client.ServerProxy(uri, transport=transport, allow_none=False)

    def call(self, method: str, *args):
        """Call ``supervisor.<method>``; xmlrpc.client.Fault passes through, I/O errors become SupervisorError."""
        try:
            return getattr(self._proxy.supervisor, method)(*args)
        except xmlrpc.client.Fault:
            raise
        except xmlrpc.client.ProtocolError as exc:
            raise SupervisorError(f"{self.server_url}: HTTP {exc.errcode} {exc.errmsg}") from None
        except (OSError, http.client.HTTPException) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc.__class__.__name__
            if isinstance(exc, socket.timeout):
                reason = "timed out"
            raise SupervisorError(f"{self.server_url}: {reason}") from None

    def close(self):
        self._proxy("close")()

    # Convenience wrappers -------------------------------------------------------------
    def check_running(self) -> None:
        """Raise SupervisorError unless supervisord answers and is RUNNING."""
        state = self.call("getState")
        if state.get("statename") != "RUNNING":
            raise SupervisorError("{}: supervisord is {}, not RUNNING".format(self.server_url, state.get("statename")))

    def process_infos(self) -> dict:
        """``{group: [process info, ...]}`` for every loaded group."""
        groups: dict = {}
        for info in self.call("getAllProcessInfo"):
            groups.setdefault(info["group"], []).append(info)
        return groups

    def reload_config(self) -> tuple:
        """reloadConfig() -> (added, changed, removed) group name lists."""
        result = self.call("reloadConfig")
        added, changed, removed = result[0]
        return list(added), list(changed), list(removed)

    def main_log_tail(self, length: int) -> str | None:
        """The last ``length`` bytes of supervisord's main log (readLog), None when it has none."""
        try:
            return self.call("readLog", -length, 0)
        except xmlrpc.client.Fault:
            return None

    def log_tail(self, namespec: str, length: int = 2000) -> str:
        """The last ``length`` bytes of the process's stderr and stdout logs (best effort)."""
        parts = []
        for channel in ("Stderr", "Stdout"):
            try:
                data = self.call(f"tailProcess{channel}Log", namespec, 0, length)[0]
            except (xmlrpc.client.Fault, SupervisorError):
                continue
            if data.strip():
                parts.append(f"{channel.lower()}: {data.strip()[-length:]}")
        return " | ".join(parts)


def wait_for(predicate, timeout: float, interval: float = 0.2, clock=time.monotonic, sleep=time.sleep):
    """Call ``predicate()`` until it returns a truthy value or ``timeout`` seconds passed.

    Returns the last value (falsy on timeout). Bounded: at least one call, never longer than
    ``timeout`` plus one interval.
    """
    deadline = clock() + timeout
    while True:
        value = predicate()
        if value or clock() >= deadline:
            return value
        sleep(interval)


def conf_file_for(prog: dict) -> str:
    return os.path.join(prog["conf_dir"], "{}.conf".format(prog["name"]))
