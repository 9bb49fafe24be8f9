# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Seed a new bitcoind instance's chain from a stopped instance of the same network on the same host.

What is copied: ``blocks/`` (``blk*.dat``, ``rev*.dat``, ``xor.dat``, ``index/``), ``chainstate/``
and, when the source has them, ``indexes/`` (txindex, blockfilter, coinstatsindex). Nothing else:
not ``peers.dat``/``anchors.dat``/``banlist.json`` (the new instance finds its own peers),
``mempool.dat``, ``fee_estimates.dat``, ``settings.json``, wallets, ``onion_v3_private_key`` (an
onion identity must never be shared), ``.lock``, ``debug.log`` or ``bitcoin.conf``.

Hard link or copy, per file (``link_decision``):

- LevelDB (``blocks/index``, ``chainstate``, ``indexes/*``) writes a table file (``*.ldb``,
  ``*.sst``) once and never changes it again (compaction writes new tables and deletes old
  ones): those are linked. ``CURRENT``, ``MANIFEST-*``, ``LOG``, ``LOG.old``, ``LOCK`` and the
  write-ahead ``*.log`` are rewritten or appended: copied.
- Core appends blocks to the newest ``blk`` file and undo data to ``rev`` files; undo data for a
  block that arrived out of order is written when the block is connected, which can be after Core
  moved on to the next file. So the two newest file numbers (``blk``/``rev``) are copied; the older
  ones are never written again (pruning deletes whole files: an unlink, which a link survives) and
  are linked. Everything else (``xor.dat``, ``indexes/*/fltr*.dat`` ...) is copied.
- A link needs the same filesystem and the same owner/group as the target wants (a link shares
  the inode): otherwise the file is copied.

Every copied file is hashed (sha256) while it is read from the stopped source and hashed again as
read back from the target; a linked file is checked to be the source's inode. The tree is built in
a staging directory inside the target's network directory, verified, then renamed into place, and a
marker (``.nodefleet-seed.json``) written last: a failure leaves the target as it was.

All file operations work on directory descriptors and refuse symlinks (as ``safe_fs``), because
root writes into directories the daemon user owns. Standard library only (runs on the host).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import hashlib
import json
import os
import pwd
import re
import shutil
import stat
import time

from ansible_collections.nodefleet.bitcoin.plugins.module_utils import bitcoin_conf, safe_fs
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import (
    NETWORKS,
    ValidationError,
    check_abs_path,
    check_name,
)

CHAIN_DIRS = ("blocks", "chainstate", "indexes")
REQUIRED_DIRS = ("blocks", "chainstate")
MARKER = ".nodefleet-seed.json"
SUMS = ".nodefleet-seed.sha256"  # sha256sum -c format, the copied files
STAGING = ".nodefleet-seed-staging"
LOCK_FILE = ".lock"
NEWEST_COPIED = 2  # blk/rev file numbers counted from the newest that are copied, not linked
CHUNK = 1 << 20
# What may be in an empty target's network dir: the conf bitcoind_instance writes (for main the
# network dir is the datadir) and the other networks' subdirectories (main only).
TARGET_ALLOWED = frozenset({"bitcoin.conf", LOCK_FILE, SUMS})

_BLOCK_FILE_RE = re.compile(r"^(blk|rev)(\d{5,})\.dat\Z")
_TABLE_RE = re.compile(r"^\d+\.(ldb|sst)\Z")
RUNNING_STATES = frozenset({"STARTING", "RUNNING", "BACKOFF", "STOPPING"})


class SeedError(Exception):
    """A refusal or failure; the message names what and why."""


# --------------------------------------------------------------------------- pure decisions


def newest_block_file(names) -> int:
    """The highest blk file number among ``names`` (-1 when there is none)."""
    numbers = [int(m.group(2)) for m in map(_BLOCK_FILE_RE.match, names) if m and m.group(1) == "blk"]
    return max(numbers, default=-1)


def link_decision(rel: str, newest_blk: int) -> bool:
    """True when the file at ``rel`` (relative to the network dir) is never written again: a link is safe."""
    parts = rel.split("/")
    name = parts[-1]
    top = parts[0]
    if top == "blocks" and len(parts) == 2:
        match = _BLOCK_FILE_RE.match(name)
        return bool(match) and int(match.group(2)) <= newest_blk - NEWEST_COPIED
    in_leveldb = (top == "blocks" and len(parts) == 3 and parts[1] == "index") or top in ("chainstate", "indexes")
    return in_leveldb and bool(_TABLE_RE.match(name))


