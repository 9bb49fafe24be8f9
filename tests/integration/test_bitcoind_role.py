"""The bitcoind role's own tasks run for real (ansible-playbook, connection=local) with the host
side replaced: the collection's modules by fakes that keep their state in a temp dir and record
every call, user.yml and release.yml by stubs, every path under a temp dir. What is tested is the
role's glue - which restarts it asks for, what it persists, which options it passes.

Issue 10.11: a converge that stops between the bitcoin.conf change and the supervisord restart
must leave the restart due on the host, and the next converge (and --check) must do (report) it.
"""

from __future__ import annotations

import json
import os
import re

import pytest

from tests.integration.role_harness import run_play, stub_collection

FAKE_COMMON = r"""#!/usr/bin/python
import json, os
from ansible.module_utils.basic import AnsibleModule
DIR = os.environ["HARNESS_DIR"]
def record(module_name, params, check):
    with open(os.path.join(DIR, module_name + ".jsonl"), "a") as handle:
        handle.write(json.dumps({"params": params, "check": check}) + "\n")
"""

# AnsibleModule refuses unknown options, so the fakes take everything as raw JSON: the action's
# arguments arrive in the module's args file; a tiny reader keeps them all.
FAKE_TEMPLATE = (
    FAKE_COMMON
    + r"""
import sys
from ansible.module_utils.basic import _load_params
def main():
    params = _load_params()
    check = bool(params.pop("_ansible_check_mode", False))
    params = {k: v for k, v in params.items() if not k.startswith("_ansible")}
    record(NAME, params, check)
    result = BODY(params, check)
    print(json.dumps(result))
    sys.exit(1 if result.get("failed") else 0)
"""
)

BODIES = {
    "bitcoind_instance": r"""
def BODY(p, check):
    if p.get("state") == "absent":
        return {"changed": False}
    if os.path.exists(os.path.join(DIR, "fail_instance_" + p["name"])):
        return {"failed": True, "msg": "bitcoind_instance failed for " + p["name"] + " (harness)"}
    wanted = json.dumps({k: v for k, v in p.items() if k != "rpc_users"}, sort_keys=True)
    path = os.path.join(DIR, "conf-" + p["name"])
    have = open(path).read() if os.path.exists(path) else None
    differs = have != wanted
    if differs and not check:
        with open(path, "w") as handle:
            handle.write(wanted)
    return {"changed": differs, "restart_required": differs}
""",
    "tor_hidden_service": r"""
def BODY(p, check):
    services = {s["name"]: {"onion_address": s["name"].replace("-", "") + "x" * 40 + ".onion"}
                for s in p["services"] if s.get("state") == "present"}
    return {"changed": False, "services": services}
""",
    "supervisord_program": r"""
def BODY(p, check):
    if os.path.exists(os.path.join(DIR, "fail_supervisord")):
        return {"failed": True, "msg": "supervisord batch failed (harness)"}
    conf_dir = os.environ["HARNESS_CONF_DIR"]
    changed = False
    for prog in p["programs"]:
        path = os.path.join(conf_dir, prog["name"] + ".conf")
        if prog["state"] == "absent":
            if os.path.exists(path):
                changed = True
                if not check:
                    os.unlink(path)
            continue
        if prog["state"] == "restarted" or not os.path.exists(path):
            changed = True
        if not check:
            with open(path, "w") as handle:
                handle.write(json.dumps(prog))
    return {"changed": changed, "programs": {}}
""",
}


def fake_modules() -> dict:
    return {name: FAKE_TEMPLATE.replace("NAME", repr(name), 1) + body + "\nmain()\n" for name, body in BODIES.items()}


