"""When a FastAGI request's first byte reached the host, waiting in the kernel included.

A screen's latency counted from ``connection_made`` hides the time a call sat in the listen backlog or
in the socket's receive queue while the loop was busy or frozen (QA: a 20 s freeze showed as a 1 ms
screen). So the listening socket gets SO_TIMESTAMPNS (accepted sockets inherit it; the kernel then
stamps each packet on arrival), and ``connection_made`` peeks one byte (MSG_PEEK|MSG_DONTWAIT) to read
the stamp of data already queued. Nothing queued (EAGAIN, the usual case): the first ``data_received``
is the start. About 4-6 µs a connection, measured on a 2-core host.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; 35 is its value on every architecture
_CMSG_SPACE = socket.CMSG_SPACE(16)
_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT
_TIMESPEC = struct.Struct("qq")


def enable(sock: Any) -> bool:
    """Turn on receive timestamps on a listening socket (or uvloop's stand-in for one)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except (OSError, AttributeError):
        return False
    return True


def queued_since(fd: int, family: int = socket.AF_INET) -> float | None:
    """The ``time.perf_counter()`` at which the data queued on ``fd`` arrived; None when none is queued
    or the kernel gave no stamp. The fd stays open (the transport owns it)."""
    s = socket.socket(family, socket.SOCK_STREAM, 0, fileno=fd)
    try:
        _, ancillary, _, _ = s.recvmsg(1, _CMSG_SPACE, _PEEK)
    except OSError:  # BlockingIOError: nothing queued yet
        return None
    finally:
        s.detach()
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(data)
            waited = time.time() - (sec + nsec / 1e9)  # the stamp is CLOCK_REALTIME
            return time.perf_counter() - min(max(waited, 0.0), 86400.0)
    return None
