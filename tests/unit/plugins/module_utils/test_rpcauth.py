# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Known-answer and behaviour tests for module_utils/rpcauth.py."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import rpcauth
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import ValidationError

# Bitcoin Core's own vector (test/functional/rpc_users.py): the line
#   rpcauth=rt:93648e835a54c573682c2eb19f882535$7681e9c5...f31144
# admits user "rt" with this password.
CORE_SALT = "93648e835a54c573682c2eb19f882535"
CORE_HASH = "7681e9c5b74bdd85e78166031d2058e1069b3ed7ed967c93fc63abba06f31144"
CORE_PASSWORD = "cA773lm788buwYe4g4WT+05pKyNruVKjQ25x3n0DQcM="
CORE_VALUE = f"rt:{CORE_SALT}${CORE_HASH}"

# Computed once with:
#   python3 -c 'import hmac,hashlib; print(hmac.new(b"0123456789abcdef0123456789abcdef",
#               b"s3cret", hashlib.sha256).hexdigest())'
#   python3 -c 'import hmac,hashlib; print(hmac.new(b"00000000000000000000000000000000",
#               "pässwörd ✓".encode(), hashlib.sha256).hexdigest())'
KNOWN_ANSWERS = [
    ("rt", CORE_PASSWORD, CORE_SALT, CORE_HASH),
    (
        "alice",
        "s3cret",
        "0123456789abcdef0123456789abcdef",
        "83930f25e67c425079c76c9e44879712553a17572d1d3ec1f221506fb778a425",
    ),
    (
        "bob",
        "pässwörd ✓",
        "00000000000000000000000000000000",
        "d5d0898b1fae9f19b5a9624af3974318f697f0981f66ed6eb53f85550fba5d86",
    ),
]


@pytest.mark.parametrize(("user", "password", "salt", "digest"), KNOWN_ANSWERS)
def test_generate_matches_known_answers(user, password, salt, digest):
    assert rpcauth.generate(user, password, salt) == f"{user}:{salt}${digest}"


@pytest.mark.parametrize(("user", "password", "salt", "digest"), KNOWN_ANSWERS)
def test_hmac_key_is_the_salt_hex_string_not_its_bytes(user, password, salt, digest):
    value = rpcauth.generate(user, password, salt)
    decoded_key = hmac.new(bytes.fromhex(salt), password.encode("utf-8"), hashlib.sha256).hexdigest()
    assert not value.endswith(decoded_key)
    string_key = hmac.new(salt.encode("utf-8"), password.encode("utf-8"), hashlib.sha256).hexdigest()
    assert value.endswith("$" + string_key)


def test_generate_draws_a_fresh_16_byte_salt_each_time():
    first = rpcauth.generate("alice", "pw-one")
    second = rpcauth.generate("alice", "pw-one")
    user, salt1, digest1 = rpcauth.parse(first)
    _user, salt2, _digest2 = rpcauth.parse(second)
    assert user == "alice"
    assert re.fullmatch(r"[0-9a-f]{32}", salt1)
    assert salt1 != salt2
    assert digest1 == hmac.new(salt1.encode(), b"pw-one", hashlib.sha256).hexdigest()


@pytest.mark.parametrize(
    ("value", "password", "expected"),
    [
        (CORE_VALUE, CORE_PASSWORD, True),
        ("rpcauth=" + CORE_VALUE, CORE_PASSWORD, True),
        (CORE_VALUE, CORE_PASSWORD + "x", False),
        (CORE_VALUE, "", False),
        (CORE_VALUE.replace("rt:", "rt2:"), CORE_PASSWORD, False),  # another user
        (CORE_VALUE[:-1] + "5", CORE_PASSWORD, False),  # tampered hash
        ("rt:" + CORE_SALT + "$" + CORE_HASH.upper(), CORE_PASSWORD, False),  # Core compares lowercase hex
        ("garbage", CORE_PASSWORD, False),
    ],
)
def test_verify(value, password, expected):
    assert rpcauth.verify(value, "rt", password) is expected