STUBS = {
    "bitcoind": {
        "user.yml": [{"name": "stub user", "ansible.builtin.set_fact": {"bitcoind__user_result": {"changed": False}}}],
        "release.yml": [{"name": "stub release", "ansible.builtin.debug": {"msg": "no release install"}}],
    }
}
PLAY = [
    {
        "hosts": "fleet",
        "gather_facts": False,
        "roles": [{"role": "nodefleet.bitcoin.bitcoind"}],
    }
]
SIGNER = {"name": "t", "fingerprint": "A" * 40, "key": "x"}
RELEASES = {"core": {"version": "1.0", "archive": "a.tar.gz", "source": "file", "dir": "/nonexistent"}}


@pytest.fixture(scope="module")
def collections(tmp_path_factory):
    return stub_collection(tmp_path_factory.mktemp("coll"), STUBS, fake_modules())


class Host:
    """One fake host: its dirs, its inventory, and ansible-playbook runs of the role on it."""

    def __init__(self, tmp, collections):
        self.tmp = tmp
        self.collections = collections
        self.state = tmp / "state"
        self.conf_dir = tmp / "conf.d"
        self.pending = tmp / "var" / "nodefleet" / "pending-restart"
        for d in (self.state, self.conf_dir, tmp / "opt"):
            d.mkdir(parents=True)
        self.vars = {
            "bitcoind_instances": [
                {"name": "a", "impl": "core", "network": "regtest", "tor_mode": "clearnet"},
                {"name": "b", "impl": "core", "network": "regtest", "tor_mode": "clearnet"},
            ],
            "bitcoind_releases": RELEASES,
            "bitcoind_release_signers": [SIGNER],
            "bitcoind_home": str(tmp / "home"),
            "bitcoind_install_root": str(tmp / "opt"),
            "bitcoind_pending_restart_dir": str(self.pending),
            "bitcoind_onion_key_backup": False,
        }

    def run(self, *args, hosts=None):
        extra = json.dumps({"bitcoind_supervisor_conf_dir": str(self.conf_dir)})
        env = {"HARNESS_DIR": str(self.state), "HARNESS_CONF_DIR": str(self.conf_dir)}
        for f in self.state.glob("*.jsonl"):
            f.unlink()
        rc, out, _ = run_play(
            self.tmp, self.collections, PLAY, self.vars, extra_args=("-e", extra, *args), hosts=hosts, env=env
        )
        return rc, out

    def calls(self, module):
        path = self.state / f"{module}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def program_states(self):
        (call,) = self.calls("supervisord_program")
        return {p["name"]: p["state"] for p in call["params"]["programs"]}

    def markers(self):
        return sorted(os.listdir(self.pending)) if self.pending.exists() else []


def recap(out):
    m = re.search(r"testnode\s+: ok=\d+\s+changed=(\d+)", out)
    assert m, out
    return int(m.group(1))


@pytest.fixture
def host(tmp_path, collections):
    return Host(tmp_path, collections)


def test_an_interrupted_restart_is_done_by_the_next_converge(host):
    rc, out = host.run()
    assert rc == 0, out
    assert host.markers() == []  # new programs: nothing was running, no marker needed
    # ... and nothing to restart: they are added and started together, not restarted one by one
    assert host.program_states() == {"bitcoind-a": "started", "bitcoind-b": "started"}

    # A change of both bitcoin.conf files, then the play stops before the restart (the
    # supervisord batch fails): the old daemons keep running.
    host.vars["bitcoind_rpc_allow_ip"] = ["127.0.0.1", "127.0.0.2"]
    (host.state / "fail_supervisord").write_text("")
    rc, out = host.run()
    assert rc != 0, out
    assert host.markers() == ["a", "b"]
    st = os.stat(host.pending)
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o700)
    (host.state / "fail_supervisord").unlink()

    # bitcoin.conf is already right: only the marker says the restart is due. --check reports it.
    rc, out = host.run("--check", "--diff")
    assert rc == 0, out
    assert host.program_states() == {"bitcoind-a": "restarted", "bitcoind-b": "restarted"}
    assert recap(out) > 0
    assert host.markers() == ["a", "b"]  # check mode writes and removes nothing

    rc, out = host.run()
    assert rc == 0, out
    assert host.program_states() == {"bitcoind-a": "restarted", "bitcoind-b": "restarted"}
    assert host.markers() == []

    # converged: nothing due, nothing changes, --check agrees
    for args in ((), ("--check", "--diff")):
        rc, out = host.run(*args)
        assert rc == 0, out
        assert host.program_states() == {"bitcoind-a": "started", "bitcoind-b": "started"}
        assert recap(out) == 0, out


