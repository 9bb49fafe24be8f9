# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for module_utils/supervisord.py: render/parse/validate and the XML-RPC client."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import xmlrpc.server

import pytest
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import supervisord as sd
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import ValidationError

# --------------------------------------------------------------------------- supervisor's own parser

# What supervisor/options.py does with a [program:x] file: RawConfigParser with inline comments
# ';' and '#', %-expansion, then datatypes.dict_of_key_value_pairs (environment) / the raw value.
SUPERVISOR_PARSE = r"""
import json, sys
from supervisor.options import UnhosedConfigParser, expand
from supervisor.datatypes import dict_of_key_value_pairs
out = []
for text in json.load(sys.stdin):
    parser = UnhosedConfigParser()
    parser.read_string(text)
    section = parser.sections()[0]
    env = parser.get(section, "environment") if parser.has_option(section, "environment") else ""
    exp = {"program_name": section.split(":", 1)[1], "group_name": "g", "host_node_name": "h",
           "here": "/", "process_num": 0, "numprocs": 1, "ENV_HOME": "/root"}
    out.append({"environment": dict_of_key_value_pairs(expand(env, exp, "environment")),
                "command": expand(parser.get(section, "command"), exp, "command")})
print(json.dumps(out))
"""


def supervisor_python():
    """An interpreter that can import supervisor: this one, or Debian's python3-supervisor."""
    try:
        import supervisor.options  # noqa: F401

        return os.sys.executable
    except ImportError:
        pass
    for candidate in ("/usr/bin/python3",):
        if os.path.exists(candidate):
            probe = subprocess.run([candidate, "-c", "import supervisor.options"], capture_output=True, check=False)
            if probe.returncode == 0:
                return candidate
    return None


def supervisor_parse(texts):
    python = supervisor_python()
    if python is None:
        pytest.skip("supervisor (PyPI or Debian python3-supervisor) is not importable")
    proc = subprocess.run(
        [python, "-c", SUPERVISOR_PARSE], input=json.dumps(texts), capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout)


# --------------------------------------------------------------------------- environment

ENV_VALUES = [
    ("plain", "abc", '"abc"'),
    ("empty", "", '""'),
    ("percent", "50%", '"50%%"'),
    ("expansion_is_literal", "%(ENV_HOME)s", '"%%(ENV_HOME)s"'),
    ("backslash_not_escaped", "a\\b\\\\c", '"a\\b\\\\c"'),
    ("double_quote_inside", 'say "hi" now', "'say \"hi\" now'"),
    ("single_quote_inside", "it's", '"it\'s"'),
    ("comma_and_equals", "a=b,c=d", '"a=b,c=d"'),
    ("spaces", "two  spaces", '"two  spaces"'),
    ("hash_semicolon_no_space", "x#y;z", '"x#y;z"'),
    ("unicode", "pässwörd", '"pässwörd"'),
    ("int", 42, '"42"'),
    ("bool", True, '"true"'),
]


@pytest.mark.parametrize(("value", "quoted"), [(v, q) for _i, v, q in ENV_VALUES], ids=[i for i, _v, _q in ENV_VALUES])
def test_render_environment_quoting(value, quoted):
    assert sd.render_environment({"K": value}) == "K=" + quoted


def test_render_environment_sorts_keys():
    assert sd.render_environment({"B": "2", "A": "1"}) == 'A="1",B="2"'


def test_environment_round_trip_own_parser():
    env = {"K%d" % i: sd.to_text(v) for i, (_id, v, _q) in enumerate(ENV_VALUES)}
    assert sd.parse_environment(sd.render_environment(env)) == env


def test_environment_round_trip_with_supervisors_own_parser():
    """The rendered file, read by supervisor's parser, gives back exactly the values."""
    env = {"K%d" % i: sd.to_text(v) for i, (_id, v, _q) in enumerate(ENV_VALUES)}
    text = sd.render_program({"name": "p", "command": "/bin/true %(program_name)s", "environment": env})
    [parsed] = supervisor_parse([text])
    assert parsed["environment"] == env
    # every value is literal now: a '%' is escaped, supervisord reads back what was given
    assert parsed["command"] == "/bin/true %(program_name)s"
    # and our parser (used for masking) agrees with supervisor's on the raw line
    line = next(x for x in text.splitlines() if x.startswith("environment="))
    assert sd.parse_environment(line.split("=", 1)[1]) == parsed["environment"]


