# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Regression tests for supervisord_program's hardening (issue 10 items 7, 12, 14; issue 17 items 3, 5, 7, 10.17).

Each test failed on the code before the fix (see the report for how that was checked).
supervisord's own parser (``supervisor.options.ServerOptions``, Debian's python3-supervisor)
is the reference for what a written value reads back as.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import time

import pytest
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import supervisord as sd
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import ValidationError
from ansible_collections.nodefleet.bitcoin.plugins.modules import supervisord_program as sp

SECRET = "Zq7-hunter2-Vx9-correct-horse-battery"
SEPARATORS = ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


def pieces(secret, size=8):  # "no 8-character piece of a secret" (issue 17.7)
    return {secret[i : i + size] for i in range(len(secret) - size + 1)}


def leaks(text, secret=SECRET):
    return sorted(p for p in pieces(secret) if p in text)


# --------------------------------------------------------------------------- item 7 / 17.5: full-string validation


def normalize(**raw):
    base = {"name": "app", "command": "/bin/sleep 1"}
    base.update(raw)
    return sd.normalize_program(base)


REFUSED = [
    ("env_key_trailing_newline", {"environment": {"FOO\n": "x"}}, "environment"),
    ("maxbytes_trailing_newline", {"stdout_logfile_maxbytes": "50MB\n"}, "stdout_logfile_maxbytes"),
    ("command_u2028", {"command": "/bin/a\u2028stopwaitsecs=99999"}, "command"),
    ("command_x85", {"command": "/bin/a\x85x"}, "command"),
    ("command_vt", {"command": "/bin/a\x0bx"}, "command"),
    ("command_tab", {"command": "/bin/a\tx"}, "command"),
    ("command_list_newline", {"command": ["/bin/a", "x\ny"]}, "command[1]"),
    ("command_list_comment", {"command": ["/bin/a", "x ;y"]}, "command"),
    ("env_value_u2029", {"environment": {"A": "x\u2029y"}}, "environment.A"),
    ("env_value_ff", {"environment": {"A": "x\x0cy"}}, "environment.A"),
    ("env_value_trailing_space", {"environment": {"A": "x "}}, "environment.A"),
    ("stdout_logfile_u2028", {"stdout_logfile": "/var/log/a\u2028b"}, "stdout_logfile"),
    # supervisord silently drops stderr_logfile when stderr is redirected: it would not read back
    ("stderr_logfile_redirected", {"redirect_stderr": True, "stderr_logfile": "/var/log/e.log"}, "stderr_logfile"),
]


@pytest.mark.parametrize(("raw", "option"), [(r, o) for _i, r, o in REFUSED], ids=[i for i, _r, _o in REFUSED])
def test_every_value_is_validated_with_full_string_anchors(raw, option):
    with pytest.raises(ValidationError) as err:
        normalize(**raw)
    assert err.value.option == option
    assert SECRET not in str(err.value)


def test_batch_is_validated_completely_before_anything(tmp_path):
    """A bad item anywhere in a batch is refused by normalize_params, i.e. before any file is planned."""
    params = {
        "conf_dir": str(tmp_path),
        "wait_timeout": None,
        "restart_loop_threshold": 3,
        "restart_loop_window": 3600,
        "programs": [
            {"name": "good", "command": "/bin/sleep 1", "state": "present"},
            {"name": "bad", "command": "/bin/sleep 1", "state": "present", "stdout_logfile_maxbytes": "50MB\n"},
        ],
    }
    with pytest.raises(ValidationError) as err:
        sp.normalize_params(params)
    assert err.value.option == "programs[1].stdout_logfile_maxbytes"


# --------------------------------------------------------------------------- item 7: read back by supervisord


