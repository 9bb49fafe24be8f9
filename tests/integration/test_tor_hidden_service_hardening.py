# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""tor_hidden_service against a real tor: a symlinked service directory (issue 10).

Before the fix, ``service_dir -> /etc`` (here: a temp victim directory owned by nobody, mode
0755) was taken over: chowned to the tor user and chmodded 0700 by path, a drop-in pointing
tor at it written, tor reloaded, and tor's keys created inside it. Now the module refuses,
naming ``service_dir``; the victim keeps its owner, mode and contents, no drop-in is
written and tor is not reloaded. A key restore still works and is written by descriptor.
"""

from __future__ import annotations

import base64
import os
import stat

import pytest
from ansible_collections.nodefleet.bitcoin.tests.integration import tor_fixture
from ansible_collections.nodefleet.bitcoin.tests.integration.ansible_cli import run_collection_module

pytestmark = pytest.mark.integration
tor = tor_fixture.tor  # the fixture: a started, offline tor in a temp dir

P2P = [{"port": 8333, "target": "127.0.0.1:8334"}]
VICTIM_UID = VICTIM_GID = 65534


def fingerprint(path):
    st = os.lstat(path)
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), sorted(os.listdir(path))


def make_victim(base):
    victim = base / "victim-etc"
    victim.mkdir()
    (victim / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    os.chown(victim, VICTIM_UID, VICTIM_GID)
    os.chmod(victim, 0o755)  # noqa: S103 - the victim must look like /etc
    return victim


@pytest.mark.parametrize("secret_key", [False, True])
def test_symlinked_service_dir_is_refused_and_the_target_is_untouched(tor, tmp_path, secret_key):
    victim = make_victim(tmp_path)
    link = tor.service_root / "core-main"
    link.symlink_to(victim)
    before = fingerprint(victim)
    reloads = tor.reload_count()
    args = {**tor.module_args(), "name": "core-main", "service_dir": str(link), "ports": P2P}
    if secret_key:
        args["secret_key"] = base64.b64encode(b"== ed25519v1-secret: type0 ==\x00\x00\x00" + bytes(range(64))).decode()
    result, out = run_collection_module("tor_hidden_service", args)
    assert result.get("failed") is True, result
    assert result["msg"].startswith("service_dir: "), result["msg"]
    assert str(link) in result["msg"] and "symlink" in result["msg"]
    assert fingerprint(victim) == before  # owner, group, mode and contents
    assert list(tor.torrc_dir.iterdir()) == []  # no drop-in pointing tor at the victim
    assert tor.reload_count() == reloads
    assert "Traceback" not in out


def test_a_link_swapped_in_after_creation_is_refused_on_the_next_run(tor, tmp_path):
    svc_dir = tor.service_root / "a"
    first, _out = run_collection_module(
        "tor_hidden_service", {**tor.module_args(), "name": "a", "service_dir": str(svc_dir), "ports": P2P}
    )
    assert first["changed"] is True and first["onion_address"], first
    # the tor user replaces its directory by a link to a directory it wants root to chown
    victim = make_victim(tmp_path)
    moved = tor.service_root / "a.real"
    svc_dir.rename(moved)
    svc_dir.symlink_to(victim)
    before = fingerprint(victim)
    dropin = (tor.torrc_dir / "nodefleet-a.conf").read_text()
    again, _out = run_collection_module(
        "tor_hidden_service",
        {
            **tor.module_args(),
            "name": "a",
            "service_dir": str(svc_dir),
            "ports": [{"port": 8333, "target": "127.0.0.1:9"}],
        },
    )
    assert again.get("failed") is True and again["msg"].startswith("service_dir: "), again
    assert fingerprint(victim) == before
    assert (tor.torrc_dir / "nodefleet-a.conf").read_text() == dropin


def test_restore_writes_the_key_by_descriptor_with_owner_and_mode(tor):
    svc_dir = tor.service_root / "restored"
    key = b"== ed25519v1-secret: type0 ==\x00\x00\x00" + bytes(range(64))
    args = {**tor.module_args(), "name": "restored", "service_dir": str(svc_dir), "ports": P2P}
    args["secret_key"] = base64.b64encode(key).decode()
    result, out = run_collection_module("tor_hidden_service", args, expect_success=True)
    assert result["changed"] is True and result["onion_address"].endswith(".onion")
    assert (svc_dir / "hs_ed25519_secret_key").read_bytes() == key
    assert stat.S_IMODE((svc_dir / "hs_ed25519_secret_key").stat().st_mode) == 0o600
    assert stat.S_IMODE(svc_dir.stat().st_mode) == 0o700
    assert not [p for p in svc_dir.iterdir() if p.name.startswith(".")]  # no temp file left
    assert args["secret_key"] not in out