def test_backslash_escaping_would_be_wrong():
    """supervisor's non-POSIX shlex has no escape character: an escaped quote is not a quote."""
    [parsed] = supervisor_parse(['[program:p]\ncommand=/bin/true\nenvironment=K="a\\"b"\n'])
    assert parsed["environment"] != {"K": 'a"b'}


BAD_ENV = [
    ("both_quotes", {"K": "a'b\"c"}, "environment.K"),
    ("leading_quote", {"K": '"abc'}, "environment.K"),
    ("trailing_quote", {"K": "abc'"}, "environment.K"),
    ("newline", {"K": "a\nb"}, "environment.K"),
    ("space_hash_comment", {"K": "a #b"}, "environment.K"),
    ("space_semicolon_comment", {"K": "a ;b"}, "environment.K"),
    ("bad_key_digit", {"1K": "x"}, "environment"),
    ("bad_key_dash", {"K-1": "x"}, "environment"),
]


@pytest.mark.parametrize(("env", "option"), [(e, o) for _i, e, o in BAD_ENV], ids=[i for i, _e, _o in BAD_ENV])
def test_render_environment_rejects_unrepresentable(env, option):
    with pytest.raises(ValidationError) as err:
        sd.render_environment(env)
    assert err.value.option == option


# --------------------------------------------------------------------------- render / parse

RENDER_CASES = [
    (
        "minimal",
        {"name": "app", "command": "/bin/sleep 10"},
        "[program:app]\ncommand=/bin/sleep 10\n",
    ),
    (
        "bitcoind_like",
        {
            "name": "bitcoind-a",
            "command": "/opt/bitcoin/core/bin/bitcoind -conf=/d/bitcoin.conf -datadir=/d",
            "directory": "/d",
            "user": "root",
            "autostart": True,
            "autorestart": "true",
            "startsecs": 5,
            "startretries": 3,
            "exitcodes": [0, 2],
            "stopsignal": "TERM",
            "stopwaitsecs": 600,
            "stopasgroup": False,
            "killasgroup": True,
            "redirect_stderr": True,
            "stdout_logfile": "/var/log/supervisor/a.log",
            "stdout_logfile_maxbytes": "50MB",
            "stdout_logfile_backups": 5,
            "priority": 100,
        },
        "[program:bitcoind-a]\n"
        "command=/opt/bitcoin/core/bin/bitcoind -conf=/d/bitcoin.conf -datadir=/d\n"
        "directory=/d\nuser=root\npriority=100\nautostart=true\nautorestart=true\nstartsecs=5\n"
        "startretries=3\nexitcodes=0,2\nstopsignal=TERM\nstopwaitsecs=600\nstopasgroup=false\n"
        "killasgroup=true\nredirect_stderr=true\nstdout_logfile=/var/log/supervisor/a.log\n"
        "stdout_logfile_maxbytes=50MB\nstdout_logfile_backups=5\n",
    ),
    (
        "environment",
        {"name": "e", "command": "/bin/env", "environment": {"B": "x y", "A": "1%"}},
        '[program:e]\ncommand=/bin/env\nenvironment=A="1%%",B="x y"\n',
    ),
]


@pytest.mark.parametrize(("prog", "body"), [(p, b) for _i, p, b in RENDER_CASES], ids=[i for i, _p, _b in RENDER_CASES])
def test_render_program(prog, body):
    text = sd.render_program(prog)
    assert text == sd.HEADER + "\n" + body
    assert sd.render_program(prog) == text  # deterministic


@pytest.mark.parametrize(
    ("prog", "_body"), [(p, b) for _i, p, b in RENDER_CASES], ids=[i for i, _p, _b in RENDER_CASES]
)
def test_parse_program_reads_back_render(prog, _body):
    parsed = sd.parse_program(sd.render_program(prog))
    section = parsed["program:%s" % prog["name"]]
    assert section["command"] == prog["command"]
    if "environment" in prog:
        assert sd.parse_environment(section["environment"]) == {k: str(v) for k, v in prog["environment"].items()}
    if "stopwaitsecs" in prog:
        assert section["stopwaitsecs"] == str(prog["stopwaitsecs"])


def test_parse_program_handles_comments_and_colon_separator():
    text = "; header\n# other\n[program:x]\ncommand = /bin/a ; trailing comment\nstartsecs: 4\n"
    text += "\n[group:g]\nprograms=x\n"
    assert sd.parse_program(text) == {
        "program:x": {"command": "/bin/a", "startsecs": "4"},
        "group:g": {"programs": "x"},
    }


# --------------------------------------------------------------------------- masking / diff

