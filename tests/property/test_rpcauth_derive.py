# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Property tests for rpcauth_derive (issue 17): inputs generated from its argument_spec.

Per example: (a) refused naming an option, or accepted, never an unhandled exception; (b) the
module writes nothing (the example tree, a victim file behind a symlinked conf_file, are
unchanged); (c) accepted: ``line`` is one line for every parser (Core's getline model, and
``str.splitlines``), Core's rpcauth split (``httprpc.cpp``: exactly one ':' then one '$')
gives back exactly the user, a 32-hex salt (the given one, if any) and the HMAC of the
password, computed here independently; an existing value that verifies is kept; (d) no
password or 8-character piece of one anywhere in the output.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from ansible_collections.nodefleet.bitcoin.plugins.module_utils import rpcauth
from ansible_collections.nodefleet.bitcoin.plugins.modules import rpcauth_derive
from ansible_collections.nodefleet.bitcoin.tests.property import harness as h
from hypothesis import given, settings
from hypothesis import strategies as st

SPEC = h.module_spec(rpcauth_derive)["argument_spec"]

USER = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._@!-]{0,10}\Z")
SALT = st.from_regex(r"\A[0-9a-f]{32}\Z")


def core_hmac(salt: str, password: str) -> str:
    return hmac.new(salt.encode(), password.encode(), hashlib.sha256).hexdigest()


@st.composite
def existing_value(draw, user, password):
    """An rpcauth value: for this user and password, for this user with another password, or another user's."""
    salt = draw(SALT)
    kind = draw(st.sampled_from(["match", "stale", "other"]))
    if kind == "match":
        value = "%s:%s$%s" % (user, salt, core_hmac(salt, password))
    elif kind == "stale":
        value = "%s:%s$%s" % (user, salt, core_hmac(salt, password + "x"))
    else:
        value = "someone:%s$%s" % (salt, core_hmac(salt, "other"))
    return draw(st.sampled_from([value, "rpcauth=" + value]))


CONF_TEMPLATES = ["{root}/bitcoin.conf", "{root}/bitcoin.conf", "{root}/missing.conf", "{root}/link/precious"]
CONF_TEMPLATES += ["{root}/conflink", "{root}/d", "{root}//bitcoin.conf", "relative.conf", "{root}/nonutf8.conf"]


@st.composite
def derive_args(draw):
    user = draw(h.weighted((6, USER), (2, h.mutated(USER))))
    password = draw(h.weighted((6, h.secret_text()), (1, st.just(""))))
    args = {"user": user, "password": password}
    if draw(st.booleans()):
        args["salt"] = draw(h.weighted((4, SALT), (2, h.mutated(SALT)), (1, SALT.map(str.upper))))
    if draw(st.booleans()):
        clean_user = user if isinstance(user, str) else "u"
        values = st.one_of(existing_value(clean_user, password), h.mutated(existing_value(clean_user, password)))
        args["existing"] = draw(
            st.lists(h.weighted((4, existing_value(clean_user, password)), (1, values)), max_size=3)
        )
    conf = None
    if draw(st.booleans()):
        conf = draw(h.weighted((6, st.sampled_from(CONF_TEMPLATES)), (1, h.mutated(st.just("{root}/bitcoin.conf")))))
        args["conf_file"] = conf
    conf_lines = draw(st.lists(existing_value(user, password), max_size=2)) if conf else []
    return args, conf_lines


def prepare(ex: h.ExampleDir, conf_lines: list[str]) -> None:
    with open(os.path.join(ex.root, "bitcoin.conf"), "w", encoding="utf-8") as handle:
        handle.write("chain=regtest\n" + "".join("rpcauth=%s\n" % v.removeprefix("rpcauth=") for v in conf_lines))
    os.symlink(os.path.join(ex.root, "bitcoin.conf"), os.path.join(ex.root, "conflink"))
    os.mkdir(os.path.join(ex.root, "d"))
    with open(os.path.join(ex.root, "nonutf8.conf"), "wb") as handle:
        handle.write(b"rpcauth=\xff\xfe\n")


def check_read_back(args: dict, conf_lines: list[str], result: dict) -> None:
    line, value = result["line"], result["rpcauth"]
    assert line == "rpcauth=" + value
    h.assert_clean_config(line, "the rpcauth line")
    assert len(line.splitlines()) == 1 and len(line.split("\n")) == 1, "the line is more than one line: %r" % line
    model = h.core_read(line + "\n")
    assert model == {"": [("rpcauth", value)]}, "Core reads %r for %r" % (model, line)
    fields = value.split(":")
    assert len(fields) == 2, "Core needs exactly one ':' in %r" % value
    salt_hmac = fields[1].split("$")
    assert len(salt_hmac) == 2, "Core needs exactly one '$' after the user in %r" % value
    user, (salt, digest) = fields[0], salt_hmac
    assert user == args["user"] == result["user"], (user, args["user"], result["user"])
    assert len(salt) == 32 and all(c in "0123456789abcdef" for c in salt), salt
    if args.get("salt") is not None:
        assert salt == args["salt"]
    assert digest == core_hmac(salt, args["password"]), "the hash does not open with the password"
    known = [v.removeprefix("rpcauth=") for v in (args.get("existing") or [])]
    if args.get("salt") is None:
        verifying = [v for v in known if rpcauth.verify(v, args["user"], args["password"])]
        if verifying:
            assert value == verifying[0] and result["changed"] is False, "a verifying existing value was not kept"


@settings(max_examples=h.examples(500))
@given(drawn=derive_args(), check=st.booleans())
def test_rpcauth_derive_refuses_or_derives_a_value_core_reads(drawn, check):
    args, conf_lines = drawn
    one_example(args, conf_lines, check)


def one_example(args, conf_lines=(), check=False):
    """One run with every invariant checked; returns (outcome, Run)."""
    conf_lines = list(conf_lines)
    with h.example_dir() as ex:
        prepare(ex, conf_lines)
        full = h.substitute(args, ex)
        before = h.snapshot(ex.root)
        watched = h.watched_attrs()
        result = h.run(rpcauth_derive, full, check=check)
        after = h.snapshot(ex.root)
        h.note("args=%r conf_lines=%r -> %r" % (full, conf_lines, result.result))
        outcome = h.check_outcome(result, SPEC, before, after, [full["password"]], watched)
        assert h.snapshot_diff(before, after) == [], "rpcauth_derive wrote something"
        if outcome == "accepted":
            check_read_back(full, conf_lines, result.result)
        h.count("rpcauth_derive", outcome, str(result.result.get("msg", "")))
        return outcome, result
