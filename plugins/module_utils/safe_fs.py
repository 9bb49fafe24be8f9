# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Race-free file operations for root writing into directories a daemon user controls.

The bitcoin user owns /var/lib/bitcoind and its datadirs, debian-tor owns /var/lib/tor. A
root-run module that resolves a path there by name, then chowns or renames by name, can be
sent elsewhere by the daemon swapping a component for a symlink between the check and the
use (e.g. a datadir replaced by a link to /etc, or a temp file replaced by a link to
/etc/shadow before a path-based chown). Everything here works on directory file
descriptors instead:

- ``open_dir`` walks a path from ``/`` one component at a time with
  ``O_DIRECTORY | O_NOFOLLOW``: a symlink anywhere in the path is refused (``UnsafePath``),
  and what is returned is a descriptor of the directory that was checked, so a later swap
  of the name changes nothing for us.
- ``read_at``/``write_at``/``unlink_at``/``mkdir_at``/``lstat_at`` take that descriptor and
  a single file name; files are opened with ``O_NOFOLLOW``, the temp file of an atomic
  write is created ``O_EXCL`` and gets its owner and mode through ``fchown``/``fchmod`` on
  its own descriptor before it is renamed into place inside the same directory descriptor.
- ``set_attrs_fd`` applies owner/group/mode through a descriptor, never a path.