PROBE = r"""
import json, os, shlex, sys, tempfile
from supervisor.options import ServerOptions, UnhosedConfigParser
out = []
for text in json.load(sys.stdin):
    opts = ServerOptions()
    opts.environ_expansions = {"ENV_HOME": "/root"}
    parser = UnhosedConfigParser()
    parser.expansions = opts.environ_expansions
    # from a file, as supervisord reads its [include] files (text mode: universal newlines)
    with tempfile.NamedTemporaryFile("w", suffix=".conf", encoding="utf-8", newline="", delete=False) as handle:
        handle.write(text)
    parser.read(handle.name)
    os.unlink(handle.name)
    section = [s for s in parser.sections() if s.startswith("program:")][0]
    c = opts.processes_from_section(parser, section, section.split(":", 1)[1])[0]
    out.append({"argv": shlex.split(c.command), "directory": c.directory, "environment": c.environment or {},
                "stdout_logfile": c.stdout_logfile, "stderr_logfile": c.stderr_logfile,
                "stopwaitsecs": c.stopwaitsecs, "options": sorted(parser.options(section))})
print(json.dumps(out, default=str))
"""


def supervisor_read(texts):
    python = "/usr/bin/python3"
    probe = subprocess.run([python, "-c", "import supervisor.options"], capture_output=True, check=False)
    if probe.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail("supervisor's parser (python3-supervisor) is required in CI")
        pytest.skip("supervisor's parser is not importable (CI unset)")
    proc = subprocess.run([python, "-c", PROBE], input=json.dumps(texts), capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


READ_BACK = [
    {"command": ["/opt/my dir/bitcoind", "-datadir=/var/lib/a b", "-x=50%", "it's", '"q"', "%(program_name)s"]},
    {"command": "/bin/echo '/opt/my dir' 100% %(ENV_HOME)s"},
    {"command": "/bin/true", "directory": "/srv/a b%c", "stdout_logfile": "/var/log/x %(program_name)s 5%.log"},
    {"command": "/bin/true", "stderr_logfile": "/var/log/%%.log", "environment": {"P": "50%(ENV_HOME)s%", "Q": ""}},
]


def expected_argv(command):
    import shlex

    return list(command) if isinstance(command, list) else shlex.split(command)


def test_values_read_back_by_supervisors_parser_equal_the_input(tmp_path):
    progs = [normalize(**raw) for raw in READ_BACK]
    texts = [sd.render_program(p) for p in progs]
    parsed = supervisor_read(texts)
    for raw, got in zip(READ_BACK, parsed):
        assert got["argv"] == expected_argv(raw["command"]), raw
        for key in ("directory", "stdout_logfile", "stderr_logfile"):
            if key in raw:
                assert got[key] == raw[key], key
        assert got["environment"] == raw.get("environment", {})


def test_parse_program_splits_only_where_a_file_read_does():
    """\\u2028 inside a value: supervisord keeps one option, so must the collection's parser (17.3)."""
    text = "[program:p]\ncommand=/bin/a\u2028stopwaitsecs=99999\nautostart=true\r\nstartsecs=1\rpriority=5\n"
    ours = sd.parse_program(text)["program:p"]
    assert ours["command"] == "/bin/a\u2028stopwaitsecs=99999"
    assert "stopwaitsecs" not in ours
    theirs = supervisor_read([text])[0]
    assert sorted(ours) == theirs["options"]
    assert theirs["stopwaitsecs"] == 10  # supervisord's default: it did not read 99999 either


# --------------------------------------------------------------------------- 17.7: masking


@pytest.mark.parametrize("sep", SEPARATORS, ids=[repr(s) for s in SEPARATORS])
def test_diff_masks_a_value_holding_any_line_separator(sep):
    """A hand-written (or older) file with such a value: neither side of the diff shows any piece of it."""
    value = SECRET[:10] + sep + SECRET[10:]
    before = f'[program:p]\ncommand=/bin/true\nenvironment=A="{value}",B="x"\n'
    after = sd.render_program(normalize(name="p", command="/bin/true", environment={"A": SECRET, "B": "y"}))
    diff = sd.masked_diff("/x/p.conf", before, after, secrets=[SECRET, value])
    text = json.dumps(diff, ensure_ascii=False)
    assert leaks(text) == []
    assert leaks(text, SECRET[10:]) == []
    # and even without the secret list, the environment line is masked whole
    assert leaks(sd.mask_text(before), SECRET[10:]) == []


def test_mask_text_masks_continuation_lines():
    before = f'[program:p]\ncommand=/bin/true\nenvironment=A="x",\n  B="{SECRET}"\nstartsecs=1\n'
    masked = sd.mask_text(before)
    assert leaks(masked) == [] and "startsecs=1" in masked


def test_scrub_masks_a_secret_cut_by_the_log_window():
    window = (SECRET * 3 + "x" * 3000 + SECRET)[-2000 - 17 :][:2000]  # starts inside a secret
    tail = SECRET[len(SECRET) - 17 :] + "boom " + SECRET[:12]
    for text in (window, tail, "log: " + SECRET[3:-3] + " end"):
        assert leaks(sd.scrub(text, [SECRET])) == []
    assert "boom" in sd.scrub(tail, [SECRET])


# --------------------------------------------------------------------------- item 12: restart counting


def log_line(when, text):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when)) + ",123 " + text