def prune_of(value) -> int:
    """A ``prune`` setting as an int (False/absent/"" = 0)."""
    if value in (None, False, ""):
        return 0
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValidationError(
            "source_datadir", "the source's bitcoin.conf has prune=%r, not a number" % (value,)
        ) from None


def check_compatible(source: dict, target: dict) -> None:
    """Refuse a seed that would give the target a chain it cannot use (ValidationError)."""
    if source["network"] != target["network"]:
        raise ValidationError(
            "network",
            "the source %s is on %s, the target on %s: a chain cannot seed another network"
            % (source["name"], source["network"], target["network"]),
        )
    if source["prune"] > 0 and target["prune"] == 0:
        raise ValidationError(
            "prune",
            "the source %s is pruned (prune=%d) and the target is not: Core would refuse the copied block index "
            "(a pruned chain cannot become unpruned without a full reindex); seed from an unpruned instance or "
            "set the target's prune" % (source["name"], source["prune"]),
        )
    if source["blocksdir"]:
        raise ValidationError(
            "source_datadir",
            "the source %s uses blocksdir=%s; seeding supports blocks inside the datadir only"
            % (source["name"], source["blocksdir"]),
        )


def validate(params: dict) -> dict:
    """Normalised options, or ValidationError naming the option."""
    n = dict(params)
    n["name"] = check_name("name", params["name"])
    n["source_name"] = check_name("source_name", params["source_name"])
    n["datadir"] = check_abs_path("datadir", params["datadir"])
    n["source_datadir"] = check_abs_path("source_datadir", params["source_datadir"])
    if params["network"] not in NETWORKS:
        raise ValidationError("network", "%r is not one of %s" % (params["network"], ", ".join(NETWORKS)))
    prune = params.get("prune") or 0
    if isinstance(prune, bool) or not isinstance(prune, int) or prune < 0:
        raise ValidationError("prune", "%r is not a prune setting (0, 1 or a target in MiB)" % (prune,))
    n["prune"] = prune
    if n["name"] == n["source_name"]:
        raise ValidationError("source_name", "%s cannot be seeded from itself" % n["name"])
    a, b = n["datadir"].rstrip("/") + "/", n["source_datadir"].rstrip("/") + "/"
    if a == b:
        raise ValidationError("source_datadir", "is the target's datadir (%s): source == target" % n["datadir"])
    if a.startswith(b) or b.startswith(a):
        raise ValidationError("source_datadir", "%s and the target datadir %s are nested" % (b, a))
    n["source_program"] = check_name("source_program", params.get("source_program") or "bitcoind-" + n["source_name"])
    return n


def resolve_ids(owner, group):
    """(uid, gid) of the ``owner``/``group`` options (None when unset); ValidationError naming the option."""
    uid = gid = None
    if owner:
        try:
            uid = pwd.getpwnam(owner).pw_uid
        except KeyError:
            raise ValidationError("owner", "user %r does not exist" % owner) from None
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise ValidationError("group", "group %r does not exist" % group) from None
    return uid, gid


# --------------------------------------------------------------------------- host inspection


def read_source(n: dict) -> dict:
    """The source's network, prune and blocksdir from its bitcoin.conf, and its network dir checked."""
    conf_path = n.get("source_conf") or os.path.join(n["source_datadir"], "bitcoin.conf")
    try:
        text = safe_fs.read_file(conf_path)
    except safe_fs.UnsafePath as exc:
        raise ValidationError("source_datadir", str(exc)) from None
    if text is None:
        raise ValidationError("source_datadir", "%s does not exist: not an instance's datadir" % conf_path)
    try:
        text = text.decode("utf-8")
        network = bitcoin_conf.network_of(text)
        values = bitcoin_conf.settings(text, network)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValidationError("source_datadir", "cannot read %s (%s)" % (conf_path, exc)) from None
    netdir = bitcoin_conf.network_dir(n["source_datadir"], network)
    for sub in REQUIRED_DIRS:
        try:
            kind = safe_fs.inspect_path(os.path.join(netdir, sub))
        except safe_fs.UnsafePath as exc:
            raise ValidationError("source_datadir", str(exc)) from None
        if kind != "dir":
            raise ValidationError(
                "source_datadir",
                "%s/%s is %s: the source has no chain to seed from"
                % (netdir, sub, "missing" if kind == "missing" else "not a directory"),
            )
    blocksdir = values.get("blocksdir")
    return {
        "name": n["source_name"],
        "network": network,
        "prune": prune_of(values.get("prune")),
        "blocksdir": blocksdir if isinstance(blocksdir, str) and blocksdir else None,
        "netdir": netdir,
    }


