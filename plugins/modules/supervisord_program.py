#!/usr/bin/python
# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: supervisord_program
short_description: Write a supervisord [program:x] file and apply it with the narrowest action
version_added: "0.1.0"
description:
  - Writes C([program:<name>]) into C(<conf_dir>/<name>.conf) (owner root, mode 0600, because the environment may
    hold secrets) and applies it through supervisord's XML-RPC interface (the unix socket supervisorctl uses).
  - "Applies with C(reloadConfig) and then, for the managed groups only: added -> C(addProcessGroup);
    changed -> C(stopProcessGroup) + C(removeProcessGroup) + C(addProcessGroup); removed -> C(stopProcessGroup)
    + C(removeProcessGroup). supervisord is never restarted and no other group is touched."
  - C(started) starts what is not running (a program in BACKOFF is stopped first, a FATAL one is started again)
    and confirms it; the module waits until supervisord reports RUNNING, i.e. the process stayed up for
    C(startsecs), and fails naming the program, its state and the tail of its logs otherwise.
  - C(stopped) also stops a program that is in BACKOFF (supervisorctl's C(stop) leaves its retry loop running).
  - Batch form C(programs) (the roles use it, one module execution per host) writes every file, calls
    C(reloadConfig) once, touches only the changed groups, then starts all programs and confirms them together in
    one wait window. The single form is a batch of one.
  - Only options that are set are written; supervisord's own defaults apply to the others.
    For bitcoind set O(autorestart=true) (bitcoind exits 0 on SIGTERM, which the default C(unexpected) treats as
    expected, so the program would stay EXITED) and a long O(stopwaitsecs) (bitcoind flushes its caches on
    shutdown; supervisord sends SIGKILL after O(stopwaitsecs)).
  - All values except O(environment) go to supervisord verbatim, so supervisord's %-expansions (of
    C(program_name), C(ENV_HOME) and so on) work there and a literal C(%) must be written C(%%).
    Environment values are literal (the module escapes C(%)).
author:
  - nodefleet.bitcoin contributors (@nodefleet)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports what would change and writes nothing; only read-only XML-RPC calls are made.
  diff_mode:
    support: full
    details: Environment values are masked on both sides; a changed value is shown as a comment naming the variable.
  platform:
    platforms: posix
