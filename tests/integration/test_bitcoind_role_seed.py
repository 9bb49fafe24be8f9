# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The bitcoind role's seed glue (tasks/seed.yml), with the host side faked as in test_bitcoind_role:
a new instance with ``seed_from`` is seeded once, after its bitcoin.conf is written and before its
program exists; an instance that already runs is never seeded; a bad ``seed_from`` fails on the
controller before any module runs. bitcoind_seed itself is tested against real Core in
test_seed_real_core.py."""

from __future__ import annotations

import pytest

from tests.integration.role_harness import stub_collection
from tests.integration.test_bitcoind_role import BODIES, FAKE_TEMPLATE, STUBS, Host

SEED_BODY = r"""
def BODY(p, check):
    conf_dir = os.environ["HARNESS_CONF_DIR"]
    p["conf_written"] = os.path.exists(os.path.join(DIR, "conf-" + p["name"]))
    p["program_existed"] = os.path.exists(os.path.join(conf_dir, "bitcoind-" + p["name"] + ".conf"))
    record("bitcoind_seed_seen", p, check)
    return {"changed": not check, "seeded": True, "summary": "seeded from " + p["source_name"] + " (harness)"}
"""


SNAPSHOT_BODY = r"""
def BODY(p, check):
    import stat
    conf_dir = os.environ["HARNESS_CONF_DIR"]
    p["conf_written"] = os.path.exists(os.path.join(DIR, "conf-" + p["name"]))
    p["program_existed"] = os.path.exists(os.path.join(conf_dir, "bitcoind-" + p["name"] + ".conf"))
    if os.path.exists(p["snapshot"]):
        st = os.stat(p["snapshot"])
        p["snapshot_seen"] = {
            "content": open(p["snapshot"]).read(),
            "mode": stat.S_IMODE(st.st_mode),
            "uid": st.st_uid,
            "dir_mode": stat.S_IMODE(os.stat(os.path.dirname(p["snapshot"])).st_mode),
        }
    record("bitcoind_seed_snapshot_seen", p, check)
    return {"changed": not check, "seeded": True, "summary": "seeded from snapshot " + p["snapshot"] + " (harness)"}
