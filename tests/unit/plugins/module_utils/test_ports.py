from __future__ import annotations

# ruff: noqa: E501  (kernel tables are pasted verbatim)
import pytest
from ansible_collections.nodefleet.bitcoin.plugins.module_utils import ports

# /proc/net/tcp as the kernel prints it: 127.0.0.1:20001 LISTEN (inode 111), 0.0.0.0:20003
# LISTEN (inode 222), and an ESTABLISHED connection from port 20001 that must be ignored.
PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:4E21 00000000:0000 0A 00000000:00000000 00:00000000 00000000   101        0 111 1 0 100 0 0 10 0
   1: 00000000:4E23 00000000:0000 0A 00000000:00000000 00:00000000 00000000   101        0 222 1 0 100 0 0 10 0
   2: 0100007F:4E21 0100007F:9C40 01 00000000:00000000 00:00000000 00000000   101        0 333 1 0 20 4 30 10 -1
"""
PROC_NET_TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:4E21 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 444 1 0 100 0 0 10 0
"""


def test_parse_proc_net_tcp_keeps_only_listen_sockets():
    assert ports.parse_proc_net_tcp(PROC_NET_TCP) == {20001: {"111": 101}, 20003: {"222": 101}}
    assert ports.parse_proc_net_tcp(PROC_NET_TCP6) == {20001: {"444": 0}}
    assert ports.parse_proc_net_tcp("header only\n") == {}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            [
                "/opt/bitcoin/core/bin/bitcoind",
                "-conf=/var/lib/bitcoind/a/bitcoin.conf",
                "-datadir=/var/lib/bitcoind/a",
            ],
            True,
        ),
        (["bitcoind", "-datadir=/var/lib/bitcoind/a/"], True),  # normalised
        (["bitcoind", "-datadir=/var/lib/bitcoind/ab"], False),  # another instance
        (["python3", "-c", "listen"], False),
        ([], False),
    ],
)
def test_is_instance_process(argv, expected):
    assert ports.is_instance_process(argv, "/var/lib/bitcoind/a") is expected


def test_foreign_listeners_from_a_fake_proc(tmp_path):
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    (proc / "net" / "tcp").write_text(PROC_NET_TCP)
    (proc / "net" / "tcp6").write_text(PROC_NET_TCP6)
    for pid, inode, argv in (
        (10, "111", b"bitcoind\0-datadir=/var/lib/bitcoind/a\0"),  # the instance itself
        (20, "222", b"python3\0-c\0listen\0"),  # a foreign listener
    ):
        fd = proc / str(pid) / "fd"
        fd.mkdir(parents=True)
        (fd / "3").symlink_to("socket:[%s]" % inode)
        (proc / str(pid) / "cmdline").write_bytes(argv)
    planned = {"rpc_port": 20000, "p2p_port": 20001, "zmq_ports.rawtx": 20003}
    assert ports.foreign_listeners(planned, "/var/lib/bitcoind/a", 101, str(proc)) == [
        ("zmq_ports.rawtx", 20003, 20, "python3 -c listen"),
    ]
    # No visible owner (another uid's fds, no CAP_SYS_PTRACE): judged by the sockets' uids.
    # 20001 has inode 111 of uid 101 (the instance user) and inode 444 of uid 0 (foreign).
    (proc / "10" / "fd" / "3").unlink()
    conflicts = ports.foreign_listeners({"p2p_port": 20001}, "/var/lib/bitcoind/a", 101, str(proc))
    assert conflicts == [("p2p_port", 20001, 0, "a process of uid 0")]
    (proc / "net" / "tcp6").write_text("header\n")
    assert ports.foreign_listeners({"p2p_port": 20001}, "/var/lib/bitcoind/a", 101, str(proc)) == []
