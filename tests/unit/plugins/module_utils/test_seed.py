# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""module_utils/seed.py and bitcoind_seed's refusals, on temp dirs (no daemon).

The refusals are checked through ``bitcoind_seed.prepare`` (what the module runs before any
change) and must leave the target's directory exactly as it was."""

from __future__ import annotations

import os

import pytest
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import bitcoin_conf, seed
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import ValidationError
from ansible_collections.nodefleet.bitcoin.plugins.modules import bitcoind_seed


def conf(network: str, **settings) -> str:
    lines = [f"chain={network}"] if network != "main" else []
    lines += [f"{k}={v}" for k, v in settings.items()]
    return "\n".join(lines) + "\n"


def make_source(root, name="src", network="regtest", blk=4, **settings):
    datadir = root / name
    netdir = datadir / (bitcoin_conf.NETWORK_SUBDIR[network] or "")
    (netdir / "blocks" / "index").mkdir(parents=True)
    (netdir / "chainstate").mkdir()
    (datadir / "bitcoin.conf").write_text(conf(network, **settings))
    for i in range(blk):
        (netdir / "blocks" / f"blk{i:05d}.dat").write_bytes(os.urandom(1000 + i))
        (netdir / "blocks" / f"rev{i:05d}.dat").write_bytes(os.urandom(500 + i))
    (netdir / "blocks" / "xor.dat").write_bytes(os.urandom(8))
    for db in (netdir / "blocks" / "index", netdir / "chainstate"):
        (db / "000005.ldb").write_bytes(os.urandom(300))
        (db / "000007.log").write_bytes(os.urandom(30))
        (db / "CURRENT").write_text("MANIFEST-000006\n")
        (db / "MANIFEST-000006").write_bytes(os.urandom(40))
    (netdir / "peers.dat").write_bytes(b"p")
    (netdir / "onion_v3_private_key").write_text("ED25519-V3:secret")
    return datadir, netdir


def params(root, target="tgt", source="src", network="regtest", **extra):
    out = {
        "name": target,
        "datadir": str(root / target),
        "network": network,
        "prune": 0,
        "source_name": source,
        "source_datadir": str(root / source),
        "source_conf": None,
        "source_program": None,
        "stop_source": True,
        "stop_timeout": 30,
        "hard_links": True,
        "owner": None,
        "group": None,
        "server_url": "unix:///nonexistent/supervisor.sock",
    }
    out.update(extra)
    return out


def tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else None


# -- which files may be linked -------------------------------------------------------------


@pytest.mark.parametrize(
    ("rel", "linked"),
    [
        ("blocks/blk00000.dat", True),
        ("blocks/rev00007.dat", True),
        ("blocks/blk00008.dat", False),  # second newest: undo data may still be written to rev00008
        ("blocks/rev00008.dat", False),
        ("blocks/blk00009.dat", False),  # newest: appended
        ("blocks/rev00009.dat", False),
        ("blocks/xor.dat", False),
        ("blocks/index/000123.ldb", True),
        ("blocks/index/CURRENT", False),
        ("blocks/index/MANIFEST-000002", False),
        ("blocks/index/000124.log", False),
        ("blocks/index/LOG", False),
        ("blocks/index/LOCK", False),
        ("chainstate/004711.ldb", True),
        ("chainstate/000001.sst", True),
        ("chainstate/LOG.old", False),
        ("indexes/txindex/000010.ldb", True),
        ("indexes/blockfilter/basic/fltr00000.dat", False),
        ("blocks/sub/blk00000.dat", False),
        ("chainstate/blk00000.dat", False),
    ],
)
def test_only_files_never_written_again_are_linked(rel, linked):
    assert seed.link_decision(rel, newest_blk=9) is linked


def test_newest_block_file():
    assert seed.newest_block_file(["blk00000.dat", "rev00003.dat", "blk00002.dat", "xor.dat"]) == 2
    assert seed.newest_block_file(["xor.dat", "index"]) == -1
    assert seed.newest_block_file(["blk100000.dat", "blk99999.dat"]) == 100000


