"""One node: owns the nursery and drives the sans-IO consensus core over libp2p.

A single task (the *core loop*) owns the ``Core``. Everything that touches it —
peer messages, ticks, local submissions — arrives through one inbox, so the
loop can take all that is waiting, step the core with each, and then carry out
the resulting ``Ready`` once: persist what its messages promise (the votes
and accepted blocks: one LMDB write in a worker thread, so a batch of them
costs one fsync), send, then hand its commits to the *committer* task. Commits
rewrite the state and its Merkle nodes (and now and then the transaction
index): on a chain with history several times the cost of the rest, and no peer
waits for them (a commit notice is its voters' signatures). The committer
writes them in order, those waiting in one write, while the loop goes on.

Local apps hear "committed" as soon as the loop has handed a commit over, not
after the committer's write: a certified block is final and durable already,
since every voter wrote it before voting (and this node wrote it too, unless it
learned the block by sync), so a crash here loses nothing that a restart does
not learn again from its own accepted blocks or its peers. What apps read waits
for the committer instead (``settled``): a read that follows a "committed"
answer sees that block and its state.

Signature checks are kept off the loop's critical path: messages and
submissions carrying signed transactions are pre-verified before they reach
the inbox (in a worker thread for a large batch, as libsodium releases the GIL;
inline for a few signatures, where a thread hand-off costs more than the
checks), which fills the process-wide verified-signature cache that the core
then hits. Transactions forwarded by other members take a lane of their own, so
that proposals and votes never queue behind their checks. The leader relays what
enters its pool to the other validators ahead of its proposals, which then name
their transactions by id (:mod:`emrp2p.node.compact`): followers check the
signatures while transactions wait for a block, in a lane of their own too.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import trio

from emrp2p.channels import send_eagerly
from emrp2p.codec import CodecError, decode, encode
from emrp2p.consensus import (
    CommitNotice,
    Config,
    Core,
    EvidenceFound,
    ForwardTxs,
    Heartbeat,
    LeaderChanged,
    Message,
    Propose,
    SubmitResult,
    SubmitStatus,
    SyncResponse,
    TickSchedule,
    TxExpired,
    TxRejected,
)
from emrp2p.consensus.core import Event
from emrp2p.consensus.messages import ProposalWanted, ProposeCompact, ShareTxs
from emrp2p.crypto import Identity, check_pending, pending_checks
from emrp2p.ledger.execute import Ledger
from emrp2p.ledger.types import Block, Genesis, Tx
from emrp2p.node.compact import CompactRelay
from emrp2p.node.intake import Intake
from emrp2p.node.metrics import NodeMetrics, serve_metrics
from emrp2p.rpc.events import EventBus
from emrp2p.store.api import WriteBatch
from emrp2p.store.lmdb_store import CHAIN_DIR, LmdbStore, StoreError

log = structlog.get_logger("emrp2p.node")


__all__ = ["Node", "NodeSettings"]

_FORWARD_PREFIX = encode(ForwardTxs(()))[:3]
"""How every ForwardTxs message starts (array header and type tag), to route it unparsed."""

INLINE_VERIFY_MAX = 16
"""Up to this many signatures (about 1 ms) are checked on the event loop rather than in a thread."""

FORWARD_ROUND_BYTES = 256 << 10
"""The forward lane decodes and checks at most about this much at a time (~1,000 transactions)."""

CHECK_LANE = 256
"""Peer messages decoded and waiting for their transactions' signatures to be checked."""

COMMIT_LANE = 64
"""Readies' commits waiting for the committer: past this the core loop waits for the disk."""


def _mono_ms() -> int:
    return int(time.monotonic() * 1000)


