# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Chain snapshot files: a tar of a stopped instance's chain, and seeding a new instance from one.

A snapshot is an uncompressed tar (block data does not compress) of ``blocks/``, ``chainstate/`` and,
when present, ``indexes/`` of one network directory - the same files ``seed`` copies between instances -
plus a manifest member ``nodefleet-chain-snapshot.json``: format, network, height, best block hash,
pruned or not, source instance, and ``{path: {sha256, size}}`` of every file. The operator pins the
sha256 of the whole archive (written beside it as ``<archive>.sha256``, ``sha256sum -c`` format).

The tip (best block hash, height) is read from the stopped datadir itself, not from a daemon: the
chainstate's ``B`` record (XOR-obfuscated with the chainstate's obfuscation key) and the block index's
``b<hash>`` record (its height) and ``prunedblockfiles`` flag, through the minimal read-only LevelDB
reader below (Core writes its LevelDB uncompressed). A chainstate with a ``H`` record (a flush that did
not finish) is refused: start and stop the instance once.

Seeding from a snapshot checks everything before anything is written: the archive's sha256 against the
pin, the manifest, the network and prune compatibility, and every member - only regular files and
directories below ``blocks/``, ``chainstate/``, ``indexes/`` (no absolute path, no ``..``, no symlink, no
hard link, no device; on Python >= 3.12 tarfile's ``data_filter`` is applied as well), each listed in the
manifest with its size. Extraction writes through directory descriptors into a staging directory inside
the target's network directory, verifies every file against the manifest's sha256 as it is written and
read back (``seed.write_verified``), then renames into place; the ``seed`` marker is written last.

Standard library only (runs on the host).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import tarfile
import time

from ansible_collections.nodefleet.bitcoin.plugins.module_utils import safe_fs, seed
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import NETWORKS, ValidationError

FORMAT = 1
MANIFEST_NAME = "nodefleet-chain-snapshot.json"
MAX_MANIFEST = 64 << 20
_SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")


class SnapshotError(seed.SeedError):
    """A refusal or failure while making or using a snapshot."""


# --------------------------------------------------------------------------- minimal LevelDB reader

_TABLE_MAGIC = 0xDB4775248B80FB57
_LOG_BLOCK = 32768
_MAX_SEQ = (1 << 56) - 1


def _varint(buf, pos: int) -> tuple[int, int]:
    """LevelDB's varint (little-endian base 128)."""
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def core_varint(buf, pos: int = 0) -> tuple[int, int]:
    """Bitcoin Core's VARINT (big-endian base 128, each continuation adds one)."""
    n = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated Core varint")
        byte = buf[pos]
        pos += 1
        n = (n << 7) | (byte & 0x7F)
        if byte & 0x80:
            n += 1
        else:
            return n, pos


def log_records(data: bytes):
    """The records of a LevelDB log file (write-ahead log), reassembled from 32 KiB blocks."""
    pos, parts = 0, []
    while pos + 7 <= len(data):
        left = _LOG_BLOCK - pos % _LOG_BLOCK
        if left < 7:
            pos += left
            continue
        length = data[pos + 4] | data[pos + 5] << 8
        kind = data[pos + 6]
        if kind == 0 and length == 0:  # zero padding / preallocated tail
            pos += left
            continue
        if pos + 7 + length > len(data):
            return  # a torn tail: LevelDB drops it too
        payload = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:  # FULL
            yield payload
        elif kind == 2:  # FIRST
            parts = [payload]
        elif kind == 3 and parts:  # MIDDLE
            parts.append(payload)
        elif kind == 4 and parts:  # LAST
            parts.append(payload)
            yield b"".join(parts)
            parts = []
        else:
            return


def batch_entries(record: bytes):
    """(key, sequence, value or None for a deletion) of one WriteBatch."""
    seq = int.from_bytes(record[0:8], "little")
    count = int.from_bytes(record[8:12], "little")
    pos = 12
    for i in range(count):
        tag = record[pos]
        pos += 1
        klen, pos = _varint(record, pos)
        key = bytes(record[pos : pos + klen])
        pos += klen
        if tag == 1:
            vlen, pos = _varint(record, pos)
            yield key, seq + i, bytes(record[pos : pos + vlen])
            pos += vlen
        elif tag == 0:
            yield key, seq + i, None
        else:
            raise ValueError("unknown write batch tag %d" % tag)


def block_entries(block: bytes):
    """(internal key, value) of one uncompressed table block."""
    restarts = int.from_bytes(block[-4:], "little")
    end = len(block) - 4 - 4 * restarts
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        vlen, pos = _varint(block, pos)
        key = key[:shared] + bytes(block[pos : pos + unshared])
        pos += unshared
        yield key, bytes(block[pos : pos + vlen])
        pos += vlen


def _read_block(fd: int, handle: bytes, shown: str) -> bytes:
    offset, pos = _varint(handle, 0)
    size, _pos = _varint(handle, pos)
    raw = os.pread(fd, size + 5, offset)
    if len(raw) != size + 5:
        raise ValueError("%s: truncated table block" % shown)
    if raw[size] != 0:
        raise ValueError("%s: compressed table block (type %d); only uncompressed LevelDB is read" % (shown, raw[size]))
    return raw[:size]


def table_lookup(fd: int, keys, shown: str) -> dict:
    """{user key: (sequence, value or None)} of ``keys`` found in one table file."""
    size = os.fstat(fd).st_size
    footer = os.pread(fd, 48, size - 48) if size >= 48 else b""
    if len(footer) != 48 or int.from_bytes(footer[40:48], "little") != _TABLE_MAGIC:
        raise ValueError("%s: not a LevelDB table" % shown)
    _meta_off, pos = _varint(footer, 0)
    _meta_size, pos = _varint(footer, pos)
    index = _read_block(fd, footer[pos:], shown)
    found: dict = {}
    separators = list(block_entries(index))
    for user_key in keys:
        for separator, handle in separators:
            if separator[:-8] < user_key:
                continue
            for ikey, value in block_entries(_read_block(fd, handle, shown)):
                if ikey[:-8] == user_key:
                    tag = int.from_bytes(ikey[-8:], "little")
                    found[user_key] = (tag >> 8, value if tag & 0xFF == 1 else None)
                    break
            break
    return found


def leveldb_get(db_path: str, keys) -> dict:
    """{key: value} of the newest version of each of ``keys`` in a closed LevelDB (absent/deleted: missing)."""
    keys = [bytes(k) for k in keys]
    newest: dict = {}

    def offer(key, seq, value):
        if key in keys and (key not in newest or seq > newest[key][0]):
            newest[key] = (seq, value)

    with safe_fs.opened_dir(db_path) as dir_fd:
        for name in sorted(os.listdir(dir_fd)):
            shown = "%s/%s" % (db_path, name)
            is_log = name.endswith(".log") and name[:-4].isdigit()
            is_table = name.rpartition(".")[2] in ("ldb", "sst") and name.rpartition(".")[0].isdigit()
            if not (is_log or is_table):
                continue
            fd = seed.open_regular(dir_fd, name, shown)
            try:
                if is_log:
                    data = b"".join(iter(lambda: os.read(fd, seed.CHUNK), b""))  # noqa: B023
                    for record in log_records(data):
                        for key, seq, value in batch_entries(record):
                            offer(key, seq, value)
                else:
                    for key, (seq, value) in table_lookup(fd, keys, shown).items():
                        offer(key, seq, value)
            finally:
                os.close(fd)
    return {k: v for k, (_seq, v) in newest.items() if v is not None}


_OBFUSCATE_KEY = bytes([14]) + b"\x00obfuscate_key"
_PRUNED_FLAG = b"F" + bytes([16]) + b"prunedblockfiles"


def _deobfuscate(value: bytes, key: bytes) -> bytes:
    if not key:
        return value
    return bytes(b ^ key[i % len(key)] for i, b in enumerate(value))


def _obfuscation_key(raw) -> bytes:
    if raw is None:
        return b""
    if len(raw) < 1 or raw[0] != len(raw) - 1:
        raise ValueError("unexpected obfuscation key record")
    return raw[1:]


def chain_tip(netdir: str) -> dict:
    """{best_block_hash, height, pruned_files} of a stopped instance's network dir (SnapshotError if unreadable)."""
    try:
        cs = leveldb_get(os.path.join(netdir, "chainstate"), [_OBFUSCATE_KEY, b"B", b"H"])
        if cs.get(b"H"):
            raise SnapshotError(
                "source_datadir: %s/chainstate records an unfinished flush (no clean shutdown); start the instance "
                "and stop it gracefully once" % netdir
            )
        best = _deobfuscate(cs.get(b"B", b""), _obfuscation_key(cs.get(_OBFUSCATE_KEY)))
        if len(best) != 32:
            raise SnapshotError("source_datadir: %s/chainstate has no best block (an empty chain?)" % netdir)
        index = leveldb_get(os.path.join(netdir, "blocks", "index"), [_OBFUSCATE_KEY, b"b" + best, _PRUNED_FLAG])
        index_key = _obfuscation_key(index.get(_OBFUSCATE_KEY))
        record = index.get(b"b" + best)
        if record is None:
            raise SnapshotError(
                "source_datadir: the block index of %s has no entry for the chainstate's best block %s"
                % (netdir, best[::-1].hex())
            )
        record = _deobfuscate(record, index_key)
        _version, pos = core_varint(record, 0)
        height, _pos = core_varint(record, pos)
    except (ValueError, IndexError) as exc:
        raise SnapshotError("source_datadir: cannot read the chain tip of %s (%s)" % (netdir, exc)) from None
    pruned = _deobfuscate(index.get(_PRUNED_FLAG, b"0"), index_key) == b"1"
    return {"best_block_hash": best[::-1].hex(), "height": height, "pruned_files": pruned}


# --------------------------------------------------------------------------- making a snapshot


class _HashingReader:
    """A file object over a descriptor that hashes what it hands out (tarfile reads through it)."""

    def __init__(self, fd: int):
        self.fd = fd
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        chunk = os.read(self.fd, seed.CHUNK if size is None or size < 0 else size)
        self.digest.update(chunk)
        return chunk


def _tarinfo(rel: str, st) -> tarfile.TarInfo:
    info = tarfile.TarInfo(rel.rstrip("/"))
    info.type = tarfile.DIRTYPE if rel.endswith("/") else tarfile.REGTYPE
    info.size = 0 if rel.endswith("/") else st.st_size
    info.mode = stat.S_IMODE(st.st_mode)
    info.mtime = int(st.st_mtime)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_archive(netdir: str, files: list, out_fd: int, meta: dict) -> dict:
    """Write the tar of ``files`` (``seed.source_files``) to ``out_fd``, manifest last; returns the manifest."""
    manifest = dict(meta, format=FORMAT, files={})
    with os.fdopen(os.dup(out_fd), "wb") as out, tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, st in files:
            if rel.endswith("/"):
                tar.addfile(_tarinfo(rel, st))
                continue
            parent, _sep, name = rel.rpartition("/")
            shown = "%s/%s" % (netdir, rel)
            with safe_fs.opened_dir(os.path.join(netdir, parent)) as dir_fd:
                fd = seed.open_regular(dir_fd, name, shown)
            try:
                if os.fstat(fd).st_size != st.st_size:
                    raise SnapshotError("%s changed size while the snapshot was made" % shown)
                reader = _HashingReader(fd)
                tar.addfile(_tarinfo(rel, st), reader)
            finally:
                os.close(fd)
            manifest["files"][rel] = {"sha256": reader.digest.hexdigest(), "size": st.st_size}
        body = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode("utf-8")
        info = tarfile.TarInfo(MANIFEST_NAME)
        info.size, info.mode, info.mtime = len(body), 0o644, int(time.time())
        tar.addfile(info, _BytesReader(body))
    os.fsync(out_fd)  # the tar end blocks were flushed when ``out`` closed
    return manifest


class _BytesReader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self.data) if size is None or size < 0 else self.pos + size
        chunk, self.pos = self.data[self.pos : end], min(end, len(self.data))
        return chunk


