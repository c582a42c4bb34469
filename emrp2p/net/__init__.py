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

Where the py-libp2p 0.8.1 hazards (shared notes) are handled:

1 plaintext/secio    host.build_host: ``sec_opt`` = Noise only.
2 handler kills Swarm host.guard_handler around every protocol handler (ours,
                     pubsub's per router protocol, identify...) and around the
                     swarm's negotiation handler; Network._guarded_task around
                     every task; pubsub runs before the host listens.
3 yamux stall        framing.FrameReader: idle/read timeout on every read;
                     keepalive frames; write timeout in the sender.
4 gossip drops       spam protection off; callers recover by sync; payloads
                     capped at 512 KiB (publish raises, validator rejects).
5 adaptive gossip    off; ``recent_message_deliveries`` cleared every 30 s.
6 connection cap     ConnectionConfig max 1e6, min/low 0, high = max (high 0
                     would make the pruner close idle connections in 0.8.1);
                     resource manager with large limits, no circuit breaker.
7 listener survives  run() awaits host.close() (shielded) before leaving
                     host.run(); refuses a fixed port another socket holds.
8 no reconnect       per-peer link task: backoff 0.2 s .. 2 s, seeded jitter;
                     swarm retries off, its 60 s negative cache evicted before
                     each dial; disconnect notifee wakes the loop.
9 logging            emrp2p.logs.configure_logging + route_libp2p.
10 metrics           not enabled. 11 peerstore: in-memory only.
Membership gate: host.MemberGatedNoise refuses a non-member right after the
Noise handshake (inbound and outbound), counted in ``stats.refused_strangers``.
"""

from emrp2p.net.network import MSG_PROTOCOL, NetConfig, NetStats, Network, PortInUse, peer_id_of

__all__ = ["MSG_PROTOCOL", "NetConfig", "NetStats", "Network", "PortInUse", "peer_id_of"]
