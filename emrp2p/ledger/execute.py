"""Executing transactions: the leader's ``select`` and the follower's ``execute``.

Pure and deterministic: the result depends only on the parent state, the
block context and the transactions, so every node (and anyone replaying the
chain) computes the same state root byte for byte.

A block run first applies membership changes scheduled for its height, then
each transaction: signature (batch-verified up front on a thread pool, cached
so a transaction verified at intake costs nothing here), nonce, then its
contract. A transaction's writes go to a journal that joins the block's writes
only if the contract succeeds, so a rejected transaction changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from emrp2p.codec import decode, encode
from emrp2p.crypto import verify, verify_many
from emrp2p.ledger import merkle
from emrp2p.ledger.errors import (
    BadNonce,
    InvalidBlock,
    InvalidPayload,
    InvalidSignature,
    InvalidTx,
    LedgerError,
)
from emrp2p.ledger.state import (
    MEMBERS_KEY,
    SCHEDULE_KEY,
    MemberList,
    MemoryKV,
    Schedule,
    ScheduledChange,
    get_members,
    get_nonce,
    get_schedule,
    nonce_key,
    validators_of,
)
from emrp2p.ledger.types import TX_DOMAIN, Action, Genesis, Member, Noop, Payload, Role, Tx
from emrp2p.store.api import KV, StateDelta

__all__ = ["BlockContext", "Ledger", "TxState", "apply_changes"]

E = TypeVar("E")


@dataclass(frozen=True)
class BlockContext:
    """What a block contributes to execution besides its transactions."""

    height: int
    timestamp_ms: int
    proposer: bytes


def apply_changes(
    members: tuple[Member, ...], changes: Sequence[ScheduledChange]
) -> tuple[tuple[Member, ...], bool]:
    """Apply membership changes in order; also say whether one would have removed the last validator.

    Such a removal is skipped. An ADD of an existing member changes its role and
    name in place, so the order (genesis order, additions appended) is stable.
    """
    out = list(members)
    refused = False
    for change in changes:
        node = change.member.node
        at = next((i for i, m in enumerate(out) if m.node == node), None)
        if change.action == Action.ADD:
            if at is None:
                out.append(change.member)
            else:
                out[at] = change.member
        elif at is not None:
            remaining = [m for i, m in enumerate(out) if i != at]
            if not any(m.role == Role.VALIDATOR for m in remaining):
                refused = True
                continue
            out = remaining
    return tuple(out), refused


_decoded: dict[bytes, object] = {}
"""State entries by their canonical encoding: entries are immutable, so a block
that writes a record and later reads it (or the next block) skips decoding."""
_DECODED_MAX = 1 << 16


def _remember(raw: bytes, entry: object) -> None:
    if len(_decoded) >= _DECODED_MAX:
        _decoded.clear()
    _decoded[raw] = entry


_MEMBERS_RAW = merkle.raw_key(MEMBERS_KEY)
_SCHEDULE_RAW = merkle.raw_key(SCHEDULE_KEY)


def _decode_cached(raw: bytes, cls: type[E]) -> E:
    """``decode(cls, raw)`` through the decoded-entry cache (entries are immutable)."""
    cached = _decoded.get(raw)
    if type(cached) is cls:
        return cached  # type: ignore[return-value]
    entry = decode(cls, raw)
    _remember(raw, entry)
    return entry


def _read_cached(state: KV, raw_key: bytes, cls: type[E]) -> E | None:
    """``state.read`` of a raw key through the decoded-entry cache."""
    raw = state.get(raw_key)
    return None if raw is None else _decode_cached(raw, cls)


class TxState:
    """A contract's view while it executes one transaction.

    Reads see the parent state, the block's earlier transactions and this
    transaction's own writes; writes are journalled until the contract returns.
    """

    __slots__ = ("ctx", "tx", "sender", "journal", "_run")

    def __init__(self, run: _BlockRun, tx: Tx) -> None:
        self.ctx = run.ctx
        self.tx = tx
        self.sender = tx.sender
        self.journal: dict[bytes, bytes | None] = {}
        self._run = run

    def get(self, key: bytes) -> bytes | None:
        raw = merkle.raw_key(key)
        if raw in self.journal:
            return self.journal[raw]
        return self._run.get(raw)

    def put(self, key: bytes, value: bytes | None) -> None:
        self.journal[merkle.raw_key(key)] = value

    def read(self, key: bytes, cls: type[E]) -> E | None:
        raw = self.get(key)
        return None if raw is None else _decode_cached(raw, cls)

    def write(self, key: bytes, entry: Any) -> None:
        raw = encode(entry)
        _remember(raw, entry)
        self.put(key, raw)

    def read_int(self, key: bytes) -> int:
        raw = self.get(key)
        return 0 if raw is None else int.from_bytes(raw, "big")

    def append(self, count_key: bytes, item_key: Callable[[int], bytes], entry: Any) -> int:
        """Append ``entry`` to the list kept as ``count_key`` + ``item_key(i)``; return its index."""
        index = self.read_int(count_key)
        self.write(item_key(index), entry)
        self.put(count_key, (index + 1).to_bytes(8, "big"))
        return index

    @property
    def members(self) -> dict[bytes, Member]:
        """Members in force for this block, by node key."""
        return self._run.member_map

    @property
    def validators(self) -> tuple[bytes, ...]:
        """Validators in force for this block (those whose votes certify it)."""
        return self._run.validators


Handler = Callable[[TxState, Any], None]
StaticCheck = Callable[[Any], None]


class _BlockRun:
    """One block being executed: the membership in force, the writes so far, each sender's next nonce."""

    __slots__ = ("base", "ctx", "writes", "nonces", "member_map", "validators", "handlers", "static_checks")

    def __init__(self, ledger: Ledger, base: KV, ctx: BlockContext) -> None:
        self.base = base
        self.ctx = ctx
        self.writes: dict[bytes, bytes | None] = {}
        self.nonces: dict[bytes, tuple[bytes, int]] = {}
        """Per sender: raw nonce key, next nonce; written once at the end of the block."""
        self.handlers = ledger.handlers
        self.static_checks = ledger.static_checks
        members_entry = _read_cached(base, _MEMBERS_RAW, MemberList)
        members = () if members_entry is None else members_entry.members
        schedule_entry = _read_cached(base, _SCHEDULE_RAW, Schedule)
        schedule = () if schedule_entry is None else schedule_entry.changes
        if schedule and schedule[0].effective_height <= ctx.height:
            due = [c for c in schedule if c.effective_height <= ctx.height]
            later = tuple(c for c in schedule if c.effective_height > ctx.height)
            members, _ = apply_changes(members, due)
            self.writes[merkle.raw_key(MEMBERS_KEY)] = encode(MemberList(members))
            self.writes[merkle.raw_key(SCHEDULE_KEY)] = encode(Schedule(later)) if later else None
        self.member_map = {m.node: m for m in members}
        self.validators = validators_of(members)

    def get(self, raw: bytes) -> bytes | None:
        if raw in self.writes:
            return self.writes[raw]
        return self.base.get(raw)

    def apply(self, tx: Tx) -> None:
        sender = tx.sender
        known = self.nonces.get(sender)
        if known is None:
            raw = merkle.raw_key(nonce_key(sender))
            stored = self.base.get(raw)
            expected = 0 if stored is None else int.from_bytes(stored, "big")
        else:
            raw, expected = known
        if tx.nonce != expected:
            raise BadNonce(f"nonce {tx.nonce}, expected {expected}")
        payload = tx.payload
        if type(payload) is not Noop:
            handler = self.handlers.get(type(payload))
            if handler is None:
                raise InvalidPayload(f"no contract for {type(payload).__name__}")
            check = self.static_checks.get(type(payload))
            if check is not None:
                check(payload)
            txs = TxState(self, tx)
            handler(txs, payload)
            self.writes.update(txs.journal)
        self.nonces[sender] = (raw, expected + 1)

    def finish(self) -> StateDelta:
        writes = self.writes
        for raw, n in self.nonces.values():
            writes[raw] = n.to_bytes(8, "big")
        root = merkle.commit(self.base, writes)
        return StateDelta(writes, root)


