# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The node collector (roles/monitoring/files/nodefleet_collector.py) on this machine.

The collector is installed into a temp dir the way the monitoring role installs it on a node
(the zip application the role's builder makes: the script + the module_utils listed in
roles/monitoring/vars/main.yml + empty __init__.py files) and run with ``python -I -S``: no
site-packages, so no Ansible - as on a node. Stand-in
daemons run under a real supervisord (tests/integration/test_bitcoind_info.py's helpers).

- it writes the same metrics as the module + render_textfile (the status playbook's path), apart
  from the values that move with the clock;
- a stopped instance is ``up 0`` at the next run and ``up 1`` after it started again;
- the textfile is replaced atomically, root-owned 0644 when run as root, never through a
  symlink (a symlinked directory is refused, a symlink at the file name is replaced);
- the textfile passes ``promtool check metrics``;
- invalid options still give a textfile with ``status_ok 0`` and the collector timestamp, exit 1;
- no password in the textfile, stdout or stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import metrics
from ansible_collections.nodefleet.bitcoin.tests.integration.supervisord_fixture import (  # noqa: F401
    supervisord,
)
from ansible_collections.nodefleet.bitcoin.tests.integration.test_bitcoind_info import (
    NETWORK,
    RPC_USER,
    STANDIN,
    password_for,
    run_info,
    wait_all_up,
    write_instance,
)
from ansible_collections.nodefleet.bitcoin.tests.unit.roles.test_collector_zipapp import build as build_collector

from tests.integration import promtool  # the same import as test_monitoring_files.py

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not os.environ.get("CI") and not os.path.exists(STANDIN),
        reason=f"outside CI only: the stand-in daemon {STANDIN} is not in this tree",
    ),
]

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "monitoring"
HOST = "node1"


def install_collector(root: Path) -> Path:
    """What the role's collector.yml does, into ``root``: the zip application built by the role's
    builder from the module_utils list in vars/main.yml; returns the archive's path."""
    role_vars = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    root.mkdir(parents=True, exist_ok=True)
    built = build_collector(root)
    assert built.returncode == 0, built.stderr
    script = Path(json.loads(built.stdout)["path"])
    assert script.name == role_vars["monitoring__collector_archive"]
    return script


def targets(facts: list) -> list:
    """The instances the role writes into the config (fleet_status_targets' shape)."""
    return [
        {
            "name": f["name"],
            "rpc_port": f["rpc_port"],
            "datadir": f["datadir"],
            "network": NETWORK,
            "tor_mode": "tor-only",
            "rpc_user": RPC_USER,
            "rpc_password": password_for(f["name"]),
        }
        for f in facts
    ]


class Collector:
    def __init__(self, tmp_path: Path, sv, instances: list):
        self.script = install_collector(tmp_path / "collector")
        self.textdir = tmp_path / "textfile"
        self.textdir.mkdir()
        self.textfile = self.textdir / "nodefleet_bitcoind.prom"
        self.config = tmp_path / "collector.json"
        self.write_config(
            {
                "instances": instances,
                "timeout": 3.0,
                "supervisor_url": sv.server_url,
                "conf_dir": sv.conf_dir,
                "datadir_root": "/nonexistent",
            }
        )

    def write_config(self, options: dict, textfile: Path | None = None) -> None:
        config = {"host": HOST, "textfile": str(textfile or self.textfile), "options": options}
        self.config.write_text(json.dumps(config))
        self.config.chmod(0o600)

    def run(self, *extra) -> subprocess.CompletedProcess:
        # -I -S: no PYTHONPATH, no site-packages (no Ansible), run from another directory.
        return subprocess.run(
            [sys.executable, "-I", "-S", str(self.script), "--config", str(self.config), *extra],
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
            check=False,
        )