def read_marker(netdir: str) -> dict | None:
    try:
        raw = safe_fs.read_file(os.path.join(netdir, MARKER))
    except (safe_fs.UnsafePath, FileNotFoundError, NotADirectoryError):
        return None
    if raw is None:
        return None
    try:
        value = json.loads(raw.decode("utf-8"))
    except ValueError:
        return {"unreadable": True}
    return value if isinstance(value, dict) else {"unreadable": True}


def target_state(n: dict) -> tuple[str, dict | None, list]:
    """("seeded", marker, []) | ("empty", None, []) | ("missing", None, []) | ("not_empty", None, entries)."""
    netdir = bitcoin_conf.network_dir(n["datadir"], n["network"])
    try:
        kind = safe_fs.inspect_path(netdir)
    except safe_fs.UnsafePath as exc:
        raise ValidationError("datadir", str(exc)) from None
    if kind == "missing":
        return "missing", None, []
    if kind != "dir":
        raise ValidationError("datadir", "%s exists and is not a directory" % netdir)
    marker = read_marker(netdir)
    if marker is not None:
        return "seeded", marker, []
    with safe_fs.opened_dir(netdir) as fd:
        entries = sorted(os.listdir(fd))
    allowed = set(TARGET_ALLOWED) | {STAGING}
    if n["network"] == "main":
        allowed |= {sub for sub in bitcoin_conf.NETWORK_SUBDIR.values() if sub}
    extra = [e for e in entries if e not in allowed]
    return ("not_empty", None, extra) if extra else ("empty", None, [])


