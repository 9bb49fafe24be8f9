# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host state a role decides from, read in one execution, and the checks against it.

``gather`` (run on the host by the ``host_state`` module) reads, without changing anything:
paths (lstat, never following a link; the sha256 of a regular file), directory listings, dpkg
packages, systemd units, users, groups, and the last line of a file that matches a regexp.

The ``*_ok`` functions (the ``host_*`` filters, on the controller) answer "would the task
that manages this change nothing?" from that state, with the same rules as the Ansible module
the task runs (file, copy/template, lineinfile, apt, systemd_service, user, group). A role
skips the task only when the answer is True; anything the state cannot prove (a path not
gathered, a unit systemd does not know, an unreadable file) answers False, and the task runs
as it always did. So a wrong answer can only cost a module execution, never skip a repair.
"""

from __future__ import annotations

import grp
import hashlib
import io
import os
import pwd
import re
import stat

# A file bigger than this gets no checksum (its task then always runs): every file a role
# compares is a small config, script or zip application.
MAX_CHECKSUM_BYTES = 16 * 1024 * 1024

_TYPES = (
    (stat.S_ISREG, "file"),
    (stat.S_ISDIR, "directory"),
    (stat.S_ISLNK, "link"),
)

# systemd_service's own rule for state=started: a unit in these states is not started again.
RUNNING_STATES = ("active", "activating")

UNIT_PROPERTIES = ("Id", "LoadState", "ActiveState", "UnitFileState")


def _type(mode: int) -> str:
    for test, name in _TYPES:
        if test(mode):
            return name
    return "other"


def _name(lookup, number: int) -> str | None:
    try:
        return lookup(number)[0]
    except KeyError:
        return None


def _read_regular(path: str, limit: int) -> bytes | None:
    """Content of a regular file opened without following a link; None if it is not one or too big."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        data = bytearray()
        # The file may grow after fstat: stop at the limit, never read it all.
        while chunk := os.read(fd, 1 << 20):
            data += chunk
            if len(data) > limit:
                return None
        return bytes(data)
    finally:
        os.close(fd)


def path_state(path: str, checksum: bool = True) -> dict:
    """lstat of ``path``: exists, type, mode ('0644'), owner, group (names and ids), sha256, link target."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return {"exists": False}
    except OSError as exc:
        return {"exists": None, "error": exc.strerror}
    out = {
        "exists": True,
        "type": _type(st.st_mode),
        "mode": "%04o" % stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "owner": _name(pwd.getpwuid, st.st_uid),
        "group": _name(grp.getgrgid, st.st_gid),
        "size": st.st_size,
    }
    if out["type"] == "link":
        out["target"] = os.readlink(path)
    elif out["type"] == "file" and checksum:
        data = _read_regular(path, MAX_CHECKSUM_BYTES)
        out["sha256"] = hashlib.sha256(data).hexdigest() if data is not None else None
    return out


def dir_listing(path: str) -> dict:
    """The entries directly in ``path`` (name -> type and, for a link, its target), never followed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return {"exists": False, "entries": {}}
    except OSError as exc:
        return {"exists": None, "error": exc.strerror, "entries": {}}
    entries = {}
    try:
        for name in os.listdir(fd):
            try:
                st = os.lstat(name, dir_fd=fd)
            except FileNotFoundError:
                continue
            entry = {"type": _type(st.st_mode)}
            if entry["type"] == "link":
                entry["target"] = os.readlink(name, dir_fd=fd)
            entries[name] = entry
    finally:
        os.close(fd)
    return {"exists": True, "entries": dict(sorted(entries.items()))}


