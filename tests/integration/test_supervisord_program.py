# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""supervisord_program against a real supervisord (Debian's supervisor 4.2.5), run through ansible-playbook."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest
from ansible_collections.nodefleet.bitcoin.tests.integration.ansible_cli import run_collection_module_in_playbook
from ansible_collections.nodefleet.bitcoin.tests.integration.ci_gate import skip_or_fail
from ansible_collections.nodefleet.bitcoin.tests.integration.supervisord_fixture import (
    running_supervisord,
    supervisord_binary,
)

pytestmark = pytest.mark.integration

SLEEP = "/bin/sleep 1000"


@pytest.fixture
def sv():
    """A fresh real supervisord (temp dir, own socket) per test, always torn down."""
    if supervisord_binary() is None:
        skip_or_fail("supervisord is not installed (scripts/setup.sh installs it)")
    with running_supervisord() as instance:
        yield instance


def read(path, mode="r"):
    with open(path, mode) as handle:
        return handle.read()


def run_module(sv, args: dict, check=False, diff=False, verbosity=0):
    """Run the module once through ansible-playbook (json callback); return (result, full output)."""
    args = dict(args)
    args.setdefault("server_url", sv.server_url)
    args.setdefault("conf_dir", sv.conf_dir)
    return run_collection_module_in_playbook(
        "supervisord_program", args, sv.root, check=check, diff=diff, verbosity=verbosity
    )


def run(sv, args: dict, **kwargs):
    """run_module, result only."""
    return run_module(sv, args, **kwargs)[0]


def program(name, command=SLEEP, **options):
    return dict(name=name, command=command, **options)


def conf_path(sv, name):
    return os.path.join(sv.conf_dir, f"{name}.conf")


# --------------------------------------------------------------------------- states


def test_states_and_second_run_is_a_noop(sv):
    base = program("app", startsecs=1, autostart=False, autorestart="true", stopwaitsecs=5)

    # present (autostart false): file + group, process untouched
    res, out = run_module(sv, dict(base, state="present"))
    assert res["changed"] is True and res["applied"] == "added", out
    assert res["state_before"] is None and res["state"] == "STOPPED"
    st = os.stat(conf_path(sv, "app"))
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    assert "[program:app]" in read(conf_path(sv, "app"))
    res = run(sv, dict(base, state="present"))
    assert res["changed"] is False and res["applied"] is None

    # started: RUNNING, confirmed
    res, out = run_module(sv, dict(base, state="started"))
    assert res["changed"] is True and res["state"] == "RUNNING" and res["pid"] > 0, out
    pid = res["pid"]
    assert sv.info("app")["statename"] == "RUNNING"
    res = run(sv, dict(base, state="started"))
    assert res["changed"] is False and res["pid"] == pid

    # restarted: a new process (restarted is an action: it always reports changed)
    res = run(sv, dict(base, state="restarted"))
    assert res["changed"] is True and res["state"] == "RUNNING" and res["pid"] not in (0, pid)
    pid = res["pid"]

    # stopped
    res = run(sv, dict(base, state="stopped"))
    assert res["changed"] is True and res["state_before"] == "RUNNING" and res["state"] == "STOPPED"
    assert sv.info("app")["statename"] == "STOPPED"
    res = run(sv, dict(base, state="stopped"))
    assert res["changed"] is False

    # absent: group removed, file deleted
    run_module(sv, dict(base, state="started"))
    res = run(sv, {"name": "app", "state": "absent"})
    assert res["changed"] is True and res["applied"] == "removed" and res["state"] is None
    assert not os.path.exists(conf_path(sv, "app"))
    assert "app" not in sv.groups()
    res = run(sv, {"name": "app", "state": "absent"})
    assert res["changed"] is False and res["applied"] is None


def test_present_with_autostart_starts_and_confirms(sv):
    res, out = run_module(sv, program("auto", startsecs=1))
    assert res["applied"] == "added" and res["state"] == "RUNNING", out


