"""Signed transaction load, submitted through a node's JSON-RPC socket as an app would.

Used by ``make devnet``, the end-to-end tests and ``bench/cluster.py``. Load
transactions are ``Noop`` payloads (an opaque tag, never PHI) from a set of
client identities, each with its own nonce sequence.
"""

from __future__ import annotations

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
    """Submits batches over one persistent RPC connection (``tx.submit_many``)."""

    def __init__(self, socket_path: str, timeout: float = 30.0) -> None:
        self.client = SyncRpcClient(socket_path, timeout=timeout)
        self.stats = SubmitStats()

    def submit(self, txs: list[Tx]) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = self.client.call(
            "tx.submit_many", {"txs": [tx.encoded.hex() for tx in txs]}
        )
        self.stats.add(results)
        return results

    def close(self) -> None:
        self.client.close()
