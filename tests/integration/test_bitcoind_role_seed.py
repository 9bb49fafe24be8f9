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


@pytest.fixture(scope="module")
def collections(tmp_path_factory):
    bodies = dict(BODIES, bitcoind_seed=SEED_BODY)
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
