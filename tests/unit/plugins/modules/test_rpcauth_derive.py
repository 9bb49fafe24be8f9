# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the rpcauth_derive module (pure derive() and main() in process)."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import rpcauth
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import ValidationError
from ansible_collections.nodefleet.bitcoin.plugins.modules import rpcauth_derive

SALT = "0123456789abcdef0123456789abcdef"
PASSWORD = "Correct-Horse-0917"


def run_main(capsys, args: dict) -> dict:
    with patch_module_args(args), pytest.raises(SystemExit):
        rpcauth_derive.main()
    return json.loads(capsys.readouterr().out)


def expected_value(user, password, salt):
    return f"{user}:{salt}${hmac.new(salt.encode(), password.encode(), hashlib.sha256).hexdigest()}"


@pytest.mark.parametrize(
    ("params", "conf_text", "expected_changed"),
    [
        ({"user": "alice", "password": PASSWORD, "salt": SALT}, None, True),
        (
            {
                "user": "alice",
                "password": PASSWORD,
                "salt": SALT,
                "existing": [expected_value("alice", PASSWORD, SALT)],
            },
            None,
            False,
        ),
        (
            {"user": "alice", "password": PASSWORD, "salt": SALT},
            "rpcauth=" + expected_value("alice", PASSWORD, SALT),
            False,
        ),
    ],
)
def test_derive_with_salt_is_deterministic(params, conf_text, expected_changed):
    result = rpcauth_derive.derive(params, conf_text)
    value = expected_value("alice", PASSWORD, SALT)
    assert result == {"changed": expected_changed, "rpcauth": value, "line": "rpcauth=" + value, "user": "alice"}


def test_derive_keeps_a_verifying_line_from_the_conf_file():
    kept = rpcauth.generate("alice", PASSWORD)
    conf = f"chain=regtest\n[regtest]\nrpcauth={kept}\n"
    result = rpcauth_derive.derive({"user": "alice", "password": PASSWORD}, conf)
    assert (result["rpcauth"], result["changed"]) == (kept, False)


def test_derive_ignores_other_users_and_draws_a_new_salt():
    others = [rpcauth.generate("bob", PASSWORD, SALT)]
    result = rpcauth_derive.derive({"user": "alice", "password": PASSWORD, "existing": others}, None)
    assert result["changed"] is True
    assert rpcauth.parse(result["rpcauth"])[1] != SALT
    assert rpcauth.verify(result["rpcauth"], "alice", PASSWORD)


@pytest.mark.parametrize(
    ("params", "option"),
    [
        ({"user": "a:b", "password": PASSWORD}, "user"),
        ({"user": "a b", "password": PASSWORD}, "user"),
        ({"user": "", "password": PASSWORD}, "user"),
        ({"user": "alice", "password": ""}, "password"),
        ({"user": "alice", "password": PASSWORD, "salt": "XYZ"}, "salt"),
        ({"user": "alice", "password": PASSWORD, "existing": ["alice:short$hash"]}, "existing[0]"),
    ],
)
def test_derive_rejects(params, option):
    with pytest.raises(ValidationError) as err:
        rpcauth_derive.derive(params, None)
    assert err.value.option == option


def test_main_returns_the_line_and_never_the_password(capsys):
    result = run_main(capsys, {"user": "alice", "password": PASSWORD, "salt": SALT})
    assert result["line"] == "rpcauth=" + expected_value("alice", PASSWORD, SALT)
    assert result["changed"] is True
    assert PASSWORD not in json.dumps(result)


def test_main_reads_conf_file_and_reports_unchanged(capsys, tmp_path):
    kept = rpcauth.generate("alice", PASSWORD)
    conf = tmp_path / "bitcoin.conf"
    conf.write_text(f"rpcauth={kept}\n")
    before = conf.read_bytes()
    result = run_main(capsys, {"user": "alice", "password": PASSWORD, "conf_file": str(conf)})
    assert (result["rpcauth"], result["changed"]) == (kept, False)
    assert conf.read_bytes() == before


def test_main_missing_conf_file_counts_as_no_lines(capsys, tmp_path):
    result = run_main(capsys, {"user": "alice", "password": PASSWORD, "conf_file": str(tmp_path / "nope.conf")})
    assert result["changed"] is True
    assert not (tmp_path / "nope.conf").exists()


def test_main_fails_naming_the_option_without_the_password(capsys):
    result = run_main(capsys, {"user": "bad:user", "password": PASSWORD})
    assert result["failed"] is True
    assert result["msg"].startswith("user: ")
    assert PASSWORD not in json.dumps(result)


def test_main_unreadable_conf_file_fails_naming_conf_file(capsys, tmp_path):
    result = run_main(capsys, {"user": "alice", "password": PASSWORD, "conf_file": str(tmp_path)})
    assert result["failed"] is True
    assert result["msg"].startswith("conf_file: ")
