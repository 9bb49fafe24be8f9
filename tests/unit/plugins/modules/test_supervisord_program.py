# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the pure steps of the supervisord_program module (the real runs are in tests/integration)."""

from __future__ import annotations

import pytest
import yaml
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import ValidationError
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.supervisord import render_program
from ansible_collections.nodefleet.bitcoin.plugins.modules import supervisord_program as sp

# --------------------------------------------------------------------------- plan_process

S, R, B, F, E, ST, SP = "STOPPED", "RUNNING", "BACKOFF", "FATAL", "EXITED", "STARTING", "STOPPING"
NONE = {"stop": False, "start": False, "confirm": False}
START = {"stop": False, "start": True, "confirm": True}
STOP = {"stop": True, "start": False, "confirm": False}
RESTART = {"stop": True, "start": True, "confirm": True}
CONFIRM = {"stop": False, "start": False, "confirm": True}

PLANS = [
    # state, statename after apply, fresh (added/updated), autostart, expected
    ("present", S, False, None, NONE),
    ("present", R, False, None, NONE),
    ("present", B, False, None, NONE),
    ("present", ST, True, None, CONFIRM),  # added with supervisord's default autostart=true
    ("present", S, True, False, NONE),
    ("started", R, False, None, NONE),
    ("started", ST, False, None, CONFIRM),
    ("started", B, False, None, RESTART),  # BACKOFF: stop, then start
    ("started", SP, False, None, RESTART),
    ("started", F, False, None, START),  # FATAL is recovered
    ("started", E, False, None, START),
    ("started", S, False, None, START),
    ("started", ST, True, None, CONFIRM),
    ("started", S, True, False, START),
    ("stopped", R, False, None, STOP),
    ("stopped", ST, False, None, STOP),
    ("stopped", B, False, None, STOP),  # community.general#5599
    ("stopped", SP, False, None, STOP),
    ("stopped", S, False, None, NONE),
    ("stopped", F, False, None, NONE),
    ("stopped", E, False, None, NONE),
    ("stopped", ST, True, None, STOP),  # added with autostart: it started, stop it
    ("restarted", R, False, None, RESTART),
    ("restarted", B, False, None, RESTART),
    ("restarted", S, False, None, START),
    ("restarted", F, False, None, START),
    ("restarted", ST, True, None, CONFIRM),  # just (re)added: that was the restart
    ("restarted", S, True, False, START),
    ("absent", R, False, None, NONE),
    ("started", None, False, None, NONE),  # not loaded
]


@pytest.mark.parametrize(("state", "statename", "fresh", "autostart", "expected"), PLANS)
def test_plan_process(state, statename, fresh, autostart, expected):
    prog = {"name": "p", "state": state, "autostart": autostart}
    assert sp.plan_process(prog, statename, fresh) == expected


CONFIRM_CASES = [
    ({"statename": R, "start": 1}, "ok"),
    ({"statename": ST, "start": 1}, "wait"),
    ({"statename": B, "start": 1}, "wait"),
    ({"statename": S, "start": 0}, "wait"),  # added, not spawned yet
    ({"statename": S, "start": 5}, "fail"),
    ({"statename": F, "start": 5}, "fail"),
    ({"statename": E, "start": 5}, "fail"),
    ({"statename": SP, "start": 5}, "fail"),
    ({"statename": "UNKNOWN", "start": 5}, "fail"),
    (None, "fail"),
]


@pytest.mark.parametrize(("info", "expected"), CONFIRM_CASES)
def test_confirm_status(info, expected):
    assert sp.confirm_status(info) == expected


# --------------------------------------------------------------------------- applied

CLASSIFY = [
    (["p"], [], [], "added"),
    ([], ["p"], [], "updated"),
    ([], [], ["p"], "removed"),
    (["q"], ["r"], ["s"], None),  # other groups' pending changes are not ours
    ([], [], [], None),
]


@pytest.mark.parametrize(("added", "changed", "removed", "expected"), CLASSIFY)
def test_classify_applied(added, changed, removed, expected):
    assert sp.classify_applied("p", added, changed, removed) == expected


PREDICT = [
    ("present", True, False, "added"),
    ("present", False, False, "added"),  # file there but group not loaded
    ("started", True, True, "updated"),
    ("started", False, True, None),
    ("absent", True, True, "removed"),
    ("absent", True, False, None),
    ("absent", False, False, None),
]


@pytest.mark.parametrize(("state", "content_changed", "loaded", "expected"), PREDICT)
def test_predict_applied(state, content_changed, loaded, expected):
    assert sp.predict_applied(state, content_changed, loaded) == expected


