# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""bitcoind_info through ansible against a real supervisord: restart loops (issue 12) and
over-masking (issue 17).

- a program that keeps crashing under ``autorestart=true`` is reported ``restarting`` with
  ``restart_loop: true`` (three restarts in the log window), a program restarted once is not;
- with ``rpc_credentials`` only the password is ``no_log``: a user named ``u`` leaves
  ``auth_failed`` readable (with the old ``credentials`` dict it came out as
  ``a********th_failed``).
"""

from __future__ import annotations

import time

import pytest
from ansible_collections.nodefleet.bitcoin.tests.integration.ansible_cli import run_collection_module
from ansible_collections.nodefleet.bitcoin.tests.integration.local_ports import free_ports
from ansible_collections.nodefleet.bitcoin.tests.integration.supervisord_fixture import (  # noqa: F401
    supervisord,
)
from ansible_collections.nodefleet.bitcoin.tests.integration.test_bitcoind_info import (
    RPC_USER,
    password_for,
    run_info,
    wait_all_up,
    write_instance,
)

pytestmark = pytest.mark.integration


def info(sv, instances, **extra) -> tuple[dict, str]:
    args = {
        "instances": instances,
        "conf_dir": sv.conf_dir,
        "datadir_root": "/nonexistent",
        "supervisor_url": sv.server_url,
        "timeout": 3,
        **extra,
    }
    return run_collection_module("bitcoind_info", args, expect_success=True)


def test_a_crash_looping_program_is_restarting(supervisord):  # noqa: F811
    sv = supervisord
    # RUNNING after 1 s, dies at 1.5 s, restarted by supervisord: a restart loop
    sv.write_program("bitcoind-loop", "/bin/sh -c 'sleep 1.5; exit 3'", startsecs=1, autorestart=True, startretries=100)
    sv.update()
    (rpc_port,) = free_ports(1)
    deadline = time.monotonic() + 45
    while True:
        result, _out = info(sv, [{"name": "loop", "rpc_port": rpc_port}])
        (loop,) = result["instances"]
        restarts = loop["supervisord"]["restarts"]
        assert loop["restart_loop"] is (restarts is not None and restarts >= 3), loop
        # between two spawns supervisord shows EXITED for a moment: ask again then
        if loop["restart_loop"] and loop["supervisord"]["state"] in ("RUNNING", "STARTING", "BACKOFF"):
            break
        assert time.monotonic() < deadline, f"no restart loop seen within 45 s: {loop['supervisord']}"
        time.sleep(1)
    assert loop["state"] == "restarting", loop
    assert "restart loop" in loop["message"] and "RPC down" in loop["message"], loop["message"]
    assert result["summary"]["restarting"] == 1
    # a higher threshold: the same program is not (yet) a loop
    result, _out = info(sv, [{"name": "loop", "rpc_port": rpc_port}], restart_loop_threshold=1000)
    (loop,) = result["instances"]
    assert loop["restart_loop"] is False and loop["state"] != "restarting", loop


def test_a_program_restarted_once_is_not_a_loop_and_rpc_credentials_mask_only_passwords(supervisord, tmp_path):  # noqa: F811
    sv = supervisord
    write_instance(sv, "solo", str(tmp_path), peers=[])
    sv.update()
    sv.wait_state("bitcoind-solo", "RUNNING")
    wait_all_up(sv, ["solo"])
    client = sv.client()
    client.call("stopProcess", "bitcoind-solo", True)
    client.call("startProcess", "bitcoind-solo", True)
    result = wait_all_up(sv, ["solo"])
    (solo,) = result["instances"]
    assert solo["supervisord"]["restarts"] == 1
    assert (solo["state"], solo["restart_loop"]) == ("up", False)

    # discovery + rpc_credentials, right password: up; the user name stays readable
    good = {
        "rpc_credentials": [{"name": "solo", "user": RPC_USER, "password": password_for("solo")}],
    }
    result, _wall, out = run_info(sv, ["solo"], extra=good)
    assert result["instances"][0]["state"] == "up"
    assert password_for("solo") not in out
    # user "u", wrong password: auth_failed, not "a********th_failed"
    bad = {"rpc_credentials": [{"name": "solo", "user": "u", "password": "wrong-Zq8-pass"}]}
    result, _wall, out = run_info(sv, ["solo"], extra=bad)
    assert result["instances"][0]["state"] == "auth_failed", result["instances"][0]
    assert "a********th_failed" not in out and "wrong-Zq8-pass" not in out
