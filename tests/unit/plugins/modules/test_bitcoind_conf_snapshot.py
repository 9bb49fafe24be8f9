# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""bitcoind_conf_snapshot: the rolling upgrade's copy of bitcoin.conf (save, restore, refusals)."""

from __future__ import annotations

import json
import os

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.nodefleet.bitcoin.plugins.modules import bitcoind_conf_snapshot as snap

OLD = "chain=regtest\n[regtest]\nrpcauth=demo:00$11\n"
NEW = "chain=regtest\n[regtest]\nrpcauth=demo:00$11\nrpcallowip=127.0.0.2\n"


def run_main(capsys, args: dict) -> dict:
    with patch_module_args(args), pytest.raises(SystemExit):
        snap.main()
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def layout(tmp_path):
    datadir = tmp_path / "home" / "main1"
    datadir.mkdir(parents=True)
    (datadir / "bitcoin.conf").write_text(OLD)
    # The snapshot dir and its parent do not exist yet (as /var/lib/nodefleet/rollback on a fresh host).
    return {"datadir": datadir, "snapdir": tmp_path / "nodefleet" / "rollback"}


def args(layout, state, **extra):
    import grp
    import pwd

    return {
        "state": state,
        "instances": [{"name": "main1", "datadir": str(layout["datadir"])}],
        "snapshot_dir": str(layout["snapdir"]),
        "owner": pwd.getpwuid(os.getuid()).pw_name,
        "group": grp.getgrgid(os.getgid()).gr_name,
        **extra,
    }


def test_save_then_restore_puts_the_old_file_back_without_showing_it(capsys, layout):
    out = run_main(capsys, args(layout, "saved"))
    assert out["changed"] is True and out["saved"] == ["main1"]
    copy = layout["snapdir"] / "main1.conf"
    assert copy.read_text() == OLD
    assert oct(copy.stat().st_mode & 0o777) == "0o600"
    assert oct(layout["snapdir"].stat().st_mode & 0o777) == "0o700"
    # Saving the same file again changes nothing.
    assert run_main(capsys, args(layout, "saved"))["changed"] is False

    (layout["datadir"] / "bitcoin.conf").write_text(NEW)  # the converge wrote the new config
    out = run_main(capsys, args(layout, "restored"))
    assert out["changed"] is True and out["restored"] == ["main1"]
    assert (layout["datadir"] / "bitcoin.conf").read_text() == OLD
    assert oct((layout["datadir"] / "bitcoin.conf").stat().st_mode & 0o777) == "0o600"
    assert "rpcauth" not in json.dumps(out)
    assert run_main(capsys, args(layout, "restored"))["changed"] is False


def test_check_mode_writes_nothing(capsys, layout):
    out = run_main(capsys, args(layout, "saved", _ansible_check_mode=True))
    assert out["changed"] is True
    assert not layout["snapdir"].exists()


def test_restore_without_a_snapshot_fails_naming_the_instance_before_writing(capsys, layout):
    (layout["datadir"] / "bitcoin.conf").write_text(NEW)
    out = run_main(capsys, args(layout, "restored"))
    assert out["failed"] is True
    assert "main1" in out["msg"] and "no snapshot" in out["msg"]
    assert (layout["datadir"] / "bitcoin.conf").read_text() == NEW


def test_a_symlinked_bitcoin_conf_is_refused(capsys, layout, tmp_path):
    secret = tmp_path / "shadow"
    secret.write_text("root:secret\n")
    conf = layout["datadir"] / "bitcoin.conf"
    conf.unlink()
    conf.symlink_to(secret)
    out = run_main(capsys, args(layout, "saved"))
    assert out["failed"] is True and "refusing" in out["msg"]
    assert not (layout["snapdir"] / "main1.conf").exists()


def test_a_missing_bitcoin_conf_drops_the_old_snapshot(capsys, layout):
    run_main(capsys, args(layout, "saved"))
    (layout["datadir"] / "bitcoin.conf").unlink()
    out = run_main(capsys, args(layout, "saved"))
    assert out["missing"] == ["main1"]
    assert not (layout["snapdir"] / "main1.conf").exists()


@pytest.mark.parametrize(
    ("instances", "snapshot_dir", "needle"),
    [
        ([{"name": "../x", "datadir": "/var/lib/bitcoind/x"}], "/var/lib/nodefleet/rollback", "instances[0].name"),
        ([{"name": "a", "datadir": "relative"}], "/var/lib/nodefleet/rollback", "instances[0].datadir"),
        ([{"name": "a", "datadir": "/d"}, {"name": "a", "datadir": "/e"}], "/var/lib/nodefleet/rollback", "twice"),
        ([{"name": "a", "datadir": "/d"}], "/etc", "snapshot_dir"),
    ],
)
def test_bad_input_fails_naming_the_option(capsys, instances, snapshot_dir, needle):
    out = run_main(capsys, {"state": "saved", "instances": instances, "snapshot_dir": snapshot_dir})
    assert out["failed"] is True and needle in out["msg"], out["msg"]