@contextlib.contextmanager
def datadir_lock(netdir: str, option: str, uid=None, gid=None):
    """Hold bitcoind's own datadir lock (``<netdir>/.lock``, fcntl like Core) while the chain is copied.

    A daemon running on the datadir holds it: SeedError. While it is held no bitcoind can start there.
    A ``.lock`` this creates gets ``uid``/``gid``, by default its directory's owner (the daemon must open
    it for writing later: a root-owned ``.lock`` keeps bitcoind from starting)."""
    with safe_fs.opened_dir(netdir) as dir_fd:
        try:
            try:
                flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                fd = os.open(LOCK_FILE, flags, 0o600, dir_fd=dir_fd)
                created = True
            except FileExistsError:
                fd = os.open(LOCK_FILE, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
                created = False
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ValidationError(option, "%s/.lock is a symlink; refusing it" % netdir) from None
            raise
        if created:  # owned like its directory unless told otherwise
            dir_st = os.fstat(dir_fd)
            safe_fs.set_attrs_fd(
                fd, dir_st.st_uid if uid is None else uid, dir_st.st_gid if gid is None else gid, 0o600
            )
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                raise SeedError(
                    "%s: a bitcoind is running on %s (it holds %s/.lock); stop it first" % (option, netdir, netdir)
                ) from None
            raise
        yield
    finally:
        os.close(fd)  # releases the lock


def lock_is_free(netdir: str) -> bool:
    try:
        with datadir_lock(netdir, "source_datadir"):
            return True
    except SeedError:
        return False


# --------------------------------------------------------------------------- the copy


def _walk(dir_fd: int, rel: str, out: list, shown: str) -> None:
    """Every regular file below ``dir_fd`` as (relative path, stat); a symlink or device is refused."""
    for entry in sorted(os.listdir(dir_fd)):
        path = "%s/%s" % (rel, entry) if rel else entry
        st = os.lstat(entry, dir_fd=dir_fd)
        if stat.S_ISLNK(st.st_mode):
            raise SeedError("%s/%s is a symlink; refusing to seed through it" % (shown, path))
        if stat.S_ISDIR(st.st_mode):
            child = os.open(entry, safe_fs.DIR_FLAGS, dir_fd=dir_fd)
            try:
                out.append((path + "/", st))
                _walk(child, path, out, shown)
            finally:
                os.close(child)
        elif stat.S_ISREG(st.st_mode):
            out.append((path, st))
        else:
            raise SeedError("%s/%s is not a regular file or directory; refusing it" % (shown, path))


def source_files(netdir: str) -> list:
    """(relative path, stat) of the chain dirs, directories with a trailing '/' before their content."""
    out: list = []
    with safe_fs.opened_dir(netdir) as fd:
        for top in CHAIN_DIRS:
            st = safe_fs.lstat_at(fd, top)
            if st is None:
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise SeedError("%s/%s is not a directory" % (netdir, top))
            child = os.open(top, safe_fs.DIR_FLAGS, dir_fd=fd)
            try:
                out.append((top + "/", st))
                _walk(child, top, out, netdir)
            finally:
                os.close(child)
    return out


def plan(files: list, uid, gid, hard_links: bool) -> list:
    """[(rel, stat, "dir" | "link" | "copy")] for the listed files."""
    newest = newest_block_file(
        os.path.basename(rel) for rel, _size in files if rel.startswith("blocks/") and rel.count("/") == 1
    )
    out = []
    for rel, st in files:
        if rel.endswith("/"):
            out.append((rel, st, "dir"))
            continue
        same_owner = (uid is None or st.st_uid == uid) and (gid is None or st.st_gid == gid)
        how = "link" if hard_links and same_owner and link_decision(rel, newest) else "copy"
        out.append((rel, st, how))
    return out


def summary(steps: list) -> dict:
    files = [(st, how) for _rel, st, how in steps if how != "dir"]
    return {
        "files": len(files),
        "linked": sum(1 for _st, how in files if how == "link"),
        "copied": sum(1 for _st, how in files if how == "copy"),
        "bytes": sum(st.st_size for st, _how in files),
        "bytes_linked": sum(st.st_size for st, how in files if how == "link"),
        "bytes_copied": sum(st.st_size for st, how in files if how == "copy"),
    }


def sha256_fd(fd: int) -> str:
    """sha256 of an open file, read from its start (the one hashing helper of seed and snapshot)."""
    digest = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    while True:
        chunk = os.read(fd, CHUNK)
        if not chunk:
            return digest.hexdigest()
        digest.update(chunk)


def write_verified(read, dst_dir: int, name: str, mode: int, uid, gid, shown: str) -> str:
    """Create ``name`` below ``dst_dir`` (O_EXCL, no symlink) from ``read(CHUNK)`` chunks.

    Returns the sha256 of what was read, after checking that the new file reads back the same."""
    dst = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dst_dir)
    try:
        safe_fs.set_attrs_fd(dst, uid, gid, mode)
        digest = hashlib.sha256()
        while True:
            chunk = read(CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(dst, view) :]
        os.fsync(dst)
        source_sum = digest.hexdigest()
        target_sum = sha256_fd(dst)
    finally:
        os.close(dst)
    if source_sum != target_sum:
        raise SeedError("checksum mismatch for %s: source %s, copy %s" % (shown, source_sum, target_sum))
    return source_sum


