# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""tor_hidden_service hardening (issues 10 and 17), in process, without tor.

- a service directory that is a symlink (or has one above it, or holds symlinked key /
  hostname files) is refused naming ``service_dir``, before anything is written or chowned;
- ``service_dir`` refuses control characters, ``/``, ``//`` and system directories
  (``common.check_managed_dir``);
- owner/mode of the service dir and the key are set through descriptors (no path-based
  chown/chmod/atomic_move in the module);
- ``fail_json`` is never called while an exception is being handled.

The same symlink case against a real tor is in
tests/integration/test_tor_hidden_service_hardening.py.
"""

from __future__ import annotations

import os
import stat
import sys

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import safe_fs, tor
from ansible_collections.nodefleet.bitcoin.plugins.modules import tor_hidden_service as ths
from ansible_collections.nodefleet.bitcoin.tests.unit.plugins.modules.test_tor_hidden_service import (
    KEY,
    KEY_B64,
    ONION,
    P2P,
    Exit,
    Fail,
    base_args,
    lay_out_host,
)

VICTIM_UID = VICTIM_GID = 65534  # nobody / nogroup: not the tor user of these tests
FAIL_CALLS: list[bool] = []  # per fail_json call: was an exception being handled?


@pytest.fixture
def host(tmp_path, monkeypatch):
    """The layout of test_tor_hidden_service.host, plus a record of fail_json calls."""
    FAIL_CALLS.clear()
    return lay_out_host(tmp_path, monkeypatch, on_fail=lambda: FAIL_CALLS.append(sys.exc_info()[0] is not None))


def call(host, args: dict, check: bool = False) -> tuple[str, dict]:
    args = dict(args, _ansible_check_mode=check)
    with patch_module_args(args):
        try:
            ths.main()
        except Exit as exc:
            return "exit", exc.args[0]
        except Fail as exc:
            assert FAIL_CALLS == [False], "fail_json called inside an except block"
            return "fail", exc.args[0]
    raise AssertionError("module neither exited nor failed")


def victim_dir(host):
    """A directory the module must never touch: owned by nobody, mode 0755, one file."""
    victim = host / "victim"
    victim.mkdir()
    (victim / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    os.chown(victim, VICTIM_UID, VICTIM_GID)
    os.chmod(victim, 0o755)  # noqa: S103 - the victim must look like a system dir
    return victim


def fingerprint(path):
    st = os.lstat(path)
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), sorted(os.listdir(path))


def tree(host):
    return sorted(str(p.relative_to(host)) for p in host.rglob("*"))


@pytest.mark.parametrize("check", [False, True])
@pytest.mark.parametrize("with_key", [False, True])
def test_a_symlinked_service_dir_is_refused_and_nothing_changes(host, check, with_key):
    victim = victim_dir(host)
    link = host / "services" / "a"
    link.symlink_to(victim)
    before, files = fingerprint(victim), tree(host)
    args = {**base_args(host), "name": "a", "ports": P2P, "service_dir": str(link)}
    if with_key:
        args["secret_key"] = KEY_B64
    outcome, result = call(host, args, check=check)
    assert outcome == "fail", result
    assert result["msg"].startswith("service_dir: ") and str(link) in result["msg"] and "symlink" in result["msg"]
    assert fingerprint(victim) == before
    assert tree(host) == files  # no drop-in, no key, nothing
    assert KEY_B64 not in str(result)


def test_a_symlink_above_the_service_dir_is_refused(host):
    victim = victim_dir(host)
    (host / "linked").symlink_to(victim)
    before, files = fingerprint(victim), tree(host)
    args = {**base_args(host), "name": "a", "ports": P2P, "service_dir": str(host / "linked" / "a")}
    outcome, result = call(host, args)
    assert outcome == "fail" and result["msg"].startswith("service_dir: "), result
    assert "symlink" in result["msg"]
    assert fingerprint(victim) == before and tree(host) == files


@pytest.mark.parametrize("name", [tor.SECRET_KEY_FILE, tor.HOSTNAME_FILE])
def test_a_symlinked_file_in_the_service_dir_is_refused(host, name):
    svc_dir = host / "services" / "a"
    svc_dir.mkdir(mode=0o700)
    outside = host / "outside"
    outside.write_bytes(KEY if name == tor.SECRET_KEY_FILE else (ONION + "\n").encode())
    (svc_dir / name).symlink_to(outside)
    (host / "torrc.d" / "nodefleet-a.conf").write_text(tor.render_dropin("a", str(svc_dir), [(8333, "127.0.0.1:8334")]))
    args = {**base_args(host), "name": "a", "ports": P2P, "service_dir": str(svc_dir), "secret_key": KEY_B64}
    outcome, result = call(host, args, check=True)
    assert outcome == "fail" and result["msg"].startswith("service_dir: "), result
    assert "symlink" in result["msg"] and KEY_B64 not in str(result)


def test_purge_refuses_a_symlinked_service_dir_named_in_the_dropin(host):
    victim = victim_dir(host)
    link = host / "services" / "a"
    link.symlink_to(victim)
    (host / "torrc.d" / "nodefleet-a.conf").write_text(tor.render_dropin("a", str(link), [(8333, "127.0.0.1:8334")]))
    before, files = fingerprint(victim), tree(host)
    outcome, result = call(host, {**base_args(host), "name": "a", "state": "absent", "purge": True})
    assert outcome == "fail" and result["msg"].startswith("service_dir: ") and "symlink" in result["msg"], result
    assert fingerprint(victim) == before and tree(host) == files


@pytest.mark.parametrize(
    "service_dir",
    ["/", "//", "/etc", "//etc", "/var/lib", "/var//lib/", "/usr", "/root", "/var/lib/tor/a\tb"]
    + [f"/var/lib/tor/x{char}y" for char in ("\r", "\t", "\x1b", "\x7f", "\x00")]
    + [f"/var/lib/tor/c0-{code:02x}-{chr(code)}" for code in range(32)],
)
def test_service_dir_must_be_a_managed_dir(host, service_dir):
    files = tree(host)
    outcome, result = call(host, {**base_args(host), "name": "a", "ports": P2P, "service_dir": service_dir})
    assert outcome == "fail" and result["msg"].startswith("service_dir: "), result
    assert tree(host) == files


def test_batch_names_the_service_whose_dir_is_a_symlink(host):
    victim = victim_dir(host)
    (host / "services" / "b").symlink_to(victim)
    before, files = fingerprint(victim), tree(host)
    args = {
        **base_args(host),
        "services": [
            {"name": "a", "ports": P2P, "service_dir": str(host / "services" / "a")},
            {"name": "b", "ports": P2P, "service_dir": str(host / "services" / "b")},
        ],
    }
    outcome, result = call(host, args)
    assert outcome == "fail" and result["msg"].startswith("services[1].service_dir: "), result
    assert fingerprint(victim) == before and tree(host) == files


def test_no_path_based_chown_chmod_or_move_in_the_module():
    import inspect

    source = inspect.getsource(ths)
    for forbidden in ("os.chown(", "os.chmod(", "atomic_move", "write_file_atomic", "shutil.rmtree", "set_attributes"):
        assert forbidden not in source, forbidden


def test_service_dir_owner_and_mode_are_set_through_the_descriptor(host, monkeypatch):
    """ensure_service_dir: created 0700 by fd; an existing dir gets fixed by fd, never by path."""

    def refuse(*_args, **_kwargs):
        pytest.fail("path-based chown/chmod")

    for name in ("chown", "chmod", "lchown"):
        monkeypatch.setattr(os, name, refuse)
    svc_dir = host / "services" / "a"
    uid, gid = os.getuid(), os.getgid()
    assert ths.ensure_service_dir(str(svc_dir), uid, gid, fix=False) is True
    assert stat.S_IMODE(svc_dir.stat().st_mode) == 0o700
    fd = os.open(svc_dir, os.O_RDONLY)
    os.fchmod(fd, 0o755)  # drift, made through a descriptor (os.chmod is patched to fail)
    os.close(fd)
    assert ths.ensure_service_dir(str(svc_dir), uid, gid, fix=True) is False
    assert stat.S_IMODE(svc_dir.stat().st_mode) == 0o700


def test_remove_service_dir_never_follows_a_link(host):
    victim = victim_dir(host)
    svc_dir = host / "services" / "a"
    svc_dir.mkdir()
    (svc_dir / "authorized_clients").mkdir()
    (svc_dir / "authorized_clients" / "inner").symlink_to(victim)
    (svc_dir / tor.HOSTNAME_FILE).symlink_to(victim / "passwd")
    before = fingerprint(victim)
    assert tor.remove_service_dir(str(svc_dir)) is True
    assert not svc_dir.exists() and fingerprint(victim) == before
    (host / "services" / "b").symlink_to(victim)
    with pytest.raises(safe_fs.UnsafePath):
        tor.remove_service_dir(str(host / "services" / "b"))
    assert fingerprint(victim) == before


@pytest.mark.parametrize("content", [b"SocksPort 9050\n\xff\xfe\n", None])
def test_an_unreadable_torrc_is_a_clean_failure(host, content):
    torrc = host / "torrc"
    torrc.unlink()
    if content is None:
        torrc.mkdir()  # a directory where the torrc should be
    else:
        torrc.write_bytes(content)
    args = {**base_args(host), "name": "a", "ports": P2P, "service_dir": str(host / "services" / "a")}
    outcome, result = call(host, args)
    assert outcome == "fail" and result["msg"].startswith("torrc_file: "), result
