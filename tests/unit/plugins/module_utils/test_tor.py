# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for module_utils/tor.py: validation, drop-in render/parse, %include matching."""

from __future__ import annotations

import base64
import os
import signal

import pytest
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import tor
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import ValidationError

GOOD_KEY = tor.SECRET_KEY_HEADER + bytes(range(64))
GOOD_KEY_B64 = base64.b64encode(GOOD_KEY).decode()
ONION = "pplucon3en7jyrs5kb7kxl2dvdo5dfm4bjjmug3zktvuvfu4i3dqp6qd.onion"


# --------------------------------------------------------------------------- validation tables


@pytest.mark.parametrize(
    "value, ok",
    [
        (ONION, True),
        ("a" * 56 + ".onion", False),  # base32 but wrong checksum/version: Core refuses it
        ("aaaqeayeaudaocajbifqydiob4ibceqtcqkrmfyydenbwha5dyp3kead.onion", True),
        ("aaaqeayeaudaocajbifqydiob4ibceqtcqkrmfyydenbwha5dyp3keab.onion", False),  # version 1
        ("A" * 56 + ".onion", False),  # upper case is not what tor writes
        ("a" * 55 + ".onion", False),
        ("a" * 16 + ".onion", False),  # v2
        ("a" * 55 + "1.onion", False),  # 1 is not base32
        ("a" * 56, False),
        (ONION + "\n", False),
        (None, False),
    ],
)
def test_check_onion_address(value, ok):
    if ok:
        assert tor.check_onion_address("onion", value) == value
    else:
        with pytest.raises(ValidationError) as err:
            tor.check_onion_address("onion", value)
        assert err.value.option == "onion"


@pytest.mark.parametrize(
    "value, expected",
    [
        (8333, 8333),
        (1, 1),
        (80, 80),
        (65535, 65535),
        (0, "outside 1-65535"),
        (70000, "outside 1-65535"),
        (-1, "outside 1-65535"),
        (True, "not an integer"),
        ("8333", "not an integer"),
    ],
)
def test_check_virtual_port(value, expected):
    if isinstance(expected, int):
        assert tor.check_virtual_port("ports[0].port", value) == expected
    else:
        with pytest.raises(ValidationError, match=expected) as err:
            tor.check_virtual_port("ports[0].port", value)
        assert err.value.option == "ports[0].port"


@pytest.mark.parametrize(
    "value, error",
    [
        ("127.0.0.1:8334", None),
        ("localhost:8334", None),
        ("[::1]:8334", None),
        ("10.1.2.3:1", None),
        ("nohost", "not 'host:port'"),
        ("127.0.0.1", "not 'host:port'"),
        ("example.com:80", "IP address or localhost"),
        ("::1:8334", "not 'host:port'"),
        ("[127.0.0.1]:80", "only IPv6"),
        ("127.0.0.1:0", "outside 1-65535"),
        ("127.0.0.1:70000", "outside 1-65535"),
        ("127.0.0.1:80 extra", "not 'host:port'"),
        ("127.0.0.1:8334\n", "not 'host:port'"),  # a newline would inject a torrc line
        ("", "non-empty"),
        (None, "non-empty"),
    ],
)
def test_check_target(value, error):
    if error is None:
        assert tor.check_target("t", value) == value
    else:
        with pytest.raises(ValidationError, match=error):
            tor.check_target("t", value)


@pytest.mark.parametrize(
    "ports, error_option, error",
    [
        ([{"port": 8333, "target": "127.0.0.1:8334"}], None, None),
        (
            [{"port": 8333, "target": "127.0.0.1:8334"}, {"port": 80, "target": "127.0.0.1:8080"}],
            None,
            None,
        ),
        ([], "ports", "at least one"),
        (None, "ports", "at least one"),
        ([{"port": 0, "target": "127.0.0.1:1"}], "ports[0].port", "outside"),
        ([{"port": 70000, "target": "127.0.0.1:1"}], "ports[0].port", "outside"),
        ([{"port": 1, "target": "nohost"}], "ports[0].target", "host:port"),
        (
            [{"port": 8333, "target": "127.0.0.1:1"}, {"port": 8333, "target": "127.0.0.1:2"}],
            "ports[1].port",
            r"already mapped by ports\[0\]",
        ),
        (["8333"], "ports[0]", "must be a dict"),
    ],
)
def test_check_ports(ports, error_option, error):
    if error is None:
        assert tor.check_ports("ports", ports) == [(p["port"], p["target"]) for p in ports]
    else:
        with pytest.raises(ValidationError, match=error) as err:
            tor.check_ports("ports", ports)
        assert err.value.option == error_option


