"""An in-memory ``ChainStore`` for the simulator and tests.

``write`` is the only way anything becomes durable: a simulated crash throws the
node's ``Core`` away and builds a new one from this store, so whatever the core
held only in memory is lost, exactly as on a real restart. Every batch is
applied whole (it is built before any of it is applied).
"""

from __future__ import annotations

from emrp2p.ledger.state import MemoryKV
from emrp2p.ledger.types import Block, Certificate, Genesis
from emrp2p.store.api import KV, StateDelta, WriteBatch

__all__ = ["MemoryStore", "StoreCorrupt"]


class StoreCorrupt(RuntimeError):
    """A batch that would break the chain (a commit that does not extend it)."""


class MemoryStore:
    def __init__(self) -> None:
        self._genesis: Genesis | None = None
        self._state = MemoryKV()
        self._genesis_root = b""
        self._blocks: list[Block] = []
        self._certs: dict[int, Certificate] = {}
        self._roots: list[bytes] = []
        self._tx_heights: dict[bytes, int] = {}
        self._accepted: dict[int, Block] = {}
        self._hard_state: bytes | None = None
        self.writes = 0
        """Number of durable batches written (the simulator's fsync count)."""

    @property
    def state(self) -> KV:
        return self._state

    def genesis(self) -> Genesis | None:
        return self._genesis

    def init_genesis(self, genesis: Genesis, delta: StateDelta) -> None:
        if self._genesis is not None:
            if self._genesis.chain_id != genesis.chain_id:
                raise StoreCorrupt("store already holds another genesis")
            return
        self._genesis = genesis
        self._state.apply(dict(delta.writes))
        self._genesis_root = delta.root

    def committed_height(self) -> int:
        return len(self._blocks)

    def block(self, height: int) -> Block | None:
        return self._blocks[height - 1] if 1 <= height <= len(self._blocks) else None

    def block_bytes(self, height: int) -> bytes | None:
        block = self.block(height)
        return None if block is None else block.encoded

    def certificate(self, height: int) -> Certificate | None:
        return self._certs.get(height)

    def state_root(self) -> bytes:
        return self._roots[-1] if self._roots else self._genesis_root

    def tx_height(self, tx_id: bytes) -> int | None:
        return self._tx_heights.get(tx_id)

    def accepted(self) -> list[Block]:
        return [self._accepted[h] for h in sorted(self._accepted)]

    def hard_state(self) -> bytes | None:
        return self._hard_state

    def write(self, batch: WriteBatch) -> None:
        height = len(self._blocks)
        tip = self._blocks[-1].block_hash if self._blocks else None
        for c in batch.commit:
            if c.block.height != height + 1 or (tip is not None and c.block.header.parent != tip):
                raise StoreCorrupt(f"commit of height {c.block.height} does not extend {height}")
            height, tip = c.block.height, c.block.block_hash
        if batch.truncate_accepted_from is not None:
            for h in [h for h in self._accepted if h >= batch.truncate_accepted_from]:
                del self._accepted[h]
        for block in batch.accept:
            self._accepted[block.height] = block
        for c in batch.commit:
            self._blocks.append(c.block)
            self._roots.append(c.delta.root)
            self._state.apply(dict(c.delta.writes))
            if c.cert is not None:
                self._certs[c.block.height] = c.cert
            for tx in c.block.txs:
                self._tx_heights[tx.tx_id] = c.block.height
        for h in [h for h in self._accepted if h <= len(self._blocks)]:
            del self._accepted[h]
        if batch.hard_state is not None:
            self._hard_state = batch.hard_state
        for cert in batch.certify:
            if 1 <= cert.height <= len(self._blocks):
                self._certs.setdefault(cert.height, cert)
        self.writes += 1

    def close(self) -> None:
        pass
