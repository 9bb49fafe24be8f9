# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 11 (credentials): rpcauth rotation with overlap - one line per password of a user
(``rpc_users[].previous_passwords``), stable salts, the old line dropped when its password goes."""

from __future__ import annotations

import pytest
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import bitcoin_conf, rpcauth
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import ValidationError

ONION = "aaaqeayeaudaocajbifqydiob4ibceqtcqkrmfyydenbwha5dyp3kead.onion"
OLD = "old-Secret-71a"
NEW = "new-Secret-93c"
OLDER = "older-Secret-55d"


def render(rpc_users, current=None, **extra):
    n = bitcoin_conf.validate({"name": "r1", "onion_address": ONION, "rpc_users": rpc_users, **extra})
    return bitcoin_conf.render(bitcoin_conf.with_rpc_users(n, current))


def alice(password, previous=None):
    entry = {"user": "alice", "password": password}
    if previous is not None:
        entry["previous_passwords"] = previous
    return [entry]


def opens(values, password):
    return [v for v in values if rpcauth.verify(v, "alice", password)]


def test_a_rotation_keeps_the_old_line_and_adds_one_for_the_new_password():
    before = render(alice(OLD))
    (old_line,) = rpcauth.lines_from_conf(before)
    during = render(alice(NEW, [OLD]), before)
    values = rpcauth.lines_from_conf(during)
    assert len(values) == 2
    assert opens(values, NEW) == [values[0]]  # the current password's line comes first
    assert values[1] == old_line  # the old line is kept byte for byte
    assert during != before  # a bitcoin.conf change: the role makes a restart due
    assert NEW not in during and OLD not in during


def test_the_rotation_window_is_idempotent():
    before = render(alice(OLD))
    during = render(alice(NEW, [OLD]), before)
    assert render(alice(NEW, [OLD]), during) == during
    assert render(alice(NEW, [OLD]), render(alice(NEW, [OLD]), during)) == during


def test_dropping_the_old_password_drops_only_its_line():
    before = render(alice(OLD))
    during = render(alice(NEW, [OLD]), before)
    new_line = opens(rpcauth.lines_from_conf(during), NEW)[0]
    after = render(alice(NEW), during)
    assert rpcauth.lines_from_conf(after) == [new_line]  # same salt as during the window
    assert after != during
    assert render(alice(NEW), after) == after


def test_several_previous_passwords_get_a_line_each():
    text = render(alice(NEW, [OLD, OLDER]))
    values = rpcauth.lines_from_conf(text)
    assert [len(opens(values, p)) for p in (NEW, OLD, OLDER)] == [1, 1, 1]
    assert len({rpcauth.parse(v)[1] for v in values}) == 3  # every line its own salt
    assert render(alice(NEW, [OLD, OLDER]), text) == text


def test_an_edited_line_during_the_window_is_repaired_to_the_identical_line():
    during = render(alice(NEW, [OLD]))
    new_line = opens(rpcauth.lines_from_conf(during), NEW)[0]
    user, salt, _digest = rpcauth.parse(new_line)
    tampered = during.replace(new_line, f"{user}:{salt}${'0' * 64}")
    assert render(alice(NEW, [OLD]), tampered) == during


def test_other_users_lines_are_never_taken_for_a_rotation():
    bob = rpcauth.generate("bob", OLD, "c" * 32)
    values = rpcauth.keep_or_derive_all("alice", [NEW, OLD], [bob])[0]
    assert all(v.startswith("alice:") for v in values)
    assert "c" * 32 not in "".join(values)


def test_keep_or_derive_all_reports_changed_only_when_it_derived():
    values, changed = rpcauth.keep_or_derive_all("alice", [NEW, OLD], [])
    assert changed is True
    assert rpcauth.keep_or_derive_all("alice", [NEW, OLD], values) == (values, False)
    assert rpcauth.keep_or_derive_all("alice", [NEW], values) == ([values[0]], False)


def test_keep_or_derive_with_one_password_is_the_same_rule():
    line = rpcauth.generate("alice", OLD, "d" * 32)
    # a plain password change keeps the user's one salt, as before the rotation option existed
    value, changed = rpcauth.keep_or_derive("alice", NEW, [line])
    assert changed and rpcauth.parse(value)[1] == "d" * 32 and rpcauth.verify(value, "alice", NEW)


@pytest.mark.parametrize(
    ("previous", "option", "reason"),
    [
        ([NEW], "rpc_users[0].previous_passwords[0]", "the current password"),
        ([OLD, OLD], "rpc_users[0].previous_passwords[1]", "listed twice"),
        ([OLD, ""], "rpc_users[0].previous_passwords[1]", "non-empty"),
        ("not-a-list", "rpc_users[0].previous_passwords", "list of passwords"),
    ],
)
def test_bad_previous_passwords_are_refused_naming_the_option_never_the_password(previous, option, reason):
    with pytest.raises(ValidationError) as err:
        render(alice(NEW, previous))
    text = str(err.value)
    assert text.startswith(option + ": ") and reason in text
    assert NEW not in text and OLD not in text


def test_a_user_listed_twice_points_to_previous_passwords():
    with pytest.raises(ValidationError) as err:
        render(alice(NEW) + alice(OLD))
    assert str(err.value).startswith("rpc_users[1].user: ") and "previous_passwords" in str(err.value)


def test_the_status_playbooks_targets_use_the_current_password():
    """status.yml builds bitcoind_info's targets with fleet_status_targets: during a rotation window
    the collection's own RPC use must log in with the new password, not an old one."""
    from ansible_collections.nodefleet.bitcoin.plugins.filter.fleet_status import fleet_status_targets
    from ansible_collections.nodefleet.bitcoin.plugins.filter.port_plan import plan_ports

    instances = [{"name": "r1", "network": "regtest", "rpc_users": alice(NEW, [OLD])}]
    (target,) = fleet_status_targets(instances, plan_ports(instances, base=20000, slot_size=10, slots=100))
    assert (target["rpc_user"], target["rpc_password"]) == ("alice", NEW)