def test_unexpected_exit_lines_count_only_unexpected_exits_since_the_window():
    now = time.time()
    log = "\n".join(
        [
            log_line(now - 7200, "WARN exited: app (exit status 1; not expected)"),  # before the window
            log_line(now - 100, "INFO spawned: 'app' with pid 10"),
            log_line(now - 90, "WARN exited: app (exit status 1; not expected)"),
            log_line(now - 80, "WARN exited: app (terminated by SIGKILL; not expected)"),
            log_line(now - 70, "INFO exited: app (exit status 0; expected)"),
            log_line(now - 60, "INFO stopped: app (terminated by SIGTERM)"),
            log_line(now - 50, "WARN exited: app2 (exit status 1; not expected)"),
            log_line(now - 40, "WARN exited: app (exit status 2; not expected)"),
        ]
    )
    assert len(sd.unexpected_exit_lines(log, "app", now - 3600)) == 3
    assert len(sd.unexpected_exit_lines(log, "app", now - 85)) == 2
    assert len(sd.unexpected_exit_lines(log, "app2", now - 3600)) == 1
    assert sd.unexpected_exit_lines(None, "app") is None


# --------------------------------------------------------------------------- item 14: pending soft changes


def options_of(**raw):
    return sd.program_options(sd.render_program(normalize(**raw)))


@pytest.mark.parametrize(
    ("change", "state", "statename", "reload_when", "expected"),
    [
        ({"stopwaitsecs": 600, "startsecs": 5}, "started", "RUNNING", "restart", None),
        ({"stdout_logfile_maxbytes": "10MB", "stdout_logfile_backups": 2}, "present", "RUNNING", "restart", None),
        ({"autorestart": "true", "priority": 5}, "started", "RUNNING", "restart", None),
        ({"stopwaitsecs": 600}, "started", "RUNNING", "now", ("update", [])),
        ({"stopwaitsecs": 600}, "restarted", "RUNNING", "restart", ("update", [])),
        ({"stopwaitsecs": 600}, "started", "FATAL", "restart", ("update", [])),
        ({"command": "/bin/sleep 2"}, "started", "RUNNING", "restart", ("update", [])),
        ({"environment": {"A": "b"}}, "started", "RUNNING", "restart", ("update", [])),
        ({}, "started", "RUNNING", "restart", ("none", [])),
    ],
)
def test_decide_apply(change, state, statename, reload_when, expected):
    loaded = sd.loaded_state(options_of())
    wanted = options_of(**change)
    action, pending = sp.decide_apply({"state": state}, loaded, wanted, statename, reload_when)
    if expected is None:
        assert action == "defer" and pending == sorted(change)
    else:
        assert (action, pending) == expected


def test_marker_records_what_is_loaded():
    loaded = sd.loaded_state(options_of(stopwaitsecs=10))
    text = sd.with_marker(sd.render_program(normalize(stopwaitsecs=600)), loaded)
    assert sd.read_marker(text) == loaded
    assert sd.program_options(text)["stopwaitsecs"] == "600"
    assert supervisor_read([text])[0]["stopwaitsecs"] == 600  # the marker is a comment to supervisord


# --------------------------------------------------------------------------- 10.17: no fail_json inside except


def test_fail_json_is_never_called_inside_an_except_block():
    with open(sp.__file__, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    offenders = []
    for handler in ast.walk(tree):
        if isinstance(handler, ast.ExceptHandler):
            for node in ast.walk(handler):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("fail_json", "fail"):
                    offenders.append(node.lineno)
    assert offenders == []
