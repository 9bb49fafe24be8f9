# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""rpcauth_derive hardening (issue 17): every bad input is a clean failure naming the option.

- a salt with a trailing newline is refused (``$`` let it through and the newline came back
  inside the returned line);
- NUL and every other C0 control in the user name or in an ``existing`` value is refused;
- a NUL in ``conf_file`` is a clean failure (it was an unhandled ValueError), and a symlink in
  the conf_file path is refused (the module runs as root and returns lines of the file);
- ``fail_json`` is never called while an exception is being handled (ansible-core 2.19 then
  attaches that exception's traceback to the result).
"""

from __future__ import annotations

import json
import os
import sys

import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import rpcauth
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import ValidationError
from ansible_collections.nodefleet.bitcoin.plugins.modules import rpcauth_derive

SALT = "0123456789abcdef0123456789abcdef"
PASSWORD = "Hardening-Secret-77aa"


class Failed(Exception):
    pass


@pytest.fixture
def failures(monkeypatch):
    """fail_json replaced: records (msg, whether an exception was being handled)."""
    calls = []

    def fail_json(self, **kwargs):
        calls.append((kwargs["msg"], sys.exc_info()[0] is not None))
        raise Failed(kwargs["msg"])

    def exit_json(self, **kwargs):
        raise AssertionError(f"expected a failure, got {kwargs}")

    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)
    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    return calls


def fail_main(failures, args: dict) -> str:
    with patch_module_args(args), pytest.raises(Failed):
        rpcauth_derive.main()
    assert len(failures) == 1
    msg, in_except = failures[0]
    assert not in_except, f"fail_json called inside an except block for {msg!r}"
    assert PASSWORD not in msg
    return msg


@pytest.mark.parametrize("salt", [SALT + "\n", SALT + "\r", "\n" + SALT, SALT + " ", SALT.upper(), SALT[:-1]])
def test_salt_must_be_exactly_32_lowercase_hex(salt):
    with pytest.raises(ValidationError) as err:
        rpcauth_derive.derive({"user": "alice", "password": PASSWORD, "salt": salt}, None)
    assert err.value.option == "salt"


def test_salt_with_trailing_newline_does_not_come_back_in_the_line(failures):
    msg = fail_main(failures, {"user": "alice", "password": PASSWORD, "salt": SALT + "\n"})
    assert msg.startswith("salt: ")


@pytest.mark.parametrize("char", [chr(code) for code in range(32)] + ["\x7f"])
def test_control_characters_in_the_user_are_refused(char):
    with pytest.raises(ValidationError) as err:
        rpcauth_derive.derive({"user": f"al{char}ice", "password": PASSWORD}, None)
    assert err.value.option == "user"


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\x7f", "\x01", "\x08"])
def test_control_characters_in_existing_users_are_refused(char):
    line = rpcauth.generate("alice", PASSWORD, SALT).replace("alice", f"al{char}ice", 1)
    with pytest.raises(ValidationError) as err:
        rpcauth_derive.derive({"user": "alice", "password": PASSWORD, "existing": [line]}, None)
    assert err.value.option == "existing[0]"


def test_conf_lines_with_control_characters_in_the_user_never_match():
    line = rpcauth.generate("alice", PASSWORD, SALT).replace("alice", "al\x00ice", 1)
    assert rpcauth.lines_from_conf("rpcauth=" + line + "\n") == []


def test_nul_in_conf_file_is_a_clean_failure(failures):
    msg = fail_main(failures, {"user": "alice", "password": PASSWORD, "conf_file": "/etc/bit\x00coin.conf"})
    assert msg.startswith("conf_file: ") and "control" in msg


@pytest.mark.parametrize("conf_file", ["relative/bitcoin.conf", "/srv/../etc/bitcoin.conf", "/x/\x1b[31m"])
def test_conf_file_must_be_a_clean_absolute_path(failures, conf_file):
    assert fail_main(failures, {"user": "alice", "password": PASSWORD, "conf_file": conf_file}).startswith(
        "conf_file: "
    )


def test_conf_file_symlink_is_refused(failures, tmp_path):
    secret = tmp_path / "root-only.conf"
    secret.write_text("rpcauth=" + rpcauth.generate("alice", PASSWORD, SALT) + "\n")
    os.chmod(secret, 0o600)
    link = tmp_path / "bitcoin.conf"
    link.symlink_to(secret)
    msg = fail_main(failures, {"user": "alice", "password": PASSWORD, "conf_file": str(link)})
    assert msg.startswith("conf_file: ") and "symlink" in msg
    assert SALT not in msg


def test_conf_file_under_a_symlinked_directory_is_refused(failures, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "bitcoin.conf").write_text("rpcauth=" + rpcauth.generate("alice", PASSWORD, SALT) + "\n")
    (tmp_path / "link").symlink_to(real)
    msg = fail_main(
        failures, {"user": "alice", "password": PASSWORD, "conf_file": str(tmp_path / "link" / "bitcoin.conf")}
    )
    assert msg.startswith("conf_file: ") and "symlink" in msg


def test_conf_file_that_is_not_utf8_is_a_clean_failure(failures, tmp_path):
    conf = tmp_path / "bitcoin.conf"
    conf.write_bytes(b"rpcauth=\xff\xfe\n")
    assert fail_main(failures, {"user": "alice", "password": PASSWORD, "conf_file": str(conf)}).startswith(
        "conf_file: "
    )


@pytest.mark.parametrize(
    "args",
    [
        {"user": "bad:user", "password": PASSWORD},
        {"user": "alice", "password": PASSWORD, "salt": "xyz"},
        {"user": "alice", "password": PASSWORD, "existing": ["alice:short$hash"]},
    ],
)
def test_fail_json_is_never_called_inside_an_except_block(failures, args):
    fail_main(failures, args)


def test_a_regular_conf_file_still_works(capsys, tmp_path):
    kept = rpcauth.generate("alice", PASSWORD)
    conf = tmp_path / "bitcoin.conf"
    conf.write_text(f"rpcauth={kept}\n")
    with patch_module_args({"user": "alice", "password": PASSWORD, "conf_file": str(conf)}), pytest.raises(SystemExit):
        rpcauth_derive.main()
    result = json.loads(capsys.readouterr().out)
    assert (result["rpcauth"], result["changed"]) == (kept, False)
