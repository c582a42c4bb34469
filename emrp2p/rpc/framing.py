"""Newline-delimited framing with a size cap, over any trio byte stream."""

from __future__ import annotations

import trio

__all__ = ["LineReader", "LineTooLong"]

RECEIVE_SIZE = 65536


class LineTooLong(Exception):
    """A line grew past the limit before its newline arrived."""


class LineReader:
    """Reads lines (without the newline) from ``stream``; blank lines are skipped.

    Only ``max_line`` bytes plus one receive are ever buffered. A last line
    without a newline before end of stream counts as a line.
    """

    def __init__(self, stream: trio.abc.ReceiveStream, max_line: int) -> None:
        self._stream = stream
        self._max = max_line
        self._buf = bytearray()
        self._scanned = 0
        self._eof = False

    async def next_line(self) -> bytes | None:
        """The next non-blank line, or ``None`` at end of stream.

        A line already buffered (a client sending requests without waiting for answers) is
        returned after a checkpoint, so such a client cannot keep the event loop to itself."""
        waited = False
        while True:
            line = self._take_line()
            if line is not None:
                if line.strip():
                    if not waited:
                        await trio.lowlevel.checkpoint()
                    return line
                continue
            if self._eof:
                if self._buf.strip():
                    rest = bytes(self._buf)
                    self._buf.clear()
                    return rest
                return None
            if len(self._buf) > self._max:
                raise LineTooLong(f"line over {self._max} bytes")
            data = await self._stream.receive_some(RECEIVE_SIZE)
            waited = True
            if not data:
                self._eof = True
            self._buf += data

    def _take_line(self) -> bytes | None:
        i = self._buf.find(b"\n", self._scanned)
        if i < 0:
            self._scanned = len(self._buf)
            return None
        if i > self._max:
            raise LineTooLong(f"line over {self._max} bytes")
        line = bytes(self._buf[:i])
        del self._buf[: i + 1]
        self._scanned = 0
        return line