SECRET_A = "hunter2-%(x)s,\\"
SECRET_B = "correct horse"


def test_mask_text_hides_every_value():
    text = sd.render_program({"name": "p", "command": "/bin/x", "environment": {"PW": SECRET_A, "USER": "bob"}})
    masked = sd.mask_text(text)
    assert "hunter2" not in masked and "bob" not in masked
    assert 'environment=PW="********",USER="********"' in masked
    assert "command=/bin/x" in masked


def test_mask_text_unparsable_line_is_masked_whole():
    assert sd.mask_text('environment=A="unterminated\n') == "environment=********\n"


def test_masked_diff_value_change_is_visible_but_not_the_value():
    before = sd.render_program({"name": "p", "command": "/bin/x", "environment": {"PW": SECRET_A, "U": "u"}})
    after = sd.render_program({"name": "p", "command": "/bin/x", "environment": {"PW": SECRET_B, "U": "u"}})
    diff = sd.masked_diff("/c/p.conf", before, after)
    blob = json.dumps(diff)
    assert "hunter2" not in blob and "horse" not in blob
    assert diff["before"] != diff["after"]
    assert "environment value changed: PW (values not shown)" in diff["after"]


def test_masked_diff_new_file_and_removed_file():
    text = sd.render_program({"name": "p", "command": "/bin/x", "environment": {"PW": SECRET_B}})
    created = sd.masked_diff("/c/p.conf", None, text)
    removed = sd.masked_diff("/c/p.conf", text, None)
    assert created["before_header"] == "/c/p.conf (absent)" and created["before"] == ""
    assert removed["after_header"] == "/c/p.conf (absent)" and removed["after"] == ""
    assert "horse" not in json.dumps([created, removed])


def test_scrub_replaces_longest_first():
    assert sd.scrub("pw=abcdef and abc", ["abc", "abcdef", ""]) == "pw=******** and ********"


# --------------------------------------------------------------------------- validation


def normalize(**raw):
    base = {"name": "app", "command": "/bin/sleep 1"}
    base.update(raw)
    return sd.normalize_program(base)


INVALID = [
    ("name_traversal", {"name": "../x"}, "name"),
    ("name_space", {"name": "a b"}, "name"),
    ("state", {"state": "running"}, "state"),
    ("command_missing", {"command": None}, "command"),
    ("command_empty", {"command": "  "}, "command"),
    ("command_relative", {"command": "sleep 1"}, "command"),
    ("command_newline", {"command": "/bin/a\n/bin/b"}, "command"),
    ("command_inline_comment", {"command": "/bin/a ;b"}, "command"),
    ("command_unbalanced_quote", {"command": "/bin/a 'x"}, "command"),
    ("directory_relative", {"directory": "var/lib"}, "directory"),
    ("user_unknown", {"user": "no-such-user-here"}, "user"),
    ("user_bad", {"user": "a b"}, "user"),
    ("environment_not_dict", {"environment": ["A=1"]}, "environment"),
    ("environment_value", {"environment": {"A": "x\ny"}}, "environment.A"),
    ("startsecs_negative", {"startsecs": -1}, "startsecs"),
    ("startretries_negative", {"startretries": -1}, "startretries"),
    ("stopwaitsecs_zero", {"stopwaitsecs": 0}, "stopwaitsecs"),
    ("numprocs_zero", {"numprocs": 0}, "numprocs"),
    ("numprocs_two", {"numprocs": 2}, "numprocs"),
    ("priority_negative", {"priority": -5}, "priority"),
    ("startsecs_bool", {"startsecs": True}, "startsecs"),
    ("autorestart", {"autorestart": "maybe"}, "autorestart"),
    ("stopsignal", {"stopsignal": "STOP"}, "stopsignal"),
    ("exitcodes_empty", {"exitcodes": []}, "exitcodes"),
    ("exitcodes_range", {"exitcodes": [256]}, "exitcodes"),
    ("killasgroup", {"stopasgroup": True, "killasgroup": False}, "killasgroup"),
    ("stdout_logfile_relative", {"stdout_logfile": "x.log"}, "stdout_logfile"),
    ("stderr_logfile_dotdot", {"stderr_logfile": "/var/../x.log"}, "stderr_logfile"),
    ("maxbytes", {"stdout_logfile_maxbytes": "50 MB"}, "stdout_logfile_maxbytes"),
    ("conf_dir_relative", {"conf_dir": "conf.d"}, "conf_dir"),
]


