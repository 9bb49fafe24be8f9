#!/usr/bin/python
# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-instance kernel limits: one systemd slice per limited bitcoind instance."""

from __future__ import annotations

DOCUMENTATION = r"""
module: bitcoind_limits
short_description: Kernel-enforced memory, CPU and IO limits per bitcoind instance (systemd slices)
version_added: 0.2.0
author:
  - nodefleet developers (@nodefleet)
description:
  - Writes one systemd slice unit per instance that has a limit,
    C(<unit_dir>/nodefleet-<escaped name>.slice) (the name escaped as C(systemd-escape) does, so
    C(core-regtest) is C(nodefleet-core\x2dregtest.slice) and never nests inside another instance's
    slice), with C(MemoryMax=), C(CPUQuota=) and C(IOWeight=). The instance's supervisord program
    enters it through C(systemd-run --scope --slice=...) (the bitcoind role builds that command), so
    the kernel enforces the limits on every process of the instance while supervisord stays its parent.
  - Applies a changed limit live (C(systemctl daemon-reload) re-applies a loaded slice's cgroup
    settings; no restart of the instance) and reads every requested limit back from the kernel's cgroup
    files (v2 C(memory.max)/C(cpu.max), v1 C(memory.limit_in_bytes)/C(cpu.cfs_quota_us)); a limit the
    kernel does not show fails the task.
  - Before anything is written, fails when the host cannot enforce a requested limit (the controller is
    missing or mounted read-only, as in a container whose cgroup hierarchies are read-only) and compares
    the sum of the instances' memory limits with the host's memory (O(memory_overcommit)).
  - Removes the slice unit of an instance that has no limit any more or is absent (only files this
    module wrote, recognised by their first line).
options:
  instances:
    description: Every instance of the host; those without a limit (and absent ones) get no slice.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Instance name.
        type: str
        required: true
      state:
        description: V(absent) removes the instance's slice unit.
        type: str
        choices: [present, absent]
        default: present
      memory_max:
        description: Memory limit, a whole number with an optional K/M/G/T suffix (powers of 1024), e.g. V(2G).
        type: raw
      cpu_quota:
        description: CPU limit in percent of one CPU, e.g. V(150%) (1.5 CPUs).
        type: raw
      io_weight:
        description: Proportional IO weight from 1 to 10000 (default of the kernel 100); not a hard limit.
        type: raw
  memory_overcommit:
    description:
      - What to do when the sum of the instances' memory limits exceeds the host's memory (MemTotal, or
        the memory limit of the cgroup the host itself runs in when that is lower).
      - V(warn) returns a warning, V(fail) fails before anything is written.
    type: str
    choices: [warn, fail]
    default: warn
  unit_dir:
    description: Directory of the slice units.
    type: path
    default: /etc/systemd/system
attributes:
  check_mode:
    support: full
    description: Reports which slice units would change (and the diff) without writing or reloading.
  diff_mode:
    support: full
    description: Shows the slice units as they would be written.
  platform:
    support: full
    platforms: posix
    description: Needs systemd as the init system and cgroup controllers it can write.
notes:
  - On cgroup v1 systemd scales C(IOWeight=) to C(blkio.weight)/C(blkio.bfq.weight); the module checks
    that the weight file exists, not its value.
  - Memory limits do not cover swap; on a host with swap a process over the limit is swapped out before
    the kernel's OOM killer ends it.
"""

EXAMPLES = r"""
- name: Limit two instances, leave the third unlimited
  nodefleet.bitcoin.bitcoind_limits:
    instances:
      - {name: main1, memory_max: 2G, cpu_quota: 150%}
      - {name: signet1, memory_max: 1G, cpu_quota: 50%, io_weight: 50}
      - {name: regtest1}
    memory_overcommit: fail
"""

