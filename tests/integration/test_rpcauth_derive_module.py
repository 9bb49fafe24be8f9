# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""rpcauth_derive run for real through ``ansible`` on this machine (writes nothing)."""

from __future__ import annotations

import hashlib
import hmac
import os
import sys

import pytest
from ansible_collections.nodefleet.bitcoin.tests.integration.ansible_cli import run_collection_module

pytestmark = pytest.mark.integration

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ANSIBLE = os.path.join(os.path.dirname(sys.executable), "ansible")
PASSWORD = "Derive-Secret-51c0ffee"
SALT = "0123456789abcdef0123456789abcdef"


def run_module(args: dict, check: bool = False, diff: bool = False, verbosity: int = 0):
    """Run nodefleet.bitcoin.rpcauth_derive via the ansible CLI; return (result, raw stdout+stderr)."""
    return run_collection_module("rpcauth_derive", args, check=check, diff=diff, verbosity=verbosity)


def core_hash(salt: str, password: str) -> str:
    # Bitcoin Core's share/rpcauth/rpcauth.py, computed independently of the module.
    return hmac.new(salt.encode("utf-8"), password.encode("utf-8"), hashlib.sha256).hexdigest()


@pytest.mark.parametrize("check", [False, True])
def test_known_answer_with_salt(check):
    result, out = run_module({"user": "alice", "password": PASSWORD, "salt": SALT}, check=check, diff=True)
    value = f"alice:{SALT}${core_hash(SALT, PASSWORD)}"
    assert result["rpcauth"] == value
    assert result["line"] == "rpcauth=" + value
    assert result["user"] == "alice"
    assert result["changed"] is True
    assert PASSWORD not in out


@pytest.mark.parametrize("verbosity", [0, 4])
def test_password_never_in_output(verbosity):
    _result, out = run_module({"user": "alice", "password": PASSWORD}, verbosity=verbosity)
    assert PASSWORD not in out


def test_keeps_a_verifying_line_from_conf_file_and_rotates_after_password_change(tmp_path):
    first, _out = run_module({"user": "alice", "password": PASSWORD})
    assert first["changed"] is True
    conf = tmp_path / "bitcoin.conf"
    conf.write_text("chain=regtest\n[regtest]\nrpcauth=bob:{}${}\n{}\n".format(SALT, "0" * 64, first["line"]))
    before = conf.read_bytes()

    kept, _out = run_module({"user": "alice", "password": PASSWORD, "conf_file": str(conf)})
    assert kept["changed"] is False
    assert kept["rpcauth"] == first["rpcauth"]

    rotated, _out = run_module({"user": "alice", "password": PASSWORD + "-new", "conf_file": str(conf)})
    assert rotated["changed"] is True
    salt = rotated["rpcauth"].split(":", 1)[1].split("$", 1)[0]
    assert rotated["rpcauth"] != first["rpcauth"]
    assert salt == first["rpcauth"].split(":", 1)[1].split("$", 1)[0], "alice's one line keeps its salt"
    assert rotated["rpcauth"].endswith("$" + core_hash(salt, PASSWORD + "-new"))
    assert conf.read_bytes() == before, "the module writes nothing"


def test_existing_lines_of_another_user_are_never_kept():
    bob = f"rpcauth=bob:{SALT}${core_hash(SALT, PASSWORD)}"
    result, _out = run_module({"user": "alice", "password": PASSWORD, "existing": [bob]})
    assert result["changed"] is True
    assert result["rpcauth"].startswith("alice:")
    assert SALT not in result["rpcauth"]


BAD = [
    ("user with colon", {"user": "al:ice", "password": PASSWORD}, "user: "),
    ("user with space", {"user": "al ice", "password": PASSWORD}, "user: "),
    ("empty password", {"user": "alice", "password": ""}, "password: "),
    ("uppercase salt", {"user": "alice", "password": PASSWORD, "salt": SALT.upper()}, "salt: "),
    ("short salt", {"user": "alice", "password": PASSWORD, "salt": "abc"}, "salt: "),
    ("malformed existing", {"user": "alice", "password": PASSWORD, "existing": ["alice:zz$yy"]}, "existing[0]: "),
]


@pytest.mark.parametrize(("label", "args", "prefix"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_fails_naming_the_option(label, args, prefix):
    result, out = run_module(args)
    assert result.get("failed") is True, label
    assert result["msg"].startswith(prefix), result["msg"]
    assert "Traceback" not in out
    assert PASSWORD not in out
