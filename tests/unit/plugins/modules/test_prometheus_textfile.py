# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""prometheus_textfile: the status play's one write per host (issue 15): atomic, root's directory,
never through a symlink, `changed` only when more than the clock moved, check and diff mode."""

from __future__ import annotations

import grp
import json
import os
import pwd

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.nodefleet.bitcoin.plugins.modules import prometheus_textfile as textfile

ME = pwd.getpwuid(os.getuid()).pw_name
MY_GROUP = grp.getgrgid(os.getgid()).gr_name


def metrics(blocks: int, stamp: float) -> str:
    return (
        "# HELP nodefleet_bitcoind_blocks Blocks.\n# TYPE nodefleet_bitcoind_blocks gauge\n"
        f'nodefleet_bitcoind_blocks{{bitcoind="main1",host="n1",impl="core",network="regtest"}} {blocks}\n'
        "# HELP nodefleet_collector_last_run_timestamp_seconds When.\n"
        "# TYPE nodefleet_collector_last_run_timestamp_seconds gauge\n"
        f'nodefleet_collector_last_run_timestamp_seconds{{host="n1"}} {stamp}\n'
    )


def run_main(capsys, args: dict, check=False, diff=False) -> dict:
    args = {"owner": ME, "group": MY_GROUP, **args}
    if check:
        args["_ansible_check_mode"] = True
    if diff:
        args["_ansible_diff"] = True
    with patch_module_args(args), pytest.raises(SystemExit):
        textfile.main()
    return json.loads(capsys.readouterr().out)


def files(**named) -> list:
    return [{"name": name, "content": content} for name, content in named.items()]


def test_first_write_creates_the_directory_and_files_then_the_clock_alone_is_not_a_change(capsys, tmp_path):
    target = tmp_path / "prometheus" / "node-exporter"
    out = run_main(capsys, {"path": str(target), "files": files(**{"a.prom": metrics(100, 1.0)})})
    assert out["changed"] is True and out["dir_changed"] is True
    assert (target / "a.prom").read_text() == metrics(100, 1.0)
    assert oct(target.stat().st_mode & 0o777) == "0o755"
    assert oct((target / "a.prom").stat().st_mode & 0o777) == "0o644"

    out = run_main(capsys, {"path": str(target), "files": files(**{"a.prom": metrics(100, 2.0)})})
    assert out["changed"] is False
    # Written all the same: the collector-stale alert reads the timestamp.
    assert (target / "a.prom").read_text() == metrics(100, 2.0)

    out = run_main(capsys, {"path": str(target), "files": files(**{"a.prom": metrics(101, 3.0)})})
    assert out["changed"] is True
    assert [f["changed"] for f in out["files"]] == [True]
    assert not [p for p in os.listdir(target) if p.endswith(".tmp")]


def test_a_wrong_mode_on_the_file_or_the_directory_is_a_change_and_is_repaired(capsys, tmp_path):
    run_main(capsys, {"path": str(tmp_path), "files": files(**{"a.prom": metrics(1, 1.0)})})
    os.chmod(tmp_path / "a.prom", 0o600)
    out = run_main(capsys, {"path": str(tmp_path), "files": files(**{"a.prom": metrics(1, 2.0)})})
    assert out["changed"] is True
    assert oct((tmp_path / "a.prom").stat().st_mode & 0o777) == "0o644"
    os.chmod(tmp_path, 0o700)
    out = run_main(capsys, {"path": str(tmp_path), "files": files(**{"a.prom": metrics(1, 3.0)})})
    assert out["changed"] is True and out["dir_changed"] is True
    assert oct(tmp_path.stat().st_mode & 0o777) == "0o755"


def test_check_mode_reports_and_writes_nothing_with_the_diff_of_what_would_change(capsys, tmp_path):
    run_main(capsys, {"path": str(tmp_path), "files": files(**{"a.prom": metrics(1, 1.0), "b.prom": metrics(5, 1.0)})})
    out = run_main(
        capsys,
        {"path": str(tmp_path), "files": files(**{"a.prom": metrics(2, 2.0), "b.prom": metrics(5, 2.0)})},
        check=True,
        diff=True,
    )
    assert out["changed"] is True
    assert [(f["name"], f["changed"], f["written"]) for f in out["files"]] == [
        ("a.prom", True, False),
        ("b.prom", False, False),
    ]
    assert [d["after_header"] for d in out["diff"]] == [str(tmp_path / "a.prom")]
    assert out["diff"][0]["before"] == metrics(1, 1.0) and out["diff"][0]["after"] == metrics(2, 2.0)
    assert (tmp_path / "a.prom").read_text() == metrics(1, 1.0)

    missing = tmp_path / "not-yet"
    out = run_main(capsys, {"path": str(missing), "files": files(**{"a.prom": "x 1\n"})}, check=True)
    assert out["changed"] is True and not missing.exists()


def test_a_symlinked_directory_is_refused_and_nothing_is_written_where_it_points(capsys, tmp_path):
    elsewhere = tmp_path / "etc"  # e.g. /etc/sudoers.d in an attack
    elsewhere.mkdir()
    (tmp_path / "node-exporter").symlink_to(elsewhere)
    out = run_main(capsys, {"path": str(tmp_path / "node-exporter"), "files": files(**{"a.prom": "x 1\n"})})
    assert out["failed"] is True
    assert "is a symlink; refusing to write through it" in out["msg"]
    assert list(elsewhere.iterdir()) == []

    # A symlink higher up the path is refused as well.
    real = tmp_path / "real"
    (real / "textfile").mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    out = run_main(capsys, {"path": str(tmp_path / "link" / "textfile"), "files": files(**{"a.prom": "x 1\n"})})
    assert out["failed"] is True and "is a symlink" in out["msg"]
    assert list((real / "textfile").iterdir()) == []


def test_a_symlink_in_place_of_a_file_is_replaced_never_followed(capsys, tmp_path):
    secret = tmp_path / "shadow"
    secret.write_text("root:x:0\n")
    target = tmp_path / "textfile"
    target.mkdir()
    (target / "a.prom").symlink_to(secret)
    out = run_main(capsys, {"path": str(target), "files": files(**{"a.prom": metrics(1, 1.0)})})
    assert out["failed"] is True and "symlink" in out["msg"]  # refused to read through it
    assert secret.read_text() == "root:x:0\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"files": [{"name": "../evil.prom", "content": ""}]}, "files[0].name"),
        ({"files": [{"name": "metrics.txt", "content": ""}]}, "must be a plain file name ending in .prom"),
        ({"files": [{"name": ".hidden.prom", "content": ""}]}, "files[0].name"),
        ({"files": [{"name": "a.prom", "content": ""}, {"name": "a.prom", "content": ""}]}, "files[1].name"),
        ({"mode": "rw-r--r--"}, "mode: 'rw-r--r--' is not an octal mode"),
        ({"dir_mode": "99999"}, "dir_mode"),
        ({"owner": "no-such-user-nodefleet"}, "owner: no user 'no-such-user-nodefleet'"),
        ({"group": "no-such-group-nodefleet"}, "group: no group"),
        ({"path": "relative/dir"}, "path: 'relative/dir' must be an absolute path"),
    ],
)
def test_bad_input_fails_naming_the_option_before_anything_is_written(capsys, tmp_path, args, message):
    target = tmp_path / "textfile"
    base = {"path": str(target), "files": files(**{"a.prom": "x 1\n"})}
    base.update(args)
    out = run_main(capsys, base)
    assert out["failed"] is True
    assert message in out["msg"]
    assert not target.exists()
