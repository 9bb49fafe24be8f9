# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""module_utils/snapshot.py on temp dirs (no daemon): the LevelDB reader on hand-built logs and tables,
the chain tip of a synthetic datadir, archive round trip, and every refusal of a member or manifest.
The same code against real Core's files: tests/integration/test_snapshot_real_core.py."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile

import pytest
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import seed, snapshot
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import ValidationError

# --------------------------------------------------------------------------- encoders (test side)


def lvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def core_varint_enc(n: int) -> bytes:
    """Core's WriteVarInt."""
    tmp = []
    length = 0
    while True:
        tmp.append((n & 0x7F) | (0x80 if length else 0x00))
        if n <= 0x7F:
            break
        n = (n >> 7) - 1
        length += 1
    return bytes(reversed(tmp))


def batch(seq: int, entries) -> bytes:
    body = bytearray(seq.to_bytes(8, "little") + len(entries).to_bytes(4, "little"))
    for key, value in entries:
        if value is None:
            body += b"\x00" + lvarint(len(key)) + key
        else:
            body += b"\x01" + lvarint(len(key)) + key + lvarint(len(value)) + value
    return bytes(body)


def log_file(records) -> bytes:
    """LevelDB log framing (checksums zero: the reader does not check them), split at 32 KiB blocks."""
    out = bytearray()
    for record in records:
        rest, first = record, True
        while True:
            left = 32768 - len(out) % 32768
            if left < 7:
                out += b"\x00" * left
                continue
            piece, rest = rest[: left - 7], rest[left - 7 :]
            kind = (1 if first else 4) if not rest else (2 if first else 3)
            out += b"\x00" * 4 + len(piece).to_bytes(2, "little") + bytes([kind]) + piece
            first = False
            if not rest:
                break
    return bytes(out)


def ikey(user: bytes, seq: int, kind: int = 1) -> bytes:
    return user + ((seq << 8) | kind).to_bytes(8, "little")


def block(entries) -> bytes:
    out = bytearray()
    for key, value in entries:
        out += lvarint(0) + lvarint(len(key)) + lvarint(len(value)) + key + value
    return bytes(out) + (0).to_bytes(4, "little") + (1).to_bytes(4, "little")


def table_file(entries, per_block: int = 2) -> bytes:
    """A LevelDB table: data blocks of ``per_block`` sorted entries, an index block, an empty metaindex."""
    out = bytearray()
    index = []
    for i in range(0, len(entries), per_block):
        chunk = entries[i : i + per_block]
        data = block(chunk)
        index.append((chunk[-1][0], lvarint(len(out)) + lvarint(len(data))))
        out += data + b"\x00" + b"\x00" * 4
    meta = block([])
    meta_handle = lvarint(len(out)) + lvarint(len(meta))
    out += meta + b"\x00" * 5
    idx = block(index)
    idx_handle = lvarint(len(out)) + lvarint(len(idx))
    out += idx + b"\x00" * 5
    footer = (meta_handle + idx_handle).ljust(40, b"\x00") + (0xDB4775248B80FB57).to_bytes(8, "little")
    return bytes(out + footer)


OBF = bytes([14]) + b"\x00obfuscate_key"
PRUNED = b"F" + bytes([16]) + b"prunedblockfiles"


def xor(data: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % len(key)] for i, b in enumerate(data))


def make_netdir(tmp_path, height=321, pruned=False, unfinished=False, tip_in_table=False):
    """A network dir whose chainstate/index say: best block = sha256('tip'), at ``height``."""
    netdir = tmp_path / "regtest"
    (netdir / "chainstate").mkdir(parents=True)
    (netdir / "blocks" / "index").mkdir(parents=True)
    key = bytes.fromhex("8900a4644532d921")
    best = hashlib.sha256(b"tip").digest()
    old = hashlib.sha256(b"old").digest()
    chain = [(OBF, bytes([8]) + key), (b"B", xor(old, key))]
    newer = [(b"B", xor(best, key))] + ([(b"H", xor(b"\x01" * 32, key))] if unfinished else [])
    if tip_in_table:  # the newest B in a table, an older one in the log (lower sequence)
        entries = sorted([(ikey(k, 10), v) for k, v in chain[:1] + newer], key=lambda e: e[0][:-8])
        (netdir / "chainstate" / "000005.ldb").write_bytes(table_file(entries))
        (netdir / "chainstate" / "000003.log").write_bytes(log_file([batch(1, chain[1:])]))
    else:
        (netdir / "chainstate" / "000003.log").write_bytes(log_file([batch(1, chain), batch(5, newer)]))
    record = core_varint_enc(289900) + core_varint_enc(height) + core_varint_enc(29) + b"rest"
    index = sorted(
        [(ikey(b"b" + best, 7), record), (ikey(b"b" + old, 6), core_varint_enc(1) + core_varint_enc(1))]
        + ([(ikey(PRUNED, 8), b"1")] if pruned else []),
        key=lambda e: e[0][:-8],
    )
    (netdir / "blocks" / "index" / "000004.ldb").write_bytes(table_file(index))
    (netdir / "blocks" / "blk00000.dat").write_bytes(b"blocks" * 100)
    (netdir / "blocks" / "index" / "CURRENT").write_text("MANIFEST-000002\n")
    return netdir, best[::-1].hex()