@pytest.mark.parametrize(("raw", "option"), [(r, o) for _i, r, o in INVALID], ids=[i for i, _r, _o in INVALID])
def test_normalize_program_rejects(raw, option):
    with pytest.raises(ValidationError) as err:
        normalize(**raw)
    assert err.value.option == option
    assert option in str(err.value)


def test_normalize_program_batch_prefix_names_the_item():
    with pytest.raises(ValidationError) as err:
        sd.normalize_program({"name": "a", "command": "/bin/a", "startsecs": -1}, "programs[3]")
    assert err.value.option == "programs[3].startsecs"
    with pytest.raises(ValidationError) as err:
        sd.normalize_program({"name": "a", "command": "/bin/a", "environment": {"K": "a'\""}}, "programs[0]")
    assert err.value.option == "programs[0].environment.K"


VALID = [
    ("autorestart_bool", {"autorestart": True}, "autorestart", "true"),
    ("autorestart_upper", {"autorestart": "Unexpected"}, "autorestart", "unexpected"),
    ("stopsignal_sig", {"stopsignal": "sigint"}, "stopsignal", "INT"),
    ("maxbytes_lower", {"stdout_logfile_maxbytes": "50mb"}, "stdout_logfile_maxbytes", "50MB"),
    ("maxbytes_int", {"stdout_logfile_maxbytes": 0}, "stdout_logfile_maxbytes", "0"),
    ("logfile_none", {"stdout_logfile": "none"}, "stdout_logfile", "NONE"),
    ("logfile_norm", {"stderr_logfile": "/var/log//x.log"}, "stderr_logfile", "/var/log/x.log"),
    ("command_strip", {"command": "  /bin/a b "}, "command", "/bin/a b"),
    ("state_default", {}, "state", "present"),
    ("conf_dir_default", {}, "conf_dir", "/etc/supervisor/conf.d"),
    ("expansion_allowed", {"command": "/bin/a %(program_name)s 50%%"}, "command", "/bin/a %(program_name)s 50%%"),
]


@pytest.mark.parametrize(
    ("raw", "key", "expected"), [(r, k, e) for _i, r, k, e in VALID], ids=[i for i, _r, _k, _e in VALID]
)
def test_normalize_program_normalises(raw, key, expected):
    assert normalize(**raw)[key] == expected


def test_absent_needs_no_command():
    assert sd.normalize_program({"name": "x", "state": "absent"})["state"] == "absent"


# --------------------------------------------------------------------------- server url + client

URLS = [
    ("unix:///var/run/supervisor.sock", ("http://localhost/RPC2", "/var/run/supervisor.sock")),
    ("http://127.0.0.1:9001", ("http://127.0.0.1:9001/RPC2", None)),
    ("http://user:pw@127.0.0.1:9001/", ("http://user:pw@127.0.0.1:9001/RPC2", None)),
    ("http://127.0.0.1:9001/custom", ("http://127.0.0.1:9001/custom", None)),
]


@pytest.mark.parametrize(("url", "expected"), URLS)
def test_parse_server_url(url, expected):
    assert sd.parse_server_url(url) == expected


@pytest.mark.parametrize("url", ["", "unix://relative.sock", "ftp://h", "http://", "/var/run/supervisor.sock"])
def test_parse_server_url_rejects(url):
    with pytest.raises(ValidationError) as err:
        sd.parse_server_url(url)
    assert err.value.option == "server_url"


class UnixRequestHandler(xmlrpc.server.SimpleXMLRPCRequestHandler):
    disable_nagle_algorithm = False  # TCP_NODELAY does not exist on AF_UNIX


class UnixXMLRPCServer(xmlrpc.server.SimpleXMLRPCServer):
    address_family = socket.AF_UNIX

    def server_bind(self):
        self.socket.bind(self.server_address)

    def get_request(self):
        request, _addr = self.socket.accept()
        return request, ("unix", 0)


class FakeSupervisor:
    """Just enough of the supervisor namespace to exercise the transport (not the module logic)."""

    def getState(self):
        return {"statecode": 1, "statename": "RUNNING"}

    def reloadConfig(self):
        return [[["new"], ["changed"], []]]

    def getAllProcessInfo(self):
        return [{"group": "g", "name": "g", "statename": "RUNNING", "pid": 1}]

    def getProcessInfo(self, name):
        raise xmlrpc.client.Fault(10, "BAD_NAME: %s" % name)


def serve(server):
    # methods are called as supervisor.<name>: route through a dispatch that strips the prefix
    server.register_instance(_Prefix(FakeSupervisor()))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


