"""playbooks/status.yml's writes on the node, run for real (connection=local) with a fake
bitcoind_info: the Prometheus textfile never goes through a symlinked directory (issue 10.4)."""

from __future__ import annotations

import json
import os

from tests.integration.role_harness import REPO, run_play, stub_collection

FAKE_INFO = r"""#!/usr/bin/python
import json
print(json.dumps({"changed": False, "instances": [], "supervisord": {"state": "RUNNING"}}))
"""
STATUS = [{"ansible.builtin.import_playbook": os.path.join(REPO, "playbooks", "status.yml")}]


def run_status(tmp_path, textfile_dir):
    coll = stub_collection(tmp_path / "coll", {}, {"bitcoind_info": FAKE_INFO})
    extra = {
        "nodefleet_status_become": False,
        "nodefleet_status_textfile_dir": str(textfile_dir),
        "nodefleet_status_json": str(tmp_path / "report" / "fleet.json"),
    }
    return run_play(tmp_path, coll, STATUS, {}, extra_args=("-e", json.dumps(extra)))


def test_textfile_is_written_into_a_real_directory(tmp_path):
    rc, out, _ = run_status(tmp_path, tmp_path / "textfile")
    assert rc == 0, out
    assert (tmp_path / "textfile" / "nodefleet_bitcoind.prom").is_file()


def test_textfile_dir_that_is_a_symlink_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"  # e.g. /etc/sudoers.d in an attack
    elsewhere.mkdir()
    (tmp_path / "textfile").symlink_to(elsewhere)
    rc, out, _ = run_status(tmp_path, tmp_path / "textfile")
    assert rc != 0, out
    assert "already exists as a link" in out, out
    assert list(elsewhere.iterdir()) == []
