"""What replaces py-libp2p's costly parts per message (emrp2p.net.speedups) keeps its behaviour."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing
from libp2p.stream_muxer.yamux.yamux import Yamux, YamuxStream
from netfixtures import StartMesh

from emrp2p.net import speedups
from emrp2p.net.speedups import DATA_READ_TIMEOUT, EagerLock, EagerWriteLock


async def test_a_free_eager_lock_is_taken_without_a_scheduling_pass() -> None:
    """A ``trio.Lock`` yields to the scheduler on every acquire; an ``EagerLock`` that nobody
    holds is taken at once."""
    eager = EagerLock()
    with trio.testing.assert_no_checkpoints():
        await eager.acquire()
    assert eager.locked()
    eager.release()
    with trio.testing.assert_no_checkpoints():
        async with eager:
            pass
    plain = trio.Lock()
    with trio.testing.assert_checkpoints():
        await plain.acquire()
    plain.release()


async def test_a_held_eager_lock_passes_to_its_oldest_waiter_first() -> None:
    lock = EagerLock()
    order: list[str] = []

    async def waiter(name: str) -> None:
        async with lock:
            order.append(name)
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        await lock.acquire()
        nursery.start_soon(waiter, "first")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(waiter, "second")
        await trio.testing.wait_all_tasks_blocked()
        lock.release()
        async with lock:  # released to "first": we queue behind both, not ahead of them
            order.append("releaser")
    assert order == ["first", "second", "releaser"]
    assert not lock.locked()


async def test_waiting_for_an_eager_lock_can_be_cancelled_and_leaves_it_usable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    lock = EagerLock()
    done = trio.Event()

    async def holder(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with lock:
            task_status.started()
            await done.wait()

    async with trio.open_nursery() as nursery:
        await nursery.start(holder)
        with trio.move_on_after(1) as scope:
            async with lock:
                pytest.fail("a held lock was taken")
        assert scope.cancelled_caught and lock.locked()
        done.set()
        with trio.fail_after(1):
            async with lock:
                assert lock.locked()
    assert not lock.locked()


async def test_streams_and_connections_built_by_libp2p_carry_eager_locks(start_mesh: StartMesh) -> None:
    a, b = await start_mesh(2, gossip=False)
    assert a.send(b.identity.public, b"hello")
    with trio.fail_after(5):
        assert await b.incoming.receive() == (a.identity.public, b"hello")
    conns = a.host.get_network().connections[b.peer_id]
    muxed: Any = conns[0].muxed_conn
    assert isinstance(muxed, Yamux)
    assert isinstance(muxed.streams_lock, EagerLock) and isinstance(muxed._write_lock, EagerLock)
    streams = list(muxed.streams.values())
    assert streams and all(isinstance(s, YamuxStream) for s in streams)
    for s in streams:
        assert isinstance(s.window_lock, EagerLock) and isinstance(s.rw_lock, EagerWriteLock)
    tcp: Any = muxed.secured_conn.conn.read_writer.read_write_closer.stream
    assert isinstance(tcp.read_lock, EagerLock) and isinstance(tcp.write_lock, EagerLock)


async def test_a_message_each_way_takes_few_scheduling_passes(start_mesh: StartMesh) -> None:
    """Both nodes in this process: sending one small frame and receiving it takes well under
    py-libp2p's own count (about 18 task steps, most of them for locks nobody held)."""
    a, b = await start_mesh(2, gossip=False)
    steps = 0

    class Count(trio.abc.Instrument):
        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            nonlocal steps
            steps += 1

    for _ in range(20):  # warm up: streams open, windows settle
        assert a.send(b.identity.public, b"x" * 200)
        await b.incoming.receive()
    n = 200
    counter = Count()
    trio.lowlevel.add_instrument(counter)
    try:
        with trio.fail_after(10):
            for i in range(n):
                assert a.send(b.identity.public, i.to_bytes(2, "big") * 100)
                assert await b.incoming.receive() == (a.identity.public, i.to_bytes(2, "big") * 100)
    finally:
        trio.lowlevel.remove_instrument(counter)
    assert steps / n <= 12, steps / n


class _Session:
    """A secured connection's read side: ``buffered`` bytes already decrypted, the rest to come."""

    def __init__(self, buffered: bytes, later: bytes = b"") -> None:
        self.buf = buffered
        self.later = later
        self.low_watermark = 0
        self.high_watermark = len(buffered)
        self.deadlines: list[float] = []
        self.arrived = trio.Event()

    async def read(self, n: int) -> bytes:
        self.deadlines.append(trio.current_effective_deadline())
        if not self.buf:
            await self.arrived.wait()
            self.buf, self.later = self.later, b""
        out, self.buf = self.buf[:n], self.buf[n:]
        self.low_watermark += len(out)
        return out


async def test_a_data_frame_body_already_received_is_read_without_a_timer() -> None:
    conn = _Session(b"body-bytes+next-frame")
    assert await speedups._read_data_body(SimpleNamespace(secured_conn=conn), 10) == b"body-bytes"  # type: ignore[arg-type]
    assert conn.deadlines == [math.inf]


async def test_a_data_frame_body_still_to_come_is_read_under_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    conn = _Session(b"part", later=b"-rest")
    self: Any = SimpleNamespace(secured_conn=conn)
    async with trio.open_nursery() as nursery:
        start = trio.current_time()

        async def deliver() -> None:
            await trio.sleep(1)
            conn.arrived.set()

        nursery.start_soon(deliver)
        assert await speedups._read_data_body(self, 9) == b"part-rest"
    assert conn.deadlines and all(d == pytest.approx(start + DATA_READ_TIMEOUT) for d in conn.deadlines)

    stalled = _Session(b"")
    with pytest.raises(trio.TooSlowError):
        await speedups._read_data_body(SimpleNamespace(secured_conn=stalled), 4)  # type: ignore[arg-type]
    assert trio.current_time() - start >= DATA_READ_TIMEOUT


async def test_frames_written_at_once_go_out_whole_one_after_another() -> None:
    written: list[bytes] = []

    class Conn:
        async def write(self, data: bytes) -> None:
            for i in range(0, len(data), 3):  # a slow socket: other writers get the scheduler
                written.append(data[i : i + 3])
                await trio.sleep(0)

    self: Any = SimpleNamespace(secured_conn=Conn(), _write_lock=EagerLock())
    frames = [bytes([i]) * 10 for i in range(5)]
    async with trio.open_nursery() as nursery:
        for f in frames:
            nursery.start_soon(speedups._write_frame, self, f)
    out = b"".join(written)
    assert sorted(out[i : i + 10] for i in range(0, len(out), 10)) == frames  # whole, never interleaved
