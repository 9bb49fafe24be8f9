#!/usr/bin/python
# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bitcoind_seed
short_description: Seed a new bitcoind instance's chain from a synced instance on the same host
version_added: "0.2.0"
description:
  - Copies the chain of a source instance (same network, same host) into a new instance's empty
    datadir, so the new instance starts at the source's height instead of a multi-day initial sync.
  - The source is stopped gracefully through supervisord (C(stopProcess), which waits for bitcoind's
    flush), its datadir lock (C(<network dir>/.lock), the lock bitcoind itself takes) is held while
    the chain is copied so no daemon can start on it, and it is started again right after; the
    downtime is returned in RV(source_downtime).
  - "Copied: C(blocks/) (block and undo files, C(xor.dat), the block index), C(chainstate/) and,
    when the source has them, C(indexes/). Not copied: peers, mempool, fee estimates, settings,
    wallets, the source's onion key, logs and bitcoin.conf."
  - "Hard links where safe and possible: LevelDB table files (C(*.ldb), C(*.sst)) and all but the two
    newest C(blk)/C(rev) file numbers are never written again and are linked when source and target are
    on one filesystem and the target wants the same owner; C(CURRENT), C(MANIFEST-*), LevelDB logs, the
    two newest C(blk)/C(rev) files and everything else are copied."
  - Every copied file is checked by sha256 (source as read while stopped, target as read back), every
    link by inode. The tree is built in a staging directory and renamed into place; a marker
    C(<network dir>/.nodefleet-seed.json) is written last, with C(.nodefleet-seed.sha256)
    (C(sha256sum -c) format) beside it. A target with the marker is not seeded again (C(changed=false)).
  - Refused before anything changes, with the option and the reason - a running source when
    O(stop_source=false), a source running outside supervision, a source on another network, a pruned
    source for an unpruned target, a source with C(blocksdir), a target whose network directory is not
    empty, the source as its own target, nested datadirs, a symlink anywhere in the trees.
  - Core's assumeutxo (C(loadtxoutset)) is not used; the seed is a full copy of a validated chain.
