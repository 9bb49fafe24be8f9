# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""module_utils/adopt.py: the previous daemon's settings, the datadir's lock holders, the ownership walk."""

from __future__ import annotations

import os
import shutil
import tempfile

from ansible_collections.nodefleet.bitcoin.plugins.module_utils import adopt

OLD_CONF = """# a user's own conf
regtest=1
server=1
txindex=1
rpcuser=alice
rpcpassword=s3cret
dbcache=4000
[regtest]
rpcport=18443
wallet=hot
[main]
dbcache=1
"""


def test_conf_settings_as_core_reads_them_with_secrets_hidden():
    found = {s["name"]: s["value"] for s in adopt.conf_settings(OLD_CONF, "regtest")}
    assert found == {
        "server": "1",
        "txindex": "1",
        "rpcuser": "alice",
        "rpcpassword": "(hidden)",
        "dbcache": "4000",  # [main] does not apply on regtest
        "rpcport": "18443",
        "wallet": "hot",
    }
    assert "s3cret" not in repr(adopt.conf_settings(OLD_CONF, "regtest"))


def test_command_line_settings_skip_where_and_how_options():
    argv = ["/opt/b/bin/bitcoind", "-conf=/etc/b.conf", "-datadir=/srv/b", "-daemon", "-pid=/run/b.pid", "-regtest"]
    argv += ["-txindex", "-nolisten", "-dbcache=300", "-rpcpassword=pw", "-dbcache=500"]
    found = {s["name"]: s["value"] for s in adopt.command_line_settings(argv)}
    assert found == {"txindex": "1", "listen": "0 (negated)", "dbcache": "500", "rpcpassword": "(hidden)"}


def test_unset_settings_are_the_ones_the_new_conf_does_not_set():
    previous = adopt.conf_settings(OLD_CONF, "regtest")
    new = ["chain", "server", "listen", "rpcauth", "rpcport", "port", "bind", "dbcache"]
    assert [s["name"] for s in adopt.unset_settings(previous, new)] == [
        "rpcpassword",
        "rpcuser",
        "txindex",
        "wallet",
    ]
    assert [s["name"] for s in adopt.unset_settings(previous, ["notxindex"]) if s["name"] == "txindex"] == []


def test_lock_holders_match_device_and_inode(tmp_path):
    lock = tmp_path / ".lock"
    lock.write_text("")
    st = os.stat(lock)
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"
    text = (
        f"1: POSIX  ADVISORY  WRITE 4242 {dev}:{st.st_ino} 0 EOF\n"
        f"1: -> POSIX  ADVISORY  WRITE 5555 {dev}:{st.st_ino} 0 EOF\n"  # a blocked waiter
        f"2: FLOCK  ADVISORY  WRITE 77 {dev}:{st.st_ino + 1} 0 EOF\n"  # another file
        f"3: POSIX  ADVISORY  WRITE 88 ff:ff:{st.st_ino} 0 EOF\n"  # same inode, other device
    )
    assert adopt.lock_holders(st, text) == [4242]
    assert adopt.lock_holders(None, text) == []


def test_traversal_problem_names_the_closed_parent():
    base = tempfile.mkdtemp(prefix="nodefleet-adopt-unit-", dir="/tmp")  # /tmp is 1777: enterable
    try:
        os.chmod(base, 0o711)  # noqa: S103 - enterable, as a real datadir's parents
        closed = os.path.join(base, "closed")
        os.makedirs(os.path.join(closed, "data"))
        os.chmod(closed, 0o700)
        stranger = 65534 if os.getuid() != 65534 else 65533
        assert adopt.traversal_problem(os.path.join(closed, "data"), stranger, set()) == closed
        os.chmod(closed, 0o701)  # search permission for others is enough
        assert adopt.traversal_problem(os.path.join(closed, "data"), stranger, set()) is None
    finally:
        shutil.rmtree(base)


def test_fix_ownership_counts_and_never_follows_links(tmp_path):
    data = tmp_path / "d"
    (data / "blocks").mkdir(parents=True)
    (data / "blocks" / "blk00000.dat").write_bytes(b"x")
    target = tmp_path / "target"
    target.write_text("t")
    (data / "link").symlink_to(target)
    os.link(target, data / "hard")
    report = adopt.fix_ownership(str(data), os.getuid(), os.getgid(), apply=False)
    assert report["changed"] == 0  # already ours
    assert report["symlinks"] == ["link"] and report["hardlinks"] == []
    if os.geteuid() == 0:
        before = os.stat(target)
        report = adopt.fix_ownership(str(data), 65534, 65534, apply=False)
        assert report["changed"] == 3 and report["hardlinks"] == ["hard"]  # d, blocks, blk00000.dat
        assert os.stat(data).st_uid == 0  # counting only
        report = adopt.fix_ownership(str(data), 65534, 65534, apply=True)
        assert os.stat(data / "blocks" / "blk00000.dat").st_uid == 65534
        assert os.stat(target).st_uid == before.st_uid
        assert adopt.fix_ownership(str(data), 65534, 65534, apply=False)["changed"] == 0
