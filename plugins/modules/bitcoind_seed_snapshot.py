#!/usr/bin/python
# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bitcoind_seed_snapshot
short_description: Seed a new bitcoind instance's chain from a chain snapshot file on the host
version_added: "0.2.0"
description:
  - Extracts a chain snapshot made by M(nodefleet.bitcoin.bitcoind_chain_snapshot) into a new instance's empty
    network directory, so the instance starts at the snapshot's height instead of an initial sync, and then
    syncs the rest from its peers.
  - "Checked before anything is written, each refusal naming the option and the reason: O(sha256) - the archive's
    sha256 must be the pinned one (it is hashed from the same open file that is then extracted); O(snapshot) - the
    file must be a regular file owned by the user the module runs as and writable by nobody else, a tar with the
    manifest, and every member a regular file or directory below C(blocks/), C(chainstate/) or C(indexes/), listed
    in the manifest with its size - an absolute path, a C(..) component, a symlink, a hard link or a device is
    refused (tar-slip; tarfile's C(data_filter) is applied as well where Python has it); O(network) - the
    snapshot's network must be the target's; O(prune) - a pruned snapshot cannot seed an unpruned target;
    O(datadir) - the target's network directory must be empty (nothing but its bitcoin.conf) and have room."
  - Extraction writes through directory descriptors into a staging directory inside the target's network
    directory; every file is verified against the manifest's sha256 as written and read back, then the tree is
    renamed into place and the marker C(.nodefleet-seed.json) (with C(.nodefleet-seed.sha256)) written last, as
    M(nodefleet.bitcoin.bitcoind_seed) does. A target with the marker is not seeded again (C(changed=false)).
  - The target's datadir lock (C(<network dir>/.lock)) is held during the extraction, so no bitcoind can start on it.
  - This is a copy of a validated chain, not Core's assumeutxo (C(loadtxoutset)); see docs/roles.md.
author:
  - nodefleet.bitcoin contributors (@nodefleet)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Every check runs (including the sha256 and the members); reports the snapshot's tip and size; nothing is written.
  diff_mode:
    support: partial
    details: The diff is a one-line summary of the seed (the chain is binary).
  platform:
    platforms: posix
options:
  name:
    description: The new (target) instance's name.
    type: str
    required: true
  datadir:
    description: The target's datadir (the chain goes into its network directory).
    type: path
    required: true
  network:
    description: The target's network; the snapshot's must be the same.
    type: str
    required: true
    choices: [main, test, testnet4, signet, regtest]
  prune:
    description: The target's prune setting (0 unpruned). A pruned snapshot cannot seed an unpruned target.
    type: int
    default: 0
  snapshot:
    description: The snapshot archive on the host (root-owned, not writable by others).
    type: path
    required: true
  sha256:
    description: The pinned sha256 of the archive (64 hex digits, optionally prefixed C(sha256:)).
    type: str
    required: true
  owner:
    description: Owner of the seeded files (the target's daemon user).
    type: str
  group:
    description: Group of the seeded files.
    type: str
"""

EXAMPLES = r"""
- name: Seed core-main-3 from a pinned snapshot file
  nodefleet.bitcoin.bitcoind_seed_snapshot:
    name: core-main-3
    datadir: /var/lib/bitcoind/core-main-3
    network: main
    snapshot: /var/lib/nodefleet-snapshots/main.tar
    sha256: 5f0c9d0b3c1e4b0e8f1f3a8f6c0b1d2e3f405162738495a6b7c8d9e0f1a2b3c4
    owner: bitcoin
    group: bitcoin
"""

RETURN = r"""
seeded:
  description: True when this run seeded (or, in check mode, would seed) the target.
  returned: always
  type: bool
network_dir:
  description: The target's network directory.
  returned: always
  type: str
height:
  description: The snapshot's height (the seeded instance starts there).
  returned: when the target was not seeded before
  type: int
best_block_hash:
  description: The snapshot's best block hash.
  returned: when the target was not seeded before
  type: str
files:
  description: C(files) and C(bytes) extracted (or to extract).
  returned: when the target was not seeded before
  type: dict
seconds:
  description: Seconds spent extracting and verifying.
  returned: when seeded
  type: float
manifest_sha256:
  description: sha256 over the sorted C(<sha256>  <path>) lines of every seeded file (recorded in the marker).
  returned: when seeded
  type: str
summary:
  description: One line for the operator.
  returned: always
  type: str
marker:
  description: The marker's content (when the target was seeded before, the earlier seed).
  returned: when seeded now or before
  type: dict
"""

import contextlib
import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import bitcoin_conf, safe_fs, seed, snapshot
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import (
    NETWORKS,
    ValidationError,
    check_abs_path,
    check_name,
)

ARGUMENT_SPEC = {
    "name": {"type": "str", "required": True},
    "datadir": {"type": "path", "required": True},
    "network": {"type": "str", "required": True, "choices": list(NETWORKS)},
    "prune": {"type": "int", "default": 0},
    "snapshot": {"type": "path", "required": True},
    "sha256": {"type": "str", "required": True},
    "owner": {"type": "str"},
    "group": {"type": "str"},
}


def prepare(params: dict, stack: contextlib.ExitStack) -> dict:
    """Every check, before a change; the open archive is registered on ``stack``."""
    n = dict(params)
    n["name"] = check_name("name", params["name"])
    n["datadir"] = check_abs_path("datadir", params["datadir"])
    n["snapshot"] = check_abs_path("snapshot", params["snapshot"])
    n["sha256"] = snapshot.check_sha256("sha256", params["sha256"])
    prune = params.get("prune") or 0
    if isinstance(prune, bool) or not isinstance(prune, int) or prune < 0:
        raise ValidationError("prune", "%r is not a prune setting (0, 1 or a target in MiB)" % (prune,))
    n["prune"] = prune
    if (n["snapshot"] + "/").startswith(n["datadir"].rstrip("/") + "/"):
        raise ValidationError("snapshot", "%s is inside the target's datadir %s" % (n["snapshot"], n["datadir"]))
    n["uid"], n["gid"] = seed.resolve_ids(params.get("owner"), params.get("group"))
    n["netdir"] = bitcoin_conf.network_dir(n["datadir"], n["network"])
    state, marker, extra = seed.target_state(n)
    n["state"], n["marker"] = state, marker
    if state == "seeded":
        return n
    if state == "not_empty":
        raise ValidationError(
            "datadir",
            "%s is not empty (%s): refusing to seed over an existing chain or daemon state"
            % (n["netdir"], ", ".join(extra[:10]) + (" ..." if len(extra) > 10 else "")),
        )
    fd = snapshot.open_archive(n["snapshot"])
    stack.callback(os.close, fd)
    tar, manifest, members = snapshot.read_archive(fd, n["sha256"], n["snapshot"])
    stack.callback(tar.fileobj.close)
    stack.callback(tar.close)
    snapshot.check_target(manifest, n["network"], n["prune"])
    snapshot.check_space(n["netdir"], manifest)
    n["tar"], n["manifest"], n["members"] = tar, manifest, members
    return n


def run(n: dict) -> dict:
    manifest = n["manifest"]
    started = time.monotonic()
    seed.ensure_netdir(n["datadir"], n["netdir"], n["uid"], n["gid"])
    with seed.datadir_lock(n["netdir"], "datadir", n["uid"], n["gid"]):
        written = snapshot.extract(n["tar"], n["members"], manifest, n["netdir"], n["uid"], n["gid"])
        out = {"manifest_sha256": seed.manifest_digest(written)}
        out["marker"] = {
            "snapshot": n["snapshot"],
            "snapshot_sha256": n["sha256"],
            "source": manifest.get("source"),
            "network": manifest["network"],
            "height": manifest["height"],
            "best_block_hash": manifest["best_block_hash"],
            "time": int(time.time()),
            "files": {"files": len(written), "bytes": sum(e["size"] for e in manifest["files"].values())},
            "manifest_sha256": out["manifest_sha256"],
        }
        seed.write_marker(n["netdir"], out["marker"], written, n["uid"], n["gid"])
    out["seconds"] = round(time.monotonic() - started, 3)
    return out


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    error = None
    with contextlib.ExitStack() as stack:
        n = None
        try:
            n = prepare(module.params, stack)
        except (ValidationError, seed.SeedError, safe_fs.UnsafePath, OSError) as exc:
            error = str(exc)
        if error is not None:
            stack.close()
            module.fail_json(msg=error, seeded=False, summary="refused: " + error)
        result = {"changed": False, "seeded": False, "network_dir": n["netdir"]}
        if n["state"] == "seeded":
            result["marker"] = n["marker"]
            result["summary"] = "already seeded from %s" % (
                n["marker"].get("snapshot") or n["marker"].get("source") or "?"
            )
            stack.close()
            module.exit_json(**result)
        manifest = n["manifest"]
        files = {"files": len(manifest["files"]), "bytes": sum(e["size"] for e in manifest["files"].values())}
        result.update(
            changed=True,
            seeded=True,
            height=manifest["height"],
            best_block_hash=manifest["best_block_hash"],
            files=files,
        )
        line = "seed %s from snapshot %s (%s, height %d, %s)" % (
            n["netdir"],
            n["snapshot"],
            manifest["network"],
            manifest["height"],
            manifest["best_block_hash"],
        )
        if module._diff:
            result["diff"] = {
                "before": "",
                "after": line + "\n",
                "before_header": n["netdir"],
                "after_header": n["netdir"],
            }
        if module.check_mode:
            result["summary"] = "would %s - %d files, %d bytes, sha256 pinned and verified" % (
                line,
                files["files"],
                files["bytes"],
            )
            stack.close()
            module.exit_json(**result)
        try:
            result.update(run(n))
        except (OSError, seed.SeedError, safe_fs.UnsafePath, ValidationError) as exc:
            error = "seeding %s from %s failed, the target is left as it was: %s" % (n["name"], n["snapshot"], exc)
        stack.close()
    if error is not None:
        module.fail_json(msg=error, seeded=False, network_dir=n["netdir"])
    result["summary"] = "seeded from snapshot %s (height %d, %s) - %d files sha256-verified in %s s" % (
        n["snapshot"],
        manifest["height"],
        manifest["best_block_hash"],
        files["files"],
        result["seconds"],
    )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