author:
  - nodefleet.bitcoin contributors (@nodefleet)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports what would be linked and copied, and whether the source would be stopped; nothing is stopped or written.
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
    description: The target's datadir (its bitcoin.conf is there; the chain goes into its network directory).
    type: path
    required: true
  network:
    description: The target's network; the source's (read from its bitcoin.conf) must be the same.
    type: str
    required: true
    choices: [main, test, testnet4, signet, regtest]
  prune:
    description: The target's prune setting (0 unpruned). A pruned source cannot seed an unpruned target.
    type: int
    default: 0
  source_name:
    description: The source instance's name.
    type: str
    required: true
  source_datadir:
    description: The source's datadir (with its bitcoin.conf).
    type: path
    required: true
  source_conf:
    description: The source's bitcoin.conf, when it is not C(<source_datadir>/bitcoin.conf).
    type: path
  source_program:
    description: The source's supervisord program; default C(bitcoind-<source_name>).
    type: str
  stop_source:
    description:
      - Stop a running source for the copy and start it again afterwards. With V(false) a running source
        is refused.
    type: bool
    default: true
  stop_timeout:
    description: Seconds to wait for supervisord to stop or start the source (bitcoind flushes on stop).
    type: int
    default: 900
  hard_links:
    description: Hard-link the files that are never written again (see the description); V(false) copies everything.
    type: bool
    default: true
  owner:
    description: Owner of the seeded files (the target's daemon user).
    type: str
  group:
    description: Group of the seeded files.
    type: str
  server_url:
    description: supervisord's XML-RPC endpoint.
    type: str
    default: unix:///var/run/supervisor.sock
"""

EXAMPLES = r"""
- name: Seed core-main-2 from core-main-1 (core-main-1 is stopped for the copy, then started)
  nodefleet.bitcoin.bitcoind_seed:
    name: core-main-2
    datadir: /var/lib/bitcoind/core-main-2
    network: main
    source_name: core-main-1
    source_datadir: /var/lib/bitcoind/core-main-1
    owner: bitcoin
    group: bitcoin
  register: seed

- name: Show the source's downtime
  ansible.builtin.debug:
    msg: "{{ seed.source_downtime }} s"
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
  sample: /var/lib/bitcoind/core-2/regtest
source_was_running:
  description: The source's program was running (and was, or in check mode would be, stopped and started).
  returned: when the target was not seeded before
  type: bool
source_downtime:
  description: Seconds from the stop request to supervisord confirming the source RUNNING again (0 when it was not running).
  returned: when seeded
  type: float
  sample: 1.8
copy_seconds:
  description: Seconds spent linking, copying and verifying (inside the downtime).
  returned: when seeded
  type: float
files:
  description: >-
    Counts and sizes (C(files), C(linked), C(copied), C(bytes), C(bytes_linked), C(bytes_copied));
    C(fallback_copies) are files that could be linked but the filesystem refused.
  returned: when the target was not seeded before
  type: dict
manifest_sha256:
  description: sha256 over the sorted C(<sha256 or link>  <path>) lines of every seeded file (recorded in the marker).
  returned: when seeded
  type: str
summary:
  description: One line for the operator - what was seeded, how, and the source's downtime.
  returned: always
  type: str
  sample: "seeded from core-1 - 17 files (4 hard-linked, 13 copied and sha256-verified), source down 1.36 s"
marker:
  description: The marker's content (when the target was seeded before, the earlier seed).
  returned: when seeded now or before
  type: dict
"""

import time
import xmlrpc.client

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import bitcoin_conf, safe_fs, seed
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import ValidationError
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.supervisord import (
    SupervisorClient,
    SupervisorError,
)

ARGUMENT_SPEC = {
    "name": {"type": "str", "required": True},
    "datadir": {"type": "path", "required": True},
    "network": {"type": "str", "required": True, "choices": ["main", "test", "testnet4", "signet", "regtest"]},
    "prune": {"type": "int", "default": 0},
    "source_name": {"type": "str", "required": True},
    "source_datadir": {"type": "path", "required": True},
    "source_conf": {"type": "path"},
    "source_program": {"type": "str"},
    "stop_source": {"type": "bool", "default": True},
    "stop_timeout": {"type": "int", "default": 900},
    "hard_links": {"type": "bool", "default": True},
    "owner": {"type": "str"},
    "group": {"type": "str"},
    "server_url": {"type": "str", "default": "unix:///var/run/supervisor.sock"},
}


def program_info(client, program: str):
    """getProcessInfo of the program, None when supervisord does not know it."""
    try:
        return client.call("getProcessInfo", "%s:%s" % (program, program))
    except xmlrpc.client.Fault as exc:
        if "BAD_NAME" in str(exc.faultString):
            return None
        raise


def prepare(params: dict) -> dict:
    """Everything decided before a change: raises ValidationError / seed.SeedError / SupervisorError."""
    n = seed.validate(params)
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
    source = seed.read_source(n)
    seed.check_compatible(source, {"network": n["network"], "prune": n["prune"]})
    n["source"] = source
    try:
        client = SupervisorClient(n["server_url"], timeout=float(n["stop_timeout"]) + 30)
        client.check_running()
        info = program_info(client, n["source_program"])
    except (SupervisorError, xmlrpc.client.Fault, ValueError) as exc:
        raise ValidationError("server_url", "cannot use supervisord (%s)" % exc) from None
    n["client"] = client
    running = info is not None and info.get("statename") in seed.RUNNING_STATES
    n["running"] = running
    if running and not n["stop_source"]:
        raise ValidationError(
            "stop_source",
            "the source %s is %s under supervisord (%s) and stop_source is false: a running source cannot be copied "
            "consistently" % (source["name"], info["statename"], n["source_program"]),
        )
    if not running and not seed.lock_is_free(source["netdir"]):
        raise ValidationError(
            "source_datadir",
            "a bitcoind holds %s/.lock but supervisord's %s is not running: the source runs outside supervision; "
            "stop it first" % (source["netdir"], n["source_program"]),
        )
    return n


def run_seed(n: dict) -> dict:
    """Stop the source, copy under both datadir locks, start the source. Returns the result; raises on failure
    after the source was started again (the failure message says whether that worked)."""
    client, program = n["client"], n["source_program"]
    out: dict = {}
    error = None
    started = seed.now()
    if n["running"]:
        client.call("stopProcess", program, True)
        info = program_info(client, program) or {}
        if info.get("statename") not in ("STOPPED", "EXITED"):
            raise seed.SeedError("supervisord did not stop %s (state %s)" % (program, info.get("statename")))
    try:
        seed.ensure_netdir(n["datadir"], n["netdir"], n["uid"], n["gid"])
        with (
            seed.datadir_lock(n["source"]["netdir"], "source_datadir"),
            seed.datadir_lock(n["netdir"], "datadir", n["uid"], n["gid"]),
        ):
            copy_start = seed.now()
            files = seed.source_files(n["source"]["netdir"])
            steps = seed.plan(files, n["uid"], n["gid"], n["hard_links"])
            out["files"] = seed.summary(steps)
            built = seed.build(n["source"]["netdir"], n["netdir"], steps, n["uid"], n["gid"])
            out["files"]["fallback_copies"] = built["fallback_copies"]
            out["files"]["linked"], out["files"]["copied"] = built["linked"], built["copied"]
            out["manifest_sha256"] = seed.manifest_digest(built["manifest"])
            out["copy_seconds"] = round(seed.now() - copy_start, 3)
            out["marker"] = {
                "source": n["source_name"],
                "source_datadir": n["source_datadir"],
                "network": n["network"],
                "time": int(time.time()),
                "files": out["files"],
                "manifest_sha256": out["manifest_sha256"],
            }
            seed.write_marker(n["netdir"], out["marker"], built["manifest"], n["uid"], n["gid"])
    except (OSError, seed.SeedError, safe_fs.UnsafePath, ValidationError) as exc:
        error = "seeding %s from %s failed, the target is left as it was: %s" % (n["name"], n["source_name"], exc)
    if n["running"]:
        try:
            client.call("startProcess", program, True)
        except (SupervisorError, xmlrpc.client.Fault) as exc:
            error = (error + "; " if error else "") + "starting the source %s again failed: %s" % (program, exc)
    out["source_downtime"] = round(seed.now() - started, 3) if n["running"] else 0.0
    if error:
        raise seed.SeedError(error)
    return out


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    error = None
    n = None
    try:
        n = prepare(module.params)
    except (ValidationError, seed.SeedError, safe_fs.UnsafePath, SupervisorError, OSError) as exc:
        error = str(exc)
    if error is not None:
        module.fail_json(msg=error)
    result = {"changed": False, "seeded": False, "network_dir": n["netdir"]}
    if n["state"] == "seeded":
        result["marker"] = n["marker"]
        result["summary"] = "already seeded from %s" % n["marker"].get("source", "?")
        module.exit_json(**result)
    result.update(changed=True, seeded=True, source_was_running=n["running"])
    summary_line = "seed %s from %s (%s)" % (n["netdir"], n["source_name"], n["source"]["netdir"])
    if module._diff:
        result["diff"] = {
            "before": "",
            "after": summary_line + "\n",
            "before_header": n["netdir"],
            "after_header": n["netdir"],
        }
    if module.check_mode:
        try:
            result["files"] = seed.summary(
                seed.plan(seed.source_files(n["source"]["netdir"]), n["uid"], n["gid"], n["hard_links"])
            )
        except (OSError, seed.SeedError) as exc:
            error = str(exc)
        if error is not None:
            module.fail_json(msg="source_datadir: %s" % error)
        result["summary"] = "would seed from %s - %s files (%s hard-linked, %s copied)%s" % (
            n["source_name"],
            result["files"]["files"],
            result["files"]["linked"],
            result["files"]["copied"],
            ", stopping the running source" if n["running"] else "",
        )
        module.exit_json(**result)
    try:
        result.update(run_seed(n))
    except (seed.SeedError, SupervisorError, xmlrpc.client.Fault, OSError) as exc:
        error = str(exc)
    if error is not None:
        module.fail_json(msg=error, seeded=False, network_dir=n["netdir"])
    files = result["files"]
    result["summary"] = (
        "seeded from %s - %s files (%s hard-linked, %s copied and sha256-verified), source down %s s"
        % (
            n["source_name"],
            files["files"],
            files["linked"],
            files["copied"],
            result["source_downtime"],
        )
    )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
