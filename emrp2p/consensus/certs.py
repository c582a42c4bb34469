"""Checking a certificate: a strict majority of the validators in force at its height, each
with a valid vote signature, for exactly the block it names (and cast in that block's term)."""

from __future__ import annotations

import itertools

from emrp2p.crypto import verify
from emrp2p.ledger.types import Certificate, vote_signing_bytes

__all__ = ["certificate_ok", "quorum"]


def quorum(validators: tuple[bytes, ...]) -> int:
    """Votes needed for a certificate: a strict majority."""
    return len(validators) // 2 + 1


def certificate_ok(
    cert: Certificate, chain_id: bytes, validators: tuple[bytes, ...], block_hash: bytes, block_term: int
) -> bool:
    if cert.block_hash != block_hash or cert.term != block_term:
        return False
    signers = [s.signer for s in cert.signatures]
    if any(a >= b for a, b in itertools.pairwise(signers)):
        return False  # unsorted or duplicated signers
    allowed = set(validators)
    if len(signers) < quorum(validators) or any(s not in allowed for s in signers):
        return False
    message = vote_signing_bytes(chain_id, cert.term, cert.height, cert.block_hash)
    return all(verify(s.signer, message, s.signature) for s in cert.signatures)
