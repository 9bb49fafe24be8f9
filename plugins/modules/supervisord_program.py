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
  - Every value is literal. The module escapes C(%) (supervisord %-expands every value, log file names twice) so
    that what supervisord reads back is exactly what was given; supervisord's own expansions such as
    C(%(program_name\)s) are therefore not available (write the name out).
  - Every value is refused, before anything is written, unless supervisord's parser and the collection's read it
    back identically; no control or line-break character (also C(\x0b), C(\x0c), C(\x1c)-C(\x1e), C(\x85),
    C(\u2028), C(\u2029)), no leading or trailing whitespace, no whitespace followed by C(;) or C(#).
    All programs of a batch are validated before the first file is written.
  - Files are written race-free through a descriptor of O(conf_dir) opened without following symlinks (a
    O(conf_dir) with a symlink in its path is refused); a program file that is a symlink is replaced by a regular
    file (its target is not touched), one that is a directory or a symlink to a directory is refused.
  - "Options supervisord only reads when the process is next spawned, stopped or exits (O(priority),
    O(autostart), O(autorestart), O(startsecs), O(startretries), O(exitcodes), O(stopsignal), O(stopwaitsecs),
    O(stdout_logfile_maxbytes), O(stdout_logfile_backups)) do not need a restart: with the default
    O(reload_when=restart) a change limited to them is written and B(not applied). supervisord keeps the old values
    in memory until the group is next re-added, which restarts the process: when another option changes, when
    O(state=restarted), when O(state=started) finds the program not running, with O(reload_when=now), or when
    supervisord itself restarts. Such a program is reported with RV(pending=true) and RV(pending_options);
    the file remembers what is loaded (a C(; nodefleet-loaded:) comment) so later runs keep it pending."
  - "C(started), C(restarted) and C(present) with autostart also detect a restart loop (a program that reaches
    RUNNING and then keeps dying, which supervisord never declares FATAL): unexpected exits recorded in
    supervisord's main log (lines C(exited: NAME ... not expected), a non-zero status or a signal supervisord did not
    send; stops asked for are not counted) within O(restart_loop_window) and after this run last stopped or
    started the program are counted; O(restart_loop_threshold) or more fails the task naming the program,
    the count and the window, with the (masked) log lines. Every program's count is returned in RV(restarts)."
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
      - Command line (a string) or a list of words; the first word must be an absolute path to the executable.
        Required unless V(absent).
      - A string is written as it is and split by supervisord like a POSIX shell would (C(shlex.split)), so a word
        holding whitespace (a path with a space) must be quoted in it. A list is quoted by the module (C(shlex.quote))
        so every word reaches the process exactly as given; use a list whenever a word comes from a variable.
      - Put no secret here (it is visible in C(ps)); use O(environment) or a config file.
    type: raw
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
  restart_loop_threshold:
    description:
      - Fail when a program meant to run (O(state=started), V(restarted), or V(present) with autostart) exited
        unexpectedly this many times within O(restart_loop_window). V(0) disables the check (the counts are still
        returned).
      - Needs supervisord's main log (C([supervisord] logfile), read with C(readLog)); only its last 1 MiB is
        read. When it cannot be read the module warns and does not check.
    type: int
    default: 3
  restart_loop_window:
    description:
      - Seconds back from now in which unexpected exits are counted; exits before this run last stopped or started
        the program are never counted. V(0) disables the check.
    type: int
    default: 3600
  reload_when:
    description:
      - V(restart) (default) leaves a change limited to the options supervisord reads at the next spawn/stop
        pending (written, not loaded, no restart); see the description.
      - V(now) re-adds the group (restarting the process) for such a change too.
    type: str
    choices: [restart, now]
    default: restart
  serial_restarts:
    description:
      - Batch form. V(true) restarts the programs that need it (updated groups, O(state=restarted)) one at a time,
        each confirmed RUNNING before the next; a failure stops the sequence and
        the files of the programs not reached yet are restored. Added and removed programs, and the others, are
        handled together as usual.
      - V(false) (default) restarts all of them together in one window.
    type: bool
    default: false
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
        type: raw
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
restarts:
  description:
    - Unexpected exits of the program in supervisord's main log within O(restart_loop_window) (since this run last
      stopped or started it); null when the log cannot be read or the program is absent.
  returned: single form
  type: int
  sample: 0