def test_update_restarts_only_that_program(sv):
    sv.write_program("neighbour", SLEEP, startsecs=0)
    sv.update()
    before = sv.wait_state("neighbour", "RUNNING")

    res = run(sv, program("app", startsecs=1, state="started"))
    old_pid = res["pid"]
    res, out = run_module(sv, program("app", "/bin/sleep 999", startsecs=1, state="started"))
    assert res["changed"] is True and res["applied"] == "updated", out
    assert res["state"] == "RUNNING" and res["pid"] != old_pid
    assert "sleep 999" in read(f"/proc/{res['pid']}/cmdline").replace("\0", " ")

    after = sv.info("neighbour")
    assert (after["pid"], after["start"], after["statename"]) == (before["pid"], before["start"], "RUNNING")


def test_crash_at_start_fails_naming_state_and_log(sv):
    crash = program("crash", "/bin/sh -c 'echo boom-from-stderr >&2; exit 1'", startsecs=1, startretries=1)
    res, out = run_module(sv, dict(crash, state="started"))
    assert res.get("failed") is True, out
    assert "crash" in res["msg"] and ("FATAL" in res["msg"] or "BACKOFF" in res["msg"])
    assert "boom-from-stderr" in res["msg"]
    # the file stays (it is valid); supervisord ends in FATAL
    sv.wait_state("crash", "FATAL")


def test_fatal_is_recovered_by_started(sv):
    flag = os.path.join(sv.root, "ready")
    # crashes until the flag file exists: FATAL first, then `started` with the same config recovers it
    cmd = f"/bin/sh -c 'test -e {flag} || exit 1; exec /bin/sleep 1000'"
    args = program("flaky", cmd, startsecs=1, startretries=0, state="started")
    res = run(sv, args)
    assert res.get("failed") is True and "FATAL" in res["msg"]
    assert sv.wait_state("flaky", "FATAL")["statename"] == "FATAL"

    with open(flag, "w", encoding="utf-8"):
        pass
    res, out = run_module(sv, args)
    assert res.get("failed") is not True, out
    assert res["changed"] is True and res["state_before"] == "FATAL" and res["state"] == "RUNNING"
    assert res["applied"] is None  # same config: recovered by a start, not a reload

    # and a FATAL program whose command is fixed
    bad = program("fixme", "/bin/sh -c 'exit 3'", startsecs=1, startretries=0, state="started")
    res = run(sv, bad)
    assert res.get("failed") is True
    sv.wait_state("fixme", "FATAL")
    res, out = run_module(sv, dict(bad, command=SLEEP))
    assert res.get("failed") is not True, out
    assert res["state"] == "RUNNING" and res["applied"] == "updated"


def test_stopped_stops_a_program_in_backoff(sv):
    # exits at once, retries for a long time: BACKOFF <-> STARTING
    args = program("looper", "/bin/sh -c 'exit 1'", startsecs=2, startretries=100, autostart=False)
    run_module(sv, dict(args, state="present"))
    sv.client().call("startProcess", "looper:looper", False)
    sv.wait_state("looper", "BACKOFF", timeout=10)

    res, out = run_module(sv, dict(args, state="stopped"))
    assert res["changed"] is True and res["state"] == "STOPPED", out
    assert res["applied"] is None and res["state_before"] in ("BACKOFF", "STARTING")
    time.sleep(3)  # longer than the backoff delay: the retry loop must be gone
    assert sv.info("looper")["statename"] == "STOPPED"
    res = run(sv, dict(args, state="stopped"))
    assert res["changed"] is False