@pytest.mark.parametrize(
    "value, error",
    [
        ("/var/lib/tor/nodefleet-a", None),
        ("/var/lib/tor/nodefleet-a/", None),
        ("var/lib/tor/x", "not an absolute path"),
        ("/var/lib/tor/../x", "'..'"),
        ("/var/lib/tor/with space", "whitespace"),
        ("/var/lib/tor/has#hash", "'#'"),
        ('/var/lib/tor/q"uote', "quotes"),
        ("/", "root"),
    ],
)
def test_check_service_dir(value, error):
    if error is None:
        assert tor.check_service_dir("service_dir", value) == os.path.normpath(value)
    else:
        with pytest.raises(ValidationError, match=error) as err:
            tor.check_service_dir("service_dir", value)
        assert err.value.option == "service_dir"


@pytest.mark.parametrize(
    "value, error",
    [
        (GOOD_KEY_B64, None),
        (GOOD_KEY_B64[:40] + "\n" + GOOD_KEY_B64[40:], None),  # wrapped base64 (e.g. from a vault file)
        ("not base64!!", "not valid base64"),
        (GOOD_KEY_B64[:-4], "decodes to 93 bytes"),
        (base64.b64encode(GOOD_KEY + b"\x00").decode(), "decodes to 97 bytes"),
        (base64.b64encode(b"== ed25519v1-public: type0 ==\x00\x00\x00" + bytes(64)).decode(), "header"),
        (base64.b64encode(bytes(96)).decode(), "header"),
        ("", "must be the base64"),
    ],
)
def test_decode_secret_key(value, error):
    if error is None:
        assert tor.decode_secret_key("secret_key", value) == GOOD_KEY
    else:
        with pytest.raises(ValidationError, match=error) as err:
            tor.decode_secret_key("secret_key", value)
        assert err.value.option == "secret_key"
        # the message never carries the value or a recognisable piece of it
        if value:
            assert value[4:24] not in str(err.value)


def test_keys_equal():
    assert tor.keys_equal(GOOD_KEY, bytes(GOOD_KEY))
    assert not tor.keys_equal(GOOD_KEY, GOOD_KEY[:-1] + b"\x00")
    assert not tor.keys_equal(None, GOOD_KEY)
    assert tor.keys_equal(None, None)


@pytest.mark.parametrize(
    "spec, prefix, option, error",
    [
        ({"name": "../x", "ports": [{"port": 1, "target": "127.0.0.1:1"}]}, "", "name", "not a safe name"),
        (
            {"name": "a", "ports": [{"port": 1, "target": "127.0.0.1:1"}], "service_dir": "rel"},
            "",
            "service_dir",
            "absolute",
        ),
        ({"name": "a"}, "services[3].", "services[3].ports", "at least one"),
        ({"name": "a", "state": "gone"}, "", "state", "present, absent"),
        ({"name": "a\n", "ports": [{"port": 1, "target": "127.0.0.1:1"}]}, "", "name", "not a safe name"),
        (
            {"name": "a", "ports": [{"port": 1, "target": "127.0.0.1:1"}], "secret_key": "@@"},
            "services[0].",
            "services[0].secret_key",
            "base64",
        ),
        ({"name": "a", "state": "absent", "secret_key": GOOD_KEY_B64}, "", "secret_key", "state=present"),
        ({"name": "a", "ports": [{"port": 1, "target": "127.0.0.1:1"}], "purge": True}, "", "purge", "absent"),
        (
            {"name": "a", "ports": [{"port": 1, "target": "127.0.0.1:1"}], "force_key": True},
            "",
            "force_key",
            "secret_key",
        ),
    ],
)
def test_normalise_service_errors(spec, prefix, option, error):
    with pytest.raises(ValidationError, match=error) as err:
        tor.normalise_service(spec, prefix)
    assert err.value.option == option


def test_normalise_service_defaults():
    svc = tor.normalise_service({"name": "core-main", "ports": [{"port": 8333, "target": "127.0.0.1:8334"}]})
    assert svc["state"] == "present"
    assert svc["service_dir"] == "/var/lib/tor/nodefleet-core-main"
    assert svc["explicit_dir"] is False
    assert svc["ports"] == [(8333, "127.0.0.1:8334")]
    assert svc["secret_key_bytes"] is None
    absent = tor.normalise_service({"name": "old", "state": "absent", "purge": True})
    assert absent["ports"] == [] and absent["purge"] is True


