"""Reconnection after a peer restarts, and a clean shutdown that frees the port."""

from __future__ import annotations

import pytest
import trio
from netfixtures import Cluster, StartMesh, identities, wait_until

from emrp2p.net import Network, PortInUse


def port_of(addr: str) -> int:
    parts = addr.split("/")
    return int(parts[parts.index("tcp") + 1])


async def test_a_restarted_peer_is_redialed_by_the_reconnect_loop(cluster: Cluster) -> None:
    a_id, b_id = identities(2)
    keys = [a_id.public, b_id.public]
    a = await cluster.start(Network(a_id, ("127.0.0.1", 0), keys, {}))
    addr = a.listen_addrs[0]
    b = await cluster.start(Network(b_id, ("127.0.0.1", 0), keys, {a_id.public: addr}))
    with trio.fail_after(10):
        await b.wait_connected(a_id.public)

    await cluster.stop(a)
    with trio.fail_after(10):
        while a_id.public in b.connected_peers():
            await trio.sleep(0.01)

    # Same key, same port: a restarted daemon.
    a2 = await cluster.start(Network(a_id, ("127.0.0.1", port_of(addr)), keys, {}))
    restarted = trio.current_time()
    with trio.fail_after(5):
        await b.wait_connected(a_id.public)
    assert trio.current_time() - restarted < 3.0
    await wait_until(lambda: b.stats.reconnects == 1)  # counted once connect() returns
    assert b.send(a_id.public, b"welcome back")
    with trio.fail_after(5):
        assert await a2.incoming.receive() == (b_id.public, b"welcome back")


async def test_shutdown_closes_the_listener_so_the_port_can_be_bound_again(cluster: Cluster) -> None:
    (ident,) = identities(1)
    net = await cluster.start(Network(ident, ("127.0.0.1", 0), [ident.public], {}))
    port = port_of(net.listen_addrs[0])
    await cluster.stop(net)
    # Nothing listens any more (hazard 7: the listener must not outlive run()).
    with trio.fail_after(5):
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            stream = None
    assert stream is None
    again = await cluster.start(Network(ident, ("127.0.0.1", port), [ident.public], {}))
    assert port_of(again.listen_addrs[0]) == port


async def test_incoming_channels_close_when_the_network_stops(
    start_mesh: StartMesh, cluster: Cluster
) -> None:
    (net,) = await start_mesh(1)
    await cluster.stop(net)
    with trio.fail_after(5):
        try:
            await net.incoming.receive()
            raise AssertionError("no frame was sent")
        except trio.EndOfChannel:
            pass


async def test_a_second_node_refuses_to_share_a_port_in_use(cluster: Cluster) -> None:
    a_id, b_id = identities(2)
    a = await cluster.start(Network(a_id, ("127.0.0.1", 0), [a_id.public], {}))
    port = port_of(a.listen_addrs[0])
    with pytest.raises(PortInUse):
        await cluster.start(Network(b_id, ("127.0.0.1", port), [b_id.public], {}))
    assert a.listen_addrs  # the first node is untouched
