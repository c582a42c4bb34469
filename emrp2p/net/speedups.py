"""Where py-libp2p 0.8.1 spends our CPU per message, and what replaces it (installed on import).

A 200-byte message each way between two processes (``bench/net.py``) cost 730-850 us of
CPU per round trip on each side, most of it in trio's scheduler: a message took some 18
scheduling passes, most of them for locks nobody else held. What is replaced here keeps
py-libp2p's behaviour and wire format; only the work per message changes.

- **Locks take a free lock without a scheduling pass** (:class:`EagerLock`). A
  ``trio.Lock`` yields to the scheduler on every acquire, free or not; a message written
  goes through five (the stream's state, its writer, its send window, the connection's
  writer, the TCP writer), and one read through three. An ``EagerLock`` takes a free lock
  at once and queues behind a held one as ``trio.Lock`` does (first come, first served: a
  released lock passes to the oldest waiter, a newcomer cannot barge in). Every write still
  yields once in the socket send, and a read that waits for the network yields as it waits.
  The objects get them as they are built (:func:`_install_eager_locks`).
- **Yamux's frame writer does not format a debug line per frame nor yield once more after
  the socket send** (:func:`_write_frame`): py-libp2p unpacked each frame's header into an
  f-string for ``logger.debug`` whether or not debug logging was on.
- **A data frame's body already received is taken without a timer** (:func:`_read_data_body`):
  py-libp2p read its timeout from the environment and set a 60 s cancel scope for every
  frame. After a frame's header, its body is almost always in the Noise message that
  carried the header; only a body still to come from the network is read under the timer.
- **Yamux credit goes back in half-window batches** (go-yamux's ``sendWindowUpdate`` rule),
  not after nearly every read (:func:`_release_credit`): py-libp2p 0.8.1's own rule writes a
  WINDOW_UPDATE frame (one more Noise message, and one more for the peer to read) for 8
  reads in 10 of small messages even with ``PY_YAMUX_RELEASE_ON_READ=0`` (its "partial
  slack" branch credits any positive shortfall). Window growth by RTT is kept.
- **TCP reads are buffered** (:func:`_buffered_read`): one socket read brings in a Noise
  frame's length and body (py-libp2p reads them separately, each a trip through trio's
  scheduler); 480 reads became about 200 for 200 small messages.

Measured with the first three switched on and off in turn within one run (blocks of 300
round trips alternating): locks -14 to -16 % CPU per round trip, then the body read -6 to
-7 %, then the frame writer -7 to -12 %. ``bench/net.py``, three runs each, before -> after:
CPU per round trip 832, 852, 734 -> 552, 594, 569 us; round trip (median) 1,456, 1,462,
1,208 -> 932, 978, 935 us. In a test, a small frame sent and received by two nodes in one
process takes 6 task steps instead of 18.
"""

from __future__ import annotations

import functools
from typing import Any

import trio
from libp2p.io.trio import TrioTCPStream
from libp2p.io.utils import read_exactly
from libp2p.network.stream.net_stream import NetStream
from libp2p.stream_muxer.rw_lock import ReadWriteLock
from libp2p.stream_muxer.yamux import yamux as _yamux
from libp2p.stream_muxer.yamux.yamux import Yamux, YamuxStream

__all__ = ["EagerLock", "EagerWriteLock"]


class EagerLock:
    """A ``trio.Lock`` whose acquire takes a free lock without yielding to the scheduler.

    A held lock is waited for exactly as with ``trio.Lock`` (a cancellation point, fair
    hand-off to the oldest waiter); ``acquire_nowait`` fails while anyone waits, so a task
    that did not wait cannot take the lock ahead of one that did.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = trio.Lock()

    async def acquire(self) -> None:
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()

    def acquire_nowait(self) -> None:
        self._lock.acquire_nowait()

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()


class EagerWriteLock:
    """What a yamux stream uses of its ``ReadWriteLock``: ``write_lock()``, one writer at a time."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = EagerLock()

    def write_lock(self) -> EagerLock:
        return self._lock


_EAGER_LOCKS: tuple[tuple[type[Any], tuple[str, ...]], ...] = (
    (NetStream, ("_state_lock",)),
    (YamuxStream, ("window_lock", "close_lock")),
    (Yamux, ("streams_lock", "_write_lock")),
    (TrioTCPStream, ("read_lock", "write_lock")),
)


