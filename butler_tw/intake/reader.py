"""The intake process: empties the UDP socket as fast as datagrams arrive, hands them over in batches.

A storm (a database outage makes every reload task fail within seconds)
arrives faster than the daemon can handle datagrams one by one, and the
kernel drops what does not fit in the socket's receive buffer: at the usual
default ``net.core.rmem_max`` (212,992 bytes) that is a couple of hundred
datagrams. So the socket is read by this small process of its own, which does
nothing else: it never waits for the daemon's interpreter lock, reads each
datagram in about a microsecond, and keeps what the daemon has not taken yet
in its own memory (bounded), not in the kernel's.

It is started by the daemon (:mod:`butler_tw.intake.handover`) with the bound
socket as file descriptor 3, writes frames to its stdout, and ends when its
stdin closes (the daemon stopped or died). Standard library only, so it starts
in a few milliseconds.

Frame: ``!HB`` (payload length, source address length), the source address
(ASCII), the payload. A frame with a source address length of 0 and a payload
of 8 bytes (``!Q``) says how many datagrams were dropped because the daemon
fell more than :data:`MAX_PENDING` bytes behind.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import select
import socket
import struct
import sys
from collections import deque
from typing import Any

HEADER = struct.Struct("!HB")
DROPPED = struct.Struct("!Q")
#: Bytes of frames held here while the daemon is behind; beyond, datagrams are dropped (and counted).
MAX_PENDING = 64 * 1024 * 1024
#: Linux's F_SETPIPE_SZ: a larger pipe, so that fewer writes carry more.
F_SETPIPE_SZ = 1031
SOCKET_FD = 3
#: Datagrams framed between two reads of the socket (about 100 µs of work).
SLICE = 32
_READ_SIZE = 65535


def frame(payload: bytes, source: str) -> bytes:
    address = source.encode("ascii", "replace")
    return HEADER.pack(len(payload), len(address)) + address + payload


def dropped_frame(n: int) -> bytes:
    return HEADER.pack(DROPPED.size, 0) + DROPPED.pack(n)


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_Iovec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


_MSG_DONTWAIT = 0x40
_NAME_SIZE = 128  # sockaddr_storage


class BatchReader:
    """Reads up to :attr:`slots` datagrams per system call with Linux's ``recvmmsg`` (through ctypes).

    A Python ``recvfrom`` loop costs a microsecond or two per datagram, about
    what a sender on the next core needs to send one: too close. One
    ``recvmmsg`` call takes every datagram waiting, up to 64 at a time.
    The buffers are allocated once; the kernel touches only the bytes it
    writes, so their 4 MiB are mostly never resident.
    """

    slots = 64

    def __init__(self, sock: socket.socket) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._recvmmsg = libc.recvmmsg
        self._recvmmsg.argtypes = [
            ctypes.c_int,
            ctypes.POINTER(_Mmsghdr),
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_void_p,
        ]
        self._fd = sock.fileno()
        self._sources: dict[bytes, str] = {}
        n = self.slots
        self._data = ctypes.create_string_buffer(n * _READ_SIZE)
        self._names = ctypes.create_string_buffer(n * _NAME_SIZE)
        self._iovs = (_Iovec * n)()
        self._msgs = (_Mmsghdr * n)()
        self._base = ctypes.addressof(self._data)
        self._nameBase = ctypes.addressof(self._names)
        for i in range(n):
            self._iovs[i].iov_base = self._base + i * _READ_SIZE
            self._iovs[i].iov_len = _READ_SIZE
            header = self._msgs[i].msg_hdr
            header.msg_name = self._nameBase + i * _NAME_SIZE
            header.msg_namelen = _NAME_SIZE
            header.msg_iov = ctypes.pointer(self._iovs[i])
            header.msg_iovlen = 1

    def read(self, into: deque[tuple[bytes, Any]]) -> None:
        """Append every datagram waiting, with its raw source address (see :meth:`source`), to ``into``.

        Only copies: decoding the address waits until the socket is empty.
        """
        msgs, string_at, base, names = self._msgs, ctypes.string_at, self._base, self._nameBase
        while True:
            # msg_namelen comes back as the address's size, the same for every
            # datagram of a socket (16 for IPv4, 28 for IPv6): no need to reset it.
            got = self._recvmmsg(self._fd, msgs, self.slots, _MSG_DONTWAIT, None)
            if got <= 0:
                code = ctypes.get_errno()
                if got < 0 and code not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR, errno.ECONNREFUSED):
                    raise OSError(code, os.strerror(code))
                return
            for i in range(got):
                into.append(
                    (string_at(base + i * _READ_SIZE, msgs[i].msg_len), string_at(names + i * _NAME_SIZE, 24))
                )
            if got < self.slots:
                return

    def source(self, raw: Any) -> str:
        """The source address of a datagram as text (cached: a site has few scheduler nodes)."""
        found = self._sources.get(raw)
        if found is None:
            found = _address(raw)
            if len(self._sources) < 10_000:
                self._sources[raw] = found
        return found


def _address(name: bytes) -> str:
    """A ``sockaddr_in`` or ``sockaddr_in6`` (its first 24 bytes) as the address text ``recvfrom`` gives."""
    if int.from_bytes(name[:2], sys.byteorder) == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, name[8:24])
    return socket.inet_ntop(socket.AF_INET, name[4:8])


class LoopReader:
    """The portable way: ``recvfrom`` until the socket is empty."""

    def __init__(self, sock: socket.socket) -> None:
        self._recvfrom = sock.recvfrom

    def read(self, into: deque[tuple[bytes, Any]]) -> None:
        recvfrom = self._recvfrom
        while True:
            try:
                data, address = recvfrom(_READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.ECONNREFUSED, errno.EMSGSIZE):
                    continue
                raise
            into.append((data, address[0]))

    def source(self, raw: Any) -> str:
        return str(raw)


def reader_for(sock: socket.socket) -> BatchReader | LoopReader:
    if sys.platform.startswith("linux"):
        try:
            return BatchReader(sock)
        except (OSError, AttributeError):
            pass
    return LoopReader(sock)


def run(sock: socket.socket, out: int, control: int, maxPending: int = MAX_PENDING) -> int:
    """Read ``sock``, write frames to ``out``, until ``control`` reaches end of file."""
    sock.setblocking(False)
    os.set_blocking(out, False)
    try:
        fcntl.fcntl(out, F_SETPIPE_SZ, 1024 * 1024)
    except OSError:
        pass  # not Linux, or over fs.pipe-max-size: the default pipe works too
    poller = select.epoll()
    poller.register(sock.fileno(), select.EPOLLIN)
    poller.register(control, select.EPOLLIN | select.EPOLLHUP)
    chunks: deque[memoryview] = deque()  # framed batches not yet written, oldest first
    held = 0  # their bytes
    dropped = 0
    watchingOut = False
    reader = reader_for(sock)
    read, source = reader.read, reader.source
    raw: deque[tuple[bytes, Any]] = deque()  # read, not yet framed
    while True:
        # Wait only when there is nothing left to frame.
        for fd, _ in poller.poll(0 if raw else -1):
            if fd == control and not os.read(control, 4096):
                _frameAll(raw, source, chunks)
                return _finish(out, chunks)
        # Empty the socket first, doing nothing else: the kernel's buffer is the small one.
        read(raw)
        if raw:
            # Then frame a slice, short enough that the socket cannot fill meanwhile.
            batch = [raw.popleft() for _ in range(min(len(raw), SLICE))]
            if held > maxPending:
                dropped += len(batch)
            else:
                framed = b"".join([frame(data, source(key)) for data, key in batch])
                chunks.append(memoryview(framed))
                held += len(framed)
        if dropped and held <= maxPending:
            chunks.append(memoryview(dropped_frame(dropped)))
            dropped = 0
        while chunks:
            try:
                written = os.write(out, chunks[0])
            except BlockingIOError:
                break
            except BrokenPipeError:
                return 0
            held -= written
            if written == len(chunks[0]):
                chunks.popleft()
            else:
                chunks[0] = chunks[0][written:]
                break
        if chunks and not watchingOut:
            poller.register(out, select.EPOLLOUT)
            watchingOut = True
        elif not chunks and watchingOut:
            poller.unregister(out)
            watchingOut = False


def _frameAll(raw: deque[tuple[bytes, Any]], source: Any, chunks: deque[memoryview]) -> None:
    if raw:
        chunks.append(memoryview(b"".join([frame(data, source(key)) for data, key in raw])))
        raw.clear()


def _finish(out: int, chunks: deque[memoryview]) -> int:
    """The daemon is stopping: hand over what is held, then end."""
    os.set_blocking(out, True)
    try:
        for view in chunks:
            while view:
                view = view[os.write(out, view) :]
    except OSError:
        pass
    return 0


def main() -> int:
    sock = socket.socket(fileno=SOCKET_FD)
    try:
        return run(sock, sys.stdout.fileno(), sys.stdin.fileno())
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
