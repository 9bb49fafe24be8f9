# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host_* filters against the real modules: a True verdict must mean the task changes nothing.

One ansible-playbook run on this machine (connection local, no become; owner and group are the
current user's) over a table of cases in a temp dir, spread over a few inventory hosts so that
they run in parallel: each host runs ``nodefleet.bitcoin.host_state`` once for its cases, computes
their filter verdicts, then runs the real module each case stands for (copy with content, template,
file, lineinfile) in check mode; a last play writes verdicts and results to a JSON file. For every
case: verdict True => the module neither changed nor failed; the "same" cases answer True (so the
skip actually happens on a converged host); and every False case is one the module really changes,
except a symlink the module follows (FOLLOWS_LINK), which the filter never vouches for.

The lineinfile cases include what a str search would get wrong: lineinfile reads bytes, splits
lines at \\n only and searches with a bytes regexp (\\s is ASCII whitespace).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import subprocess
import sys

import pytest
from ansible_collections.nodefleet.bitcoin.tests.integration.ansible_cli import BIN, REPO
from ansible_collections.nodefleet.bitcoin.tests.integration.ci_gate import skip_or_fail

pytestmark = pytest.mark.integration

OWNER = pwd.getpwuid(os.getuid()).pw_name
GROUP = grp.getgrgid(os.getgid()).gr_name
OTHER_USER = "nobody" if OWNER == "root" else "root"

TRIM_TEMPLATE = "{% if true %}\nx\n{% endif %}\n"  # rendered with trim_blocks (the template default): "x\n"
VAR_TEMPLATE = "v={{ 1 + 1 }}\n"


def _file(path, data: bytes, mode=0o644):
    with open(path, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)


def _dir(path, mode=0o755):
    os.mkdir(path)
    os.chmod(path, mode)


# id -> kind, expected verdict, setup(path), per-case vars.
#   copy:       vars content, mode (None: the task gives no mode)
#   template:   vars src text, mode
#   directory:  vars mode, follow
#   absent:     no vars
#   link:       vars target
#   line:       vars regexp, line
CASES = {
    # copy with content
    "copy_same": ("copy", True, lambda p: _file(p, b"a=1\n"), {"content": "a=1\n", "mode": "0644"}),
    "copy_same_no_mode": ("copy", True, lambda p: _file(p, b"a=1\n", 0o600), {"content": "a=1\n", "mode": None}),
    "copy_content_diff": ("copy", False, lambda p: _file(p, b"a=1\n"), {"content": "a=2\n", "mode": "0644"}),
    "copy_mode_diff": ("copy", False, lambda p: _file(p, b"a=1\n", 0o600), {"content": "a=1\n", "mode": "0644"}),
    "copy_missing": ("copy", False, lambda p: None, {"content": "a=1\n", "mode": "0644"}),
    "copy_owner_diff": (
        "copy",
        False,
        lambda p: _file(p, b"a=1\n"),
        {"content": "a=1\n", "mode": "0644", "owner": OTHER_USER},
    ),
    "copy_dest_symlink": (
        "copy",
        False,
        lambda p: (_file(p + ".real", b"a=1\n"), os.symlink(p + ".real", p)),
        {"content": "a=1\n", "mode": "0644"},
    ),
    # template (trim_blocks applies in the template module and in the lookup)
    "template_trim_same": ("template", True, lambda p: _file(p, b"x\n"), {"text": TRIM_TEMPLATE, "mode": "0644"}),
    "template_var_same": ("template", True, lambda p: _file(p, b"v=2\n"), {"text": VAR_TEMPLATE, "mode": "0644"}),
    "template_untrimmed": (
        "template",
        False,
        lambda p: _file(p, b"\nx\n\n"),  # what the template renders to without trim_blocks
        {"text": TRIM_TEMPLATE, "mode": "0644"},
    ),
    "template_missing": ("template", False, lambda p: None, {"text": TRIM_TEMPLATE, "mode": "0644"}),
    # file state=directory
    "dir_same": ("directory", True, lambda p: _dir(p), {"mode": "0755", "follow": True}),
    "dir_same_nofollow": ("directory", True, lambda p: _dir(p), {"mode": "0755", "follow": False}),
    "dir_mode_diff": ("directory", False, lambda p: _dir(p, 0o700), {"mode": "0755", "follow": True}),
    "dir_missing": ("directory", False, lambda p: None, {"mode": "0755", "follow": True}),
    "dir_is_file": ("directory", False, lambda p: _file(p, b""), {"mode": "0755", "follow": True}),
    # A symlink to a directory: file follows it by default (and then may change nothing); the filter
    # never vouches for a link where a directory is wanted.
    "dir_symlink_follow": (
        "directory",
        False,
        lambda p: (_dir(p + ".real"), os.symlink(p + ".real", p)),
        {"mode": "0755", "follow": True},
    ),
    "dir_symlink_nofollow": (
        "directory",
        False,
        lambda p: (_dir(p + ".real"), os.symlink(p + ".real", p)),
        {"mode": "0755", "follow": False},
    ),
    # file state=absent
    "absent_missing": ("absent", True, lambda p: None, {}),
    "absent_present": ("absent", False, lambda p: _file(p, b"x"), {}),
    # file state=link
    "link_same": ("link", True, lambda p: (_file(p + ".t", b""), os.symlink(p + ".t", p)), {"target": ".t"}),
    "link_other_target": (
        "link",
        False,
        lambda p: (_file(p + ".t", b""), _file(p + ".u", b""), os.symlink(p + ".u", p)),
        {"target": ".t"},
    ),
    "link_is_file": ("link", False, lambda p: (_file(p + ".t", b""), _file(p, b"")), {"target": ".t"}),
    # lineinfile (regexp, line)
    "line_same": ("line", True, lambda p: _file(p, b"a=1\nb=2\n"), {"regexp": "^b=", "line": "b=2"}),
    "line_last_match_same": (
        "line",
        True,
        lambda p: _file(p, b"b=1\nb=2\nc=3\n"),
        {"regexp": "^b=", "line": "b=2"},
    ),
    "line_last_match_diff": ("line", False, lambda p: _file(p, b"b=2\nb=1\n"), {"regexp": "^b=", "line": "b=2"}),
    "line_absent": ("line", False, lambda p: _file(p, b"a=1\n"), {"regexp": "^b=", "line": "b=2"}),
    "line_no_trailing_newline": ("line", False, lambda p: _file(p, b"a=1\nb=2"), {"regexp": "^b=", "line": "b=2"}),
    "line_crlf": ("line", False, lambda p: _file(p, b"b=2\r\n"), {"regexp": "^b=", "line": "b=2"}),
    # lineinfile splits lines at \n only: "b=1\rb=2\n" is one line, which it replaces.
    "line_cr_inside": ("line", False, lambda p: _file(p, b"b=1\rb=2\n"), {"regexp": "^b=", "line": "b=2"}),
    "line_formfeed_inside": ("line", False, lambda p: _file(p, b"b=1\x0cb=2\n"), {"regexp": "b=", "line": "b=2"}),
    "line_unicode_separator": (
        "line",
        False,
        lambda p: _file(p, "b=1\u2028b=2\n".encode()),
        {"regexp": "^b=", "line": "b=2"},
    ),
    # lineinfile searches bytes: \s is ASCII whitespace only, so the no-break-space line is no match and
    # the last match is "b=1", which it would replace.
    "line_unicode_whitespace": (
        "line",
        False,
        lambda p: _file(p, "b=1\n\u00a0b=2\n".encode()),
        {"regexp": r"^\s*b=", "line": "\u00a0b=2"},
    ),
    "line_missing_file": ("line", False, lambda p: None, {"regexp": "^b=", "line": "b=2"}),
    "line_symlinked_file": (
        "line",
        False,
        lambda p: (_file(p + ".real", b"b=2\n"), os.symlink(p + ".real", p)),
        {"regexp": "^b=", "line": "b=2"},
    ),
}


# False cases where the module follows a symlink and changes nothing: the filter never vouches for a link.
FOLLOWS_LINK = {"dir_symlink_follow", "line_symlinked_file"}


def _verdict_expr(kind: str) -> str:
    """The filter call for a case of this kind (the case's vars are ``case``, the gathered state ``host``)."""
    if kind == "copy":
        return (
            "host | nodefleet.bitcoin.host_path_ok(case.path, 'file', owner=case.owner | default(owner), group=group,"
            " mode=case.mode | default(none), sha256=(case.content | hash('sha256')))"
        )
    if kind == "template":
        return (
            "host | nodefleet.bitcoin.host_path_ok(case.path, 'file', owner=owner, group=group, mode=case.mode,"
            " sha256=(lookup('ansible.builtin.template', case.src) | hash('sha256')))"
        )
    if kind == "directory":
        return "host | nodefleet.bitcoin.host_path_ok(case.path, 'directory', owner=owner, group=group, mode=case.mode)"
    if kind == "absent":
        return "host | nodefleet.bitcoin.host_path_ok(case.path, 'absent')"
    if kind == "link":
        return "host | nodefleet.bitcoin.host_path_ok(case.path, 'link', owner=owner, group=group, target=case.target)"
    if kind == "line":
        return "host | nodefleet.bitcoin.host_line_ok(case.path, case.regexp, case.line)"
    raise AssertionError(kind)


# The real module of each kind, with the arguments the filter call above vouches for.
MODULES = {
    "copy": {
        "ansible.builtin.copy": {
            "dest": "{{ case.path }}",
            "content": "{{ case.content }}",
            "owner": "{{ case.owner | default(owner) }}",
            "group": "{{ group }}",
            "mode": "{{ case.mode | default(omit) }}",
        }
    },
    "template": {
        "ansible.builtin.template": {
            "src": "{{ case.src }}",
            "dest": "{{ case.path }}",
            "owner": "{{ owner }}",
            "group": "{{ group }}",
            "mode": "{{ case.mode }}",
        }
    },
    "directory": {
        "ansible.builtin.file": {
            "path": "{{ case.path }}",
            "state": "directory",
            "owner": "{{ owner }}",
            "group": "{{ group }}",
            "mode": "{{ case.mode }}",
            "follow": "{{ case.follow }}",
        }
    },
    "absent": {"ansible.builtin.file": {"path": "{{ case.path }}", "state": "absent"}},
    "link": {
        "ansible.builtin.file": {
            "path": "{{ case.path }}",
            "src": "{{ case.target }}",
            "state": "link",
            "owner": "{{ owner }}",
            "group": "{{ group }}",
        }
    },
    "line": {
        "ansible.builtin.lineinfile": {
            "path": "{{ case.path }}",
            "regexp": "{{ case.regexp }}",
            "line": "{{ case.line }}",
        }
    },
}


SHARDS = 4  # inventory hosts (all this machine): the cases run a shard per fork, in one ansible-playbook run


def _build(base: str, results: str) -> tuple:
    """Set up every case under ``base``; return (inventory, playbook). The cases are spread over a few
    inventory hosts, each of which gathers its cases once, computes their verdicts and runs their modules."""
    shards = [{"cases": [], "gather_paths": [], "gather_lines": []} for _ in range(SHARDS)]
    for number, (case_id, (kind, _expect, setup, v)) in enumerate(CASES.items()):
        shard = shards[number % SHARDS]
        path = os.path.join(base, case_id)
        setup(path)
        entry = {"id": case_id, "kind": kind, "path": path, **{k: val for k, val in v.items() if val is not None}}
        if kind == "link":
            entry["target"] = path + v["target"]
        if kind == "template":
            entry["src"] = os.path.join(base, case_id + ".j2")
            with open(entry["src"], "w", encoding="utf-8") as handle:
                handle.write(entry.pop("text"))
        shard["cases"].append(entry)
        if kind == "line":
            shard["gather_lines"].append({"path": path, "regexp": v["regexp"]})
        else:
            shard["gather_paths"].append(path)
    inventory = {
        "shards": {
            "hosts": {"shard%d" % i: shard for i, shard in enumerate(shards)},
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                "owner": OWNER,
                "group": GROUP,
            },
        }
    }
    tasks = [
        {
            "name": "Read the host",
            "nodefleet.bitcoin.host_state": {"paths": "{{ gather_paths }}", "lines": "{{ gather_lines }}"},
            "register": "host",
        }
    ]
    for kind in MODULES:
        tasks.append(
            {
                "name": "Verdicts " + kind,
                "ansible.builtin.set_fact": {
                    "verdicts": "{{ verdicts | default({}) | combine({case.id: (%s)}) }}" % _verdict_expr(kind)
                },
                "loop": "{{ cases | selectattr('kind', 'eq', '%s') | list }}" % kind,
                "loop_control": {"loop_var": "case", "label": "{{ case.id }}"},
            }
        )
    for kind, module in MODULES.items():
        tasks.append(
            {
                "name": "Real module " + kind,
                **module,
                "check_mode": True,
                "register": "real_" + kind,
                "ignore_errors": True,
                "loop": "{{ cases | selectattr('kind', 'eq', '%s') | list }}" % kind,
                "loop_control": {"loop_var": "case", "label": "{{ case.id }}"},
            }
        )
    real = ", ".join(f"'{kind}': real_{kind}.results | default([])" for kind in MODULES)
    tasks.append(
        {
            "name": "Outcome",
            "ansible.builtin.set_fact": {
                "outcome": "{{ {'verdicts': verdicts | default({}), 'real': {%s}, 'host': host} }}" % real
            },
        }
    )
    collect = {
        "name": "Write every shard's outcome",
        "ansible.builtin.copy": {
            "dest": results,
            "content": "{{ groups['shards'] | map('extract', hostvars, 'outcome') | list | to_json }}",
            "mode": "0600",
        },
    }
    playbook = [
        {"hosts": "shards", "gather_facts": False, "tasks": tasks},
        {"hosts": "localhost", "gather_facts": False, "connection": "local", "tasks": [collect]},
    ]
    return inventory, playbook


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """case id -> verdict, changed, failed, msg, host (its shard's gathered state), from one playbook run."""
    playbook_bin = os.path.join(BIN, "ansible-playbook")
    if not os.access(playbook_bin, os.X_OK):
        skip_or_fail(f"ansible-playbook is not installed beside {sys.executable}")
    collection = os.path.join(REPO, ".cache", "collections", "ansible_collections", "nodefleet", "bitcoin", "plugins")
    if not os.path.isdir(collection):
        skip_or_fail("the collection is not linked into .cache/collections (scripts/setup.sh does it)")
    tmp = str(tmp_path_factory.mktemp("host_state_agrees"))
    base = os.path.join(tmp, "cases")
    os.mkdir(base)
    results = os.path.join(tmp, "results.json")
    inventory, play = _build(base, results)
    for name, data in (("inventory.json", inventory), ("play.json", play)):
        with open(os.path.join(tmp, name), "w", encoding="utf-8") as handle:
            json.dump(data, handle)
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default",
    )
    env.pop("ANSIBLE_COLLECTIONS_PATH", None)
    cmd = [playbook_bin, "-i", os.path.join(tmp, "inventory.json"), os.path.join(tmp, "play.json")]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    with open(results, encoding="utf-8") as handle:
        shards = json.load(handle)
    cases = {}
    for shard in shards:
        for kind_results in shard["real"].values():
            for r in kind_results:
                case_id = r["case"]["id"]
                cases[case_id] = {
                    "verdict": shard["verdicts"].get(case_id),
                    "changed": bool(r.get("changed")),
                    "failed": bool(r.get("failed")),
                    "msg": r.get("msg", ""),
                    "path": r["case"]["path"],
                    "host": shard["host"],
                }
    assert sorted(cases) == sorted(CASES), out[-6000:]
    return cases