def test_refused_config_restores_previous_files(sv):
    args = program("keep", startsecs=0, state="started")
    run(sv, args)
    before = read(conf_path(sv, "keep"))
    # someone else's broken file makes supervisord refuse every reload
    sv.write_program("broken", "/bin/true", startsecs="not-a-number")
    res, out = run_module(sv, dict(args, command="/bin/sleep 7"))
    assert res.get("failed") is True, out
    assert "reloadConfig" in res["msg"] and "restored" in res["msg"]
    assert read(conf_path(sv, "keep")) == before
    res, out = run_module(sv, program("fresh", startsecs=0))
    assert res.get("failed") is True, out
    assert not os.path.exists(conf_path(sv, "fresh"))
    assert sv.groups() == ["keep"]
    # a file of ours that supervisord refuses (log directory missing) is written, refused, restored
    os.unlink(conf_path(sv, "broken"))
    res, out = run_module(sv, dict(args, stdout_logfile="/nonexistent-dir-h2/x.log"))
    assert res.get("failed") is True, out
    assert "reloadConfig" in res["msg"] and "restored" in res["msg"]
    assert read(conf_path(sv, "keep")) == before
    assert sv.groups() == ["keep"]


# --------------------------------------------------------------------------- batch form


def test_batch_starts_three_programs_in_one_wait_window(sv):
    startsecs = 3
    programs = [program(f"batch{i}", startsecs=startsecs, state="started") for i in range(3)]
    t0 = time.monotonic()
    res, out = run_module(sv, {"programs": programs})
    elapsed = time.monotonic() - t0
    print(
        f"batch of 3 programs with startsecs={startsecs}: {elapsed:.2f}s wall (sequential would be >= {3 * startsecs}s)"
    )
    assert res["changed"] is True, out
    assert sorted(res["programs"]) == ["batch0", "batch1", "batch2"]
    for name, result in res["programs"].items():
        assert result["state"] == "RUNNING" and result["applied"] == "added", name
        assert result["conf_file"] == conf_path(sv, name)
    assert startsecs <= elapsed < 2 * startsecs + 3  # one window, not three

    res = run(sv, {"programs": programs})
    assert res["changed"] is False
    assert all(not r["changed"] for r in res["programs"].values())

    # batch: one absent, one updated, one untouched
    untouched = sv.info("batch2")
    programs[0] = {"name": "batch0", "state": "absent"}
    programs[1] = dict(programs[1], command="/bin/sleep 998")
    res = run(sv, {"programs": programs})
    assert res["programs"]["batch0"]["applied"] == "removed"
    assert res["programs"]["batch1"]["applied"] == "updated"
    assert res["programs"]["batch2"]["changed"] is False
    assert (sv.info("batch2")["pid"], sv.info("batch2")["start"]) == (untouched["pid"], untouched["start"])
    assert sv.groups() == ["batch1", "batch2"]


# --------------------------------------------------------------------------- check mode, diff, secrets


def test_check_mode_changes_nothing(sv):
    res, out = run_module(sv, program("new", state="started"), check=True)
    assert res["changed"] is True and res["applied"] == "added", out
    assert not os.path.exists(conf_path(sv, "new"))
    assert sv.groups() == []

    run_module(sv, program("live", startsecs=0, state="started"))
    before = sv.info("live")
    groups = sv.groups()
    for args in (
        {"name": "live", "state": "absent"},
        program("live", startsecs=0, state="stopped"),
        program("live", startsecs=0, state="restarted"),
        program("live", "/bin/sleep 5", startsecs=0, state="started"),
    ):
        res, out = run_module(sv, args, check=True, diff=True)
        assert res["changed"] is True, (args, out)
        after = sv.info("live")
        assert (after["pid"], after["start"], after["statename"]) == (before["pid"], before["start"], "RUNNING")
        assert sv.groups() == groups
        assert "sleep 1000" in read(conf_path(sv, "live"))
    res = run(sv, program("live", startsecs=0, state="started"), check=True)
    assert res["changed"] is False