@dataclass
class NodeSettings:
    """What one node needs to run; the daemon builds it from the TOML config."""

    identity: Identity
    genesis: Genesis
    datadir: Path
    listen: tuple[str, int]
    peers: dict[bytes, str]
    name: str = "node"
    consensus: Config = field(default_factory=Config)
    net: Any = None
    """An ``emrp2p.net.NetConfig`` (kept untyped here so that importing this module stays light)."""
    rpc_socket: Path | None = None
    rpc_mode: int | None = None
    rpc_group: str | None = None
    metrics_listen: tuple[str, int] | None = None
    tick_ms: int = 20
    store_map_size: int | None = None
    """LMDB map size (the most the chain may grow to); None keeps the store's default."""
    max_batch: int = 512
    """At most this many inbox items are stepped before one Ready is carried out."""
    forward_queue_bytes: int = 32 << 20
    """Forwarded-transaction messages waiting to be checked, in bytes; past it they are dropped
    (and resent by their forwarder after ``forward_retry_ms``)."""
    max_backlog_ms: int = 2000
    """Apps are answered ``busy``, before their transactions cost a signature check, once the
    pool holds what the network committed of it over this long (at least the node's share of
    two full blocks), or its oldest transaction has waited longer than this (0: never; see
    :meth:`Node.intake_room`): past the network's capacity, intake keeps pace with commits,
    a transaction taken commits within about this long, and apps learn at once that they
    must slow down."""
    gossip_interval_ms: int = 1000
    """The leader gossips its latest commit notice at most this often. Validators and observers
    get every notice directly from the leader; gossip reaches the nodes it has no link to,
    and block sync fills what they missed in between."""
    compact_proposals: bool = True
    """As the leader, relay pending transactions to the other validators as they come, and send
    new proposals with transaction ids instead of transactions (:mod:`emrp2p.node.compact`).
    Compact proposals from others are understood either way."""
    relay_interval_ms: int = 20
    """The leader relays what entered its pool at most this often (and before each proposal)."""


@dataclass
class _Waiter:
    event: trio.Event = field(default_factory=trio.Event)
    height: int | None = None
    code: str | None = None
    state: str = "pending"


def _signed_txs(msg: Message) -> Sequence[Tx]:
    """Transactions a consensus message carries (forwarded ones take their own lane)."""
    if isinstance(msg, Propose):
        return msg.block.txs
    if isinstance(msg, SyncResponse):
        return [tx for b in msg.blocks for tx in b.txs]
    return ()