def test_network_of_reads_core_chain_selectors():
    assert bitcoin_conf.network_of("chain=signet\n") == "signet"
    assert bitcoin_conf.network_of("regtest=1\n") == "regtest"
    assert bitcoin_conf.network_of("testnet=1\n") == "test"
    assert bitcoin_conf.network_of("regtest=0\n") == "main"
    assert bitcoin_conf.network_of("") == "main"
    assert bitcoin_conf.network_of("chain=main\nchain=regtest\n") == "regtest"  # chain selectors: last wins


# -- refusals before anything changes --------------------------------------------------------


def refused(tmp_path, option, fragment, **extra):
    before_target = tree(tmp_path / extra.get("target", "tgt"))
    with pytest.raises(ValidationError) as exc:
        bitcoind_seed.prepare(params(tmp_path, **extra))
    assert exc.value.option == option, str(exc.value)
    assert fragment in str(exc.value), str(exc.value)
    assert tree(tmp_path / extra.get("target", "tgt")) == before_target
    return str(exc.value)


def test_different_networks_are_refused(tmp_path):
    make_source(tmp_path, network="signet")
    msg = refused(tmp_path, "network", "on signet, the target on regtest")
    assert "cannot seed another network" in msg


def test_pruned_source_for_unpruned_target_is_refused(tmp_path):
    make_source(tmp_path, prune=550)
    refused(tmp_path, "prune", "is pruned (prune=550) and the target is not")


def test_pruned_source_for_pruned_target_passes_the_chain_checks(tmp_path):
    make_source(tmp_path, prune=550)
    # gets as far as supervisord (which does not exist here)
    refused(tmp_path, "server_url", "cannot use supervisord", prune=1000)


def test_unpruned_source_for_pruned_target_passes_the_chain_checks(tmp_path):
    make_source(tmp_path)
    refused(tmp_path, "server_url", "cannot use supervisord", prune=550)


def test_target_that_is_not_empty_is_refused(tmp_path):
    make_source(tmp_path)
    (tmp_path / "tgt" / "regtest" / "chainstate").mkdir(parents=True)
    (tmp_path / "tgt" / "bitcoin.conf").write_text(conf("regtest"))
    msg = refused(tmp_path, "datadir", "is not empty (chainstate)")
    assert "refusing to seed over an existing chain" in msg


def test_main_target_with_only_its_conf_and_other_network_dirs_is_empty(tmp_path):
    make_source(tmp_path, network="main")
    (tmp_path / "tgt" / "regtest").mkdir(parents=True)
    (tmp_path / "tgt" / "bitcoin.conf").write_text("")
    n = seed.validate(params(tmp_path, network="main"))
    assert seed.target_state(n)[0] == "empty"
    (tmp_path / "tgt" / "blocks").mkdir()
    assert seed.target_state(n) == ("not_empty", None, ["blocks"])


def test_source_equal_to_target_is_refused(tmp_path):
    make_source(tmp_path)
    refused(tmp_path, "source_name", "cannot be seeded from itself", target="src")
    refused(tmp_path, "source_datadir", "source == target", source_datadir=str(tmp_path / "tgt/"))
    refused(tmp_path, "source_datadir", "are nested", datadir=str(tmp_path / "src" / "sub"))


def test_source_without_chain_is_refused(tmp_path):
    (tmp_path / "src").mkdir()
    refused(tmp_path, "source_datadir", "does not exist: not an instance's datadir")
    (tmp_path / "src" / "bitcoin.conf").write_text(conf("regtest"))
    refused(tmp_path, "source_datadir", "regtest/blocks is missing")


def test_source_with_blocksdir_is_refused(tmp_path):
    make_source(tmp_path, blocksdir="/srv/blocks")
    refused(tmp_path, "source_datadir", "uses blocksdir=/srv/blocks")