def test_verify_uses_constant_time_compare(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(rpcauth.hmac, "compare_digest", spy)
    assert rpcauth.verify(CORE_VALUE, "rt", CORE_PASSWORD)
    assert calls == [(CORE_HASH, CORE_HASH)]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (CORE_VALUE, ("rt", CORE_SALT, CORE_HASH)),
        ("rpcauth=" + CORE_VALUE, ("rt", CORE_SALT, CORE_HASH)),
        ("  rpcauth=" + CORE_VALUE + "  ", ("rt", CORE_SALT, CORE_HASH)),
    ],
)
def test_parse_accepts(value, expected):
    assert rpcauth.parse(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("rt" + CORE_SALT + "$" + CORE_HASH, "no ':'"),
        ("rt:" + CORE_SALT + CORE_HASH, "no '$'"),
        ("a:b:" + CORE_SALT + "$" + CORE_HASH, "':'"),
        (":" + CORE_SALT + "$" + CORE_HASH, "non-empty"),
        ("rt:" + CORE_SALT[:-1] + "$" + CORE_HASH, "salt"),
        ("rt:" + CORE_SALT.upper() + "$" + CORE_HASH, "salt"),
        ("rt:" + CORE_SALT + "$" + CORE_HASH[:-1], "hash"),
        ("rt:" + CORE_SALT + "$" + CORE_HASH + "00", "hash"),
        ("r t:" + CORE_SALT + "$" + CORE_HASH, "whitespace"),
        ("rt:" + CORE_SALT + "$" + CORE_HASH + "\nrpcpassword=x", "single line"),
        (None, "not a string"),
    ],
)
def test_parse_rejects(value, reason):
    with pytest.raises(ValidationError) as err:
        rpcauth.parse(value, "existing[0]")
    assert err.value.option == "existing[0]"
    assert reason in err.value.reason


@pytest.mark.parametrize(
    "user",
    # the last ones: every C0 control, DEL, and non-ASCII (the collection's one RPC user rule,
    # common.check_rpc_user: 1-64 printable ASCII characters)
    ["", "a:b", "a b", "a\nb", "a$b", "a#b", "a=b", "tab\there", "nul\x00x", "esc\x1b", "del\x7f", "cr\r", "ünï"]
    + ["c0-%02x-" % code + chr(code) for code in range(32)]
    + ["x" * 65],
)
def test_bad_user_names_rejected(user):
    with pytest.raises(ValidationError) as err:
        rpcauth.generate(user, "pw", "0" * 32)
    assert err.value.option == "user"


@pytest.mark.parametrize("user", ["alice", "rt", "monitor_1", "a.b-c", "x" * 64])
def test_good_user_names_accepted(user):
    assert rpcauth.generate(user, "pw", "0" * 32).startswith(user + ":")


def test_empty_password_rejected_without_echo():
    with pytest.raises(ValidationError) as err:
        rpcauth.generate("alice", "", "0" * 32)
    assert err.value.option == "password"


@pytest.mark.parametrize("salt", ["", "0" * 31, "0" * 33, "A" * 32, "g" * 32, "0" * 16])
def test_bad_salt_rejected(salt):
    with pytest.raises(ValidationError) as err:
        rpcauth.generate("alice", "pw", salt)
    assert err.value.option == "salt"


CONF = f"""# comment rpcauth=ignored:{"1" * 32}${"2" * 64}
rpcauth=alice:{"a" * 32}${"b" * 64}
rpcauth = bob:{"c" * 32}${"d" * 64}   # trailing comment
rpcauth=broken-value
#rpcauth=commented:{"e" * 32}${"f" * 64}
regtest.rpcauth=carol:{"0" * 32}${"1" * 64}

[regtest]
rpcauth={CORE_VALUE}
rpcport=18443
"""


def test_lines_from_conf_reads_every_section_and_skips_comments_and_junk():
    assert rpcauth.lines_from_conf(CONF) == [
        f"alice:{'a' * 32}${'b' * 64}",
        f"bob:{'c' * 32}${'d' * 64}",
        f"carol:{'0' * 32}${'1' * 64}",
        CORE_VALUE,
    ]


