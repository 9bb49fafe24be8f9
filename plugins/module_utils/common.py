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


def check_abs_path(option: str, value: str) -> str:
    """Return a normalised absolute path, rejecting relative paths and '..' components."""
    if not isinstance(value, str) or not value:
        raise ValidationError(option, "must be a non-empty absolute path")
    if "\x00" in value or "\n" in value:
        raise ValidationError(option, "must not contain NUL or newline characters")
    if not value.startswith("/"):
        raise ValidationError(option, "%r is not an absolute path" % (value,))
    if ".." in value.split("/"):
        raise ValidationError(option, "%r must not contain '..' components" % (value,))
    normalised = os.path.normpath(value)
    if normalised == "/":
        raise ValidationError(option, "must not be the filesystem root")
    return normalised


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
