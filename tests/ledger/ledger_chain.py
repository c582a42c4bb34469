"""A small in-memory chain for ledger tests: real signatures, real state, real roots."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest

from emrp2p.crypto import Identity
from emrp2p.ledger import merkle
from emrp2p.ledger.errors import InvalidBlock, InvalidTx
from emrp2p.ledger.execute import BlockContext, Ledger
from emrp2p.ledger.state import MemoryKV
from emrp2p.ledger.types import Genesis, Payload, Tx, sign_tx

T0 = 1_700_000_000_000
BLOCK_MS = 1000


def new_id() -> bytes:
    return os.urandom(16)


@dataclass
class Chain:
    """Executes one block per call and keeps every block's txs for replay checks."""

    genesis: Genesis
    ledger: Ledger = field(init=False)
    kv: MemoryKV = field(default_factory=MemoryKV)
    height: int = 0
    blocks: list[tuple[BlockContext, list[Tx]]] = field(default_factory=list)
    roots: list[bytes] = field(default_factory=list)
    nonces: dict[bytes, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ledger = Ledger(self.genesis)
        delta = self.ledger.genesis_state()
        self.kv.apply(delta.writes)
        self.roots.append(delta.root)

    def sign(self, who: Identity, payload: Payload, nonce: int | None = None) -> Tx:
        n = self.nonces.get(who.public, 0) if nonce is None else nonce
        return sign_tx(who, self.ledger.chain_id, n, payload)

    def next_ctx(self, skip_ms: int = 0) -> BlockContext:
        h = self.height + 1
        return BlockContext(h, T0 + h * BLOCK_MS + skip_ms, self.genesis.validators[0])

    def block(self, txs: list[Tx], skip_ms: int = 0) -> bytes:
        """Execute a block that must be valid (follower path), after checking the leader agrees."""
        ctx = self.next_ctx(skip_ms)
        included, rejected, selected = self.ledger.select(self.kv, ctx, txs)
        assert not rejected, [(e.code, str(e)) for _, e in rejected]
        delta = self.ledger.execute(self.kv, ctx, txs)
        assert delta.root == selected.root and delta.writes == selected.writes
        self.kv.apply(delta.writes)
        assert merkle.state_root(self.kv) == delta.root
        self.height += 1
        self.blocks.append((ctx, list(txs)))
        self.roots.append(delta.root)
        for tx in txs:
            self.nonces[tx.sender] = tx.nonce + 1
        return delta.root

    def empty_blocks(self, n: int) -> None:
        for _ in range(n):
            self.block([])

    def accept(self, who: Identity, payload: Payload, skip_ms: int = 0) -> Tx:
        tx = self.sign(who, payload)
        self.block([tx], skip_ms)
        return tx

    def reject(self, who: Identity, payload: Payload, skip_ms: int = 0) -> InvalidTx:
        """Assert the next block refuses this tx (leader drops it, follower refuses the block); return why."""
        tx = self.sign(who, payload)
        ctx = self.next_ctx(skip_ms)
        included, rejected, delta = self.ledger.select(self.kv, ctx, [tx])
        assert included == [] and len(rejected) == 1
        err = rejected[0][1]
        assert isinstance(err, InvalidTx)
        with pytest.raises(InvalidBlock) as info:
            self.ledger.execute(self.kv, ctx, [tx])
        assert info.value.index == 0 and type(info.value.cause) is type(err)
        return err