def last_matching_line(path: str, regexp: str) -> dict:
    """The last line of ``path`` that ``regexp`` finds (with its line ending), as lineinfile picks it."""
    # lineinfile's own reading: a bytes regexp (\s, \w are ASCII) searched in the file's lines split
    # at b"\n" only (readlines() on bytes); str.splitlines() would also split at \r, \f, \u2028 ...
    try:
        pattern = re.compile(regexp.encode("utf-8", "surrogateescape"))
    except re.error as exc:
        raise ValueError(
            "lines: regexp %r for %s is not a valid regular expression: %s" % (regexp, path, exc)
        ) from None
    data = _read_regular(path, MAX_CHECKSUM_BYTES)
    if data is None:
        return {"path": path, "regexp": regexp, "readable": False, "line": None}
    found = None
    for raw in io.BytesIO(data).readlines():
        if pattern.search(raw):
            found = raw
    line = found.decode("utf-8", "surrogateescape") if found is not None else None
    return {"path": path, "regexp": regexp, "readable": True, "line": line}


def parse_dpkg_query(stdout: str) -> dict:
    """``dpkg-query -W -f '${Package}\\t${db:Status-Abbrev}\\t${Version}\\n'`` -> name -> installed, version."""
    out = {}
    for line in stdout.splitlines():
        fields = line.split("\t")
        if len(fields) != 3:
            continue
        name, abbrev, version = fields
        # db:Status-Abbrev: desired action, package status, error flag ("ii ", "hi ", "rc ", "iU ").
        installed = len(abbrev) >= 2 and abbrev[1] == "i" and abbrev[2:3] in ("", " ")
        if name in out and not out[name]["installed"]:
            # ${Package} has no architecture: a name listed for several (multiarch) is installed only if
            # it is for each, as apt installs the native one when that one is not.
            continue
        out[name] = {"installed": installed, "version": version if installed else None}
    return out


def parse_systemctl_show(stdout: str) -> dict:
    """``systemctl show -p Id,LoadState,ActiveState,UnitFileState u1 u2 ...`` -> Id -> the properties."""
    units = {}
    for block in re.split(r"\n\s*\n", stdout.strip()):
        props = {}
        for line in block.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                props[key] = value
        if props.get("Id"):
            units[props["Id"]] = {
                "load": props.get("LoadState", ""),
                "active": props.get("ActiveState", ""),
                "unit_file": props.get("UnitFileState", ""),
            }
    return units


def user_state(name: str) -> dict:
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        return {"exists": False}
    return {"exists": True, "uid": pw.pw_uid, "gid": pw.pw_gid, "home": pw.pw_dir, "shell": pw.pw_shell}


def group_state(name: str) -> dict:
    try:
        gr = grp.getgrnam(name)
    except KeyError:
        return {"exists": False}
    return {"exists": True, "gid": gr.gr_gid}


def gather(paths=(), dirs=(), packages=(), units=(), users=(), groups=(), lines=(), run=None) -> dict:
    """Everything asked for, read-only. ``run(argv) -> (rc, stdout, stderr)`` runs dpkg-query and systemctl."""
    state = {
        "paths": {p: path_state(p) for p in paths},
        "dirs": {d: dir_listing(d) for d in dirs},
        "packages": {},
        "units": {},
        "users": {u: user_state(u) for u in users},
        "groups": {g: group_state(g) for g in groups},
        "lines": [last_matching_line(item["path"], item["regexp"]) for item in lines],
        "warnings": [],
    }
    if packages:
        fmt = "${Package}\\t${db:Status-Abbrev}\\t${Version}\\n"
        rc, out, err = run(["dpkg-query", "-W", "-f", fmt, "--", *packages])
        found = parse_dpkg_query(out)
        state["packages"] = {p: found.get(p, {"installed": False, "version": None}) for p in packages}
        if rc not in (0, 1):
            state["warnings"].append("dpkg-query exited %s: %s" % (rc, err.strip()))
    if units:
        rc, out, err = run(["systemctl", "show", "--property=" + ",".join(UNIT_PROPERTIES), "--", *units])
        if rc == 0:
            found = parse_systemctl_show(out)
            state["units"] = {u: found[u] for u in units if u in found}
        else:
            state["warnings"].append("systemctl show exited %s: %s" % (rc, err.strip()))
    return state


# ---- checks (controller side: the host_* filters) --------------------------------------------


