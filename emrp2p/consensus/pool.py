"""The pending-transaction pool: intake results, dedupe, bound, forwarding bookkeeping, status."""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from emrp2p.ledger.types import Tx

__all__ = ["SubmitStatus", "SubmitResult", "TxState", "TxStatus", "TxPool"]


class SubmitStatus(enum.Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    """Already pending or committed: nothing to do (resubmitting is always safe)."""
    INVALID = "invalid"
    """Fails the stateless checks; ``code`` says why (a ledger error code)."""
    BUSY = "busy"
    """The node takes no more now (its pool is full, or its driver finds the oldest pending
    transaction waiting too long): try again later. The transaction was not taken."""


@dataclass(frozen=True)
class SubmitResult:
    tx_id: bytes
    status: SubmitStatus
    code: str | None = None


class TxState(enum.Enum):
    UNKNOWN = "unknown"
    PENDING = "pending"
    COMMITTED = "committed"
    REJECTED = "rejected"
    EXPIRED = "expired"


@dataclass(frozen=True)
class TxStatus:
    state: TxState
    height: int | None = None
    code: str | None = None


@dataclass
class _Pending:
    tx: Tx
    added_ms: int


class _Recent(OrderedDict[bytes, TxStatus]):
    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def remember(self, tx_id: bytes, status: TxStatus) -> None:
        if tx_id in self:
            self.move_to_end(tx_id)
        self[tx_id] = status
        if len(self) > self.capacity:
            self.popitem(last=False)


class TxPool:
    """Pending transactions in arrival order, plus the forwarding schedule.

    Every per-tick operation is proportional to what it returns, not to the pool's
    size: arrival order is time order (``expire`` stops at the first young entry),
    and forwarding keeps its own queues (never forwarded; forwarded, oldest first).
    """

    def __init__(self, max_pending: int, remember: int) -> None:
        self.max_pending = max_pending
        self._pending: dict[bytes, _Pending] = {}
        self._done = _Recent(remember)
        self._unsent: dict[bytes, None] = {}
        self._sent: dict[bytes, int] = {}
        self._parked: dict[bytes, set[bytes]] = {}
        """sender -> pending ids whose nonce is ahead of the sender's next (a gap)."""
        self._parked_ids: set[bytes] = set()
        self.drained = 0
        """How many pending transactions have left the pool by committing, ever (a driver's
        measure of how fast the network takes this pool's transactions)."""

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, tx_id: bytes) -> bool:
        return tx_id in self._pending

    def get(self, tx_id: bytes) -> Tx | None:
        p = self._pending.get(tx_id)
        return None if p is None else p.tx

    def status(self, tx_id: bytes) -> TxStatus:
        if tx_id in self._pending:
            return TxStatus(TxState.PENDING)
        return self._done.get(tx_id, TxStatus(TxState.UNKNOWN))

    def known_committed(self, tx_id: bytes) -> bool:
        s = self._done.get(tx_id)
        return s is not None and s.state is TxState.COMMITTED

    def add(self, tx: Tx, now_ms: int) -> SubmitStatus:
        tx_id = tx.tx_id
        if tx_id in self._pending or self.known_committed(tx_id):
            return SubmitStatus.DUPLICATE
        if len(self._pending) >= self.max_pending:
            return SubmitStatus.BUSY
        self._pending[tx_id] = _Pending(tx, now_ms)
        self._unsent[tx_id] = None
        if tx.sender in self._parked:
            self._release(tx.sender)  # it may fill the gap
        return SubmitStatus.ACCEPTED

    def park(self, tx: Tx) -> None:
        """Hold back a pending transaction whose nonce is ahead of its sender's next one: it is
        no candidate until another transaction of that sender arrives or commits (which may
        fill the gap), so a leader does not try it again for every block."""
        if tx.tx_id in self._pending:
            self._parked.setdefault(tx.sender, set()).add(tx.tx_id)
            self._parked_ids.add(tx.tx_id)

    def _release(self, sender: bytes) -> None:
        ids = self._parked.pop(sender, None)
        if ids:
            self._parked_ids -= ids

    def candidates(self, exclude: set[bytes], limit: int) -> list[Tx]:
        """Oldest first, then stably ordered by nonce so each sender's run is in nonce order."""
        out: list[Tx] = []
        parked = self._parked_ids
        for tx_id, p in self._pending.items():
            if tx_id not in exclude and tx_id not in parked:
                out.append(p.tx)
                if len(out) >= limit:
                    break
        out.sort(key=lambda tx: tx.nonce)
        return out

    def committed(self, txs: Iterable[Tx], height: int) -> None:
        status = TxStatus(TxState.COMMITTED, height)
        pop = self._pending.pop
        done = self._done
        # ``remember`` inlined, evicting once at the end: either way the most recently
        # remembered ``capacity`` ids stay, in the same order.
        unsent, sent = self._unsent, self._sent
        parked = self._parked
        drained = 0
        for tx in txs:
            tx_id = tx.tx_id
            if parked and tx.sender in parked:
                self._release(tx.sender)  # its nonce moved on: the parked ones may be next
            if pop(tx_id, None) is not None:
                unsent.pop(tx_id, None)
                sent.pop(tx_id, None)
                drained += 1
            if tx_id in done:
                done.move_to_end(tx_id)
            done[tx_id] = status
        self.drained += drained
        for _ in range(len(done) - done.capacity):
            done.popitem(last=False)

    def reject(self, tx_id: bytes, code: str) -> None:
        self._forget(tx_id)
        self._done.remember(tx_id, TxStatus(TxState.REJECTED, code=code))

    def _forget(self, tx_id: bytes) -> None:
        p = self._pending.get(tx_id)
        if p is not None and tx_id in self._parked_ids:
            self._parked_ids.discard(tx_id)
            ids = self._parked.get(p.tx.sender)
            if ids is not None:
                ids.discard(tx_id)
                if not ids:
                    del self._parked[p.tx.sender]
        self._pending.pop(tx_id, None)
        self._unsent.pop(tx_id, None)
        self._sent.pop(tx_id, None)

    def waiting(self) -> int:
        """Pending transactions that could go into a block (not held back by a nonce gap)."""
        return len(self._pending) - len(self._parked_ids)

    def oldest_wait_ms(self, now_ms: int) -> int:
        """How long the oldest pending transaction that could go into a block has waited (0 if
        none; one held back by a nonce gap waits for its sender, not for the network)."""
        parked = self._parked_ids
        for tx_id, p in self._pending.items():
            if tx_id not in parked:
                return max(0, now_ms - p.added_ms)
        return 0

    def expire(self, now_ms: int, ttl_ms: int) -> list[bytes]:
        gone = []
        for tx_id, p in self._pending.items():
            if now_ms - p.added_ms < ttl_ms:
                break  # arrival order is time order: the rest are younger
            gone.append(tx_id)
        for tx_id in gone:
            self._forget(tx_id)
            self._done.remember(tx_id, TxStatus(TxState.EXPIRED))
        return gone

    def due_for_forward(self, now_ms: int, retry_ms: int) -> list[Tx]:
        """Transactions never forwarded, or forwarded ``retry_ms`` ago and still pending; marks them."""
        pending, sent = self._pending, self._sent
        due = list(self._unsent)
        self._unsent = {}
        for tx_id, at in sent.items():
            if now_ms - at < retry_ms:
                break  # forwarding order is time order
            due.append(tx_id)
        for tx_id in due:
            sent.pop(tx_id, None)
            sent[tx_id] = now_ms
        return [pending[tx_id].tx for tx_id in due]

    def forward_again(self) -> None:
        """A new leader: everything pending is to be forwarded to it."""
        self._unsent.update(dict.fromkeys(self._sent))
        self._sent = {}