pending:
  description:
    - Whether the file holds settings supervisord has not loaded yet (a change limited to the options listed in the
      description, left for the next time the group is re-added; see O(reload_when)).
  returned: single form
  type: bool
  sample: false
pending_options:
  description: The options whose new values supervisord has not loaded yet (empty when none).
  returned: single form
  type: list
  elements: str
  sample: [stopwaitsecs]
programs:
  description: Batch form, program name -> the per-program result (C(changed), C(conf_file), C(applied),
    C(state_before), C(state), C(pid), C(restarts), C(pending), C(pending_options)).
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
      restarts: 0
      pending: false
      pending_options: []
"""

import contextlib
import os
import stat
import time
import xmlrpc.client

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.common import ValidationError
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.safe_fs import (
    UnsafePath,
    inspect_path,
    lstat_at,
    open_dir,
    read_at,
    set_attrs_at,
    unlink_at,
    write_at,
)
from ansible_collections.nodefleet.bitcoin.plugins.module_utils.supervisord import (
    ACTIVE_STATES,
    BACKOFF,
    EXITED,
    FATAL,
    FAULT_ALREADY_ADDED,
    FAULT_ALREADY_STARTED,
    FAULT_BAD_NAME,
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
    _environment_of,
    conf_file_for,
    loaded_state,
    log_lines_about,
    masked_diff,
    normalize_program,
    parse_program,
    program_options,
    read_marker,
    render_program,
    scrub,
    soft_changes,
    unexpected_exit_lines,
    wait_for,
    with_marker,
)

FILE_OWNER = "root"
FILE_GROUP = "root"
FILE_MODE = "0600"
FILE_MODE_BITS = 0o600
RPC_TIMEOUT = 30.0
STOP_MARGIN = 10
# How much of supervisord's main log is read (readLog) to count unexpected exits.
MAIN_LOG_BYTES = 1 << 20
START_MARGIN = 30

STATES = ["present", "started", "stopped", "restarted", "absent"]


def program_spec(top_level: bool) -> dict:
    spec = {
        "name": {"type": "str"},
        "state": {"type": "str", "choices": STATES},
        "command": {"type": "raw"},
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
            "restart_loop_threshold": {"type": "int", "default": 3},
            "restart_loop_window": {"type": "int", "default": 3600},
            "reload_when": {"type": "str", "choices": ["restart", "now"], "default": "restart"},
            "serial_restarts": {"type": "bool", "default": False},
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
    for option in ("restart_loop_threshold", "restart_loop_window"):
        if (params.get(option) or 0) < 0:
            raise ValidationError(option, f"must be >= 0 (0 disables the check), got {params[option]}")
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


class Failure(Exception):
    """The module must fail with this message (raised, then reported outside every except block)."""

    def __init__(self, msg, **extra):
        super().__init__(msg)
        self.msg = msg
        self.extra = extra


def started_kind(prog: dict) -> bool:
    """Whether the program is meant to be running after the run (state started/restarted, present+autostart)."""
    if prog["state"] in ("started", "restarted"):
        return True
    autostart = prog.get("autostart") if prog.get("autostart") is not None else SUPERVISOR_DEFAULTS["autostart"]
    return prog["state"] == "present" and bool(autostart)


def decide_apply(prog: dict, loaded, wanted: dict, statename, reload_when: str) -> tuple:
    """(action, pending options) for a program that is not absent.

    ``loaded`` is what supervisord has loaded (``loaded_state`` form), ``"unknown"`` when the
    file and supervisord disagree in a way this module did not record, None when the group
    is not loaded. Actions: ``add``, ``update`` (re-add: restarts the process), ``defer``
    (write the file, leave the loaded settings: only SOFT_OPTIONS differ), ``none``.
    """
    if loaded is None:
        return "add", []
    if loaded == "unknown":
        return "update", []
    hard, soft = soft_changes(loaded, wanted)
    if hard:
        return "update", []
    if not soft:
        return "none", []
    not_running = statename not in (RUNNING, STARTING)
    force = reload_when == "now" or prog["state"] == "restarted" or (prog["state"] == "started" and not_running)
    return ("update", []) if force else ("defer", soft)


class Runner:
    def __init__(self, module, client, programs, batch=False):
        self.module = module
        self.client = client
        self.programs = programs
        self.prefix = {p["name"]: (f"programs[{i}]." if batch else "") for i, p in enumerate(programs)}
        self.secrets = [f"{v}" for prog in programs for v in (prog.get("environment") or {}).values() if f"{v}" != ""]
        self.results = {}
        self.stopwait = {}
        self.diffs = []
        self.failures = []
        self.dir_fds = {}
        self.touched = {}  # program -> time.time() when this run stopped, re-added or started it

    def fail(self, msg, **kwargs):
        raise Failure(scrub(msg, self.secrets), **kwargs)

    def close(self):
        for fd in self.dir_fds.values():
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.dir_fds = {}

    def infos(self):
        return {group: procs[0] for group, procs in self.client.process_infos().items()}

    def statename(self, infos, name):
        info = infos.get(name)
        return info["statename"] if info else None

    def touch(self, name):
        self.touched.setdefault(name, time.time())

    # -- files ---------------------------------------------------------------------
    def conf_dir_fd(self, prog):
        """An O_NOFOLLOW descriptor of the program's conf_dir (None in check mode when it is missing)."""
        conf_dir = prog["conf_dir"]
        if conf_dir in self.dir_fds:
            return self.dir_fds[conf_dir]
        option = self.prefix[prog["name"]] + "conf_dir"
        error = None
        fd = None
        try:
            if self.module.check_mode:
                kind = inspect_path(conf_dir)
                if kind not in ("dir", "missing"):
                    error = f"{conf_dir} is not a directory"
                elif kind == "dir":
                    fd = open_dir(conf_dir)
            else:
                fd = open_dir(conf_dir)
        except UnsafePath as exc:
            error = f"{exc.path} {exc.reason} (conf_dir {conf_dir})"
        except FileNotFoundError:
            error = f"{conf_dir} does not exist (it must be the directory supervisord's [include] reads)"
        except OSError as exc:
            error = f"cannot open {conf_dir}: {exc.strerror or exc}"
        if error is not None:
            raise ValidationError(option, error)
        self.dir_fds[conf_dir] = fd
        return fd

    def read_current(self, prog, fd, path):
        """The program file as it is: kind (missing/file/symlink), text, raw bytes, stat, link target."""
        fname = os.path.basename(path)
        current = {"kind": "missing", "text": None, "data": None, "st": None, "link": None}
        if fd is None:
            return current
        option = self.prefix[prog["name"]] + "name"
        error = None
        try:
            st = lstat_at(fd, fname)
            if st is None:
                return current
            current["st"] = st
            if stat.S_ISLNK(st.st_mode):
                current["kind"] = "symlink"
                current["link"] = os.readlink(fname, dir_fd=fd)
                try:
                    target = os.stat(fname, dir_fd=fd)  # only looks: the target is never opened or changed
                except OSError:
                    target = None
                if target is not None and stat.S_ISDIR(target.st_mode):
                    error = (
                        f"{path} is a symlink to a directory; refusing to replace it (remove it or pick another name)"
                    )
            elif stat.S_ISDIR(st.st_mode):
                error = f"{path} is a directory; refusing to replace it (remove it or pick another name)"
            elif not stat.S_ISREG(st.st_mode):
                error = f"{path} is not a regular file; refusing to replace it"
            else:
                data = read_at(fd, fname, shown=path)
                current.update(kind="file", data=data, text=None if data is None else data.decode("utf-8", "replace"))
                if data is None:
                    current["kind"] = "missing"
        except UnsafePath as exc:
            error = f"{exc.path} {exc.reason}"
        except OSError as exc:
            error = f"cannot read {path}: {exc.strerror or exc}"
        if error is not None:
            raise ValidationError(option, error)
        return current

    def plan_files(self, pre):
        """Read every program's file and decide everything before anything is written.

        ``pre`` is reloadConfig's view before this run writes: {name: "sync"|"drift"|"new"},
        None in check mode (then the loaded state is taken from the file and its marker).
        """
        plans = []
        reload_when = self.module.params.get("reload_when") or "restart"
        before_infos = self._before_infos
        for prog in self.programs:
            name = prog["name"]
            path = conf_file_for(prog)
            fd = self.conf_dir_fd(prog)
            current = self.current[name]
            before = current["text"]
            self.stopwait[name] = stop_wait_seconds(prog, before)
            statename = self.statename(before_infos, name)
            action, pending = "none", []
            after = None
            if prog["state"] != "absent":
                body = render_program(prog)
                wanted = program_options(body)
                loaded = self._loaded(name, current, pre, before_infos)
                action, pending = decide_apply(prog, loaded, wanted, statename, reload_when)
                after = with_marker(body, loaded if action == "defer" else None)
            elif name in before_infos:
                action = "remove"
            content_changed = current["kind"] == "symlink" or before != after
            attrs_changed = False
            if after is not None and current["kind"] == "file" and not content_changed:
                st = current["st"]
                attrs_changed = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) != (0, 0, FILE_MODE_BITS)
            plans.append(
                {
                    "prog": prog,
                    "path": path,
                    "fd": fd,
                    "current": current,
                    "before": before,
                    "after": after,
                    "content_changed": content_changed,
                    "attrs_changed": attrs_changed,
                    "action": action,
                    "pending": pending,
                    "written": False,
                }
            )
            if content_changed and self.module._diff:
                diff = masked_diff(path, before, after, self.secrets)
                if current["kind"] == "symlink":
                    diff["before_header"] = f"{path} (a symlink; replaced by a regular file, its target untouched)"
                self.diffs.append(diff)
        return plans

    def read_all(self):
        """Open every conf_dir and read every program file (refusing what cannot be replaced) first."""
        self.current = {}
        for prog in self.programs:
            current = self.read_current(prog, self.conf_dir_fd(prog), conf_file_for(prog))
            self.current[prog["name"]] = current
            # the values in the current file are secrets too (a changed password's old value)
            old_env = _environment_of(current["text"]) or {}
            self.secrets.extend(f"{v}" for env in old_env.values() for v in env.values() if f"{v}" != "")

    def _loaded(self, name, current, pre, before_infos):
        """What supervisord has loaded for this program (see decide_apply)."""
        marker = read_marker(current["text"])
        if pre is None:  # check mode: trust the file and its marker
            if name not in before_infos:
                return None
            if marker is not None:
                return marker
            options = program_options(current["text"])
            return loaded_state(options) if options is not None else "unknown"
        status = pre.get(name)
        if status == "new" or name not in before_infos:
            return None
        if status == "sync":
            options = program_options(current["text"]) if current["kind"] == "file" else None
            return loaded_state(options) if options is not None else "unknown"
        return marker if marker is not None else "unknown"

    def write_files(self, plans):
        """Write (or delete) every planned file; on any error restore the ones already written."""
        error = None
        for plan in plans:
            fname = os.path.basename(plan["path"])
            try:
                if plan["after"] is None:
                    if plan["current"]["kind"] != "missing":
                        plan["written"] = True
                        unlink_at(plan["fd"], fname)
                elif plan["content_changed"]:
                    plan["written"] = True
                    write_at(plan["fd"], fname, plan["after"], uid=0, gid=0, mode=FILE_MODE_BITS, shown=plan["path"])
                elif plan["attrs_changed"]:
                    set_attrs_at(plan["fd"], fname, uid=0, gid=0, mode=FILE_MODE_BITS, shown=plan["path"])
            except UnsafePath as exc:
                error = ValidationError(self.prefix[plan["prog"]["name"]] + "name", f"{exc.path} {exc.reason}")
            except OSError as exc:
                error = ValidationError(
                    self.prefix[plan["prog"]["name"]] + "conf_dir",
                    f"cannot write {plan['path']}: {exc.strerror or exc}",
                )
            if error is not None:
                break
        if error is not None:
            self.restore_files(plans)
            raise ValidationError(error.option, error.reason + "; every file written by this run was restored")

    def restore_files(self, plans):
        """Put back what was there before this run (file bytes and attributes, symlink, or nothing)."""
        for plan in plans:
            if not plan["written"]:
                continue
            current = plan["current"]
            fname = os.path.basename(plan["path"])
            with contextlib.suppress(OSError, UnsafePath):
                if current["kind"] == "file":
                    st = current["st"]
                    write_at(
                        plan["fd"], fname, current["data"], uid=st.st_uid, gid=st.st_gid, mode=stat.S_IMODE(st.st_mode)
                    )
                elif current["kind"] == "symlink":
                    unlink_at(plan["fd"], fname)
                    os.symlink(current["link"], fname, dir_fd=plan["fd"])
                else:
                    unlink_at(plan["fd"], fname)
            plan["written"] = False

    # -- supervisord ---------------------------------------------------------------
    def reload(self, plans, written, probe=False):
        """reloadConfig -> (added, changed, removed); a refused configuration fails (files restored if written).

        ``probe``: the call before anything is written; a refusal returns None (the files this
        run writes may be what fixes it; the call after writing decides).
        """
        refused = None
        try:
            return self.client.reload_config()
        except xmlrpc.client.Fault as exc:
            if exc.faultCode != FAULT_CANT_REREAD:
                raise
            refused = exc.faultString
        if probe:
            return None
        if written:
            self.restore_files(plans)
        self.fail(
            f"conf_dir: supervisord refused the configuration (reloadConfig: {refused}); "
            + ("the previous files were restored" if written else "nothing was changed")
        )
        return None

    def stop_and_wait(self, names, groups=False):
        """Stop the given programs (BACKOFF included) and wait, in one window, until all are stopped."""
        if not names:
            return
        for name in names:
            self.touch(name)
            try:
                if groups:
                    self.client.call("stopProcessGroup", name, False)
                else:
                    self.client.call("stopProcess", namespec(name), False)
            except xmlrpc.client.Fault as exc:
                if exc.faultCode not in (FAULT_NOT_RUNNING, FAULT_BAD_NAME):
                    raise
        timeout = max(self.stopwait.get(n, SUPERVISOR_DEFAULTS["stopwaitsecs"]) for n in names)

        def all_stopped():
            infos = self.infos()
            return all(self.statename(infos, n) in (*STOPPED_STATES, None) for n in names)

        if not wait_for(all_stopped, timeout + STOP_MARGIN):
            infos = self.infos()
            pending = [f"{n} ({self.statename(infos, n)})" for n in names]
            self.fail(f"supervisord did not stop within {timeout + STOP_MARGIN}s: {', '.join(pending)}")

    def remove_groups(self, names):
        for name in names:
            for _attempt in range(50):
                try:
                    self.client.call("removeProcessGroup", name)
                    break
                except xmlrpc.client.Fault as exc:
                    if exc.faultCode == FAULT_BAD_NAME:
                        break
                    if exc.faultCode != FAULT_STILL_RUNNING:
                        raise
                    time.sleep(0.1)
            else:
                self.fail(f"{name}: supervisord still reports the group running; it was not removed")

    def add_groups(self, names):
        for name in names:
            self.touch(name)
            try:
                self.client.call("addProcessGroup", name)
            except xmlrpc.client.Fault as exc:
                if exc.faultCode != FAULT_ALREADY_ADDED:
                    raise

    def start(self, names):
        for name in names:
            self.touch(name)
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

    def failed_names(self):
        return {f.split(":", 1)[0] for f in self.failures}

    def process_step(self, names, applied, infos):
        """Stop/start/confirm what each program's state asks for (one window for all of ``names``)."""
        stop, start, confirm = [], [], []
        for name in names:
            prog = self.progs[name]
            result = self.results[name]
            if prog["state"] != "absent" and name not in infos:
                self.fail(
                    "{}: supervisord did not load the program from {} after reloadConfig; does its [include] "
                    "cover conf_dir?".format(name, result["conf_file"]),
                    programs=self.results,
                )
            action = plan_process(prog, self.statename(infos, name), applied.get(name) in ("added", "updated"))
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
        failed = self.failed_names()
        self.confirm([n for n in confirm if n not in failed])

    def check_restart_loops(self, skip=()):
        """Count each program's unexpected exits in supervisord's main log; fail restart loops."""
        threshold = self.module.params.get("restart_loop_threshold") or 0
        window = self.module.params.get("restart_loop_window") or 0
        names = [p["name"] for p in self.programs if p["state"] != "absent"]
        if not names:
            return
        log = None
        try:
            log = self.client.main_log_tail(MAIN_LOG_BYTES)
        except SupervisorError:
            log = None
        if log is None:
            if threshold and window:
                self.module.warn(
                    "restart_loop_threshold: supervisord's main log cannot be read (readLog; is [supervisord] "
                    "logfile set?), so restart loops are not detected"
                )
            return
        now = time.time()
        failed = self.failed_names()
        for name in names:
            since = max(now - window, self.touched.get(name, 0), 0) if window else self.touched.get(name)
            lines = unexpected_exit_lines(log, name, since) or []
            self.results[name]["restarts"] = len(lines)
            prog = self.progs[name]
            if not threshold or not window or name in failed or name in skip or not started_kind(prog):
                continue
            if len(lines) < threshold:
                continue
            start = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
            detail = " | ".join(log_lines_about(log, name, 5))
            tail = self.client.log_tail(namespec(name))
            self.failures.append(
                f"{name}: restart loop: {len(lines)} unexpected exits within restart_loop_window={window}s "
                f"(counted since {start}; restart_loop_threshold={threshold}); supervisord keeps restarting it. "
                f"supervisord log: {detail}" + (f"; {tail}" if tail else "")
            )

    def run(self):
        check = self.module.check_mode
        self.progs = {p["name"]: p for p in self.programs}
        before_infos = self._before_infos = self.infos()
        self.read_all()
        pre = None
        probed = None if check else self.reload([], written=False, probe=True)
        if probed is not None:
            added, changed, _removed = probed
            pre = {}
            for name in self.progs:
                if name in added:
                    pre[name] = "new"
                elif name in changed:
                    pre[name] = "drift"
                elif name in before_infos:
                    pre[name] = "sync"
        plans = self.plan_files(pre)
        for plan in plans:
            name = plan["prog"]["name"]
            self.results[name] = {
                "changed": plan["content_changed"] or plan["attrs_changed"],
                "conf_file": plan["path"],
                "applied": None,
                "state_before": self.statename(before_infos, name),
                "state": self.statename(before_infos, name),
                "pid": before_infos[name]["pid"] if name in before_infos else None,
                "restarts": None,
                "pending": bool(plan["pending"]),
                "pending_options": list(plan["pending"]),
            }
        applied = {}
        for plan in plans:
            action = plan["action"]
            applied[plan["prog"]["name"]] = {"add": "added", "update": "updated", "remove": "removed"}.get(action)
        if check:
            acted = set()
            for plan in plans:
                prog = plan["prog"]
                name = prog["name"]
                result = self.results[name]
                result["applied"] = applied[name]
                fresh = result["applied"] in ("added", "updated")
                action = plan_process(prog, STOPPED if fresh else result["state"], fresh)
                if result["applied"] or action["stop"] or action["start"]:
                    result["changed"] = True
                    acted.add(name)
            self.check_restart_loops(skip=acted)
            return

        self.write_files(plans)
        _added, changed, _removed = self.reload(plans, written=any(p["written"] for p in plans))
        for plan in plans:
            name = plan["prog"]["name"]
            # the file and supervisord disagree although this run decided nothing was needed: re-add
            if plan["action"] == "none" and name in changed:
                plan["action"], applied[name] = "update", "updated"
            self.results[name]["applied"] = applied[name]
            if applied[name]:
                self.results[name]["changed"] = True
        serial = bool(self.module.params.get("serial_restarts"))
        infos = self.infos()
        restarts = [
            n
            for n, a in applied.items()
            if a == "updated"
            or (self.progs[n]["state"] == "restarted" and not a and self.statename(infos, n) in ACTIVE_STATES)
        ]
        removed_names = [n for n, a in applied.items() if a == "removed"]
        # removals and additions never restart a running program: do them together
        self.stop_and_wait(removed_names, groups=True)
        self.remove_groups(removed_names)
        self.add_groups([n for n, a in applied.items() if a == "added"])
        if not serial:
            updated = [n for n in restarts if applied[n] == "updated"]
            self.stop_and_wait(updated, groups=True)
            self.remove_groups(updated)
            self.add_groups(updated)
            self.process_step(list(self.progs), applied, self.infos())
        else:
            # one restart at a time, each confirmed before the next; a failure stops the sequence
            for index, name in enumerate(restarts):
                if applied[name] == "updated":
                    self.stop_and_wait([name], groups=True)
                    self.remove_groups([name])
                    self.add_groups([name])
                self.process_step([name], applied, self.infos())
                if self.failures:
                    left = restarts[index + 1 :]
                    self.skip_serial(plans, left, applied)
                    break
            if not self.failures:
                self.process_step([n for n in self.progs if n not in restarts], applied, self.infos())
        if not self.failures:
            self.check_restart_loops()
        infos = self.infos()
        for name, result in self.results.items():
            info = infos.get(name)
            result["state"] = info["statename"] if info else None
            result["pid"] = info["pid"] if info else None

    def skip_serial(self, plans, names, applied):
        """serial_restarts: an earlier program failed; put the files of ``names`` back, touch nothing."""
        if not names:
            return
        self.restore_files([p for p in plans if p["prog"]["name"] in names])
        for name in names:
            applied[name] = None
            self.results[name].update(applied=None, changed=False)
        self.failures.append(
            "serial_restarts: not updated or restarted because an earlier program failed: {} "
            "(their files were restored)".format(", ".join(names))
        )


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        mutually_exclusive=[("name", "programs")],
        required_one_of=[("name", "programs")],
    )
    error = None
    client = None
    try:
        programs, batch = normalize_params(module.params)
        client = SupervisorClient(module.params["server_url"], timeout=RPC_TIMEOUT)
    except ValidationError as exc:
        error = str(exc)
    if error is not None:
        module.fail_json(msg=error)
    try:
        client.check_running()
    except (SupervisorError, xmlrpc.client.Fault) as exc:
        error = f"server_url: cannot use supervisord ({exc})"
    if error is not None:
        module.fail_json(msg=error)

    runner = Runner(module, client, programs, batch=batch)
    extra = {}
    try:
        runner.run()
    except ValidationError as exc:
        error = str(exc)
    except Failure as exc:
        error, extra = exc.msg, exc.extra
    except xmlrpc.client.Fault as exc:
        error, extra = f"supervisord refused a call: {exc.faultString}", {"programs": runner.results}
    except SupervisorError as exc:
        error, extra = f"server_url: {exc}", {"programs": runner.results}
    except OSError as exc:
        error, extra = f"conf_dir: {exc.strerror or exc}", {"programs": runner.results}
    finally:
        runner.close()
        with contextlib.suppress(Exception):  # closing a socket must not mask the real result
            client.close()
    if error is not None:
        module.fail_json(msg=scrub(error, runner.secrets), **extra)

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
