#!/usr/bin/python
# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bitcoind_chain_snapshot
short_description: Make a chain snapshot file (tar + manifest + pinned sha256) of a stopped bitcoind instance
version_added: "0.2.0"
description:
  - Writes an uncompressed tar of a stopped instance's C(blocks/), C(chainstate/) and, when present,
    C(indexes/) (the files M(nodefleet.bitcoin.bitcoind_seed) copies; not peers, mempool, wallets, the onion
    key, logs or bitcoin.conf) with a manifest member C(nodefleet-chain-snapshot.json) - network, height,
    best block hash, pruned or not, source, and the sha256 and size of every file.
  - The height and best block hash are read from the stopped datadir itself (the chainstate's best block and
    its block index entry), not from a daemon, so they describe exactly the files in the archive.
  - The archive is written to a temporary file beside O(dest) and renamed into place. Beside it go
    C(<dest>.sha256) (C(sha256sum -c) format) - the hash the operator pins in
    O(nodefleet.bitcoin.bitcoind#role:main:bitcoind_instances[].seed_snapshot.sha256) - and C(<dest>.manifest.json).
  - The source must be stopped - its datadir lock (C(<network dir>/.lock), the lock bitcoind takes) is held
    while the archive is written, so no daemon can start on it meanwhile. A running source is refused; stop it
    through supervisord first (C(playbooks/instance.yml -e action=stop)) and start it again afterwards.
  - Seed a new instance from the file with M(nodefleet.bitcoin.bitcoind_seed_snapshot) (or the role's
    C(seed_snapshot)). This is not Core's assumeutxo (C(dumptxoutset)/C(loadtxoutset)); see docs/roles.md.
author:
  - nodefleet.bitcoin contributors (@nodefleet)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports the tip, the files and bytes that would be archived; nothing is written.
  diff_mode:
    support: partial
    details: The diff is a one-line summary (the archive is binary).
  platform:
    platforms: posix
options:
  source_name:
    description: The source instance's name (recorded in the manifest).
    type: str
    required: true
  source_datadir:
    description: The source's datadir (with its bitcoin.conf).
    type: path
    required: true
  source_conf:
    description: The source's bitcoin.conf, when it is not C(<source_datadir>/bitcoin.conf).
    type: path
  dest:
    description:
      - The archive to write (its directory must exist, outside the source's datadir). Root-owned, mode C(0600).
    type: path
    required: true
  force:
    description: Replace an existing O(dest). Without it an existing archive is left alone (C(changed=false)).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Snapshot the stopped core-main-1
  nodefleet.bitcoin.bitcoind_chain_snapshot:
    source_name: core-main-1
    source_datadir: /var/lib/bitcoind/core-main-1
    dest: /srv/snapshots/main.tar
  register: snap

- name: The hash to pin in seed_snapshot.sha256
  ansible.builtin.debug:
    msg: "{{ snap.sha256 }} height {{ snap.height }} {{ snap.best_block_hash }}"
"""

RETURN = r"""
archive:
  description: The archive's path.
  returned: always
  type: str
sha256:
  description: The archive's sha256 (also in C(<dest>.sha256)); pin it where the snapshot is used.
  returned: when the archive exists or was written
  type: str
network:
  description: The source's network.
  returned: success
  type: str
height:
  description: Height of the archived chain's tip.
  returned: success
  type: int
best_block_hash:
  description: The archived chain's best block hash.
  returned: success
  type: str
pruned:
  description: The archived chain is pruned (the source has prune set or has pruned block files).
  returned: success
  type: bool
files:
  description: C(files) and C(bytes) archived (or, in check mode, to archive).
  returned: success
  type: dict
summary:
  description: One line for the operator.
  returned: always
  type: str
  sample: "snapshot of src (regtest, height 600, 000000...) - 17 files, 1.4 MB, sha256 5f0c..."
"""

import json
import os
import secrets
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import safe_fs, seed, snapshot
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import (
    ValidationError,
    check_abs_path,
    check_name,
)

ARGUMENT_SPEC = {
    "source_name": {"type": "str", "required": True},
    "source_datadir": {"type": "path", "required": True},
    "source_conf": {"type": "path"},
    "dest": {"type": "path", "required": True},
    "force": {"type": "bool", "default": False},
}


def prepare(params: dict) -> dict:
    n = dict(params)
    n["source_name"] = check_name("source_name", params["source_name"])
    n["source_datadir"] = check_abs_path("source_datadir", params["source_datadir"]).rstrip("/") or "/"
    n["dest"] = check_abs_path("dest", params["dest"])
    if n["dest"].endswith("/"):
        raise ValidationError("dest", "%s names a directory; give the archive's file name" % n["dest"])
    if (n["dest"] + "/").startswith(n["source_datadir"] + "/"):
        raise ValidationError(
            "dest",
            "%s is inside the source's datadir %s; write the archive elsewhere" % (n["dest"], n["source_datadir"]),
        )
    source = seed.read_source(n)
    if source["blocksdir"]:
        raise ValidationError(
            "source_datadir",
            "the source uses blocksdir=%s; snapshots support blocks inside the datadir only" % source["blocksdir"],
        )
    n["source"] = source
    try:
        kind = safe_fs.inspect_path(n["dest"])
        parent_kind = safe_fs.inspect_path(os.path.dirname(n["dest"]))
    except safe_fs.UnsafePath as exc:
        raise ValidationError("dest", str(exc)) from None
    if kind not in ("missing", "file"):
        raise ValidationError("dest", "%s exists and is not a regular file" % n["dest"])
    if parent_kind != "dir":
        raise ValidationError("dest", "the directory of %s does not exist" % n["dest"])
    n["exists"] = kind == "file"
    if n["exists"] and not n["force"]:
        return n
    if not seed.lock_is_free(source["netdir"]):
        raise ValidationError(
            "source_datadir",
            "a bitcoind is running on %s (it holds %s/.lock): a snapshot is made of a stopped instance; stop it first"
            % (source["netdir"], source["netdir"]),
        )
    return n


def existing(n: dict) -> dict:
    """What an existing archive's sidecar files say (its sha256 recomputed)."""
    parent, name = os.path.split(n["dest"])
    with safe_fs.opened_dir(parent) as dir_fd:
        fd = seed.open_regular(dir_fd, name, n["dest"])
        try:
            digest = seed.sha256_fd(fd)
        finally:
            os.close(fd)
        raw = safe_fs.read_at(dir_fd, name + ".manifest.json")
    out = {"sha256": digest}
    try:
        manifest = json.loads(raw.decode("utf-8")) if raw else {}
    except ValueError:
        manifest = {}
    for key in ("network", "height", "best_block_hash", "pruned"):
        if key in manifest:
            out[key] = manifest[key]
    return out


def make(n: dict) -> dict:
    source = n["source"]
    netdir = source["netdir"]
    parent, name = os.path.split(n["dest"])
    tmp = ".%s.%s.tmp" % (name, secrets.token_hex(6))
    with seed.datadir_lock(netdir, "source_datadir"):
        tip = snapshot.chain_tip(netdir)
        files = seed.source_files(netdir)
        indexes = sorted(
            {rel.split("/")[1] for rel, _st in files if rel.startswith("indexes/") and rel.count("/") >= 2}
        )
        meta = {
            "network": source["network"],
            "height": tip["height"],
            "best_block_hash": tip["best_block_hash"],
            "pruned": bool(source["prune"] > 0 or tip["pruned_files"]),
            "prune": source["prune"],
            "source": n["source_name"],
            "created": int(time.time()),
            "indexes": indexes,
        }
        with safe_fs.opened_dir(parent) as dir_fd:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
            try:
                try:
                    manifest = snapshot.write_archive(netdir, files, fd, meta)
                    digest = seed.sha256_fd(fd)
                finally:
                    os.close(fd)
                os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                safe_fs.unlink_at(dir_fd, tmp)
                raise
            safe_fs.write_at(dir_fd, name + ".sha256", snapshot.sums_line(digest, name), mode=0o644)
            safe_fs.write_at(dir_fd, name + ".manifest.json", json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    total = sum(entry["size"] for entry in manifest["files"].values())
    return dict(meta, sha256=digest, files={"files": len(manifest["files"]), "bytes": total})


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    error = None
    n = None
    try:
        n = prepare(module.params)
    except (ValidationError, seed.SeedError, safe_fs.UnsafePath, OSError) as exc:
        error = str(exc)
    if error is not None:
        module.fail_json(msg=error, archive=module.params["dest"], summary="refused: " + error)
    result = {"changed": False, "archive": n["dest"]}
    if n["exists"] and not n["force"]:
        try:
            result.update(existing(n))
        except (OSError, seed.SeedError, safe_fs.UnsafePath) as exc:
            error = str(exc)
        if error is not None:
            module.fail_json(msg="dest: %s" % error, **result)
        result["summary"] = "%s exists (sha256 %s); force=true replaces it" % (n["dest"], result["sha256"])
        module.exit_json(**result)
    result["changed"] = True
    line = "snapshot %s (%s) into %s" % (n["source_name"], n["source"]["netdir"], n["dest"])
    if module._diff:
        result["diff"] = {"before": "", "after": line + "\n", "before_header": n["dest"], "after_header": n["dest"]}
    try:
        if module.check_mode:
            tip = snapshot.chain_tip(n["source"]["netdir"])
            files = [(rel, st) for rel, st in seed.source_files(n["source"]["netdir"]) if not rel.endswith("/")]
            result.update(
                network=n["source"]["network"],
                height=tip["height"],
                best_block_hash=tip["best_block_hash"],
                pruned=bool(n["source"]["prune"] > 0 or tip["pruned_files"]),
                files={"files": len(files), "bytes": sum(st.st_size for _rel, st in files)},
            )
        else:
            result.update(make(n))
    except (OSError, seed.SeedError, safe_fs.UnsafePath, ValidationError) as exc:
        error = str(exc)
    if error is not None:
        module.fail_json(msg=error, **result)
    result["summary"] = "%s %s (%s, height %s, %s) - %s files, %s bytes%s" % (
        "would snapshot" if module.check_mode else "snapshot of",
        n["source_name"],
        result["network"],
        result["height"],
        result["best_block_hash"],
        result["files"]["files"],
        result["files"]["bytes"],
        "" if module.check_mode else ", sha256 %s" % result["sha256"],
    )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