def test_check_batch_rejects_duplicate_names_and_dirs():
    def svc(name, directory, state="present"):
        return {"name": name, "service_dir": directory, "state": state}

    tor.check_batch([svc("a", "/x/a"), svc("b", "/x/b")])
    with pytest.raises(ValidationError, match=r"already used by services\[0\]") as err:
        tor.check_batch([svc("a", "/x/a"), svc("a", "/x/b")])
    assert err.value.option == "services[1].name"
    with pytest.raises(ValidationError) as err:
        tor.check_batch([svc("a", "/x/a"), svc("b", "/x/a")])
    assert err.value.option == "services[1].service_dir"
    tor.check_batch([svc("a", "/x/a"), svc("b", "/x/a", state="absent")])


# --------------------------------------------------------------------------- render / parse


@pytest.mark.parametrize(
    "ports",
    [
        [(8333, "127.0.0.1:8334")],
        [(8333, "127.0.0.1:8334"), (80, "[::1]:8080"), (443, "localhost:8443")],
    ],
)
def test_render_parse_round_trip(ports):
    text = tor.render_dropin("core-main", "/var/lib/tor/nodefleet-core-main", ports)
    assert text.startswith(tor.DROPIN_HEADER + "\n")
    assert text.endswith("\n")
    assert "HiddenServiceDir /var/lib/tor/nodefleet-core-main\n" in text
    parsed = tor.parse_dropin(text)
    assert parsed == {"service_dir": "/var/lib/tor/nodefleet-core-main", "ports": ports}
    # rendering is deterministic: the idempotence of the module rests on it
    assert tor.render_dropin("core-main", "/var/lib/tor/nodefleet-core-main", list(ports)) == text


def test_render_exact_text():
    assert tor.render_dropin("a", "/srv/hs/a", [(8333, "127.0.0.1:8334")]) == (
        "# Managed by nodefleet.bitcoin (tor_hidden_service); local edits are overwritten.\n"
        "# service=a\n"
        "HiddenServiceDir /srv/hs/a\n"
        "HiddenServicePort 8333 127.0.0.1:8334\n"
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", {"service_dir": None, "ports": []}),
        (
            "hiddenservicedir /a  # comment\nHiddenServicePort 80\n",
            {"service_dir": "/a", "ports": [(80, "127.0.0.1:80")]},
        ),
        (
            "  HiddenServiceDir /a\n# HiddenServiceDir /b\nHiddenServicePort 80 1.2.3.4:81\nSocksPort 9050\n",
            {"service_dir": "/a", "ports": [(80, "1.2.3.4:81")]},
        ),
    ],
)
def test_parse_dropin(text, expected):
    assert tor.parse_dropin(text) == expected


@pytest.mark.parametrize(
    "torrc, expected",
    [
        ("%include /etc/tor/torrc.d/*.conf\n", ["/etc/tor/torrc.d/*.conf"]),
        ("SocksPort 9050\n  %include /a\n#%include /b\n%include /c # tail\n", ["/a", "/c"]),
        ("%Include /a\n", []),  # tor's keyword is case-sensitive
        ('%include "/quoted/dir"\n', ["/quoted/dir"]),
        ("%include\n", []),
    ],
)
def test_parse_includes(torrc, expected):
    assert tor.parse_includes(torrc) == expected


DROPIN = "/etc/tor/torrc.d/nodefleet-a.conf"


@pytest.mark.parametrize(
    "include, covered",
    [
        ("/etc/tor/torrc.d", True),
        ("/etc/tor/torrc.d/", True),
        ("/etc/tor/torrc.d/*.conf", True),
        ("/etc/tor/torrc.d/*", True),
        ("/etc/tor/torrc.d/nodefleet-*.conf", True),
        ("/etc/tor/torrc.d/nodefleet-a.conf", True),
        ("/etc/tor/torrc.d/*.torrc", False),
        ("/etc/tor/torrc.d/nodefleet-b.conf", False),
        ("/etc/tor/other.d/*.conf", False),
        ("/etc/tor/*/*.conf", False),
        ("torrc.d/*.conf", False),
        ("/etc/tor", False),
    ],
)
def test_include_covers(include, covered):
    assert tor.include_covers(include, "/etc/tor/torrc.d", DROPIN) is covered