"""


@pytest.fixture(scope="module")
def collections(tmp_path_factory):
    bodies = dict(BODIES, bitcoind_seed=SEED_BODY, bitcoind_seed_snapshot=SNAPSHOT_BODY)
    fakes = {name: FAKE_TEMPLATE.replace("NAME", repr(name), 1) + body + "\nmain()\n" for name, body in bodies.items()}
    return stub_collection(tmp_path_factory.mktemp("coll"), STUBS, fakes)


@pytest.fixture
def host(tmp_path, collections):
    return Host(tmp_path, collections)


def test_a_new_instance_is_seeded_once_before_its_first_start(host):
    rc, out = host.run()
    assert rc == 0, out
    assert host.calls("bitcoind_seed") == []  # no seed_from: no seed task
    host.vars["bitcoind_instances"].append(
        {"name": "c", "impl": "core", "network": "regtest", "tor_mode": "clearnet", "seed_from": "a", "prune": 0}
    )
    rc, out = host.run()
    assert rc == 0, out
    (call,) = host.calls("bitcoind_seed_seen")
    p = call["params"]
    assert (p["name"], p["source_name"], p["network"], p["stop_source"]) == ("c", "a", "regtest", True)
    assert p["datadir"] == str(host.tmp / "home" / "c") and p["source_datadir"] == str(host.tmp / "home" / "a")
    assert p["owner"] == "bitcoin" and p["stop_timeout"] > 60
    assert p["conf_written"] is True and p["program_existed"] is False  # after bitcoin.conf, before the start
    assert "c: seeded from a (harness)" in out
    assert host.program_states()["bitcoind-c"] == "started"
    # c runs now: the next converge (and --check) does not seed it again
    for args in ((), ("--check",)):
        rc, out = host.run(*args)
        assert rc == 0, out
        assert host.calls("bitcoind_seed") == []


def test_seed_stop_source_is_passed(host):
    host.vars["bitcoind_instances"].append(
        {"name": "c", "impl": "core", "network": "regtest", "tor_mode": "clearnet", "seed_from": "b"}
    )
    host.vars["bitcoind_instances"][-1]["seed_stop_source"] = False
    rc, out = host.run()
    assert rc == 0, out
    (call,) = host.calls("bitcoind_seed_seen")
    assert call["params"]["stop_source"] is False and call["params"]["source_name"] == "b"


@pytest.mark.parametrize(
    ("instance", "reason"),
    [
        ({"name": "c", "network": "regtest", "seed_from": "nope"}, "must name another present instance"),
        ({"name": "c", "network": "regtest", "seed_from": "c"}, "must name another present instance"),
        ({"name": "c", "network": "signet", "seed_from": "a"}, "of\nnetwork signet"),
    ],
)
def test_a_bad_seed_from_fails_before_any_change(host, instance, reason):
    host.vars["bitcoind_instances"].append({"impl": "core", "tor_mode": "clearnet", **instance})
    rc, out = host.run()
    assert rc != 0, out
    assert "bitcoind_instances[c].seed_from" in out and reason.split("\n")[-1] in out.replace("\n", " "), out
    assert host.calls("bitcoind_instance") == [] and host.calls("bitcoind_seed") == []


SHA = "ab" * 32


def test_a_new_instance_is_seeded_once_from_a_snapshot_on_the_host(host):
    host.vars["bitcoind_instances"].append(
        {
            "name": "c",
            "impl": "core",
            "network": "regtest",
            "tor_mode": "clearnet",
            "prune": 550,
            "seed_snapshot": {"path": "/srv/snapshots/regtest.tar", "sha256": SHA},
        }
    )
    rc, out = host.run()
    assert rc == 0, out
    (call,) = host.calls("bitcoind_seed_snapshot_seen")
    p = call["params"]
    assert (p["name"], p["network"], p["prune"], p["snapshot"], p["sha256"]) == (
        "c",
        "regtest",
        550,
        "/srv/snapshots/regtest.tar",
        SHA,
    )
    assert p["datadir"] == str(host.tmp / "home" / "c") and p["owner"] == "bitcoin"
    assert p["conf_written"] is True and p["program_existed"] is False  # after bitcoin.conf, before the start
    assert "c: seeded from snapshot /srv/snapshots/regtest.tar (harness)" in out
    assert host.calls("bitcoind_seed") == []
    assert host.program_states()["bitcoind-c"] == "started"
    for args in ((), ("--check",)):  # c runs now: never seeded again
        rc, out = host.run(*args)
        assert rc == 0, out
        assert host.calls("bitcoind_seed_snapshot") == []


def test_a_controller_snapshot_is_staged_root_only_and_removed_after_the_seed(host):
    archive = host.tmp / "controller" / "regtest.tar"
    archive.parent.mkdir()
    archive.write_text("the archive")
    staging = host.tmp / "staging"
    host.vars["bitcoind_snapshot_staging_dir"] = str(staging)
    host.vars["bitcoind_instances"].append(
        {
            "name": "c",
            "impl": "core",
            "network": "regtest",
            "tor_mode": "clearnet",
            "seed_snapshot": {"path": str(archive), "sha256": SHA, "location": "controller"},
        }
    )
    rc, out = host.run("--check")  # a dry run stages nothing and cannot verify what is not there
    assert rc == 0, out
    assert host.calls("bitcoind_seed_snapshot") == [] and not (staging / "c.tar").exists()
    rc, out = host.run()
    assert rc == 0, out
    (call,) = host.calls("bitcoind_seed_snapshot_seen")
    p = call["params"]
    assert p["snapshot"] == str(staging / "c.tar") and p["sha256"] == SHA
    seen = p["snapshot_seen"]
    assert seen == {"content": "the archive", "mode": 0o600, "uid": 0, "dir_mode": 0o700}
    assert not (staging / "c.tar").exists()  # removed after the seed


@pytest.mark.parametrize(
    ("seed_snapshot", "extra"),
    [
        ({"path": "/srv/s.tar", "sha256": "abc"}, {}),
        ({"path": "relative/s.tar", "sha256": SHA}, {}),
        ({"path": "/srv/s.tar", "sha256": SHA, "location": "usb"}, {}),
        ({"path": "/srv/s.tar", "sha256": SHA}, {"seed_from": "a"}),
    ],
)
def test_a_bad_seed_snapshot_fails_before_any_change(host, seed_snapshot, extra):
    host.vars["bitcoind_instances"].append(
        {
            "name": "c",
            "impl": "core",
            "network": "regtest",
            "tor_mode": "clearnet",
            "seed_snapshot": seed_snapshot,
            **extra,
        }
    )
    rc, out = host.run()
    assert rc != 0, out
    # the role's own check names bitcoind_instances[c].seed_snapshot; a bad choice is the argument spec's
    assert "bitcoind_instances[c].seed_snapshot" in out or "found in bitcoind_instances -> seed_snapshot" in out, out
    assert host.calls("bitcoind_instance") == [] and host.calls("bitcoind_seed_snapshot") == []
