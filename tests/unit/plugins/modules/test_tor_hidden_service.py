# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for tor_hidden_service: argument handling, validation, planning, check mode.

These run the module's main() in-process against temp directories; nothing here needs a
running tor (the paths that reload tor are covered by tests/integration/test_tor_hidden_service_module.py).
"""

from __future__ import annotations

import base64
import json
import os
import pwd

import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import tor
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import ValidationError
from ansible_collections.nodefleet.bitcoin.plugins.modules import tor_hidden_service as ths

USER = pwd.getpwuid(os.getuid()).pw_name
KEY = tor.SECRET_KEY_HEADER + bytes(range(64))
KEY_B64 = base64.b64encode(KEY).decode()
OTHER_KEY = tor.SECRET_KEY_HEADER + bytes(range(64, 128))
ONION = "pplucon3en7jyrs5kb7kxl2dvdo5dfm4bjjmug3zktvuvfu4i3dqp6qd.onion"
P2P = [{"port": 8333, "target": "127.0.0.1:8334"}]


class Exit(Exception):
    pass


class Fail(Exception):
    pass


def lay_out_host(tmp_path, monkeypatch, on_fail=None):
    """A fake host layout (torrc including torrc.d, an empty defaults file, a services dir);
    exit_json/fail_json raise Exit/Fail, and ``on_fail()`` runs first on every fail_json."""
    (tmp_path / "torrc.d").mkdir()
    (tmp_path / "services").mkdir(mode=0o700)
    (tmp_path / "torrc").write_text(f"SocksPort 9050\n%include {tmp_path}/torrc.d/*.conf\n")
    (tmp_path / "defaults").write_text("")

    def exit_json(self, **kwargs):
        raise Exit(kwargs)

    def fail_json(self, **kwargs):
        if on_fail is not None:
            on_fail()
        raise Fail(kwargs)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)
    return tmp_path


@pytest.fixture
def host(tmp_path, monkeypatch):
    return lay_out_host(tmp_path, monkeypatch)


def base_args(host) -> dict:
    return {
        "torrc_dir": str(host / "torrc.d"),
        "torrc_file": str(host / "torrc"),
        "tor_defaults_torrc": str(host / "defaults"),
        "tor_pid_file": str(host / "tor.pid"),
        "tor_user": USER,
    }


def call(args: dict, check: bool = False, diff: bool = False) -> tuple[str, dict]:
    args = dict(args, _ansible_check_mode=check, _ansible_diff=diff)
    with patch_module_args(args):
        try:
            ths.main()
        except Exit as exc:
            return "exit", exc.args[0]
        except Fail as exc:
            return "fail", exc.args[0]
    raise AssertionError("module neither exited nor failed")


def snapshot(host) -> set[str]:
    return {str(p.relative_to(host)) for p in host.rglob("*")}


@pytest.mark.parametrize(
    "options, option",
    [
        ({"name": "../x", "ports": P2P}, "name"),
        ({"name": "a", "ports": P2P, "service_dir": "relative"}, "service_dir"),
        ({"name": "a", "ports": P2P, "service_dir": "/srv/../etc"}, "service_dir"),
        ({"name": "a", "ports": [{"port": 0, "target": "127.0.0.1:1"}]}, "ports[0].port"),
        ({"name": "a", "ports": [{"port": 70000, "target": "127.0.0.1:1"}]}, "ports[0].port"),
        ({"name": "a", "ports": [*P2P, {"port": 8333, "target": "127.0.0.1:2"}]}, "ports[1].port"),
        ({"name": "a", "ports": [{"port": 1, "target": "nohost"}]}, "ports[0].target"),
        ({"name": "a"}, "ports"),
        ({"name": "a", "ports": P2P, "secret_key": "%%%"}, "secret_key"),
        ({"name": "a", "ports": P2P, "secret_key": KEY_B64[:-4]}, "secret_key"),
        ({"name": "a", "ports": P2P, "secret_key": base64.b64encode(bytes(96)).decode()}, "secret_key"),
        ({"name": "a", "ports": P2P, "force_key": True}, "force_key"),
        ({"name": "a", "ports": P2P, "wait_timeout": 0}, "wait_timeout"),
        ({"name": "a", "ports": P2P, "tor_user": "no-such-user-xyz"}, "tor_user"),
        ({"name": "a", "ports": P2P, "torrc_file": "/nonexistent/torrc"}, "torrc_file"),
        ({"name": "a", "ports": P2P, "tor_defaults_torrc": "/nonexistent/defaults"}, "tor_defaults_torrc"),
        ({"services": [{"name": "a", "ports": P2P}], "ports": P2P}, "ports"),
        ({"services": [{"name": "a", "ports": P2P}], "purge": True}, "purge"),
        ({"services": []}, "services"),
        (
            {"services": [{"name": "a", "ports": P2P}, {"name": "b", "ports": [{"port": 0, "target": "1.2.3.4:5"}]}]},
            "services[1].ports[0].port",
        ),
        ({"services": [{"name": "a", "ports": P2P}, {"name": "a", "state": "absent"}]}, "services[1].name"),
    ],
)
def test_invalid_input_fails_naming_the_option_and_writes_nothing(host, options, option):
    before = snapshot(host)
    args = {**base_args(host), "service_dir": None, **options}
    if "services" not in options and args["service_dir"] is None:
        args["service_dir"] = str(host / "services" / "a")
    if "services" in options:
        args.pop("service_dir")
        for svc in options["services"]:
            svc.setdefault("service_dir", str(host / "services" / svc["name"]))
    outcome, result = call(args)
    assert outcome == "fail", result
    assert result["msg"].startswith(option + ": "), result["msg"]
    assert snapshot(host) == before
    assert KEY_B64 not in json.dumps(result)


def test_argspec_rejects_name_with_services(host):
    outcome, result = call({**base_args(host), "name": "a", "services": [{"name": "b", "ports": P2P}]})
    assert outcome == "fail" and "mutually exclusive" in result["msg"]
    outcome, result = call(base_args(host))
    assert outcome == "fail" and "name" in result["msg"] and "services" in result["msg"]


def test_torrc_without_include_fails_naming_torrc_file(host):
    (host / "torrc").write_text(f"SocksPort 9050\n%include {host}/elsewhere/*.conf\n")
    outcome, result = call({**base_args(host), "name": "a", "ports": P2P, "service_dir": str(host / "services" / "a")})
    assert outcome == "fail"
    assert result["msg"].startswith("torrc_file: ") and "%include" in result["msg"]
    assert not (host / "torrc.d" / "nodefleet-a.conf").exists()


def test_missing_parent_of_service_dir_fails(host):
    args = {**base_args(host), "name": "a", "ports": P2P, "service_dir": str(host / "missing" / "a")}
    outcome, result = call(args)
    assert outcome == "fail" and result["msg"].startswith("service_dir: parent directory")


def test_check_mode_new_service_reports_change_and_diff_and_writes_nothing(host):
    before = snapshot(host)
    svc_dir = host / "services" / "a"
    args = {**base_args(host), "name": "a", "ports": P2P, "service_dir": str(svc_dir), "secret_key": KEY_B64}
    outcome, result = call(args, check=True, diff=True)
    assert outcome == "exit", result
    assert result["changed"] is True and result["reloaded"] is False
    assert result["onion_address"] is None
    assert result["torrc_dropin"] == str(host / "torrc.d" / "nodefleet-a.conf")
    assert result["diff"]["after"] == tor.render_dropin("a", str(svc_dir), [(8333, "127.0.0.1:8334")])
    assert result["diff"]["before_header"].endswith("(absent)")
    assert snapshot(host) == before
    assert KEY_B64 not in json.dumps(result) and KEY.hex() not in json.dumps(result)


def _existing_service(host, key=KEY):
    svc_dir = host / "services" / "a"
    svc_dir.mkdir(mode=0o700)
    (svc_dir / tor.SECRET_KEY_FILE).write_bytes(key)
    (svc_dir / tor.HOSTNAME_FILE).write_text(ONION + "\n")
    dropin = host / "torrc.d" / "nodefleet-a.conf"
    dropin.write_text(tor.render_dropin("a", str(svc_dir), [(8333, "127.0.0.1:8334")]))
    return svc_dir, dropin


def test_converged_service_is_a_no_op_even_without_tor(host):
    svc_dir, _unused = _existing_service(host)
    args = {**base_args(host), "name": "a", "ports": P2P, "service_dir": str(svc_dir), "secret_key": KEY_B64}
    for check in (True, False):
        outcome, result = call(args, check=check)
        assert outcome == "exit", result
        assert result["changed"] is False and result["reloaded"] is False
        assert result["onion_address"] == ONION
        assert result["services"]["a"]["changed"] is False


def test_a_different_key_fails_without_force_and_is_not_shown(host):
    svc_dir, _unused = _existing_service(host, key=OTHER_KEY)
    args = {**base_args(host), "name": "a", "ports": P2P, "service_dir": str(svc_dir), "secret_key": KEY_B64}
    outcome, result = call(args)
    assert outcome == "fail"
    assert result["msg"].startswith("secret_key: ") and "force_key=true" in result["msg"]
    dumped = json.dumps(result)
    for secret in (KEY_B64, KEY.hex(), base64.b64encode(OTHER_KEY).decode(), OTHER_KEY.hex()):
        assert secret not in dumped
    assert (svc_dir / tor.SECRET_KEY_FILE).read_bytes() == OTHER_KEY
    # in check mode with force_key the replacement is reported, not done
    outcome, result = call({**args, "force_key": True}, check=True)
    assert outcome == "exit" and result["changed"] is True
    assert (svc_dir / tor.SECRET_KEY_FILE).read_bytes() == OTHER_KEY


def test_change_with_tor_down_fails_naming_tor_pid_file_before_writing(host):
    svc_dir, dropin = _existing_service(host)
    previous = dropin.read_text()
    args = {
        **base_args(host),
        "name": "a",
        "ports": [{"port": 8333, "target": "127.0.0.1:9"}],
        "service_dir": str(svc_dir),
    }
    outcome, result = call(args)
    assert outcome == "fail" and result["msg"].startswith("tor_pid_file: ")
    assert dropin.read_text() == previous


def test_absent_purge_refuses_a_directory_that_is_not_an_onion_service(host):
    svc_dir, _unused = _existing_service(host)
    (svc_dir / "my-notes.txt").write_text("not tor's")
    outcome, result = call({**base_args(host), "name": "a", "state": "absent", "purge": True}, check=True)
    assert outcome == "fail" and result["msg"].startswith("purge: ")


def test_absent_purge_uses_the_dir_named_in_the_existing_dropin(host):
    svc_dir, dropin = _existing_service(host)
    outcome, result = call({**base_args(host), "name": "a", "state": "absent", "purge": True}, check=True, diff=True)
    assert outcome == "exit", result
    assert result["changed"] is True and result["service_dir"] == str(svc_dir)
    assert result["diff"]["after"] == "" and "HiddenServiceDir" in result["diff"]["before"]
    assert svc_dir.exists() and dropin.exists()


def test_absent_of_an_unknown_service_is_a_no_op(host):
    outcome, result = call({**base_args(host), "name": "ghost", "state": "absent"})
    assert outcome == "exit" and result["changed"] is False and result["onion_address"] is None


@pytest.mark.parametrize("exists", [True, False])
def test_defaults_torrc_follows_debian(monkeypatch, exists):
    monkeypatch.setattr(ths.os.path, "exists", lambda p: exists if p == ths.DEBIAN_DEFAULTS_TORRC else False)
    params = {
        "name": "a",
        "services": None,
        "state": None,
        "service_dir": None,
        "ports": P2P,
        "secret_key": None,
        "force_key": False,
        "purge": False,
        "torrc_dir": "/etc/tor/torrc.d",
        "torrc_file": "/etc/tor/torrc",
        "tor_defaults_torrc": None,
        "tor_user": "debian-tor",
        "tor_pid_file": "/run/tor/tor.pid",
        "wait_timeout": 30,
    }
    services, batch, settings = ths.validate(params)
    assert batch is False
    assert settings["tor_defaults_torrc"] == (ths.DEBIAN_DEFAULTS_TORRC if exists else "")
    assert services[0]["service_dir"] == "/var/lib/tor/nodefleet-a"
    assert services[0]["dropin"] == "/etc/tor/torrc.d/nodefleet-a.conf"
    assert ths.validate({**params, "tor_defaults_torrc": ""})[2]["tor_defaults_torrc"] == ""


def test_single_and_batch_forms_share_one_spec():
    single = {"name": "a", "state": None, "service_dir": None, "ports": P2P, "secret_key": None}
    single.update(force_key=False, purge=False, services=None)
    specs, batch = ths.service_specs(single)
    assert batch is False and specs == [{k: single[k] for k in ("name", *ths.SERVICE_OPTIONS)}]
    with pytest.raises(ValidationError) as err:
        ths.service_specs({**single, "name": None, "ports": None, "services": [{"name": "a"}], "secret_key": KEY_B64})
    assert err.value.option == "secret_key" and KEY_B64 not in str(err.value)
