"""A ``Ledger`` for the simulator that executes each distinct block once per cluster.

Execution is a pure function of (pre-state, block context, transactions), and a
state is identified by its Merkle root (the root node is stored in the state
itself, under ``merkle.ROOT_KEY``; every other state key is a bucket entry or a
tree node that the root commits to). In a simulated cluster every follower
executes the very block the leader built, on the very same pre-state, so all
but the first run are redundant work for the one process that hosts them all.

``MemoLedger`` remembers successful results, keyed on the pre-state's root
node, the block context and the ids of the transactions (a tx id hashes the
whole signed transaction, signature included). The leader's ``select`` also
records its result under the transactions it included: running ``execute`` on
exactly those gives the same delta byte for byte (a rejected transaction writes
nothing and does not advance its sender's nonce). Failures are never
remembered: a block that does not execute is re-run, and raises, every time.

``check_tx`` is skipped for a transaction id that passed it before in this
cluster (the process-wide verify cache would answer anyway, at the cost of
hashing the signed message again), and so is the signature batch of a block
whose transactions all passed it.

The deltas handed out are shared between nodes. Nothing mutates a delta after
``finish``: the core merges ``delta.writes`` into its own dicts, ``Overlay``s
are built over fresh dicts, and ``MemoryStore.write`` applies a copy.
"""

from __future__ import annotations

from collections.abc import Sequence

from emrp2p.ledger.errors import LedgerError
from emrp2p.ledger.execute import BlockContext, Ledger
from emrp2p.ledger.merkle import ROOT_KEY
from emrp2p.ledger.types import Genesis, Tx
from emrp2p.store.api import KV, StateDelta

__all__ = ["MemoLedger"]

_Key = tuple[bytes | None, int, int, bytes, tuple[bytes, ...]]


class MemoLedger(Ledger):
    def __init__(self, genesis: Genesis, capacity: int = 256) -> None:
        super().__init__(genesis)
        self._memo: dict[_Key, StateDelta] = {}
        self._capacity = capacity
        self.hits = 0
        self.misses = 0
        self._checked: dict[bytes, None] = {}
        """Ids of transactions that passed ``check_tx`` (signature and static checks, both pure
        functions of the signed transaction, which its id hashes)."""

    @staticmethod
    def _key(state: KV, ctx: BlockContext, txs: Sequence[Tx]) -> _Key:
        return (
            state.get(ROOT_KEY),
            ctx.height,
            ctx.timestamp_ms,
            ctx.proposer,
            tuple([tx.tx_id for tx in txs]),
        )

    def _remember(self, key: _Key, delta: StateDelta) -> None:
        memo = self._memo
        if key in memo:
            return
        if len(memo) >= self._capacity:
            del memo[next(iter(memo))]  # oldest first
        memo[key] = delta

    def check_tx(self, tx: Tx) -> None:
        tx_id = tx.tx_id
        checked = self._checked
        if tx_id in checked:
            return
        super().check_tx(tx)
        if len(checked) >= 1 << 18:
            del checked[next(iter(checked))]
        checked[tx_id] = None

    def _verify(self, txs: Sequence[Tx]) -> list[bool]:
        checked = self._checked
        if all(tx.tx_id in checked for tx in txs):
            return [True] * len(txs)
        return super()._verify(txs)

    def execute(self, state: KV, ctx: BlockContext, txs: Sequence[Tx]) -> StateDelta:
        key = self._key(state, ctx, txs)
        delta = self._memo.get(key)
        if delta is not None:
            self.hits += 1
            return delta
        self.misses += 1
        delta = super().execute(state, ctx, txs)
        self._remember(key, delta)
        return delta

    def select(
        self, state: KV, ctx: BlockContext, txs: Sequence[Tx]
    ) -> tuple[list[Tx], list[tuple[Tx, LedgerError]], StateDelta]:
        included, rejected, delta = super().select(state, ctx, txs)
        self._remember(self._key(state, ctx, included), delta)
        return included, rejected, delta
