"""Length-prefixed frames on a byte stream: 4-byte big-endian length, then the payload.

A zero-length frame is a keepalive: the sender writes one when it has been idle,
so the receiver can put a timeout on every read and still tell an idle peer from
a dead one. The length is checked against the cap before anything is allocated.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Protocol

import trio

__all__ = [
    "HEADER",
    "KEEPALIVE",
    "FrameError",
    "FrameTooLarge",
    "FrameTruncated",
    "FrameTimeout",
    "encode_frames",
    "FrameReader",
]

HEADER = struct.Struct(">I")
KEEPALIVE = HEADER.pack(0)
_CHUNK = 1 << 16


class FrameError(Exception):
    """The peer broke the framing; the stream must be reset."""


class FrameTooLarge(FrameError):
    """A length prefix above the configured cap."""


class FrameTruncated(FrameError):
    """The stream ended in the middle of a frame."""


class FrameTimeout(FrameError):
    """No byte arrived within the idle (between frames) or read (inside a frame) timeout."""


class Readable(Protocol):
    async def read(self, n: int | None = None) -> bytes: ...


def encode_frames(payloads: Iterable[bytes]) -> bytes:
    """One buffer holding every payload, each behind its length prefix."""
    parts: list[bytes] = []
    for p in payloads:
        parts.append(HEADER.pack(len(p)))
        parts.append(p)
    return b"".join(parts)


class FrameReader:
    """Reads frames from a stream whose ``read(n)`` may return fewer bytes than asked."""

    def __init__(self, stream: Readable, *, max_frame: int, idle_timeout: float, read_timeout: float) -> None:
        self._stream = stream
        self._max = max_frame
        self._idle = idle_timeout
        self._read_timeout = read_timeout
        self._buf = bytearray()
        self._eof = False
        self.bytes_read = 0

    async def _fill(self, want: int, timeout: float) -> bool:
        """Read until ``want`` bytes are buffered; False at EOF."""
        while len(self._buf) < want:
            if self._eof:
                return False
            try:
                with trio.fail_after(timeout):
                    data = await self._stream.read(max(_CHUNK, min(want - len(self._buf), 1 << 20)))
            except trio.TooSlowError as e:
                raise FrameTimeout(f"no data within {timeout:.1f}s") from e
            except EOFError:
                data = b""
            if not data:
                self._eof = True
                return False
            self.bytes_read += len(data)
            self._buf += data
        return True

    async def next_frame(self) -> bytes | None:
        """The next non-keepalive payload, or None when the stream ended cleanly between frames."""
        while True:
            if not self._buf and not await self._fill(1, self._idle):
                return None
            if not await self._fill(HEADER.size, self._read_timeout):
                raise FrameTruncated("stream ended inside a length prefix")
            (length,) = HEADER.unpack_from(self._buf)
            if length > self._max:
                raise FrameTooLarge(f"frame of {length} bytes over the {self._max} cap")
            if length == 0:
                del self._buf[: HEADER.size]
                continue
            if not await self._fill(HEADER.size + length, self._read_timeout):
                raise FrameTruncated(f"stream ended inside a {length}-byte frame")
            payload = bytes(self._buf[HEADER.size : HEADER.size + length])
            del self._buf[: HEADER.size + length]
            return payload