# --------------------------------------------------------------------------- the LevelDB reader


@pytest.mark.parametrize("n", [0, 1, 127, 128, 255, 256, 16383, 16384, 2**32, 840000])
def test_core_varint_round_trip(n):
    assert snapshot.core_varint(core_varint_enc(n) + b"tail") == (n, len(core_varint_enc(n)))


def test_core_varint_known_encodings():
    assert core_varint_enc(128) == b"\x80\x00" and snapshot.core_varint(b"\x80\x00")[0] == 128
    assert snapshot.core_varint(b"\xff\x00")[0] == 16384
    with pytest.raises(ValueError):
        snapshot.core_varint(b"\x80")


def test_log_records_reassemble_across_blocks_and_stop_at_a_torn_tail():
    big = batch(3, [(b"k", b"v" * 70000)])
    data = log_file([batch(1, [(b"a", b"1")]), big])
    assert len(data) > 65536
    records = list(snapshot.log_records(data))
    assert records == [batch(1, [(b"a", b"1")]), big]
    assert list(snapshot.log_records(data[:-10])) == [batch(1, [(b"a", b"1")])]


def test_newest_sequence_wins_and_a_deletion_hides(tmp_path):
    db = tmp_path / "db"
    db.mkdir()
    (db / "000003.log").write_bytes(log_file([batch(1, [(b"a", b"old"), (b"b", b"x")]), batch(9, [(b"b", None)])]))
    (db / "000002.ldb").write_bytes(table_file([(ikey(b"a", 5), b"table"), (ikey(b"c", 4), b"c")]))
    (db / "000001.log").write_bytes(log_file([batch(7, [(b"c", b"newer")])]))
    (db / "LOG").write_text("not a log file")
    got = snapshot.leveldb_get(str(db), [b"a", b"b", b"c", b"zz"])
    assert got == {b"a": b"table", b"c": b"newer"}


def test_table_lookup_finds_keys_in_every_data_block(tmp_path):
    entries = [(ikey(b"k%03d" % i, 100 + i), b"v%d" % i) for i in range(9)]
    path = tmp_path / "000009.ldb"
    path.write_bytes(table_file(entries, per_block=2))
    fd = os.open(path, os.O_RDONLY)
    try:
        found = snapshot.table_lookup(fd, [b"k000", b"k005", b"k008", b"k0055", b"zzz"], str(path))
    finally:
        os.close(fd)
    assert found == {b"k000": (100, b"v0"), b"k005": (105, b"v5"), b"k008": (108, b"v8")}


def test_a_compressed_or_foreign_table_is_an_error(tmp_path):
    path = tmp_path / "000001.ldb"
    path.write_bytes(b"x" * 100)
    with pytest.raises(ValueError, match="not a LevelDB table"):
        snapshot.leveldb_get(str(tmp_path), [b"a"])
    raw = bytearray(table_file([(ikey(b"a", 1), b"1")]))
    raw[len(block([(ikey(b"a", 1), b"1")]))] = 1  # the data block's trailer says snappy
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="compressed table block"):
        snapshot.leveldb_get(str(tmp_path), [b"a"])


@pytest.mark.parametrize("tip_in_table", [False, True])
def test_chain_tip_of_a_stopped_datadir(tmp_path, tip_in_table):
    netdir, best = make_netdir(tmp_path, height=321, tip_in_table=tip_in_table)
    assert snapshot.chain_tip(str(netdir)) == {"best_block_hash": best, "height": 321, "pruned_files": False}


def test_chain_tip_reports_pruned_files(tmp_path):
    netdir, _best = make_netdir(tmp_path, pruned=True)
    assert snapshot.chain_tip(str(netdir))["pruned_files"] is True


