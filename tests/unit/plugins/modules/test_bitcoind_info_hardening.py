# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""bitcoind_info hardening: restart loops (issue 12), over-masking and clean failures (issue 17).

- a program supervisord keeps restarting is flagged (``restart_loop``) and reported as state
  ``restarting`` while supervisord runs it; ``count_restarts`` has one implementation, in
  module_utils/supervisord.py;
- ``rpc_credentials`` masks only passwords: a user ``u`` no longer turns ``auth_failed`` into
  ``a********th_failed`` (the old ``credentials`` dict is still accepted);
- ``fail_json`` is never called while an exception is being handled.
"""

from __future__ import annotations

import inspect
import json
import sys

import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import supervisord
from ansible_collections.nodefleet.bitcoin.plugins.modules import bitcoind_info
from ansible_collections.nodefleet.bitcoin.tests.unit.plugins.modules.test_bitcoind_info import (  # noqa: F401  # pylint: disable=unused-import
    PASSWORD,
    fake_bitcoind,
    fake_supervisord,
    process,
    run_module,
)


def spawns(program: str, count: int) -> str:
    return "x INFO supervisord started with pid 1\n" + "".join(
        f"x INFO spawned: '{program}' with pid {100 + n}\n" for n in range(count)
    )


def info_args(port: int, url: str, tmp_path, **extra) -> dict:
    return {
        "instances": [{"name": "loop1", "rpc_port": port, "rpc_user": "monitor", "rpc_password": PASSWORD}],
        "supervisor_url": url,
        "conf_dir": str(tmp_path),
        "datadir_root": str(tmp_path),
        "timeout": 3,
        **extra,
    }


# --------------------------------------------------------------------------- restart loop


def test_count_restarts_has_one_implementation():
    assert bitcoind_info.count_restarts is supervisord.count_restarts
    assert "def count_restarts" not in inspect.getsource(bitcoind_info)


@pytest.mark.parametrize(
    ("statename", "spawned", "extra", "state", "loop"),
    [
        ("RUNNING", 4, {}, "restarting", True),  # 3 restarts: the default threshold
        ("RUNNING", 3, {}, "up", False),  # 2 restarts: below it
        ("RUNNING", 3, {"restart_loop_threshold": 2}, "restarting", True),
        ("STARTING", 6, {}, "restarting", True),
        ("BACKOFF", 6, {}, "restarting", True),
        ("RUNNING", 6, {"count_restarts": False}, "up", False),  # not counted: never a loop
    ],
)
def test_a_restart_loop_is_flagged_and_reported(
    fake_bitcoind,  # noqa: F811
    fake_supervisord,  # noqa: F811
    capsys,
    tmp_path,
    statename,
    spawned,
    extra,
    state,
    loop,
):
    port = fake_bitcoind()
    fake_supervisord["processes"] = [process("bitcoind-loop1", statename, 100, 1000, 1100)]
    fake_supervisord["log"] = spawns("bitcoind-loop1", spawned)
    result, out = run_module(info_args(port, fake_supervisord["url"], tmp_path, **extra), capsys)
    (instance,) = result["instances"]
    assert (instance["state"], instance["restart_loop"]) == (state, loop), instance
    assert result["summary"]["restarting"] == (1 if state == "restarting" else 0)
    assert PASSWORD not in out
    if state == "restarting":
        assert f"{spawned - 1} times" in instance["message"]
        assert "restart_loop_threshold" in instance["message"]
        assert "RPC up" in instance["message"]  # what RPC answered is kept


@pytest.mark.parametrize(
    ("uptime", "extra", "loop"),
    [
        (299, {}, True),
        (301, {}, False),  # stable for longer than restart_loop_window (300 s): out of the loop
        (5000, {"restart_loop_window": 0}, True),  # 0: the count alone decides
        (5000, {"restart_loop_window": 6000}, True),
    ],
)
def test_a_program_running_longer_than_the_window_is_out_of_the_loop(
    fake_bitcoind,  # noqa: F811
    fake_supervisord,  # noqa: F811
    capsys,
    tmp_path,
    uptime,
    extra,
    loop,
):
    port = fake_bitcoind()
    fake_supervisord["processes"] = [process("bitcoind-loop1", "RUNNING", 100, 1000, 1000 + uptime)]
    fake_supervisord["log"] = spawns("bitcoind-loop1", 10)
    result, _out = run_module(info_args(port, fake_supervisord["url"], tmp_path, **extra), capsys)
    (instance,) = result["instances"]
    assert instance["supervisord"]["restarts"] == 9
    assert (instance["restart_loop"], instance["state"]) == (loop, "restarting" if loop else "up")


def test_a_program_supervisord_gave_up_on_is_down_but_flagged(
    fake_bitcoind,  # noqa: F811
    fake_supervisord,  # noqa: F811
    capsys,
    tmp_path,
):
    from ansible_collections.nodefleet.bitcoin.tests.unit.plugins.modules.test_bitcoind_info import free_port

    fake_supervisord["processes"] = [process("bitcoind-loop1", "FATAL", 0, 1000, 1100)]
    fake_supervisord["log"] = spawns("bitcoind-loop1", 5)
    result, _out = run_module(info_args(free_port(), fake_supervisord["url"], tmp_path), capsys)
    (instance,) = result["instances"]
    assert (instance["state"], instance["restart_loop"]) == ("down", True)
    assert "FATAL" in instance["message"]


def test_without_supervisord_there_is_no_restart_loop(fake_bitcoind, capsys, tmp_path):  # noqa: F811
    result, _out = run_module(info_args(fake_bitcoind(), "", tmp_path), capsys)
    (instance,) = result["instances"]
    assert (instance["state"], instance["restart_loop"]) == ("up", False)


@pytest.mark.parametrize("option, value", [("restart_loop_threshold", 0), ("restart_loop_window", -1)])
def test_restart_loop_options_are_checked(capsys, tmp_path, option, value):
    with patch_module_args(info_args(1234, "", tmp_path, **{option: value})), pytest.raises(SystemExit):
        bitcoind_info.main()
    result = json.loads(capsys.readouterr().out)
    assert result["failed"] is True and result["msg"].startswith(option + ": ")


def test_restarting_is_a_documented_state():
    assert "restarting" in bitcoind_info.STATES
    assert "restarting" in bitcoind_info.RETURN and "restart_loop" in bitcoind_info.RETURN
    assert "restart_loop_threshold" in bitcoind_info.DOCUMENTATION


# --------------------------------------------------------------------------- over-masking


def test_rpc_credentials_mask_only_the_password(fake_bitcoind, capsys, tmp_path):  # noqa: F811
    port = fake_bitcoind()  # accepts only monitor:PASSWORD, so user "u" gets HTTP 401
    args = {
        "instances": [{"name": "a1", "rpc_port": port}],
        "rpc_credentials": [{"name": "a1", "user": "u", "password": "not-" + PASSWORD}],
        "supervisor_url": "",
        "conf_dir": str(tmp_path),
        "datadir_root": str(tmp_path),
        "timeout": 3,
    }
    result, out = run_module(args, capsys)
    (instance,) = result["instances"]
    assert instance["state"] == "auth_failed"  # was "a********th_failed" with credentials: {a1: {user: u}}
    assert "********" not in json.dumps(result["instances"])
    assert "not-" + PASSWORD not in out
    assert result["invocation"]["module_args"]["rpc_credentials"][0]["user"] == "u"


def test_rpc_credentials_are_used_and_the_old_dict_form_is_refused(fake_bitcoind, capsys, tmp_path):  # noqa: F811
    port = fake_bitcoind()
    base = {
        "instances": [{"name": "a1", "rpc_port": port}],
        "supervisor_url": "",
        "conf_dir": str(tmp_path),
        "datadir_root": str(tmp_path),
        "timeout": 3,
    }
    good = dict(base, rpc_credentials=[{"name": "a1", "user": "monitor", "password": PASSWORD}])
    result, out = run_module(good, capsys)
    assert result["instances"][0]["state"] == "up" and PASSWORD not in out
    wrong = dict(base, rpc_credentials=[{"name": "a1", "user": "monitor", "password": "wrong-" + PASSWORD}])
    result, out = run_module(wrong, capsys)
    assert result["instances"][0]["state"] == "auth_failed"
    assert PASSWORD not in out
    # The old whole-dict no_log form (which masked user names everywhere) is no longer an option.
    old = dict(base, credentials={"a1": {"user": "monitor", "password": PASSWORD}})
    result, out = run_module(old, capsys)
    assert result.get("failed") and "credentials" in result["msg"]
    assert PASSWORD not in out


@pytest.mark.parametrize(
    ("extra", "option"),
    [
        ({"rpc_credentials": [{"name": "a1", "user": "u\x00", "password": "p"}]}, "rpc_credentials[0].user"),
        ({"rpc_credentials": [{"name": "a b", "user": "u", "password": "p"}]}, "rpc_credentials[0].name"),
        (
            {
                "rpc_credentials": [
                    {"name": "a1", "user": "u", "password": "p"},
                    {"name": "a1", "user": "v", "password": "q"},
                ]
            },
            "rpc_credentials[1].name",
        ),
        ({"rpc_credentials": [{"name": "a1", "user": "u\x1b[2J", "password": "p"}]}, "rpc_credentials[0].user"),
        ({"instances": [{"name": "a1", "rpc_user": "mon\x00itor"}]}, "instances[0].rpc_user"),
    ],
)
def test_bad_credentials_fail_cleanly(monkeypatch, tmp_path, extra, option):
    calls = []

    def fail_json(self, **kwargs):
        calls.append((kwargs["msg"], sys.exc_info()[0] is not None))
        raise SystemExit(1)

    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)
    args = dict({"supervisor_url": "", "conf_dir": str(tmp_path), "datadir_root": str(tmp_path)}, **extra)
    with patch_module_args(args), pytest.raises(SystemExit):
        bitcoind_info.main()
    ((msg, in_except),) = calls
    assert msg.startswith(option + ": "), msg
    assert not in_except, "fail_json called inside an except block"


@pytest.mark.parametrize(
    "args",
    [
        {"timeout": 0},
        {"supervisor_url": "ftp://x"},
        {"rpc_credentials": [{"name": "a", "user": "u\x00", "password": "p"}]},
    ],
)
def test_fail_json_is_never_called_inside_an_except_block(monkeypatch, tmp_path, args):
    calls = []

    def fail_json(self, **kwargs):
        calls.append(sys.exc_info()[0] is not None)
        raise SystemExit(1)

    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)
    with patch_module_args(dict({"conf_dir": str(tmp_path), "supervisor_url": ""}, **args)), pytest.raises(SystemExit):
        bitcoind_info.main()
    assert calls == [False]


@pytest.mark.parametrize("rpc_host", ["127.0.0.1\n", "local host", "h\x00st", "", "hôst"])
def test_rpc_host_must_be_a_plain_host(monkeypatch, tmp_path, rpc_host):
    calls = []

    def fail_json(self, **kwargs):
        calls.append(kwargs["msg"])
        raise SystemExit(1)

    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)
    args = {"instances": [{"name": "a1", "rpc_host": rpc_host, "rpc_port": 8332}], "supervisor_url": ""}
    with patch_module_args(dict(args, conf_dir=str(tmp_path))), pytest.raises(SystemExit):
        bitcoind_info.main()
    assert len(calls) == 1 and calls[0].startswith("instances[0].rpc_host: "), calls
