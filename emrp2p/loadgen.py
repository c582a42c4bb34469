"""Signed transaction load, submitted through a node's JSON-RPC socket as an app would.

Used by ``make devnet``, the end-to-end tests and ``bench/cluster.py``. Load
transactions are ``Noop`` payloads (an opaque tag, never PHI) from a set of
client identities, each with its own nonce sequence.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from emrp2p.crypto import Identity
from emrp2p.ledger.types import Noop, Tx, sign_tx
from emrp2p.rpc.client import SyncRpcClient

__all__ = ["TxFactory", "Submitter", "SubmitStats", "offer", "back_off", "MIN_PAUSE", "MAX_PAUSE"]

MIN_PAUSE = 0.02
"""The pause after a call that met ``busy`` answers (seconds); it doubles while calls keep
meeting them, up to ``MAX_PAUSE``."""
MAX_PAUSE = 0.32


class TxFactory:
    """Round-robin over ``senders`` client identities, each nonce used exactly once."""

    def __init__(self, chain_id: bytes, senders: int = 64, *, prefix: str = "load") -> None:
        self.chain_id = chain_id
        self.identities = [Identity.from_test_name(f"{prefix}-{i}") for i in range(senders)]
        self.nonces = [0] * senders
        self._next = 0

    def make(self, n: int) -> list[Tx]:
        out = []
        for _ in range(n):
            i = self._next
            self._next = (i + 1) % len(self.identities)
            nonce = self.nonces[i]
            self.nonces[i] = nonce + 1
            out.append(sign_tx(self.identities[i], self.chain_id, nonce, Noop(nonce.to_bytes(8, "big"))))
        return out


@dataclass
class SubmitStats:
    accepted: int = 0
    duplicate: int = 0
    busy: int = 0
    invalid: int = 0

    def add(self, results: list[dict[str, Any]]) -> None:
        for r in results:
            status = r["status"]
            if status == "accepted":
                self.accepted += 1
            elif status == "duplicate":
                self.duplicate += 1
            elif status == "busy":
                self.busy += 1
            else:
                self.invalid += 1


def back_off(pause: float) -> float:
    """An app told busy slows down: sleep ``pause``, return the next one (doubled, at most
    ``MAX_PAUSE``; back to ``MIN_PAUSE`` is the caller's after a call with no busy answer)."""
    time.sleep(pause)
    return min(2 * pause, MAX_PAUSE)


def offer(
    client: SyncRpcClient, txs: Sequence[str], *, busy_for: float, stats: SubmitStats | None = None
) -> list[dict[str, Any]]:
    """``tx.submit_many`` of ``txs`` (hex), as a well-behaved app calls it: what the node
    answers busy is offered again, in order, after :func:`back_off`'s pause, until taken or
    ``busy_for`` seconds are up. One result per transaction, in order; those still busy then
    keep that answer (``stats`` counts every answer, busy ones each time)."""
    results: list[dict[str, Any]] = [{}] * len(txs)
    todo = list(range(len(txs)))
    deadline = time.monotonic() + busy_for
    pause = MIN_PAUSE
    while True:
        answers: list[dict[str, Any]] = client.call("tx.submit_many", {"txs": [txs[i] for i in todo]})
        if stats is not None:
            stats.add(answers)
        for i, r in zip(todo, answers, strict=True):
            results[i] = r
        todo = [i for i, r in zip(todo, answers, strict=True) if r["status"] == "busy"]
        if not todo or time.monotonic() + pause > deadline:
            return results
        pause = back_off(pause)


class Submitter:
    """Submits batches over one persistent RPC connection with :func:`offer`."""

    def __init__(self, socket_path: str, timeout: float = 30.0) -> None:
        self.client = SyncRpcClient(socket_path, timeout=timeout)
        self.stats = SubmitStats()

    def submit(self, txs: list[Tx], *, busy_for: float = 60.0) -> list[dict[str, Any]]:
        """One result per transaction, in order (see :func:`offer`)."""
        return offer(self.client, [tx.encoded.hex() for tx in txs], busy_for=busy_for, stats=self.stats)

    def close(self) -> None:
        self.client.close()
