"""Framing, backoff and the handler guard, without a network."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from emrp2p.net.backoff import Backoff
from emrp2p.net.framing import (
    HEADER,
    KEEPALIVE,
    FrameReader,
    FrameTimeout,
    FrameTooLarge,
    FrameTruncated,
    encode_frames,
)
from emrp2p.net.host import guard_handler


class ByteStream:
    """The read side of an in-memory trio stream, with libp2p's ``read(n)`` shape."""

    def __init__(self, receive: trio.abc.ReceiveStream) -> None:
        self._receive = receive

    async def read(self, n: int | None = None) -> bytes:
        return await self._receive.receive_some(n)


def pipe() -> tuple[trio.abc.SendStream, ByteStream]:
    send, receive = trio.testing.memory_stream_one_way_pair()
    return send, ByteStream(receive)


def reader(stream: ByteStream, max_frame: int = 1024, idle: float = 5.0, read: float = 5.0) -> FrameReader:
    return FrameReader(stream, max_frame=max_frame, idle_timeout=idle, read_timeout=read)


async def test_frames_split_at_every_byte_boundary_are_reassembled() -> None:
    payloads = [b"a", b"bc" * 300, b"\x00" * 7, b"last"]
    data = encode_frames(payloads) + KEEPALIVE
    send, stream = pipe()
    r = reader(stream)
    for i in range(len(data)):
        await send.send_all(data[i : i + 1])
    await send.aclose()
    with trio.fail_after(5):
        assert [await r.next_frame() for _ in payloads] == payloads
        assert await r.next_frame() is None


async def test_a_length_over_the_cap_is_refused_before_the_body_arrives() -> None:
    send, stream = pipe()
    await send.send_all(HEADER.pack(1025))
    with trio.fail_after(5), pytest.raises(FrameTooLarge):
        await reader(stream).next_frame()


async def test_a_frame_exactly_at_the_cap_is_accepted() -> None:
    send, stream = pipe()
    await send.send_all(encode_frames([b"x" * 1024]))
    with trio.fail_after(5):
        assert await reader(stream).next_frame() == b"x" * 1024


async def test_eof_inside_a_frame_or_a_prefix_is_an_error() -> None:
    for data in (HEADER.pack(10) + b"12345", b"\x00\x00"):
        send, stream = pipe()
        await send.send_all(data)
        await send.aclose()
        with trio.fail_after(5), pytest.raises(FrameTruncated):
            await reader(stream).next_frame()


async def test_silence_inside_a_frame_and_between_frames_times_out() -> None:
    with trio.fail_after(5):
        send, stream = pipe()
        await send.send_all(HEADER.pack(10) + b"123")
        with pytest.raises(FrameTimeout):
            await reader(stream, read=0.05).next_frame()
        send, stream = pipe()
        with pytest.raises(FrameTimeout):
            await reader(stream, idle=0.05).next_frame()


async def test_keepalives_are_skipped_and_keep_an_idle_stream_alive() -> None:
    send, stream = pipe()
    r = reader(stream, idle=0.5)

    async def writer() -> None:
        for _ in range(5):
            await send.send_all(KEEPALIVE)
            await trio.sleep(0.1)
        await send.send_all(encode_frames([b"after keepalives"]))

    with trio.fail_after(5):
        async with trio.open_nursery() as n:
            n.start_soon(writer)
            assert await r.next_frame() == b"after keepalives"


def test_backoff_grows_to_its_cap_with_bounded_seeded_jitter() -> None:
    a = Backoff(0.2, 2.0, jitter=0.25, seed=b"x")
    b = Backoff(0.2, 2.0, jitter=0.25, seed=b"x")
    delays = [a.next() for _ in range(10)]
    assert delays == [b.next() for _ in range(10)]
    for i, d in enumerate(delays):
        raw = min(2.0, 0.2 * 2**i)
        assert 0.75 * raw <= d <= raw
    a.reset()
    assert a.next() <= 0.2
    assert delays != [Backoff(0.2, 2.0, jitter=0.25, seed=b"y").next() for _ in range(10)]


class FakeConn:
    peer_id = "not an ID"


class RecordingStream:
    """Just enough of a libp2p stream for the guard: who is on the other end, and reset()."""

    def __init__(self) -> None:
        self.muxed_conn = FakeConn()
        self.was_reset = False

    async def reset(self) -> None:
        self.was_reset = True


async def test_the_guard_resets_instead_of_raising_and_refuses_unknown_peers() -> None:
    errors: list[str] = []
    refused: list[str] = []

    async def boom(stream: object) -> None:
        raise ValueError("malformed")

    s = RecordingStream()
    await guard_handler("p", boom, is_member=None, on_error=errors.append)(s)  # type: ignore[arg-type]
    assert s.was_reset and errors == ["p"]

    s = RecordingStream()
    called = []

    async def ok(stream: object) -> None:
        called.append(stream)

    await guard_handler("p", ok, is_member=lambda p: True, on_refused=lambda p, n: refused.append(n))(s)  # type: ignore[arg-type]
    assert s.was_reset and refused == ["p"] and called == []  # peer id unknown -> refused