def _mode(value) -> int | None:
    """An octal mode ('0644', '644', 0o644); None for anything else (symbolic, 'preserve'): not provable."""
    if isinstance(value, int):
        return value
    try:
        return int(str(value), 8)
    except (TypeError, ValueError):
        return None


def _id_ok(entry: dict, wanted, name_key: str, id_key: str) -> bool:
    # As the file module resolves them: a numeric string is an id, anything else a name.
    wanted = str(wanted)
    if wanted.isdigit():
        return entry.get(id_key) == int(wanted)
    return entry.get(name_key) == wanted


def _who_ok(entry: dict, owner, group) -> bool:
    owner_ok = owner is None or _id_ok(entry, owner, "owner", "uid")
    return owner_ok and (group is None or _id_ok(entry, group, "group", "gid"))


def path_ok(host: dict, path: str, state: str, owner=None, group=None, mode=None, sha256=None, target=None) -> bool:
    """Would file/copy/template leave ``path`` as it is? state: file, directory, link or absent."""
    entry = (host or {}).get("paths", {}).get(path)
    if entry is None or entry.get("exists") is None:
        return False
    if state == "absent":
        return entry["exists"] is False
    if not entry["exists"] or entry.get("type") != state or not _who_ok(entry, owner, group):
        return False
    if state == "link":
        # file state=link manages the link itself: its target, owner and group (lchown), never its mode.
        return target is None or entry.get("target") == target
    if mode is not None and (_mode(mode) is None or _mode(entry.get("mode")) != _mode(mode)):
        return False
    return sha256 is None or entry.get("sha256") == sha256


def line_ok(host: dict, path: str, regexp: str, line: str) -> bool:
    """Would lineinfile (regexp, line) leave ``path`` as it is? Its last match must be exactly ``line``."""
    for item in (host or {}).get("lines", []):
        if item.get("path") == path and item.get("regexp") == regexp:
            if not item.get("readable") or item.get("line") is None:
                return False
            wanted = line if line.endswith("\n") else line + "\n"
            return item["line"] == wanted
    return False


def packages_ok(host: dict, names) -> bool:
    """Would apt state=present install nothing? Every name is installed."""
    if isinstance(names, str):
        names = [names]
    found = (host or {}).get("packages", {})
    return all(found.get(name, {}).get("installed") is True for name in names)


def unit_ok(host: dict, name: str, enabled=None, started=None) -> bool:
    """Would systemd_service (enabled: true, state: started) do nothing to ``name``?"""
    unit = (host or {}).get("units", {}).get(name)
    if unit is None or unit.get("load") != "loaded":
        return False
    if enabled and unit.get("unit_file") != "enabled":
        return False
    return not started or unit.get("active") in RUNNING_STATES


def group_ok(host: dict, name: str) -> bool:
    return (host or {}).get("groups", {}).get(name, {}).get("exists") is True


def user_ok(host: dict, name: str, group=None, home=None, shell=None) -> bool:
    """Would user (state present, update_password on_create, create_home false) change nothing for ``name``?"""
    host = host or {}
    user = host.get("users", {}).get(name, {})
    if user.get("exists") is not True:
        return False
    if group is not None:
        gr = host.get("groups", {}).get(str(group), {})
        if gr.get("exists") is not True or gr.get("gid") != user.get("gid"):
            return False
    home_ok = home is None or user.get("home") == home
    return home_ok and (shell is None or user.get("shell") == shell)


def dir_entries(host: dict, path: str, entry_type=None) -> list:
    """The entries gathered for directory ``path``: [{name, type, target}], sorted, optionally one type."""
    listing = (host or {}).get("dirs", {}).get(path) or {}
    out = []
    for name, entry in sorted((listing.get("entries") or {}).items()):
        if entry_type is None or entry.get("type") == entry_type:
            out.append({"name": name, "type": entry.get("type"), "target": entry.get("target")})
    return out


def dir_exists(host: dict, path: str) -> bool:
    return ((host or {}).get("dirs", {}).get(path) or {}).get("exists") is True
