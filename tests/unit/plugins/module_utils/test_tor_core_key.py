# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Core's onion_v3_private_key -> tor's HiddenServiceDir files (module_utils/tor.py).

CORE_KEY / CORE_ADDRESS were produced by the real Bitcoin Core 28.99.0 of
../shared/bitcoin-core: regtest, ``-listen=1 -listenonion=1 -torcontrol=<a local offline tor
with CookieAuthentication>``; Core wrote CORE_KEY to ``regtest/onion_v3_private_key`` and logged
"Got tor service ID eh656z5z..., advertising service <CORE_ADDRESS>:18444". A throwaway key.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import tor
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import ValidationError

CORE_KEY = "ED25519-V3:OLSgvmaaNM4ilNWUepYIes+f3DkYi36c72MBhfjmAFNbku5/7N6L72YfNm3P2QhKqX8WUSFxVXKwkdiq8LNM/w=="
CORE_ADDRESS = "eh656z5zpip5of3q5hds33q2kbkur2finhkqwtily6pf43novx3ddtyd.onion"


def test_core_key_gives_the_address_core_advertised():
    files = tor.core_key_to_tor("adopt.onion_key", CORE_KEY)
    assert files["onion_address"] == CORE_ADDRESS
    assert files["hostname"] == (CORE_ADDRESS + "\n").encode()
    assert tor.is_onion_v3(files["onion_address"])


def test_core_key_file_layout_is_tors():
    files = tor.core_key_to_tor("adopt.onion_key", CORE_KEY + "\n")  # Core's file has no newline; tolerate one
    secret, public = files["hs_ed25519_secret_key"], files["hs_ed25519_public_key"]
    assert len(secret) == tor.SECRET_KEY_SIZE and secret.startswith(tor.SECRET_KEY_HEADER)
    assert secret[32:] == base64.b64decode(CORE_KEY.split(":", 1)[1])
    assert public.startswith(b"== ed25519v1-public: type0 ==\x00\x00\x00") and len(public) == 64
    # The secret file is what tor_hidden_service's secret_key restores.
    assert tor.decode_secret_key("secret_key", base64.b64encode(secret).decode()) == secret
    assert tor.public_key_from_secret_file(secret) == public[32:]
    # The address is that public key's (pubkey | checksum | version).
    raw = base64.b32decode(CORE_ADDRESS[:-6].upper())
    assert raw[:32] == public[32:]


def test_scalar_multiplication_matches_rfc8032_test_1():
    # RFC 8032 section 7.1, TEST 1: the public key of the secret seed; tor's expanded key
    # is the clamped first half of SHA-512(seed).
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    h = bytearray(hashlib.sha512(seed).digest()[:32])
    h[0] &= 248
    h[31] &= 127
    h[31] |= 64
    expected = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    assert tor.ed25519_public_from_scalar(bytes(h)).hex() == expected


@pytest.mark.parametrize(
    "value, reason",
    [
        ("", "ED25519-V3"),
        ("RSA1024:" + "A" * 20, "ED25519-V3"),
        ("ED25519-V3:not base64!!", "invalid base64"),
        ("ED25519-V3:" + base64.b64encode(bytes(32)).decode(), "32 bytes"),
        ("ED25519-V3:" + base64.b64encode(b"\x07" + bytes(63)).decode(), "clamped"),
        (b"\xff\xfe", "ASCII"),
        (None, "onion_v3_private_key"),
    ],
)
def test_bad_core_keys_fail_naming_the_option_without_the_value(value, reason):
    with pytest.raises(ValidationError) as info:
        tor.core_key_to_tor("adopt.onion_key", value)
    message = str(info.value)
    assert message.startswith("adopt.onion_key") and reason in message
    secret_part = CORE_KEY.split(":", 1)[1]
    assert secret_part[:12] not in message