def test_torrc_includes():
    assert tor.torrc_includes("SocksPort 9050\n%include /etc/tor/torrc.d/*.conf\n", "/etc/tor/torrc.d", DROPIN)
    assert not tor.torrc_includes("SocksPort 9050\n#%include /etc/tor/torrc.d/*.conf\n", "/etc/tor/torrc.d", DROPIN)


def test_tor_messages_keeps_warnings_without_timestamps():
    out = (
        'Nov 21 23:50:07.111 [notice] Read configuration file "/t/torrc".\n'
        "Nov 21 23:50:07.111 [warn] You are running Tor as root. You don't need to.\n"
        'Nov 21 23:50:07.121 [warn] Another hidden service is already configured for directory "/hs/b"\n'
        "Nov 21 23:50:07.126 [err] Reading config failed--see warnings above.\n"
    )
    assert tor.tor_messages(out) == (
        'Another hidden service is already configured for directory "/hs/b" | '
        "Reading config failed--see warnings above."
    )
    assert tor.tor_messages("something odd\n") == "something odd"


def test_verify_command():
    assert tor.verify_command("/usr/bin/tor", "/etc/tor/torrc", "/d") == [
        "/usr/bin/tor",
        "--verify-config",
        "-f",
        "/etc/tor/torrc",
        "--defaults-torrc",
        "/d",
    ]
    assert tor.verify_command("tor", "/t", "") == ["tor", "--verify-config", "-f", "/t"]


# --------------------------------------------------------------------------- files and pids


def test_read_hostname_and_wait(tmp_path):
    assert tor.read_hostname(str(tmp_path)) is None
    (tmp_path / "hostname").write_text("garbage\n")
    assert tor.read_hostname(str(tmp_path)) is None
    ticks = iter(range(100))
    assert tor.wait_for_hostname(str(tmp_path), 3, clock=lambda: next(ticks), sleep=lambda _s: None) is None
    (tmp_path / "hostname").write_text(ONION + "\n")
    assert tor.read_hostname(str(tmp_path)) == ONION
    assert tor.wait_for_hostname(str(tmp_path), 1) == ONION


def test_looks_like_service_dir(tmp_path):
    assert tor.looks_like_service_dir(str(tmp_path))  # empty
    for name in ("hostname", "hs_ed25519_secret_key", "hs_ed25519_public_key"):
        (tmp_path / name).write_text("x")
    (tmp_path / "authorized_clients").mkdir()
    assert tor.looks_like_service_dir(str(tmp_path))
    (tmp_path / "notes.txt").write_text("mine")
    assert not tor.looks_like_service_dir(str(tmp_path))
    assert not tor.looks_like_service_dir(str(tmp_path / "missing"))


@pytest.mark.parametrize(
    "content, error",
    [
        (None, "does not exist"),
        ("", "does not hold a process id"),
        ("abc\n", "does not hold a process id"),
        ("1\n", "does not hold a process id"),
    ],
)
def test_read_pid_errors(tmp_path, content, error):
    pid_file = tmp_path / "tor.pid"
    if content is not None:
        pid_file.write_text(content)
    with pytest.raises(ValidationError, match=error) as err:
        tor.read_pid(str(pid_file))
    assert err.value.option == "tor_pid_file"


def test_read_pid_refuses_a_process_that_is_not_tor(tmp_path):
    pid_file = tmp_path / "tor.pid"
    pid_file.write_text(f"{os.getpid()}\n")  # pytest's python, not tor
    with pytest.raises(ValidationError, match="not tor") as err:
        tor.reload_tor(str(pid_file), kill=lambda *_a: pytest.fail("must not signal a non-tor process"))
    assert err.value.option == "tor_pid_file"


def test_read_pid_dead_process(tmp_path):
    pid_file = tmp_path / "tor.pid"
    pid_file.write_text("4194304\n")  # above the kernel's pid_max limit: never a live process
    with pytest.raises(ValidationError, match="not running"):
        tor.read_pid(str(pid_file))


def test_reload_sends_sighup_to_tor(tmp_path, monkeypatch):
    pid_file = tmp_path / "tor.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    monkeypatch.setattr(tor, "read_bytes", lambda path: b"tor\n" if path.startswith("/proc/") else None)
    sent = []
    assert tor.reload_tor(str(pid_file), kill=lambda pid, sig: sent.append((pid, sig))) == os.getpid()
    assert sent == [(os.getpid(), signal.SIGHUP)]
