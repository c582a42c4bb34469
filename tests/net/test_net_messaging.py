"""Frames between member nodes over /emrp2p/msg/1.0.0, and what hostile input does to a node."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamError
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11
from libp2p.stream_muxer.yamux.yamux import YamuxStream
from net_hostile import HostilePeer
from netfixtures import Cluster, StartMesh, identities, wait_until

from emrp2p.net import MSG_PROTOCOL, NetConfig, Network
from emrp2p.net.framing import HEADER, encode_frames


async def receive_n(net: Network, n: int, timeout: float = 5.0) -> list[tuple[bytes, bytes]]:
    out = []
    with trio.fail_after(timeout):
        for _ in range(n):
            out.append(await net.incoming.receive())
    return out


async def read_until_closed(stream: INetStream) -> None:
    """Returns once the node has closed or reset the stream (bounded)."""
    with trio.fail_after(5):
        try:
            while await stream.read(4096):
                pass
        except StreamError:
            return


async def assert_serving(nets: list[Network], tag: bytes = b"") -> None:
    """Every node still delivers a frame to every other node."""
    for a in nets:
        for b in nets:
            if a is not b:
                assert a.send(b.identity.public, b"ping" + tag)
    for b in nets:
        got = await receive_n(b, len(nets) - 1)
        assert sorted(k for k, _ in got) == sorted(a.identity.public for a in nets if a is not b)
        assert all(p == b"ping" + tag for _, p in got)


async def test_three_members_exchange_frames_both_ways(start_mesh: StartMesh) -> None:
    nets = await start_mesh(3)
    for a in nets:
        for i, b in enumerate(nets):
            if a is not b:
                assert a.send(b.identity.public, a.identity.public[:4] + bytes([i]))
    for i, b in enumerate(nets):
        got = await receive_n(b, 2)
        assert {(k, p) for k, p in got} == {
            (a.identity.public, a.identity.public[:4] + bytes([i])) for a in nets if a is not b
        }
    assert sorted(nets[0].connected_peers()) == sorted(n.identity.public for n in nets[1:])


async def test_queued_frames_go_out_in_one_batch_and_arrive_in_order(start_mesh: StartMesh) -> None:
    a, b, _ = await start_mesh(3)
    before = a.stats.batches_out
    payloads = [b"frame %d " % i * (i % 7 + 1) for i in range(500)]
    for p in payloads:
        assert a.send(b.identity.public, p)
    got = await receive_n(b, len(payloads))
    assert [p for _, p in got] == payloads
    assert a.stats.batches_out - before == 1
    assert a.stats.frames_out >= len(payloads)


async def test_yamux_credit_goes_back_in_half_window_batches(
    start_mesh: StartMesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small frames cost the receiver no WINDOW_UPDATE each (py-libp2p's own rule sent one for
    most reads); frames larger than the whole window still get through."""
    a, b = await start_mesh(2)
    updates: list[int] = []
    send_update = YamuxStream.send_window_update

    async def counting(self: YamuxStream, increment: int, skip_lock: bool = False) -> None:
        updates.append(increment)
        await send_update(self, increment, skip_lock)

    monkeypatch.setattr(YamuxStream, "send_window_update", counting)
    for i in range(200):
        assert a.send(b.identity.public, i.to_bytes(2, "big") * 50)
        got = await receive_n(b, 1)
        assert got == [(a.identity.public, i.to_bytes(2, "big") * 50)]
    assert len(updates) <= 1
    updates.clear()
    big = bytes(range(256)) * 4000  # 1 MB: four full default windows
    for _ in range(3):
        assert a.send(b.identity.public, big)
        assert await receive_n(b, 1, timeout=20) == [(a.identity.public, big)]
    assert updates and min(updates) >= 128 * 1024