def test_only_the_changed_instance_gets_a_marker(host):
    rc, out = host.run()
    assert rc == 0, out
    host.vars["bitcoind_instances"][0]["dbcache"] = 400
    (host.state / "fail_supervisord").write_text("")
    rc, out = host.run()
    assert rc != 0
    assert host.markers() == ["a"]
    (host.state / "fail_supervisord").unlink()
    rc, out = host.run()
    assert rc == 0, out
    assert host.program_states() == {"bitcoind-a": "restarted", "bitcoind-b": "started"}
    assert host.markers() == []


def test_role_passes_the_new_bitcoind_instance_options(host):
    """Issue 10.8 / 10.16 plumbing and the instance's own addnode list."""
    host.vars["bitcoind_instances"][0]["addnode"] = ["203.0.113.5:8333"]
    host.vars["bitcoind_instances"][1]["debug_log"] = "file"
    rc, out = host.run()
    assert rc == 0, out
    by_name = {c["params"]["name"]: c["params"] for c in host.calls("bitcoind_instance")}
    assert by_name["a"]["addnode"] == ["203.0.113.5:8333"]
    assert "addnode" not in by_name["b"]
    assert (by_name["a"]["debug_log"], by_name["b"]["debug_log"]) == ("console", "file")
    assert by_name["a"]["rpc_allow_any"] is False
    host.vars["bitcoind_rpc_allow_any"] = True
    rc, out = host.run()
    assert rc == 0, out
    assert all(c["params"]["rpc_allow_any"] is True for c in host.calls("bitcoind_instance"))


def test_every_program_log_is_bounded(host):
    rc, out = host.run()
    assert rc == 0, out
    (call,) = host.calls("supervisord_program")
    for prog in call["params"]["programs"]:
        assert prog["redirect_stderr"] is True
        assert prog["stdout_logfile_maxbytes"] == "50MB"
        assert prog["stdout_logfile_backups"] >= 1
    host.vars["bitcoind_log_maxbytes"] = "0"
    rc, out = host.run()
    assert rc != 0
    assert "bitcoind_log_maxbytes" in out


def test_fleet_peers_reach_bitcoind_instance(host):
    """Issue 9: the role passes the fleet_peers filter's lines after the instance's own."""
    other = dict(host.vars)
    other["bitcoind_instances"] = [{"name": "c", "impl": "core", "network": "regtest", "tor_mode": "clearnet"}]
    mine = dict(host.vars, bitcoind_fleet_peering=True, bitcoind_fleet_size=2)
    mine["bitcoind_instances"] = [
        {"name": "a", "impl": "core", "network": "regtest", "tor_mode": "both", "addnode": ["192.0.2.1"]},
        {"name": "s", "impl": "core", "network": "signet", "tor_mode": "clearnet"},
    ]
    other["bitcoind_fleet_peering"] = True
    other["bitcoind_peer_address"] = "10.9.8.7"
    rc, out = host.run("--limit", "testnode", hosts={"testnode": mine, "zz-other": other})
    assert rc == 0, out
    by_name = {c["params"]["name"]: c["params"] for c in host.calls("bitcoind_instance")}
    from ansible_collections.nodefleet.bitcoin.plugins.filter.port_plan import plan_ports

    port = plan_ports([{"name": "c"}])["c"]["p2p"]
    assert by_name["a"]["addnode"] == ["192.0.2.1", f"10.9.8.7:{port}"]
    assert "addnode" not in by_name["s"]