def samples(text: str) -> dict:
    """(name, labels as a sorted tuple) -> value, from textfile text."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def up_values(text: str) -> dict:
    return {
        dict(labels)["bitcoind"]: value
        for (name, labels), value in samples(text).items()
        if name == "nodefleet_bitcoind_up"
    }


def test_the_collector_writes_what_the_module_and_render_textfile_give(supervisord, tmp_path):  # noqa: F811
    sv = supervisord
    facts = [
        write_instance(sv, name, str(tmp_path / "home"), impl=impl) for name, impl in (("ca", "core"), ("kb", "knots"))
    ]
    sv.update()
    wait_all_up(sv, ["ca", "kb"])
    collector = Collector(tmp_path, sv, targets(facts))

    before = time.time()
    done = collector.run()
    after = time.time()
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""
    text = collector.textfile.read_text()
    got = samples(text)
    stamp = got[("nodefleet_collector_last_run_timestamp_seconds", (("host", HOST),))]
    assert before - 1 <= stamp <= after + 1
    assert up_values(text) == {"ca": 1.0, "kb": 1.0}
    best = {
        dict(k[1])["bitcoind"]: v for k, v in got.items() if k[0] == "nodefleet_bitcoind_best_block_timestamp_seconds"
    }
    assert set(best) == {"ca", "kb"} and all(v > 1_000_000_000 for v in best.values())
    assert os.stat(collector.textfile).st_mode & 0o777 == 0o644
    assert [p.name for p in collector.textdir.iterdir()] == [collector.textfile.name]  # no temp file left
    for name in ("ca", "kb"):
        assert password_for(name) not in text
    rc, out = promtool.check_metrics(text)  # Prometheus's own linter on what node_exporter will serve
    assert rc == 0, out

    # the status playbook's path: the module (through Ansible) + render_textfile
    module_result, _, _ = run_info(sv, ["ca", "kb"], timeout=3.0, extra={"instances": targets(facts)})
    expected = metrics.render_textfile(HOST, module_result, timestamp=stamp)
    assert metrics.stable_text(text) == metrics.stable_text(expected)


def test_a_stopped_instance_is_down_at_the_next_run_and_up_after_its_start(supervisord, tmp_path):  # noqa: F811
    sv = supervisord
    facts = [write_instance(sv, name, str(tmp_path / "home")) for name in ("sa", "sb")]
    sv.update()
    wait_all_up(sv, ["sa", "sb"])
    collector = Collector(tmp_path, sv, targets(facts))
    assert collector.run().returncode == 0
    assert up_values(collector.textfile.read_text()) == {"sa": 1.0, "sb": 1.0}

    client = sv.client()
    client.call("stopProcess", "bitcoind-sa", True)
    assert collector.run().returncode == 0
    text = collector.textfile.read_text()
    assert up_values(text) == {"sa": 0.0, "sb": 1.0}
    state = samples(text)
    down = [k for k, v in state.items() if k[0] == "nodefleet_bitcoind_state" and v == 1 and ("bitcoind", "sa") in k[1]]
    assert [dict(k[1])["state"] for k in down] == ["down"]

    client.call("startProcess", "bitcoind-sa", True)
    wait_all_up(sv, ["sa", "sb"])
    assert collector.run().returncode == 0
    assert up_values(collector.textfile.read_text()) == {"sa": 1.0, "sb": 1.0}


def test_the_textfile_is_never_written_through_a_symlink(supervisord, tmp_path):  # noqa: F811
    sv = supervisord
    collector = Collector(tmp_path, sv, [])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "victim.prom"
    victim.write_text("keep\n")

    # a symlink at the file name is replaced by the new file, the target is untouched
    collector.textfile.symlink_to(victim)
    assert collector.run().returncode == 0, collector.run().stderr
    assert not collector.textfile.is_symlink() and "nodefleet_bitcoind_status_ok" in collector.textfile.read_text()
    assert victim.read_text() == "keep\n"

    # a symlinked directory anywhere in the path is refused (exit 2), nothing written there
    linked = tmp_path / "linked"
    linked.symlink_to(elsewhere)
    collector.write_config({"instances": [], "supervisor_url": ""}, textfile=linked / "nodefleet_bitcoind.prom")
    done = collector.run()
    assert done.returncode == 2
    assert "symlink" in done.stderr and "cannot write" in done.stderr
    assert sorted(p.name for p in elsewhere.iterdir()) == ["victim.prom"]


def test_invalid_options_still_write_a_textfile_that_says_so(supervisord, tmp_path):  # noqa: F811
    sv = supervisord
    collector = Collector(tmp_path, sv, [])
    secret = "pw-never-printed-Zq8"
    collector.write_config({"instances": [{"name": "a1", "network": "mainnet", "rpc_password": secret}]})
    done = collector.run()
    assert done.returncode == 1
    assert "instances[0].network" in done.stderr
    text = collector.textfile.read_text()
    got = samples(text)
    assert got[("nodefleet_bitcoind_status_ok", (("host", HOST),))] == 0
    assert ("nodefleet_collector_last_run_timestamp_seconds", (("host", HOST),)) in got
    assert secret not in done.stderr + done.stdout + text

    printed = collector.run("--print")
    assert printed.returncode == 1 and "nodefleet_bitcoind_status_ok" in printed.stdout
    assert secret not in printed.stdout + printed.stderr


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "cannot read"),
        ("{", "not JSON"),
        ('{"host": "", "textfile": "/x.prom"}', "host"),
        ('{"host": "h", "textfile": "relative.prom"}', "textfile"),
        ('{"host": "h", "textfile": "/x.txt"}', "textfile"),
    ],
)
def test_a_bad_config_exits_2_saying_why(tmp_path, content, reason):
    script = install_collector(tmp_path / "collector")
    config = tmp_path / "collector.json"
    if content is not None:
        config.write_text(content)
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(script), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert reason in done.stderr