Nothing here follows a symlink, and no path is chowned or chmodded by name.
Only the standard library is used: this runs on the managed host.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(Exception):
    """A path that root must not write through (a symlink, or not what it should be)."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__("%s %s" % (path, reason))


def _components(path: str) -> list[str]:
    if not path.startswith("/"):
        raise UnsafePath(path, "is not an absolute path")
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise UnsafePath(path, "must not contain '.' or '..' components")
    return parts


def _open_child_dir(parent_fd: int, name: str, shown: str) -> int:
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            try:
                st = os.lstat(name, dir_fd=parent_fd)
            except OSError:
                st = None
            if st is not None and stat.S_ISLNK(st.st_mode):
                raise UnsafePath(shown, "is a symlink; refusing to write through it") from None
            raise UnsafePath(shown, "exists and is not a directory") from None
        raise


def open_dir(path: str, create: int = 0, mode: int = 0o755) -> int:
    """Return an O_DIRECTORY descriptor of ``path``, refusing a symlink in any component.

    ``create`` is how many trailing components may be created when missing (with ``mode``,
    owned by the caller; set owner and mode afterwards with ``set_attrs_fd``). Raises
    ``UnsafePath`` for a symlink or a non-directory, ``FileNotFoundError`` for a missing
    component that may not be created. The caller closes the descriptor.
    """
    parts = _components(path)
    fd = os.open("/", DIR_FLAGS)
    shown = ""
    try:
        for index, name in enumerate(parts):
            shown += "/" + name
            may_create = index >= len(parts) - create
            if may_create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, mode, dir_fd=fd)
            child = _open_child_dir(fd, name, shown)
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def opened_dir(path: str, create: int = 0, mode: int = 0o755):
    """Context manager form of ``open_dir``."""
    fd = open_dir(path, create=create, mode=mode)
    try:
        yield fd
    finally:
        os.close(fd)


def inspect_path(path: str) -> str:
    """Describe ``path`` without following symlinks, for check mode and validation.

    Returns "missing" (some component does not exist), "dir", "file", or "other"; raises
    ``UnsafePath`` when a component is a symlink or an intermediate one is not a directory.
    """
    parts = _components(path)
    shown = ""
    for index, name in enumerate(parts):
        shown += "/" + name
        try:
            st = os.lstat(shown)
        except FileNotFoundError:
            return "missing"
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePath(shown, "is a symlink; refusing to write through it")
        last = index == len(parts) - 1
        if not last and not stat.S_ISDIR(st.st_mode):
            raise UnsafePath(shown, "exists and is not a directory")
        if last:
            if stat.S_ISDIR(st.st_mode):
                return "dir"
            if stat.S_ISREG(st.st_mode):
                return "file"
            return "other"
    return "dir"  # "/"


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """lstat of ``name`` in the directory, or None when it does not exist."""
    try:
        return os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return None


def read_at(dir_fd: int, name: str, shown: str | None = None) -> bytes | None:
    """Bytes of the regular file ``name`` in the directory, None when it does not exist.

    A symlink or anything but a regular file is refused (``UnsafePath``).
    """
    shown = shown or name
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(shown, "is a symlink; refusing to read through it") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafePath(shown, "is not a regular file")
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def set_attrs_fd(fd: int, uid: int | None = None, gid: int | None = None, mode: int | None = None) -> bool:
    """Apply owner/group/mode through a descriptor; True when anything changed."""
    st = os.fstat(fd)
    changed = False
    want_uid = st.st_uid if uid is None else uid
    want_gid = st.st_gid if gid is None else gid
    if (want_uid, want_gid) != (st.st_uid, st.st_gid):
        os.fchown(fd, want_uid, want_gid)
        changed = True
    if mode is not None and stat.S_IMODE(os.fstat(fd).st_mode) != mode:
        os.fchmod(fd, mode)
        changed = True
    return changed


def attrs_differ(st: os.stat_result | None, uid=None, gid=None, mode: int | None = None) -> bool:
    """True when the stat result is missing or its owner/group/mode differ from the wanted ones."""
    if st is None:
        return True
    if uid is not None and st.st_uid != uid:
        return True
    if gid is not None and st.st_gid != gid:
        return True
    return mode is not None and stat.S_IMODE(st.st_mode) != mode


def set_attrs_at(dir_fd: int, name: str, uid=None, gid=None, mode=None, shown: str | None = None) -> bool:
    """Owner/group/mode of the regular file ``name`` in the directory, through its descriptor."""
    shown = shown or name
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(shown, "is a symlink; refusing to change it") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafePath(shown, "is not a regular file")
        return set_attrs_fd(fd, uid, gid, mode)
    finally:
        os.close(fd)


def write_at(dir_fd: int, name: str, data: bytes | str, uid=None, gid=None, mode: int = 0o600, shown=None) -> None:
    """Atomically replace ``name`` in the directory with ``data``, owner and mode set by fd.

    The temp file is created O_EXCL|O_NOFOLLOW with mode 0600 under a random name, gets its
    owner/mode through its own descriptor, is written and fsynced, then renamed over
    ``name`` within the same directory descriptor (a symlink at ``name`` is replaced, never
    followed). An existing directory at ``name`` is refused. Nothing is left behind on
    failure.
    """
    shown = shown or name
    if isinstance(data, str):
        data = data.encode("utf-8")
    current = lstat_at(dir_fd, name)
    if current is not None and stat.S_ISDIR(current.st_mode):
        raise UnsafePath(shown, "is a directory; refusing to replace it")
    tmp = ".%s.%s.tmp" % (name, secrets.token_hex(8))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    try:
        try:
            set_attrs_fd(fd, uid, gid, mode)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    with contextlib.suppress(OSError):
        os.fsync(dir_fd)


def unlink_at(dir_fd: int, name: str) -> bool:
    """Remove ``name`` (a file or symlink, never followed) from the directory; True if it existed."""
    try:
        os.unlink(name, dir_fd=dir_fd)
        return True
    except FileNotFoundError:
        return False


def mkdir_at(dir_fd: int, name: str, mode: int = 0o700, shown: str | None = None) -> tuple[int, bool]:
    """Open (creating when missing) the subdirectory ``name``; returns (fd, created).

    A symlink or a non-directory at ``name`` is refused.
    """
    shown = shown or name
    created = False
    try:
        os.mkdir(name, mode, dir_fd=dir_fd)
        created = True
    except FileExistsError:
        pass
    return _open_child_dir(dir_fd, name, shown), created


def write_file(path: str, data: bytes | str, uid=None, gid=None, mode: int = 0o600, create_parents: int = 0) -> None:
    """``write_at`` for a full path: the parent directory is opened with ``open_dir``."""
    parent, name = os.path.split(path)
    with opened_dir(parent or "/", create=create_parents) as dir_fd:
        write_at(dir_fd, name, data, uid=uid, gid=gid, mode=mode, shown=path)


def read_file(path: str) -> bytes | None:
    """``read_at`` for a full path; None when the file (or its directory) does not exist."""
    parent, name = os.path.split(path)
    try:
        dir_fd = open_dir(parent or "/")
    except FileNotFoundError:
        return None
    try:
        return read_at(dir_fd, name, shown=path)
    finally:
        os.close(dir_fd)
