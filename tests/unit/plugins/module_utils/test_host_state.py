# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""module_utils/host_state.py: reading the host (on tmp_path) and the *_ok decisions made from it.

The rule every *_ok test holds it to: anything not proven answers False (the task runs); True
only where the real module would report changed=false (tests/integration/test_host_state_agrees.py
checks that against the modules themselves).
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd

import pytest
from ansible_collections.nodefleet.bitcoin.plugins.filter.host_state import FilterModule
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import host_state as hs

ME = pwd.getpwuid(os.getuid()).pw_name
MY_GROUP = grp.getgrgid(os.getgid()).gr_name


def _write(path, data: bytes, mode=0o644):
    path.write_bytes(data)
    os.chmod(path, mode)
    return str(path)


# ---- path_state ------------------------------------------------------------------------------


def test_path_state_of_a_file(tmp_path):
    path = _write(tmp_path / "f", b"hello\n", 0o640)
    st = hs.path_state(path)
    assert st["exists"] is True
    assert st["type"] == "file"
    assert st["mode"] == "0640"
    assert st["sha256"] == hashlib.sha256(b"hello\n").hexdigest()
    assert st["size"] == 6
    assert (st["uid"], st["gid"]) == (os.getuid(), os.getgid())
    assert (st["owner"], st["group"]) == (ME, MY_GROUP)
    assert "target" not in st


def test_path_state_of_an_empty_file_has_the_empty_checksum(tmp_path):
    assert hs.path_state(_write(tmp_path / "e", b""))["sha256"] == hashlib.sha256(b"").hexdigest()


def test_path_state_without_checksum(tmp_path):
    assert "sha256" not in hs.path_state(_write(tmp_path / "f", b"x"), checksum=False)