class Node:
    def __init__(self, settings: NodeSettings) -> None:
        from emrp2p.net import NetConfig, Network

        self.settings = s = settings
        self.identity = s.identity
        self.genesis = s.genesis
        self.ledger = Ledger(s.genesis)
        self.chain_id = self.ledger.chain_id
        s.datadir.mkdir(parents=True, exist_ok=True)
        if s.store_map_size is not None:
            self.store = LmdbStore(s.datadir / CHAIN_DIR, map_size=s.store_map_size)
        else:
            self.store = LmdbStore(s.datadir / CHAIN_DIR)
        if self.store.genesis() is None:
            self.store.init_genesis(s.genesis, self.ledger.genesis_state())
        elif self.store.genesis() != s.genesis:
            self.store.close()
            raise ValueError(f"datadir {s.datadir} holds a different chain than the genesis file")
        self.core = Core(s.identity, self.ledger, self.store, s.consensus, self._now_ms())
        share = -(-2 * s.consensus.max_txs_per_block // max(1, len(self.core.validators())))
        self._intake = Intake(max(1, s.max_backlog_ms), share, _mono_ms(), self.core.pool.drained)
        members = [m.node for m in self.ledger.members(self.store.state)]
        self._members = frozenset(members)
        net_cfg = s.net if s.net is not None else NetConfig(chain_id=self.chain_id.hex()[:16])
        self.net = Network(s.identity, s.listen, members, s.peers, config=net_cfg)
        self.events = EventBus()
        self.metrics = NodeMetrics()
        self._inbox_send, self._inbox = trio.open_memory_channel[tuple[Any, ...]](4096)
        self._commit_send, self._commits = trio.open_memory_channel[tuple[WriteBatch, list[Block]]](
            COMMIT_LANE
        )
        self._forward_send, self._forwards = trio.open_memory_channel[tuple[bytes, bytes]](math.inf)
        self._check_send, self._to_check = trio.open_memory_channel[tuple[bytes, Message]](CHECK_LANE)
        self._forward_bytes = 0
        self._relay = CompactRelay(s.identity.public, s.consensus.max_pending)
        self._last_relay = 0
        self._shared_send, self._shared = trio.open_memory_channel[list[Tx]](math.inf)
        self._shared_queued = 0
        self._in_check: dict[bytes, trio.Event] = {}
        """Transactions whose signatures a worker thread is checking, and the event set when done."""
        self._waiters: dict[bytes, _Waiter] = {}
        self._submit_times: dict[bytes, float] = {}
        self._closing = False
        self._gossip_latest: bytes | None = None
        self._gossip_wake = trio.Event()
        self._stored = trio.Event()
        """Set (and replaced) after each write of the committer."""

    # ------------------------------------------------------------------ clock

    @staticmethod
    def _now_ms() -> int:
        return int(time.time() * 1000)

    # ------------------------------------------------------------------ run

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        from emrp2p.node.api import build_dispatcher
        from emrp2p.rpc.server import RpcServer

        s = self.settings
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.net.run)
                nursery.start_soon(self._core_loop)
                nursery.start_soon(self._committer)
                nursery.start_soon(self._receive_messages)
                nursery.start_soon(self._check_messages)
                nursery.start_soon(self._receive_forwards)
                nursery.start_soon(self._check_shared)
                nursery.start_soon(self._receive_gossip)
                nursery.start_soon(self._publish_commits)
                if s.rpc_socket is not None:
                    server = RpcServer(
                        s.rpc_socket,
                        build_dispatcher(self),
                        mode=s.rpc_mode,
                        group=s.rpc_group,
                        events=self.events,
                        observe=self.metrics.observe_rpc,
                    )
                    await nursery.start(server.run)
                if s.metrics_listen is not None and s.metrics_listen[1] != 0:
                    await nursery.start(
                        functools.partial(serve_metrics, refresh=self._refresh_net_metrics),
                        self.metrics.registry,
                        *s.metrics_listen,
                    )
                log.info(
                    "node started",
                    name=s.name,
                    key=self.identity.public.hex()[:16],
                    listen=self.net.listen_addrs,
                    height=self.core.committed_height,
                    term=self.core.term,
                )
                task_status.started(self)
        finally:
            self._closing = True
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self.store.close)
            log.info("node stopped", name=s.name)

    def _refresh_net_metrics(self) -> None:
        self.metrics.update_net(self.net.stats.snapshot(), len(self.net.connected_peers()))

    # ------------------------------------------------------------------ inputs

    async def _receive_messages(self) -> None:
        """Decode peer messages and pass them on, in arrival order, to :meth:`_check_messages`.

        The leader's proposals and heartbeats show it alive as they arrive: checking a big
        block's signatures can take longer than the election timeout on a loaded machine, and
        the messages behind it wait for that, but the leader is not to be deposed meanwhile.

        Forwarded transactions take a lane of their own (:meth:`_receive_forwards`): under
        load, checking them must not hold up the proposals and votes that arrive on the same
        stream, or rounds slow down exactly when they matter most. A full lane drops the batch;
        the forwarder sends it again (``forward_retry_ms``).

        Compact proposals are handled here, in arrival order (:mod:`emrp2p.node.compact`): the
        leader's relayed transactions are kept as they come (their checks take a lane of their
        own), a compact proposal behind them is filled in before it goes on as a ``Propose``
        (or asked for whole), and a follower's request for a whole proposal is answered.
        """
        async for sender, payload in self.net.incoming:
            if payload[:3] == _FORWARD_PREFIX:
                if self._forward_bytes + len(payload) > self.settings.forward_queue_bytes:
                    self.metrics.forward_drops.inc()
                else:
                    self._forward_bytes += len(payload)
                    self._forward_send.send_nowait((sender, payload))
                continue
            msg = self._decode(sender, payload)
            if type(msg) is ShareTxs:
                self._take_shared(msg)
                continue
            if type(msg) is ProposeCompact:
                term, msg = msg.term, self._expand(sender, msg)
                if msg is None:  # the whole proposal was asked for; its sender is alive
                    await send_eagerly(self._inbox_send, ("alive", sender, term))
                    continue
            elif type(msg) is ProposalWanted:
                whole = self._relay.whole(msg.block_hash)
                if whole is not None:
                    self.net.send(sender, encode(whole))
                continue
            if msg is None:
                continue
            if isinstance(msg, (Propose, Heartbeat)):
                await send_eagerly(self._inbox_send, ("alive", sender, msg.term))
            await send_eagerly(self._check_send, (sender, msg))

    def _expand(self, sender: bytes, msg: ProposeCompact) -> Propose | None:
        """A compact proposal filled in; if this node lacks any of its transactions, None, and
        the sender is asked for the whole proposal."""
        whole = self._relay.expand(msg, self.core.pool.get)
        if whole is None:
            self.metrics.compact_proposals.labels("asked").inc()
            self.net.send(sender, encode(ProposalWanted(msg.header.block_hash)))
        else:
            self.metrics.compact_proposals.labels("filled").inc()
        return whole

    def _take_shared(self, msg: ShareTxs) -> None:
        """Relayed transactions are kept at once (a compact proposal behind them on the stream
        names them), and their signatures checked in their own lane; past ``max_pending``
        waiting, a proposal's own lane checks them instead."""
        pool, relay = self.core.pool, self._relay
        fresh = [tx for tx in msg.txs if not relay.has_shared(tx.tx_id) and tx.tx_id not in pool]
        relay.add_shared(fresh)
        if fresh and self._shared_queued + len(fresh) <= self.settings.consensus.max_pending:
            self._shared_queued += len(fresh)
            self._shared_send.send_nowait(fresh)

    async def _check_shared(self) -> None:
        """Check the signatures of relayed transactions, those waiting in one batch, in a thread.
        A proposal naming some of the batch being checked waits for it (:meth:`_preverify`);
        those still queued it checks itself, and this lane finds them done."""
        async for first in self._shared:
            txs = list(first)
            while True:
                try:
                    txs.extend(self._shared.receive_nowait())
                except trio.WouldBlock:
                    break
            self._shared_queued -= len(txs)
            await self._preverify(txs, inline_max=0)

    async def _check_messages(self) -> None:
        """Pre-verify the transactions a message carries, then hand it to the core, in order.

        A proposal's parent certificate commits its parent (the leader sends no separate
        notice then). When its transactions need checks in a worker thread, the commit goes
        to the core first, so that it does not wait for them; else both go in one item, so
        the core takes them in one turn and the follower writes once (the commit and the
        accepted block) instead of twice per round.
        """
        async for sender, msg in self._to_check:
            txs = _signed_txs(msg)
            if not isinstance(msg, Propose) or msg.block.header.parent_cert is None:
                if txs:
                    await self._preverify(txs)
                await send_eagerly(self._inbox_send, ("msg", sender, msg))
                continue
            notice = CommitNotice(msg.term, msg.block.header.parent_cert)
            if await self._preverify(txs, first=("msg", sender, notice)):
                await send_eagerly(self._inbox_send, ("msg", sender, msg))
            else:
                await send_eagerly(self._inbox_send, ("msgs", sender, (notice, msg)))

    async def _receive_forwards(self) -> None:
        """Forwarded transactions: those the pool already holds are dropped before they cost a check.

        The messages waiting when the lane gets to them are checked in one batch: on a loaded
        leader, one message at a time (each a thread round trip) fell behind its followers'
        forwards, and transactions waited in this lane for longer than a round. A batch stops
        at ``FORWARD_ROUND_BYTES`` though: decoding is done here, on the event loop, and a
        flood's worth at once took tenths of a second of CPU (longer on a busy machine), with
        every other task of the node waiting.
        """
        async for first in self._forwards:
            waiting = [first]
            size = len(first[1])
            while size < FORWARD_ROUND_BYTES:
                try:
                    waiting.append(self._forwards.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                size += len(waiting[-1][1])
            batch: list[tuple[bytes, ForwardTxs]] = []
            for sender, payload in waiting:
                self._forward_bytes -= len(payload)
                msg = self._decode(sender, payload)
                if not isinstance(msg, ForwardTxs):
                    continue  # undecodable (the prefix admits no other type)
                fresh = self._unseen(msg)
                if fresh is not None:
                    batch.append((sender, fresh))
            if not batch:
                continue
            # Always in a worker thread: on the leader this lane carries most of the load,
            # and checks in another thread can use the other core meanwhile.
            await self._preverify([tx for _, msg in batch for tx in msg.txs], inline_max=0)
            for sender, msg in batch:
                await send_eagerly(self._inbox_send, ("msg", sender, msg))

    def _decode(self, sender: bytes, payload: bytes) -> Message | None:
        try:
            return decode(Message, payload)
        except CodecError as e:
            log.warning("undecodable message dropped", peer=sender.hex()[:16], error=str(e))
            self.metrics.bad_messages.inc()
            return None

    def _unseen(self, msg: ForwardTxs) -> ForwardTxs | None:
        """Forwarded transactions the pool already holds or has seen commit cost nothing more."""
        pool = self.core.pool
        fresh = tuple(tx for tx in msg.txs if tx.tx_id not in pool and not pool.known_committed(tx.tx_id))
        if not fresh:
            return None
        return msg if len(fresh) == len(msg.txs) else ForwardTxs(fresh)

    def _relay_now(self) -> None:
        """Send the other validators what the leader queued for relaying."""
        self._send_relays(self._relay.take(self.core.validators()))

    def _send_relays(self, relays: dict[bytes, list[Tx]]) -> None:
        self._last_relay = _mono_ms()
        for dest, txs in relays.items():
            for i in range(0, len(txs), 1000):
                if not self.net.send(dest, encode(ShareTxs(tuple(txs[i : i + 1000])))):
                    self.metrics.send_drops.inc()

    async def _receive_gossip(self) -> None:
        async for origin, payload in self.net.gossip_incoming:
            try:
                msg = decode(CommitNotice, payload)
            except CodecError as e:
                log.warning("undecodable gossip dropped", origin=origin.hex()[:16], error=str(e))
                self.metrics.bad_messages.inc()
                continue
            await send_eagerly(self._inbox_send, ("msg", origin, msg))

    async def _preverify(
        self, txs: Sequence[Tx], inline_max: int = INLINE_VERIFY_MAX, first: tuple[Any, ...] | None = None
    ) -> bool:
        """Fill the verified-signature cache for ``txs``: the checks it lacks in a worker thread
        when there are more than ``inline_max``, else inline (a thread hand-off costs more
        than a few checks). Those another lane's worker thread is checking right now (a
        follower's relayed transactions, when the proposal naming them comes) it waits for,
        rather than check them twice at once. ``first`` goes to the core's inbox before
        waiting on a thread; whether it went (and a thread was waited on)."""
        todo = self._unchecked(txs)
        waited = False
        in_check = self._in_check
        if todo and in_check:
            busy = {ev for tx in txs if (ev := in_check.get(tx.tx_id)) is not None}
            if busy:
                if first is not None:
                    await send_eagerly(self._inbox_send, first)
                    first, waited = None, True
                for ev in busy:
                    await ev.wait()
                todo = self._unchecked(txs)
        if len(todo) <= inline_max:
            if todo:
                check_pending(todo)
            return waited
        if first is not None:
            await send_eagerly(self._inbox_send, first)
            waited = True
        by_signature = {tx.signature: tx.tx_id for tx in txs}
        ids = [by_signature[item[2]] for item in todo]
        done = trio.Event()
        for tx_id in ids:
            in_check.setdefault(tx_id, done)
        try:
            await trio.to_thread.run_sync(check_pending, todo)
        finally:
            for tx_id in ids:
                if in_check.get(tx_id) is done:
                    del in_check[tx_id]
            done.set()
        return waited

    def _unchecked(self, txs: Sequence[Tx]) -> list[tuple[bytes, bytes, bytes, bytes]]:
        """What :func:`check_pending` has to check of ``txs``: (key, message, signature, cache key)."""
        sb = self.ledger.signing_bytes
        return pending_checks([(tx.sender, sb(tx), tx.signature) for tx in txs])

    def intake_room(self, count: int) -> int:
        """How many of ``count`` transactions submitted now to take, in order; the rest are
        answered busy (and counted) before anything about them is decoded or checked.

        With ``max_backlog_ms`` = L: the pool takes transactions while it holds fewer (not
        counting those held back by a nonce gap) than the network committed of it over the
        last L, or than its share of two full blocks (one in flight, one filling: what keeps
        blocks full), and none while its oldest has waited longer than L
        (:mod:`emrp2p.node.intake`). A transaction taken should commit within about L, and
        past the network's capacity intake keeps pace with commits instead of checking
        transactions seconds ahead of their turn."""
        limit = self.settings.max_backlog_ms
        if not limit or count <= 0:
            return max(count, 0)
        pool = self.core.pool
        if self.core.backlog_ms() > limit:
            take = 0
        else:
            take = min(count, self._intake.room(_mono_ms(), pool.drained, pool.waiting()))
        if take < count:
            self.metrics.backlog_refusals.inc(count - take)
        return take

    async def submit(self, txs: Sequence[Tx]) -> list[SubmitResult]:
        """Local intake: what :meth:`intake_room` leaves no room for is answered busy, the rest
        goes to :meth:`submit_admitted`."""
        take = self.intake_room(len(txs))
        refused = [SubmitResult(tx.tx_id, SubmitStatus.BUSY) for tx in txs[take:]]
        return await self.submit_admitted(txs[:take]) + refused

    async def submit_admitted(self, txs: Sequence[Tx]) -> list[SubmitResult]:
        """Transactions :meth:`intake_room` already took (the RPC methods ask it before they
        decode anything): stateless checks, dedupe and the pool's bound happen in the core."""
        if self._closing:
            from emrp2p.rpc.errors import Unavailable

            raise Unavailable("node is shutting down")
        if not txs:
            return []
        await self._preverify(txs)
        reply: list[list[SubmitResult]] = []
        done = trio.Event()
        await send_eagerly(self._inbox_send, ("submit", txs, reply, done))
        await done.wait()
        now = time.monotonic()
        for r in reply[0]:
            if r.status is SubmitStatus.ACCEPTED:
                self._submit_times.setdefault(r.tx_id, now)
        return reply[0]

    async def settled(self) -> None:
        """Wait until the store holds every commit the core had made when called (the committer
        writes them a moment behind): reads of the chain and state go after this."""
        target = self.core.committed_height
        while self.store.committed_height() < target:
            await self._stored.wait()

    async def wait_committed(self, tx_id: bytes, timeout: float) -> _Waiter:
        """Wait until the transaction commits (its block is certified), is rejected or expires."""
        w = self._waiters.get(tx_id)
        if w is None:
            w = self._waiters[tx_id] = _Waiter()
            status = self.core.tx_status(tx_id)
            if status.state.value != "pending":
                self._resolve(tx_id, status.state.value, status.height, status.code)
        with trio.fail_after(timeout):
            await w.event.wait()
        return w

    # ------------------------------------------------------------------ the core loop

    async def _core_loop(self) -> None:
        """Ticks every ``tick_ms`` while the core waits on the clock; an idle core sleeps until
        its next deadline (``TickSchedule``) or the next input."""
        core = self.core
        me = self.identity.public
        compact = self.settings.compact_proposals
        schedule = TickSchedule(self.settings.tick_ms, trio.current_time() * 1000)
        while True:
            items: list[tuple[Any, ...]] = []
            with trio.move_on_at(schedule.wake_at(core) / 1000):
                items.append(await self._inbox.receive())
            while len(items) < self.settings.max_batch:
                try:
                    items.append(self._inbox.receive_nowait())
                except trio.WouldBlock:
                    break
            replies: list[trio.Event] = []
            relay = compact and core.leader == me
            # One read snapshot for the whole batch (nothing is written until _carry_out):
            # executing a block reads the state hundreds of times.
            with self.store.pinned():
                schedule.catch_up(core, trio.current_time() * 1000, self._now_ms())
                for item in items:
                    kind = item[0]
                    if kind == "msg":
                        core.step(item[1], item[2])
                        if relay and type(item[2]) is ForwardTxs:
                            pool = core.pool
                            self._relay.queue(item[1], [tx for tx in item[2].txs if tx.tx_id in pool])
                    elif kind == "msgs":
                        for msg in item[2]:
                            core.step(item[1], msg)
                    elif kind == "alive":
                        core.leader_traffic(item[1], item[2])
                    elif kind == "submit":
                        results = core.submit(item[1])
                        item[2].append(results)
                        replies.append(item[3])
                        if relay:
                            accepted = SubmitStatus.ACCEPTED
                            self._relay.queue(
                                me,
                                [tx for tx, r in zip(item[1], results, strict=True) if r.status is accepted],
                            )
            if self._relay.queued() and _mono_ms() - self._last_relay >= self.settings.relay_interval_ms:
                self._relay_now()
            if core.has_ready():
                await self._carry_out()
            for ev in replies:
                ev.set()

    async def _carry_out(self) -> None:
        core = self.core
        compact = self.settings.compact_proposals
        while core.has_ready():
            rd = core.ready()
            promises, commits = rd.write.split()
            encoded: dict[int, bytes] = {}
            first, rest = rd.split_messages()
            # The followers check a proposal sent first while this node writes it (see ``Ready``).
            self._send_messages(first, encoded, compact)
            await self._write(promises)
            self._send_messages(rest, encoded, compact)
            if not commits.empty() or rd.committed:
                await send_eagerly(self._commit_send, (commits, rd.committed))
                self._acknowledge(rd.committed)
            for ev in rd.events:
                self._on_event(ev)
            core.advance(rd)
            self._intake.observe(_mono_ms(), core.pool.drained)
            self.metrics.pool_size.set(len(core.pool))
            self.metrics.term.set(core.term)
            self.metrics.is_leader.set(1 if core.leader == self.identity.public and core.is_validator else 0)

    def _send_messages(
        self, messages: list[tuple[bytes, Message]], encoded: dict[int, bytes], compact: bool
    ) -> None:
        """Send ``messages``, each encoded once (``encoded``: by object, across calls); a
        proposal as a compact one when ``compact``, its transactions relayed ahead of it."""
        for dest, msg in messages:
            data = encoded.get(id(msg))
            if data is None:
                small = (
                    self._relay.compact(msg, self.core.validators())
                    if compact and type(msg) is Propose
                    else None
                )
                if small is not None:
                    self._send_relays(small[0])  # the block's transactions go ahead of it
                data = encoded[id(msg)] = encode(msg if small is None else small[1])
            if not self.net.send(dest, data):
                self.metrics.send_drops.inc()

    async def _committer(self) -> None:
        """Writes the core's commits in order, behind the core loop (apps have heard of them
        already; reads wait for this write). What is waiting when a write starts goes in one
        write (one fsync for several blocks under load). On the way out, every commit handed
        over is still written."""
        try:
            while True:
                first = await self._commits.receive()
                with trio.CancelScope(shield=True):
                    await self._write_commits([first])
        except trio.Cancelled:
            with trio.CancelScope(shield=True):
                await self._write_commits([])
            raise

    async def _write_commits(self, items: list[tuple[WriteBatch, list[Block]]]) -> None:
        while True:
            try:
                items.append(self._commits.receive_nowait())
            except trio.WouldBlock:
                break
        if not items:
            return
        await self._write(
            WriteBatch(
                commit=[c for w, _ in items for c in w.commit],
                certify=[c for w, _ in items for c in w.certify],
            )
        )
        self._stored.set()
        self._stored = trio.Event()
        blocks = [b for _, bs in items for b in bs]
        if blocks:
            await self._apply(blocks)

    async def _write(self, batch: WriteBatch) -> None:
        if batch.empty():
            return
        try:
            await trio.to_thread.run_sync(self.store.write, batch)
        except StoreError as e:
            # Nothing of this batch was written (one LMDB transaction, aborted). Nothing that
            # depends on a promise write was sent yet, but for proposals sent first (which a
            # restarted leader never follows up in their term, see ``Ready``); what a failed commit write holds is
            # certified and on disk as accepted blocks, so a restart commits it again. A
            # validator that cannot persist its votes must not go on: stop, and let the
            # operator free space and restart.
            log.critical("storage write failed; stopping the node", error=str(e), kind=type(e).__name__)
            raise

    def _acknowledge(self, blocks: list[Block]) -> None:
        """Tell local apps (waiters, the commit latency metric) that these blocks committed."""
        now = time.monotonic()
        latency = self.metrics.commit_latency
        for block in blocks:
            for tx in block.txs:
                tx_id = tx.tx_id
                t0 = self._submit_times.pop(tx_id, None)
                if t0 is not None:
                    latency.observe(now - t0)
                if tx_id in self._waiters:
                    self._resolve(tx_id, "committed", block.height, None)

    async def _apply(self, blocks: list[Block]) -> None:
        """After the committer's write: block events, gossip of our own certificates, membership."""
        for block in blocks:
            self.metrics.committed_txs.inc(len(block.txs))
            self.metrics.committed_blocks.inc()
            self.events.publish(
                "block",
                {
                    "height": block.height,
                    "hash": block.block_hash.hex(),
                    "term": block.term,
                    "proposer": block.header.proposer.hex(),
                    "txs": len(block.txs),
                },
            )
        last = blocks[-1]
        self.metrics.height.set(last.height)
        if last.header.proposer == self.identity.public:
            cert = self.store.certificate(last.height)
            if cert is not None:
                self._gossip_latest = encode(CommitNotice(last.term, cert))
                self._gossip_wake.set()
        members = frozenset(m.node for m in self.ledger.members(self.store.state))
        if members != self._members:
            self._members = members
            self.net.set_members(members)
            log.info("membership changed", members=len(members))

    async def _publish_commits(self) -> None:
        """Gossip the latest commit notice, at most once per ``gossip_interval_ms``.

        GossipSub costs every node a signature check, relaying and control traffic per
        message, too much to pay per block; the newest notice carries the newest certificate,
        which is all a node needs to know how far to sync.
        """
        interval = self.settings.gossip_interval_ms / 1000
        while True:
            await self._gossip_wake.wait()
            self._gossip_wake = trio.Event()
            payload, self._gossip_latest = self._gossip_latest, None
            if payload is not None:
                try:
                    await self.net.publish(payload)
                except RuntimeError as e:
                    # Gossip is lossy by design (block sync recovers anything missed); during
                    # shutdown the network may already be closed.
                    log.debug("commit notice not gossiped", error=str(e))
            await trio.sleep(interval)

    def _resolve(self, tx_id: bytes, state: str, height: int | None, code: str | None) -> None:
        w = self._waiters.pop(tx_id, None)
        if w is not None:
            w.state, w.height, w.code = state, height, code
            w.event.set()

    def _on_event(self, ev: Event) -> None:
        if isinstance(ev, TxRejected):
            self._submit_times.pop(ev.tx_id, None)
            self._resolve(ev.tx_id, "rejected", None, ev.code)
            self.events.publish("tx", {"tx_id": ev.tx_id.hex(), "state": "rejected", "code": ev.code})
        elif isinstance(ev, TxExpired):
            self._submit_times.pop(ev.tx_id, None)
            self._resolve(ev.tx_id, "expired", None, None)
            self.events.publish("tx", {"tx_id": ev.tx_id.hex(), "state": "expired"})
        elif isinstance(ev, LeaderChanged):
            log.info("leader established", term=ev.term, leader=ev.leader.hex()[:16])
            self.events.publish("leader", {"term": ev.term, "leader": ev.leader.hex()})
        elif isinstance(ev, EvidenceFound):
            log.warning("equivocation evidence", evidence=type(ev.evidence).__name__)
            self.events.publish(
                "evidence", {"kind": type(ev.evidence).__name__, "encoded": encode(ev.evidence).hex()}
            )
        else:
            log.debug("consensus event", detail=repr(ev))
