"""Ledger types: transactions and their payloads, blocks, votes, certificates, genesis.

Every type has one canonical CBOR encoding (``emrp2p.codec``). Signatures are
always over domain-separated bytes that include the chain id (the genesis
hash), so nothing signed for one network or one purpose is valid elsewhere.

No field anywhere may hold personal health information: patients appear only
as public keys (pseudonyms), records only as random ids and hashes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated

from emrp2p.codec import Limits, WireBase, encode, wire
from emrp2p.crypto import Identity, sha256, verify

Key = Annotated[bytes, Limits(exact_len=32)]
"""An Ed25519 public key (a node, a patient, a delegate)."""
Hash = Annotated[bytes, Limits(exact_len=32)]
Sig = Annotated[bytes, Limits(exact_len=64)]
Id16 = Annotated[bytes, Limits(exact_len=16)]
"""A random 16-byte identifier (record, consent, proposal, break-glass)."""
NonNeg = Annotated[int, Limits(min_value=0)]
Code = Annotated[str, Limits(max_len=64)]
"""A short machine code (purpose of use, reason, FHIR resource type): never free text."""
Name = Annotated[str, Limits(max_len=256)]

TX_DOMAIN = b"emrp2p/tx/v1\x00"
VOTE_DOMAIN = b"emrp2p/vote/v1\x00"
BLOCK_DOMAIN = b"emrp2p/block/v1\x00"


class Role(enum.IntEnum):
    VALIDATOR = 1
    OBSERVER = 2


class Action(enum.IntEnum):
    ADD = 1
    REMOVE = 2


# --------------------------------------------------------------------------- payloads


class Payload(WireBase):
    """Base of every transaction payload (one built-in contract call each)."""


@wire(100)
@dataclass(frozen=True)
class ProposeMembership(Payload):
    """A validator proposes adding or removing a hospital node, effective at a later height."""

    proposal_id: Id16
    action: Action
    node: Key
    name: Name
    role: Role
    effective_height: NonNeg


@wire(101)
@dataclass(frozen=True)
class ApproveMembership(Payload):
    proposal_id: Id16


@wire(110)
@dataclass(frozen=True)
class RegisterPatient(Payload):
    """Signed by the patient's own key; the key is the patient's only identifier on the ledger."""

    delegates: tuple[bytes, ...] = field(default=(), metadata={"limits": Limits(exact_len=32, max_len=8)})


@wire(111)
@dataclass(frozen=True)
class SetDelegate(Payload):
    """Signed by the patient: add or remove a delegate (guardian) key."""

    delegate: Key
    active: bool = True


@wire(120)
@dataclass(frozen=True)
class RegisterRecord(Payload):
    """Signed by the author hospital. ``previous`` links a new version to the one it supersedes."""

    record_id: Id16
    patient: Key
    resource_type: Code
    manifest_hash: Hash
    size_class: NonNeg
    replicas: tuple[bytes, ...] = field(default=(), metadata={"limits": Limits(exact_len=32, max_len=16)})
    previous: bytes | None = field(default=None, metadata={"limits": Limits(exact_len=16)})


@wire(130)
@dataclass(frozen=True)
class GrantConsent(Payload):
    """Signed by the patient or a delegate. Empty scopes mean 'all' for that dimension."""

    consent_id: Id16
    patient: Key
    grantee: Key
    purpose: Code
    expires_at: NonNeg
    resource_types: tuple[str, ...] = field(default=(), metadata={"limits": Limits(max_len=64)})
    record_ids: tuple[bytes, ...] = field(default=(), metadata={"limits": Limits(exact_len=16, max_len=256)})


@wire(131)
@dataclass(frozen=True)
class RevokeConsent(Payload):
    consent_id: Id16


@wire(140)
@dataclass(frozen=True)
class KeyGrant(Payload):
    """A hospital that holds a record's data key records that it wrapped it for ``grantee``.

    Only the hash of the wrapped key goes on the ledger; the wrapped key travels
    point to point, so erasure can really erase.
    """

    record_id: Id16
    grantee: Key
    wrapped_key_hash: Hash
    consent_id: bytes | None = field(default=None, metadata={"limits": Limits(exact_len=16)})
    breakglass_id: bytes | None = field(default=None, metadata={"limits": Limits(exact_len=16)})


@wire(150)
@dataclass(frozen=True)
class BreakGlass(Payload):
    """Emergency access by the sending hospital, without consent; always flagged."""

    breakglass_id: Id16
    patient: Key
    reason_code: Code
    record_id: bytes | None = field(default=None, metadata={"limits": Limits(exact_len=16)})


@wire(160)
@dataclass(frozen=True)
class AccessEvent(Payload):
    """Audit entry: the sending hospital read ``record_id`` for ``purpose``."""

    record_id: Id16
    purpose: Code
    consent_id: bytes | None = field(default=None, metadata={"limits": Limits(exact_len=16)})
    breakglass_id: bytes | None = field(default=None, metadata={"limits": Limits(exact_len=16)})


@wire(170)
@dataclass(frozen=True)
class EraseRecord(Payload):
    """Signed by the patient or a delegate: the record's chunks and wrapped keys are to be deleted."""

    record_id: Id16