async def test_a_noise_frame_costs_one_socket_read_not_two(
    start_mesh: StartMesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    """py-libp2p reads a Noise frame's 2-byte length and then its body, a socket read each;
    one buffered read serves both (and whatever frames came with them)."""
    a, b = await start_mesh(2)
    reads = 0
    receive_some = trio.SocketStream.receive_some

    async def counting(self: trio.SocketStream, max_bytes: int | None = None) -> bytes:
        nonlocal reads
        reads += 1
        return await receive_some(self, max_bytes)

    monkeypatch.setattr(trio.SocketStream, "receive_some", counting)
    n = 200
    for i in range(n):
        assert a.send(b.identity.public, i.to_bytes(2, "big") * 50)
        assert await receive_n(b, 1) == [(a.identity.public, i.to_bytes(2, "big") * 50)]
    assert reads < 1.2 * n  # unbuffered: at least 2 * n


async def test_buffered_tcp_reads_hand_out_the_byte_stream_unchanged() -> None:
    """Reads of any size, served from one socket read or across several, in order; EOF stays EOF."""
    from libp2p.io.trio import TrioTCPStream

    left, right = trio.testing.memory_stream_pair()
    reader = TrioTCPStream(right)  # type: ignore[arg-type]  # duck-typed: receive_some is all it uses
    data = bytes(range(256)) * 1200  # 300 KiB: more than one 64 KiB socket read
    await left.send_all(data)
    await left.send_eof()
    got = bytearray()
    sizes = [2, 1, 5000, None, 7, 70_000, 3]
    i = 0
    while True:
        chunk = await reader.read(sizes[i % len(sizes)])
        i += 1
        if not chunk:
            break
        n = sizes[(i - 1) % len(sizes)]
        assert n is None or len(chunk) <= n
        got += chunk
    assert bytes(got) == data
    assert await reader.read(10) == b""


async def test_send_to_unknown_peer_or_full_queue_returns_false(cluster: Cluster) -> None:
    me, other = identities(2)
    stranger = identities(1, "stranger")[0]
    net = await cluster.start(
        Network(me, ("127.0.0.1", 0), [me.public, other.public], {}, config=NetConfig(outbound_queue=4))
    )
    assert not net.send(stranger.public, b"x")
    # ``other`` is a member we cannot reach: its bounded queue fills, then send says no.
    assert [net.send(other.public, b"%d" % i) for i in range(6)] == [True] * 4 + [False] * 2
    assert net.send(other.public, b"x" * (net.config.max_frame + 1)) is False
    assert net.send(other.public, b"") is False  # a zero-length frame is the keepalive
    assert net.stats.send_drops == 5


async def test_frame_over_the_cap_resets_the_stream_and_node_keeps_serving(
    start_mesh: StartMesh, cluster: Cluster
) -> None:
    bad = identities(1, "rogue-member")[0]
    cfg = NetConfig(max_frame=1 << 20)
    nets = await start_mesh(3, config=cfg, extra_members=(bad.public,))
    rogue = HostilePeer(bad)
    await cluster.nursery.start(rogue.run)
    target = nets[0]

    # Exactly at the cap is fine.
    s = await rogue.open(target.listen_addrs[0], MSG_PROTOCOL)
    await s.write(encode_frames([b"\x01" * cfg.max_frame]))
    ((key, payload),) = await receive_n(target, 1)
    assert key == bad.public and len(payload) == cfg.max_frame

    # One byte over: the stream is reset before the body is read.
    await s.write(HEADER.pack(cfg.max_frame + 1) + b"\x02" * 1024)
    await wait_until(lambda: target.stats.oversize_frames == 1)
    await read_until_closed(s)
    await assert_serving(nets)


async def test_garbage_and_stalls_on_the_message_protocol_do_not_kill_the_node(
    start_mesh: StartMesh, cluster: Cluster
) -> None:
    bad = identities(1, "rogue-member")[0]
    nets = await start_mesh(3, config=NetConfig(read_timeout=0.5), extra_members=(bad.public,))
    rogue = HostilePeer(bad)
    await cluster.nursery.start(rogue.run)
    addr = nets[0].listen_addrs[0]

    s1 = await rogue.send_raw(addr, MSG_PROTOCOL, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # "GET " > cap
    s2 = await rogue.send_raw(addr, MSG_PROTOCOL, HEADER.pack(100) + b"short")
    await s2.close()  # ends inside a frame
    await rogue.send_raw(addr, MSG_PROTOCOL, HEADER.pack(100) + b"stall")  # then silence
    await wait_until(lambda: nets[0].stats.oversize_frames == 1 and nets[0].stats.bad_streams == 2)
    del s1
    await assert_serving(nets)
    assert nets[0].stats.frames_in == 2  # only the members' pings


async def test_garbage_on_meshsub_from_a_member_does_not_kill_the_node(
    start_mesh: StartMesh, cluster: Cluster
) -> None:
    bad = identities(1, "rogue-member")[0]
    nets = await start_mesh(3, extra_members=(bad.public,))
    rogue = HostilePeer(bad)
    await cluster.nursery.start(rogue.run)
    addr = nets[0].listen_addrs[0]
    garbage = [
        b"\x05\xff\xff\xff\xff\xff",  # varint length 5, then not a protobuf
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # absurd varint
        b"\x03\x0a\x7f\x00",  # truncated nested field
    ]
    for g in garbage:
        await read_until_closed(await rogue.send_raw(addr, PROTOCOL_ID_V11, g))
    await assert_serving(nets)
    with trio.fail_after(10):
        await nets[1].wait_gossip_peers(2)
        await nets[0].wait_gossip_peers(2)
    await nets[1].publish(b"still gossiping")
    with trio.fail_after(5):
        assert await nets[0].gossip_incoming.receive() == (nets[1].identity.public, b"still gossiping")
