"""The networking layer of one node: transport only, it carries opaque bytes.

Importing this package imports py-libp2p (~0.7 s, ~80 MB); ``import emrp2p``
does not. Configure logging (:func:`emrp2p.logs.configure_logging`) first.

API
---
``Network(identity, listen, members, peers, *, gossip=True, config=NetConfig())``
    ``identity``: :class:`emrp2p.crypto.Identity` (its seed is the libp2p key,
    so the peer id is derived from the ledger key). ``listen``: ``("127.0.0.1",
    port)``, port 0 = any. ``members``: Ed25519 public keys allowed to connect.
    ``peers``: public key -> ``/ip4/.../tcp/PORT/p2p/<peer id>`` for the peers
    to keep a persistent connection to (redialed with backoff and jitter).

``await net.run(task_status=...)`` (use ``nursery.start(net.run)``)
    Starts pubsub, then the host; reports started; runs until cancelled; then
    closes the host and its listener (the port can be bound again). Raises
    :class:`PortInUse` if something already listens on a fixed port (libp2p
    would otherwise share it through SO_REUSEPORT).
``net.listen_addrs -> list[str]``  after start; each ends in ``/p2p/<peer id>``.
``Network.peer_id_of(public_key) -> str``  the peer id of a key.
``net.set_members(keys)``  new member set; removed members are disconnected.
``net.send(peer_key, payload) -> bool``  never blocks: queues the frame on
    that member's bounded outbound queue; False if the peer is not a member,
    the payload is empty or over ``max_frame`` or the queue is full (``stats.send_drops``).
    A per-peer task writes everything queued per wake-up in one write on one
    persistent stream of ``/emrp2p/msg/1.0.0``. A batch being written when the
    connection dies is lost (``stats.lost_in_flight``): the layer above retries.
``net.incoming``  ``trio.MemoryReceiveChannel[(sender key, payload)]``, every
    frame received from a member (bounded: a slow consumer back-pressures the
    senders' streams).
``await net.publish(payload)``  gossip to every member node on the topic
    ``emrp2p/blocks/<chain_id>``; lossy by nature, payload <= ``max_gossip``.
``net.gossip_incoming``  ``trio.MemoryReceiveChannel[(origin key, payload)]``,
    only messages signed by a member and within the size cap (validated before
    they are relayed, too); our own publications are not echoed.
``net.connected_peers() -> list[bytes]``  members with a live connection.
``net.stats``  :class:`NetStats` counters; ``net.stats.snapshot()`` for metrics.
``await net.wait_connected(peer_key)`` / ``await net.wait_gossip_peers(n)``
    readiness helpers (bound them with ``trio.fail_after``).

Wire protocol ``/emrp2p/msg/1.0.0``: frames of a 4-byte big-endian length and
the payload; a zero length is a keepalive (sent after ``keepalive_interval`` of
silence, so every read can carry a timeout). Over-cap or malformed input resets
the stream; the node keeps serving others.

Where the py-libp2p hazards (shared notes) are handled: Noise only, membership
gate after the handshake, connection limits, no metrics, memory peerstore:
:mod:`emrp2p.net.host`. Guarded handlers and tasks, reconnect loop, listener
close, dial negative-cache eviction: :mod:`emrp2p.net.network`. Gossip
settings and validator: :mod:`emrp2p.net.gossip`. Logging: :mod:`emrp2p.logs`.
"""

from emrp2p.net.network import MSG_PROTOCOL, NetConfig, NetStats, Network, PortInUse, peer_id_of

__all__ = ["MSG_PROTOCOL", "NetConfig", "NetStats", "Network", "PortInUse", "peer_id_of"]
