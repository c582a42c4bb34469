"""Consensus wire messages (tags 200-299) and the durable hard state.

Messages are exchanged between validators over authenticated direct streams:
the transport tells the core who sent each one (``Core.step(sender, msg)``), so
only the things that must be provable to a third party carry signatures of
their own (blocks, votes, certificates).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from emrp2p.codec import Limits, WireBase, wire
from emrp2p.ledger.types import Block, BlockHeader, Certificate, Hash, Key, NonNeg, Sig, Tx, Vote

__all__ = [
    "Message",
    "Head",
    "Propose",
    "BlockVote",
    "CommitNotice",
    "TermVote",
    "PreVote",
    "PreVoteGrant",
    "Heartbeat",
    "Status",
    "SyncRequest",
    "SyncResponse",
    "ForwardTxs",
    "ShareTxs",
    "ProposeCompact",
    "ProposalWanted",
    "HardState",
    "Evidence",
    "VoteEquivocation",
    "ProposalEquivocation",
]


class Message(WireBase):
    """Base of every consensus message: ``codec.decode(Message, data)`` accepts any of them."""


@wire(210)
@dataclass(frozen=True, order=True)
class Head:
    """The tip of a node's chain counting accepted blocks: compared by (term, height) as in Raft."""

    term: NonNeg
    height: NonNeg
    block_hash: Hash

    def rank(self) -> tuple[int, int]:
        return (self.term, self.height)


@wire(200)
@dataclass(frozen=True)
class Propose(Message):
    """The leader of ``term`` sends a block: a new one of its own term, or an older
    term's accepted block that it carries forward."""

    term: NonNeg
    block: Block


@wire(201)
@dataclass(frozen=True)
class BlockVote(Message):
    vote: Vote


@wire(202)
@dataclass(frozen=True)
class CommitNotice(Message):
    """A certificate: its block and every ancestor are committed."""

    term: NonNeg
    cert: Certificate


@wire(203)
@dataclass(frozen=True)
class TermVote(Message):
    """Sent by a validator entering ``term`` (and repeated until the leader is heard).

    It promises that the sender ignores older terms from now on; the leader of
    ``term`` counts it as a grant when ``head`` is no more up to date than its own.
    """

    term: NonNeg
    head: Head
    committed_height: NonNeg


@wire(209)
@dataclass(frozen=True)
class PreVote(Message):
    """Asked by a validator that lost its leader, before it enters ``term`` (Raft's pre-vote).

    It changes nothing at the receiver: only once a majority answered ``PreVoteGrant`` (each
    has not heard a live leader lately either) does the sender enter ``term`` and send its
    ``TermVote``. A node cut off on its own therefore never drags a healthy majority into a
    new term (and a change of leader) when it comes back.
    """

    term: NonNeg
    head: Head
    committed_height: NonNeg


@wire(211)
@dataclass(frozen=True)
class PreVoteGrant(Message):
    """The receiver of ``PreVote(term)`` has not heard a live leader lately either."""

    term: NonNeg


@wire(204)
@dataclass(frozen=True)
class Heartbeat(Message):
    """Leader liveness, its head (so followers can ask for what they miss) and its latest certificate."""

    term: NonNeg
    committed_height: NonNeg
    head: Head
    cert: Certificate | None = None


@wire(205)
@dataclass(frozen=True)
class Status(Message):
    """A node's view: reply to a heartbeat whose head differs, or to a message from an older term."""

    term: NonNeg
    committed_height: NonNeg
    head: Head


@wire(206)
@dataclass(frozen=True)
class SyncRequest(Message):
    """Ask for committed blocks from ``from_height`` on (at most ``max_blocks``)."""

    from_height: int = field(default=1, metadata={"limits": Limits(min_value=1)})
    max_blocks: int = field(default=256, metadata={"limits": Limits(min_value=1, max_value=4096)})


@wire(207)
@dataclass(frozen=True)
class SyncResponse(Message):
    """Consecutive committed blocks and certificates proving them; ``committed_height`` is the
    responder's, so the requester knows whether to ask for more."""

    committed_height: NonNeg
    blocks: tuple[Block, ...] = field(default=(), metadata={"limits": Limits(max_len=4096)})
    certs: tuple[Certificate, ...] = field(default=(), metadata={"limits": Limits(max_len=4096)})


@wire(208)
@dataclass(frozen=True)
class ForwardTxs(Message):
    """Pending transactions handed to the leader by the node where they were submitted."""

    txs: tuple[Tx, ...] = field(default=(), metadata={"limits": Limits(max_len=10_000)})


# -- between validators' drivers, never stepped by a core: compact proposals (emrp2p.node.compact)


@wire(212)
@dataclass(frozen=True)
class ShareTxs(Message):
    """Transactions the leader relays to the other validators as they enter its pool, ahead of
    the compact proposal that names them by id."""

    txs: tuple[Tx, ...] = field(default=(), metadata={"limits": Limits(max_len=10_000)})


@wire(213)
@dataclass(frozen=True)
class ProposeCompact(Message):
    """A ``Propose`` whose block names its transactions by id; the receiver fills them in from
    what it was shared or holds, or asks for the whole proposal (``ProposalWanted``)."""

    term: NonNeg
    header: BlockHeader
    signature: Sig
    tx_ids: tuple[Hash, ...] = field(default=(), metadata={"limits": Limits(max_len=100_000)})


@wire(214)
@dataclass(frozen=True)
class ProposalWanted(Message):
    """Send me the whole proposal of this block: a compact one named transactions I lack."""

    block_hash: Hash


@wire(220)
@dataclass(frozen=True)
class HardState:
    """What a validator must remember across restarts: its term, its leader, and its last vote.

    Within a term a validator votes for increasing heights only, so the last vote
    is enough to refuse any second, different vote for a (term, height).
    """

    term: NonNeg
    vote_term: NonNeg
    vote_height: NonNeg
    vote_hash: Hash
    leader: Key
    """The leader this node follows in ``term`` (fixed when it entered the term): a node sends
    its term vote to one candidate per term only, even when a membership change moves the
    rotation under it."""

    def may_vote(self, term: int, height: int, block_hash: bytes) -> bool:
        if term != self.vote_term:
            return term > self.vote_term
        if height == self.vote_height:
            return block_hash == self.vote_hash
        return height > self.vote_height


class Evidence(WireBase):
    """Proof that one validator signed two conflicting things."""


@wire(230)
@dataclass(frozen=True)
class VoteEquivocation(Evidence):
    first: Vote
    second: Vote

    @property
    def offender(self) -> bytes:
        return self.first.voter


@wire(231)
@dataclass(frozen=True)
class ProposalEquivocation(Evidence):
    proposer: Key
    first: BlockHeader
    first_signature: Sig
    second: BlockHeader
    second_signature: Sig

    @property
    def offender(self) -> bytes:
        return self.proposer
