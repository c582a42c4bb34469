"""Compact proposals: the leader streams pending transactions ahead, proposals name them by id.

Without this, every transaction crosses the network into each follower inside the leader's
proposal, and each follower checks the signatures of those it never saw while the round
waits: on 4 daemons sharing 2 cores that was about 11 of the 16 ms between the leader
emitting a proposal and a follower stepping it (``bench/cluster.py --profile``).

With it, the leader relays what enters its pool (forwarded to it, or submitted by its own
apps) to the other validators as it comes (``ShareTxs``, at most every ``relay_interval_ms``;
not back to a transaction's forwarder, whose pool holds it), and they check the signatures
while the transactions wait for a block. Then it sends each new proposal as a
``ProposeCompact``: the block's header, signature and transaction ids, after relaying whatever
of the block was not relayed yet. One stream per peer keeps order, so the follower holds every
transaction of the block when the proposal arrives; it fills them in from what it was relayed
or its pool holds (a transaction id is the hash of the whole signed transaction: what an id
finds is exactly what the leader proposed) and steps an ordinary ``Propose``, which the core
checks as any other. If it lacks any (a stream that broke and lost frames, a relay from a
leader it did not follow yet), it asks for the whole proposal (``ProposalWanted``), which the
leader keeps for its last few blocks. A proposal sent again (a follower behind, a new term
carrying it forward) always goes whole.

Every transaction still reaches each follower once, so traffic stays about the same (ids
add ~30 bytes per transaction and follower); relays batch many forwards in one message per
follower, so messages grow by a few per block only. The transport is all this changes: the
core, the chain and the store see whole blocks.

Measured (same machine, 4 daemons): a proposal's hop from the leader's core to a follower's
went from 16 to 8-10 ms (p50; arrival to stepped 11 -> 0-1 ms), a round from proposal to
certificate from 24 to 17 ms. With 30 ms blocks, p50 at half the peak after the saturated
steps of the full bench was 45, 40 ms against 53, 57 without (1-3 ms less in short runs from
fresh); the peak moved by -2 to 0 %. Between hospitals, with their
own cores and a WAN in between, it matters more: a follower checks a block's signatures
while it waits, and the leader's upload on the round's critical path is ids, not the block.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TypeVar

from emrp2p.consensus import Propose
from emrp2p.consensus.messages import ProposeCompact
from emrp2p.ledger.types import Block, Tx

__all__ = ["CompactRelay", "RECENT_PROPOSALS"]

RECENT_PROPOSALS = 16
"""Whole proposals the leader keeps for followers that ask."""


class CompactRelay:
    """One node's bookkeeping: as a follower, what it was relayed (by id); as the leader, what
    it is to relay, what it relayed, and its recent proposals.

    ``capacity`` bounds the first two (oldest dropped first): a transaction leaves them as a
    proposal takes it, so only those never proposed (a leader that crashed) wait to be dropped.
    """

    def __init__(self, me: bytes, capacity: int, recent: int = RECENT_PROPOSALS) -> None:
        self.me = me
        self._capacity = capacity
        self._shared: OrderedDict[bytes, Tx] = OrderedDict()
        self._queued: dict[bytes, tuple[bytes, Tx]] = {}
        self._relayed: OrderedDict[bytes, None] = OrderedDict()
        self._sent: OrderedDict[bytes, Propose] = OrderedDict()
        self._recent = recent

    # ------------------------------------------------------------------ follower

    def add_shared(self, txs: Iterable[Tx]) -> None:
        _add_bounded(self._shared, ((tx.tx_id, tx) for tx in txs), self._capacity)

    def has_shared(self, tx_id: bytes) -> bool:
        return tx_id in self._shared

    def expand(self, msg: ProposeCompact, held: Callable[[bytes], Tx | None]) -> Propose | None:
        """The whole proposal, its transactions taken from the relayed ones or ``held`` (the
        pool's); None if any is missing (nothing is taken then)."""
        shared = self._shared
        txs: list[Tx] = []
        for tx_id in msg.tx_ids:
            tx = shared.get(tx_id)
            if tx is None:
                tx = held(tx_id)
                if tx is None:
                    return None
            txs.append(tx)
        for tx_id in msg.tx_ids:
            shared.pop(tx_id, None)
        return Propose(msg.term, Block(msg.header, tuple(txs), msg.signature))

    # ------------------------------------------------------------------ leader

    def queue(self, origin: bytes, txs: Iterable[Tx]) -> None:
        """Transactions that entered the leader's pool from ``origin`` (itself, or the member
        that forwarded them), to relay to every other validator."""
        queued = self._queued
        for tx in txs:
            queued.setdefault(tx.tx_id, (origin, tx))

    def queued(self) -> int:
        return len(self._queued)

    def take(
        self, validators: Iterable[bytes], proposed: frozenset[bytes] = frozenset()
    ) -> dict[bytes, list[Tx]]:
        """What to relay now, per validator (never back to a transaction's origin); marks it
        relayed, except what is ``proposed`` already."""
        queued, self._queued = self._queued, {}
        out: dict[bytes, list[Tx]] = {v: [] for v in validators if v != self.me}
        for origin, tx in queued.values():
            for dest, txs in out.items():
                if dest != origin:
                    txs.append(tx)
        _add_bounded(self._relayed, ((i, None) for i in queued if i not in proposed), self._capacity)
        return {dest: txs for dest, txs in out.items() if txs}

    def compact(
        self, msg: Propose, validators: Iterable[bytes]
    ) -> tuple[dict[bytes, list[Tx]], ProposeCompact] | None:
        """For a new proposal sent for the first time: what to relay ahead of it (per validator,
        as :meth:`take`; whatever of the block was neither relayed nor queued goes to all) and
        its compact form. Else None (send it whole: one carried forward from an earlier term
        may hold transactions relayed by another leader)."""
        block = msg.block
        if msg.term != block.term or block.block_hash in self._sent:
            return None
        _add_bounded(self._sent, [(block.block_hash, msg)], self._recent)
        relayed, queued = self._relayed, self._queued
        for tx in block.txs:
            tx_id = tx.tx_id
            if tx_id in relayed:
                del relayed[tx_id]
            elif tx_id not in queued:
                queued[tx_id] = (self.me, tx)
        ids = tuple(tx.tx_id for tx in block.txs)
        ahead = self.take(validators, proposed=frozenset(ids))
        return ahead, ProposeCompact(msg.term, block.header, block.signature, ids)

    def whole(self, block_hash: bytes) -> Propose | None:
        """A recent proposal of ours, for a follower that could not fill it in."""
        return self._sent.get(block_hash)


V = TypeVar("V")


def _add_bounded(d: OrderedDict[bytes, V], items: Iterable[tuple[bytes, V]], capacity: int) -> None:
    for k, v in items:
        d[k] = v
    for _ in range(len(d) - capacity):
        d.popitem(last=False)
