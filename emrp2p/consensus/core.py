"""The ordering state machine: one ``Core`` per node, driven by ``step``/``tick``/``submit``.

See the package docstring for the driver contract. Reading order: term changes
(``_enter_term``, ``_on_term_vote``), the leader's block (``_maybe_propose``),
the follower's checks and vote (``_on_propose``, ``_accept``), counting votes
(``_on_block_vote``), committing (``_commit``), catch-up (``_on_sync_*``).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from emrp2p.codec import decode, encode
from emrp2p.consensus.certs import certificate_ok, quorum
from emrp2p.consensus.config import Config
from emrp2p.consensus.evidence import EvidenceLog
from emrp2p.consensus.messages import (
    BlockVote,
    CommitNotice,
    Evidence,
    ForwardTxs,
    HardState,
    Head,
    Heartbeat,
    Message,
    PreVote,
    PreVoteGrant,
    Propose,
    Status,
    SyncRequest,
    SyncResponse,
    TermVote,
)
from emrp2p.consensus.pool import SubmitResult, SubmitStatus, TxPool, TxState, TxStatus
from emrp2p.crypto import Identity
from emrp2p.ledger.errors import BadNonce, InvalidTx, LedgerError
from emrp2p.ledger.execute import BlockContext, Ledger
from emrp2p.ledger.merkle import raw_key
from emrp2p.ledger.state import MEMBERS_KEY, SCHEDULE_KEY, Overlay
from emrp2p.ledger.types import (
    Block,
    BlockHeader,
    Certificate,
    Tx,
    Vote,
    make_certificate,
    sign_block,
    sign_vote,
    tx_root,
)
from emrp2p.store.api import KV, ChainStore, Commit, StateDelta, WriteBatch

__all__ = [
    "Core",
    "Ready",
    "Event",
    "TermChanged",
    "LeaderChanged",
    "EvidenceFound",
    "TxRejected",
    "TxExpired",
    "BlockRefused",
    "CoreNotInitialised",
    "Role",
]


class CoreNotInitialised(RuntimeError):
    """The store holds no genesis: the driver must ``store.init_genesis`` first."""


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class TermChanged:
    term: int
    leader: bytes
    """The leader designated for the term (not yet known to be alive)."""


@dataclass(frozen=True)
class LeaderChanged:
    """The leader of ``term`` is established (seen by itself or by a follower)."""

    term: int
    leader: bytes


@dataclass(frozen=True)
class EvidenceFound:
    evidence: Evidence


@dataclass(frozen=True)
class TxRejected:
    tx_id: bytes
    code: str


@dataclass(frozen=True)
class TxExpired:
    tx_id: bytes


@dataclass(frozen=True)
class BlockRefused:
    """A proposed or synced block that failed a check (for logs and tests)."""

    height: int
    block_hash: bytes
    reason: str


Event = TermChanged | LeaderChanged | EvidenceFound | TxRejected | TxExpired | BlockRefused


@dataclass
class Ready:
    """What the driver must do, in this order: persist ``write``, send ``messages``,
    then apply ``committed`` and handle ``events``; finally call ``Core.advance``.

    The messages need only the first part of ``write.split()`` durable; the commits may be
    written after they are sent, and after ``committed`` is told to apps (a certified block is
    durable on its voters): the core reads through its own copies of the commits until the
    store holds them (``advance``).

    With ``proposals_first``, the ``Propose`` messages may go before ``write`` is durable (the
    leader writes its block while the followers check theirs, Raft's section 10.2.1); the
    driver still steps nothing more until the write is done, so the leader's own vote counts
    only once durable. Set only when every block this leader proposed in the batch is in a
    term its store already holds as led by this node: a leader that restarts never leads that
    term again (it moves on at once), so a proposal whose write a crash lost is never followed
    by another one at its height. A proposal in a term entered in the same batch waits for
    the write: a crash could lose the term, and the node lead it again later. So do term 0's
    (a restart does not move on from term 0)."""

    write: WriteBatch
    messages: list[tuple[bytes, Message]]
    committed: list[Block]
    events: list[Event]
    proposals_first: bool = False

    def empty(self) -> bool:
        return self.write.empty() and not (self.messages or self.committed or self.events)

    def split_messages(self) -> tuple[list[tuple[bytes, Message]], list[tuple[bytes, Message]]]:
        """(the messages that may go before ``write`` is durable, the rest), each in order: the
        proposals with ``proposals_first``, else none."""
        if not self.proposals_first:
            return [], self.messages
        return (
            [m for m in self.messages if type(m[1]) is Propose],
            [m for m in self.messages if type(m[1]) is not Propose],
        )


# --------------------------------------------------------------------------- internals


@dataclass
class _Entry:
    """An accepted, not yet committed block, with its execution result and validator set."""

    block: Block
    delta: StateDelta
    validators: tuple[bytes, ...]

    @property
    def height(self) -> int:
        return self.block.height


class Role(enum.Enum):
    OBSERVER = "observer"
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    """Designated leader of the current term, still collecting term votes."""
    LEADER = "leader"


@dataclass
class _Out:
    write: WriteBatch = field(default_factory=WriteBatch)
    messages: list[tuple[bytes, Message]] = field(default_factory=list)
    committed: list[Block] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    proposals_first: bool | None = None
    """None until this batch proposes; then whether every proposal is in a durable term."""


_MEMBERS_RAW = raw_key(MEMBERS_KEY)
_SCHEDULE_RAW = raw_key(SCHEDULE_KEY)
_membership_memo: dict[
    tuple[bytes, bytes, bytes | None, int], tuple[tuple[bytes, ...], tuple[bytes, ...]]
] = {}


def membership_at(ledger: Ledger, state: KV, height: int) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    """(validators, members) in force for block ``height`` given the state after ``height - 1``.

    Memoised on the raw member list and change schedule, which rarely change:
    decoding them for every block of every node would dominate a simulation.
    """
    members_raw = state.get(_MEMBERS_RAW) or b""
    schedule_raw = state.get(_SCHEDULE_RAW)
    key = (ledger.chain_id, members_raw, schedule_raw, height if schedule_raw else 0)
    found = _membership_memo.get(key)
    if found is None:
        vals = ledger.validators(state, height)
        members = tuple(m.node for m in ledger.members(state, height))
        found = (vals, members)
        if len(_membership_memo) > 4096:
            _membership_memo.clear()
        _membership_memo[key] = found
    return found


_tx_root_memo: dict[int, tuple[tuple[Tx, ...], bytes]] = {}
_cert_memo: dict[int, tuple[Certificate, bytes, tuple[bytes, ...], bytes, int, list[Vote]]] = {}
_TX_ROOT_MEMO_MAX = 16
"""Each entry holds a whole block's transactions alive: only the few blocks that the
simulator's cores are checking at about the same time are worth keeping (256 blocks of
2,000 transactions held some 400 MB in a loaded daemon)."""
_CERT_MEMO_MAX = 256


def _remember_by_identity(memo: dict[int, Any], obj: object, entry: Any, limit: int) -> None:
    if len(memo) >= limit:
        del memo[next(iter(memo))]
    memo[id(obj)] = entry


def block_tx_root(txs: tuple[Tx, ...]) -> bytes:
    """``tx_root(txs)``, memoised on the (immutable) tuple object itself.

    A driver that hands the same decoded block to several cores (the simulator)
    hashes its transactions once. The memo holds the tuple, so its id cannot be
    reused while the entry lives.
    """
    found = _tx_root_memo.get(id(txs))
    if found is not None and found[0] is txs:
        return found[1]
    root = tx_root(txs)
    if type(txs) is tuple:
        _remember_by_identity(_tx_root_memo, txs, (txs, root), _TX_ROOT_MEMO_MAX)
    return root


_BLOCK_OVERHEAD = 1024
"""Generous bytes per block besides its transactions (header, certificate, framing)."""


class TickSchedule:
    """When a driver ticks its core: every ``tick_ms`` while anything waits on the clock, else
    not before the core's next deadline (:meth:`Core.quiet_ms`).

    Both drivers (the daemon's loop, the simulator) keep one per core, in ms of their own clock:
    ``wake_at`` is when to wake with no input; ``catch_up`` ticks the core if a tick is due,
    which a driver also calls before stepping an input, so that after a quiet spell the core's
    clock is brought up to date before it records when it heard from whom.
    """

    __slots__ = ("tick_ms", "last_ms")

    def __init__(self, tick_ms: float, now_ms: float) -> None:
        self.tick_ms = tick_ms
        self.last_ms = now_ms

    def catch_up(self, core: Core, now_ms: float, core_now_ms: int, *, force: bool = False) -> None:
        """Tick ``core`` (its clock reading ``core_now_ms``) if a tick is due, or if ``force``;
        else only set its clock. Intervals the core keeps between its own actions (forwarding,
        proposing) are then measured exactly, not rounded up to whole ticks."""
        if force or now_ms - self.last_ms >= self.tick_ms:
            core.tick(core_now_ms)
            self.last_ms = now_ms
        else:
            core.set_clock(core_now_ms)

    def wake_at(self, core: Core) -> float:
        return self.last_ms + max(self.tick_ms, core.quiet_ms())


class Core:
    """Raft-like ordering with a fixed leader per term (``validators[term % n]``)."""

    def __init__(
        self, identity: Identity, ledger: Ledger, store: ChainStore, config: Config, now_ms: int
    ) -> None:
        genesis = store.genesis()
        if genesis is None:
            raise CoreNotInitialised("store has no genesis")
        if genesis.chain_id != ledger.chain_id:
            raise CoreNotInitialised("store and ledger are for different chains")
        self.identity = identity
        self.me = identity.public
        self.ledger = ledger
        self.store = store
        self.cfg = config
        self.chain_id = ledger.chain_id
        self.now_ms = now_ms
        self._mono = 0
        self._out = _Out()
        self.pool = TxPool(config.max_pending, config.remember_txs)
        self.evidence_log = EvidenceLog()

        raw = store.hard_state()
        self._hs = decode(HardState, raw) if raw is not None else HardState(0, 0, 0, bytes(32), bytes(32))
        self._hs_dirty = False
        self.term = self._hs.term
        self._durable = (self._hs.term, self._hs.leader)
        """(term, leader) of the hard state the store holds: what a restart comes back to."""
        self._written: tuple[int, bytes] | None = None
        """(term, leader) of the hard state the last ``Ready`` carries, durable at ``advance``."""

        # The committed tip; blocks committed but not yet confirmed durable stay in memory too.
        self.committed_height = store.committed_height()
        tip = store.block(self.committed_height)
        self._tip_hash = tip.block_hash if tip is not None else self.chain_id
        self._tip_ts = tip.header.timestamp_ms if tip is not None else genesis.timestamp_ms
        self._tip_cert = store.certificate(self.committed_height)
        self._tip_term = tip.term if tip is not None else 0
        self._tip_vals: tuple[bytes, ...] | None = None
        """Validators in force at the tip's height, when known (not after a restart)."""
        self._unflushed: dict[bytes, bytes | None] = {}
        self._unflushed_commits: dict[int, Commit] = {}
        self._validators_cache: tuple[bytes, tuple[bytes, ...], tuple[bytes, ...], bool] | None = None
        self._term_leader = b""
        self._term_vals: tuple[bytes, ...] = ()

        self._accepted: list[_Entry] = []
        self._votes: dict[bytes, dict[bytes, Vote]] = {}
        self._orphans: dict[bytes, tuple[bytes, Propose]] = {}

        # Role state (reset on every term change).
        self._grants: set[bytes] = set()
        self._established = False
        self._leader_heard = False
        self._rival: bytes | None = None
        self._deserters: set[bytes] = set()
        self._last_heard = 0
        self._term_started = 0
        self._blocks_this_term = 0
        self._last_propose = -(10**12)
        self._last_heartbeat = -(10**12)
        self._last_termvote = 0
        self._prevote_grants: set[bytes] = set()
        """Who granted the pre-vote this node asks for the next term (empty: it asks none)."""
        self._last_prevote = -(10**12)
        self._last_status = -(10**12)
        self._last_forward = -(10**12)

        self._sync: tuple[bytes, int] | None = None
        self._sync_peer_rr = 0
        self._last_poll = 0

        self._restore_accepted(store.accepted())
        self._fix_term_leader()
        if self._hs.leader != bytes(32) and self._hs.term == self.term:
            self._term_leader = self._hs.leader
        if self.is_validator and self._term_leader == self.me and self.term > 0:
            # We may have led this term before a crash: never lead it twice, move on.
            self._enter_term(self.term + 1)
        else:
            self._on_term_entered()

    # ------------------------------------------------------------------ public queries

    @property
    def role(self) -> Role:
        if not self.is_validator:
            return Role.OBSERVER
        if self._term_leader != self.me:
            return Role.FOLLOWER
        return Role.LEADER if self._established else Role.CANDIDATE

    @property
    def is_validator(self) -> bool:
        c = self._validators_cache
        if c is not None and c[0] == self._tip_hash:
            return c[3]
        return self.me in self.validators()

    @property
    def leader(self) -> bytes | None:
        """The leader of the current term if it is known to be established, else None."""
        if self._established or self._leader_heard:
            return self._term_leader
        return None

    @property
    def evidence(self) -> list[Evidence]:
        return self.evidence_log.found

    def head(self) -> Head:
        if self._accepted:
            b = self._accepted[-1].block
            return Head(b.term, b.height, b.block_hash)
        return Head(self._tip_term, self.committed_height, self._tip_hash)

    def backlog_ms(self) -> int:
        """How long the oldest pending transaction that could go into a block has waited."""
        return self.pool.oldest_wait_ms(self._mono)

    def accepted_blocks(self) -> list[Block]:
        return [e.block for e in self._accepted]

    def validators(self) -> tuple[bytes, ...]:
        """Validators in force after the committed tip: they make the rotation.

        Only committed blocks count, because every node can get those (by sync)
        and so agree; a certificate, though, always needs a majority of the set
        in force at its own block's height.
        """
        return self._membership()[0]

    def _membership(self) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
        c = self._validators_cache
        if c is None or c[0] != self._tip_hash:
            vals, members = membership_at(self.ledger, self._committed_state(), self.committed_height + 1)
            c = self._validators_cache = (self._tip_hash, vals, members, self.me in vals)
        return c[1], c[2]

    def leader_of(self, term: int) -> bytes:
        """The leader of ``term`` by the rotation in force after the committed tip."""
        vals = self.validators()
        return vals[term % len(vals)]

    def _fix_term_leader(self) -> None:
        self._term_vals = self.validators()
        self._term_leader = self.leader_of(self.term)

    def tx_status(self, tx_id: bytes) -> TxStatus:
        """Pending, committed (with height), rejected (with code), expired, or unknown."""
        s = self.pool.status(tx_id)
        if s.state in (TxState.UNKNOWN, TxState.EXPIRED, TxState.REJECTED):
            height = self.store.tx_height(tx_id)
            if height is not None:
                return TxStatus(TxState.COMMITTED, height)
        return s

    # ------------------------------------------------------------------ inputs

    def submit(self, txs: Sequence[Tx]) -> list[SubmitResult]:
        results = []
        for tx in txs:
            tx_id = tx.tx_id
            try:
                self.ledger.check_tx(tx)
            except InvalidTx as e:
                results.append(SubmitResult(tx_id, SubmitStatus.INVALID, e.code))
                continue
            if self.store.tx_height(tx_id) is not None:
                results.append(SubmitResult(tx_id, SubmitStatus.DUPLICATE))
                continue
            results.append(SubmitResult(tx_id, self.pool.add(tx, self._mono)))
        self._maybe_forward()
        self._after()
        return results

    def step(self, sender: bytes, msg: Message) -> None:
        handler = self._handlers.get(type(msg))
        if handler is not None:
            handler(self, sender, msg)
        self._after()

    def leader_traffic(self, sender: bytes, term: int) -> None:
        """The driver received a message of ``term`` from ``sender`` that it will step later (it is
        still checking the transactions in it). The leader's traffic shows it alive: a follower's
        election timer restarts, as when the message is stepped. Nothing else changes."""
        if term == self.term and sender == self._term_leader != self.me and self._leader_heard:
            self._last_heard = self._mono

    def set_clock(self, now_ms: int) -> None:
        """Bring the core's clock to ``now_ms`` without running its timers (:meth:`tick` does
        both): what the inputs stepped next do then sees the time as it is, not as of the
        last tick. A clock that jumps back only stops timers until it catches up."""
        elapsed = now_ms - self.now_ms
        self.now_ms = now_ms
        if elapsed > 0:
            self._mono += elapsed

    def tick(self, now_ms: int) -> None:
        """Advance time and run the timers."""
        self.set_clock(now_ms)
        now = self._mono
        cfg = self.cfg
        role = self.role
        if role is Role.LEADER:
            if now - self._last_heartbeat >= cfg.heartbeat_ms:
                self._broadcast_heartbeat()
            term_age = now - self._term_started
            done = self._blocks_this_term >= cfg.max_blocks_per_term or term_age >= cfg.max_term_ms
            if done and (not self._in_flight() or term_age >= cfg.max_term_ms + cfg.election_timeout_ms):
                self._enter_term(self.term + 1)
        elif role is Role.CANDIDATE:
            if now - self._term_started >= cfg.election_timeout_ms:
                self._pre_vote()
        elif role is Role.FOLLOWER:
            if now - self._last_heard >= cfg.election_timeout_ms:
                self._pre_vote()
            elif not self._leader_heard and now - self._last_termvote >= cfg.heartbeat_ms:
                self._send_term_vote(self._term_leader)
        elif now - self._last_poll >= cfg.election_timeout_ms:
            self._last_poll = now
            vals = self.validators()
            self._sync_peer_rr += 1
            self._request_sync(vals[self._sync_peer_rr % len(vals)], force=True)
        if self._sync is not None and now - self._sync[1] >= cfg.sync_timeout_ms:
            self._sync = None
        for tx_id in self.pool.expire(now, cfg.pending_ttl_ms):
            self._out.events.append(TxExpired(tx_id))
        self._maybe_forward()
        self._after()

    def quiet_ms(self) -> int:
        """For how long after the last tick another tick would change nothing (0: tick at the
        driver's pace).

        A core with nothing pending (no transaction in the pool, no block in flight, no sync or
        pre-vote under way), as an established leader, a follower that hears its leader, or an
        observer, only waits for its heartbeat, election or poll deadline; its driver need not
        wake before then (on this kind of machine waking a sleeping process costs more than
        the tick). Stepping a message can make the core busy or move those deadlines, so the
        driver asks again after every batch, and brings the core's clock up to date with a
        tick before it steps the first message after a quiet spell.
        """
        if (
            len(self.pool)
            or self._accepted
            or self._orphans
            or self._sync is not None
            or self._prevote_grants
        ):
            return 0
        cfg = self.cfg
        role = self.role
        if role is Role.LEADER:
            if self._blocks_this_term >= cfg.max_blocks_per_term:
                return 0
            due = min(self._last_heartbeat + cfg.heartbeat_ms, self._term_started + cfg.max_term_ms)
        elif role is Role.FOLLOWER and self._leader_heard:
            due = self._last_heard + cfg.election_timeout_ms
        elif role is Role.OBSERVER:
            due = self._last_poll + cfg.election_timeout_ms
        else:
            return 0  # an election is under way
        return max(0, due - self._mono)

    # ------------------------------------------------------------------ outputs

    def has_ready(self) -> bool:
        o = self._out
        return self._hs_dirty or not o.write.empty() or bool(o.messages or o.committed or o.events)

    def ready(self) -> Ready:
        out = self._out
        self._written = None
        if self._hs_dirty:
            out.write.hard_state = encode(self._hs)
            self._hs_dirty = False
            self._written = (self._hs.term, self._hs.leader)
        self._out = _Out()
        return Ready(out.write, out.messages, out.committed, out.events, out.proposals_first is True)

    def advance(self, ready: Ready) -> None:
        """The driver persisted ``ready.write`` (its commits possibly not yet, see ``Ready``):
        forget the in-memory copies of the commits the store now holds."""
        if self._written is not None:
            self._durable, self._written = self._written, None
        stored = self.store.committed_height()
        if stored >= self.committed_height:
            self._unflushed = {}
            self._unflushed_commits = {}
        elif self._unflushed_commits and min(self._unflushed_commits) <= stored:
            # Commits written behind the driver's loop: keep only those the store lacks (under
            # steady load it is always one behind, and waiting for it to catch up would keep all).
            self._unflushed_commits = {h: c for h, c in self._unflushed_commits.items() if h > stored}
            self._unflushed = {}
            for h in sorted(self._unflushed_commits):
                self._unflushed.update(self._unflushed_commits[h].delta.writes)

    # ------------------------------------------------------------------ state views

    def _committed_state(self) -> KV:
        return Overlay(self.store.state, self._unflushed) if self._unflushed else self.store.state

    def _state_after(self, count: int) -> KV:
        """State after the committed tip and the first ``count`` accepted blocks."""
        base = self._committed_state()
        if count == 0:
            return base
        writes: dict[bytes, bytes | None] = {}
        for e in self._accepted[:count]:
            writes.update(e.delta.writes)
        return Overlay(base, writes)

    def _committed_block(self, height: int) -> tuple[Block, Certificate | None] | None:
        c = self._unflushed_commits.get(height)
        if c is not None:
            return c.block, c.cert
        b = self.store.block(height)
        return None if b is None else (b, self.store.certificate(height))

    def _in_flight(self) -> bool:
        return bool(self._accepted) and self._accepted[-1].block.term == self.term

    def _in_flight_count(self) -> int:
        """Accepted, uncommitted blocks of the current term (they are the tail of ``_accepted``)."""
        n = 0
        for e in reversed(self._accepted):
            if e.block.term != self.term:
                break
            n += 1
        return n

    # ------------------------------------------------------------------ helpers

    def _send(self, to: bytes, msg: Message) -> None:
        if to != self.me:
            self._out.messages.append((to, msg))

    def _broadcast(self, msg: Message, to: Sequence[bytes] | None = None) -> None:
        for peer in self.validators() if to is None else to:
            self._send(peer, msg)

    def _members(self) -> tuple[bytes, ...]:
        return self._membership()[1]

    def _set_hard_state(self, **changes: Any) -> None:
        self._hs = dataclasses.replace(self._hs, **changes)
        self._hs_dirty = True

    def _refuse(self, block: Block, reason: str) -> None:
        self._out.events.append(BlockRefused(block.height, block.block_hash, reason))

    def _note_evidence(self, ev: Evidence | None) -> None:
        if ev is not None:
            self._out.events.append(EvidenceFound(ev))

    def _after(self) -> None:
        self._maybe_propose()

    # ------------------------------------------------------------------ terms

    def _enter_term(self, term: int) -> None:
        """Move to ``term`` (persisted before anything of it is sent) and announce it."""
        self.term = term
        self._fix_term_leader()
        self._set_hard_state(term=term, leader=self._term_leader)
        self._on_term_entered()
        self._out.events.append(TermChanged(term, self._term_leader))
        if self.is_validator:
            self._broadcast(self._term_vote())
            self._last_termvote = self._mono
        self.pool.forward_again()

    def _on_term_entered(self) -> None:
        self._grants = set()
        self._established = False
        self._leader_heard = False
        self._rival = None
        self._deserters = set()
        self._votes = {}
        self._last_heard = self._mono
        self._term_started = self._mono
        self._blocks_this_term = 0
        self._prevote_grants.clear()
        if self.is_validator and self._term_leader == self.me:
            self._grants.add(self.me)
            self._check_established()

    def _term_vote(self) -> TermVote:
        return TermVote(self.term, self.head(), self.committed_height)

    def _send_term_vote(self, to: bytes) -> None:
        self._last_termvote = self._mono
        self._send(to, self._term_vote())

    def _observe_term(self, sender: bytes, term: int) -> bool:
        """Common term handling: False if the message is from an older term (then tell the sender)."""
        if term < self.term:
            self._send(sender, Status(self.term, self.committed_height, self.head()))
            return False
        if term > self.term and self.is_validator:
            self._enter_term(term)
        elif term > self.term:
            self.term = term  # observers follow terms without taking part
            self._fix_term_leader()
            self._on_term_entered()
        return True

    def _heard_leader(self) -> None:
        self._last_heard = self._mono
        self._prevote_grants.clear()
        if not self._leader_heard:
            self._leader_heard = True
            self._out.events.append(LeaderChanged(self.term, self._term_leader))

    def _pre_vote(self) -> None:
        """Our leader (or, as the candidate, our own election) timed out: ask the validators
        whether theirs did too, again every heartbeat, and enter the next term only once a
        majority granted it. The term of a node cut off on its own stays where it was."""
        if not self._prevote_grants:
            self._prevote_grants.add(self.me)
            self._last_prevote = -(10**12)
        if self._mono - self._last_prevote >= self.cfg.heartbeat_ms:
            self._last_prevote = self._mono
            self._broadcast(PreVote(self.term + 1, self.head(), self.committed_height))
        self._check_prevote()

    def _check_prevote(self) -> None:
        vals = self.validators()
        if len(self._prevote_grants.intersection(vals)) >= quorum(vals):
            self._enter_term(self.term + 1)

    def _leader_alive(self) -> bool:
        """Whether this node heard its term's leader lately (as the candidate: started its term
        lately; as the leader: always). Such a node refuses pre-votes.

        "Lately" is one heartbeat short of the election timeout, so when a leader dies, the
        first follower to time out finds the others (which heard it last at about the same
        time) ready to grant.
        """
        role = self.role
        if role is Role.LEADER:
            return True
        since = self._term_started if role is Role.CANDIDATE else self._last_heard
        cfg = self.cfg
        return self._mono - since < max(
            cfg.election_timeout_ms - cfg.heartbeat_ms, cfg.election_timeout_ms // 2
        )

    def _check_rival(self, sender: bytes) -> None:
        """Another validator leads our term while we do (or stand as its candidate): the two
        entered it on different sides of a membership change. Their followers each hear a live
        leader and refuse pre-votes, and neither side has a majority, so nothing would move;
        the next term, computed from the committed chain both now share, has one leader.

        A follower of a leader that never speaks (one that does not lead, in its own view) keeps
        to it for the term, but forwards what its apps submit to the validator it hears leading:
        otherwise the transactions it holds would wait for the term to end, and with them every
        later transaction of the same senders, which the leader can only park."""
        if not self.is_validator or sender not in self.validators():
            return
        if self._term_leader == self.me:
            self._enter_term(self.term + 1)
        else:
            self._rival = sender

    def _on_pre_vote(self, sender: bytes, m: PreVote) -> None:
        """Answer without changing anything here: no term, no timer."""
        if m.committed_height > self.committed_height:
            self._request_sync(sender)
        if sender not in self.validators() or m.term <= self.term:
            # Voted out, or behind our term: our status brings it up to date.
            self._send(sender, Status(self.term, self.committed_height, self.head()))
        elif self.role is Role.LEADER:
            # Alive: a heartbeat lets the asker hear us again (it may only have missed messages).
            self._send(sender, self._heartbeat())
            self._count_deserter(sender, m.term)
        elif not self._leader_alive():
            self._send(sender, PreVoteGrant(m.term))

    def _count_deserter(self, sender: bytes, term: int) -> None:
        """A validator asking to move past our term does not hear us lead it (a one-way link, or
        it follows another leader of the term: the two sides of a membership change). Once too
        many of them do for the rest to form a quorum, no block of ours can commit, and they
        cannot move on while we and our followers refuse their pre-votes: we move on instead.
        One that votes for a block of ours again is no longer counted."""
        if term != self.term + 1:
            return
        self._deserters.add(sender)
        vals = self.validators()
        if len(set(vals) - self._deserters) < quorum(vals):
            self._enter_term(self.term + 1)

    def _on_pre_vote_grant(self, sender: bytes, m: PreVoteGrant) -> None:
        if self._prevote_grants and m.term == self.term + 1:
            self._prevote_grants.add(sender)
            self._check_prevote()

    def _on_term_vote(self, sender: bytes, m: TermVote) -> None:
        if m.committed_height > self.committed_height:
            self._request_sync(sender)
        if sender not in self.validators():
            # A node voted out that has not synced far enough to know it: it must not move our
            # term; our status tells it how far the chain has gone.
            self._send(sender, Status(self.term, self.committed_height, self.head()))
            return
        if not self._observe_term(sender, m.term):
            return
        if self.role is not Role.CANDIDATE or sender not in self._term_vals:
            return
        if m.head.rank() <= self.head().rank():
            self._grants.add(sender)
            self._check_established()

    def _check_established(self) -> None:
        if self._established or len(self._grants) < quorum(self._term_vals):
            return
        self._established = True
        self._leader_heard = True
        self._out.events.append(LeaderChanged(self.term, self.me))
        self._broadcast_heartbeat()
        for e in self._accepted:  # carry forward what we accepted but never saw certified
            self._broadcast(Propose(self.term, e.block))

    def _heartbeat(self) -> Heartbeat:
        return Heartbeat(self.term, self.committed_height, self.head(), self._tip_cert)

    def _broadcast_heartbeat(self) -> None:
        self._last_heartbeat = self._mono
        self._broadcast(self._heartbeat(), self._members())

    def _on_heartbeat(self, sender: bytes, m: Heartbeat) -> None:
        if not self._observe_term(sender, m.term):
            return
        if sender != self._term_leader:
            self._check_rival(sender)
            return
        self._heard_leader()
        if m.cert is not None and m.cert.height > self.committed_height:
            self._on_cert(sender, m.cert)
        if m.committed_height > self.committed_height:
            self._request_sync(sender)
        if not self.is_validator:
            return
        head = self.head()
        if m.head != head:
            self._send_status(sender)
        elif self._in_flight() and self._hs.vote_hash == head.block_hash and self._hs.vote_term == self.term:
            self._send(sender, BlockVote(self._my_vote(self._accepted[-1].block)))

    def _send_status(self, to: bytes) -> None:
        if self._mono - self._last_status >= self.cfg.heartbeat_ms // 2:
            self._last_status = self._mono
            self._send(to, Status(self.term, self.committed_height, self.head()))

    def _on_status(self, sender: bytes, m: Status) -> None:
        if m.term > self.term and sender in self.validators():
            self._observe_term(sender, m.term)
            return
        if m.committed_height > self.committed_height:
            self._request_sync(sender)
        if m.term < self.term:
            if self.role is Role.LEADER:
                self._send(sender, self._heartbeat())
            return
        if self.role is not Role.LEADER or m.head == self.head():
            return
        start = 0  # resend our accepted blocks the follower lacks
        for i, e in enumerate(self._accepted):
            if e.height == m.head.height and e.block.block_hash == m.head.block_hash:
                start = i + 1
        for e in self._accepted[start:]:
            self._send(sender, Propose(self.term, e.block))

    # ------------------------------------------------------------------ leader: proposing

    def _maybe_propose(self) -> None:
        cfg = self.cfg
        if not self._established or self._term_leader != self.me:
            return  # not the leader (the cheap part of the role test below)
        if self.role is not Role.LEADER:
            return
        in_flight = self._in_flight_count()
        if in_flight >= cfg.max_in_flight:
            return
        if self._mono - self._last_propose < cfg.min_block_interval_ms:
            return
        if self._blocks_this_term >= cfg.max_blocks_per_term or (
            self._mono - self._term_started >= cfg.max_term_ms
        ):
            return
        in_blocks = {tx.tx_id for e in self._accepted for tx in e.block.txs}
        candidates = self.pool.candidates(in_blocks, cfg.max_txs_per_block)
        if not candidates and not self._accepted:
            return
        if in_flight and len(candidates) < cfg.pipeline_min_txs:
            return  # light load: a round at a time, each block as full as it comes
        height = self.committed_height + len(self._accepted) + 1
        hs = self._hs
        if hs.vote_term == self.term and hs.vote_height >= height:
            # We proposed (and voted for) a block at this height in this term already, and it
            # was superseded by blocks others committed (learned by sync: another node led this
            # term in its own view of the rotation). The vote on our own proposal holds us to
            # one block per slot, as any vote does (persisted, so across restarts too): hand over.
            self._enter_term(self.term + 1)
            return
        parent = self._accepted[-1].block.header if self._accepted else None
        parent_hash = parent.block_hash if parent is not None else self._tip_hash
        parent_ts = parent.timestamp_ms if parent is not None else self._tip_ts
        parent_cert = self._tip_cert if parent is None else None
        if parent_cert is not None and parent_cert.block_hash != parent_hash:
            parent_cert = None
        state = self._state_after(len(self._accepted))
        validators = membership_at(self.ledger, state, height)[0]
        if self.me not in validators:
            self._enter_term(self.term + 1)  # voted out from this height on: hand over
            return
        ts = max(self.now_ms, parent_ts)
        ctx = BlockContext(height, ts, self.me)
        included, rejected, delta = self.ledger.select(state, ctx, candidates)
        self._drop_rejected(state, included, rejected)
        if not included and not self._accepted:
            return
        header = BlockHeader(
            chain_id=self.chain_id,
            height=height,
            term=self.term,
            parent=parent_hash,
            proposer=self.me,
            timestamp_ms=ts,
            tx_root=tx_root(included),
            state_root=delta.root,
            tx_count=len(included),
            parent_cert=parent_cert,
        )
        block = sign_block(self.identity, header, tuple(included))
        _remember_by_identity(_tx_root_memo, block.txs, (block.txs, header.tx_root), _TX_ROOT_MEMO_MAX)
        self._last_propose = self._mono
        self._blocks_this_term += 1
        self.evidence_log.proposal(block)
        entry = _Entry(block, delta, validators)
        self._accepted.append(entry)
        self._out.write.accept.append(block)
        self._broadcast(Propose(self.term, block), validators)
        # What a restart moves on from (see ``__init__``): a term > 0 it holds as its own.
        self._out.proposals_first = (
            self._out.proposals_first is not False and self.term > 0 and self._durable == (self.term, self.me)
        )
        if set(validators) >= set(self._members()) - {self.me}:
            # Every member hears from us now: a proposal does a heartbeat's work (followers
            # reset their election timer on it), so the next heartbeat waits a full period.
            self._last_heartbeat = self._mono
        if parent_cert is not None:
            self._drop_notices(parent_cert, validators)
        self._count_vote(entry, self._cast_vote(block))

    def _drop_notices(self, cert: Certificate, to: Sequence[bytes]) -> None:
        """A proposal that carries ``cert`` as its parent certificate commits the parent for the
        validators it goes to: a commit notice to them in the same batch is one message too many."""
        targets = set(to)
        self._out.messages = [
            (dest, m)
            for dest, m in self._out.messages
            if not (dest in targets and type(m) is CommitNotice and m.cert is cert)
        ]

    def _drop_rejected(self, state: KV, included: list[Tx], rejected: list[tuple[Tx, LedgerError]]) -> None:
        """Report and drop what failed; keep a transaction whose nonce is merely ahead (a gap
        that an earlier transaction of its sender may still fill)."""
        if not rejected:
            return
        used: dict[bytes, int] = {}
        for tx in included:
            used[tx.sender] = used.get(tx.sender, 0) + 1
        for tx, err in rejected:
            if isinstance(err, BadNonce):
                expected = self.ledger.next_nonce(state, tx.sender) + used.get(tx.sender, 0)
                if tx.nonce > expected:
                    self.pool.park(tx)
                    continue
            self.pool.reject(tx.tx_id, err.code)
            self._out.events.append(TxRejected(tx.tx_id, err.code))

    def _cast_vote(self, block: Block) -> Vote:
        """Our signed vote, recorded in the hard state (persisted before the vote is sent)."""
        self._set_hard_state(vote_term=block.term, vote_height=block.height, vote_hash=block.block_hash)
        return self._my_vote(block)

    def _my_vote(self, block: Block) -> Vote:
        return sign_vote(self.identity, self.chain_id, block.term, block.height, block.block_hash)

    # ------------------------------------------------------------------ leader: counting votes

    def _on_block_vote(self, sender: bytes, m: BlockVote) -> None:
        v = m.vote
        if v.voter != sender or not v.signature_ok(self.chain_id):
            return
        self._note_evidence(self.evidence_log.vote(v))
        if v.term != self.term or self.role is not Role.LEADER:
            return
        i = v.height - self.committed_height - 1
        if not 0 <= i < len(self._accepted):
            return
        entry = self._accepted[i]
        if entry.block.block_hash != v.block_hash or entry.block.term != self.term:
            return
        if v.voter in entry.validators:
            self._deserters.discard(v.voter)  # it hears us again
            self._count_vote(entry, v)

    def _count_vote(self, entry: _Entry, vote: Vote) -> None:
        votes = self._votes.setdefault(vote.block_hash, {})
        votes[vote.voter] = vote
        if len(votes) < quorum(entry.validators):
            return
        cert = make_certificate(list(votes.values()))
        self._commit_through(entry.height, cert)
        notice = CommitNotice(self.term, cert)
        self._broadcast(notice, self._members())

    # ------------------------------------------------------------------ follower: accepting

    def _on_propose(self, sender: bytes, m: Propose) -> None:
        if not self._observe_term(sender, m.term) or not self.is_validator:
            return
        if sender != self._term_leader:
            self._check_rival(sender)
            return
        self._heard_leader()
        block = m.block
        h = block.header
        if h.term > m.term or (h.term == m.term and h.proposer != sender):
            return
        if h.height <= self.committed_height:
            return
        i = h.height - self.committed_height - 1  # index the block would take in _accepted
        if i < len(self._accepted) and self._accepted[i].block.block_hash == block.block_hash:
            if h.term == self.term:
                self._vote_for(sender, block)
            return
        if i == 0:
            parent_ok = h.parent == self._tip_hash
        elif i <= len(self._accepted):
            parent_ok = h.parent == self._accepted[i - 1].block.block_hash
        else:
            parent_ok = False
        if not parent_ok:
            self._orphan(sender, m)
            return
        entry = self._check_block(block, i)
        if entry is None:
            return
        if i < len(self._accepted):
            self._truncate(i)
        self._accepted.append(entry)
        self._out.write.accept.append(block)
        if h.parent_cert is not None and h.parent_cert.height > self.committed_height:
            self._commit_through(h.parent_cert.height, h.parent_cert)
        if h.term == self.term:
            self._vote_for(sender, block)
        self._adopt_orphan(block.block_hash)

    def _check_block(self, block: Block, index: int) -> _Entry | None:
        """Every check a follower makes before accepting; the execution result if all pass."""
        h = block.header
        if h.chain_id != self.chain_id:
            self._refuse(block, "chain id")
            return None
        state = self._state_after(index)
        validators = membership_at(self.ledger, state, h.height)[0]
        if h.proposer not in validators:
            self._refuse(block, "proposer is not a validator")
            return None
        if not block.signature_ok():
            self._refuse(block, "block signature")
            return None
        self._note_evidence(self.evidence_log.proposal(block))
        parent_ts = self._accepted[index - 1].block.header.timestamp_ms if index else self._tip_ts
        if h.timestamp_ms < parent_ts:
            self._refuse(block, "timestamp before parent's")
            return None
        if h.timestamp_ms > self.now_ms + self.cfg.max_clock_drift_ms:
            self._refuse(block, "timestamp too far ahead")
            return None
        if h.tx_count != len(block.txs) or h.tx_root != block_tx_root(block.txs):
            self._refuse(block, "tx root")
            return None
        if h.parent_cert is not None:
            parent_term = self._accepted[index - 1].block.term if index else self._tip_term
            parent_vals = self._accepted[index - 1].validators if index else self._tip_vals
            pc = h.parent_cert
            if pc.height != h.height - 1 or (
                # A certificate of our committed tip can only be checked when we know its validators.
                parent_vals is not None and not self._cert_ok(pc, parent_vals, h.parent, parent_term)
            ):
                self._refuse(block, "parent certificate")
                return None
        try:
            delta = self.ledger.execute(state, BlockContext(h.height, h.timestamp_ms, h.proposer), block.txs)
        except LedgerError as e:
            self._refuse(block, f"execution: {e}")
            return None
        if delta.root != h.state_root:
            self._refuse(block, "state root")
            return None
        return _Entry(block, delta, validators)

    def _cert_ok(self, cert: Certificate, vals: tuple[bytes, ...], block_hash: bytes, term: int) -> bool:
        # certificate_ok is pure: a certificate object already found valid against the same
        # validators, block and term (the simulator hands one object to every node) is not
        # checked again. Only successes are remembered.
        m = _cert_memo.get(id(cert))
        if (
            m is not None
            and m[0] is cert
            and m[1] == self.chain_id
            and m[2] == vals
            and m[3] == block_hash
            and m[4] == term
        ):
            votes = m[5]
        else:
            if not certificate_ok(cert, self.chain_id, vals, block_hash, term):
                return False
            votes = cert.votes()
            _remember_by_identity(
                _cert_memo, cert, (cert, self.chain_id, vals, block_hash, term, votes), _CERT_MEMO_MAX
            )
        for v in votes:
            self._note_evidence(self.evidence_log.vote(v))
        return True

    def _vote_for(self, leader: bytes, block: Block) -> None:
        hs = self._hs
        if not hs.may_vote(block.term, block.height, block.block_hash):
            return
        again = (hs.vote_term, hs.vote_height, hs.vote_hash) == (block.term, block.height, block.block_hash)
        vote = self._my_vote(block) if again else self._cast_vote(block)
        self._send(leader, BlockVote(vote))

    def _truncate(self, index: int) -> None:
        """Drop accepted blocks from ``index`` on (never committed ones)."""
        height = self.committed_height + index + 1
        del self._accepted[index:]
        w = self._out.write
        w.accept = [b for b in w.accept if b.height < height]
        if w.truncate_accepted_from is None or height < w.truncate_accepted_from:
            w.truncate_accepted_from = height

    def _orphan(self, sender: bytes, m: Propose) -> None:
        if len(self._orphans) >= 256:
            self._orphans.pop(next(iter(self._orphans)))
        self._orphans[m.block.header.parent] = (sender, m)
        self._send_status(sender)

    def _adopt_orphan(self, parent_hash: bytes) -> None:
        waiting = self._orphans.pop(parent_hash, None)
        if waiting is not None and waiting[1].term == self.term:
            self._on_propose(*waiting)

    def _restore_accepted(self, blocks: list[Block]) -> None:
        for block in blocks:
            if block.height != self.committed_height + len(self._accepted) + 1:
                continue
            parent = self._accepted[-1].block.block_hash if self._accepted else self._tip_hash
            state = self._state_after(len(self._accepted))
            delta = None
            if block.header.parent == parent:
                h = block.header
                try:
                    delta = self.ledger.execute(
                        state, BlockContext(h.height, h.timestamp_ms, h.proposer), block.txs
                    )
                except LedgerError:
                    delta = None
            if delta is None or delta.root != block.header.state_root:
                self._truncate(len(self._accepted))
                return
            self.evidence_log.proposal(block)
            self._accepted.append(_Entry(block, delta, membership_at(self.ledger, state, block.height)[0]))

    # ------------------------------------------------------------------ committing

    def _on_commit_notice(self, sender: bytes, m: CommitNotice) -> None:
        if m.term >= self.term and self.is_validator:
            self._observe_term(sender, m.term)
            if sender == self._term_leader:
                self._heard_leader()
        self._on_cert(sender, m.cert)

    def _on_cert(self, sender: bytes, cert: Certificate) -> None:
        if cert.height <= self.committed_height:
            return
        i = cert.height - self.committed_height - 1
        if i < len(self._accepted) and self._accepted[i].block.block_hash == cert.block_hash:
            e = self._accepted[i]
            if self._cert_ok(cert, e.validators, e.block.block_hash, e.block.term):
                self._commit_through(cert.height, cert)
        else:
            self._request_sync(sender)

    def _commit_through(self, height: int, cert: Certificate) -> None:
        n = height - self.committed_height
        entries, self._accepted = self._accepted[:n], self._accepted[n:]
        self._commit(entries, {height: cert})

    def _commit(self, entries: list[_Entry], certs: dict[int, Certificate]) -> None:
        for e in entries:
            block = e.block
            cert = certs.get(block.height)
            c = Commit(block, e.delta, cert)
            self._out.write.commit.append(c)
            self._out.committed.append(block)
            self._unflushed.update(e.delta.writes)
            self._unflushed_commits[block.height] = c
            self.pool.committed(block.txs, block.height)
            self._votes.pop(block.block_hash, None)
            self.committed_height = block.height
            self._tip_hash = block.block_hash
            self._tip_ts = block.header.timestamp_ms
            self._tip_cert = cert
            self._tip_term = block.term
            self._tip_vals = e.validators
        if self.committed_height % 256 == 0:
            self.evidence_log.prune(self.committed_height - 1024)

    # ------------------------------------------------------------------ catch-up

    def _request_sync(self, peer: bytes, *, force: bool = False) -> None:
        if self._sync is not None and not force:
            return
        self._sync = (peer, self._mono)
        self._send(peer, SyncRequest(self.committed_height + 1, self.cfg.sync_batch_blocks))

    def _on_sync_request(self, sender: bytes, m: SyncRequest) -> None:
        limit = min(m.max_blocks, self.cfg.sync_batch_blocks)
        max_bytes = self.cfg.sync_max_bytes
        blocks: list[Block] = []
        certs: list[Certificate] = []
        size = 0
        height = m.from_height
        # Past the batch size (in blocks or bytes), keep going to the next certified block, so the
        # last one sent is proven; twice either limit is the hard stop.
        while height <= self.committed_height and len(blocks) < 2 * limit and size < 2 * max_bytes:
            found = self._committed_block(height)
            if found is None:
                break
            blocks.append(found[0])
            size += _BLOCK_OVERHEAD + sum(len(tx.encoded) for tx in found[0].txs)
            if found[1] is not None:
                certs.append(found[1])
                if len(blocks) >= limit or size >= max_bytes:
                    break
            height += 1
        self._send(sender, SyncResponse(self.committed_height, tuple(blocks), tuple(certs)))

    def _on_sync_response(self, sender: bytes, m: SyncResponse) -> None:
        """Check hash links, signatures, state roots (by executing) and certificates; commit
        the longest prefix a valid certificate proves."""
        if self._sync is not None and self._sync[0] == sender:
            self._sync = None
        offered = {c.height: c for c in m.certs}
        verified: dict[int, Certificate] = {}
        acc: dict[bytes, bytes | None] = {}
        state = Overlay(self._committed_state(), acc)
        parent, parent_ts = self._tip_hash, self._tip_ts
        entries: list[_Entry] = []
        proven = 0
        for block in m.blocks:
            h = block.header
            if h.height != self.committed_height + len(entries) + 1 or h.parent != parent:
                break
            pc = h.parent_cert
            if entries and pc is not None and pc.height == h.height - 1:
                prev = entries[-1]
                if self._cert_ok(pc, prev.validators, prev.block.block_hash, prev.block.term):
                    verified.setdefault(prev.height, pc)
                    proven = len(entries)
            vals = membership_at(self.ledger, state, h.height)[0]
            if (
                h.chain_id != self.chain_id
                or h.proposer not in vals
                or not block.signature_ok()
                or h.timestamp_ms < parent_ts
                or h.tx_count != len(block.txs)
                or h.tx_root != block_tx_root(block.txs)
            ):
                self._refuse(block, "synced block fails checks")
                break
            try:
                delta = self.ledger.execute(
                    state, BlockContext(h.height, h.timestamp_ms, h.proposer), block.txs
                )
            except LedgerError as e:
                self._refuse(block, f"synced block execution: {e}")
                break
            if delta.root != h.state_root:
                self._refuse(block, "synced block state root")
                break
            acc.update(delta.writes)
            entries.append(_Entry(block, delta, vals))
            parent, parent_ts = block.block_hash, h.timestamp_ms
            c = offered.get(h.height)
            if c is not None and self._cert_ok(c, vals, block.block_hash, h.term):
                verified[h.height] = c
                proven = len(entries)
        if proven == 0:
            return
        committed = entries[:proven]
        top = committed[-1]
        base = self.committed_height
        conflict = any(
            a.block.block_hash != committed[a.height - base - 1].block.block_hash
            for a in self._accepted
            if a.height <= top.height
        )
        keep = [e for e in self._accepted if e.height > top.height]
        self._accepted = []
        self._commit(committed, verified)
        self._accepted = keep
        if keep and (conflict or keep[0].block.header.parent != top.block.block_hash):
            self._truncate(0)
        # A certified block of a later term proves that term was established: ours is over.
        # (A leader cut off in its term that synced past its own proposals would otherwise
        # go on proposing in it, at heights it had proposed at already: an equivocation.)
        newest = max(e.block.term for e in committed)
        if newest > self.term:
            self._observe_term(sender, newest)
        self._adopt_orphan(top.block.block_hash)
        if m.committed_height > self.committed_height:
            self._request_sync(sender)

    # ------------------------------------------------------------------ transactions

    def _on_forward_txs(self, sender: bytes, m: ForwardTxs) -> None:
        for tx in m.txs:
            if tx.tx_id in self.pool or self.pool.known_committed(tx.tx_id):
                continue
            try:
                self.ledger.check_tx(tx)
            except InvalidTx:
                continue
            if self.store.tx_height(tx.tx_id) is None:
                self.pool.add(tx, self._mono)

    def _maybe_forward(self) -> None:
        """Forward what is due, at most once per ``forward_interval_ms``: right away when the
        last message sent is that old (light load waits for nothing), else batched by the next
        tick. Only a message sent starts the interval: a tick with nothing to send must not
        hold back the next submission."""
        if self._mono - self._last_forward >= self.cfg.forward_interval_ms and self._forward_pending():
            self._last_forward = self._mono

    def _forward_pending(self) -> bool:
        """Send the leader what is due; whether anything was sent."""
        leader = self._term_leader
        if not (self._leader_heard or self._established):
            if self._rival is None:
                return False
            leader = self._rival  # ours is silent: the one leading in the others' view
        if leader == self.me or len(self.pool) == 0:
            return False
        txs = self.pool.due_for_forward(self._mono, self.cfg.forward_retry_ms)
        for i in range(0, len(txs), 1000):
            self._send(leader, ForwardTxs(tuple(txs[i : i + 1000])))
        return bool(txs)

    _handlers: dict[type[Any], Callable[[Core, bytes, Any], None]] = {
        Propose: _on_propose,
        BlockVote: _on_block_vote,
        CommitNotice: _on_commit_notice,
        TermVote: _on_term_vote,
        PreVote: _on_pre_vote,
        PreVoteGrant: _on_pre_vote_grant,
        Heartbeat: _on_heartbeat,
        Status: _on_status,
        SyncRequest: _on_sync_request,
        SyncResponse: _on_sync_response,
        ForwardTxs: _on_forward_txs,
    }
