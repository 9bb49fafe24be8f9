# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared helpers for nodefleet.bitcoin modules.

One place for: input validation that names the option and the reason, and the
check/diff/atomic-write pattern every file-writing module uses (read current content,
compute the new content, build a diff only when asked, write through a temp file in the
same directory and rename, then set owner/group/mode).

Only the Python standard library and ansible.module_utils may be imported here: this code
runs on the managed host.
"""

from __future__ import annotations

import os
import re
import tempfile

# Instance / program / service names: they become file names, section names and
# supervisord group names, so they must be safe everywhere.
# \Z, not $: "$" also matches before a trailing newline, which would let "name\n" through.
SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")

NETWORKS = ("main", "test", "testnet4", "signet", "regtest")


class ValidationError(Exception):
    """Invalid module input; the message names the option and the reason."""

    def __init__(self, option: str, reason: str):
        self.option = option
        self.reason = reason
        super().__init__("%s: %s" % (option, reason))


def check_name(option: str, value: str) -> str:
    """Return ``value`` if it is a safe identifier, else raise ValidationError."""
    if not isinstance(value, str) or not SAFE_NAME_RE.match(value):
        raise ValidationError(
            option,
            "%r is not a safe name (1-64 characters: letters, digits, '_' and '-', "
            "starting with a letter or digit)" % (value,),
        )
    return value


# Characters that end a line for some parser that reads what the collection writes:
# bitcoind (std::getline: "\n"), supervisord/configparser and the collection's own parsers
# (str.splitlines: also \r \v \f \x1c-\x1e \x85 \u2028 \u2029). A value holding one
# would be read back as two lines by one of them.
LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")

# Directories a module must never take over (create files in, chown or chmod) because a
# typo in a path option pointed at them.
SYSTEM_DIRS = frozenset(
    {
        "/",
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/home",
        "/lib",
        "/lib32",
        "/lib64",
        "/libx32",
        "/media",
        "/mnt",
        "/opt",
        "/proc",
        "/root",
        "/run",
        "/sbin",
        "/srv",
        "/sys",
        "/tmp",  # noqa: S108 - refused, not used
        "/usr",
        "/usr/bin",
        "/usr/lib",
        "/usr/lib64",
        "/usr/libexec",
        "/usr/local",
        "/usr/local/bin",
        "/usr/local/lib",
        "/usr/local/sbin",
        "/usr/sbin",
        "/usr/share",
        "/usr/src",
        "/var",
        "/var/backups",
        "/var/cache",
        "/var/lib",
        "/var/local",
        "/var/lock",
        "/var/log",
        "/var/mail",
        "/var/opt",
        "/var/run",
        "/var/spool",
        "/var/tmp",  # noqa: S108 - refused, not used
        "/etc/systemd",
        "/etc/supervisor",
        "/etc/tor",
        "/etc/default",
        "/etc/cron.d",
        "/etc/sudoers.d",
        "/etc/tmpfiles.d",
        "/etc/ssh",
        "/etc/security",
        "/etc/pam.d",
    }
)


def unsafe_char(value: str) -> str | None:
    """The first character of ``value`` that must not reach a config line or a path, or None.

    Refused: every control character (C0, DEL, C1 — NUL, tab, ESC and the line breaks above
    among them), the Unicode line and paragraph separators, and other format characters
    (bidi overrides, zero-width) that make a value read differently from how it looks.
    """
    import unicodedata

    for char in value:
        if char in LINE_BREAKS or unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"):
            return char
    return None


def check_line_value(option: str, value: str, *, allow_empty: bool = True) -> str:
    """Return ``value`` if it can be written on one config line and read back identically.

    Refuses any control or line-break character (see ``unsafe_char``) and leading or trailing
    whitespace (bitcoind and supervisord strip it, so it would not read back the same).
    """
    if not isinstance(value, str):
        raise ValidationError(option, "%r is not a string" % (value,))
    if not value and not allow_empty:
        raise ValidationError(option, "must not be empty")
    bad = unsafe_char(value)
    if bad is not None:
        raise ValidationError(option, "must not contain the control or line-break character %r" % bad)
    if value != value.strip(" \t\n\r\x0b\x0c"):
        raise ValidationError(option, "must not start or end with whitespace")
    return value


# RPC user names: they end up in rpcauth=<user>:<salt>$<hash> lines and in HTTP basic auth.
# Printable, no whitespace, none of ':' (the rpcauth / basic-auth separator), '#' (comment
# start for bitcoind) or '=' (key/value separator). \Z, not $, so "user\n" is refused.
RPC_USER_RE = re.compile(r"^[!-~]{1,64}\Z")
RPC_USER_FORBIDDEN = frozenset(":#=")


def check_rpc_user(option: str, value: str) -> str:
    """Return ``value`` if it is a safe RPC user name, else raise ValidationError.

    1-64 printable ASCII characters without whitespace, control characters, ':', '#' or '='.
    """
    if not isinstance(value, str) or not value:
        raise ValidationError(option, "must be a non-empty string")
    bad = unsafe_char(value)
    if bad is not None:
        raise ValidationError(option, "must not contain the control or line-break character %r" % bad)
    if any(char.isspace() for char in value):
        raise ValidationError(option, "%r must not contain whitespace" % (value,))
    forbidden = sorted(set(value) & RPC_USER_FORBIDDEN)
    if forbidden:
        raise ValidationError(option, "%r must not contain %r" % (value, "".join(forbidden)))
    if not RPC_USER_RE.match(value):
        raise ValidationError(option, "%r is not a valid RPC user name (1-64 printable ASCII characters)" % (value,))
    return value


def check_abs_path(option: str, value: str) -> str:
    """Return a normalised absolute path, rejecting relative paths and '..' components.

    Control characters (tab, ESC, DEL, NUL, any line break) are refused, and the result is
    normalised with a single leading slash (``//`` is not a way around the root check).
    """
    if not isinstance(value, str) or not value:
        raise ValidationError(option, "must be a non-empty absolute path")
    bad = unsafe_char(value)
    if bad is not None:
        raise ValidationError(option, "must not contain the control or line-break character %r" % bad)
    if not value.startswith("/"):
        raise ValidationError(option, "%r is not an absolute path" % (value,))
    if ".." in value.split("/"):
        raise ValidationError(option, "%r must not contain '..' components" % (value,))
    # normpath keeps a leading "//" (POSIX allows it a meaning); no path option wants that.
    normalised = "/" + os.path.normpath(value).lstrip("/")
    if normalised == "/":
        raise ValidationError(option, "must not be the filesystem root")
    return normalised


def check_managed_dir(option: str, value: str) -> str:
    """``check_abs_path`` for a directory the module creates, owns or chowns.

    Also refuses system directories (``/etc``, ``/var/lib``, ``/usr`` ...) and paths with
    whitespace, which no daemon's directory needs and which split unquoted command lines.
    """
    path = check_abs_path(option, value)
    if path in SYSTEM_DIRS:
        raise ValidationError(option, "%s is a system directory; refusing to manage it" % path)
    if any(char.isspace() for char in path):
        raise ValidationError(option, "%r must not contain whitespace" % (path,))
    return path


def check_port(option: str, value: int) -> int:
    """Return ``value`` if it is a TCP port usable by an unprivileged daemon (1024-65535)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(option, "%r is not an integer port" % (value,))
    if not 1024 <= value <= 65535:
        raise ValidationError(option, "port %d is outside 1024-65535" % value)
    return value


def check_unique_ports(ports: dict[str, int]) -> None:
    """Raise when two named ports are the same number; ``ports`` maps option -> port."""
    seen: dict[int, str] = {}
    for option, port in ports.items():
        if port is None:
            continue
        if port in seen:
            raise ValidationError(
                option, "port %d is also used by %s; every port must be distinct" % (port, seen[port])
            )
        seen[port] = option


def read_text(path: str) -> str | None:
    """Return the file's text, or None when it does not exist."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def file_diff(path: str, before: str | None, after: str | None) -> dict:
    """A diff dict in the shape Ansible's callbacks render."""
    return {
        "before": before or "",
        "after": after or "",
        "before_header": path if before is not None else "%s (absent)" % path,
        "after_header": path if after is not None else "%s (absent)" % path,
    }


def write_file_atomic(module, path: str, content: str | bytes, owner=None, group=None, mode=None) -> None:
    """Write ``content`` to ``path`` atomically with explicit ownership and mode.

    The temp file is created in the destination directory (so the rename is atomic on the
    same filesystem), made private before any byte is written, then moved into place with
    ``module.atomic_move``. Nothing is left behind on failure.
    """
    directory = os.path.dirname(path) or "."
    data = content.encode("utf-8") if isinstance(content, str) else content
    fd, tmp_path = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        module.atomic_move(tmp_path, path, unsafe_writes=False)
    except BaseException:
        if os.path.exists(tmp_path):
            os.unlink(tmp_path)
        raise
    set_attributes(module, path, owner, group, mode)


def set_attributes(module, path: str, owner=None, group=None, mode=None, changed: bool = False) -> bool:
    """Apply owner/group/mode to ``path``; return True if anything changed."""
    file_args = {
        "path": path,
        "owner": owner,
        "group": group,
        "mode": mode,
        "attributes": None,
        "secontext": [None, None, None],
        "seuser": None,
        "serole": None,
        "setype": None,
        "selevel": None,
    }
    return module.set_fs_attributes_if_different(file_args, changed)


def attributes_differ(path: str, owner=None, group=None, mode=None) -> bool:
    """True when an existing path's owner, group or mode differ from what is wanted.

    Used to report ``changed`` in check mode, where nothing may be touched.
    """
    import grp
    import pwd

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return True
    if owner is not None:
        try:
            uid = int(owner) if str(owner).isdigit() else pwd.getpwnam(owner).pw_uid
        except KeyError:
            return True
        if st.st_uid != uid:
            return True
    if group is not None:
        try:
            gid = int(group) if str(group).isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            return True
        if st.st_gid != gid:
            return True
    if mode is not None:
        wanted = int(mode, 8) if isinstance(mode, str) else int(mode)
        if (st.st_mode & 0o7777) != wanted:
            return True
    return False
