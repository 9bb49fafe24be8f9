# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""tor itself serves Core's onion key, converted by tor.core_key_to_tor, under Core's address.

Only the converted hs_ed25519_secret_key goes into a fresh HiddenServiceDir (what
tor_hidden_service's secret_key restores); tor derives the public key and writes ``hostname``
on its own, and both must equal what core_key_to_tor computed and what Core advertised.
"""

from __future__ import annotations

import os

from ansible_collections.nodefleet.bitcoin.plugins.module_utils import tor as tor_utils
from ansible_collections.nodefleet.bitcoin.tests.integration import tor_fixture
from ansible_collections.nodefleet.bitcoin.tests.unit.plugins.module_utils.test_tor_core_key import (
    CORE_ADDRESS,
    CORE_KEY,
)

tor = tor_fixture.tor  # the fixture: a started, offline tor in a temp dir


def test_tor_serves_the_converted_core_key_under_cores_address(tor):
    files = tor_utils.core_key_to_tor("adopt.onion_key", CORE_KEY)
    service_dir = tor.service_root / "adopted"
    service_dir.mkdir(mode=0o700)
    key_file = service_dir / tor_utils.SECRET_KEY_FILE
    key_file.write_bytes(files[tor_utils.SECRET_KEY_FILE])
    os.chmod(key_file, 0o600)
    dropin = f"HiddenServiceDir {service_dir}\nHiddenServicePort 18444 127.0.0.1:1\n"
    (tor.torrc_dir / "adopted.conf").write_text(dropin)
    reloads = tor.reload_count()
    os.kill(tor.pid, 1)
    tor.wait_for_reloads(reloads + 1)
    address = tor_utils.wait_for_hostname(str(service_dir), 15)
    assert address == CORE_ADDRESS == files["onion_address"]
    assert (service_dir / tor_utils.HOSTNAME_FILE).read_bytes() == files[tor_utils.HOSTNAME_FILE]
    assert (service_dir / tor_utils.PUBLIC_KEY_FILE).read_bytes() == files[tor_utils.PUBLIC_KEY_FILE]
    # tor kept the key it was given (it did not make a new one).
    assert key_file.read_bytes() == files[tor_utils.SECRET_KEY_FILE]
