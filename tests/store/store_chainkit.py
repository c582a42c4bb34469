"""Deterministic signed chains for store tests: test validators, blocks, certificates, synthetic deltas.

The state deltas here are synthetic (not the ledger's contracts): a pure
function of the height, so a test can recompute the state any prefix of the
chain must have produced.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from emrp2p.crypto import Identity
from emrp2p.ledger.types import (
    Block,
    BlockHeader,
    Certificate,
    Genesis,
    Member,
    Noop,
    Role,
    Tx,
    make_certificate,
    sign_block,
    sign_tx,
    sign_vote,
    tx_root,
)
from emrp2p.store.api import Commit, StateDelta, WriteBatch

VALIDATOR_NAMES = ("hospital-a", "hospital-b", "hospital-c", "hospital-d")
GENESIS_TIME_MS = 1_700_000_000_000
BLOCK_INTERVAL_MS = 250


def validators() -> list[Identity]:
    return [Identity.from_test_name(n) for n in VALIDATOR_NAMES]


def make_genesis(network: str = "store-test") -> Genesis:
    members = tuple(
        Member(v.public, name, Role.VALIDATOR) for v, name in zip(validators(), VALIDATOR_NAMES, strict=True)
    )
    return Genesis(network, GENESIS_TIME_MS, members)


def genesis_delta() -> StateDelta:
    writes: dict[bytes, bytes | None] = {b"g/founded": b"yes", b"counter": b"0"}
    return StateDelta(writes, hashlib.sha256(b"genesis-root").digest())


def synthetic_writes(height: int) -> dict[bytes, bytes | None]:
    """Puts, overwrites and deletes; every 5th block carries a 256 KiB value so commits take a while."""
    writes: dict[bytes, bytes | None] = {b"counter": str(height).encode()}
    size = 256 * 1024 if height % 5 == 0 else 64
    writes[b"h/%08d" % height] = bytes([height % 251]) * size
    if height > 3:
        writes[b"h/%08d" % (height - 3)] = None
    for i in range(100):
        writes[b"k/%04d" % ((height * 7 + i) % 500)] = b"%d:%d" % (height, i)
    return writes


def next_root(prev_root: bytes, height: int, writes: dict[bytes, bytes | None]) -> bytes:
    h = hashlib.sha256(prev_root + height.to_bytes(8, "big"))
    for key in sorted(writes):
        value = writes[key]
        h.update(key + b"=" + (b"-" if value is None else hashlib.sha256(value).digest()))
    return h.digest()


def expected_state(height: int) -> tuple[dict[bytes, bytes], bytes]:
    """The state and root that committing synthetic blocks 1..height onto genesis produces."""
    g = genesis_delta()
    state = {k: v for k, v in g.writes.items() if v is not None}
    root = g.root
    for h in range(1, height + 1):
        writes = synthetic_writes(h)
        for k, v in writes.items():
            if v is None:
                state.pop(k, None)
            else:
                state[k] = v
        root = next_root(root, h, writes)
    return state, root


@dataclass
class ChainBuilder:
    """Builds a chain of signed blocks with 3-of-4 certificates, each block carrying its parent's."""

    genesis: Genesis
    txs_per_block: int = 5
    term: int = 1
    idents: list[Identity] = field(default_factory=validators)
    senders: list[Identity] = field(
        default_factory=lambda: [Identity.from_test_name(f"clinic-{i}") for i in range(3)]
    )
    height: int = 0
    head_hash: bytes = b""
    root: bytes = b""
    last_cert: Certificate | None = None
    nonces: dict[bytes, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.head_hash:
            self.head_hash = self.genesis.chain_id
        if not self.root:
            self.root = genesis_delta().root

    @property
    def chain_id(self) -> bytes:
        return self.genesis.chain_id

    def proposer(self) -> Identity:
        return self.idents[self.term % len(self.idents)]

    def make_txs(self, count: int) -> tuple[Tx, ...]:
        out = []
        for i in range(count):
            sender = self.senders[i % len(self.senders)]
            nonce = self.nonces.get(sender.public, 0)
            self.nonces[sender.public] = nonce + 1
            out.append(sign_tx(sender, self.chain_id, nonce, Noop(b"h%d-i%d" % (self.height + 1, i))))
        return tuple(out)

    def next_block(self, state_root: bytes, txs: tuple[Tx, ...] | None = None) -> Block:
        if txs is None:
            txs = self.make_txs(self.txs_per_block)
        height = self.height + 1
        header = BlockHeader(
            chain_id=self.chain_id,
            height=height,
            term=self.term,
            parent=self.head_hash,
            proposer=self.proposer().public,
            timestamp_ms=GENESIS_TIME_MS + height * BLOCK_INTERVAL_MS,
            tx_root=tx_root(txs),
            state_root=state_root,
            tx_count=len(txs),
            parent_cert=self.last_cert,
        )
        return sign_block(self.proposer(), header, txs)

    def certify(self, block: Block, signers: int = 3) -> Certificate:
        votes = [
            sign_vote(v, self.chain_id, block.term, block.height, block.block_hash)
            for v in self.idents[:signers]
        ]
        return make_certificate(votes)

    def advance(self, block: Block, cert: Certificate | None, root: bytes) -> None:
        self.height = block.height
        self.head_hash = block.block_hash
        self.root = root
        self.last_cert = cert

    def synthetic_commit(self) -> tuple[Commit, WriteBatch]:
        """The next block with synthetic writes, its certificate, as a batch that also sets hard state."""
        height = self.height + 1
        writes = synthetic_writes(height)
        root = next_root(self.root, height, writes)
        block = self.next_block(root)
        cert = self.certify(block)
        commit = Commit(block, StateDelta(writes, root), cert)
        self.advance(block, cert, root)
        return commit, WriteBatch(commit=[commit], hard_state=hard_state_bytes(self.term, height))


def hard_state_bytes(term: int, height: int) -> bytes:
    return b"term=%d;height=%d" % (term, height)