RETURN = r"""
instances:
  description: Per instance with a limit, the slice and what the kernel enforces.
  returned: always
  type: dict
  sample:
    main1:
      slice: nodefleet-main1.slice
      unit_file: /etc/systemd/system/nodefleet-main1.slice
      cgroup: /nodefleet.slice/nodefleet-main1.slice
      memory_max: 2147483648
      cpu_quota: 150
      io_weight: null
      enforced: {memory_max: 2147483648, cpu_quota: 150}
      changed: false
removed:
  description: Slice unit files removed (instances without limits or absent).
  returned: always
  type: list
  elements: str
memory:
  description: Sum of the memory limits and the host's memory, in bytes.
  returned: always
  type: dict
  sample: {limits_bytes: 3221225472, host_bytes: 8335265792, overcommitted: false}
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import cgroup
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import (
    ValidationError,
    check_abs_path,
    check_name,
)


def parse_instances(specs: list) -> dict:
    out = {}
    for spec in specs:
        name = check_name("instances.name", spec["name"])
        if name in out:
            raise ValidationError("instances", "instance %r is listed twice" % name)
        limits = {"memory_max": None, "cpu_quota": None, "io_weight": None}
        if spec.get("state", "present") == "present":
            prefix = "instances[%s]." % name
            if spec.get("memory_max") not in (None, ""):
                limits["memory_max"] = cgroup.parse_memory(prefix + "memory_max", spec["memory_max"])
            if spec.get("cpu_quota") not in (None, ""):
                limits["cpu_quota"] = cgroup.parse_cpu_quota(prefix + "cpu_quota", spec["cpu_quota"])
            if spec.get("io_weight") not in (None, ""):
                limits["io_weight"] = cgroup.parse_io_weight(prefix + "io_weight", spec["io_weight"])
        out[name] = limits
    return out


def read_text(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            instances=dict(
                type="list",
                elements="dict",
                default=[],
                options=dict(
                    name=dict(type="str", required=True),
                    state=dict(type="str", choices=["present", "absent"], default="present"),
                    memory_max=dict(type="raw"),
                    cpu_quota=dict(type="raw"),
                    io_weight=dict(type="raw"),
                ),
            ),
            memory_overcommit=dict(type="str", choices=["warn", "fail"], default="warn"),
            unit_dir=dict(type="path", default="/etc/systemd/system"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    failure = None
    try:
        check_abs_path("unit_dir", params["unit_dir"])
        wanted = parse_instances(params["instances"])
    except ValidationError as exc:
        failure = str(exc)
    if failure is not None:
        module.fail_json(msg=failure)

    limited = {name: lim for name, lim in wanted.items() if cgroup.has_limits(lim)}
    unit_dir = params["unit_dir"]

    # Which slice files exist (ours), which must exist, and with what content.
    existing = {}
    if os.path.isdir(unit_dir):
        for entry in sorted(os.listdir(unit_dir)):
            if entry.startswith("nodefleet-") and entry.endswith(".slice"):
                text = read_text(os.path.join(unit_dir, entry)) or ""
                if text.startswith(cgroup.UNIT_MARKER):
                    existing[entry] = text
    desired = {cgroup.slice_name(name): cgroup.render_slice(name, lim) for name, lim in limited.items()}
    to_write = {unit: text for unit, text in desired.items() if existing.get(unit) != text}
    to_remove = sorted(unit for unit in existing if unit not in desired)

    mountinfo = read_text("/proc/self/mountinfo") or ""
    mounts = cgroup.controller_mounts(mountinfo)

    # Can this host enforce what is asked? Decide before anything is written.
    reasons = []
    if limited:
        if not os.path.isdir("/run/systemd/system"):
            reasons.append("systemd is not the init system of this host (no /run/systemd/system)")
        if not os.access(cgroup.SYSTEMD_RUN, os.X_OK):
            reasons.append("%s is missing" % cgroup.SYSTEMD_RUN)
        for option in cgroup.LIMIT_KEYS:
            users = sorted(name for name, lim in limited.items() if lim[option] is not None)
            if users:
                why = cgroup.unsupported_reason(option, mounts)
                if why:
                    reasons.append("%s (requested by %s): %s" % (option, ", ".join(users), why))
    if reasons:
        module.fail_json(msg="this host cannot enforce the requested limits: " + "; ".join(reasons))

    own = cgroup.proc_cgroups(read_text("/proc/1/cgroup") or "")
    host_bytes = cgroup.host_memory(read_text("/proc/meminfo") or "", mounts, own)
    limits_bytes = sum(lim["memory_max"] for lim in limited.values() if lim["memory_max"] is not None)
    over = bool(host_bytes) and limits_bytes > host_bytes
    memory = {"limits_bytes": limits_bytes, "host_bytes": host_bytes, "overcommitted": over}
    if over:
        message = "memory_max of this host's instances adds up to %s, more than the host's memory (%s)" % (
            cgroup.format_bytes(limits_bytes),
            cgroup.format_bytes(host_bytes),
        )
        if params["memory_overcommit"] == "fail":
            module.fail_json(msg=message + " (bitcoind_memory_overcommit: fail)", memory=memory)
        module.warn(message + " (bitcoind_memory_overcommit: warn)")

    changed = bool(to_write or to_remove)
    diff = []
    if module._diff:
        for unit, text in to_write.items():
            diff.append(
                {
                    "before": existing.get(unit, ""),
                    "after": text,
                    "before_header": os.path.join(unit_dir, unit),
                    "after_header": os.path.join(unit_dir, unit),
                }
            )
        for unit in to_remove:
            diff.append(
                {
                    "before": existing[unit],
                    "after": "",
                    "before_header": os.path.join(unit_dir, unit),
                    "after_header": "(removed)",
                }
            )

    result_instances = {}
    for name, lim in limited.items():
        unit = cgroup.slice_name(name)
        result_instances[name] = dict(
            lim, slice=unit, unit_file=os.path.join(unit_dir, unit), changed=unit in to_write, cgroup=None, enforced={}
        )

    if module.check_mode:
        module.exit_json(changed=changed, instances=result_instances, removed=to_remove, memory=memory, diff=diff)

    systemctl = module.get_bin_path("systemctl", required=bool(limited or changed))
    for unit, text in to_write.items():
        path = os.path.join(unit_dir, unit)
        tmp = path + ".nodefleet-tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        module.atomic_move(tmp, path, unsafe_writes=False)
    for unit in to_remove:
        path = os.path.join(unit_dir, unit)
        if os.path.exists(path):
            os.unlink(path)
    if changed:
        # daemon-reload re-applies a loaded slice's cgroup settings: a changed limit is live now.
        rc, out, err = module.run_command([systemctl, "daemon-reload"])
        if rc != 0:
            module.fail_json(msg="systemctl daemon-reload failed: %s" % (err or out).strip())

    # Read back what the kernel enforces (starting a slice is idempotent: it only creates the cgroup).
    errors = []
    for name, lim in limited.items():
        unit = result_instances[name]["slice"]
        rc, out, err = module.run_command([systemctl, "start", unit])
        if rc != 0:
            errors.append("%s: systemctl start %s failed: %s" % (name, unit, (err or out).strip()))
            continue
        rc, out, err = module.run_command([systemctl, "show", "--property=ControlGroup", "--value", unit])
        path = out.strip()
        if rc != 0 or not path.startswith("/"):
            errors.append("%s: systemd has no cgroup for %s (%s)" % (name, unit, (err or out).strip()))
            continue
        enforced = cgroup.read_limits(mounts, path)
        result_instances[name]["cgroup"] = path
        result_instances[name]["enforced"] = {k: v for k, v in enforced.items() if lim.get(k) is not None}
        errors.extend(cgroup.enforcement_errors(name, lim, enforced, path))
    if errors:
        module.fail_json(
            msg="the kernel does not enforce the requested limits: " + "; ".join(errors),
            instances=result_instances,
            changed=changed,
        )
    module.exit_json(changed=changed, instances=result_instances, removed=to_remove, memory=memory, diff=diff)


if __name__ == "__main__":
    main()
