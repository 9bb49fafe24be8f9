# Copyright: nodefleet.bitcoin contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Who listens on a TCP port, from /proc (Linux), with the standard library only.

bitcoind binds its P2P and onion ports only at the end of its start-up, possibly minutes
after supervisord counted it as started, so a foreign process holding one of an instance's
ports would otherwise show up as a crash loop much later. bitcoind_instance asks here first
and fails naming the port and the holder, before anything is written.
"""

from __future__ import annotations

import os

TCP_LISTEN = "0A"


def parse_proc_net_tcp(text: str) -> dict[int, dict[str, int]]:
    """Map port -> {socket inode: owner uid} of the LISTEN sockets in a /proc/net/tcp{,6} table."""
    listeners: dict[int, dict[str, int]] = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != TCP_LISTEN:
            continue
        try:
            port = int(fields[1].rsplit(":", 1)[1], 16)
            uid = int(fields[7])
        except (IndexError, ValueError):
            continue
        listeners.setdefault(port, {})[fields[9]] = uid
    return listeners


def listening_inodes(proc: str = "/proc") -> dict[int, dict[str, int]]:
    merged: dict[int, dict[str, int]] = {}
    for table in ("tcp", "tcp6"):
        try:
            with open(os.path.join(proc, "net", table), encoding="ascii") as handle:
                text = handle.read()
        except OSError:
            continue
        for port, inodes in parse_proc_net_tcp(text).items():
            merged.setdefault(port, {}).update(inodes)
    return merged


def socket_owners(inodes, proc: str = "/proc") -> dict[int, list[str]]:
    """pid -> argv of the processes that hold one of ``inodes`` open (those whose fds we may read)."""
    wanted = {"socket:[%s]" % inode for inode in inodes}
    owners: dict[int, list[str]] = {}
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        fd_dir = os.path.join(proc, entry, "fd")
        try:
            links = {os.readlink(os.path.join(fd_dir, fd)) for fd in os.listdir(fd_dir)}
        except OSError:
            continue  # gone, or not ours to read (another uid without CAP_SYS_PTRACE)
        if links & wanted:
            try:
                with open(os.path.join(proc, entry, "cmdline"), "rb") as handle:
                    argv = [a.decode("utf-8", "replace") for a in handle.read().split(b"\0") if a]
            except OSError:
                argv = []
            owners[int(entry)] = argv
    return owners


def is_instance_process(argv: list[str], datadir: str) -> bool:
    """True for the bitcoind that serves ``datadir`` (its own ports are not a conflict)."""
    wanted = os.path.normpath(datadir)
    return any(arg.startswith("-datadir=") and os.path.normpath(arg[len("-datadir=") :]) == wanted for arg in argv)


def foreign_listeners(
    ports: dict[str, int], datadir: str, owner_uid: int | None = None, proc: str = "/proc"
) -> list[tuple[str, int, int, str]]:
    """(option, port, pid, command) for every planned port held by a process that is not this instance.

    A socket whose process cannot be seen (root without CAP_SYS_PTRACE, as in a container,
    cannot read another user's fds) is judged by the socket's uid: the instance user's own
    socket is the instance (the port plan keeps instances' ports apart), any other uid is a
    conflict.
    """
    listening = listening_inodes(proc)
    conflicts = []
    for option, port in ports.items():
        sockets = listening.get(port)
        if not sockets:
            continue
        owners = socket_owners(set(sockets), proc)
        for pid, argv in sorted(owners.items()):
            if not is_instance_process(argv, datadir):
                conflicts.append((option, port, pid, " ".join(argv)[:120] or "?"))
        if not owners:
            foreign_uids = sorted({uid for uid in sockets.values() if uid != owner_uid})
            if foreign_uids:
                conflicts.append((option, port, 0, "a process of uid %s" % ",".join(map(str, foreign_uids))))
    return conflicts