def test_supervisord_batch_restarts_one_at_a_time_and_fails_on_restart_loops(host):
    """Issues 10.12 / 10.14: the role passes supervisord_program's loop detection, serial restarts
    and reload_when; a fleet-wide program setting restarts no instance and leaves no marker."""
    rc, out = host.run()
    assert rc == 0, out
    (call,) = host.calls("supervisord_program")
    top = {k: v for k, v in call["params"].items() if k != "programs"}
    assert top["serial_restarts"] is True
    assert top["reload_when"] == "restart"
    assert (top["restart_loop_threshold"], top["restart_loop_window"]) == (3, 600)
    host.vars.update(bitcoind_startsecs=9, bitcoind_log_maxbytes="20MB", bitcoind_restart_loop_threshold=0)
    rc, out = host.run()
    assert rc == 0, out
    assert host.program_states() == {"bitcoind-a": "started", "bitcoind-b": "started"}
    (call,) = host.calls("supervisord_program")
    assert call["params"]["restart_loop_threshold"] == 0
    assert {p["startsecs"] for p in call["params"]["programs"]} == {9}
    assert host.markers() == []


def test_key_backup_copies_only_an_onion_key(tmp_path, collections):
    """Issue 10.4: the key backup slurps inside debian-tor's directory by path; a key file that is
    a link to another file (here a fake /etc/shadow) must not end up on the controller."""
    import base64

    tor = tmp_path / "tor"
    backup = tmp_path / "backup"
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$secret:19000:0:99999:7:::\n")
    good = b"== ed25519v1-secret: type0 ==\x00\x00\x00" + bytes(range(64))
    for name, make in (("good", None), ("evil", secret)):
        (tor / f"nodefleet-{name}").mkdir(parents=True)
        key = tor / f"nodefleet-{name}" / "hs_ed25519_secret_key"
        if make:
            key.symlink_to(make)
        else:
            key.write_bytes(good)
    play = [
        {
            "hosts": "fleet",
            "gather_facts": False,
            "tasks": [
                {
                    "ansible.builtin.include_role": {"name": "nodefleet.bitcoin.bitcoind", "tasks_from": "backup_keys"},
                    "vars": {
                        "bitcoind__backup_needed": ["good", "evil"],
                        "bitcoind__onion": {"good": "g" * 56 + ".onion", "evil": "e" * 56 + ".onion"},
                    },
                }
            ],
        }
    ]
    extra = json.dumps({"bitcoind__tor_data_dir": str(tor), "bitcoind__backup_path": str(backup)})
    rc, out, _ = run_play(tmp_path, collections, play, {}, extra_args=("-e", extra))
    assert rc != 0, out
    assert "['evil']" in out and "not an ed25519" in out, out
    assert "secret:19000" not in out
    assert not backup.exists() or not any(backup.iterdir())
    # only good keys: backed up
    (tor / "nodefleet-evil" / "hs_ed25519_secret_key").unlink()
    (tor / "nodefleet-evil" / "hs_ed25519_secret_key").write_bytes(good)
    rc, out, _ = run_play(tmp_path, collections, play, {}, extra_args=("-e", extra))
    assert rc == 0, out
    assert (backup / "good.b64").read_text() == base64.b64encode(good).decode()


def test_a_failing_later_instance_keeps_the_earlier_instances_restart_due(host):
    rc, out = host.run()
    assert rc == 0, out
    host.vars["bitcoind_rpc_allow_ip"] = ["127.0.0.1", "127.0.0.3"]
    (host.state / "fail_instance_b").write_text("")
    rc, out = host.run()
    assert rc != 0, out
    assert "bitcoind_instance failed for b" in out
    assert host.calls("supervisord_program") == []  # the play stopped before the batch
    assert host.markers() == ["a"]  # a's conf changed in the same loop: its restart is recorded
    (host.state / "fail_instance_b").unlink()
    rc, out = host.run()
    assert rc == 0, out
    assert host.program_states() == {"bitcoind-a": "restarted", "bitcoind-b": "restarted"}
    assert host.markers() == []


