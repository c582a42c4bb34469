"""One node's network: a libp2p host, our framed message protocol, gossip, persistent links."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import math
import socket
from collections.abc import Iterable
from contextlib import AsyncExitStack
from typing import Any

import trio
from libp2p.abc import INetConn, INetStream, INetwork, INotifee
from libp2p.custom_types import TProtocol
from libp2p.network.config import RetryConfig
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.tools.anyio_service import background_trio_service
from multiaddr import Multiaddr

from emrp2p.channels import send_eagerly
from emrp2p.crypto import Identity
from emrp2p.logs import get_logger, route_libp2p
from emrp2p.net.backoff import Backoff
from emrp2p.net.framing import KEEPALIVE, FrameError, FrameReader, FrameTooLarge, encode_frames
from emrp2p.net.gossip import make_pubsub, member_validator
from emrp2p.net.host import HandshakeLimiter, build_host, guard_handler, peer_id_of, reset_quietly

__all__ = ["MSG_PROTOCOL", "NetConfig", "NetStats", "Network", "PortInUse", "peer_id_of"]

route_libp2p()  # importing libp2p reset its loggers (hazard 9)

log = get_logger("emrp2p.net")

MSG_PROTOCOL = TProtocol("/emrp2p/msg/1.0.0")


class PortInUse(OSError):
    """Another socket listens on our port (libp2p would share it through SO_REUSEPORT)."""


def check_port_free(host: str, port: int) -> None:
    """Refuse to share a listening port: libp2p's listener sets SO_REUSEPORT (hazard 7),
    so a second node on the same port would bind fine and take half of the dials."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
        try:
            probe.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise PortInUse(e.errno, f"{host}:{port} is already in use") from e
            raise


@dataclasses.dataclass(frozen=True)
class NetConfig:
    """Limits and timings; the defaults suit a consortium on a LAN or WAN."""

    max_frame: int = 8 << 20
    max_gossip: int = 512 << 10
    outbound_queue: int = 1024
    incoming_queue: int = 4096
    gossip_queue: int = 1024
    max_batch_bytes: int = 16 << 20
    keepalive_interval: float = 2.0
    idle_timeout: float = 10.0
    read_timeout: float = 10.0
    write_timeout: float = 10.0
    dial_timeout: float = 5.0
    backoff_base: float = 0.2
    backoff_cap: float = 2.0
    backoff_jitter: float = 0.25
    chain_id: str = "emrp2p"
    gossip_degree: int = 6
    gossip_degree_low: int = 4
    gossip_degree_high: int = 12
    maintenance_interval: float = 30.0
    handshake_burst: int = 30
    """Failed inbound handshakes (strangers, broken handshakes) one source address may make at once..."""
    handshake_refill_per_s: float = 2.0
    """...and then per second; past that its connections are closed before the handshake."""

    @property
    def gossip_topic(self) -> str:
        return f"emrp2p/blocks/{self.chain_id}"


