"""A hostile peer for tests: a bare libp2p host that does what a member node never would.

It is a real py-libp2p host (Noise, Yamux, TCP on 127.0.0.1) with any key,
member or not, and no guard of its own: it can dial a node, open any protocol
and write arbitrary bytes on it.
"""

from __future__ import annotations

from typing import Any

import trio
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.network.config import ConnectionConfig, RetryConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from multiaddr import Multiaddr

from emrp2p.crypto import Identity


class HostilePeer:
    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        kp = create_new_key_pair(identity.seed)
        self.host: IHost = new_host(
            key_pair=kp,
            sec_opt={
                NOISE_PROTOCOL_ID: NoiseTransport(kp, noise_privkey=create_x25519_key_pair().private_key)
            },
            muxer_opt={YAMUX_PROTOCOL_ID: Yamux},
            listen_addrs=[Multiaddr("/ip4/127.0.0.1/tcp/0")],
            connection_config=ConnectionConfig(
                max_connections=1_000_000,
                min_connections=0,
                low_watermark=0,
                high_watermark=1_000_000,
                dial_timeout=3.0,
            ),
        )
        swarm: Any = self.host.get_network()
        swarm.retry_config = RetryConfig(max_retries=0)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with self.host.run([Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await self.host.close()

    def forget_failures(self, peer: ID) -> None:
        cache = getattr(self.host.get_network(), "_negative_peer_cache", None)
        if cache is not None:
            cache.clear()

    async def connect(self, addr: str) -> ID:
        info = info_from_p2p_addr(Multiaddr(addr))
        self.forget_failures(info.peer_id)
        await self.host.connect(info)
        return info.peer_id

    def is_connected(self, peer: ID) -> bool:
        return bool(self.host.get_network().connections.get(peer))

    async def open(self, addr: str, protocol: str) -> INetStream:
        """Connect (if needed) and open ``protocol``."""
        peer = await self.connect(addr)
        return await self.host.new_stream(peer, [protocol])  # type: ignore[list-item]

    async def send_raw(self, addr: str, protocol: str, data: bytes) -> INetStream:
        stream = await self.open(addr, protocol)
        await stream.write(data)
        return stream
