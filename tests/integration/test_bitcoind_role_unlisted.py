"""The bitcoind role's glue for unlisted instances (issue 11), with the harness of test_bitcoind_role.py:
the real bitcoind_managed_info reads a program file, a tor drop-in and a datadir the collection wrote
for an instance the inventory no longer lists; the other modules are the harness's fakes.

- a converge warns about it and changes nothing of it (no module is asked to remove anything);
- a no-op converge without unlisted instances runs no bitcoind_managed_info at all;
- a planned port it holds fails the converge before any module changes anything, naming both;
- bitcoind_retire_unlisted removes its program and drop-in (the tor service with purge false), and
  bitcoind_retire_purge removes its datadir (bitcoind_instance state absent purge true).
"""

from __future__ import annotations

import pytest
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import tor
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.bitcoin_conf import HEADER as CONF_HEADER
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.supervisord import HEADER as PROGRAM_HEADER

from tests.integration.test_bitcoind_role import Host, collections, recap  # noqa: F401  (fixture)

OLD_CONF = f"{CONF_HEADER}\n# instance=old impl=core\nchain=regtest\n[regtest]\nrpcport=29990\nport=29991\n"


@pytest.fixture
def host(tmp_path, collections):  # noqa: F811
    h = Host(tmp_path, collections)
    h.torrc_dir = tmp_path / "torrc.d"
    h.torrc_dir.mkdir()
    h.vars["tor_torrc_dir"] = str(h.torrc_dir)
    # The harness's stub collection has no roles/bitcoind/files (the wrapper's copy would fail).
    h.vars["bitcoind_exit_notify"] = False
    return h


def leave_old_instance(h):
    """What an earlier converge left for instance `old` before it was dropped from the inventory."""
    datadir = h.tmp / "home" / "old"
    datadir.mkdir(parents=True)
    (datadir / "bitcoin.conf").write_text(OLD_CONF)
    command = f"/opt/bitcoind -conf={datadir}/bitcoin.conf -datadir={datadir}"
    (h.conf_dir / "bitcoind-old.conf").write_text(f"{PROGRAM_HEADER}\n[program:bitcoind-old]\ncommand={command}\n")
    service_dir = h.tmp / "tor" / "nodefleet-old"
    service_dir.mkdir(parents=True)
    (h.torrc_dir / "nodefleet-old.conf").write_text(
        tor.render_dropin("old", str(service_dir), [(29991, "127.0.0.1:29992")])
    )
    return datadir


def test_unlisted_is_reported_checked_retired_and_purged(host):
    rc, out = host.run()
    assert rc == 0, out
    assert "bitcoind_managed_info" not in out.split("PLAY RECAP")[0].replace("Report the instances", "")
    assert "skipping" in out.split("Report the instances on the host that the inventory no longer lists")[1][:200]

    datadir = leave_old_instance(host)
    rc, out = host.run()
    assert rc == 0, out
    text = " ".join(out.split())
    assert "instance old is on the host but not in the inventory (neither present nor absent)" in text
    assert "program bitcoind-old" in text and "bitcoind_retire_unlisted" in text
    assert {"name": "bitcoind-old", "state": "absent"} not in host.calls("supervisord_program")[0]["params"]["programs"]
    assert (host.conf_dir / "bitcoind-old.conf").exists()

    # A new instance pinned onto old's p2p port: fails before any module runs.
    host.vars["bitcoind_instances"].append(
        {"name": "c", "impl": "core", "network": "regtest", "tor_mode": "clearnet", "ports": {"p2p": 29991}}
    )
    rc, out = host.run()
    assert rc != 0
    text = " ".join(out.split())
    assert "port 29991 (p2p) planned for instance c is still held by the unlisted instance old" in text
    assert host.calls("bitcoind_instance") == [] and host.calls("supervisord_program") == []
    host.vars["bitcoind_instances"].pop()

    # Check mode: the retire is reported, nothing is removed.
    rc, out = host.run("-e", "bitcoind_retire_unlisted=true", "--check", "--diff")
    assert rc == 0, out
    assert (host.conf_dir / "bitcoind-old.conf").exists()

    rc, out = host.run("-e", "bitcoind_retire_unlisted=true")
    assert rc == 0, out
    programs = host.calls("supervisord_program")[0]["params"]["programs"]
    assert {"name": "bitcoind-old", "state": "absent"} in programs
    assert [p["state"] for p in programs if p["name"] != "bitcoind-old"] == ["started", "started"]
    services = host.calls("tor_hidden_service") or []
    assert not services or {"name": "old", "state": "absent", "purge": False} in services[0]["params"]["services"]
    assert not (host.conf_dir / "bitcoind-old.conf").exists()  # the harness's supervisord removed it
    assert datadir.exists()
    assert [c for c in host.calls("bitcoind_instance") if c["params"]["name"] == "old"] == []

    (host.torrc_dir / "nodefleet-old.conf").unlink()  # what the real tor_hidden_service does
    rc, out = host.run("-e", "bitcoind_retire_unlisted=true")
    assert rc == 0, out
    assert recap(out) == 0, out
    assert "not in the inventory" not in out

    rc, out = host.run("-e", "bitcoind_retire_unlisted=true", "-e", "bitcoind_retire_purge=true")
    assert rc == 0, out
    purges = [c["params"] for c in host.calls("bitcoind_instance") if c["params"]["name"] == "old"]
    assert purges and purges[0]["state"] == "absent" and purges[0]["purge"] is True
    assert purges[0]["datadir"] == str(datadir)
