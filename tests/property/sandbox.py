# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The whole host read-only but /tmp, for the property suite (issue 17).

The suite feeds the modules inputs such as ``datadir: "//"``, ``/etc`` or ``/var/lib``. A module
that wrongly accepts one would write to (or chmod) the real directory. So the pytest process
moves itself into a private mount namespace (``unshare(CLONE_NEWNS)``, needs root or
CAP_SYS_ADMIN) in which:

- every mount propagation is private (nothing done here reaches the host);
- a fresh session directory is bind-mounted over ``/tmp`` (so even ``/tmp`` itself, or a chmod
  of it, is only the session's copy);
- ``/`` and every other writable mount but ``/proc``, ``/sys`` and ``/dev`` are remounted
  read-only.

A module that tries to write outside /tmp then fails with EROFS ("Read-only file system"),
which the invariants treat as a violation: a refused path must be refused before any write.
When the namespace cannot be made (no privilege), ``ACTIVE`` stays False and the strategies
leave out the system-directory paths (tests/property/conftest.py fails instead when CI is set).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shutil
import tempfile

CLONE_NEWNS = 0x00020000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_RELATIME = 1 << 21
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18

_FLAG_OPTIONS = {
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
}
_KEEP_WRITABLE = ("/proc", "/sys", "/dev", "/tmp")

ACTIVE = False
REASON = "not set up"
SESSION_DIR = None  # the real path of the session directory (seen as /tmp inside)


def _libc():
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p)
    libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
    return libc


def _mount(libc, source, target, fstype, flags):
    def enc(s):
        return s.encode() if s is not None else None

    if libc.mount(enc(source), enc(target), enc(fstype), flags, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "mount %s: %s" % (target, os.strerror(err)))


def _mounts():
    """(mount point, per-mount options) from /proc/self/mountinfo, parents first."""
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")
            out.append((point, fields[5].split(",")))
    return out


def _under(path, prefixes):
    return any(path == p or path.startswith(p + "/") for p in prefixes)


def _remove_old_sessions(age: float = 3600.0) -> None:
    """Remove the empty session directories earlier runs left in the host's /tmp (they stay
    behind: inside the namespace they are /tmp itself). Only empty ones an hour old: a running
    session's directory is never empty for long, and its mtime moves."""
    import time

    for entry in os.listdir("/tmp"):
        path = os.path.join("/tmp", entry)
        if not entry.startswith("nodefleet-property-"):
            continue
        with contextlib.suppress(OSError):
            if time.time() - os.lstat(path).st_mtime > age and not os.listdir(path):
                os.rmdir(path)


def enter() -> bool:
    """Enter the read-only namespace (once per process); True when active."""
    global ACTIVE, REASON, SESSION_DIR
    if ACTIVE:
        return True
    libc = _libc()
    _remove_old_sessions()
    session = tempfile.mkdtemp(prefix="nodefleet-property-", dir="/tmp")
    if libc.unshare(CLONE_NEWNS) != 0:
        REASON = "unshare(CLONE_NEWNS): %s" % os.strerror(ctypes.get_errno())
        os.rmdir(session)
        return False
    try:
        _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
        _mount(libc, session, "/tmp", None, MS_BIND)
        os.chmod("/tmp", 0o1777)  # noqa: S103 - /tmp as it is on the host
        for point, options in _mounts():
            if _under(point, _KEEP_WRITABLE) or "ro" in options:
                continue
            flags = MS_REMOUNT | MS_BIND | MS_RDONLY
            for name in options:
                flags |= _FLAG_OPTIONS.get(name, 0)
            _mount(libc, None, point, None, flags)
    except OSError as exc:
        # Half a sandbox is no sandbox: this process is no longer usable for the suite.
        REASON = str(exc)
        raise
    SESSION_DIR = session
    ACTIVE = True
    REASON = "active: / read-only, /tmp is %s" % session
    return True


def leave() -> None:
    """Empty the session directory (seen as /tmp) at the end of the run."""
    if not ACTIVE:
        return
    for entry in os.listdir("/tmp"):
        path = os.path.join("/tmp", entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)
