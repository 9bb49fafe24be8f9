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
  ``%`` is written ``%%``;
- ``environment`` is split by ``supervisor.datatypes.dict_of_key_value_pairs``: a
  *non-POSIX* ``shlex`` (backslash is NOT an escape character; a quoted token keeps its
  quotes, which are then stripped with ``str.strip('\\'"')``). A value is therefore quoted
  with ``"`` (or ``'`` when it contains ``"``); a value containing both quote characters, or
  starting/ending with one, cannot be represented and is rejected.

Only the Python standard library may be imported here: this code runs on the managed host.
"""

from __future__ import annotations

import http.client
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
    check_name,
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
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
BYTES_RE = re.compile(r"^[0-9]+(KB|MB|GB)?$")
USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}\$?$")
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


class _AnyExpansion(dict):
    """Mapping used to check a value's %-expansion syntax without knowing supervisor's names."""

    def __missing__(self, key):
        return 0


def check_value(option: str, value: str) -> str:
    """Check a string that goes verbatim into a [program:x] value line."""
    if "\n" in value or "\r" in value or "\x00" in value:
        raise ValidationError(option, "must not contain newline or NUL characters")
    if value != value.strip():
        raise ValidationError(option, "must not start or end with whitespace")
    if INLINE_COMMENT_RE.search(value):
        raise ValidationError(
            option, "must not contain whitespace followed by ';' or '#' (supervisord reads it as a comment)"
        )
    try:
        value % _AnyExpansion()
    except (ValueError, TypeError) as exc:
        raise ValidationError(
            option,
            f"is not a valid supervisord expansion string ({exc}); write a literal '%' as '%%'",
        ) from None
    return value


def check_command(option: str, value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(option, "must be a non-empty command line")
    value = value.strip()
    check_value(option, value)
    try:
        words = shlex.split(value)
    except ValueError as exc:
        raise ValidationError(option, f"cannot be split into words: {exc}") from None
    if not words or not words[0].startswith("/"):
        raise ValidationError(option, f"the first word must be an absolute path to the executable, got {value!r}")
    return value


def quote_env_value(key: str, value: str) -> str:
    """Quote one environment value for supervisor's environment= parser, or raise."""
    option = f"environment.{key}"
    if "\n" in value or "\r" in value or "\x00" in value:
        raise ValidationError(option, "value must not contain newline or NUL characters")
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
    prog["conf_dir"] = check_abs_path(opt("conf_dir"), prog.get("conf_dir") or "/etc/supervisor/conf.d")
    if state == "absent":
        return prog
    if prog.get("command") is None:
        raise ValidationError(opt("command"), f"is required when state is {state}")
    prog["command"] = check_command(opt("command"), prog["command"])
    if prog.get("directory") is not None:
        prog["directory"] = check_value(opt("directory"), check_abs_path(opt("directory"), prog["directory"]))
    if prog.get("user") is not None:
        user = to_text(prog["user"])
        if not USER_RE.match(user):
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
    for name in ("stdout_logfile", "stderr_logfile"):
        value = prog.get(name)
        if value is None:
            continue
        if value.upper() in ("NONE", "AUTO"):
            prog[name] = value.upper()
        else:
            prog[name] = check_value(opt(name), check_abs_path(opt(name), value))
    if prog.get("stdout_logfile_maxbytes") is not None:
        value = to_text(prog["stdout_logfile_maxbytes"]).upper()
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
        else:
            text = to_text(value)
        lines.append(f"{name}={text}")
    return "\n".join(lines) + "\n"


def parse_program(text: str) -> dict:
    """Parse a conf.d file: ``{section_name: {option: raw value}}`` (comments skipped).

    A minimal reader for the files this module writes (and hand-written ones of the same
    shape): enough to find a program's sections and its environment line. Values are raw,
    as written in the file (not %-expanded).
    """
    sections: dict = {}
    current = None
    for line in text.splitlines():
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


def mask_text(text: str | None) -> str | None:
    """``text`` with every environment value replaced by ``********`` (for diffs and logs)."""
    if text is None:
        return None
    out = []
    for line in text.splitlines(True):
        key, sep, value = line.partition("=")
        if sep and key.strip().lower() == "environment":
            ending = "\n" if line.endswith("\n") else ""
            try:
                env = parse_environment(value.strip())
                masked = ",".join(f'{k}="{MASK}"' for k in sorted(env))
            except ValueError:
                masked = MASK
            line = f"{key.rstrip()}={masked}{ending}"
        out.append(line)
    return "".join(out)


def masked_diff(path: str, before: str | None, after: str | None) -> dict:
    """A diff dict that never holds an environment value.

    Values are masked on both sides; when only values changed, the masked texts would be
    equal, so a comment naming the changed variables (never their values) is added to
    ``after``.
    """
    before_masked = mask_text(before)
    after_masked = mask_text(after)
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
    """Replace every secret value in ``text`` by the mask (for log tails in error messages)."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


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