def test_symlinked_source_chain_is_refused(tmp_path):
    _datadir, netdir = make_source(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    os.rename(netdir / "chainstate", tmp_path / "elsewhere" / "chainstate")
    os.symlink(tmp_path / "elsewhere" / "chainstate", netdir / "chainstate")
    refused(tmp_path, "source_datadir", "is a symlink")


def test_symlink_inside_source_tree_is_refused(tmp_path):
    _datadir, netdir = make_source(tmp_path)
    os.symlink("/etc/shadow", netdir / "chainstate" / "000009.ldb")
    with pytest.raises(seed.SeedError, match=r"chainstate/000009\.ldb is a symlink"):
        seed.source_files(str(netdir))


def test_seeded_target_is_not_seeded_again(tmp_path):
    make_source(tmp_path)
    netdir = tmp_path / "tgt" / "regtest"
    netdir.mkdir(parents=True)
    (netdir / seed.MARKER).write_text('{"source": "src"}')
    (netdir / "blocks").mkdir()  # a running seeded instance: not empty, but seeded
    n = bitcoind_seed.prepare(params(tmp_path))
    assert n["state"] == "seeded" and n["marker"] == {"source": "src"}


# -- the copy ---------------------------------------------------------------------------------


def seed_tree(tmp_path, hard_links=True):
    _datadir, src_net = make_source(tmp_path)
    tgt_net = tmp_path / "tgt" / "regtest"
    tgt_net.mkdir(parents=True)
    files = seed.source_files(str(src_net))
    steps = seed.plan(files, None, None, hard_links)
    return src_net, tgt_net, steps


def test_build_links_old_files_copies_the_rest_and_verifies(tmp_path):
    src_net, tgt_net, steps = seed_tree(tmp_path)
    built = seed.build(str(src_net), str(tgt_net), steps, None, None)
    same_inode = {
        str(p.relative_to(tgt_net))
        for p in tgt_net.rglob("*")
        if p.is_file() and os.stat(p).st_ino == os.stat(src_net / p.relative_to(tgt_net)).st_ino
    }
    assert same_inode == {
        "blocks/blk00000.dat",
        "blocks/blk00001.dat",
        "blocks/rev00000.dat",
        "blocks/rev00001.dat",
        "blocks/index/000005.ldb",
        "chainstate/000005.ldb",
    }
    assert built["linked"] == 6 and built["copied"] == 11
    for rel, value in built["manifest"].items():
        assert (tgt_net / rel).read_bytes() == (src_net / rel).read_bytes()
        if value != "link":
            assert len(value) == 64
    # the node state is not copied; no staging dir left behind
    assert sorted(os.listdir(tgt_net)) == ["blocks", "chainstate"]


def test_build_without_hard_links_copies_everything(tmp_path):
    src_net, tgt_net, steps = seed_tree(tmp_path, hard_links=False)
    built = seed.build(str(src_net), str(tgt_net), steps, None, None)
    assert built["linked"] == 0 and built["copied"] == 17
    for p in tgt_net.rglob("*"):
        if p.is_file():
            assert os.stat(p).st_ino != os.stat(src_net / p.relative_to(tgt_net)).st_ino


def test_a_file_owned_by_another_user_than_the_target_wants_is_copied(tmp_path):
    _datadir, src_net = make_source(tmp_path)
    files = seed.source_files(str(src_net))
    steps = seed.plan(files, os.getuid() + 1, None, True)
    assert all(how != "link" for _rel, _st, how in steps)


def test_a_filesystem_without_links_falls_back_to_copies(tmp_path, monkeypatch):
    src_net, tgt_net, steps = seed_tree(tmp_path)
    real_link = os.link

    def no_link(*args, **kwargs):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    built = seed.build(str(src_net), str(tgt_net), steps, None, None)
    monkeypatch.setattr(os, "link", real_link)
    assert built["linked"] == 0 and built["fallback_copies"] == 6 and built["copied"] == 17


def test_checksum_mismatch_leaves_the_target_as_it_was(tmp_path, monkeypatch):
    src_net, tgt_net, steps = seed_tree(tmp_path)
    calls = {"n": 0}
    real = seed.sha256_fd

    def corrupt(fd):
        calls["n"] += 1
        return "0" * 64 if calls["n"] == 5 else real(fd)

    monkeypatch.setattr(seed, "sha256_fd", corrupt)
    with pytest.raises(seed.SeedError, match="checksum mismatch for"):
        seed.build(str(src_net), str(tgt_net), steps, None, None)
    assert os.listdir(tgt_net) == []  # no blocks/, no chainstate/, no staging dir


def test_a_staging_dir_left_by_an_interrupted_run_is_replaced(tmp_path):
    src_net, tgt_net, steps = seed_tree(tmp_path)
    (tgt_net / seed.STAGING / "blocks").mkdir(parents=True)
    (tgt_net / seed.STAGING / "blocks" / "junk").write_text("x")
    n = seed.validate(params(tmp_path))
    assert seed.target_state(n)[0] == "empty"
    seed.build(str(src_net), str(tgt_net), steps, None, None)
    assert not (tgt_net / "blocks" / "junk").exists() and not (tgt_net / seed.STAGING).exists()


def test_marker_and_sums(tmp_path):
    src_net, tgt_net, steps = seed_tree(tmp_path)
    built = seed.build(str(src_net), str(tgt_net), steps, None, None)
    seed.write_marker(str(tgt_net), {"source": "src"}, built["manifest"], None, None)
    sums = (tgt_net / seed.SUMS).read_text().splitlines()
    assert len(sums) == built["copied"] and all(line.split("  ")[1] in built["manifest"] for line in sums)
    assert oct(os.stat(tgt_net / seed.MARKER).st_mode & 0o777) == "0o600"
    assert seed.read_marker(str(tgt_net)) == {"source": "src"}


def test_datadir_lock_is_exclusive(tmp_path):
    """The lock is Core's (fcntl on <netdir>/.lock): a second holder in another process is refused."""
    import subprocess
    import sys

    netdir = tmp_path / "n"
    netdir.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl,os,sys,time; fd=os.open(sys.argv[1], os.O_RDWR|os.O_CREAT); "
            "fcntl.lockf(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(30)",
            str(netdir / ".lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert seed.lock_is_free(str(netdir)) is False
        with pytest.raises(seed.SeedError, match="a bitcoind is running on"), seed.datadir_lock(str(netdir), "datadir"):
            pass
    finally:
        holder.kill()
        holder.wait()
    assert seed.lock_is_free(str(netdir)) is True


class NoSupervisor:
    def call(self, *args):  # pragma: no cover - a stopped source is never stopped or started
        raise AssertionError(f"supervisord called: {args}")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_everything_the_seed_creates_belongs_to_the_daemon_user(tmp_path):
    """Regression (found on the fleet): the target's .lock was created root-owned, and Core, running as
    the bitcoin user, refused the datadir. Every entry the seed creates is the owner's."""
    make_source(tmp_path)
    for path in [tmp_path / "src", *(tmp_path / "src").rglob("*")]:
        os.lchown(path, 65534, 65534)
    p = params(tmp_path, owner="nobody", group=None)
    n = seed.validate(p)
    n.update(uid=65534, gid=65534, netdir=str(tmp_path / "tgt" / "regtest"), running=False, client=NoSupervisor())
    n["source"] = seed.read_source(n)
    out = bitcoind_seed.run_seed(n)
    assert out["source_downtime"] == 0 and out["files"]["linked"] == 6
    created = [tmp_path / "tgt", *(tmp_path / "tgt").rglob("*")]
    assert {(p.name, os.lstat(p).st_uid, os.lstat(p).st_gid) for p in created if os.lstat(p).st_uid != 65534} == set()
    assert (tmp_path / "tgt" / "regtest" / ".lock").exists()
    assert os.lstat(tmp_path / "src" / "regtest" / ".lock").st_uid == 65534  # created like its directory


def test_a_lock_file_it_creates_is_owned_like_its_directory(tmp_path):
    netdir = tmp_path / "n"
    netdir.mkdir()
    with seed.datadir_lock(str(netdir), "datadir"):
        pass
    st, dir_st = os.stat(netdir / ".lock"), os.stat(netdir)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (dir_st.st_uid, dir_st.st_gid, 0o600)