@wire(180)
@dataclass(frozen=True)
class Noop(Payload):
    """Carries an opaque tag (≤ 64 bytes): for load tests and liveness probes. Never PHI."""

    tag: bytes = field(default=b"", metadata={"limits": Limits(max_len=64)})


# --------------------------------------------------------------------------- transactions


@wire(1)
@dataclass(frozen=True)
class UnsignedTx:
    sender: Key
    nonce: NonNeg
    payload: Payload


@wire(2)
@dataclass(frozen=True)
class Tx:
    """A signed transaction. ``nonce`` must be exactly the sender's next nonce (starting at 0)."""

    sender: Key
    nonce: NonNeg
    payload: Payload
    signature: Sig

    def signing_bytes(self, chain_id: bytes) -> bytes:
        return TX_DOMAIN + chain_id + encode(UnsignedTx(self.sender, self.nonce, self.payload))

    @cached_property
    def encoded(self) -> bytes:
        return encode(self)

    @cached_property
    def tx_id(self) -> bytes:
        return sha256(self.encoded)

    def signature_ok(self, chain_id: bytes) -> bool:
        return verify(self.sender, self.signing_bytes(chain_id), self.signature)


def sign_tx(identity: Identity, chain_id: bytes, nonce: int, payload: Payload) -> Tx:
    unsigned = UnsignedTx(identity.public, nonce, payload)
    sig = identity.sign(TX_DOMAIN + chain_id + encode(unsigned))
    return Tx(identity.public, nonce, payload, sig)


# --------------------------------------------------------------------------- votes and certificates


@wire(20)
@dataclass(frozen=True)
class Vote:
    """A validator's signed vote for ``block_hash`` at ``height``, cast in ``term``."""

    term: NonNeg
    height: NonNeg
    block_hash: Hash
    voter: Key
    signature: Sig

    def signing_bytes(self, chain_id: bytes) -> bytes:
        return vote_signing_bytes(chain_id, self.term, self.height, self.block_hash)

    def signature_ok(self, chain_id: bytes) -> bool:
        return verify(self.voter, self.signing_bytes(chain_id), self.signature)


def vote_signing_bytes(chain_id: bytes, term: int, height: int, block_hash: bytes) -> bytes:
    return VOTE_DOMAIN + chain_id + encode(VoteBody(term, height, block_hash))


@wire(21)
@dataclass(frozen=True)
class VoteBody:
    term: NonNeg
    height: NonNeg
    block_hash: Hash


def sign_vote(identity: Identity, chain_id: bytes, term: int, height: int, block_hash: bytes) -> Vote:
    sig = identity.sign(vote_signing_bytes(chain_id, term, height, block_hash))
    return Vote(term, height, block_hash, identity.public, sig)