def _verdict(result, case_id):
    value = result["verdict"]
    assert isinstance(value, bool), f"{case_id}: the filter returned {value!r}, not a bool"
    return value


@pytest.mark.parametrize("case_id", list(CASES))
def test_true_verdict_means_the_module_changes_nothing(outcomes, case_id):
    result = outcomes[case_id]
    if _verdict(result, case_id):
        assert not result["failed"], f"{case_id}: the filter says skip, but the module fails: {result['msg']}"
        assert not result["changed"], f"{case_id}: the filter says skip, but the module changes it"


@pytest.mark.parametrize("case_id", list(CASES))
def test_verdict_is_the_expected_one(outcomes, case_id):
    kind, expect, _setup, _vars = CASES[case_id]
    result = {k: v for k, v in outcomes[case_id].items() if k != "host"}
    assert _verdict(result, case_id) is expect, f"{case_id} ({kind}): module result {result}"
    if case_id in FOLLOWS_LINK:
        # The safe miss: the module follows the link and finds nothing to do, the filter (lstat,
        # O_NOFOLLOW) does not vouch for a link, so the task just runs.
        assert not result["changed"] and not result["failed"], result
    elif expect is False:
        # Every other False case is one the module really changes (or fails on): the table tests
        # the filter against real differences, not only against its own reading of them.
        assert result["changed"] or result["failed"], f"{case_id}: the module changes nothing here: {result}"


@pytest.mark.parametrize("case_id", list(CASES))
def test_the_gather_read_the_case_and_changed_nothing(outcomes, case_id):
    kind, _expect, _setup, v = CASES[case_id]
    host, path = outcomes[case_id]["host"], outcomes[case_id]["path"]
    assert host["changed"] is False
    if kind == "line":
        assert [i for i in host["lines"] if i["path"] == path and i["regexp"] == v["regexp"]], host["lines"]
    else:
        assert path in host["paths"], host["paths"]
