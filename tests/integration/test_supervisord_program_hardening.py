# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""supervisord_program hardening against a real supervisord, through ansible-playbook.

Issue 10 items 4 (race-free files), 7 (values read back verbatim), 12 (restart loops),
14 (no restart for soft settings, serial restarts); issue 17 items 5 (nothing half-written),
6 (no unhandled exception), 7 (no piece of a secret in any output).
"""

from __future__ import annotations

import os
import time

import pytest
from ansible_collections.nodefleet.bitcoin.tests.integration.ansible_cli import run_collection_module_in_playbook
from ansible_collections.nodefleet.bitcoin.tests.integration.supervisord_fixture import (
    running_supervisord,
    supervisord_binary,
)

pytestmark = pytest.mark.integration

SLEEP = "/bin/sleep 1000"
SECRET = "Zq7-hunter2-Vx9-correct-horse-battery-staple"


@pytest.fixture
def sv():
    if supervisord_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("supervisord is required in CI")
        pytest.skip("supervisord is not installed (CI unset)")
    with running_supervisord() as instance:
        yield instance


def run_module(sv, args, check=False, diff=False, verbosity=0):
    args = dict(args)
    args.setdefault("server_url", sv.server_url)
    args.setdefault("conf_dir", sv.conf_dir)
    return run_collection_module_in_playbook(
        "supervisord_program", args, sv.root, check=check, diff=diff, verbosity=verbosity
    )


def program(name, command=SLEEP, **options):
    return dict(name=name, command=command, **options)


def conf_path(sv, name):
    return os.path.join(sv.conf_dir, f"{name}.conf")


def read(path, mode="r"):
    with open(path, mode) as handle:
        return handle.read()


def pieces(secret, size=8):
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


def assert_no_secret(text, secret=SECRET):
    found = sorted(p for p in pieces(secret) if p in text)
    assert found == [], found


# --------------------------------------------------------------------------- item 4 / 17.6: files


def test_conf_dir_symlink_is_refused_naming_conf_dir(sv):
    link = os.path.join(sv.root, "conf-link")
    os.symlink(sv.conf_dir, link)
    res, out = run_module(sv, dict(program("app", startsecs=0), conf_dir=link))
    assert res.get("failed") is True, out
    assert res["msg"].startswith("conf_dir:") and "symlink" in res["msg"], res["msg"]
    assert os.listdir(sv.conf_dir) == [] and sv.groups() == []


def test_program_file_symlink_is_replaced_and_its_target_untouched(sv):
    target = os.path.join(sv.root, "elsewhere.conf")
    with open(target, "w", encoding="utf-8") as handle:
        handle.write("; not yours\n")
    os.chmod(target, 0o644)
    os.symlink(target, conf_path(sv, "app"))
    res, out = run_module(sv, program("app", startsecs=0, state="started"), diff=True)
    assert res.get("failed") is not True, out
    assert res["changed"] is True and res["state"] == "RUNNING"
    st = os.lstat(conf_path(sv, "app"))
    assert not os.path.islink(conf_path(sv, "app")) and (st.st_mode & 0o777) == 0o600 and st.st_uid == 0
    assert read(target) == "; not yours\n" and (os.stat(target).st_mode & 0o777) == 0o644
    assert "symlink" in res["diff"]["before_header"]


@pytest.mark.parametrize("kind", ["symlink_to_dir", "dir"])
def test_program_file_that_is_a_directory_is_refused_cleanly(sv, kind):
    path = conf_path(sv, "app")
    if kind == "dir":
        os.mkdir(path)
    else:
        os.mkdir(os.path.join(sv.root, "adir"))
        os.symlink(os.path.join(sv.root, "adir"), path)
    for args in (program("app", startsecs=0), {"programs": [program("other", startsecs=0), program("app")]}):
        res, out = run_module(sv, args)
        assert res.get("failed") is True, out
        assert "Traceback" not in out and "exception" not in res["msg"].lower(), out
        assert "name:" in res["msg"] and "directory" in res["msg"], res["msg"]
        assert not os.path.exists(conf_path(sv, "other")) and sv.groups() == []


# --------------------------------------------------------------------------- 17.5: nothing half-written


BAD_ITEMS = [
    ({"environment": {"FOO\n": "x"}}, "environment"),
    ({"stdout_logfile_maxbytes": "50MB\n"}, "stdout_logfile_maxbytes"),
    ({"command": "/bin/sleep 1\u2028stopwaitsecs=99999"}, "command"),
    ({"directory": "/tmp\u2028x"}, "directory"),
    ({"stdout_logfile": "/tmp/x.log\u2029"}, "stdout_logfile"),
]


def test_refusal_writes_nothing_single_and_batch(sv):
    keep = program("keep", startsecs=0, state="started")
    res, out = run_module(sv, keep)
    assert res["state"] == "RUNNING", out
    before = os.stat(conf_path(sv, "keep"))
    content = read(conf_path(sv, "keep"))
    for bad, option in BAD_ITEMS:
        for args, prefix in (
            (program("fresh", **bad), ""),
            ({"programs": [dict(keep, command="/bin/sleep 999"), program("fresh", **bad)]}, "programs[1]."),
        ):
            res, out = run_module(sv, args)
            assert res.get("failed") is True, out
            assert res["msg"].startswith(prefix + option), res["msg"]
            assert sorted(os.listdir(sv.conf_dir)) == ["keep.conf"]
            after = os.stat(conf_path(sv, "keep"))
            assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
            assert read(conf_path(sv, "keep")) == content and sv.groups() == ["keep"]


# --------------------------------------------------------------------------- item 7: read back verbatim


def test_values_reach_the_process_verbatim(sv):
    bindir = os.path.join(sv.root, "my bin %d")
    os.mkdir(bindir)
    exe = os.path.join(bindir, "sleeper")
    with open(exe, "w", encoding="utf-8") as handle:
        handle.write('#!/bin/sh\nprintf "%s\\n" "$@" > "$ARGS_FILE"\nexec /bin/sleep 1000\n')
    os.chmod(exe, 0o700)
    workdir = os.path.join(sv.root, "work dir 100%")
    os.mkdir(workdir)
    log = os.path.join(sv.log_dir, "out %(program_name)s 5%.log")
    argv = [exe, "-datadir=/var/lib/a b", "-x=50%", "it's", "%(ENV_HOME)s"]
    args_file = os.path.join(sv.root, "args1")
    res, out = run_module(
        sv,
        program(
            "verbatim",
            argv,
            directory=workdir,
            stdout_logfile=log,
            startsecs=1,
            state="started",
            environment={"ARGS_FILE": args_file},
        ),
    )
    assert res.get("state") == "RUNNING", out
    assert read(args_file).split("\n")[:-1] == argv[1:]  # every word as given
    assert os.readlink(f"/proc/{res['pid']}/cwd") == workdir
    assert os.path.exists(log)
    # a string command: the user quotes, supervisord splits like a shell; '%' is literal
    args_file = os.path.join(sv.root, "args2")
    cmd = f"'{exe}' 'a b' 100%"
    res, out = run_module(sv, program("str", cmd, startsecs=1, state="started", environment={"ARGS_FILE": args_file}))
    assert res.get("state") == "RUNNING", out
    assert read(args_file).split("\n")[:-1] == ["a b", "100%"]


# --------------------------------------------------------------------------- item 12: restart loops


def test_restart_loop_is_detected(sv):
    # up longer than startsecs (so RUNNING), then dies: supervisord never declares it FATAL
    cmd = "/bin/sh -c 'echo \"$RPC_PASSWORD\" >&2; sleep 1.5; exit 3'"
    args = program(
        "looper", cmd, startsecs=1, autorestart="true", state="started", environment={"RPC_PASSWORD": SECRET}
    )
    res, out = run_module(sv, args)
    assert res.get("failed") is not True, out
    assert res["restarts"] == 0  # exits before this run's start are not counted
    deadline = time.monotonic() + 30
    while (
        time.monotonic() < deadline
        and read(os.path.join(sv.root, "supervisord.log")).count("exited: looper (exit status 3; not expected)") < 4
    ):
        time.sleep(0.5)
    res, out = run_module(sv, args, verbosity=3)
    assert res.get("failed") is True, out
    msg = res["msg"]
    assert "looper" in msg and "restart loop" in msg and "restart_loop_window=3600s" in msg, msg
    assert res["restarts"] >= 3 and f"{res['restarts']} unexpected exits" in msg
    assert "exited: looper" in msg  # the log lines
    assert_no_secret(out)
    # 0 disables the check; the count is still returned
    res, out = run_module(sv, dict(args, restart_loop_threshold=0))
    assert res.get("failed") is not True, out
    assert res["restarts"] >= 3
    # a small window no longer sees the old exits
    res, out = run_module(sv, dict(args, restart_loop_window=1))
    assert res.get("failed") is not True and res["restarts"] <= 1, out


# --------------------------------------------------------------------------- item 14: soft settings, serial restarts


def test_soft_setting_change_does_not_restart(sv):
    base = program("soft", startsecs=1, stopwaitsecs=10, state="started")
    res, out = run_module(sv, base)
    pid = res["pid"]
    assert res["state"] == "RUNNING" and res["pending"] is False, out
    soft = dict(base, stopwaitsecs=600, startsecs=2, stdout_logfile_maxbytes="10MB", stdout_logfile_backups=3)
    res, out = run_module(sv, soft)
    assert res.get("failed") is not True, out
    assert res["changed"] is True and res["applied"] is None and res["pid"] == pid
    assert res["pending"] is True
    assert res["pending_options"] == ["startsecs", "stdout_logfile_backups", "stdout_logfile_maxbytes", "stopwaitsecs"]
    assert "stopwaitsecs=600" in read(conf_path(sv, "soft"))
    # a second run: nothing to do, still pending, still not restarted
    res, out = run_module(sv, soft)
    assert res["changed"] is False and res["pending"] is True and res["pid"] == pid, out
    # reverting to what supervisord has loaded: nothing pending any more
    res, out = run_module(sv, base)
    assert res["pending"] is False and res["applied"] is None and res["pid"] == pid, out
    # reload_when=now applies it (a restart)
    res, out = run_module(sv, dict(soft, reload_when="now"))
    assert res["applied"] == "updated" and res["pending"] is False and res["pid"] != pid, out
    pid = res["pid"]
    # a hard change with a pending soft one: applied together
    run_module(sv, dict(soft, stopwaitsecs=20))
    res, out = run_module(sv, dict(soft, stopwaitsecs=20, command="/bin/sleep 999"))
    assert res["applied"] == "updated" and res["pending"] is False and res["pid"] != pid, out
    res, out = run_module(sv, dict(soft, stopwaitsecs=20, command="/bin/sleep 999"))
    assert res["changed"] is False and res["pending"] is False, out


def test_serial_restarts_one_program_at_a_time(sv):
    startsecs = 2
    progs = [program(f"ser{i}", startsecs=startsecs, state="started") for i in range(3)]
    res, out = run_module(sv, {"programs": progs})
    assert all(r["state"] == "RUNNING" for r in res["programs"].values()), out
    changed = [dict(p, command="/bin/sleep 999") for p in progs]
    res, out = run_module(sv, {"programs": changed, "serial_restarts": True})
    assert res.get("failed") is not True, out
    starts = [sv.info(f"ser{i}")["start"] for i in range(3)]
    assert all(r["applied"] == "updated" for r in res["programs"].values())
    # each one was confirmed RUNNING (startsecs) before the next was restarted
    assert starts[1] - starts[0] >= startsecs and starts[2] - starts[1] >= startsecs, starts

    # a failure stops the sequence: the rest keep running their old process and their old file
    before2 = sv.info("ser2")
    content2 = read(conf_path(sv, "ser2"))
    broken = [
        dict(changed[0], command="/bin/sleep 998"),
        dict(changed[1], command="/bin/sh -c 'exit 1'", startretries=0),
        dict(changed[2], command="/bin/sleep 997"),
    ]
    res, out = run_module(sv, {"programs": broken, "serial_restarts": True})
    assert res.get("failed") is True, out
    assert "ser1" in res["msg"] and "serial_restarts" in res["msg"] and "ser2" in res["msg"]
    after2 = sv.info("ser2")
    assert (after2["pid"], after2["start"]) == (before2["pid"], before2["start"])
    assert read(conf_path(sv, "ser2")) == content2
    assert res["programs"]["ser2"]["applied"] is None


# --------------------------------------------------------------------------- 17.7: secrets


def test_no_piece_of_a_secret_in_diff_or_log_tail(sv):
    # an older/hand-written file whose value holds a separator str.splitlines splits at
    value = SECRET[:12] + "\u2028" + SECRET[12:]
    sv.write_program("envold", SLEEP, startsecs=0, environment=f'RPC_PASSWORD="{value}"')
    sv.update()
    args = program("envold", startsecs=0, state="started", environment={"RPC_PASSWORD": SECRET + "-new"})
    res, out = run_module(sv, args, diff=True, verbosity=4)
    assert res.get("failed") is not True, out
    assert_no_secret(out)
    assert_no_secret(out, SECRET[12:])
    # a failed start whose stderr tail (2000 bytes) cuts the secret in half
    pad = 2000 - 20
    cmd = f'/bin/sh -c \'printf "%s" "$RPC_PASSWORD" >&2; head -c {pad} /dev/zero | tr "\\\\0" x >&2; exit 1\''
    leak = program("cut", cmd, startsecs=1, startretries=0, state="started", environment={"RPC_PASSWORD": SECRET})
    res, out = run_module(sv, leak, diff=True, verbosity=4)
    assert res.get("failed") is True, out
    assert "xxxx" in res["msg"]  # the tail is shown
    assert_no_secret(out)