options:
  name:
    description:
      - Program name (and supervisord group name); also the file name C(<conf_dir>/<name>.conf).
      - 1-64 letters, digits, C(_) and C(-), starting with a letter or digit.
      - Mutually exclusive with O(programs); one of them is required.
    type: str
  state:
    description:
      - V(present) writes the file and applies it; process state is left as it is, except that a group added or
        updated with autostart starts (and is confirmed like V(started)).
      - V(started) additionally makes sure the program runs and confirms it; V(stopped) makes sure it is stopped
        (also from BACKOFF); V(restarted) stops and starts it (always changed; a group just added or updated counts
        as restarted); V(absent) stops it, removes the group and deletes the file.
      - Default V(present) (not settable at the top level together with O(programs)).
    type: str
    choices: [present, started, stopped, restarted, absent]
  command:
    description:
      - Command line; the first word must be an absolute path to the executable. Required unless V(absent).
      - Put no secret here (it is visible in C(ps)); use O(environment) or a config file.
    type: str
  directory:
    description: Working directory (absolute path).
    type: str
  user:
    description: Run the program as this user (must exist on the host).
    type: str
  environment:
    description:
      - Environment variables, name -> value. Values are secrets (no_log, masked in diffs).
      - Rendered C(KEY="value",...) following supervisord's parser, which has no escape character, so a value must
        not hold both C(') and C("), start or end with a quote, contain a newline, or whitespace followed by C(;) or
        C(#).
    type: dict
  numprocs:
    description: Number of processes; only V(1) is supported (one program per bitcoind instance).
    type: int
  priority:
    description: Start/stop priority (lower starts first).
    type: int
  autostart:
    description: Start the program when supervisord starts (supervisord default V(true)).
    type: bool
  autorestart:
    description:
      - V(true), V(false) or V(unexpected) (supervisord default V(unexpected)).
      - Use V(true) for bitcoind.
    type: raw
  startsecs:
    description: Seconds the program must stay up to count as started (supervisord default 1); >= 0.
    type: int
  startretries:
    description: Failed starts before FATAL (supervisord default 3); >= 0.
    type: int
  exitcodes:
    description: Expected exit codes for O(autorestart=unexpected) (supervisord default V([0])).
    type: list
    elements: int
  stopsignal:
    description: One of V(TERM), V(HUP), V(INT), V(QUIT), V(KILL), V(USR1), V(USR2) (supervisord default V(TERM)).
    type: str
  stopwaitsecs:
    description: Seconds to wait after the stop signal before SIGKILL (supervisord default 10); >= 1.
    type: int
  stopasgroup:
    description: Send the stop signal to the whole process group.
    type: bool
  killasgroup:
    description: Send SIGKILL to the whole process group.
    type: bool
  redirect_stderr:
    description: Send stderr to the stdout log.
    type: bool
  stdout_logfile:
    description: Absolute path, V(AUTO) or V(NONE).
    type: str
  stdout_logfile_maxbytes:
    description: Rotation size, e.g. V(50MB), V(1024KB); V(0) disables rotation.
    type: str
  stdout_logfile_backups:
    description: Rotated stdout logs to keep.
    type: int
  stderr_logfile:
    description: Absolute path, V(AUTO) or V(NONE).
    type: str
  conf_dir:
    description: Directory included by supervisord's C([include] files=); must exist.
    type: path
    default: /etc/supervisor/conf.d
  server_url:
    description:
      - supervisord's XML-RPC endpoint, V(unix:///path/to.sock) or V(http://host:port) (C([inet_http_server])).
      - It must answer before anything is written.
    type: str
    default: unix:///var/run/supervisor.sock
  wait_timeout:
    description:
      - Seconds to wait, in one window for all programs, until started programs are RUNNING.
      - Default is the largest O(startsecs) of those programs plus 30.
    type: int
  programs:
    description:
      - Batch form, mutually exclusive with O(name). Each item takes the per-program options O(name), O(state),
        O(command), O(directory), O(user), O(environment), O(numprocs), O(priority), O(autostart), O(autorestart),
        O(startsecs), O(startretries), O(exitcodes), O(stopsignal), O(stopwaitsecs), O(stopasgroup),
        O(killasgroup), O(redirect_stderr), O(stdout_logfile), O(stdout_logfile_maxbytes),
        O(stdout_logfile_backups), O(stderr_logfile) and O(conf_dir) (defaults to the top-level O(conf_dir)),
        with the same meaning as above.
      - Per-program options must not be given at the top level together with O(programs).
    type: list
    elements: dict
    suboptions:
      name:
        description: Program name, as the top-level O(name).
        type: str
        required: true
      state:
        description: As the top-level O(state).
        type: str
        choices: [present, started, stopped, restarted, absent]
        default: present
      command:
        description: As the top-level O(command).
        type: str
      directory:
        description: As the top-level O(directory).
        type: str
      user:
        description: As the top-level O(user).
        type: str
      environment:
        description: As the top-level O(environment).
        type: dict
      numprocs:
        description: As the top-level O(numprocs).
        type: int
      priority:
        description: As the top-level O(priority).
        type: int
      autostart:
        description: As the top-level O(autostart).
        type: bool
      autorestart:
        description: As the top-level O(autorestart).
        type: raw
      startsecs:
        description: As the top-level O(startsecs).
        type: int
      startretries:
        description: As the top-level O(startretries).
        type: int
      exitcodes:
        description: As the top-level O(exitcodes).
        type: list
        elements: int
      stopsignal:
        description: As the top-level O(stopsignal).
        type: str
      stopwaitsecs:
        description: As the top-level O(stopwaitsecs).
        type: int
      stopasgroup:
        description: As the top-level O(stopasgroup).
        type: bool
      killasgroup:
        description: As the top-level O(killasgroup).
        type: bool
      redirect_stderr:
        description: As the top-level O(redirect_stderr).
        type: bool
      stdout_logfile:
        description: As the top-level O(stdout_logfile).
        type: str
      stdout_logfile_maxbytes:
        description: As the top-level O(stdout_logfile_maxbytes).
        type: str
      stdout_logfile_backups:
        description: As the top-level O(stdout_logfile_backups).
        type: int
      stderr_logfile:
        description: As the top-level O(stderr_logfile).
        type: str
      conf_dir:
        description: As the top-level O(conf_dir); defaults to it.
        type: path
notes:
  - Needs supervisord with C([rpcinterface:supervisor]) and its C([include]) covering O(conf_dir).
  - If supervisord refuses the new configuration (C(reloadConfig) fails), the previous files are restored.
seealso:
  - name: supervisord XML-RPC API
    description: The calls this module makes.
    link: https://supervisord.org/api.html
  - name: community.general issue 5599
    description: Why C(stopped) handles BACKOFF.
    link: https://github.com/ansible-collections/community.general/issues/5599
"""

EXAMPLES = r"""
- name: Run one bitcoind instance under supervisord and confirm it started
  nodefleet.bitcoin.supervisord_program:
    name: bitcoind-main1
    state: started
    command: /opt/bitcoin/core/bin/bitcoind -conf=/var/lib/bitcoind/main1/bitcoin.conf -datadir=/var/lib/bitcoind/main1
    user: bitcoin
    directory: /var/lib/bitcoind/main1
    autorestart: "true"       # bitcoind exits 0 on SIGTERM; "unexpected" would leave it EXITED
    startsecs: 5
    stopwaitsecs: 600         # let bitcoind flush its caches before SIGKILL
    stopsignal: TERM
    redirect_stderr: true
    stdout_logfile: /var/log/supervisor/bitcoind-main1.log

- name: All instances of a host in one execution (one reloadConfig, one start window)
  nodefleet.bitcoin.supervisord_program:
    programs:
      - name: bitcoind-a
        state: started
        command: /opt/bitcoin/core/bin/bitcoind -conf=/var/lib/bitcoind/a/bitcoin.conf -datadir=/var/lib/bitcoind/a
        autorestart: "true"
        stopwaitsecs: 600
      - name: bitcoind-old
        state: absent

- name: A helper with a secret in its environment (masked in diffs and logs)
  nodefleet.bitcoin.supervisord_program:
    name: exporter
    state: started
    command: /usr/local/bin/exporter --listen 127.0.0.1:9332
    environment:
      RPC_PASSWORD: "{{ vault_exporter_rpc_password }}"

- name: Stop a program, even one stuck in BACKOFF
  nodefleet.bitcoin.supervisord_program:
    name: bitcoind-main1
    state: stopped

- name: Remove a program (stop, remove the group, delete the file)
  nodefleet.bitcoin.supervisord_program:
    name: bitcoind-main1
    state: absent
"""

RETURN = r"""
changed:
  description: Whether anything changed (file, supervisord group or process state).
  returned: always
  type: bool
conf_file:
  description: The program's file.
  returned: single form
  type: str
  sample: /etc/supervisor/conf.d/bitcoind-main1.conf
applied:
  description: What was done to the supervisord group, V(added), V(updated), V(removed), or null.
  returned: single form
  type: str
  sample: added
state_before:
  description: supervisord's state name for the process before the run, null when the group was not loaded.
  returned: single form
  type: str
  sample: STOPPED
state:
  description: supervisord's state name after the run (in check mode, the current one), null when not loaded.
  returned: single form
  type: str
  sample: RUNNING
pid:
  description: Process id after the run, 0 when not running, null when not loaded.
  returned: single form
  type: int
  sample: 4242
programs:
  description: Batch form, program name -> the per-program result (C(changed), C(conf_file), C(applied),
    C(state_before), C(state), C(pid)).
  returned: batch form
  type: dict
  sample:
    bitcoind-a:
      changed: true
      conf_file: /etc/supervisor/conf.d/bitcoind-a.conf
      applied: added
      state_before: null
      state: RUNNING
      pid: 4242
"""

import contextlib
import os
import time
import xmlrpc.client

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import (
    ValidationError,
    attributes_differ,
    read_text,
    set_attributes,
    write_file_atomic,
)
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.supervisord import (
    ACTIVE_STATES,
    BACKOFF,
    EXITED,
    FATAL,
    FAULT_ALREADY_STARTED,
    FAULT_CANT_REREAD,
    FAULT_NOT_RUNNING,
    FAULT_STILL_RUNNING,
    PROGRAM_OPTION_NAMES,
    RUNNING,
    STARTING,
    STOPPED,
    STOPPED_STATES,
    STOPPING,
    SUPERVISOR_DEFAULTS,
    SupervisorClient,
    SupervisorError,
    conf_file_for,
    masked_diff,
    normalize_program,
    parse_program,
    render_program,
    scrub,
    wait_for,
)

FILE_OWNER = "root"
FILE_GROUP = "root"
FILE_MODE = "0600"
RPC_TIMEOUT = 30.0
STOP_MARGIN = 10
START_MARGIN = 30

STATES = ["present", "started", "stopped", "restarted", "absent"]


def program_spec(top_level: bool) -> dict:
    spec = {
        "name": {"type": "str"},
        "state": {"type": "str", "choices": STATES},
        "command": {"type": "str"},
        "directory": {"type": "str"},
        "user": {"type": "str"},
        "environment": {"type": "dict", "no_log": True},
        "numprocs": {"type": "int"},
        "priority": {"type": "int"},
        "autostart": {"type": "bool"},
        "autorestart": {"type": "raw"},
        "startsecs": {"type": "int"},
        "startretries": {"type": "int"},
        "exitcodes": {"type": "list", "elements": "int"},
        "stopsignal": {"type": "str"},
        "stopwaitsecs": {"type": "int"},
        "stopasgroup": {"type": "bool"},
        "killasgroup": {"type": "bool"},
        "redirect_stderr": {"type": "bool"},
        "stdout_logfile": {"type": "str"},
        "stdout_logfile_maxbytes": {"type": "str"},
        "stdout_logfile_backups": {"type": "int"},
        "stderr_logfile": {"type": "str"},
        "conf_dir": {"type": "path"},
    }
    if not top_level:
        spec["name"]["required"] = True
        spec["state"]["default"] = "present"
    return spec


def argument_spec() -> dict:
    spec = program_spec(top_level=True)
    spec["conf_dir"]["default"] = "/etc/supervisor/conf.d"
    spec.update(
        {
            "server_url": {"type": "str", "default": "unix:///var/run/supervisor.sock"},
            "wait_timeout": {"type": "int"},
            "programs": {"type": "list", "elements": "dict", "options": program_spec(top_level=False)},
        }
    )
    return spec


# --------------------------------------------------------------------------- pure steps


def normalize_params(params: dict) -> tuple:
    """Module params -> (list of normalised programs, batch?). Single form = a batch of one."""
    conf_dir = params.get("conf_dir")
    if params.get("wait_timeout") is not None and params["wait_timeout"] < 1:
        raise ValidationError("wait_timeout", f"must be >= 1, got {params['wait_timeout']}")
    if params.get("programs") is not None:
        for option in ("state", *PROGRAM_OPTION_NAMES):
            if params.get(option) is not None:
                raise ValidationError(option, "is a per-program option; set it inside each item of programs")
        if not params["programs"]:
            raise ValidationError("programs", "must not be empty")
        raws = [dict(item, conf_dir=item.get("conf_dir") or conf_dir) for item in params["programs"]]
        batch = True
    else:
        raw = {k: params.get(k) for k in ("name", "state", "conf_dir", *PROGRAM_OPTION_NAMES)}
        raws = [raw]
        batch = False
    programs = []
    seen = set()
    for i, raw in enumerate(raws):
        prog = normalize_program(raw, f"programs[{i}]" if batch else None)
        if prog["name"] in seen:
            raise ValidationError(f"programs[{i}].name", f"{prog['name']!r} is given more than once")
        seen.add(prog["name"])
        programs.append(prog)
    return programs, batch


def desired_content(prog: dict):
    """The file content wanted for a program (None = no file)."""
    return None if prog["state"] == "absent" else render_program(prog)


def classify_applied(name: str, added, changed, removed):
    """reloadConfig's lists -> what to do with this group."""
    if name in added:
        return "added"
    if name in changed:
        return "updated"
    if name in removed:
        return "removed"
    return None


def predict_applied(state: str, content_changed: bool, loaded: bool):
    """What reloadConfig would report, as far as can be known without calling it (check mode)."""
    if state == "absent":
        return "removed" if loaded else None
    if not loaded:
        return "added"
    return "updated" if content_changed else None


def plan_process(prog: dict, statename, fresh: bool) -> dict:
    """Which process actions a program needs after its group was applied.

    ``statename`` is supervisord's state name after the apply step (None = not loaded),
    ``fresh`` whether the group was just added or updated. Returns ``{stop, start, confirm}``.
    """
    state = prog["state"]
    autostart = prog.get("autostart") if prog.get("autostart") is not None else SUPERVISOR_DEFAULTS["autostart"]
    plan = {"stop": False, "start": False, "confirm": False}
    if state == "absent" or statename is None:
        return plan
    if fresh and autostart and state in ("present", "started", "restarted"):
        plan["confirm"] = True  # supervisord starts it on add; a fresh group counts as restarted
        return plan
    if state == "present":
        return plan
    if state == "stopped":
        plan["stop"] = statename in ACTIVE_STATES or statename == STOPPING
        return plan
    if state == "restarted":
        plan.update(stop=statename in ACTIVE_STATES or statename == STOPPING, start=True, confirm=True)
        return plan
    # started
    if statename == RUNNING:
        return plan
    if statename == STARTING:
        plan["confirm"] = True
    elif statename in (BACKOFF, STOPPING):
        plan.update(stop=True, start=True, confirm=True)
    else:  # STOPPED, EXITED, FATAL, UNKNOWN
        plan.update(start=True, confirm=True)
    return plan


def confirm_status(info) -> str:
    """``ok`` (RUNNING: up for startsecs), ``wait`` or ``fail`` for one process info."""
    if info is None:
        return "fail"
    statename = info["statename"]
    if statename == RUNNING:
        return "ok"
    if statename in (STARTING, BACKOFF):
        return "wait"  # supervisord is still trying; BACKOFF ends in RUNNING or FATAL
    if statename == STOPPED and not info.get("start"):
        return "wait"  # just added with autostart, not spawned yet
    return "fail"


def stop_wait_seconds(prog: dict, before) -> int:
    """How long supervisord may take to stop this program: the larger of the new and the old stopwaitsecs.

    The old value (from the current file) is what supervisord uses while the old config is loaded.
    """
    values = [prog.get("stopwaitsecs") or SUPERVISOR_DEFAULTS["stopwaitsecs"]]
    for options in parse_program(before or "").values():
        try:
            values.append(int(options.get("stopwaitsecs", SUPERVISOR_DEFAULTS["stopwaitsecs"])))
        except ValueError:
            continue
    return max(values)


def namespec(name: str) -> str:
    return f"{name}:{name}"


# --------------------------------------------------------------------------- run


class Runner:
    def __init__(self, module, client, programs):
        self.module = module
        self.client = client
        self.programs = programs
        self.secrets = [f"{v}" for prog in programs for v in (prog.get("environment") or {}).values() if f"{v}" != ""]
        self.results = {}
        self.stopwait = {}
        self.diffs = []
        self.failures = []

    def fail(self, msg, **kwargs):
        self.module.fail_json(msg=scrub(msg, self.secrets), **kwargs)

    def infos(self):
        return {group: procs[0] for group, procs in self.client.process_infos().items()}

    def statename(self, infos, name):
        info = infos.get(name)
        return info["statename"] if info else None

    # -- files ---------------------------------------------------------------------
    def plan_files(self):
        plans = []
        for prog in self.programs:
            path = conf_file_for(prog)
            if not os.path.isdir(prog["conf_dir"]) and not self.module.check_mode:
                raise ValidationError("conf_dir", "{} is not a directory".format(prog["conf_dir"]))
            before = read_text(path)
            after = desired_content(prog)
            content_changed = before != after
            self.stopwait[prog["name"]] = stop_wait_seconds(prog, before)
            attrs_changed = (
                after is not None and before is not None and attributes_differ(path, FILE_OWNER, FILE_GROUP, FILE_MODE)
            )
            plans.append(
                {
                    "prog": prog,
                    "path": path,
                    "before": before,
                    "after": after,
                    "content_changed": content_changed,
                    "attrs_changed": attrs_changed,
                }
            )
            if content_changed and self.module._diff:
                self.diffs.append(masked_diff(path, before, after))
        return plans

    def write_files(self, plans):
        for plan in plans:
            if plan["after"] is None:
                if plan["before"] is not None:
                    os.unlink(plan["path"])
            elif plan["content_changed"]:
                write_file_atomic(self.module, plan["path"], plan["after"], FILE_OWNER, FILE_GROUP, FILE_MODE)
            else:
                plan["attrs_changed"] = set_attributes(self.module, plan["path"], FILE_OWNER, FILE_GROUP, FILE_MODE)

    def restore_files(self, plans):
        for plan in plans:
            if not plan["content_changed"]:
                continue
            if plan["before"] is None:
                if os.path.exists(plan["path"]):
                    os.unlink(plan["path"])
            else:
                write_file_atomic(self.module, plan["path"], plan["before"], FILE_OWNER, FILE_GROUP, FILE_MODE)

    # -- supervisord ---------------------------------------------------------------
    def stop_and_wait(self, names, groups=False):
        """Stop the given programs (BACKOFF included) and wait, in one window, until all are stopped."""
        if not names:
            return
        for name in names:
            try:
                if groups:
                    self.client.call("stopProcessGroup", name, False)
                else:
                    self.client.call("stopProcess", namespec(name), False)
            except xmlrpc.client.Fault as exc:
                if exc.faultCode != FAULT_NOT_RUNNING:
                    raise
        timeout = max(self.stopwait.get(n, SUPERVISOR_DEFAULTS["stopwaitsecs"]) for n in names)

        def all_stopped():
            infos = self.infos()
            return all(self.statename(infos, n) in (*STOPPED_STATES, None) for n in names)

        if not wait_for(all_stopped, timeout + STOP_MARGIN):
            infos = self.infos()
            pending = [f"{n} ({self.statename(infos, n)})" for n in names]
            self.fail(f"supervisord did not stop within {timeout + STOP_MARGIN}s: {', '.join(pending)}")

    def apply_groups(self, plans):
        """reloadConfig once, then add/update/remove only our groups. Returns name -> applied."""
        try:
            added, changed, removed = self.client.reload_config()
        except xmlrpc.client.Fault as exc:
            if exc.faultCode == FAULT_CANT_REREAD:
                self.restore_files(plans)
                self.fail(
                    f"supervisord refused the configuration (reloadConfig: {exc.faultString}); the previous files were restored"
                )
            raise
        applied = {p["prog"]["name"]: classify_applied(p["prog"]["name"], added, changed, removed) for p in plans}
        to_stop = [n for n, a in applied.items() if a in ("updated", "removed")]
        self.stop_and_wait(to_stop, groups=True)
        for name in to_stop:
            for _attempt in range(50):
                try:
                    self.client.call("removeProcessGroup", name)
                    break
                except xmlrpc.client.Fault as exc:
                    if exc.faultCode != FAULT_STILL_RUNNING:
                        raise
                    time.sleep(0.1)
            else:
                self.fail(f"{name}: supervisord still reports the group running; it was not removed")
        for name, action in applied.items():
            if action in ("added", "updated"):
                self.client.call("addProcessGroup", name)
        return applied

    def start(self, names):
        for name in names:
            try:
                self.client.call("startProcess", namespec(name), False)
            except xmlrpc.client.Fault as exc:
                if exc.faultCode != FAULT_ALREADY_STARTED:
                    self.failures.append(f"{name}: start failed: {exc.faultString}")

    def confirm(self, names):
        """Wait (one window for all) until every program is RUNNING; record failures with log tails."""
        if not names:
            return
        progs = {p["name"]: p for p in self.programs}
        timeout = self.module.params.get("wait_timeout")
        if timeout is None:
            timeout = max((progs[n].get("startsecs") or SUPERVISOR_DEFAULTS["startsecs"]) for n in names)
            timeout += START_MARGIN
        last = {}

        def settled():
            infos = self.infos()
            for n in names:
                last[n] = confirm_status(infos.get(n)), infos.get(n)
            return all(status != "wait" for status, _info in last.values())

        wait_for(settled, timeout, interval=0.25)
        for n in names:
            status, info = last[n]
            if status == "ok":
                continue
            statename = info["statename"] if info else "not loaded"
            why = f"did not reach RUNNING within {timeout}s" if status == "wait" else f"is {statename}"
            detail = [info.get("spawnerr")] if info and info.get("spawnerr") else []
            if statename in (BACKOFF, FATAL, EXITED, STOPPED, STARTING):
                detail.append(self.client.log_tail(namespec(n)))
            self.failures.append(
                "{}: {} (state {}){}".format(
                    n, why, statename, "; " + "; ".join(d for d in detail if d) if detail else ""
                )
            )

    def run(self):
        check = self.module.check_mode
        before_infos = self.infos()
        plans = self.plan_files()
        for plan in plans:
            name = plan["prog"]["name"]
            self.results[name] = {
                "changed": plan["content_changed"] or plan["attrs_changed"],
                "conf_file": plan["path"],
                "applied": None,
                "state_before": self.statename(before_infos, name),
                "state": self.statename(before_infos, name),
                "pid": before_infos[name]["pid"] if name in before_infos else None,
            }
        if check:
            for plan in plans:
                prog = plan["prog"]
                name = prog["name"]
                result = self.results[name]
                result["applied"] = predict_applied(prog["state"], plan["content_changed"], name in before_infos)
                fresh = result["applied"] in ("added", "updated")
                action = plan_process(prog, STOPPED if fresh else result["state"], fresh)
                if result["applied"] or action["stop"] or action["start"]:
                    result["changed"] = True
            return

        self.write_files(plans)
        for plan in plans:
            self.results[plan["prog"]["name"]]["changed"] = plan["content_changed"] or plan["attrs_changed"]
        applied = self.apply_groups(plans)
        infos = self.infos()
        stop, start, confirm = [], [], []
        for prog in self.programs:
            name = prog["name"]
            result = self.results[name]
            result["applied"] = applied[name]
            if applied[name]:
                result["changed"] = True
            if prog["state"] != "absent" and name not in infos:
                self.fail(
                    "{}: supervisord did not load the program from {} after reloadConfig; does its [include] "
                    "cover conf_dir?".format(name, result["conf_file"]),
                    programs=self.results,
                )
            action = plan_process(prog, self.statename(infos, name), applied[name] in ("added", "updated"))
            if action["stop"]:
                stop.append(name)
            if action["start"]:
                start.append(name)
            if action["confirm"]:
                confirm.append(name)
            if action["stop"] or action["start"]:
                result["changed"] = True
        self.stop_and_wait(stop)
        self.start(start)
        failed_to_start = {f.split(":", 1)[0] for f in self.failures}
        self.confirm([n for n in confirm if n not in failed_to_start])
        infos = self.infos()
        for name, result in self.results.items():
            info = infos.get(name)
            result["state"] = info["statename"] if info else None
            result["pid"] = info["pid"] if info else None


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        mutually_exclusive=[("name", "programs")],
        required_one_of=[("name", "programs")],
    )
    try:
        programs, batch = normalize_params(module.params)
        client = SupervisorClient(module.params["server_url"], timeout=RPC_TIMEOUT)
    except ValidationError as exc:
        module.fail_json(msg=str(exc))
    try:
        client.check_running()
    except (SupervisorError, xmlrpc.client.Fault) as exc:
        module.fail_json(msg=f"server_url: cannot use supervisord ({exc})")

    runner = Runner(module, client, programs)
    try:
        runner.run()
    except ValidationError as exc:
        module.fail_json(msg=str(exc))
    except xmlrpc.client.Fault as exc:
        runner.fail(f"supervisord refused a call: {exc.faultString}", programs=runner.results)
    except SupervisorError as exc:
        runner.fail(f"server_url: {exc}", programs=runner.results)
    finally:
        with contextlib.suppress(Exception):  # closing a socket must not mask the real result
            client.close()

    changed = any(r["changed"] for r in runner.results.values())
    if batch:
        out = {"changed": changed, "programs": runner.results}
        if module._diff and runner.diffs:
            out["diff"] = runner.diffs
    else:
        out = dict(next(iter(runner.results.values())))
        out["changed"] = changed
        if module._diff and runner.diffs:
            out["diff"] = runner.diffs[0]
    if runner.failures:
        module.fail_json(msg=scrub("; ".join(runner.failures), runner.secrets), **out)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
