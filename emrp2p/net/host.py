"""Building a py-libp2p host the way every emrp2p node needs it.

- The node's Ed25519 seed is the libp2p identity (peer id = our ledger key).
- Noise only (hazard 1): plaintext and secio are never offered.
- The membership gate sits inside the security transport: right after the Noise
  handshake authenticates the remote key, a non-member is refused and its
  connection closed, before any muxer or stream exists. It covers inbound and
  outbound connections alike.
- Failed inbound handshakes are rate limited per source address
  (:class:`HandshakeLimiter`): past a burst, a flooding address's connections are
  closed before the Noise handshake (its key exchange and signature check are the
  costly part), at a trickle it refills. Successful (member) handshakes cost
  nothing, so a member behind the same address still gets in once it retries.
- Connection limits raised so that neither the inbound cap nor the pruner nor
  the resource manager can lock members out (hazard 6). The notes suggest
  ``high_watermark=0``, but in 0.8.1 that makes the pruner close idle
  connections; ``high_watermark = max_connections`` disables pruning instead.
- No metrics channel (hazard 10), in-memory peerstore only (hazard 11).
- :func:`guard_handler` wraps every stream handler so that nothing escapes into
  the Swarm (hazard 2).
- py-libp2p's per-message costs are cut where it spends them (:mod:`emrp2p.net.speedups`,
  installed on import: locks, frame reads and writes, yamux credit, buffered TCP reads).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from libp2p import new_host
from libp2p.abc import IHost, INetStream, IRawConnection, ISecureConn
from libp2p.crypto.ed25519 import Ed25519PublicKey, create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.rcmgr import ResourceLimits, new_resource_manager
from libp2p.security.exceptions import HandshakeFailure
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from multiaddr import Multiaddr

from emrp2p.logs import get_logger
from emrp2p.net import speedups  # noqa: F401 - installs itself on import

__all__ = [
    "peer_id_of",
    "build_host",
    "guard_handler",
    "reset_quietly",
    "HandshakeLimiter",
    "MemberGatedNoise",
]

log = get_logger("emrp2p.net")

Handler = Callable[[INetStream], Awaitable[None]]
_HUGE = 1_000_000


def peer_id_of(public_key: bytes) -> ID:
    """The libp2p peer id of an Ed25519 public key (32 bytes)."""
    return ID.from_pubkey(Ed25519PublicKey.from_bytes(bytes(public_key)))


class HandshakeLimiter:
    """A token bucket of failed inbound handshakes per source address.

    Each address may fail ``burst`` handshakes (a stranger refused, or a broken handshake),
    then one more every ``1 / refill_per_s`` seconds; while its bucket is empty its new
    connections are closed unread. At most ``max_addresses`` are tracked (oldest dropped).
    """

    def __init__(self, burst: int, refill_per_s: float, max_addresses: int = 4096) -> None:
        self.burst = float(burst)
        self.refill_per_s = refill_per_s
        self.max_addresses = max_addresses
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)

    def _tokens(self, address: str, now: float) -> float:
        found = self._buckets.get(address)
        if found is None:
            return self.burst
        tokens, at = found
        return min(self.burst, tokens + (now - at) * self.refill_per_s)

    def allows(self, address: str, now: float) -> bool:
        """Whether a new connection from ``address`` may try a handshake."""
        return self._tokens(address, now) >= 1.0

    def failed(self, address: str, now: float) -> None:
        tokens = max(0.0, self._tokens(address, now) - 1.0)
        self._buckets.pop(address, None)
        self._buckets[address] = (tokens, now)
        if len(self._buckets) > self.max_addresses:
            del self._buckets[next(iter(self._buckets))]


def _remote_address(conn: IRawConnection) -> str | None:
    try:
        remote = conn.get_remote_address()
    except Exception:
        return None
    return None if remote is None else str(remote[0])


class MemberGatedNoise(NoiseTransport):
    """Noise XX that refuses a remote whose authenticated peer id is not a member."""

    def __init__(
        self,
        key_pair: Any,
        is_member: Callable[[ID], bool],
        on_refused: Callable[[ID, str], None],
        limiter: HandshakeLimiter | None = None,
        on_throttled: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(key_pair, noise_privkey=create_x25519_key_pair().private_key)
        self._is_member = is_member
        self._on_refused = on_refused
        self._limiter = limiter
        self._on_throttled = on_throttled

    async def _gate(self, conn: ISecureConn, direction: str) -> ISecureConn:
        peer = conn.get_remote_peer()
        if self._is_member(peer):
            return conn
        self._on_refused(peer, direction)
        await _quietly(conn.close)
        raise HandshakeFailure(f"peer {peer} is not a member")

    async def secure_inbound(self, conn: IRawConnection) -> ISecureConn:
        limiter = self._limiter
        address = _remote_address(conn) if limiter is not None else None
        if limiter is not None and address is not None and not limiter.allows(address, trio.current_time()):
            if self._on_throttled is not None:
                self._on_throttled(address)
            await _quietly(conn.close)
            raise HandshakeFailure(f"too many failed handshakes from {address}; try later")
        try:
            return await self._gate(await super().secure_inbound(conn), "inbound")
        except Exception:
            if limiter is not None and address is not None:
                limiter.failed(address, trio.current_time())
            raise

    async def secure_outbound(self, conn: IRawConnection, peer_id: ID) -> ISecureConn:
        return await self._gate(await super().secure_outbound(conn, peer_id), "outbound")


def build_host(
    seed: bytes,
    listen: Multiaddr,
    *,
    is_member: Callable[[ID], bool],
    on_refused: Callable[[ID, str], None],
    dial_timeout: float,
    limiter: HandshakeLimiter | None = None,
    on_throttled: Callable[[str], None] | None = None,
) -> IHost:
    key_pair = create_new_key_pair(seed)
    config = ConnectionConfig(
        max_connections=_HUGE,
        min_connections=0,
        low_watermark=0,
        high_watermark=_HUGE,
        max_connections_per_peer=4,
        dial_timeout=dial_timeout,
        inbound_upgrade_timeout=dial_timeout,
        outbound_upgrade_timeout=dial_timeout,
    )
    resources = new_resource_manager(
        limits=ResourceLimits(max_connections=_HUGE, max_memory_mb=1 << 20, max_streams=_HUGE),
        enable_metrics=False,
        enable_circuit_breaker=False,
        enable_graceful_degradation=False,
    )
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: MemberGatedNoise(key_pair, is_member, on_refused, limiter, on_throttled)},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        listen_addrs=[listen],
        connection_config=config,
        resource_manager=resources,
        enable_metrics=False,
        enable_mDNS=False,
        enable_upnp=False,
    )


async def _quietly(action: Callable[[], Awaitable[None]]) -> None:
    """Run a closing action for at most a second, ignoring every error (the peer may be gone)."""
    try:
        with trio.move_on_after(1):
            await action()
    except Exception:
        pass


async def reset_quietly(stream: INetStream) -> None:
    """Reset a stream, ignoring every error (it may already be gone)."""
    await _quietly(stream.reset)


def remote_peer(stream: INetStream) -> ID | None:
    try:
        peer = stream.muxed_conn.peer_id
    except Exception:
        return None
    return peer if isinstance(peer, ID) else None


def guard_handler(
    name: str,
    handler: Handler,
    *,
    is_member: Callable[[ID], bool] | None,
    on_refused: Callable[[ID | None, str], None] | None = None,
    on_error: Callable[[str], None] | None = None,
) -> Handler:
    """A handler that never raises: non-members are reset, errors are logged and the stream reset."""

    async def guarded(stream: INetStream) -> None:
        peer = remote_peer(stream)
        try:
            if is_member is not None and (peer is None or not is_member(peer)):
                if on_refused is not None:
                    on_refused(peer, name)
                await reset_quietly(stream)
                return
            await handler(stream)
        except Exception as e:
            if on_error is not None:
                on_error(name)
            log.warning(
                "stream handler failed",
                protocol=name,
                peer=str(peer),
                error=repr(e),
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            await reset_quietly(stream)

    return guarded