def sums_line(digest: str, name: str) -> str:
    return "%s  %s\n" % (digest, name)


# --------------------------------------------------------------------------- using a snapshot


def check_sha256(option: str, value) -> str:
    text = str(value or "").strip().lower()
    if text.startswith("sha256:"):
        text = text[len("sha256:") :]
    if not _SHA256_RE.match(text):
        raise ValidationError(option, "%r is not a sha256 (64 hex digits)" % (value,))
    return text


def open_archive(path: str) -> int:
    """A descriptor of the snapshot file; refuses a symlinked path, a non-file, or a file others may write."""
    parent, name = os.path.split(path)
    try:
        with safe_fs.opened_dir(parent or "/") as dir_fd:
            fd = seed.open_regular(dir_fd, name, path)
    except FileNotFoundError:
        raise ValidationError("snapshot", "%s does not exist" % path) from None
    except (safe_fs.UnsafePath, seed.SeedError) as exc:
        raise ValidationError("snapshot", str(exc)) from None
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        os.close(fd)
        raise ValidationError(
            "snapshot",
            "%s is owned by uid %d with mode %04o: it must be owned by uid %d and writable by nobody else, so it "
            "cannot change after its sha256 was checked (stage it in a root-owned directory)"
            % (path, st.st_uid, stat.S_IMODE(st.st_mode), os.geteuid()),
        )
    return fd