@wire(22)
@dataclass(frozen=True)
class Signature:
    signer: Key
    signature: Sig


@wire(23)
@dataclass(frozen=True)
class Certificate:
    """Votes of a majority of the validators (as of ``height``) for one block, all cast in ``term``.

    A certificate commits its block and, through the hash chain, every ancestor.
    Signers are sorted by key so the encoding is unique.
    """

    term: NonNeg
    height: NonNeg
    block_hash: Hash
    signatures: tuple[Signature, ...] = field(default=(), metadata={"limits": Limits(max_len=1024)})

    def votes(self) -> list[Vote]:
        return [Vote(self.term, self.height, self.block_hash, s.signer, s.signature) for s in self.signatures]


def make_certificate(votes: list[Vote]) -> Certificate:
    first = votes[0]
    sigs = sorted({v.voter: Signature(v.voter, v.signature) for v in votes}.values(), key=lambda s: s.signer)
    return Certificate(first.term, first.height, first.block_hash, tuple(sigs))


# --------------------------------------------------------------------------- blocks


@wire(30)
@dataclass(frozen=True)
class BlockHeader:
    """Everything a block commits to. ``parent_cert`` certifies the parent when the
    proposer has it (always, except after a term change carried forward blocks
    that were accepted but never certified: a later certificate commits them)."""

    chain_id: Hash
    height: NonNeg
    term: NonNeg
    parent: Hash
    proposer: Key
    timestamp_ms: NonNeg
    tx_root: Hash
    state_root: Hash
    tx_count: NonNeg
    parent_cert: Certificate | None = None

    @cached_property
    def block_hash(self) -> bytes:
        return sha256(encode(self))


@wire(31)
@dataclass(frozen=True)
class Block:
    header: BlockHeader
    txs: tuple[Tx, ...] = field(metadata={"limits": Limits(max_len=100_000)})
    signature: Sig

    @cached_property
    def encoded(self) -> bytes:
        """Made once from the transactions' own encodings, then shared by the proposal that
        carries the block and the store's writes of it (accepted, then committed)."""
        return encode(self)

    @property
    def block_hash(self) -> bytes:
        return self.header.block_hash

    @property
    def height(self) -> int:
        return self.header.height

    @property
    def term(self) -> int:
        return self.header.term

    def signature_ok(self) -> bool:
        return verify(self.header.proposer, BLOCK_DOMAIN + self.header.block_hash, self.signature)


def sign_block(identity: Identity, header: BlockHeader, txs: tuple[Tx, ...]) -> Block:
    return Block(header, txs, identity.sign(BLOCK_DOMAIN + header.block_hash))


def merkle_root(leaves: list[bytes]) -> bytes:
    """Binary Merkle root over leaf hashes (RFC 6962 style: 0x00 leaves, 0x01 nodes)."""
    if not leaves:
        return sha256(b"")
    level = [sha256(b"\x00" + leaf) for leaf in leaves]
    while len(level) > 1:
        nxt = [sha256(b"\x01" + level[i] + level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def tx_root(txs: tuple[Tx, ...] | list[Tx]) -> bytes:
    return merkle_root([tx.tx_id for tx in txs])


# --------------------------------------------------------------------------- genesis


@wire(40)
@dataclass(frozen=True)
class Member:
    """A consortium node. ``name`` is the hospital's public name (not PHI)."""

    node: Key
    name: Name
    role: Role = Role.VALIDATOR


@wire(41)
@dataclass(frozen=True)
class Genesis:
    """The network's founding document; its hash is the chain id."""

    network: Name
    timestamp_ms: NonNeg
    members: tuple[Member, ...] = field(default=(), metadata={"limits": Limits(max_len=1024)})

    @cached_property
    def chain_id(self) -> bytes:
        return sha256(encode(self))

    @property
    def validators(self) -> tuple[bytes, ...]:
        return tuple(m.node for m in self.members if m.role == Role.VALIDATOR)
