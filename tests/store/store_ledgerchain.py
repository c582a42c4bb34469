"""Real chains for verify-chain tests: blocks executed by the ledger, signed by the leader of their
term, certified by test validators, committed into an LmdbStore like a node would."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import lmdb
from store_chainkit import BLOCK_INTERVAL_MS, GENESIS_TIME_MS, make_genesis, validators

from emrp2p.crypto import Identity
from emrp2p.ledger.execute import BlockContext, Ledger
from emrp2p.ledger.state import MemoryKV
from emrp2p.ledger.types import (
    Block,
    BlockHeader,
    Certificate,
    Genesis,
    Noop,
    Payload,
    RegisterPatient,
    Tx,
    make_certificate,
    sign_block,
    sign_tx,
    sign_vote,
    tx_root,
)
from emrp2p.store.api import Commit, WriteBatch
from emrp2p.store.lmdb_store import LmdbStore, height_key


@dataclass
class LedgerChain:
    """Builds and commits blocks; each block carries its parent's certificate unless told otherwise."""

    store: LmdbStore
    genesis: Genesis = field(default_factory=make_genesis)
    idents: list[Identity] = field(default_factory=validators)
    term: int = 1
    nonces: dict[bytes, int] = field(default_factory=dict)
    last_cert: Certificate | None = None
    last: Block | None = None

    def __post_init__(self) -> None:
        self.ledger = Ledger(self.genesis)
        self.state = MemoryKV()
        g = self.ledger.genesis_state()
        self.state.apply(dict(g.writes))
        self.store.init_genesis(self.genesis, g)

    @property
    def chain_id(self) -> bytes:
        return self.genesis.chain_id

    @property
    def height(self) -> int:
        return 0 if self.last is None else self.last.height

    def leader(self, term: int | None = None) -> Identity:
        t = self.term if term is None else term
        return self.idents[t % len(self.idents)]

    def tx(self, sender: Identity, payload: Payload, nonce: int | None = None) -> Tx:
        if nonce is None:
            nonce = self.nonces.get(sender.public, 0)
            self.nonces[sender.public] = nonce + 1
        return sign_tx(sender, self.chain_id, nonce, payload)

    def noops(self, count: int) -> tuple[Tx, ...]:
        senders = [Identity.from_test_name(f"sender-{i}") for i in range(3)]
        return tuple(self.tx(senders[i % 3], Noop(b"%d/%d" % (self.height + 1, i))) for i in range(count))

    def patient(self, name: str) -> Tx:
        return self.tx(Identity.from_test_name(name), RegisterPatient())

    def make_block(
        self,
        txs: tuple[Tx, ...],
        *,
        signer: Identity | None = None,
        state_root: bytes | None = None,
        timestamp_ms: int | None = None,
        executed: tuple[Tx, ...] | None = None,
        **forged: object,
    ) -> tuple[Block, Commit]:
        """The next block, executed by the ledger; to forge one, ``executed`` are the transactions
        actually run (default ``txs``) and ``forged`` overrides header fields after execution."""
        height = self.height + 1
        proposer = signer or self.leader()
        ts = GENESIS_TIME_MS + height * BLOCK_INTERVAL_MS if timestamp_ms is None else timestamp_ms
        ctx = BlockContext(height, ts, proposer.public)
        delta = self.ledger.execute(self.state, ctx, txs if executed is None else executed)
        header = BlockHeader(
            chain_id=self.chain_id,
            height=height,
            term=self.term,
            parent=self.genesis.chain_id if self.last is None else self.last.block_hash,
            proposer=proposer.public,
            timestamp_ms=ts,
            tx_root=tx_root(txs),
            state_root=delta.root if state_root is None else state_root,
            tx_count=len(txs),
            parent_cert=self.last_cert,
        )
        header = dataclasses.replace(header, **forged)  # type: ignore[arg-type]
        block = sign_block(proposer, header, txs)
        return block, Commit(block, delta, None)

    def certify(self, block: Block, signers: int = 3, term: int | None = None) -> Certificate:
        t = block.term if term is None else term
        votes = [
            sign_vote(v, self.chain_id, t, block.height, block.block_hash) for v in self.idents[:signers]
        ]
        return make_certificate(votes)

    def commit(self, block: Block, commit: Commit, cert: Certificate | None, *, carry: bool = True) -> None:
        self.store.write(WriteBatch(commit=[Commit(block, commit.delta, cert)]))
        self.state.apply(commit.delta.writes)
        self.last = block
        self.last_cert = cert if carry else None

    def extend(self, txs: tuple[Tx, ...] | None = None, *, cert: bool = True, carry: bool = True) -> Block:
        block, commit = self.make_block(self.noops(4) if txs is None else txs)
        self.commit(block, commit, self.certify(block) if cert else None, carry=carry)
        return block


def raw_update(path: str, db_name: bytes, key: bytes, change: object) -> None:
    """Change one stored value behind the store's back (``change(old) -> new``, None deletes)."""
    env = lmdb.open(path, max_dbs=16, map_size=1 << 30)
    try:
        db = env.open_db(db_name, create=False)
        with env.begin(write=True, db=db) as txn:
            old = txn.get(key)
            new = change(old)  # type: ignore[operator]
            if new is None:
                txn.delete(key)
            else:
                txn.put(key, new)
    finally:
        env.close()


def flip_byte(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


__all__ = ["LedgerChain", "raw_update", "flip_byte", "height_key"]
