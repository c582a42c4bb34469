"""Replay: rebuilding the state from the blocks' transactions alone gives the same roots, byte for byte."""

from __future__ import annotations

import os
import random

from ledger_chain import Chain, new_id
from test_ledger_records import GUARDIAN, PATIENT

from emrp2p.codec import decode, encode
from emrp2p.crypto import Identity
from emrp2p.ledger.execute import Ledger
from emrp2p.ledger.state import MemoryKV
from emrp2p.ledger.types import (
    AccessEvent,
    Action,
    ApproveMembership,
    BreakGlass,
    EraseRecord,
    Genesis,
    GrantConsent,
    KeyGrant,
    Noop,
    ProposeMembership,
    RegisterPatient,
    RegisterRecord,
    RevokeConsent,
    Role,
    Tx,
)


def busy_history(chain: Chain, hospitals: list[Identity], seed: int) -> None:
    """A few dozen blocks of every kind of transaction, with leader-dropped invalid ones mixed in."""
    rng = random.Random(seed)
    chain.block([chain.sign(PATIENT, RegisterPatient((GUARDIAN.public,)))])
    records: list[bytes] = []
    authors: dict[bytes, Identity] = {}
    consents: list[tuple[bytes, bytes]] = []
    newcomer = Identity.from_test_name(f"newcomer-{seed}")
    proposal = ProposeMembership(new_id(), Action.ADD, newcomer.public, "Newcomer", Role.OBSERVER, 8)
    chain.block([chain.sign(hospitals[0], proposal)])
    chain.block([chain.sign(hospitals[1], ApproveMembership(proposal.proposal_id))])
    for _ in range(25):
        h = hospitals[rng.randrange(4)]
        nonce = chain.nonces.get(h.public, 0)
        candidates: list[Tx] = []
        rid = new_id()
        candidates.append(
            chain.sign(
                h, RegisterRecord(rid, PATIENT.public, "Observation", os.urandom(32), 2, (), None), nonce
            )
        )
        if records:
            target = rng.choice(records)
            cid = new_id()
            grantee = hospitals[rng.randrange(4)]
            pn = chain.nonces.get(PATIENT.public, 0)
            candidates.append(
                chain.sign(PATIENT, GrantConsent(cid, PATIENT.public, grantee.public, "care", 2 * 10**12), pn)
            )
            consents.append((cid, grantee.public))
            bg = BreakGlass(new_id(), PATIENT.public, "er", None)
            candidates.append(chain.sign(h, bg, nonce + 1))
            author = authors[target]
            an = chain.nonces.get(author.public, 0) + (2 if author is h else 0)
            kg = KeyGrant(target, h.public, os.urandom(32), None, bg.breakglass_id)
            candidates.append(chain.sign(author, kg, an))
            access = AccessEvent(target, "care", None, bg.breakglass_id)
            candidates.append(chain.sign(h, access, nonce + (3 if author is h else 2)))
            if rng.random() < 0.3:
                candidates.append(
                    chain.sign(GUARDIAN, EraseRecord(target), chain.nonces.get(GUARDIAN.public, 0))
                )
            if rng.random() < 0.3 and consents:
                cid2, _ = rng.choice(consents)
                candidates.append(chain.sign(PATIENT, RevokeConsent(cid2), pn + 1))
        candidates.append(chain.sign(Identity.from_test_name(f"probe{rng.random()}"), Noop(b"x"), 0))
        if rng.random() < 0.3:
            rng.shuffle(candidates)
        included, _, _ = chain.ledger.select(chain.kv, chain.next_ctx(), candidates)
        chain.block(included)
        if any(isinstance(tx.payload, RegisterRecord) for tx in included):
            records.append(rid)
            authors[rid] = h
    kinds = {type(tx.payload) for _, txs in chain.blocks for tx in txs}
    assert {EraseRecord, KeyGrant, AccessEvent, BreakGlass, GrantConsent, RegisterRecord, Noop} <= kinds, (
        sorted(k.__name__ for k in kinds)
    )


def test_replay_from_the_blocks_alone_reproduces_every_root(chain: Chain, hospitals: list[Identity]) -> None:
    busy_history(chain, hospitals, seed=1)
    fresh = Ledger(chain.genesis)
    kv = MemoryKV()
    genesis = fresh.genesis_state()
    kv.apply(genesis.writes)
    roots = [genesis.root]
    for ctx, txs in chain.blocks:
        wire_txs = [decode(Tx, encode(tx)) for tx in txs]
        delta = fresh.execute(kv, ctx, wire_txs)
        kv.apply(delta.writes)
        roots.append(delta.root)
    assert roots == chain.roots
    assert kv.data == chain.kv.data
    assert newcomer_added(fresh, kv, chain)


def newcomer_added(ledger: Ledger, kv: MemoryKV, chain: Chain) -> bool:
    return ledger.members(kv)[-1].node == Identity.from_test_name("newcomer-1").public and chain.height >= 8


def test_histories_that_differ_give_different_roots(genesis: Genesis) -> None:
    a, b = Chain(genesis), Chain(genesis)
    a.accept(PATIENT, Noop(b"a"))
    b.accept(PATIENT, Noop(b"b"))
    assert a.roots[-1] == b.roots[-1], "a Noop's tag is not state"
    a.accept(PATIENT, RegisterPatient())
    b.accept(GUARDIAN, RegisterPatient())
    assert a.roots[-1] != b.roots[-1]
