"""Remembering signed votes and proposals to catch a validator signing two things for one slot.

Only already-verified signatures are fed in, so every piece of evidence found
here is a self-contained proof anyone can check against the two signatures.
"""

from __future__ import annotations

from emrp2p.consensus.messages import Evidence, ProposalEquivocation, VoteEquivocation
from emrp2p.ledger.types import Block, BlockHeader, Vote

__all__ = ["EvidenceLog"]


class EvidenceLog:
    def __init__(self) -> None:
        self._votes: dict[tuple[bytes, int, int], Vote] = {}
        self._proposals: dict[tuple[bytes, int, int], tuple[BlockHeader, bytes]] = {}
        self.found: list[Evidence] = []

    def vote(self, vote: Vote) -> Evidence | None:
        key = (vote.voter, vote.term, vote.height)
        seen = self._votes.setdefault(key, vote)
        if seen.block_hash == vote.block_hash:
            return None
        return self._add(VoteEquivocation(seen, vote))

    def proposal(self, block: Block) -> Evidence | None:
        h = block.header
        key = (h.proposer, h.term, h.height)
        seen = self._proposals.setdefault(key, (h, block.signature))
        if seen[0].block_hash == h.block_hash:
            return None
        return self._add(ProposalEquivocation(h.proposer, seen[0], seen[1], h, block.signature))

    def _add(self, ev: Evidence) -> Evidence | None:
        if ev in self.found:
            return None
        self.found.append(ev)
        return ev

    def prune(self, below_height: int) -> None:
        """Forget slots far below the committed height (evidence already found is kept)."""
        self._votes = {k: v for k, v in self._votes.items() if k[2] >= below_height}
        self._proposals = {k: v for k, v in self._proposals.items() if k[2] >= below_height}