def test_path_state_mode_keeps_special_bits(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    os.chmod(d, 0o2755)  # noqa: S103 - the setgid bit must show in the mode
    assert hs.path_state(str(d))["mode"] == "2755"


def test_path_state_of_a_directory(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    os.chmod(d, 0o750)  # noqa: S103 - a directory mode to read back
    st = hs.path_state(str(d))
    assert (st["exists"], st["type"], st["mode"]) == (True, "directory", "0750")
    assert "sha256" not in st


def test_path_state_does_not_follow_a_link(tmp_path):
    target = _write(tmp_path / "real", b"secret")
    os.symlink(target, tmp_path / "link")
    st = hs.path_state(str(tmp_path / "link"))
    assert st["type"] == "link"
    assert st["target"] == target
    assert "sha256" not in st


def test_path_state_of_a_link_to_a_directory_is_a_link(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink("real", tmp_path / "link")
    st = hs.path_state(str(tmp_path / "link"))
    assert (st["type"], st["target"]) == ("link", "real")


def test_path_state_of_a_dangling_link(tmp_path):
    os.symlink("nowhere", tmp_path / "link")
    st = hs.path_state(str(tmp_path / "link"))
    assert (st["exists"], st["type"], st["target"]) == (True, "link", "nowhere")


def test_path_state_of_a_missing_path(tmp_path):
    assert hs.path_state(str(tmp_path / "missing")) == {"exists": False}


def test_path_state_under_a_file_is_unknown(tmp_path):
    """lstat fails with something else than 'no such file': unknown, not 'missing'."""
    parent = _write(tmp_path / "f", b"")
    st = hs.path_state(os.path.join(parent, "child"))
    assert st["exists"] is None
    assert st["error"]


def test_path_state_of_a_fifo_is_other(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    st = hs.path_state(str(tmp_path / "fifo"))
    assert st["type"] == "other"
    assert "sha256" not in st


def test_path_state_of_a_too_big_file_has_no_checksum(tmp_path, monkeypatch):
    monkeypatch.setattr(hs, "MAX_CHECKSUM_BYTES", 4)
    st = hs.path_state(_write(tmp_path / "big", b"12345"))
    assert st["type"] == "file"
    assert st["sha256"] is None


# ---- dir_listing -----------------------------------------------------------------------------


def test_dir_listing_types_and_link_targets(tmp_path):
    _write(tmp_path / "b.conf", b"")
    (tmp_path / "sub").mkdir()
    os.symlink("/elsewhere/x", tmp_path / "a-link")
    os.mkfifo(tmp_path / "pipe")
    listing = hs.dir_listing(str(tmp_path))
    assert listing["exists"] is True
    assert listing["entries"] == {
        "a-link": {"type": "link", "target": "/elsewhere/x"},
        "b.conf": {"type": "file"},
        "pipe": {"type": "other"},
        "sub": {"type": "directory"},
    }
    assert list(listing["entries"]) == sorted(listing["entries"])


def test_dir_listing_is_one_level_deep(tmp_path):
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub" / "inner", b"")
    assert list(hs.dir_listing(str(tmp_path))["entries"]) == ["sub"]


def test_dir_listing_of_an_empty_directory(tmp_path):
    assert hs.dir_listing(str(tmp_path)) == {"exists": True, "entries": {}}


def test_dir_listing_of_a_missing_directory(tmp_path):
    assert hs.dir_listing(str(tmp_path / "missing")) == {"exists": False, "entries": {}}


def test_dir_listing_does_not_follow_a_link(tmp_path):
    (tmp_path / "real").mkdir()
    _write(tmp_path / "real" / "x", b"")
    os.symlink("real", tmp_path / "link")
    listing = hs.dir_listing(str(tmp_path / "link"))
    assert listing["exists"] is None
    assert listing["entries"] == {}


def test_dir_listing_of_a_file_is_unknown(tmp_path):
    listing = hs.dir_listing(_write(tmp_path / "f", b""))
    assert listing["exists"] is None
    assert listing["entries"] == {}


# ---- last_matching_line ----------------------------------------------------------------------


def test_last_matching_line_last_match_wins_and_keeps_its_ending(tmp_path):
    path = _write(tmp_path / "torrc", b"SocksPort 1\n# x\nSocksPort 2\r\nOther 3\n")
    got = hs.last_matching_line(path, r"^SocksPort\s")
    assert got == {"path": path, "regexp": r"^SocksPort\s", "readable": True, "line": "SocksPort 2\r\n"}


def test_last_matching_line_last_line_without_newline(tmp_path):
    path = _write(tmp_path / "f", b"a=1\nb=2")
    assert hs.last_matching_line(path, "^b=")["line"] == "b=2"


def test_last_matching_line_no_match(tmp_path):
    path = _write(tmp_path / "f", b"a=1\n")
    got = hs.last_matching_line(path, "^b=")
    assert (got["readable"], got["line"]) == (True, None)


def test_last_matching_line_splits_at_newline_only(tmp_path):
    """As lineinfile (readlines on bytes): \\r, \\f and U+2028 do not end a line."""
    path = _write(tmp_path / "f", "b=1\rb=2\x0cb=3\u2028b=4\n".encode())
    assert hs.last_matching_line(path, "^b=")["line"] == "b=1\rb=2\x0cb=3\u2028b=4\n"
    assert hs.last_matching_line(path, "^b=4")["line"] is None


def test_last_matching_line_searches_bytes_like_lineinfile(tmp_path):
    r"""lineinfile compiles a bytes regexp: \s does not match a no-break space."""
    path = _write(tmp_path / "f", "b=1\n\u00a0b=2\n".encode())
    assert hs.last_matching_line(path, r"^\s*b=")["line"] == "b=1\n"
    assert hs.last_matching_line(path, "^\u00a0b=")["line"] == "\u00a0b=2\n"


def test_last_matching_line_keeps_undecodable_bytes(tmp_path):
    path = _write(tmp_path / "f", b"k=\xff\n")
    line = hs.last_matching_line(path, "^k=")["line"]
    assert line.encode("utf-8", "surrogateescape") == b"k=\xff\n"


def test_last_matching_line_missing_file(tmp_path):
    path = str(tmp_path / "missing")
    assert hs.last_matching_line(path, "x") == {"path": path, "regexp": "x", "readable": False, "line": None}


def test_last_matching_line_unreadable_file(tmp_path, monkeypatch):
    path = _write(tmp_path / "f", b"x\n", 0o000)
    real_open = os.open

    def denied(name, *args, **kwargs):
        if name == path:  # as root the 0000 mode alone would not stop the read
            raise PermissionError(13, "Permission denied", name)
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(hs.os, "open", denied)
    assert hs.last_matching_line(path, "x") == {"path": path, "regexp": "x", "readable": False, "line": None}


def test_last_matching_line_of_a_directory(tmp_path):
    assert hs.last_matching_line(str(tmp_path), "x")["readable"] is False


def test_last_matching_line_does_not_follow_a_link(tmp_path):
    target = _write(tmp_path / "real", b"x\n")
    os.symlink(target, tmp_path / "link")
    assert hs.last_matching_line(str(tmp_path / "link"), "x")["readable"] is False


def test_last_matching_line_too_big_file(tmp_path, monkeypatch):
    monkeypatch.setattr(hs, "MAX_CHECKSUM_BYTES", 4)
    assert hs.last_matching_line(_write(tmp_path / "f", b"x=12345\n"), "x")["readable"] is False


def test_last_matching_line_invalid_regexp_names_lines(tmp_path):
    path = _write(tmp_path / "f", b"x\n")
    with pytest.raises(ValueError, match=r"^lines: .*\(unclosed") as err:
        hs.last_matching_line(path, "(unclosed")
    assert path in str(err.value)


def test_gather_invalid_regexp_raises_before_reading(tmp_path):
    with pytest.raises(ValueError, match=r"^lines:"):
        hs.gather(lines=[{"path": str(tmp_path / "missing"), "regexp": "["}])


# ---- parse_dpkg_query ------------------------------------------------------------------------


def test_parse_dpkg_query_statuses():
    out = (
        "tor\tii \t0.4.8.16-1\n"
        "supervisor\trc \t4.2.5-1\n"
        "held\thi \t1.0\n"
        "half\tiU \t2.0\n"
        "broken\tiiR\t3.0\n"
        "gone\tun \t\n"
        "not a dpkg line\n"
        "too\tmany\tfields\there\n"
        "\n"
    )
    assert hs.parse_dpkg_query(out) == {
        "tor": {"installed": True, "version": "0.4.8.16-1"},
        "supervisor": {"installed": False, "version": None},
        "held": {"installed": True, "version": "1.0"},
        "half": {"installed": False, "version": None},
        "broken": {"installed": False, "version": None},
        "gone": {"installed": False, "version": None},
    }


def test_parse_dpkg_query_status_without_error_flag():
    assert hs.parse_dpkg_query("p\tii\t1\n") == {"p": {"installed": True, "version": "1"}}
    assert hs.parse_dpkg_query("p\ti\t1\n") == {"p": {"installed": False, "version": None}}
    assert hs.parse_dpkg_query("p\t\t1\n") == {"p": {"installed": False, "version": None}}


@pytest.mark.parametrize(
    "out",
    ["libc6\trc \t2.36\nlibc6\tii \t2.36\n", "libc6\tii \t2.36\nlibc6\trc \t2.36\n"],
    ids=["not-installed-first", "not-installed-last"],
)
def test_parse_dpkg_query_multiarch_name_needs_every_architecture_installed(out):
    assert hs.parse_dpkg_query(out)["libc6"]["installed"] is False


def test_parse_dpkg_query_multiarch_all_installed():
    assert hs.parse_dpkg_query("libc6\tii \t2.36\nlibc6\tii \t2.36\n")["libc6"] == {
        "installed": True,
        "version": "2.36",
    }


def test_parse_dpkg_query_empty():
    assert hs.parse_dpkg_query("") == {}


# ---- parse_systemctl_show --------------------------------------------------------------------

SHOW = """\
Id=tor@default.service
LoadState=loaded
ActiveState=active
UnitFileState=enabled

Id=supervisor.service
LoadState=loaded
ActiveState=inactive
UnitFileState=disabled

Id=nope.service
LoadState=not-found
ActiveState=inactive
UnitFileState=
"""


def test_parse_systemctl_show_several_blocks():
    assert hs.parse_systemctl_show(SHOW) == {
        "tor@default.service": {"load": "loaded", "active": "active", "unit_file": "enabled"},
        "supervisor.service": {"load": "loaded", "active": "inactive", "unit_file": "disabled"},
        "nope.service": {"load": "not-found", "active": "inactive", "unit_file": ""},
    }


def test_parse_systemctl_show_property_order_does_not_matter():
    out = "UnitFileState=enabled\nActiveState=activating\nLoadState=loaded\nId=a.service\n"
    assert hs.parse_systemctl_show(out) == {
        "a.service": {"load": "loaded", "active": "activating", "unit_file": "enabled"}
    }


def test_parse_systemctl_show_block_without_id_is_dropped():
    out = "LoadState=loaded\nActiveState=active\n\nId=\nLoadState=loaded\n\nId=b.service\nLoadState=loaded\n"
    assert hs.parse_systemctl_show(out) == {"b.service": {"load": "loaded", "active": "", "unit_file": ""}}


def test_parse_systemctl_show_blank_lines_with_spaces_and_junk():
    out = "Id=a.service\nLoadState=loaded\n  \nno equals sign\nId=b.service\nActiveState=active\n"
    assert set(hs.parse_systemctl_show(out)) == {"a.service", "b.service"}


def test_parse_systemctl_show_empty():
    assert hs.parse_systemctl_show("") == {}
    assert hs.parse_systemctl_show("\n\n") == {}


# ---- gather ----------------------------------------------------------------------------------


class FakeRun:
    """run(argv) for gather: answers per program, records every call."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def __call__(self, argv):
        self.calls.append(argv)
        return self.answers[argv[0]]


def test_gather_without_packages_or_units_runs_nothing(tmp_path):
    def run(argv):
        raise AssertionError("nothing to run")

    path = _write(tmp_path / "f", b"a=1\n")
    state = hs.gather(paths=[path], dirs=[str(tmp_path)], lines=[{"path": path, "regexp": "^a="}], run=run)
    assert state["paths"][path]["type"] == "file"
    assert list(state["dirs"][str(tmp_path)]["entries"]) == ["f"]
    assert state["lines"] == [{"path": path, "regexp": "^a=", "readable": True, "line": "a=1\n"}]
    assert (state["packages"], state["units"], state["users"], state["groups"]) == ({}, {}, {}, {})
    assert state["warnings"] == []


def test_gather_lines_in_order_same_path_twice(tmp_path):
    path = _write(tmp_path / "f", b"a=1\nb=2\n")
    state = hs.gather(lines=[{"path": path, "regexp": "^b="}, {"path": path, "regexp": "^a="}])
    assert [item["line"] for item in state["lines"]] == ["b=2\n", "a=1\n"]


def test_gather_packages_dpkg_rc_1_for_unknown_packages():
    run = FakeRun({"dpkg-query": (1, "tor\tii \t0.4.8\n", "dpkg-query: no packages found matching nosuch\n")})
    state = hs.gather(packages=["tor", "nosuch"], run=run)
    assert state["packages"] == {
        "tor": {"installed": True, "version": "0.4.8"},
        "nosuch": {"installed": False, "version": None},
    }
    assert state["warnings"] == []
    argv = run.calls[0]
    assert argv[0] == "dpkg-query"
    assert argv[-3:] == ["--", "tor", "nosuch"]


def test_gather_packages_dpkg_failure_warns_and_installs_nothing():
    run = FakeRun({"dpkg-query": (2, "", "dpkg-query: database locked\n")})
    state = hs.gather(packages=["tor"], run=run)
    assert state["packages"] == {"tor": {"installed": False, "version": None}}
    assert state["warnings"] == ["dpkg-query exited 2: dpkg-query: database locked"]


def test_gather_packages_without_dpkg():
    state = hs.gather(packages=["tor"], run=FakeRun({"dpkg-query": (127, "", "dpkg-query not found")}))
    assert state["packages"]["tor"]["installed"] is False
    assert state["warnings"]


def test_gather_units_one_systemctl_call():
    run = FakeRun({"systemctl": (0, SHOW, "")})
    state = hs.gather(units=["tor@default.service", "supervisor.service", "unasked.service"], run=run)
    assert set(state["units"]) == {"tor@default.service", "supervisor.service"}
    assert len(run.calls) == 1
    argv = run.calls[0]
    assert argv[:2] == ["systemctl", "show"]
    assert "--property=Id,LoadState,ActiveState,UnitFileState" in argv
    assert argv[-4:] == ["--", "tor@default.service", "supervisor.service", "unasked.service"]


def test_gather_units_only_the_asked_ones():
    state = hs.gather(units=["supervisor.service"], run=FakeRun({"systemctl": (0, SHOW, "")}))
    assert list(state["units"]) == ["supervisor.service"]


def test_gather_units_alias_is_not_its_target():
    """systemctl show sshd.service answers Id=ssh.service: the name asked for stays unknown."""
    out = "Id=ssh.service\nLoadState=loaded\nActiveState=active\nUnitFileState=enabled\n"
    state = hs.gather(units=["sshd.service"], run=FakeRun({"systemctl": (0, out, "")}))
    assert state["units"] == {}
    assert hs.unit_ok(state, "sshd.service", enabled=True, started=True) is False


def test_gather_units_systemctl_failure_leaves_units_empty_and_warns():
    run = FakeRun({"systemctl": (1, SHOW, "System has not been booted with systemd as init system (PID 1).\n")})
    state = hs.gather(units=["tor@default.service"], run=run)
    assert state["units"] == {}
    assert state["warnings"] == [
        "systemctl show exited 1: System has not been booted with systemd as init system (PID 1)."
    ]
    assert hs.unit_ok(state, "tor@default.service", enabled=True, started=True) is False


def test_gather_users_and_groups():
    me = pwd.getpwuid(os.getuid())
    my_group = grp.getgrgid(os.getgid())
    state = hs.gather(users=[me.pw_name, "no-such-user-x"], groups=[my_group.gr_name, "no-such-group-x"])
    assert state["users"][me.pw_name] == {
        "exists": True,
        "uid": me.pw_uid,
        "gid": me.pw_gid,
        "home": me.pw_dir,
        "shell": me.pw_shell,
    }
    assert state["users"]["no-such-user-x"] == {"exists": False}
    assert state["groups"] == {
        my_group.gr_name: {"exists": True, "gid": my_group.gr_gid},
        "no-such-group-x": {"exists": False},
    }


# ---- path_ok ---------------------------------------------------------------------------------

SHA = hashlib.sha256(b"content\n").hexdigest()


def _host(**paths):
    return {"paths": {"/p/" + k: v for k, v in paths.items()}}


FILE = {
    "exists": True,
    "type": "file",
    "mode": "0644",
    "uid": 0,
    "gid": 0,
    "owner": "root",
    "group": "root",
    "size": 8,
    "sha256": SHA,
}
DIRECTORY = {**FILE, "type": "directory", "mode": "0755"}
del DIRECTORY["sha256"]
LINK = {**FILE, "type": "link", "mode": "0777", "target": "/p/real"}
del LINK["sha256"]


def test_path_ok_file_same():
    host = _host(f=FILE)
    assert hs.path_ok(host, "/p/f", "file", owner="root", group="root", mode="0644", sha256=SHA) is True


@pytest.mark.parametrize("mode", ["0644", "644", 0o644, "0o644"])
def test_path_ok_mode_spellings(mode):
    assert hs.path_ok(_host(f=FILE), "/p/f", "file", mode=mode) is True


def test_path_ok_numeric_owner_and_group():
    assert hs.path_ok(_host(f=FILE), "/p/f", "file", owner="0", group=0) is True
    assert hs.path_ok(_host(f=FILE), "/p/f", "file", owner="1000") is False


def test_path_ok_only_what_is_asked():
    """A copy without owner/group/mode leaves those as they are: only the content is compared."""
    odd = {**FILE, "mode": "0600", "owner": "bitcoin", "group": "bitcoin", "uid": 999, "gid": 999}
    assert hs.path_ok(_host(f=odd), "/p/f", "file", sha256=SHA) is True


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"owner": "bitcoin"}, "wrong owner"),
        ({"group": "bitcoin"}, "wrong group"),
        ({"owner": "999"}, "wrong uid"),
        ({"group": "999"}, "wrong gid"),
        ({"mode": "0640"}, "wrong mode"),
        ({"mode": "0755"}, "wrong mode"),
        ({"mode": 0o600}, "wrong int mode"),
        ({"sha256": hashlib.sha256(b"other\n").hexdigest()}, "wrong content"),
        ({"sha256": SHA.upper()}, "not the hexdigest spelling the module returns"),
    ],
)
def test_path_ok_file_differs(kwargs, why):
    assert hs.path_ok(_host(f=FILE), "/p/f", "file", **kwargs) is False, why


def test_path_ok_owner_without_a_name():
    """A uid with no user name: only the numeric owner can match."""
    nameless = {**FILE, "owner": None, "group": None, "uid": 4242, "gid": 4242}
    assert hs.path_ok(_host(f=nameless), "/p/f", "file", owner="root") is False
    assert hs.path_ok(_host(f=nameless), "/p/f", "file", group="root") is False
    assert hs.path_ok(_host(f=nameless), "/p/f", "file", owner="4242", group="4242") is True


def test_path_ok_file_without_checksum():
    """Too big or unreadable (sha256 None): no content can be proven."""
    host = _host(f={**FILE, "sha256": None})
    assert hs.path_ok(host, "/p/f", "file", sha256=SHA) is False
    host = _host(f={k: v for k, v in FILE.items() if k != "sha256"})
    assert hs.path_ok(host, "/p/f", "file", sha256=SHA) is False


@pytest.mark.parametrize(
    ("entry", "state"),
    [
        (DIRECTORY, "file"),
        (LINK, "file"),
        (FILE, "directory"),
        (LINK, "directory"),  # a symlink (even to a directory) where a directory should be
        (FILE, "link"),
        (DIRECTORY, "link"),
        ({**FILE, "type": "other"}, "file"),
    ],
)
def test_path_ok_wrong_type(entry, state):
    assert hs.path_ok(_host(x=entry), "/p/x", state) is False


def test_path_ok_directory_same_and_mode():
    host = _host(d=DIRECTORY)
    assert hs.path_ok(host, "/p/d", "directory", owner="root", group="root", mode="0755") is True
    assert hs.path_ok(host, "/p/d", "directory", owner="root", group="root", mode="0750") is False
    assert hs.path_ok(host, "/p/d", "directory", owner="bitcoin") is False


def test_path_ok_missing_path():
    host = _host(f={"exists": False})
    assert hs.path_ok(host, "/p/f", "file") is False
    assert hs.path_ok(host, "/p/f", "directory") is False
    assert hs.path_ok(host, "/p/f", "link", target="/x") is False
    assert hs.path_ok(host, "/p/f", "absent") is True


def test_path_ok_absent_when_present():
    for entry in (FILE, DIRECTORY, LINK):
        assert hs.path_ok(_host(x=entry), "/p/x", "absent") is False


def test_path_ok_exists_unknown():
    host = _host(f={"exists": None, "error": "Permission denied"})
    for state in ("file", "directory", "link", "absent"):
        assert hs.path_ok(host, "/p/f", state) is False


@pytest.mark.parametrize("host", [{}, None, {"paths": {}}, {"paths": {"/p/other": FILE}}])
def test_path_ok_path_not_gathered(host):
    assert hs.path_ok(host, "/p/f", "file") is False
    assert hs.path_ok(host, "/p/f", "absent") is False


def test_path_ok_link():
    host = _host(l=LINK)
    assert hs.path_ok(host, "/p/l", "link", target="/p/real") is True
    assert hs.path_ok(host, "/p/l", "link", target="/p/real", owner="root", group="root") is True
    assert hs.path_ok(host, "/p/l", "link", target="/p/other") is False
    assert hs.path_ok(host, "/p/l", "link", target="real") is False  # not the same link text
    assert hs.path_ok(host, "/p/l", "link", target="/p/real", owner="bitcoin") is False
    assert hs.path_ok(host, "/p/l", "link", target="/p/real", group="bitcoin") is False


def test_path_ok_link_mode_is_not_compared():
    assert hs.path_ok(_host(l=LINK), "/p/l", "link", target="/p/real", mode="0644") is True


def test_path_ok_from_a_real_gather(tmp_path):
    path = _write(tmp_path / "f", b"content\n", 0o644)
    d = tmp_path / "d"
    d.mkdir()
    os.chmod(d, 0o755)  # noqa: S103 - a directory mode to read back
    os.symlink(str(d), tmp_path / "dl")
    missing = str(tmp_path / "missing")
    host = hs.gather(paths=[path, str(d), str(tmp_path / "dl"), missing])
    assert hs.path_ok(host, path, "file", owner=ME, group=MY_GROUP, mode="0644", sha256=SHA) is True
    assert hs.path_ok(host, path, "file", owner=ME, group=MY_GROUP, mode="0600", sha256=SHA) is False
    assert hs.path_ok(host, str(d), "directory", owner=ME, group=MY_GROUP, mode="0755") is True
    assert hs.path_ok(host, str(tmp_path / "dl"), "directory", owner=ME, group=MY_GROUP, mode="0755") is False
    assert hs.path_ok(host, str(tmp_path / "dl"), "link", target=str(d)) is True
    assert hs.path_ok(host, missing, "absent") is True
    assert hs.path_ok(host, missing, "file") is False


# ---- line_ok ---------------------------------------------------------------------------------


def _lines(*items):
    return {"lines": [{"path": p, "regexp": r, "readable": ok, "line": line} for p, r, ok, line in items]}


def test_line_ok_same_line():
    host = _lines(("/etc/tor/torrc", r"^\s*SocksPort\s", True, "SocksPort 127.0.0.1:9050\n"))
    assert hs.line_ok(host, "/etc/tor/torrc", r"^\s*SocksPort\s", "SocksPort 127.0.0.1:9050") is True
    assert hs.line_ok(host, "/etc/tor/torrc", r"^\s*SocksPort\s", "SocksPort 127.0.0.1:9050\n") is True


@pytest.mark.parametrize(
    ("found", "why"),
    [
        ("SocksPort 9050\n", "line mismatch"),
        ("SocksPort 127.0.0.1:9050", "no trailing newline in the file: lineinfile adds one"),
        ("SocksPort 127.0.0.1:9050\r\n", "CRLF: lineinfile writes \\n"),
        (" SocksPort 127.0.0.1:9050\n", "leading space"),
        ("SocksPort 127.0.0.1:9050 \n", "trailing space"),
        (None, "no line matches: lineinfile appends one"),
    ],
)
def test_line_ok_differs(found, why):
    host = _lines(("/t", "^SocksPort", True, found))
    assert hs.line_ok(host, "/t", "^SocksPort", "SocksPort 127.0.0.1:9050") is False, why


def test_line_ok_unreadable():
    assert hs.line_ok(_lines(("/t", "^a", False, None)), "/t", "^a", "a") is False
    # readable False wins even over a line (never produced by gather, but never trusted either)
    assert hs.line_ok(_lines(("/t", "^a", False, "a\n")), "/t", "^a", "a") is False


@pytest.mark.parametrize("host", [{}, None, {"lines": []}])
def test_line_ok_not_gathered(host):
    assert hs.line_ok(host, "/t", "^a", "a") is False


def test_line_ok_needs_the_same_path_and_regexp():
    host = _lines(("/t", "^a", True, "a\n"))
    assert hs.line_ok(host, "/other", "^a", "a") is False
    assert hs.line_ok(host, "/t", "^a=", "a") is False
    assert hs.line_ok(host, "/t", "^a", "a") is True


def test_line_ok_picks_its_own_item():
    host = _lines(("/t", "^a", True, "a=1\n"), ("/t", "^b", True, "b=2\n"))
    assert hs.line_ok(host, "/t", "^b", "b=2") is True
    assert hs.line_ok(host, "/t", "^a", "b=2") is False


def test_line_ok_from_a_real_gather(tmp_path):
    good = _write(tmp_path / "good", b"a=1\nb=1\nb=2\n")
    last_differs = _write(tmp_path / "last", b"b=2\nb=1\n")
    no_newline = _write(tmp_path / "nonl", b"a=1\nb=2")
    one_line = _write(tmp_path / "cr", b"b=1\rb=2\n")
    items = [good, last_differs, no_newline, one_line, str(tmp_path / "missing")]
    host = hs.gather(lines=[{"path": p, "regexp": "^b="} for p in items])
    assert hs.line_ok(host, good, "^b=", "b=2") is True
    assert hs.line_ok(host, last_differs, "^b=", "b=2") is False
    assert hs.line_ok(host, no_newline, "^b=", "b=2") is False
    assert hs.line_ok(host, one_line, "^b=", "b=2") is False
    assert hs.line_ok(host, str(tmp_path / "missing"), "^b=", "b=2") is False


# ---- packages_ok -----------------------------------------------------------------------------


def test_packages_ok():
    host = {
        "packages": {
            "tor": {"installed": True, "version": "1"},
            "torsocks": {"installed": True, "version": "2"},
            "supervisor": {"installed": False, "version": None},
        }
    }
    assert hs.packages_ok(host, ["tor", "torsocks"]) is True
    assert hs.packages_ok(host, "tor") is True
    assert hs.packages_ok(host, ["tor", "supervisor"]) is False
    assert hs.packages_ok(host, "supervisor") is False
    assert hs.packages_ok(host, ["tor", "not-gathered"]) is False
    assert hs.packages_ok(host, []) is True  # apt with no names installs nothing


@pytest.mark.parametrize("host", [{}, None, {"packages": {"tor": {"installed": "yes"}}}, {"packages": {"tor": {}}}])
def test_packages_ok_unknown(host):
    assert hs.packages_ok(host, ["tor"]) is False


# ---- unit_ok ---------------------------------------------------------------------------------


def _units(**units):
    return {"units": {k.replace("_", "-") + ".service": v for k, v in units.items()}}


RUNNING = {"load": "loaded", "active": "active", "unit_file": "enabled"}


def test_unit_ok_enabled_and_started():
    host = _units(tor=RUNNING)
    assert hs.unit_ok(host, "tor.service", enabled=True, started=True) is True
    assert hs.unit_ok(host, "tor.service", enabled=True) is True
    assert hs.unit_ok(host, "tor.service", started=True) is True


def test_unit_ok_activating_counts_as_started():
    host = _units(tor={**RUNNING, "active": "activating"})
    assert hs.unit_ok(host, "tor.service", started=True) is True


@pytest.mark.parametrize(
    ("unit", "kwargs", "why"),
    [
        ({**RUNNING, "load": "not-found"}, {"started": True}, "unit not loaded"),
        ({**RUNNING, "load": "masked"}, {"enabled": True}, "masked"),
        ({**RUNNING, "load": ""}, {}, "no load state"),
        ({**RUNNING, "unit_file": "disabled"}, {"enabled": True}, "not enabled"),
        ({**RUNNING, "unit_file": "static"}, {"enabled": True}, "static: not provably what enabled=true leaves"),
        ({**RUNNING, "unit_file": "enabled-runtime"}, {"enabled": True}, "enabled only until reboot"),
        ({**RUNNING, "unit_file": ""}, {"enabled": True}, "no unit file state"),
        ({**RUNNING, "active": "inactive"}, {"started": True}, "inactive"),
        ({**RUNNING, "active": "failed"}, {"started": True}, "failed"),
        ({**RUNNING, "active": "deactivating"}, {"started": True}, "deactivating"),
        ({"load": "loaded"}, {"enabled": True, "started": True}, "states missing"),
    ],
)
def test_unit_ok_false(unit, kwargs, why):
    assert hs.unit_ok(_units(tor=unit), "tor.service", **kwargs) is False, why


@pytest.mark.parametrize("host", [{}, None, {"units": {}}, _units(other=RUNNING)])
def test_unit_ok_not_gathered(host):
    assert hs.unit_ok(host, "tor.service", enabled=True, started=True) is False


# ---- user_ok / group_ok ----------------------------------------------------------------------

ACCOUNTS = {
    "users": {
        "bitcoin": {"exists": True, "uid": 999, "gid": 998, "home": "/var/lib/bitcoind", "shell": "/usr/sbin/nologin"},
        "gone": {"exists": False},
    },
    "groups": {
        "bitcoin": {"exists": True, "gid": 998},
        "other": {"exists": True, "gid": 5},
        "nogroup": {"exists": False},
    },
}

# What the bitcoind role's user task asks for (group, home, shell).
BITCOIN_USER = {"group": "bitcoin", "home": "/var/lib/bitcoind", "shell": "/usr/sbin/nologin"}


def test_user_ok_same():
    assert hs.user_ok(ACCOUNTS, "bitcoin", **BITCOIN_USER) is True
    assert hs.user_ok(ACCOUNTS, "bitcoin") is True


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"group": "other"}, "wrong primary group"),
        ({"group": "nogroup"}, "group does not exist"),
        ({"group": "not-gathered"}, "group not gathered"),
        ({"group": "998"}, "a gid is not a gathered group name"),
        ({"home": "/home/bitcoin"}, "wrong home"),
        ({"home": "/var/lib/bitcoind/"}, "home spelled differently: usermod -d runs"),
        ({"shell": "/bin/bash"}, "wrong shell"),
    ],
)
def test_user_ok_differs(kwargs, why):
    assert hs.user_ok(ACCOUNTS, "bitcoin", **kwargs) is False, why


@pytest.mark.parametrize("name", ["gone", "not-gathered"])
def test_user_ok_missing_user(name):
    assert hs.user_ok(ACCOUNTS, name) is False


@pytest.mark.parametrize("host", [{}, None])
def test_user_ok_nothing_gathered(host):
    assert hs.user_ok(host, "bitcoin") is False


def test_group_ok():
    assert hs.group_ok(ACCOUNTS, "bitcoin") is True
    assert hs.group_ok(ACCOUNTS, "nogroup") is False
    assert hs.group_ok(ACCOUNTS, "not-gathered") is False
    assert hs.group_ok({}, "bitcoin") is False
    assert hs.group_ok(None, "bitcoin") is False


def test_user_and_group_ok_from_a_real_gather():
    me = pwd.getpwuid(os.getuid())
    primary = grp.getgrgid(me.pw_gid).gr_name
    host = hs.gather(users=[me.pw_name], groups=[primary])
    assert hs.user_ok(host, me.pw_name, group=primary, home=me.pw_dir, shell=me.pw_shell) is True
    assert hs.user_ok(host, me.pw_name, shell=me.pw_shell + "x") is False
    assert hs.group_ok(host, primary) is True


# ---- dir_entries / dir_exists ----------------------------------------------------------------


def test_dir_entries_and_type_filter():
    host = {
        "dirs": {
            "/d": {
                "exists": True,
                "entries": {
                    "b.conf": {"type": "file"},
                    "a": {"type": "link", "target": "/x"},
                    "sub": {"type": "directory"},
                },
            }
        }
    }
    assert hs.dir_entries(host, "/d") == [
        {"name": "a", "type": "link", "target": "/x"},
        {"name": "b.conf", "type": "file", "target": None},
        {"name": "sub", "type": "directory", "target": None},
    ]
    assert hs.dir_entries(host, "/d", "file") == [{"name": "b.conf", "type": "file", "target": None}]
    assert hs.dir_entries(host, "/d", "other") == []
    assert hs.dir_exists(host, "/d") is True


@pytest.mark.parametrize(
    "host", [{}, None, {"dirs": {}}, {"dirs": {"/d": None}}, {"dirs": {"/d": {"exists": None, "entries": {}}}}]
)
def test_dir_entries_unknown_directory(host):
    assert hs.dir_entries(host, "/d") == []
    assert hs.dir_exists(host, "/d") is False


def test_dir_entries_from_a_real_gather(tmp_path):
    _write(tmp_path / "x.conf", b"")
    os.symlink("x.conf", tmp_path / "y.conf")
    host = hs.gather(dirs=[str(tmp_path), str(tmp_path / "missing")])
    assert hs.dir_entries(host, str(tmp_path), "link") == [{"name": "y.conf", "type": "link", "target": "x.conf"}]
    assert hs.dir_exists(host, str(tmp_path)) is True
    assert hs.dir_exists(host, str(tmp_path / "missing")) is False
    assert hs.dir_entries(host, str(tmp_path / "missing")) == []


# ---- the filter plugin -----------------------------------------------------------------------

FILTERS = {
    "host_path_ok": hs.path_ok,
    "host_line_ok": hs.line_ok,
    "host_packages_ok": hs.packages_ok,
    "host_unit_ok": hs.unit_ok,
    "host_user_ok": hs.user_ok,
    "host_group_ok": hs.group_ok,
    "host_dir_entries": hs.dir_entries,
}


def test_filter_module_maps_all_seven_names():
    filters = FilterModule().filters()
    assert set(filters) == set(FILTERS)
    assert all(callable(f) for f in filters.values())


def test_filters_pass_their_arguments_through():
    f = FilterModule().filters()
    host = {**_host(f=FILE, l=LINK), **_lines(("/t", "^a", True, "a\n")), **_units(tor=RUNNING), **ACCOUNTS}
    host["packages"] = {"tor": {"installed": True, "version": "1"}}
    host["dirs"] = {"/d": {"exists": True, "entries": {"a": {"type": "file"}, "b": {"type": "directory"}}}}
    assert f["host_path_ok"](host, "/p/f", "file", owner="root", group="root", mode="0644", sha256=SHA) is True
    assert f["host_path_ok"](host, "/p/f", "file", sha256=hashlib.sha256(b"x").hexdigest()) is False
    assert f["host_path_ok"](host, "/p/l", "link", target="/p/real") is True
    assert f["host_path_ok"](host, "/p/l", "link", target="/p/other") is False
    assert f["host_line_ok"](host, "/t", "^a", "a") is True
    assert f["host_packages_ok"](host, ["tor"]) is True
    assert f["host_packages_ok"](host, ["supervisor"]) is False
    assert f["host_unit_ok"](host, "tor.service", enabled=True, started=True) is True
    assert f["host_unit_ok"](host, "other.service", enabled=True) is False
    assert f["host_user_ok"](host, "bitcoin", **BITCOIN_USER) is True
    assert f["host_user_ok"](host, "bitcoin", **{**BITCOIN_USER, "shell": "/bin/sh"}) is False
    assert f["host_group_ok"](host, "bitcoin") is True
    assert f["host_dir_entries"](host, "/d", type="directory") == [{"name": "b", "type": "directory", "target": None}]
    assert len(f["host_dir_entries"](host, "/d")) == 2
