# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Invariant (d) through the real CLI: a small seeded sample per module run as the one task of
a playbook with ``--diff -vvvv`` (tests/integration/ansible_cli.py), and no secret or
8-character piece of one anywhere in ansible-playbook's output (stdout and stderr, the JSON
result, the diff, the invocation). Slow (a few seconds a run), so two examples per module.
"""

from __future__ import annotations

import base64
import os

from ansible_collections.nodefleet.bitcoin.plugins.module_utils import tor
from ansible_collections.nodefleet.bitcoin.tests.integration.ansible_cli import run_collection_module_in_playbook
from ansible_collections.nodefleet.bitcoin.tests.integration.local_ports import free_ports
from ansible_collections.nodefleet.bitcoin.tests.property import harness as h
from ansible_collections.nodefleet.bitcoin.tests.property.fake_supervisord import FakeSupervisord
from hypothesis import given, settings
from hypothesis import strategies as st

ONION = "aaaqeayeaudaocajbifqydiob4ibceqtcqkrmfyydenbwha5dyp3kead.onion"
SAMPLE = settings(max_examples=h.examples(2, slow=True))
# Secrets without control characters: the CLI sample is about what reaches the output, not
# about refusing (a refused secret is masked just the same, see the in-process properties).
SECRET = h.secret_text(nasty=False).map(lambda s: s + "%'\"=;#x")


def check_no_leak(raw: str, result: dict, secrets: list[str]) -> None:
    found = h.leaks([raw, *h._strings(result)], secrets)
    assert not found, "secret pieces in ansible-playbook -vvvv output: %r" % found


def play(module, args, workdir, check=False):
    return run_collection_module_in_playbook(module, args, workdir, check=check, diff=True, verbosity=4)


@SAMPLE
@given(password=SECRET, check=st.booleans())
def test_bitcoind_instance_vvvv(password, check):
    with h.example_dir() as ex:
        args = {
            "name": "v1",
            "network": "regtest",
            "datadir": os.path.join(ex.root, "node"),
            "owner": "root",
            "group": "root",
            "onion_address": ONION,
            "check_ports": False,
            "rpc_users": [{"user": "alice", "password": password}],
        }
        result, raw = play("bitcoind_instance", args, ex.root, check)
        assert not result.get("failed"), result
        assert "rpcauth=alice:" in raw, "the diff is not in the output, so the check would prove nothing"
        check_no_leak(raw, result, [password])


@SAMPLE
@given(password=SECRET)
def test_rpcauth_derive_vvvv(password):
    with h.example_dir() as ex:
        result, raw = play("rpcauth_derive", {"user": "alice", "password": password}, ex.root)
        assert not result.get("failed"), result
        assert result["line"] in raw and "<localhost>" in raw, "not the -vvvv output of the task"
        check_no_leak(raw, result, [password])


@SAMPLE
@given(secret=SECRET, state=st.sampled_from(["present", "started"]))
def test_supervisord_program_vvvv(secret, state):
    with h.example_dir() as ex:
        os.mkdir(os.path.join(ex.root, "conf.d"))
        with FakeSupervisord(ex.root, [os.path.join(ex.root, "conf.d")]) as fake:
            args = {
                "name": "p1",
                "state": state,
                "command": "/bin/false" if state == "started" else "/bin/sleep 1000",
                "conf_dir": os.path.join(ex.root, "conf.d"),
                "environment": {"RPC_PASSWORD": secret},
                "server_url": fake.url,
                "wait_timeout": 1,
            }
            result, raw = play("supervisord_program", args, ex.root)
        check_no_leak(raw, result, [secret])


@SAMPLE
@given(body=st.binary(min_size=64, max_size=64))
def test_tor_hidden_service_vvvv_check_mode(body):
    key = base64.b64encode(tor.SECRET_KEY_HEADER + body).decode()
    with h.example_dir() as ex:
        for sub in ("torrc.d", "services"):
            os.mkdir(os.path.join(ex.root, sub))
        with open(os.path.join(ex.root, "torrc"), "w", encoding="utf-8") as handle:
            handle.write("%%include %s/torrc.d/*.conf\n" % ex.root)
        open(os.path.join(ex.root, "defaults"), "w").close()
        args = {
            "name": "s1",
            "ports": [{"port": 8333, "target": "127.0.0.1:8334"}],
            "service_dir": os.path.join(ex.root, "services", "s1"),
            "secret_key": key,
            "torrc_dir": os.path.join(ex.root, "torrc.d"),
            "torrc_file": os.path.join(ex.root, "torrc"),
            "tor_defaults_torrc": os.path.join(ex.root, "defaults"),
            "tor_user": "root",
            "tor_pid_file": os.path.join(ex.root, "tor.pid"),
        }
        result, raw = play("tor_hidden_service", args, ex.root, check=True)
        assert not result.get("failed"), result
        body_b64 = key[len(base64.b64encode(tor.SECRET_KEY_HEADER)) - 4 :]
        pieces = [body_b64[i : i + 8] for i in range(len(body_b64) - 7)]
        leaked = [p for p in pieces if p in raw]
        assert not leaked, "key material in ansible-playbook -vvvv output: %r" % leaked[:3]


@SAMPLE
@given(password=SECRET, user=st.sampled_from(["d", "o", "alice"]))
def test_bitcoind_info_vvvv(password, user):
    with h.example_dir() as ex:
        os.mkdir(os.path.join(ex.root, "conf.d"))
        (port,) = free_ports(1)
        args = {
            "instances": [
                {"name": "a", "rpc_host": "127.0.0.1", "rpc_port": port, "rpc_user": user, "rpc_password": password}
            ],
            "conf_dir": os.path.join(ex.root, "conf.d"),
            "datadir_root": os.path.join(ex.root, "btc"),
            "supervisor_url": "unix://%s/none.sock" % ex.root,
            "timeout": 1,
        }
        result, raw = play("bitcoind_info", args, ex.root)
        assert not result.get("failed"), result
        check_no_leak(raw, result, [password])
        assert [i["state"] for i in result["instances"]] == ["down"], result["instances"]