# --------------------------------------------------------------------------- params


def params(**kwargs):
    spec = sp.argument_spec()
    base = {name: spec[name].get("default") for name in spec}
    base.update(kwargs)
    return base


def item(**kwargs):
    spec = sp.program_spec(top_level=False)
    base = {name: spec[name].get("default") for name in spec}
    base.update(kwargs)
    return base


def test_single_form_is_a_batch_of_one():
    programs, batch = sp.normalize_params(params(name="a", command="/bin/a", state="started"))
    assert batch is False
    assert len(programs) == 1
    assert programs[0]["name"] == "a" and programs[0]["state"] == "started"
    assert programs[0]["conf_dir"] == "/etc/supervisor/conf.d"


def test_batch_form_inherits_conf_dir_and_keeps_order():
    programs, batch = sp.normalize_params(
        params(
            conf_dir="/srv/conf.d",
            programs=[item(name="b", command="/bin/b"), item(name="a", state="absent", conf_dir="/other")],
        )
    )
    assert batch is True
    assert [(p["name"], p["state"], p["conf_dir"]) for p in programs] == [
        ("b", "present", "/srv/conf.d"),
        ("a", "absent", "/other"),
    ]


PARAM_ERRORS = [
    ({"programs": [item(name="a", command="/bin/a")], "command": "/bin/x"}, "command"),
    ({"programs": [item(name="a", command="/bin/a")], "state": "started"}, "state"),
    ({"programs": []}, "programs"),
    ({"programs": [item(name="a", command="/bin/a"), item(name="a", command="/bin/b")]}, "programs[1].name"),
    ({"programs": [item(name="a", command="rel")]}, "programs[0].command"),
    ({"name": "a", "command": "/bin/a", "wait_timeout": 0}, "wait_timeout"),
    ({"name": "a/b", "command": "/bin/a"}, "name"),
]


@pytest.mark.parametrize(("kwargs", "option"), PARAM_ERRORS, ids=[o for _k, o in PARAM_ERRORS])
def test_normalize_params_errors_name_the_option(kwargs, option):
    with pytest.raises(ValidationError) as err:
        sp.normalize_params(params(**kwargs))
    assert err.value.option == option


def test_desired_content():
    prog = {"name": "a", "state": "present", "command": "/bin/a", "conf_dir": "/c"}
    assert sp.desired_content(prog) == render_program(prog)
    assert sp.desired_content(dict(prog, state="absent")) is None


STOPWAIT = [
    ({}, None, 10),
    ({"stopwaitsecs": 600}, None, 600),
    ({}, "[program:a]\ncommand=/bin/a\nstopwaitsecs=300\n", 300),  # old config still loaded
    ({"stopwaitsecs": 20}, "[program:a]\nstopwaitsecs=5\n", 20),
    ({}, "[program:a]\nstopwaitsecs=junk\n", 10),
]


@pytest.mark.parametrize(("prog", "before", "expected"), STOPWAIT)
def test_stop_wait_seconds(prog, before, expected):
    assert sp.stop_wait_seconds(prog, before) == expected


# --------------------------------------------------------------------------- docs match the argument spec


def documented_options():
    return yaml.safe_load(sp.DOCUMENTATION)["options"]


def test_documentation_lists_exactly_the_top_level_options():
    assert set(documented_options()) == set(sp.argument_spec())


def test_documented_types_defaults_and_no_log_match_the_spec():
    docs = documented_options()
    for name, spec in sp.argument_spec().items():
        doc = docs[name]
        assert doc["type"] == spec["type"], name
        assert doc.get("default") == spec.get("default"), name
        assert doc.get("choices") == spec.get("choices"), name
    assert sp.argument_spec()["environment"]["no_log"] is True
    assert sp.argument_spec()["programs"]["options"]["environment"]["no_log"] is True


def test_batch_items_take_every_per_program_option():
    batch = set(sp.argument_spec()["programs"]["options"])
    top = set(sp.argument_spec()) - {
        "programs",
        "server_url",
        "wait_timeout",
        "restart_loop_threshold",
        "restart_loop_window",
        "reload_when",
        "serial_restarts",
    }
    assert batch == top
    for name in batch:
        assert f"O({name})" in documented_options()["programs"]["description"][0], name


def test_examples_and_return_are_valid_yaml():
    examples = yaml.safe_load(sp.EXAMPLES)
    assert all("nodefleet.bitcoin.supervisord_program" in task for task in examples)
    returned = yaml.safe_load(sp.RETURN)
    assert {"changed", "conf_file", "applied", "state_before", "state", "pid", "programs"} <= set(returned)
