"""Length-prefixed pickle frames: how the daemon and its outbox process talk over a pipe.

Pickle, because both ends are this package in the same interpreter version, the values are
its own frozen attrs classes (``Alert``, ``Delivery``, ``Page``, ``Rebinding``) and the pipe is
private to the two processes: nothing from outside ever reaches it. One frame carries a whole
reactor turn's calls (or answers), so the cost of the pipe is per batch, not per alert.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

HEADER = struct.Struct("!I")


def frame(value: Any) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


class Unframer:
    """Splits a byte stream into the values of its frames; keeps a partial frame for later."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[Any]:
        buffer = self._buffer + data if self._buffer else data
        values, offset, end = [], 0, len(buffer)
        while end - offset >= HEADER.size:
            (length,) = HEADER.unpack_from(buffer, offset)
            start = offset + HEADER.size
            if start + length > end:
                break
            # A private pipe between this package's own two processes (see the module docstring).
            values.append(pickle.loads(buffer[start : start + length]))  # noqa: S301
            offset = start + length
        self._buffer = buffer[offset:]
        return values