def test_diff_and_verbose_output_never_show_environment_values(sv):
    secret1 = f"Sup3r-Secret-One-{os.getpid()}"
    secret2 = f"Sup3r-Secret-Two-{os.getpid()}"
    args = program("envapp", startsecs=0, state="started", environment={"RPC_PASSWORD": secret1, "MODE": "x"})
    res, out = run_module(sv, args, diff=True, verbosity=4)
    assert res["changed"] is True
    assert secret1 not in out
    assert 'RPC_PASSWORD="********"' in res["diff"]["after"]
    pid = res["pid"]

    res, out = run_module(sv, dict(args, environment={"RPC_PASSWORD": secret2, "MODE": "x"}), diff=True, verbosity=4)
    assert res["changed"] is True and res["applied"] == "updated", out
    assert secret1 not in out and secret2 not in out
    assert "environment value changed: RPC_PASSWORD" in res["diff"]["after"]
    assert "MODE" not in res["diff"]["after"].split("environment value changed:")[1]
    # the change was really applied: the new process sees the new value, the file holds it
    assert res["pid"] != pid
    environ = read(f"/proc/{res['pid']}/environ", "rb").split(b"\0")
    assert (f"RPC_PASSWORD={secret2}").encode() in environ
    assert secret2 in read(conf_path(sv, "envapp"))

    # a failure message (log tail) does not leak it either
    leak = program(
        "leaky",
        "/bin/sh -c 'echo $RPC_PASSWORD >&2; exit 1'",
        startsecs=1,
        startretries=0,
        state="started",
        environment={"RPC_PASSWORD": secret1},
    )
    res, out = run_module(sv, leak, diff=True, verbosity=4)
    assert res.get("failed") is True
    assert secret1 not in out


def test_environment_values_reach_the_process_verbatim(sv):
    env = {
        "PERCENT": "100%(ENV_HOME)s%",
        "BACKSLASH": "a\\b\\\\c",
        "DQUOTE": 'say "hi" now',
        "SQUOTE": "it's",
        "COMMA_EQ": "a=b,c=d",
        "SPACES": "two  spaces",
        "HASH": "no#comment;here",
        "EMPTY": "",
    }
    res, _out = run_module(sv, program("envcheck", startsecs=0, state="started", environment=env))
    assert res.get("state") == "RUNNING", json.dumps(res, indent=1)
    environ = read(f"/proc/{res['pid']}/environ", "rb").decode().split("\0")
    seen = dict(item.split("=", 1) for item in environ if "=" in item)
    for key, value in env.items():
        assert seen.get(key) == value, key


# --------------------------------------------------------------------------- bad input

BAD_INPUT = [
    (program("../x"), "name"),
    (program("ok", "sleep 10"), "command"),
    (program("ok", startsecs=-1), "startsecs"),
    (program("ok", autorestart="maybe"), "autorestart"),
    (program("ok", stopsignal="STOP"), "stopsignal"),
    (program("ok", stopwaitsecs=0), "stopwaitsecs"),
    (program("ok", numprocs=2), "numprocs"),
    (program("ok", environment={"BAD": "both ' and \""}), "environment.BAD"),
    (program("ok", environment={"1BAD": "x"}), "environment"),
    (program("ok", "/bin/sleep 10 ; rm -rf /tmp/x"), "command"),
    (program("ok", stdout_logfile="relative.log"), "stdout_logfile"),
    (program("ok", server_url="unix:///nonexistent/supervisor.sock"), "server_url"),
    (program("ok", server_url="ftp://127.0.0.1"), "server_url"),
    ({"programs": [program("a"), program("a")]}, "programs[1].name"),
    ({"programs": [program("a")], "command": "/bin/true"}, "command"),
]


@pytest.mark.parametrize(("args", "option"), BAD_INPUT, ids=[opt for _a, opt in BAD_INPUT])
def test_bad_input_fails_naming_the_option_and_writes_nothing(sv, args, option):
    res, out = run_module(sv, args)
    assert res.get("failed") is True, out
    assert option in res["msg"], res["msg"]
    assert "Traceback" not in out
    assert os.listdir(sv.conf_dir) == []
    assert sv.groups() == []
