"""Offline verification of a stored chain, from genesis, trusting nothing in the store.

``verify_chain`` re-checks what every follower checks when it accepts a block
(strict encoding, chain id, height, parent link, proposer = leader of its term,
block signature, timestamps, tx root), checks every certificate (strict
majority of the validators in force at its height, sorted distinct signers,
valid vote signatures, naming exactly that block in that block's term),
re-executes every transaction with the ledger to recompute every state root,
and checks the store's own indexes and committed state against the replay. It
reports the first height that fails and why.

Every block must be committed by some certificate: its own, the next block's
``parent_cert``, or a certificate of a later block (which commits its
ancestors through the hash chain).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from emrp2p.codec import CodecError, decode
from emrp2p.crypto import verify_many
from emrp2p.ledger.errors import InvalidBlock, LedgerError
from emrp2p.ledger.execute import BlockContext, Ledger
from emrp2p.ledger.state import MemoryKV
from emrp2p.ledger.types import Block, Certificate, Genesis, tx_root, vote_signing_bytes
from emrp2p.store.lmdb_store import LmdbStore

__all__ = ["VerifyReport", "ChainInvalid", "verify_chain", "check_certificate"]


@dataclass(frozen=True)
class VerifyReport:
    """``ok`` with the verified height and state root, or the first bad height and the reason."""

    ok: bool
    height: int
    state_root: bytes
    reason: str = ""
    blocks: int = 0
    txs: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        if self.ok:
            return f"ok height={self.height} state_root={self.state_root.hex()}"
        return f"bad height={self.height}: {self.reason}"


class ChainInvalid(Exception):
    """A check failed at ``height``."""

    def __init__(self, height: int, reason: str) -> None:
        super().__init__(f"height {height}: {reason}")
        self.height = height
        self.reason = reason


def _quorum(validators: tuple[bytes, ...]) -> int:
    return len(validators) // 2 + 1


def check_certificate(
    cert: Certificate, chain_id: bytes, validators: tuple[bytes, ...], block: Block
) -> str | None:
    """Why ``cert`` does not commit ``block`` under ``validators``, or None when it does."""
    if cert.height != block.height:
        return f"names height {cert.height}"
    if cert.block_hash != block.block_hash:
        return "names another block"
    if cert.term != block.term:
        return f"cast in term {cert.term}, block is of term {block.term}"
    signers = [s.signer for s in cert.signatures]
    if any(a >= b for a, b in zip(signers, signers[1:], strict=False)):
        return "signers are not sorted and distinct"
    allowed = set(validators)
    strangers = [s for s in signers if s not in allowed]
    if strangers:
        return f"signer {strangers[0].hex()[:16]} is not a validator at this height"
    need = _quorum(validators)
    if len(signers) < need:
        return f"{len(signers)} signatures, a majority of {len(validators)} validators needs {need}"
    message = vote_signing_bytes(chain_id, cert.term, cert.height, cert.block_hash)
    oks = verify_many([(s.signer, message, s.signature) for s in cert.signatures])
    for sig, ok in zip(cert.signatures, oks, strict=True):
        if not ok:
            return f"vote signature of {sig.signer.hex()[:16]} does not verify"
    return None


class _Verifier:
    def __init__(self, store: LmdbStore, progress: Callable[[int, int], None] | None) -> None:
        self.store = store
        self.progress = progress
        self.state = MemoryKV()
        self.root = b""
        self.height = 0
        self.txs = 0
        self.uncommitted_from: int | None = None
        """Lowest height not yet covered by any certificate."""

    def run(self) -> None:
        store = self.store
        raw_genesis = store.genesis_bytes()
        if raw_genesis is None:
            raise ChainInvalid(0, "no genesis in the store")
        try:
            genesis = decode(Genesis, raw_genesis)
        except CodecError as e:
            raise ChainInvalid(0, f"genesis does not decode: {e}") from None
        try:
            ledger = Ledger(genesis)
        except ValueError as e:
            raise ChainInvalid(0, f"genesis is unusable: {e}") from None
        chain_id = genesis.chain_id
        g = ledger.genesis_state()
        self.state.apply(dict(g.writes))
        self.root = g.root
        if store.state_root_at(0) not in (None, g.root):
            raise ChainInvalid(0, "stored genesis state root differs from the ledger's")

        head = store.committed_height()
        prev: Block | None = None
        prev_hash = chain_id
        prev_ts = genesis.timestamp_ms
        prev_validators: tuple[bytes, ...] = ()
        for height in range(1, head + 1):
            raw = store.block_bytes(height)
            if raw is None:
                raise ChainInvalid(height, "block missing from the store")
            try:
                block = decode(Block, raw)
            except CodecError as e:
                raise ChainInvalid(height, f"block does not decode strictly: {e}") from None
            h = block.header
            if h.chain_id != chain_id:
                raise ChainInvalid(height, "block belongs to another chain")
            if h.height != height:
                raise ChainInvalid(height, f"block says it is at height {h.height}")
            if h.parent != prev_hash:
                raise ChainInvalid(height, "parent hash does not link to the previous block")
            validators = ledger.validators(self.state, height)
            if not validators:
                raise ChainInvalid(height, "no validator in force")
            if h.proposer != validators[h.term % len(validators)]:
                raise ChainInvalid(height, f"proposer is not the leader of term {h.term}")
            if not block.signature_ok():
                raise ChainInvalid(height, "block signature by the proposer does not verify")
            if h.timestamp_ms < prev_ts:
                raise ChainInvalid(height, "timestamp before the parent's")
            if h.tx_count != len(block.txs):
                raise ChainInvalid(height, f"tx_count {h.tx_count} but {len(block.txs)} transactions")
            if h.tx_root != tx_root(block.txs):
                raise ChainInvalid(height, "tx root does not match the transactions")
            if h.parent_cert is not None:
                if prev is None:
                    raise ChainInvalid(height, "block 1 carries a parent certificate")
                why = check_certificate(h.parent_cert, chain_id, prev_validators, prev)
                if why is not None:
                    raise ChainInvalid(height, f"parent certificate (of block {height - 1}) {why}")
                self._covered(height - 1)

            try:
                delta = ledger.execute(
                    self.state, BlockContext(height, h.timestamp_ms, h.proposer), block.txs
                )
            except InvalidBlock as e:
                raise ChainInvalid(height, f"transaction rejected on replay: {e}") from None
            except LedgerError as e:
                raise ChainInvalid(height, f"execution failed: {e}") from None
            if delta.root != h.state_root:
                raise ChainInvalid(height, "state root in the header differs from the replayed state")
            if store.state_root_at(height) not in (None, delta.root):
                raise ChainInvalid(height, "stored state root differs from the replayed state")
            self.state.apply(delta.writes)
            self.root = delta.root

            try:
                cert = store.certificate(height)
            except CodecError as e:
                raise ChainInvalid(height, f"certificate does not decode strictly: {e}") from None
            if cert is not None:
                why = check_certificate(cert, chain_id, validators, block)
                if why is not None:
                    raise ChainInvalid(height, f"certificate {why}")
            if self.uncommitted_from is None:
                self.uncommitted_from = height
            if cert is not None:
                self._covered(height)

            self._check_indexes(block)
            self.txs += len(block.txs)
            self.height = height
            prev, prev_hash, prev_ts, prev_validators = block, block.block_hash, h.timestamp_ms, validators
            if self.progress is not None:
                self.progress(height, head)

        if self.uncommitted_from is not None:
            raise ChainInvalid(self.uncommitted_from, "no certificate commits this block")
        if head and store.head_hash() != prev_hash:
            raise ChainInvalid(head, "stored head hash is not the last block's")
        if store.state_root() != self.root:
            raise ChainInvalid(head, "stored state root differs from the replayed state")
        self._check_state(head)
        if store.block_bytes(head + 1) is not None:
            raise ChainInvalid(head + 1, "a block is stored above the committed head")

    def _covered(self, height: int) -> None:
        """A valid certificate for ``height`` commits it and, through the hash chain, every ancestor."""
        if self.uncommitted_from is not None and self.uncommitted_from <= height:
            self.uncommitted_from = None

    def _check_indexes(self, block: Block) -> None:
        store = self.store
        height = block.height
        if store.height_of(block.block_hash) != height:
            raise ChainInvalid(height, "block hash index does not point at this height")
        for i, tx in enumerate(block.txs):
            if store.tx_height(tx.tx_id) != height:
                raise ChainInvalid(height, f"tx index entry of transaction {i} does not point at this height")

    def _check_state(self, head: int) -> None:
        stored = self.store.state.items(b"")
        expected = iter(sorted(self.state.data.items()))
        for want in expected:
            got = next(stored, None)
            if got != want:
                key = want[0] if got is None or want[0] <= got[0] else got[0]
                raise ChainInvalid(head, f"stored state differs from the replay at key {key.hex()}")
        extra = next(stored, None)
        if extra is not None:
            raise ChainInvalid(head, f"stored state has a key the replay does not: {extra[0].hex()}")


def verify_chain(store: LmdbStore, *, progress: Callable[[int, int], None] | None = None) -> VerifyReport:
    """Verify the whole stored chain offline; ``progress(height, head)`` is called after each block.

    Reads one snapshot of the store, so a daemon may keep committing meanwhile.
    """
    started = time.perf_counter()
    v = _Verifier(store, progress)
    try:
        with store.pinned():
            v.run()
    except ChainInvalid as e:
        return VerifyReport(False, e.height, v.root, e.reason, v.height, v.txs, time.perf_counter() - started)
    return VerifyReport(True, v.height, v.root, "", v.height, v.txs, time.perf_counter() - started)
