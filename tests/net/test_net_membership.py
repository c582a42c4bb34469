"""The membership gate: strangers are refused right after the Noise handshake."""

from __future__ import annotations

import trio
from net_hostile import HostilePeer
from netfixtures import Cluster, StartMesh, identities, wait_until

from emrp2p.net import MSG_PROTOCOL, Network
from emrp2p.net.framing import encode_frames
from emrp2p.net.host import HandshakeLimiter


async def test_a_stranger_is_refused_and_its_message_never_delivered(
    start_mesh: StartMesh, cluster: Cluster
) -> None:
    nets = await start_mesh(2)
    target = nets[0]
    stranger = HostilePeer(identities(1, "stranger")[0])
    await cluster.nursery.start(stranger.run)

    delivered = False
    with trio.fail_after(10):
        try:
            await stranger.send_raw(target.listen_addrs[0], MSG_PROTOCOL, encode_frames([b"let me in"]))
            delivered = True
        except Exception:
            pass
    assert not delivered
    assert target.stats.refused_strangers >= 1
    assert not stranger.is_connected(target.peer_id)
    assert stranger.identity.public not in target.connected_peers()

    # The next frame the node delivers is a member's, not the stranger's.
    assert nets[1].send(target.identity.public, b"member frame")
    with trio.fail_after(5):
        assert await target.incoming.receive() == (nets[1].identity.public, b"member frame")
    assert target.stats.frames_in == 1


async def test_hundreds_of_stranger_connections_leave_members_able_to_connect(
    start_mesh: StartMesh, cluster: Cluster
) -> None:
    (target,) = await start_mesh(1)
    stranger = HostilePeer(identities(1, "stranger")[0])
    await cluster.nursery.start(stranger.run)
    addr = target.listen_addrs[0]
    outcomes: list[bool] = []

    async def attempt() -> None:
        try:
            with trio.fail_after(10):
                await stranger.connect(addr)
                await stranger.host.new_stream(target.peer_id, [MSG_PROTOCOL])  # type: ignore[list-item]
            outcomes.append(True)
        except Exception:
            outcomes.append(False)

    with trio.fail_after(40):
        for _ in range(10):
            async with trio.open_nursery() as n:
                for _ in range(30):
                    n.start_soon(attempt)
    assert outcomes == [False] * 300
    # Past the burst, the flooding address's connections are closed before the handshake.
    stats = target.stats
    assert stats.refused_strangers + stats.throttled_handshakes >= 300
    assert stats.throttled_handshakes > 0 and stats.refused_strangers < 300

    late = identities(3)[1]  # a member identity that start_mesh(1) did not start
    net = Network(
        late, ("127.0.0.1", 0), [target.identity.public, late.public], {target.identity.public: addr}
    )
    target.set_members([target.identity.public, late.public])
    await cluster.start(net)
    with trio.fail_after(10):
        await net.wait_connected(target.identity.public)
    assert net.send(target.identity.public, b"after the storm")
    with trio.fail_after(5):
        assert await target.incoming.receive() == (late.public, b"after the storm")


async def test_a_removed_member_is_disconnected_refused_and_its_gossip_dropped(start_mesh: StartMesh) -> None:
    a, b, c = await start_mesh(3)
    with trio.fail_after(10):
        for net in (a, b, c):
            await net.wait_gossip_peers(2)
    a.set_members([a.identity.public, b.identity.public])
    await wait_until(lambda: c.identity.public not in a.connected_peers())
    # c keeps redialing a (a is still in c's peers); each attempt is refused at the handshake.
    refused = a.stats.refused_strangers
    await wait_until(lambda: a.stats.refused_strangers > refused, timeout=10)
    assert not a.send(c.identity.public, b"x")
    assert c.identity.public not in a.connected_peers()
    assert b.identity.public in a.connected_peers()

    # b still counts c as a member and relays c's gossip; a's validator now rejects it.
    rejected = a.stats.gossip_rejected
    await c.publish(b"from a former member")
    with trio.fail_after(5):
        assert await b.gossip_incoming.receive() == (c.identity.public, b"from a former member")
    await wait_until(lambda: a.stats.gossip_rejected > rejected)
    await b.publish(b"from a member")
    with trio.fail_after(5):
        assert await a.gossip_incoming.receive() == (b.identity.public, b"from a member")


def test_the_handshake_limiter_allows_a_burst_then_a_trickle_per_address() -> None:
    limiter = HandshakeLimiter(burst=3, refill_per_s=2.0, max_addresses=2)
    for _ in range(3):
        assert limiter.allows("10.0.0.9", 100.0)
        limiter.failed("10.0.0.9", 100.0)
    assert not limiter.allows("10.0.0.9", 100.0)
    assert not limiter.allows("10.0.0.9", 100.4)  # 0.8 of a token back
    assert limiter.allows("10.0.0.9", 100.5)  # one failure more, every half second
    assert limiter.allows("10.0.0.10", 100.0)  # other addresses are not affected
    limiter.failed("10.0.0.10", 100.0)
    limiter.failed("10.0.0.11", 100.0)  # a third address: the oldest one is forgotten
    assert limiter.allows("10.0.0.9", 100.0)
