"""What the consensus drivers need from durable storage, whatever backs it.

Two implementations: ``emrp2p.store.lmdb_store.LmdbStore`` (the daemon) and
``emrp2p.store.memory.MemoryStore`` (the simulator, where a "crash" keeps only
what went through ``write``). Every ``write`` is one atomic, durable unit: after
a crash either all of a batch is there or none of it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from emrp2p.ledger.types import Block, Certificate, Genesis


class KV(Protocol):
    """Read access to committed ledger state (raw layout keys chosen by ``emrp2p.ledger``)."""

    def get(self, key: bytes) -> bytes | None: ...

    def items(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """All entries whose key starts with ``prefix``, in ascending key order."""
        ...

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """``get`` of each key, in order, read in one go (the state commitment reads hundreds
        of tree nodes a block)."""
        ...

    def items_many(self, prefixes: Sequence[bytes]) -> list[list[tuple[bytes, bytes]]]:
        """``items`` of each prefix, in order, read in one go: for many short ranges (the
        state commitment's buckets), not for a long scan."""
        ...


@dataclass
class StateDelta:
    """The state changes of one block (``None`` deletes) and the state root after it."""

    writes: dict[bytes, bytes | None]
    root: bytes


@dataclass
class Commit:
    """A block to commit with its state changes; ``cert`` is the certificate that
    names this very block, when one exists (a block committed only through a
    descendant's certificate has none of its own)."""

    block: Block
    delta: StateDelta
    cert: Certificate | None = None


@dataclass
class WriteBatch:
    """One durable, atomic write. Applied in this order: truncate, accept, commit, hard state."""

    truncate_accepted_from: int | None = None
    accept: list[Block] = field(default_factory=list)
    commit: list[Commit] = field(default_factory=list)
    hard_state: bytes | None = None
    certify: list[Certificate] = field(default_factory=list)
    """Certificates for blocks already committed (e.g. learnt later); stored by height."""

    def empty(self) -> bool:
        return not (
            self.truncate_accepted_from is not None
            or self.accept
            or self.commit
            or self.hard_state is not None
            or self.certify
        )

    def split(self) -> tuple[WriteBatch, WriteBatch]:
        """This batch as two, to be written in order: what a vote or a proposal promises
        (truncate, accept, hard state), then the commits and certificates.

        A commit rewrites a block's share of the state and its Merkle nodes (and now and then
        the transaction index): on a chain with history, several times the cost of the rest.
        Nothing sent to a peer depends on it (a commit notice is its voters' signatures, not
        this node's word), so a driver may send once the first part is durable and write the
        second behind (its reads of the chain wait for it). A crash between the two writes
        leaves a store that opens with the accepted blocks above its committed head; their
        commit is learnt again (from the peers, or by the restarted node's own next round).
        """
        return (
            WriteBatch(
                truncate_accepted_from=self.truncate_accepted_from,
                accept=self.accept,
                hard_state=self.hard_state,
            ),
            WriteBatch(commit=self.commit, certify=self.certify),
        )


class ChainStore(Protocol):
    """Durable chain, state and consensus hard state of one node."""

    @property
    def state(self) -> KV: ...

    def genesis(self) -> Genesis | None: ...

    def init_genesis(self, genesis: Genesis, delta: StateDelta) -> None:
        """Write the genesis document and initial state (idempotent for the same genesis)."""
        ...

    def committed_height(self) -> int:
        """Height of the last committed block (0 when only genesis)."""
        ...

    def block(self, height: int) -> Block | None: ...

    def block_bytes(self, height: int) -> bytes | None:
        """The canonical encoding of a committed block, for sync without re-encoding."""
        ...

    def certificate(self, height: int) -> Certificate | None: ...

    def state_root(self) -> bytes:
        """State root after the last committed block (the genesis root at height 0)."""
        ...

    def tx_height(self, tx_id: bytes) -> int | None:
        """Height of the committed block holding the transaction, if any."""
        ...

    def accepted(self) -> list[Block]:
        """Accepted but uncommitted blocks, ascending height."""
        ...

    def hard_state(self) -> bytes | None: ...

    def write(self, batch: WriteBatch) -> None: ...

    def close(self) -> None: ...