class _Prefix:
    def __init__(self, target):
        self.target = target

    def _dispatch(self, method, params):
        prefix, _dot, name = method.partition(".")
        if prefix != "supervisor":
            raise xmlrpc.client.Fault(1, "UNKNOWN_METHOD")
        return getattr(self.target, name)(*params)


@pytest.fixture
def unix_server():
    root = tempfile.mkdtemp(prefix="svu-", dir="/tmp")
    path = os.path.join(root, "s.sock")
    server = UnixXMLRPCServer(path, requestHandler=UnixRequestHandler, logRequests=False, allow_none=True)
    serve(server)
    yield "unix://" + path
    server.shutdown()
    server.server_close()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def tcp_server():
    server = xmlrpc.server.SimpleXMLRPCServer(("127.0.0.1", 0), logRequests=False, allow_none=True)
    server.rpc_paths = ("/RPC2",)
    serve(server)
    yield "http://127.0.0.1:%d" % server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("which", ["unix_server", "tcp_server"])
def test_client_calls_over_unix_socket_and_tcp(request, which):
    client = sd.SupervisorClient(request.getfixturevalue(which), timeout=5)
    client.check_running()
    assert client.reload_config() == (["new"], ["changed"], [])
    assert client.process_infos() == {"g": [{"group": "g", "name": "g", "statename": "RUNNING", "pid": 1}]}
    with pytest.raises(xmlrpc.client.Fault) as err:
        client.call("getProcessInfo", "nope:nope")
    assert err.value.faultCode == 10
    client.close()


def test_client_missing_socket_names_url_and_reason():
    client = sd.SupervisorClient("unix:///nonexistent-dir/supervisor.sock", timeout=2)
    with pytest.raises(sd.SupervisorError) as err:
        client.check_running()
    assert "unix:///nonexistent-dir/supervisor.sock" in str(err.value)
    assert "No such file or directory" in str(err.value)


def test_client_times_out_when_server_does_not_answer():
    root = tempfile.mkdtemp(prefix="svt-", dir="/tmp")
    path = os.path.join(root, "mute.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)  # accepts connections, never answers
    try:
        client = sd.SupervisorClient("unix://" + path, timeout=0.5)
        start = time.monotonic()
        with pytest.raises(sd.SupervisorError) as err:
            client.call("getState")
        assert time.monotonic() - start < 5
        assert "timed out" in str(err.value)
    finally:
        listener.close()
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- wait_for


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_wait_for_returns_first_truthy_value():
    clock = FakeClock()
    values = iter([None, None, "done"])
    assert sd.wait_for(lambda: next(values), 10, interval=1, clock=clock, sleep=clock.sleep) == "done"
    assert clock.now == 2


def test_wait_for_is_bounded():
    clock = FakeClock()
    calls = []
    assert not sd.wait_for(lambda: calls.append(1), 3, interval=1, clock=clock, sleep=clock.sleep)
    assert len(calls) == 4 and clock.now == 3


COUNT_LOG = """2026-01-01 00:00:00,000 INFO supervisord started with pid 1
2026-01-01 00:00:01,000 INFO spawned: 'bitcoind-a' with pid 10
2026-01-01 00:00:02,000 INFO spawned: 'bitcoind-b' with pid 11
2026-01-01 00:01:00,000 INFO spawned: 'bitcoind-a' with pid 12
2026-01-01 01:00:00,000 INFO supervisord started with pid 2
2026-01-01 01:00:01,000 INFO spawned: 'bitcoind-a' with pid 20
2026-01-01 01:00:02,000 INFO spawned: 'bitcoind-b' with pid 21
2026-01-01 01:00:03,000 INFO spawned: 'bitcoind-b' with pid 22
2026-01-01 01:00:04,000 INFO spawned: 'bitcoind-b' with pid 23
2026-01-01 01:00:04,000 INFO spawned: 'bitcoind-bb' with pid 24
"""


@pytest.mark.parametrize(
    ("log", "program", "expected"),
    [
        (COUNT_LOG, "bitcoind-a", 0),  # only spawns since the last "supervisord started" count
        (COUNT_LOG, "bitcoind-b", 2),
        (COUNT_LOG, "bitcoind-c", None),
        ("spawned: 'p' with pid 1\nspawned: 'p' with pid 2\n", "p", 1),  # start line outside the window
        (None, "p", None),
    ],
)
def test_count_restarts(log, program, expected):
    """count_restarts lives in module_utils (moved from bitcoind_info, same behaviour)."""
    assert sd.count_restarts(log, program) == expected