class Ledger:
    """The ledger's state machine for one chain (one genesis)."""

    def __init__(self, genesis: Genesis) -> None:
        from emrp2p.ledger.contracts import HANDLERS, STATIC_CHECKS

        nodes = [m.node for m in genesis.members]
        if len(set(nodes)) != len(nodes):
            raise ValueError("genesis lists a member twice")
        if not genesis.validators:
            raise ValueError("genesis has no validator")
        self.genesis = genesis
        self.chain_id: bytes = genesis.chain_id
        self._signing_prefix = TX_DOMAIN + self.chain_id + b"\x84\x01"
        self.handlers: dict[type[Payload], Handler] = dict(HANDLERS)
        self.static_checks: dict[type[Payload], StaticCheck] = dict(STATIC_CHECKS)

    def signing_bytes(self, tx: Tx) -> bytes:
        """``tx.signing_bytes(chain_id)``, sliced from the cached encoding instead of re-encoded.

        A Tx encodes as ``[2, sender, nonce, payload, sig]`` and its unsigned
        form as ``[1, sender, nonce, payload]``: same middle, and the 64-byte
        signature is always the last 66 bytes.
        """
        enc = tx.encoded
        return self._signing_prefix + enc[2:-66]

    def genesis_state(self) -> StateDelta:
        writes: dict[bytes, bytes | None] = {
            merkle.raw_key(MEMBERS_KEY): encode(MemberList(self.genesis.members)),
        }
        root = merkle.commit(MemoryKV(), writes)
        return StateDelta(writes, root)

    def check_tx(self, tx: Tx) -> None:
        """Stateless checks (signature, payload shape) for intake; raises an ``InvalidTx``."""
        if not verify(tx.sender, self.signing_bytes(tx), tx.signature):
            raise InvalidSignature("signature does not verify")
        check = self.static_checks.get(type(tx.payload))
        if check is not None:
            check(tx.payload)

    def _verify(self, txs: Sequence[Tx]) -> list[bool]:
        sb = self.signing_bytes
        if len(txs) < 64:  # what verify_many does for a small batch, without its set-up
            return [verify(tx.sender, sb(tx), tx.signature) for tx in txs]
        return verify_many([(tx.sender, sb(tx), tx.signature) for tx in txs])

    def select(
        self, state: KV, ctx: BlockContext, txs: Sequence[Tx]
    ) -> tuple[list[Tx], list[tuple[Tx, LedgerError]], StateDelta]:
        """Leader side: keep the valid transactions in order, drop the others with their error."""
        oks = self._verify(txs)
        run = _BlockRun(self, state, ctx)
        included: list[Tx] = []
        rejected: list[tuple[Tx, LedgerError]] = []
        for tx, ok in zip(txs, oks, strict=True):
            try:
                if not ok:
                    raise InvalidSignature("signature does not verify")
                run.apply(tx)
            except InvalidTx as e:
                rejected.append((tx, e))
            else:
                included.append(tx)
        return included, rejected, run.finish()

    def execute(self, state: KV, ctx: BlockContext, txs: Sequence[Tx]) -> StateDelta:
        """Follower and replay side: every transaction must be valid, else ``InvalidBlock``."""
        oks = self._verify(txs)
        run = _BlockRun(self, state, ctx)
        for i, (tx, ok) in enumerate(zip(txs, oks, strict=True)):
            try:
                if not ok:
                    raise InvalidSignature("signature does not verify")
                run.apply(tx)
            except InvalidTx as e:
                raise InvalidBlock(i, e) from e
        return run.finish()

    def validators(self, state: KV, height: int) -> tuple[bytes, ...]:
        """Validators in force for block ``height``, given ``state`` after block ``height - 1``."""
        return validators_of(self.members(state, height))

    def members(self, state: KV, height: int | None = None) -> tuple[Member, ...]:
        """Current members; with ``height``, as in force for that block (due changes applied)."""
        members = get_members(state)
        if height is not None:
            due = [c for c in get_schedule(state) if c.effective_height <= height]
            if due:
                members, _ = apply_changes(members, due)
        return members

    def next_nonce(self, state: KV, sender: bytes) -> int:
        return get_nonce(state, sender)

    def state_root(self, state: KV) -> bytes:
        return merkle.state_root(state)
