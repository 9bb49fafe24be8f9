# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Adopting a hand-run bitcoind into the fleet (used by the bitcoind_adopt module).

Pure functions: the previous daemon's settings (its bitcoin.conf and command line) and the
ones the fleet's bitcoin.conf does not set; finding the processes that hold a datadir (its
``.lock`` in /proc/locks, its pid file); the fd-based recursive ownership fix of a datadir.

Values of settings whose name says they are secret (rpcpassword, ...) are never returned.
Only the Python standard library and ansible.module_utils may be imported here.
"""

from __future__ import annotations

import errno
import os
import re
import stat

from ansible_collections.nodefleet.bitcoin.plugins.module_utils import bitcoin_conf, safe_fs

HIDDEN = "(hidden)"
_SECRET_NAME_RE = re.compile(r"password|secret|cookie|auth|key", re.IGNORECASE)
# Command-line options that only say where the old daemon's files were or how it was run:
# the fleet sets them itself (program command), so they are not settings to carry over.
_RUN_ONLY_ARGS = frozenset(("conf", "datadir", "daemon", "daemonwait", "pid", "startupnotify", "shutdownnotify"))
LOCK_FILE = ".lock"
PID_FILE = "bitcoind.pid"


def is_secret(name: str) -> bool:
    return bool(_SECRET_NAME_RE.search(name))


def _show(name: str, value) -> str:
    if is_secret(name):
        return HIDDEN
    if value is False:
        return "0 (negated)"
    if value is True:
        return "1"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def conf_settings(text: str, network: str) -> list[dict]:
    """The settings Core took from the old bitcoin.conf for ``network``, values of secrets hidden.

    ``[{"name", "value", "source": "bitcoin.conf"}]`` sorted by name; chain selectors are left
    out (the instance's network is the inventory's). ValueError for a file Core refuses.
    """
    values = bitcoin_conf.settings(text, network)
    return [
        {"name": name, "value": _show(name, value), "source": "bitcoin.conf"}
        for name, value in sorted(values.items())
        if name not in bitcoin_conf.CHAIN_KEYS
    ]


def command_line_settings(argv: list[str]) -> list[dict]:
    """``-name[=value]`` options of the old daemon's command line (argv[0] excluded).

    Where-and-how options (``-conf -datadir -daemon -pid``) and chain selectors are left out;
    ``-noname`` is reported as negated; later values win, as on Core's command line.
    """
    found: dict[str, str] = {}
    for arg in argv[1:]:
        if not arg.startswith("-") or arg in ("-", "--"):
            continue
        key, sep, value = arg.lstrip("-").partition("=")
        shown_value = value if sep else "1"
        if key.startswith("no") and key[2:] and not sep:
            key, shown_value = key[2:], "0 (negated)"
        if not key or key in _RUN_ONLY_ARGS or key in bitcoin_conf.CHAIN_KEYS:
            continue
        found[key] = HIDDEN if is_secret(key) else shown_value
    return [{"name": k, "value": v, "source": "command line"} for k, v in sorted(found.items())]


def unset_settings(previous: list[dict], new_options) -> list[dict]:
    """The previous settings the fleet's bitcoin.conf does not set (reported, never dropped silently).

    A setting is overridden when the new conf sets the same name (or its negation ``no<name>``).
    """
    new = set(new_options or ())
    return [s for s in previous if s["name"] not in new and ("no" + s["name"]) not in new]


# --------------------------------------------------------------------------- processes


def lock_holders(lock_stat: os.stat_result | None, locks_text: str) -> list[int]:
    """Pids holding a lock on the file with ``lock_stat``'s inode (from /proc/locks text).

    Lines look like ``1: POSIX  ADVISORY  WRITE 1234 fd:01:5678 0 EOF`` (device as
    ``major:minor`` in hex, then the inode); ``->`` lines are blocked waiters and skipped.
    """
    if lock_stat is None:
        return []
    pids = []
    for line in locks_text.splitlines():
        fields = line.split()
        if len(fields) < 6 or "->" in fields[1]:
            continue
        pid, where = fields[4], fields[5]
        parts = where.split(":")
        if len(parts) != 3 or not pid.isdigit():
            continue
        try:
            major, minor, inode = int(parts[0], 16), int(parts[1], 16), int(parts[2])
        except ValueError:
            continue
        if inode == lock_stat.st_ino and os.makedev(major, minor) == lock_stat.st_dev:
            pids.append(int(pid))
    return sorted(set(pids))


def read_proc(pid: int, name: str, proc: str = "/proc") -> bytes | None:
    try:
        with open(f"{proc}/{pid}/{name}", "rb") as handle:
            return handle.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def process_argv(pid: int, proc: str = "/proc") -> list[str] | None:
    data = read_proc(pid, "cmdline", proc)
    if not data:
        return None
    return [part.decode("utf-8", "replace") for part in data.rstrip(b"\0").split(b"\0")]


def parent_pid(pid: int, proc: str = "/proc") -> int | None:
    data = read_proc(pid, "stat", proc)
    if not data:
        return None
    # "pid (comm) state ppid ...": comm may contain spaces and parentheses.
    rest = data.rsplit(b")", 1)[-1].split()
    return int(rest[1]) if len(rest) > 1 and rest[1].isdigit() else None


def is_supervised(pid: int, proc: str = "/proc") -> bool:
    """True when the process is a child of supervisord (the fleet's own program)."""
    ppid = parent_pid(pid, proc)
    if not ppid:
        return False
    comm = (read_proc(ppid, "comm", proc) or b"").strip()
    argv = process_argv(ppid, proc) or []
    return comm == b"supervisord" or any(os.path.basename(a) == "supervisord" for a in argv[:2])


def alive(pid: int, proc: str = "/proc") -> bool:
    data = read_proc(pid, "stat", proc)
    if not data:
        return False
    rest = data.rsplit(b")", 1)[-1].split()
    return bool(rest) and rest[0] != b"Z"


def pid_from_file(data: bytes | None) -> int | None:
    text = (data or b"").decode("ascii", "replace").strip()
    return int(text) if text.isdigit() and int(text) > 1 else None


# --------------------------------------------------------------------------- filesystem


def traversal_problem(path: str, uid: int, gids: set[int]) -> str | None:
    """The first parent of ``path`` the user cannot enter (no search permission), or None."""
    parts = [p for p in path.split("/") if p][:-1]
    current = ""
    for name in parts:
        current += "/" + name
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return None
        mode = stat.S_IMODE(st.st_mode)
        if st.st_uid == uid:
            ok = mode & stat.S_IXUSR
        elif st.st_gid in gids:
            ok = mode & stat.S_IXGRP
        else:
            ok = mode & stat.S_IXOTH
        if not ok:
            return current
    return None


def fix_ownership(datadir: str, uid: int | None, gid: int | None, apply: bool) -> dict:
    """Give everything in ``datadir`` (itself included) to ``uid:gid``, walking by descriptors.

    Directories are opened ``O_DIRECTORY|O_NOFOLLOW`` relative to their parent's descriptor,
    files ``O_NOFOLLOW`` and changed with ``fchown``: a symlink is never followed (it is
    reported in ``symlinks``; its target is not the datadir's), a regular file with more than
    one hard link is not changed (``fchown`` would change the other name too: ``hardlinks``),
    nor is anything but files and directories. Modes are left as they are.
    Returns ``{"changed": n, "symlinks": [...], "hardlinks": [...], "skipped": [...]}``
    (paths relative to the datadir); with ``apply=False`` only counts (``uid``/``gid`` None:
    a user not created yet, so every entry counts).
    """
    if apply and (uid is None or gid is None):
        raise ValueError("fix_ownership: an owner is needed to apply")
    report = {"changed": 0, "symlinks": [], "hardlinks": [], "skipped": []}
    root = safe_fs.open_dir(datadir)
    try:
        _fix_fd(root, "", uid, gid, apply, report)
    finally:
        os.close(root)
    return report


def _chown_fd(fd: int, uid: int, gid: int, apply: bool, report: dict) -> None:
    st = os.fstat(fd)
    if (st.st_uid, st.st_gid) != (uid, gid):
        report["changed"] += 1
        if apply:
            os.fchown(fd, uid, gid)


def _fix_fd(dir_fd: int, rel: str, uid: int, gid: int, apply: bool, report: dict) -> None:
    _chown_fd(dir_fd, uid, gid, apply, report)
    for name in sorted(os.listdir(dir_fd)):
        shown = f"{rel}{name}"
        st = safe_fs.lstat_at(dir_fd, name)
        if st is None:
            continue
        if stat.S_ISLNK(st.st_mode):
            report["symlinks"].append(shown)
        elif stat.S_ISDIR(st.st_mode):
            try:
                child = os.open(name, safe_fs.DIR_FLAGS, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # swapped for a link meanwhile
                    report["skipped"].append(shown)
                    continue
                raise
            try:
                _fix_fd(child, shown + "/", uid, gid, apply, report)
            finally:
                os.close(child)
        elif stat.S_ISREG(st.st_mode):
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENXIO):
                    report["skipped"].append(shown)
                    continue
                raise
            try:
                fst = os.fstat(fd)
                if not stat.S_ISREG(fst.st_mode):
                    report["skipped"].append(shown)
                elif fst.st_nlink > 1 and (fst.st_uid, fst.st_gid) != (uid, gid):
                    report["hardlinks"].append(shown)
                else:
                    _chown_fd(fd, uid, gid, apply, report)
            finally:
                os.close(fd)
        else:
            report["skipped"].append(shown)