def _check_member(member: tarfile.TarInfo) -> str:
    """The member's relative path, or SnapshotError naming why it may not be extracted."""
    name = member.name
    shown = repr(name)
    if name.startswith("/") or "\\" in name or "\x00" in name:
        raise SnapshotError("snapshot: member %s has an absolute or unsafe path; refusing the archive" % shown)
    parts = name.rstrip("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise SnapshotError("snapshot: member %s has a '..', '.' or empty path component; refusing the archive" % shown)
    if member.issym() or member.islnk():
        raise SnapshotError(
            "snapshot: member %s is a %s (to %r); a chain snapshot holds only files and directories, and a link could "
            "point outside the target; refusing the archive"
            % (shown, "symlink" if member.issym() else "hard link", member.linkname)
        )
    if not (member.isreg() or member.isdir()):
        raise SnapshotError("snapshot: member %s is not a regular file or directory; refusing the archive" % shown)
    if name != MANIFEST_NAME and parts[0] not in seed.CHAIN_DIRS:
        raise SnapshotError(
            "snapshot: member %s is outside %s; refusing the archive"
            % (shown, ", ".join(d + "/" for d in seed.CHAIN_DIRS))
        )
    data_filter = getattr(tarfile, "data_filter", None)
    if data_filter is not None:  # Python >= 3.12 (and backports): the standard checks as well
        try:
            data_filter(member, "/nonexistent-snapshot-target")
        except tarfile.FilterError as exc:
            raise SnapshotError("snapshot: member %s refused by tarfile's data filter (%s)" % (shown, exc)) from None
    return "/".join(parts) + ("/" if member.isdir() else "")


def check_manifest(manifest) -> dict:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SnapshotError("snapshot: the manifest is not a format-%d nodefleet chain snapshot manifest" % FORMAT)
    if manifest.get("network") not in NETWORKS:
        raise SnapshotError("snapshot: the manifest names no known network (%r)" % (manifest.get("network"),))
    height = manifest.get("height")
    if isinstance(height, bool) or not isinstance(height, int) or height < 0:
        raise SnapshotError("snapshot: the manifest has no valid height (%r)" % (height,))
    if not _SHA256_RE.match(str(manifest.get("best_block_hash", ""))):
        raise SnapshotError("snapshot: the manifest has no valid best_block_hash")
    if not isinstance(manifest.get("pruned"), bool):
        raise SnapshotError("snapshot: the manifest does not say whether the chain is pruned")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise SnapshotError("snapshot: the manifest lists no files")
    for rel, entry in files.items():
        if (
            not isinstance(entry, dict)
            or not _SHA256_RE.match(str(entry.get("sha256", "")))
            or not isinstance(entry.get("size"), int)
        ):
            raise SnapshotError("snapshot: the manifest entry of %r has no sha256 and size" % rel)
    return manifest


def read_archive(fd: int, pinned: str, path: str) -> tuple[tarfile.TarFile, dict, list]:
    """(open tar, manifest, [(rel, member)]) after the pinned sha256 and every member were checked.

    Read from the descriptor whose content was hashed; nothing is written."""
    actual = seed.sha256_fd(fd)
    if actual != pinned:
        raise ValidationError(
            "sha256",
            "%s has sha256 %s, the pinned sha256 is %s: refusing an archive that is not the pinned one"
            % (path, actual, pinned),
        )
    os.lseek(fd, 0, os.SEEK_SET)
    handle = os.fdopen(os.dup(fd), "rb")
    try:
        tar = tarfile.open(fileobj=handle, mode="r:")  # noqa: SIM115 - returned to the caller, who closes it
    except tarfile.TarError as exc:
        handle.close()
        raise SnapshotError("snapshot: %s is not a tar archive (%s)" % (path, exc)) from None
    try:
        members, seen, manifest_member = [], set(), None
        for member in tar.getmembers():
            rel = _check_member(member)
            if rel in seen:
                raise SnapshotError("snapshot: member %r appears twice; refusing the archive" % member.name)
            seen.add(rel)
            if rel == MANIFEST_NAME:
                manifest_member = member
            else:
                members.append((rel, member))
        if manifest_member is None or manifest_member.size > MAX_MANIFEST:
            raise SnapshotError("snapshot: %s has no %s: not a nodefleet chain snapshot" % (path, MANIFEST_NAME))
        try:
            manifest = json.loads(tar.extractfile(manifest_member).read().decode("utf-8"))
        except ValueError as exc:
            raise SnapshotError("snapshot: the manifest is not JSON (%s)" % exc) from None
        check_manifest(manifest)
        listed = manifest["files"]
        regular = {rel: m for rel, m in members if not rel.endswith("/")}
        if set(regular) != set(listed):
            extra = sorted(set(regular) - set(listed))[:5]
            missing = sorted(set(listed) - set(regular))[:5]
            raise SnapshotError(
                "snapshot: archive members and manifest differ (not listed: %s; missing: %s)" % (extra, missing)
            )
        for rel, member in regular.items():
            if member.size != listed[rel]["size"]:
                raise SnapshotError(
                    "snapshot: %s has %d bytes, the manifest says %d" % (rel, member.size, listed[rel]["size"])
                )
        for top in seed.REQUIRED_DIRS:
            if not any(rel.startswith(top + "/") for rel in listed):
                raise SnapshotError("snapshot: the archive has no %s/: no chain to seed from" % top)
    except BaseException:
        tar.close()
        handle.close()
        raise
    return tar, manifest, members


def check_target(manifest: dict, network: str, prune: int) -> None:
    """Refuse a snapshot the target cannot use (ValidationError naming the target's option)."""
    if manifest["network"] != network:
        raise ValidationError(
            "network",
            "the snapshot is of %s, the target instance is on %s: a chain cannot seed another network"
            % (manifest["network"], network),
        )
    if manifest["pruned"] and not prune:
        raise ValidationError(
            "prune",
            "the snapshot is of a pruned chain and the target is not pruned: Core would refuse the block index (a "
            "pruned chain cannot become unpruned without a full reindex); set the target's prune or use an unpruned "
            "snapshot",
        )


def check_space(netdir: str, manifest: dict) -> None:
    need = sum(entry["size"] for entry in manifest["files"].values())
    probe = netdir
    while safe_fs.inspect_path(probe) == "missing":
        probe = os.path.dirname(probe)
    fs = os.statvfs(probe)
    free = fs.f_bavail * fs.f_frsize
    if free < need:
        raise ValidationError(
            "datadir", "%s has %d MiB free, the snapshot needs %d MiB" % (probe, free >> 20, (need >> 20) + 1)
        )


def extract(tar: tarfile.TarFile, members: list, manifest: dict, netdir: str, uid, gid) -> dict:
    """Extract into a staging dir in ``netdir``, verify each file against the manifest, rename into place.

    Returns {rel: sha256} of the files (for ``seed.write_marker``)."""
    written: dict = {}
    with safe_fs.opened_dir(netdir) as root:
        seed.rmtree_at(root, seed.STAGING)
        stage, _created = safe_fs.mkdir_at(root, seed.STAGING, 0o700)
        moved: list = []
        dirs = {"": stage}
        try:
            safe_fs.set_attrs_fd(stage, uid, gid, 0o700)

            def open_parent(parent: str) -> int:
                if parent not in dirs:
                    above, _sep, name = parent.rpartition("/")
                    fd, created = safe_fs.mkdir_at(open_parent(above), name, 0o700)
                    if created:
                        safe_fs.set_attrs_fd(fd, uid, gid, 0o700)
                    dirs[parent] = fd
                return dirs[parent]

            for rel, member in members:
                if rel.endswith("/"):
                    fd = open_parent(rel.rstrip("/"))
                    safe_fs.set_attrs_fd(fd, uid, gid, (member.mode & 0o755) | 0o700)
                    continue
                parent, _sep, name = rel.rpartition("/")
                source = tar.extractfile(member)
                digest = seed.write_verified(
                    source.read, open_parent(parent), name, (member.mode & 0o644) | 0o600, uid, gid, "snapshot:" + rel
                )
                if digest != manifest["files"][rel]["sha256"]:
                    raise SnapshotError(
                        "snapshot: %s has sha256 %s, the manifest says %s"
                        % (rel, digest, manifest["files"][rel]["sha256"])
                    )
                written[rel] = digest
            for top in seed.CHAIN_DIRS:
                if safe_fs.lstat_at(stage, top) is not None:
                    os.rename(top, top, src_dir_fd=stage, dst_dir_fd=root)
                    moved.append(top)
        except BaseException:
            for top in moved:  # nothing half-written
                with contextlib.suppress(OSError):
                    seed.rmtree_at(root, top)
            raise
        finally:
            for key, fd in dirs.items():
                if key:
                    os.close(fd)
            os.close(stage)
            with contextlib.suppress(OSError):
                seed.rmtree_at(root, seed.STAGING)
    return written
