"""Signed transaction load, submitted through a node's JSON-RPC socket as an app would.

Used by ``make devnet``, the end-to-end tests and ``bench/cluster.py``. Load
transactions are ``Noop`` payloads (an opaque tag, never PHI) from a set of
client identities, each with its own nonce sequence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from emrp2p.crypto import Identity
from emrp2p.ledger.types import Noop, Tx, sign_tx
from emrp2p.rpc.client import SyncRpcClient

__all__ = ["TxFactory", "Submitter", "SubmitStats"]


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


class Submitter:
    """Submits batches over one persistent RPC connection (``tx.submit_many``), as a well-behaved
    app does: what the node answers ``busy`` is offered again, in order, after a pause that
    doubles from ``MIN_PAUSE`` to ``MAX_PAUSE`` while calls keep meeting busy answers."""

    MIN_PAUSE = 0.02
    MAX_PAUSE = 0.32

    def __init__(self, socket_path: str, timeout: float = 30.0) -> None:
        self.client = SyncRpcClient(socket_path, timeout=timeout)
        self.stats = SubmitStats()

    def submit(self, txs: list[Tx], *, busy_for: float = 60.0) -> list[dict[str, Any]]:
        """One result per transaction, in order; those still answered busy after ``busy_for``
        seconds of offering again keep that answer (``stats.busy`` counts every busy answer)."""
        results: list[dict[str, Any]] = [{}] * len(txs)
        todo = list(range(len(txs)))
        deadline = time.monotonic() + busy_for
        pause = self.MIN_PAUSE
        while True:
            answers: list[dict[str, Any]] = self.client.call(
                "tx.submit_many", {"txs": [txs[i].encoded.hex() for i in todo]}
            )
            self.stats.add(answers)
            for i, r in zip(todo, answers, strict=True):
                results[i] = r
            todo = [i for i, r in zip(todo, answers, strict=True) if r["status"] == "busy"]
            if not todo or time.monotonic() + pause > deadline:
                return results
            time.sleep(pause)
            pause = min(2 * pause, self.MAX_PAUSE)

    def close(self) -> None:
        self.client.close()