def test_an_unfinished_flush_is_refused(tmp_path):
    netdir, _best = make_netdir(tmp_path, unfinished=True)
    with pytest.raises(snapshot.SnapshotError, match=r"^source_datadir: .*unfinished flush"):
        snapshot.chain_tip(str(netdir))


def test_a_best_block_missing_from_the_index_is_refused(tmp_path):
    netdir, _best = make_netdir(tmp_path)
    (netdir / "blocks" / "index" / "000004.ldb").write_bytes(table_file([(ikey(b"bzz", 1), b"\x01\x01")]))
    with pytest.raises(snapshot.SnapshotError, match="has no entry for the chainstate's best block"):
        snapshot.chain_tip(str(netdir))


# --------------------------------------------------------------------------- archives


def make_archive(tmp_path, **meta):
    netdir, best = make_netdir(tmp_path / "src")
    files = seed.source_files(str(netdir))
    out = tmp_path / "snap.tar"
    fd = os.open(out, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        base = {"network": "regtest", "height": 321, "best_block_hash": best, "pruned": False, "source": "src"}
        manifest = snapshot.write_archive(str(netdir), files, fd, {**base, **meta})
        digest = seed.sha256_fd(fd)
    finally:
        os.close(fd)
    return netdir, out, digest, manifest


def open_checked(path, digest):
    fd = snapshot.open_archive(str(path))
    try:
        return snapshot.read_archive(fd, digest, str(path))
    finally:
        os.close(fd)


def test_archive_round_trip_extracts_exactly_the_source(tmp_path):
    netdir, out, digest, manifest = make_archive(tmp_path)
    assert set(manifest["files"]) == {
        "blocks/blk00000.dat",
        "blocks/index/000004.ldb",
        "blocks/index/CURRENT",
        "chainstate/000003.log",
    }
    tar, read, members = open_checked(out, digest)
    assert read == manifest
    target = tmp_path / "tgt" / "regtest"
    target.mkdir(parents=True)
    written = snapshot.extract(tar, members, read, str(target), None, None)
    tar.close()
    for rel, entry in manifest["files"].items():
        assert (target / rel).read_bytes() == (netdir / rel).read_bytes()
        assert written[rel] == entry["sha256"] == hashlib.sha256((netdir / rel).read_bytes()).hexdigest()
    assert sorted(os.listdir(target)) == ["blocks", "chainstate"]  # staging gone


def test_a_wrong_pin_is_refused_naming_sha256(tmp_path):
    _netdir, out, _digest, _manifest = make_archive(tmp_path)
    with pytest.raises(ValidationError) as err:
        open_checked(out, "0" * 64)
    assert err.value.option == "sha256" and "is not the pinned one" in str(err.value)


def test_a_file_others_may_write_or_a_symlink_is_refused(tmp_path):
    _netdir, out, _digest, _manifest = make_archive(tmp_path)
    os.chmod(out, 0o620)
    with pytest.raises(ValidationError, match="writable by nobody else") as err:
        snapshot.open_archive(str(out))
    assert err.value.option == "snapshot"
    os.chmod(out, 0o600)
    os.symlink(out, tmp_path / "link.tar")
    with pytest.raises(ValidationError, match="symlink") as err:
        snapshot.open_archive(str(tmp_path / "link.tar"))
    with pytest.raises(ValidationError, match="does not exist"):
        snapshot.open_archive(str(tmp_path / "nope.tar"))


def rewrite(src, dst, extra=(), edit=None, drop=()):
    with tarfile.open(src) as tar, tarfile.open(dst, "w") as new:
        for member in tar.getmembers():
            if member.name in drop:
                continue
            data = tar.extractfile(member).read() if member.isreg() else None
            if member.name == snapshot.MANIFEST_NAME and edit:
                manifest = json.loads(data)
                edit(manifest)
                data = json.dumps(manifest).encode()
                member.size = len(data)
            new.addfile(member, io.BytesIO(data) if data is not None else None)
        for info, data in extra:
            new.addfile(info, io.BytesIO(data) if data is not None else None)
    os.chmod(dst, 0o600)
    return hashlib.sha256(dst.read_bytes()).hexdigest()


def member(name, kind=tarfile.REGTYPE, data=b"x", linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, (data if kind == tarfile.REGTYPE else None)


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (member("/etc/evil"), "absolute or unsafe path"),
        (member("blocks/../../evil"), "'..'"),
        (member("./blocks/x"), "'..', '.' or empty"),
        (member("blocks/evil", tarfile.SYMTYPE, None, "/etc"), "is a symlink (to '/etc')"),
        (member("blocks/evil", tarfile.SYMTYPE, None, "blk00000.dat"), "is a symlink"),  # even one pointing inside
        (member("chainstate/evil", tarfile.LNKTYPE, None, "../../etc/shadow"), "is a hard link"),
        (member("blocks/dev", tarfile.CHRTYPE, None), "not a regular file or directory"),
        (member("wallets/w.dat"), "is outside blocks/, chainstate/, indexes/"),
        (member("blocks/blk00000.dat"), "appears twice"),
        (member("blocks/unlisted.dat"), "archive members and manifest differ"),
    ],
)
def test_unsafe_members_are_refused_before_anything_is_written(tmp_path, extra, reason):
    _netdir, out, _digest, _manifest = make_archive(tmp_path)
    bad = tmp_path / "bad.tar"
    digest = rewrite(out, bad, extra=[extra])
    with pytest.raises(snapshot.SnapshotError) as err:
        open_checked(bad, digest)
    assert str(err.value).startswith("snapshot: ") and reason in str(err.value), str(err.value)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda m: m.update(format=2), "not a format-1"),
        (lambda m: m.update(network="moon"), "no known network"),
        (lambda m: m.update(height=-1), "no valid height"),
        (lambda m: m.update(best_block_hash="xyz"), "no valid best_block_hash"),
        (lambda m: m.pop("pruned"), "whether the chain is pruned"),
        (lambda m: m["files"]["blocks/blk00000.dat"].update(size=1), "the manifest says 1"),
        (lambda m: m["files"].pop("blocks/blk00000.dat"), "members and manifest differ"),
    ],
)
def test_a_bad_manifest_is_refused(tmp_path, edit, reason):
    _netdir, out, _digest, _manifest = make_archive(tmp_path)
    bad = tmp_path / "bad.tar"
    digest = rewrite(out, bad, edit=edit)
    with pytest.raises(snapshot.SnapshotError, match=r"^snapshot: ") as err:
        open_checked(bad, digest)
    assert reason in str(err.value)


