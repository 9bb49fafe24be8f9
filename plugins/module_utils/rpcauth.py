# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bitcoin Core ``rpcauth`` values: derive, parse, verify, keep-or-derive.

The algorithm is Bitcoin Core's ``share/rpcauth/rpcauth.py`` (checked by
``src/httprpc.cpp``): the salt is 16 random bytes written as 32 lowercase hex characters;
the hash is ``HMAC-SHA256(key=salt.encode('utf-8'), msg=password.encode('utf-8'))`` in
lowercase hex. The HMAC key is the hex *string*, not the bytes it encodes. A value is
``<user>:<salt>$<hash>``; in bitcoin.conf it is written as ``rpcauth=<value>``.

Pure functions, standard library only: this code runs on the managed host.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import ValidationError, check_rpc_user

# \Z, not $: "$" also matches before a trailing newline, so "<32 hex>\n" would pass and the
# newline would end up inside the returned rpcauth line.
SALT_RE = re.compile(r"[0-9a-f]{32}\Z")
HASH_RE = re.compile(r"[0-9a-f]{64}\Z")
PREFIX = "rpcauth="


def check_user(option: str, user) -> str:
    """Return ``user`` if it can be an rpcauth user name, else raise ValidationError.

    The collection's RPC user rule (``common.check_rpc_user``: 1-64 printable ASCII
    characters, no whitespace or control character, no ':', '#' or '='), plus no '$', which
    separates salt and hash in an rpcauth value.
    """
    if not isinstance(user, str) or not user:
        raise ValidationError(option, "the user name must be a non-empty string")
    check_rpc_user(option, user)
    if "$" in user:
        raise ValidationError(
            option,
            f"the user name {user!r} contains '$'; it must not contain ':', '$', '#', '=' or whitespace "
            "(Bitcoin Core splits rpcauth values on ':' and '$')",
        )
    return user


def check_password(option: str, password) -> str:
    """Return ``password`` if usable (non-empty string); never echo it in the error."""
    if not isinstance(password, str) or password == "":
        raise ValidationError(option, "the password must be a non-empty string")
    return password


def check_salt(option: str, salt) -> str:
    """Return ``salt`` if it is 32 lowercase hex characters (16 bytes)."""
    if not isinstance(salt, str) or not SALT_RE.match(salt):  # match + \Z: a full match
        raise ValidationError(option, "the salt must be 32 lowercase hexadecimal characters (16 bytes)")
    return salt


def new_salt() -> str:
    """16 random bytes from the OS CSPRNG as 32 lowercase hex characters."""
    return secrets.token_hex(16)


def password_hmac(salt: str, password: str) -> str:
    """Bitcoin Core's rpcauth hash: HMAC-SHA256 keyed with the salt's hex string."""
    return hmac.new(salt.encode("utf-8"), password.encode("utf-8"), hashlib.sha256).hexdigest()


def generate(user: str, password: str, salt: str | None = None) -> str:
    """Return ``user:salt$hash``; a new random salt is drawn when ``salt`` is None."""
    check_user("user", user)
    check_password("password", password)
    salt = new_salt() if salt is None else check_salt("salt", salt)
    return f"{user}:{salt}${password_hmac(salt, password)}"


def parse(value, option: str = "rpcauth") -> tuple[str, str, str]:
    """Split an rpcauth value (with or without ``rpcauth=``) into (user, salt, hash).

    Raises ValidationError naming ``option`` when the value is not well formed.
    """
    if not isinstance(value, str):
        raise ValidationError(option, f"{value!r} is not a string of the form user:salt$hash")
    text = value.strip()
    if text.startswith(PREFIX):
        text = text[len(PREFIX) :]
    if "\n" in text or "\r" in text:
        raise ValidationError(option, "an rpcauth value must be a single line")
    user, sep, rest = text.rpartition(":")
    if not sep:
        raise ValidationError(option, f"{text!r} is not of the form user:salt$hash (no ':')")
    check_user(option, user)
    salt, sep, digest = rest.partition("$")
    if not sep:
        raise ValidationError(option, f"{text!r} is not of the form user:salt$hash (no '$')")
    if not SALT_RE.match(salt):
        raise ValidationError(option, f"the salt in {text!r} must be 32 lowercase hexadecimal characters")
    if not HASH_RE.match(digest):
        raise ValidationError(option, f"the hash in {text!r} must be 64 lowercase hexadecimal characters")
    return user, salt, digest


