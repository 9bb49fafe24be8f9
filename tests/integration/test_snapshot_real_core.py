# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Chain snapshot files against the real Bitcoin Core (../shared/bitcoin-core), no supervisord needed.

A regtest source (the bitcoin.conf bitcoind_instance renders, ``-fastprune`` block files) mined to
SOURCE_HEIGHT, stopped and started once (LevelDB tables on disk, not only logs) and stopped.
``bitcoind_chain_snapshot`` (through the ``ansible`` CLI) archives it: the manifest's height and best
block hash - read from the stopped datadir - are the ones the source reported over RPC. A new instance
seeded by ``bitcoind_seed_snapshot`` reports the same best block hash right after its start and follows
the source (addnode) when a block is mined there. Then every refusal: a running source, the pinned
sha256 wrong, another network, a pruned snapshot for an unpruned target, a non-empty target, and
archives with an absolute path, a ``..``, a symlink or a hard link pointing out of the target - each
naming its option, with the target left exactly as it was.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from ansible_collections.nodefleet.bitcoin.tests.integration.ansible_cli import run_collection_module
from ansible_collections.nodefleet.bitcoin.tests.integration.real_core import (  # noqa: F401
    Node,
    real_core,
    wait_for,
)
from ansible_collections.nodefleet.bitcoin.tests.integration.test_seed_real_core import (
    REGTEST_ADDR,
    USER,
    password_for,
    write_instance,
)

pytestmark = pytest.mark.integration

SOURCE_HEIGHT = 300  # >= 200


def node_for(core, inst: dict) -> Node:
    return Node(core.bitcoind, inst["datadir"], inst["rpc"], auth=(USER, password_for(inst["name"])))


def rpc_or_none(node: Node, method: str, params=()):
    try:
        status, reply, _ = node.rpc(method, params)
    except OSError:
        return None
    if status != 200 or not reply or reply.get("error") is not None:
        return None
    return reply["result"]


def listing(path: Path) -> list:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


@pytest.fixture(scope="module")
def made(real_core, tmp_path_factory):  # noqa: F811
    """The stopped source at SOURCE_HEIGHT and its snapshot (made once for the module)."""
    root = tmp_path_factory.mktemp("snap")
    src = write_instance(root, "src")
    node = node_for(real_core, src)
    try:
        node.start()
        node.wait_rpc()
        for _ in range(SOURCE_HEIGHT // 100):
            node.result("generatetoaddress", [100, REGTEST_ADDR])
        assert node.stop() == 0
        node.start()  # LevelDB turns its logs into table files on open
        node.wait_rpc()
        tip = node.result("getbestblockhash")
        assert node.result("getblockcount") == SOURCE_HEIGHT
        # a running source is refused, nothing written
        dest = root / "out" / "src.tar"
        dest.parent.mkdir()
        args = {"source_name": "src", "source_datadir": str(src["datadir"]), "dest": str(dest)}
        refused, _ = run_collection_module("bitcoind_chain_snapshot", args)
        assert refused.get("failed") is True and refused["msg"].startswith("source_datadir: a bitcoind is running")
        assert list(dest.parent.iterdir()) == []
        assert node.stop() == 0
    finally:
        node.kill()
    checked, _ = run_collection_module("bitcoind_chain_snapshot", args, check=True, diff=True, expect_success=True)
    assert checked["changed"] is True and checked["height"] == SOURCE_HEIGHT and checked["best_block_hash"] == tip
    assert list(dest.parent.iterdir()) == []
    result, _ = run_collection_module("bitcoind_chain_snapshot", args, expect_success=True)
    assert result["changed"] is True, result
    print(f"\n[snapshot] {result['summary']}")
    again, _ = run_collection_module("bitcoind_chain_snapshot", args, expect_success=True)
    assert again["changed"] is False and again["sha256"] == result["sha256"]
    return {"core": real_core, "root": root, "src": src, "tip": tip, "dest": dest, "result": result}


def seed_args(target: dict, archive: Path, sha256: str, **extra) -> dict:
    return {
        "name": target["name"],
        "datadir": str(target["datadir"]),
        "network": target["network"],
        "snapshot": str(archive),
        "sha256": sha256,
        **extra,
    }


def test_snapshot_manifest_is_the_stopped_source(made):
    result, dest = made["result"], made["dest"]
    assert (result["network"], result["height"], result["best_block_hash"]) == ("regtest", SOURCE_HEIGHT, made["tip"])
    assert result["pruned"] is False and result["files"]["files"] > 5
    # the pinned hash beside the archive verifies with sha256sum itself
    check = subprocess.run(["sha256sum", "--strict", "-c", dest.name + ".sha256"], cwd=dest.parent, capture_output=True)
    assert check.returncode == 0 and check.stdout.decode().strip() == f"{dest.name}: OK"
    assert (dest.parent / (dest.name + ".sha256")).read_text().split()[0] == result["sha256"]
    with tarfile.open(dest) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("nodefleet-chain-snapshot.json").read())
    assert {n.split("/")[0] for n in names} == {"blocks", "chainstate", "nodefleet-chain-snapshot.json"}
    assert any(n.endswith(".ldb") for n in names if n.startswith("chainstate/"))  # the tip was read from tables
    assert not any(n.endswith(("peers.dat", ".lock", "bitcoin.conf", "debug.log")) for n in names)
    assert manifest["best_block_hash"] == made["tip"] and manifest["source"] == "src"
    netdir = made["src"]["datadir"] / "regtest"
    for rel, entry in manifest["files"].items():
        assert (netdir / rel).stat().st_size == entry["size"], rel