def test_an_archive_without_manifest_or_chainstate_is_refused(tmp_path):
    _netdir, out, _digest, _manifest = make_archive(tmp_path)
    bad = tmp_path / "bad.tar"
    with pytest.raises(snapshot.SnapshotError, match=r"has no nodefleet-chain-snapshot\.json"):
        open_checked(bad, rewrite(out, bad, drop=(snapshot.MANIFEST_NAME,)))

    def no_chainstate(m):
        m["files"].pop("chainstate/000003.log")

    digest = rewrite(out, bad, edit=no_chainstate, drop=("chainstate/000003.log", "chainstate"))
    with pytest.raises(snapshot.SnapshotError, match="has no chainstate/"):
        open_checked(bad, digest)


def test_a_member_whose_content_is_not_the_manifests_leaves_the_target_as_it_was(tmp_path):
    _netdir, out, _digest, _manifest = make_archive(tmp_path)

    def wrong_sum(m):
        m["files"]["chainstate/000003.log"]["sha256"] = "1" * 64

    bad = tmp_path / "bad.tar"
    tar, read, members = open_checked(bad, rewrite(out, bad, edit=wrong_sum))
    target = tmp_path / "tgt"
    target.mkdir()
    with pytest.raises(snapshot.SnapshotError, match=r"chainstate/000003\.log has sha256"):
        snapshot.extract(tar, members, read, str(target), None, None)
    tar.close()
    assert os.listdir(target) == []


def test_target_checks_name_network_and_prune():
    manifest = {"network": "regtest", "pruned": True}
    with pytest.raises(ValidationError) as err:
        snapshot.check_target(manifest, "signet", 550)
    assert err.value.option == "network"
    with pytest.raises(ValidationError) as err:
        snapshot.check_target(manifest, "regtest", 0)
    assert err.value.option == "prune"
    snapshot.check_target(manifest, "regtest", 550)
    snapshot.check_target(dict(manifest, pruned=False), "regtest", 0)


def test_check_sha256():
    assert snapshot.check_sha256("sha256", "SHA256:" + "AB" * 32) == "ab" * 32
    for bad in ("", "ab" * 31, "zz" * 32, None):
        with pytest.raises(ValidationError) as err:
            snapshot.check_sha256("sha256", bad)
        assert err.value.option == "sha256"