def open_regular(dir_fd: int, name: str, shown: str) -> int:
    """A read-only descriptor of the regular file ``name`` below ``dir_fd`` (a symlink or other type: SeedError)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SeedError("%s is a symlink; refusing it" % shown) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SeedError("%s is not a regular file" % shown)
    return fd


def _copy_file(src_dir: int, dst_dir: int, name: str, st, uid, gid, shown: str) -> str:
    """Copy one file by descriptors; return its sha256 after checking the target reads back the same."""
    src = open_regular(src_dir, name, shown)
    try:
        return write_verified(lambda size: os.read(src, size), dst_dir, name, stat.S_IMODE(st.st_mode), uid, gid, shown)
    finally:
        os.close(src)


def _link_file(src_dir: int, dst_dir: int, name: str, st, shown: str) -> bool:
    """Hard-link one file; False when the filesystem does not allow it (the caller copies)."""
    try:
        os.link(name, name, src_dir_fd=src_dir, dst_dir_fd=dst_dir, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        raise
    got = os.lstat(name, dir_fd=dst_dir)
    if (got.st_dev, got.st_ino) != (st.st_dev, st.st_ino):
        raise SeedError("%s changed while it was linked (not the source's inode)" % shown)
    return True


def rmtree_at(dir_fd: int, name: str) -> None:
    """Remove ``name`` below ``dir_fd`` without following symlinks."""
    if safe_fs.lstat_at(dir_fd, name) is None:
        return
    try:
        shutil.rmtree(name, dir_fd=dir_fd)  # fd-based, symlink-attack resistant on Linux
    except NotADirectoryError:
        os.unlink(name, dir_fd=dir_fd)


def build(source_netdir: str, target_netdir: str, steps: list, uid, gid) -> dict:
    """Copy/link ``steps`` from the source into the target's network dir (staging, verify, rename).

    Returns {"manifest": {rel: sha256 or "link"}, "linked": n, "copied": n, "fallback_copies": n}."""
    manifest: dict = {}
    fallback = 0
    with safe_fs.opened_dir(source_netdir) as src_root, safe_fs.opened_dir(target_netdir) as dst_root:
        rmtree_at(dst_root, STAGING)  # a staging dir left by an interrupted run is ours
        stage_fd, _created = safe_fs.mkdir_at(dst_root, STAGING, 0o700)
        moved: list = []
        try:
            safe_fs.set_attrs_fd(stage_fd, uid, gid, 0o700)
            dirs = {"": (src_root, stage_fd)}
            opened: list = []
            try:
                for rel, st, how in steps:
                    parent_rel, _sep, name = rel.rstrip("/").rpartition("/")
                    src_dir, dst_dir = dirs[parent_rel]
                    shown = "%s/%s" % (source_netdir, rel.rstrip("/"))
                    if how == "dir":
                        child_src = os.open(name, safe_fs.DIR_FLAGS, dir_fd=src_dir)
                        opened.append(child_src)
                        child_dst, _created = safe_fs.mkdir_at(dst_dir, name, 0o700)
                        opened.append(child_dst)
                        safe_fs.set_attrs_fd(child_dst, uid, gid, stat.S_IMODE(st.st_mode))
                        dirs[rel.rstrip("/")] = (child_src, child_dst)
                    elif how == "link" and _link_file(src_dir, dst_dir, name, st, shown):
                        manifest[rel] = "link"
                    else:
                        if how == "link":
                            fallback += 1
                        manifest[rel] = _copy_file(src_dir, dst_dir, name, st, uid, gid, shown)
            finally:
                for fd in opened:
                    os.close(fd)
            for top in CHAIN_DIRS:
                if safe_fs.lstat_at(stage_fd, top) is not None:
                    os.rename(top, top, src_dir_fd=stage_fd, dst_dir_fd=dst_root)
                    moved.append(top)
        except BaseException:
            for top in moved:  # nothing half-written: what was moved in goes again
                with contextlib.suppress(OSError):
                    rmtree_at(dst_root, top)
            raise
        finally:
            os.close(stage_fd)
            with contextlib.suppress(OSError):
                rmtree_at(dst_root, STAGING)
    linked = sum(1 for v in manifest.values() if v == "link")
    return {"manifest": manifest, "linked": linked, "copied": len(manifest) - linked, "fallback_copies": fallback}


def ensure_netdir(datadir: str, netdir: str, uid, gid) -> None:
    """Create the target's datadir (0750) and network dir (0700) when missing, owned by uid/gid (by fd)."""
    datadir_missing = safe_fs.inspect_path(datadir) == "missing"
    with safe_fs.opened_dir(datadir, create=1, mode=0o750) as fd:
        if datadir_missing:
            safe_fs.set_attrs_fd(fd, uid, gid, 0o750)
        sub = os.path.relpath(netdir, datadir)
        if sub != ".":
            child, created = safe_fs.mkdir_at(fd, sub, 0o700)
            try:
                if created:
                    safe_fs.set_attrs_fd(child, uid, gid, 0o700)
            finally:
                os.close(child)


def manifest_digest(manifest: dict) -> str:
    """sha256 over the sorted "<sha256 or link>  <path>" lines (what the marker records)."""
    lines = "".join("%s  %s\n" % (manifest[k], k) for k in sorted(manifest))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def sums_text(manifest: dict) -> str:
    """The copied files in ``sha256sum -c`` format (run from the network dir)."""
    return "".join("%s  %s\n" % (manifest[k], k) for k in sorted(manifest) if manifest[k] != "link")


def write_marker(target_netdir: str, content: dict, manifest: dict, uid, gid) -> None:
    """The checksums, then the marker (last: its presence means the seed is complete)."""
    with safe_fs.opened_dir(target_netdir) as fd:
        safe_fs.write_at(fd, SUMS, sums_text(manifest), uid=uid, gid=gid, mode=0o600)
        safe_fs.write_at(fd, MARKER, json.dumps(content, indent=1, sort_keys=True) + "\n", uid=uid, gid=gid, mode=0o600)


def now() -> float:
    return time.monotonic()