def _install_eager_locks() -> None:
    """After each of these objects is built, its ``trio.Lock`` attributes become :class:`EagerLock`
    (and a yamux stream's ``rw_lock`` an :class:`EagerWriteLock`)."""
    for cls, names in _EAGER_LOCKS:
        init = cls.__init__
        if getattr(init, "_emrp2p_eager", False):
            continue

        def make(init: Any, names: tuple[str, ...], rw: bool) -> Any:
            @functools.wraps(init)
            def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
                init(self, *args, **kwargs)
                for name in names:
                    if not isinstance(getattr(self, name, None), trio.Lock):
                        raise TypeError(f"{type(self).__name__}.{name} is not a trio.Lock: py-libp2p changed")
                    setattr(self, name, EagerLock())
                if rw:
                    if not isinstance(getattr(self, "rw_lock", None), ReadWriteLock):
                        raise TypeError(
                            f"{type(self).__name__}.rw_lock is not a ReadWriteLock: py-libp2p changed"
                        )
                    self.rw_lock = EagerWriteLock()

            __init__._emrp2p_eager = True  # type: ignore[attr-defined]
            return __init__

        cls.__init__ = make(init, names, cls is YamuxStream)


_install_eager_locks()


async def _write_frame(self: Yamux, data: bytes) -> None:
    """One frame onto the secured connection, writes serialized (py-libp2p's, without its
    per-frame debug formatting and the extra scheduler pass after the socket send)."""
    async with self._write_lock:
        await self.secured_conn.write(data)


Yamux._write_frame = _write_frame  # type: ignore[method-assign]

DATA_READ_TIMEOUT = _yamux._yamux_data_read_timeout()
"""py-libp2p's bound on the wait for a data frame's body (``PY_YAMUX_DATA_READ_TIMEOUT``, read once)."""


async def _read_data_body(self: Yamux, length: int) -> bytes:
    """A data frame's body: from the Noise message already received without a timer, else
    read from the network under py-libp2p's timeout."""
    conn: Any = self.secured_conn
    if getattr(conn, "high_watermark", 0) - getattr(conn, "low_watermark", 0) >= length:
        return await read_exactly(conn, length)  # served from the session's buffer: cannot wait
    with trio.fail_after(DATA_READ_TIMEOUT):
        return await read_exactly(conn, length)


Yamux._read_data_body = _read_data_body  # type: ignore[method-assign]


async def _release_credit(self: YamuxStream, *, bytes_read: int = 0) -> None:
    """go-yamux's ``sendWindowUpdate``: credit goes back once at least half the window is owed.

    ``bytes_read`` is implied by ``recv_window`` (lowered as frames arrive) and the buffered
    bytes, so it is not needed; it stays in the signature py-libp2p calls.
    """
    async with self.window_lock:
        buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
        delta = self.target_recv_window - (self.recv_window + buffered)
        if delta < self.target_recv_window // 2:
            return
        self.recv_window += delta
        delta += self._apply_autotune_epoch(buffered)
    await self.send_window_update(delta, skip_lock=True)


YamuxStream._auto_tune_and_send_window_update = _release_credit  # type: ignore[method-assign]

_READ_CHUNK = 64 << 10
_trio_tcp_read = TrioTCPStream.read


async def _buffered_read(self: TrioTCPStream, n: int | None = None) -> bytes:
    """Read up to ``n`` bytes, from what an earlier socket read brought in if anything is left.

    py-libp2p reads a Noise frame as a 2-byte length, then its body: two socket reads, each
    behind a lock, each a trip through trio's scheduler. One read of up to 64 KiB instead
    brings in the length, the body and whatever frames follow, and serves them without
    waiting (by position: nothing is copied but the bytes handed out). Nothing else reads
    the socket, so the stream of bytes is unchanged.
    """
    buf: bytes = getattr(self, "_rbuf", b"")
    pos: int = getattr(self, "_rpos", 0)
    if pos >= len(buf):
        buf = await _trio_tcp_read(self, _READ_CHUNK if n is None or n < _READ_CHUNK else n)
        pos = 0
    end = len(buf) if n is None else min(len(buf), pos + n)
    if end >= len(buf):
        self._rbuf, self._rpos = b"", 0  # type: ignore[attr-defined]
    else:
        self._rbuf, self._rpos = buf, end  # type: ignore[attr-defined]
    return buf if pos == 0 and end == len(buf) else buf[pos:end]


TrioTCPStream.read = _buffered_read  # type: ignore[method-assign]