@dataclasses.dataclass
class NetStats:
    """Counters for metrics; every field only grows."""

    frames_out: int = 0
    bytes_out: int = 0
    batches_out: int = 0
    frames_in: int = 0
    bytes_in: int = 0
    send_drops: int = 0
    lost_in_flight: int = 0
    oversize_frames: int = 0
    bad_streams: int = 0
    handler_errors: int = 0
    refused_strangers: int = 0
    refused_streams: int = 0
    throttled_handshakes: int = 0
    connects: int = 0
    reconnects: int = 0
    dial_failures: int = 0
    gossip_out: int = 0
    gossip_in: int = 0
    gossip_rejected: int = 0
    gossip_late_rejected: int = 0
    gossip_dropped: int = 0
    task_errors: int = 0

    def snapshot(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class _Link:
    """Our side of one member: its outbound queue and, if configured, its address."""

    def __init__(self, public_key: bytes, addr: Multiaddr | None, queue: int) -> None:
        self.public_key = public_key
        self.peer_id = peer_id_of(public_key)
        self.addr = addr
        self.send, self.recv = trio.open_memory_channel[bytes](queue)
        self.connected = trio.Event()
        self.pump_scope: trio.CancelScope | None = None
        self.task_scope: trio.CancelScope | None = None
        self.removed = False
        self.started = False
        self.ever_connected = False


class _Notifee(INotifee):
    def __init__(self, net: Network) -> None:
        self._net = net

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self._net._on_connected(conn.muxed_conn.peer_id)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._net._on_disconnected(conn.muxed_conn.peer_id)

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def listen(self, network: INetwork, multiaddr: Multiaddr) -> None:
        pass

    async def listen_close(self, network: INetwork, multiaddr: Multiaddr) -> None:
        pass


class Network:
    """See :mod:`emrp2p.net` for the contract."""

    def __init__(
        self,
        identity: Identity,
        listen: tuple[str, int],
        members: Iterable[bytes],
        peers: dict[bytes, str],
        *,
        gossip: bool = True,
        config: NetConfig | None = None,
    ) -> None:
        self.identity = identity
        self.config = cfg = config or NetConfig()
        self.stats = NetStats()
        self.peer_id = peer_id_of(identity.public)
        self._members: dict[ID, bytes] = {}
        self._addrs: dict[bytes, Multiaddr] = {}
        for key, addr in peers.items():
            maddr = Multiaddr(addr)
            if info_from_p2p_addr(maddr).peer_id != peer_id_of(key):
                raise ValueError(f"address {addr} does not name the peer id of its key")
            self._addrs[bytes(key)] = maddr
        self._links: dict[bytes, _Link] = {}
        self._nursery: trio.Nursery | None = None
        self._running = False
        self._closed = trio.Event()
        self._set_member_keys(members)
        self._ensure_links()

        self._incoming_send, self.incoming = trio.open_memory_channel[tuple[bytes, bytes]](cfg.incoming_queue)
        self._gossip_send, self.gossip_incoming = trio.open_memory_channel[tuple[bytes, bytes]](
            cfg.gossip_queue
        )

        host_ip, port = listen
        self.host = build_host(
            identity.seed,
            Multiaddr(f"/ip4/{host_ip}/tcp/{port}"),
            is_member=self._is_member,
            on_refused=self._refused_connection,
            dial_timeout=cfg.dial_timeout,
            limiter=HandshakeLimiter(cfg.handshake_burst, cfg.handshake_refill_per_s),
            on_throttled=self._throttled_handshake,
        )
        self._throttle_logged = -math.inf
        if self.host.get_id() != self.peer_id:
            raise RuntimeError("libp2p identity does not match the node key")
        self._listen = Multiaddr(f"/ip4/{host_ip}/tcp/{port}")
        self._listen_at = (host_ip, port)
        swarm: Any = self.host.get_network()
        swarm.retry_config = RetryConfig(max_retries=0)  # our reconnect loop owns the timing
        swarm.register_notifee(_Notifee(self))

        self._gossip = gossip
        self._router: Any = None
        self._pubsub: Any = None
        self._subscription: Any = None
        if gossip:
            self._router, self._pubsub = make_pubsub(
                self.host,
                degree=cfg.gossip_degree,
                degree_low=cfg.gossip_degree_low,
                degree_high=cfg.gossip_degree_high,
            )
            self._pubsub.set_topic_validator(
                cfg.gossip_topic,
                member_validator(lambda p: self._members.get(p), cfg.max_gossip, self._gossip_rejected),
                is_async_validator=False,
            )
        self.host.set_stream_handler(MSG_PROTOCOL, self._handle_msg_stream)
        self._guard_all_handlers()

    # ----- membership -----

    def _set_member_keys(self, keys: Iterable[bytes]) -> None:
        members = {peer_id_of(k): bytes(k) for k in keys}
        members[self.peer_id] = self.identity.public
        self._members = members

    def _is_member(self, peer: ID) -> bool:
        return peer in self._members

    def set_members(self, keys: Iterable[bytes]) -> None:
        """Replace the member set; links and connections of removed members are closed."""
        self._set_member_keys(keys)
        current = set(self._members.values())
        for key in list(self._links):
            if key not in current:
                link = self._links.pop(key)
                link.removed = True
                if link.task_scope is not None:
                    link.task_scope.cancel()
                link.send.close()
                if self._nursery is not None:
                    self._nursery.start_soon(self._disconnect, link.peer_id)
        # A stranger's connection cannot exist, but a former member's can.
        if self._nursery is not None:
            for peer in list(self._swarm.connections):
                if peer not in self._members:
                    self._nursery.start_soon(self._disconnect, peer)
        self._ensure_links()

    def _ensure_links(self) -> None:
        for key in self._members.values():
            if key == self.identity.public or key in self._links:
                continue
            link = _Link(key, self._addrs.get(key), self.config.outbound_queue)
            self._links[key] = link
        if self._nursery is None:
            return
        for link in self._links.values():
            if not link.started:
                link.started = True
                if self._swarm_connected(link.peer_id):
                    link.connected.set()
                self._nursery.start_soon(self._guarded_task, f"link {link.peer_id}", self._link_task, link)

    async def _disconnect(self, peer: ID) -> None:
        try:
            with trio.move_on_after(self.config.dial_timeout):
                await self.host.disconnect(peer)
        except Exception as e:
            log.debug("disconnect failed", peer=str(peer), error=repr(e))

    # ----- libp2p callbacks -----

    def _refused_connection(self, peer: ID, direction: str) -> None:
        self.stats.refused_strangers += 1
        log.info("refused non-member connection", peer=str(peer), direction=direction)

    def _throttled_handshake(self, address: str) -> None:
        self.stats.throttled_handshakes += 1
        now = trio.current_time()
        if now - self._throttle_logged >= 10:  # a flood must not flood the log too
            self._throttle_logged = now
            log.warning(
                "inbound connections closed before the handshake: too many failed handshakes",
                address=address,
                throttled_so_far=self.stats.throttled_handshakes,
            )

    def _refused_stream(self, peer: ID | None, protocol: str) -> None:
        self.stats.refused_streams += 1
        log.warning("refused stream from non-member", peer=str(peer), protocol=protocol)

    def _handler_error(self, protocol: str) -> None:
        self.stats.handler_errors += 1

    def _gossip_rejected(self, reason: str) -> None:
        self.stats.gossip_rejected += 1
        log.debug("gossip rejected", reason=reason)

    def _on_connected(self, peer: ID) -> None:
        key = self._members.get(peer)
        if key is None:
            if self._nursery is not None:
                self._nursery.start_soon(self._disconnect, peer)
            return
        self.stats.connects += 1
        link = self._links.get(key)
        if link is not None:
            self._mark_connected(link)

    def _mark_connected(self, link: _Link) -> None:
        if link.connected.is_set():
            return
        if link.ever_connected:
            self.stats.reconnects += 1
            log.info("reconnected", peer=str(link.peer_id))
        link.ever_connected = True
        link.connected.set()

    def _on_disconnected(self, peer: ID) -> None:
        if self._swarm_connected(peer):
            return
        key = self._members.get(peer)
        link = self._links.get(key) if key is not None else None
        if link is not None:
            if link.connected.is_set():
                link.connected = trio.Event()
            if link.pump_scope is not None:
                link.pump_scope.cancel()

    @property
    def _swarm(self) -> Any:
        return self.host.get_network()

    def _swarm_connected(self, peer: ID) -> bool:
        return bool(self._swarm.connections.get(peer))

    def _guard_all_handlers(self) -> None:
        """Re-register every protocol handler (ours, pubsub's, identify's...) behind a guard."""
        mux: Any = self.host.get_mux()
        for proto, handler in list(mux.handlers.items()):
            if proto is None or handler is None or getattr(handler, "_emrp2p_guarded", False):
                continue
            guarded: Any = guard_handler(
                str(proto),
                handler,
                is_member=self._is_member,
                on_refused=self._refused_stream,
                on_error=self._handler_error,
            )
            guarded._emrp2p_guarded = True
            self.host.set_stream_handler(proto, guarded)
        swarm = self._swarm
        common: Any = guard_handler(
            "(negotiation)", swarm.common_stream_handler, is_member=None, on_error=self._handler_error
        )
        swarm.set_stream_handler(common)

    # ----- public API -----

    @staticmethod
    def peer_id_of(public_key: bytes) -> str:
        return str(peer_id_of(public_key))

    @property
    def listen_addrs(self) -> list[str]:
        return [str(a) for a in self.host.get_addrs()]

    @property
    def gossip_topic(self) -> str:
        return self.config.gossip_topic

    def connected_peers(self) -> list[bytes]:
        return [k for p, k in self._members.items() if p != self.peer_id and self._swarm_connected(p)]

    def send(self, peer: bytes, payload: bytes) -> bool:
        """Queue ``payload`` for ``peer``; False (and a drop counted) if unknown or its queue is full.

        An empty payload is refused too: a zero-length frame is the keepalive.
        """
        link = self._links.get(bytes(peer))
        if link is None or not payload or len(payload) > self.config.max_frame:
            self.stats.send_drops += 1
            return False
        try:
            link.send.send_nowait(bytes(payload))
        except (trio.WouldBlock, trio.ClosedResourceError):
            self.stats.send_drops += 1
            return False
        return True

    async def publish(self, payload: bytes) -> None:
        """Gossip ``payload`` to every member; may be lost (callers recover by sync)."""
        if self._pubsub is None or not self._running:
            raise RuntimeError("gossip is not running")
        if len(payload) > self.config.max_gossip:
            raise ValueError(f"gossip payload of {len(payload)} bytes over the {self.config.max_gossip} cap")
        await self._pubsub.publish(self.config.gossip_topic, bytes(payload))
        self.stats.gossip_out += 1

    async def wait_connected(self, peer: bytes) -> None:
        """Until a connection to ``peer`` (a member) is up; bound it with a timeout."""
        link = self._links.get(bytes(peer))
        if link is None:
            raise KeyError("not a member")
        while not self._swarm_connected(link.peer_id):
            await link.connected.wait()
            await trio.sleep(0)

    async def wait_gossip_peers(self, n: int) -> None:
        """Until ``n`` peers are in our gossip mesh or subscribed to our topic (for tests and startup)."""
        if self._pubsub is None:
            raise RuntimeError("gossip is off")
        topic = self.config.gossip_topic
        while len(self._pubsub.peer_topics.get(topic, ())) < n:
            await trio.sleep(0.02)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Start pubsub, then the host; report started; run until cancelled; close the host."""
        if self._running or self._closed.is_set():
            raise RuntimeError("a Network runs once")
        check_port_free(*self._listen_at)
        async with AsyncExitStack() as stack:
            if self._gossip:
                await stack.enter_async_context(background_trio_service(self._pubsub))
                await stack.enter_async_context(background_trio_service(self._router))
                self._subscription = await self._pubsub.subscribe(self.config.gossip_topic)
            await stack.enter_async_context(self.host.run([self._listen]))
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    self._running = True
                    self._ensure_links()
                    if self._gossip:
                        nursery.start_soon(self._guarded_task, "gossip consumer", self._consume_gossip)
                        nursery.start_soon(self._guarded_task, "maintenance", self._maintenance)
                    log.info("network started", peer_id=str(self.peer_id), addrs=self.listen_addrs)
                    task_status.started()
                    await trio.sleep_forever()
            finally:
                self._running = False
                self._nursery = None
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    try:
                        await self.host.close()  # hazard 7: close the listener before host.run exits
                    except Exception as e:
                        log.warning("host close failed", error=repr(e))
                self._closed.set()
                self._incoming_send.close()
                self._gossip_send.close()

    # ----- tasks -----

    async def _guarded_task(self, name: str, fn: Any, *args: Any) -> None:
        """Run a task; log and count an exception instead of letting it end the node."""
        while True:
            try:
                await fn(*args)
                return
            except Exception as e:
                self.stats.task_errors += 1
                log.error("network task failed; restarting", task=name, error=repr(e), exc_info=True)
                await trio.sleep(1)

    async def _link_task(self, link: _Link) -> None:
        seed = hashlib.sha256(self.identity.public + link.public_key).digest()
        cfg = self.config
        backoff = Backoff(cfg.backoff_base, cfg.backoff_cap, jitter=cfg.backoff_jitter, seed=seed)
        with trio.CancelScope() as link.task_scope:
            while not link.removed:
                if not self._swarm_connected(link.peer_id):
                    if link.addr is None:
                        if link.connected.is_set():  # stale until the disconnect notifee runs
                            await trio.sleep(backoff.next())
                        else:
                            await link.connected.wait()
                        continue
                    if not await self._dial(link):
                        await trio.sleep(backoff.next())
                        continue
                started = trio.current_time()
                await self._pump(link)
                if trio.current_time() - started > 2 * cfg.backoff_cap:
                    backoff.reset()
                await trio.sleep(backoff.next())

    async def _dial(self, link: _Link) -> bool:
        assert link.addr is not None
        # The swarm remembers failed peers for 60 s and refuses to dial them (hazard 8).
        cache = getattr(self._swarm, "_negative_peer_cache", None)
        if cache is not None:
            cache.evict(str(link.peer_id))
        try:
            with trio.fail_after(self.config.dial_timeout):
                await self.host.connect(PeerInfo(link.peer_id, [link.addr]))
        except Exception as e:
            self.stats.dial_failures += 1
            log.debug("dial failed", peer=str(link.peer_id), error=repr(e))
            return False
        self._mark_connected(link)
        return True

    async def _pump(self, link: _Link) -> None:
        """Open one stream to the peer and write batches of queued frames until it fails."""
        cfg = self.config
        stream: INetStream | None = None
        batch: list[bytes] = []
        with trio.CancelScope() as scope:
            link.pump_scope = scope
            try:
                if not self._swarm_connected(link.peer_id):
                    return  # dialing is the link task's job (backoff, negative cache)
                with trio.fail_after(cfg.dial_timeout):
                    stream = await self.host.new_stream(link.peer_id, [MSG_PROTOCOL])
                while True:
                    batch = []
                    with trio.move_on_after(cfg.keepalive_interval):
                        batch.append(await link.recv.receive())
                    size = sum(map(len, batch))
                    while size < cfg.max_batch_bytes:
                        try:
                            frame = link.recv.receive_nowait()
                        except trio.WouldBlock:
                            break
                        batch.append(frame)
                        size += len(frame)
                    data = encode_frames(batch) if batch else KEEPALIVE
                    with trio.fail_after(cfg.write_timeout):
                        await stream.write(data)
                    if batch:
                        self.stats.frames_out += len(batch)
                        self.stats.bytes_out += size
                        self.stats.batches_out += 1
            except Exception as e:
                self.stats.lost_in_flight += len(batch)
                log.debug("outbound stream ended", peer=str(link.peer_id), error=repr(e))
            finally:
                link.pump_scope = None
        if scope.cancelled_caught:
            self.stats.lost_in_flight += len(batch)
        if stream is not None:
            await reset_quietly(stream)

    async def _handle_msg_stream(self, stream: INetStream) -> None:
        """Read frames from a member until the stream ends; reset it on any framing error."""
        cfg = self.config
        peer = stream.muxed_conn.peer_id
        key = self._members.get(peer)
        if key is None:
            self._refused_stream(peer, MSG_PROTOCOL)
            await reset_quietly(stream)
            return
        reader = FrameReader(
            stream, max_frame=cfg.max_frame, idle_timeout=cfg.idle_timeout, read_timeout=cfg.read_timeout
        )
        try:
            while True:
                frame = await reader.next_frame()
                if frame is None:
                    return
                if peer not in self._members:
                    raise FrameError("sender is no longer a member")
                self.stats.frames_in += 1
                self.stats.bytes_in += len(frame)
                await send_eagerly(self._incoming_send, (key, frame))
        except FrameTooLarge as e:
            self.stats.oversize_frames += 1
            log.warning("oversize frame; stream reset", peer=str(peer), error=str(e))
        except FrameError as e:
            self.stats.bad_streams += 1
            log.warning("bad stream; reset", peer=str(peer), error=str(e))
        except StreamError as e:
            log.debug("inbound stream ended", peer=str(peer), error=repr(e))
        except trio.ClosedResourceError:
            pass
        await reset_quietly(stream)

    async def _consume_gossip(self) -> None:
        """Move validated gossip to ``gossip_incoming``; a full queue drops (gossip is lossy)."""
        assert self._subscription is not None
        while True:
            msg = await self._subscription.get()
            try:
                origin = self._members.get(ID(msg.from_id))
                data = bytes(msg.data)
            except Exception:
                origin = None
            if origin is None or len(data) > self.config.max_gossip:
                self.stats.gossip_late_rejected += 1  # passed the validator; membership changed since
                continue
            if origin == self.identity.public:
                continue
            try:
                self._gossip_send.send_nowait((origin, data))
                self.stats.gossip_in += 1
            except trio.WouldBlock:
                self.stats.gossip_dropped += 1
            except trio.ClosedResourceError:
                return

    async def _maintenance(self) -> None:
        """Clear state that libp2p's router only grows once adaptive gossip is off (hazard 5)."""
        while True:
            await trio.sleep(self.config.maintenance_interval)
            deliveries = getattr(self._router, "recent_message_deliveries", None)
            if deliveries is not None:
                deliveries.clear()
