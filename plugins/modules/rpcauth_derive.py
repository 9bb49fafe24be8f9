#!/usr/bin/python
# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: rpcauth_derive
short_description: Derive a Bitcoin Core rpcauth line, keeping one that still verifies
version_added: "0.1.0"
description:
  - Computes a Bitcoin Core C(rpcauth) value C(user:salt$hash) with Core's own algorithm
    (C(share/rpcauth/rpcauth.py), checked by C(src/httprpc.cpp)) - the salt is 16 random
    bytes as 32 lowercase hex characters and the hash is HMAC-SHA256 keyed with the salt's
    hex string over the password.
  - Idempotent - when an existing value for O(user) (from O(existing) or from the
    C(rpcauth=) lines of O(conf_file)) still verifies against O(password), that value is
    returned unchanged and RV(ignore:changed) is false. When none verifies, a new value is
    derived - under the salt of the user's line when the user has exactly one (a tampered
    hash is repaired to the identical line; a new password gets a new hash), else under a
    fresh random salt.
  - Writes nothing. The password never appears in the result, a diff or a log line.
author:
  - nodefleet.bitcoin contributors (@nodefleet)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: The module only computes a value; check mode returns the same result.
  diff_mode:
    support: none
    details: The module writes nothing, so there is nothing to diff.
  platform:
    platforms: posix
options:
  user:
    description:
      - RPC user name. 1-64 printable ASCII characters; must not contain C(:), C($), C(#), C(=),
        whitespace or control characters (Core splits the value on C(:) and C($)).
    type: str
    required: true
  password:
    description:
      - The user's RPC password. Never logged or returned.
    type: str
    required: true
  salt:
    description:
      - Exactly 32 lowercase hex characters (nothing before or after, not even a newline). When given, the result is deterministic (that salt is
        used), and RV(ignore:changed) is false only when that exact value is already in
        O(existing) or O(conf_file).
    type: str
  existing:
    description:
      - rpcauth values already deployed, C(user:salt$hash), with or without a leading
        C(rpcauth=). Values of other users are ignored; malformed values fail the module.
    type: list
    elements: str
    default: []
  conf_file:
    description:
      - A bitcoin.conf to read C(rpcauth=) lines from (every section). A missing file counts
        as no lines.
      - Must be an absolute path without control characters. A symlink in the path (the file
        itself or any directory above it) is refused, so the module cannot be pointed through
        a link at a file only root may read.
    type: path
seealso:
  - module: nodefleet.bitcoin.bitcoind_instance
notes:
  - Several lines for one user are allowed by Core (useful for overlapping rotation); the
    first one that verifies is kept.
"""

EXAMPLES = r"""
- name: Derive (or keep) the rpcauth line for the monitoring user
  nodefleet.bitcoin.rpcauth_derive:
    user: monitor
    password: "{{ vault_monitor_rpc_password }}"
    conf_file: /var/lib/bitcoind/main1/bitcoin.conf
  register: monitor_auth

- name: Known-answer derivation with a fixed salt
  nodefleet.bitcoin.rpcauth_derive:
    user: alice
    password: "{{ vault_alice_rpc_password }}"
    salt: 0123456789abcdef0123456789abcdef

- name: Keep a line that is already in the inventory
  nodefleet.bitcoin.rpcauth_derive:
    user: alice
    password: "{{ vault_alice_rpc_password }}"
    existing: "{{ alice_rpcauth_lines }}"
"""

RETURN = r"""
rpcauth:
  description: The rpcauth value, without the C(rpcauth=) prefix.
  returned: success
  type: str
  sample: "alice:0123456789abcdef0123456789abcdef$5b6c...e1"
line:
  description: The bitcoin.conf line, C(rpcauth=<rpcauth>).
  returned: success
  type: str
  sample: "rpcauth=alice:0123456789abcdef0123456789abcdef$5b6c...e1"
user:
  description: The user name.
  returned: success
  type: str
  sample: alice
changed:
  description:
    - false when an existing value for the user verified against the password and is
      returned unchanged; true when a new value was derived.
  returned: always
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import rpcauth, safe_fs
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import ValidationError, check_abs_path


def collect_existing(existing: list, conf_text: str | None) -> list[str]:
    """Normalised values from the ``existing`` option (strict) and the conf text (lenient)."""
    values = [rpcauth.normalise(value, f"existing[{index}]") for index, value in enumerate(existing or [])]
    return values + rpcauth.lines_from_conf(conf_text)


def derive(params: dict, conf_text: str | None) -> dict:
    """The module's result for ``params``; raises ValidationError on invalid input."""
    user = rpcauth.check_user("user", params["user"])
    password = rpcauth.check_password("password", params["password"])
    salt = params.get("salt")
    if salt is not None:
        rpcauth.check_salt("salt", salt)
    existing = collect_existing(params.get("existing") or [], conf_text)
    value, changed = rpcauth.keep_or_derive(user, password, existing, salt=salt)
    return {"changed": changed, "rpcauth": value, "line": rpcauth.PREFIX + value, "user": user}


def read_conf(conf_file: str | None) -> str | None:
    """The text of ``conf_file`` (None when not given or missing); ValidationError otherwise.

    Read without following symlinks (``safe_fs.read_file``): the module runs as root and
    returns lines of this file, so a link must not let it read a file the caller could not.
    """
    if not conf_file:
        return None
    path = check_abs_path("conf_file", conf_file)
    try:
        data = safe_fs.read_file(path)
    except safe_fs.UnsafePath as exc:
        raise ValidationError("conf_file", f"{exc.path} {exc.reason}") from None
    except OSError as exc:
        raise ValidationError("conf_file", f"cannot read {path}: {exc.strerror or exc}") from None
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError("conf_file", f"{path} is not UTF-8 text") from None


def run(params: dict) -> dict:
    """Validate, read conf_file, derive; raises ValidationError on any bad input."""
    # Validate the user before touching the file, so a bad user is reported first.
    rpcauth.check_user("user", params["user"])
    return derive(params, read_conf(params.get("conf_file")))


def main():
    module = AnsibleModule(
        argument_spec={
            "user": {"type": "str", "required": True},
            "password": {"type": "str", "required": True, "no_log": True},
            "salt": {"type": "str"},
            "existing": {"type": "list", "elements": "str", "default": []},
            "conf_file": {"type": "path"},
        },
        supports_check_mode=True,
    )
    # fail_json is never called inside an except block: ansible-core 2.19 would attach the
    # exception's traceback to the result. Keep the message, fail after the block.
    failure = None
    try:
        result = run(module.params)
    except ValidationError as exc:
        failure = str(exc)
    if failure is not None:
        module.fail_json(msg=failure)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