def normalise(value, option: str = "rpcauth") -> str:
    """Return the canonical ``user:salt$hash`` form of a value (prefix and blanks removed)."""
    user, salt, digest = parse(value, option)
    return f"{user}:{salt}${digest}"


def verify(value: str, user: str, password: str) -> bool:
    """True when ``value`` is a well-formed rpcauth value for ``user`` that ``password`` opens.

    The hash comparison is constant-time (``hmac.compare_digest``), as Core's
    ``TimingResistantEqual``. A malformed value never verifies.
    """
    try:
        value_user, salt, digest = parse(value)
    except ValidationError:
        return False
    if value_user != user or not isinstance(password, str):
        return False
    return hmac.compare_digest(password_hmac(salt, password), digest)


def lines_from_conf(text: str | None) -> list[str]:
    """All well-formed ``rpcauth=`` values of a bitcoin.conf text, in file order.

    Every section counts (Core reads rpcauth from the global part and from the active
    network's section). Comments are stripped as Core does (``#`` to end of line), and
    malformed values are skipped: they can never verify.
    """
    values: list[str] = []
    if not text:
        return values
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("["):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key = key.strip()
        # Core also accepts "<network>.rpcauth=" in the global part.
        if key != "rpcauth" and not key.endswith(".rpcauth"):
            continue
        try:
            values.append(normalise(value.strip()))
        except ValidationError:
            continue
    return values


def keep_or_derive(user: str, password: str, existing_values, salt: str | None = None) -> tuple[str, bool]:
    """Return (value, changed) for ``user``.

    Without ``salt``: the first value in ``existing_values`` that belongs to ``user`` and
    verifies against ``password`` is returned unchanged (changed=False). When none does, a
    new value is derived (changed=True): with the salt of the user's line when the user has
    exactly one well-formed line (a tampered hash is repaired to the identical line, so
    drift recovery loses nothing; a changed password gets a new hash under that salt), else
    with a fresh random salt. Values of other users are never returned and their salts
    never reused. (``keep_or_derive_all`` with one password.)

    With ``salt``: the result is always the deterministic value for that salt; changed is
    False only when that exact value is already among ``existing_values``.
    """
    check_user("user", user)
    check_password("password", password)
    if salt is not None:
        value = generate(user, password, salt)
        known = set()
        for existing in existing_values or ():
            try:
                known.add(normalise(existing))
            except ValidationError:
                continue
        return value, value not in known
    values, changed = keep_or_derive_all(user, [password], existing_values)
    return values[0], changed


def keep_or_derive_all(user: str, passwords, existing_values) -> tuple[list[str], bool]:
    """Return (values, changed): one rpcauth value per password of ``user``, in the given order.

    Used for a rotation window: the current password first, then the previous ones still
    accepted; bitcoind accepts a user whose password opens any of the user's lines.
    Each password keeps the first existing value of ``user`` that it opens and that no
    earlier password claimed (so salts stay stable across runs). Passwords that open none
    get a new value: under the salt of the user's one unclaimed line when exactly one
    password and exactly one such salt are left over (an edited line is repaired, a plain
    password change keeps the salt - as ``keep_or_derive``), else with fresh random salts.
    Lines of the user that no password opens are not returned (a dropped old password
    loses its line). ``changed`` is True when any value was derived.
    """
    check_user("user", user)
    passwords = list(passwords)
    if not passwords:
        raise ValidationError("password", "at least one password is needed")
    for password in passwords:
        check_password("password", password)
    if len(set(passwords)) != len(passwords):
        raise ValidationError("password", "the same password is given twice for the user")
    own = []  # the user's well-formed values, normalised, first occurrence only
    for value in existing_values or ():
        try:
            owner, _salt, _digest = parse(value)
        except ValidationError:
            continue
        value = normalise(value)
        if owner == user and value not in own:
            own.append(value)
    found: list[str | None] = []
    for password in passwords:
        match = next((v for v in own if v not in found and verify(v, user, password)), None)
        found.append(match)
    missing = [index for index, value in enumerate(found) if value is None]
    if not missing:
        return [v for v in found if v is not None], False
    leftover_salts = []
    for value in own:
        if value not in found:
            salt = parse(value)[1]
            if salt not in leftover_salts:
                leftover_salts.append(salt)
    reuse = leftover_salts[0] if len(missing) == 1 and len(leftover_salts) == 1 else None
    values = []
    for password, value in zip(passwords, found):
        values.append(value if value is not None else generate(user, password, reuse))
    return values, True