@pytest.mark.parametrize("text", [None, "", "server=1\n"])
def test_lines_from_conf_without_rpcauth(text):
    assert rpcauth.lines_from_conf(text) == []


def test_keep_or_derive_keeps_the_verifying_line():
    other = rpcauth.generate("rt", "old-password", "f" * 32)
    value, changed = rpcauth.keep_or_derive("rt", CORE_PASSWORD, [other, "rpcauth=" + CORE_VALUE])
    assert (value, changed) == (CORE_VALUE, False)


def test_keep_or_derive_with_several_lines_for_the_user_keeps_the_first_that_verifies():
    first = rpcauth.generate("rt", CORE_PASSWORD, "1" * 32)
    value, changed = rpcauth.keep_or_derive("rt", CORE_PASSWORD, [first, CORE_VALUE])
    assert (value, changed) == (first, False)


def test_keep_or_derive_never_keeps_another_users_line():
    # Same password and salt, different user: the hash is identical, the user is not.
    not_mine = rpcauth.generate("rt2", CORE_PASSWORD, CORE_SALT)
    value, changed = rpcauth.keep_or_derive("rt", CORE_PASSWORD, [not_mine])
    assert changed is True
    assert value.startswith("rt:")
    assert value != not_mine.replace("rt2:", "rt:")  # a fresh salt, not the other user's
    assert rpcauth.verify(value, "rt", CORE_PASSWORD)


def test_keep_or_derive_keeps_the_users_salt_after_a_password_change():
    value, changed = rpcauth.keep_or_derive("rt", "new-password", [CORE_VALUE])
    assert changed is True
    _user, salt, _digest = rpcauth.parse(value)
    assert salt == CORE_SALT
    assert rpcauth.verify(value, "rt", "new-password")
    assert not rpcauth.verify(value, "rt", CORE_PASSWORD)


def test_keep_or_derive_repairs_a_tampered_hash_to_the_identical_line():
    # Drift: one hex digit of the hash edited on the host. The password did not change, so
    # the line that comes back must be the original one (the chaos matrix checks this).
    tampered = CORE_VALUE[:-1] + ("0" if CORE_VALUE[-1] != "0" else "1")
    value, changed = rpcauth.keep_or_derive("rt", CORE_PASSWORD, ["rpcauth=" + tampered])
    assert (value, changed) == (CORE_VALUE, True)


@pytest.mark.parametrize(
    "existing",
    [
        [],  # no line for the user
        [rpcauth.generate("rt", "a", "1" * 32), rpcauth.generate("rt", "b", "2" * 32)],  # ambiguous
    ],
)
def test_keep_or_derive_draws_a_fresh_salt_without_exactly_one_line_of_the_user(existing):
    value, changed = rpcauth.keep_or_derive("rt", "new-password", existing)
    assert changed is True
    assert rpcauth.parse(value)[1] not in {"1" * 32, "2" * 32}
    assert rpcauth.verify(value, "rt", "new-password")


def test_keep_or_derive_with_salt_is_deterministic():
    salt = "0123456789abcdef0123456789abcdef"
    expected = rpcauth.generate("alice", "s3cret", salt)
    assert rpcauth.keep_or_derive("alice", "s3cret", [], salt=salt) == (expected, True)
    assert rpcauth.keep_or_derive("alice", "s3cret", ["rpcauth=" + expected], salt=salt) == (expected, False)
    # A different verifying line does not stop a requested salt from being used.
    other = rpcauth.generate("alice", "s3cret", "9" * 32)
    assert rpcauth.keep_or_derive("alice", "s3cret", [other], salt=salt) == (expected, True)


def test_keep_or_derive_skips_malformed_existing_values():
    value, changed = rpcauth.keep_or_derive("rt", CORE_PASSWORD, ["nonsense", CORE_VALUE])
    assert (value, changed) == (CORE_VALUE, False)