RELEASE_STUBS = {
    "bitcoind": {
        "user.yml": [{"name": "stub user", "ansible.builtin.set_fact": {"bitcoind__user_result": {"changed": False}}}],
    }
}


@pytest.fixture(scope="module")
def release_collections(tmp_path_factory):
    return stub_collection(tmp_path_factory.mktemp("rel"), RELEASE_STUBS, fake_modules())


def test_a_release_switch_records_the_restart_before_the_link_moves(tmp_path, release_collections):
    """The real release.yml: both versions installed, the link moves from 1.0 to 2.0."""
    host = Host(tmp_path, release_collections)
    for version in ("1.0", "2.0"):
        (tmp_path / "opt" / f"core-{version}").mkdir()
    (tmp_path / "opt" / "core").symlink_to("core-1.0")
    rc, out = host.run()
    assert rc == 0, out
    assert host.markers() == []
    host.vars["bitcoind_releases"] = {"core": dict(RELEASES["core"], version="2.0")}
    (host.state / "fail_supervisord").write_text("")
    rc, out = host.run()
    assert rc != 0, out
    assert os.readlink(tmp_path / "opt" / "core") == "core-2.0"
    assert host.markers() == ["a", "b"]
    assert (host.pending / "a").read_text() == "release link moved\n"
    (host.state / "fail_supervisord").unlink()
    rc, out = host.run("--check")
    assert rc == 0, out
    assert host.program_states() == {"bitcoind-a": "restarted", "bitcoind-b": "restarted"}
    rc, out = host.run()
    assert rc == 0, out
    assert host.program_states() == {"bitcoind-a": "restarted", "bitcoind-b": "restarted"}
    assert host.markers() == []
    rc, out = host.run()
    assert rc == 0, out
    assert host.program_states() == {"bitcoind-a": "started", "bitcoind-b": "started"}
    assert recap(out) == 0, out


def test_deferred_restarts_keep_the_markers_and_restart_nothing(host):
    """bitcoind_defer_restarts (playbooks/upgrade.yml): the converge writes bitcoin.conf, restarts
    nothing and leaves the markers; rolling.yml restarts from them one at a time."""
    rc, out = host.run()
    assert rc == 0, out
    host.vars["bitcoind_rpc_allow_ip"] = ["127.0.0.1", "127.0.0.2"]
    host.vars["bitcoind_defer_restarts"] = True
    rc, out = host.run()
    assert rc == 0, out
    assert host.program_states() == {"bitcoind-a": "started", "bitcoind-b": "started"}
    assert host.markers() == ["a", "b"]
    # Without the deferral the next converge does the due restarts and forgets them.
    host.vars["bitcoind_defer_restarts"] = False
    rc, out = host.run()
    assert rc == 0, out
    assert host.program_states() == {"bitcoind-a": "restarted", "bitcoind-b": "restarted"}
    assert host.markers() == []


def test_fleet_peering_on_a_pared_down_inventory_is_refused_before_any_change(host):
    """Issue 15: an AWX job slice holds only its own hosts; peering computed from it would drop
    the other hosts' addnode lines, so the converge stops in validation, naming the option."""
    mine = dict(host.vars, bitcoind_fleet_peering=True, bitcoind_fleet_size=2)
    rc, out = host.run(hosts={"testnode": mine})
    assert rc != 0, out
    assert "bitcoind_fleet_size: this inventory holds 1 hosts of the fleet group, bitcoind_fleet_size says 2" in out
    assert host.calls("bitcoind_instance") == [] and host.calls("supervisord_program") == []

    del mine["bitcoind_fleet_size"]
    rc, out = host.run(hosts={"testnode": mine})
    assert rc != 0, out
    assert "bitcoind_fleet_size must be set when bitcoind_fleet_peering is true" in out