def test_seeded_instance_starts_at_the_snapshot_tip_and_follows_the_source(made, tmp_path):
    core, src, dest, sha = made["core"], made["src"], made["dest"], made["result"]["sha256"]
    tgt = write_instance(tmp_path, "tgt", addnode=[f"127.0.0.1:{src['p2p']}"])
    args = seed_args(tgt, dest, sha)
    checked, _ = run_collection_module("bitcoind_seed_snapshot", args, check=True, diff=True, expect_success=True)
    assert (
        checked["changed"] is True and checked["height"] == SOURCE_HEIGHT and checked["best_block_hash"] == made["tip"]
    )
    assert listing(tgt["datadir"]) == ["bitcoin.conf"]
    result, _ = run_collection_module("bitcoind_seed_snapshot", args, expect_success=True)
    assert result["changed"] is True and result["seeded"] is True, result
    print(f"\n[seed-snapshot] {result['summary']}")
    netdir = tgt["datadir"] / "regtest"
    marker = json.loads((netdir / ".nodefleet-seed.json").read_text())
    assert marker["snapshot_sha256"] == sha and marker["height"] == SOURCE_HEIGHT
    check = subprocess.run(["sha256sum", "--strict", "-c", ".nodefleet-seed.sha256"], cwd=netdir, capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert not (netdir / ".nodefleet-seed-staging").exists()

    target, source = node_for(core, tgt), node_for(core, src)
    try:
        source.start()  # up first: addnode retries a failed peer only after a minute
        source.wait_rpc()
        target.start()
        target.wait_rpc()
        assert target.result("getbestblockhash") == made["tip"]  # right after the start
        assert target.result("getblockcount") == SOURCE_HEIGHT
        wait_for(lambda: rpc_or_none(target, "getconnectioncount") == 1, 60, "the seed connects to the source")
        mined = source.result("generatetoaddress", [1, REGTEST_ADDR])
        wait_for(lambda: rpc_or_none(target, "getbestblockhash") == mined[-1], 60, "the seed follows the source")
        assert target.stop() == 0
        assert source.stop() == 0
    finally:
        target.kill()
        source.kill()
    again, _ = run_collection_module("bitcoind_seed_snapshot", args, expect_success=True)
    assert again["changed"] is False and again["summary"] == f"already seeded from {dest}"


def _rewrite(src_archive: Path, out: Path, manifest_edit=None, extra=()) -> str:
    """A copy of the archive, its manifest edited and ``extra`` members appended; returns its sha256."""
    with tarfile.open(src_archive) as tar, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as new:
        for member in tar.getmembers():
            data = tar.extractfile(member).read() if member.isreg() else None
            if member.name == "nodefleet-chain-snapshot.json" and manifest_edit:
                manifest = json.loads(data)
                manifest_edit(manifest)
                data = json.dumps(manifest).encode()
                member.size = len(data)
            new.addfile(member, io.BytesIO(data) if data is not None else None)
        for member, data in extra:
            new.addfile(member, io.BytesIO(data) if data is not None else None)
    os.chmod(out, 0o600)
    return subprocess.run(["sha256sum", str(out)], capture_output=True, text=True, check=True).stdout.split()[0]


def _member(name: str, kind=tarfile.REGTYPE, data: bytes | None = b"x", linkname: str = ""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = len(data) if kind == tarfile.REGTYPE and data is not None else 0
    return info, (data if kind == tarfile.REGTYPE else None)


REFUSALS = {
    "sha256_mismatch": ("sha256:", "is not the pinned one"),
    "other_network": ("network:", "the snapshot is of regtest, the target instance is on signet"),
    "pruned_for_unpruned": ("prune:", "pruned chain and the target is not pruned"),
    "target_not_empty": ("datadir:", "is not empty (peers.dat)"),
    "absolute_member": ("snapshot:", "absolute or unsafe path"),
    "dotdot_member": ("snapshot:", "'..'"),
    "symlink_member": ("snapshot:", "is a symlink (to '/etc/cron.d')"),
    "hardlink_member": ("snapshot:", "is a hard link (to '../../../etc/shadow')"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals_name_the_option_and_write_nothing(made, tmp_path, case):
    dest, sha = made["dest"], made["result"]["sha256"]
    network = "signet" if case == "other_network" else "regtest"
    tgt = write_instance(tmp_path, "tgt", network=network)
    archive = dest
    if case == "sha256_mismatch":
        sha = "0" * 64
    elif case == "pruned_for_unpruned":
        archive = tmp_path / "pruned.tar"
        sha = _rewrite(dest, archive, manifest_edit=lambda m: m.update(pruned=True, prune=550))
    elif case == "target_not_empty":
        (tgt["datadir"] / "regtest").mkdir()
        (tgt["datadir"] / "regtest" / "peers.dat").write_bytes(b"peers")
    elif case.endswith("_member"):
        extra = {
            "absolute_member": _member("/tmp/evil-snapshot-file"),
            "dotdot_member": _member("blocks/../../evil"),
            "symlink_member": _member("blocks/evil", tarfile.SYMTYPE, None, "/etc/cron.d"),
            "hardlink_member": _member("chainstate/evil", tarfile.LNKTYPE, None, "../../../etc/shadow"),
        }[case]
        archive = tmp_path / f"{case}.tar"
        sha = _rewrite(dest, archive, extra=[extra])
    before = listing(tgt["datadir"])
    result, _ = run_collection_module("bitcoind_seed_snapshot", seed_args(tgt, archive, sha))
    option, reason = REFUSALS[case]
    assert result.get("failed") is True, result
    assert result["msg"].startswith(option) and reason in result["msg"], result["msg"]
    assert listing(tgt["datadir"]) == before  # nothing written, not even the network dir or a staging dir
    assert not Path("/tmp/evil-snapshot-file").exists()
    # the same refusal in check mode
    checked, _ = run_collection_module("bitcoind_seed_snapshot", seed_args(tgt, archive, sha), check=True)
    assert checked.get("failed") is True and checked["msg"].startswith(option)


def test_a_snapshot_file_others_may_write_is_refused(made, tmp_path):
    archive = tmp_path / "open.tar"
    archive.write_bytes(made["dest"].read_bytes())
    archive.chmod(0o666)
    tgt = write_instance(tmp_path, "tgt")
    result, _ = run_collection_module("bitcoind_seed_snapshot", seed_args(tgt, archive, made["result"]["sha256"]))
    assert (
        result.get("failed") is True and result["msg"].startswith("snapshot:") and "writable by nobody" in result["msg"]
    )
    assert listing(tgt["datadir"]) == ["bitcoin.conf"]
