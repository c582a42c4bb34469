"""State commitment: roots, incremental updates, proofs of presence and absence, tampering."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_chain import Chain, new_id
from test_ledger_records import PATIENT, record, registered

from emrp2p.codec import decode, encode
from emrp2p.crypto import Identity
from emrp2p.ledger import merkle
from emrp2p.ledger.merkle import EMPTY_ROOT, ProofEntry, StateProof, prove, raw_key, verify_proof
from emrp2p.ledger.state import AuditEntry, MemoryKV, Overlay, audit_key, consent_key, get_consent
from emrp2p.ledger.types import AccessEvent, GrantConsent

keys = st.binary(min_size=1, max_size=40)
values = st.binary(min_size=0, max_size=40)
states = st.dictionaries(keys, values, max_size=40)


def build(entries: dict[bytes, bytes]) -> tuple[MemoryKV, bytes]:
    kv = MemoryKV()
    writes: dict[bytes, bytes | None] = {raw_key(k): v for k, v in entries.items()}
    root = merkle.commit(kv, writes)
    kv.apply(writes)
    return kv, root


def test_the_empty_state_has_the_fixed_empty_root() -> None:
    assert merkle.state_root(MemoryKV()) == EMPTY_ROOT
    assert merkle.commit(MemoryKV(), {}) == EMPTY_ROOT


@settings(max_examples=60, deadline=None)
@given(states, states)
def test_the_root_depends_only_on_the_final_contents(
    first: dict[bytes, bytes], second: dict[bytes, bytes]
) -> None:
    """Reaching a state in two steps (with deletions) gives the root of building it in one."""
    kv, _ = build(first)
    writes: dict[bytes, bytes | None] = {raw_key(k): None for k in first if k not in second}
    writes.update({raw_key(k): v for k, v in second.items()})
    root = merkle.commit(kv, writes)
    kv.apply(writes)
    _, direct = build(second)
    assert root == direct == merkle.state_root(kv)
    if not second:
        assert root == EMPTY_ROOT
        assert not any(k.startswith(b"m") for k in kv.data), "default nodes must not linger"


@settings(max_examples=60, deadline=None)
@given(states.filter(bool), keys, st.data())
def test_proofs_show_presence_and_absence(
    entries: dict[bytes, bytes], absent: bytes, data: st.DataObject
) -> None:
    kv, root = build(entries)
    key = data.draw(st.sampled_from(sorted(entries)))
    proof = prove(kv, key)
    assert verify_proof(root, key, entries[key], proof)
    assert not verify_proof(root, key, entries[key] + b"x", proof)
    assert not verify_proof(root, key, None, proof)
    if absent not in entries:
        p2 = prove(kv, absent)
        assert verify_proof(root, absent, None, p2)
        assert not verify_proof(root, absent, b"", p2)
    assert decode(StateProof, encode(proof)) == proof


def test_tampered_proofs_fail() -> None:
    kv, root = build({b"k%d" % i: b"v%d" % i for i in range(300)})
    key = b"k7"
    proof = prove(kv, key)
    assert verify_proof(root, key, b"v7", proof)
    for level in range(merkle.LEVELS):
        for offset in (0, 511):  # a sibling hash, and (for some levels) our own slot
            nodes = [bytearray(n) for n in proof.nodes]
            nodes[level][offset] ^= 1
            forged = dataclasses.replace(proof, nodes=tuple(bytes(n) for n in nodes))
            assert not verify_proof(root, key, b"v7", forged)
    assert not verify_proof(root, key, b"v7", dataclasses.replace(proof, nodes=proof.nodes[:-1]))
    assert not verify_proof(
        root, key, b"v7", dataclasses.replace(proof, bucket=(proof.bucket + 1) % merkle.BUCKETS)
    )
    assert not verify_proof(os.urandom(32), key, b"v7", proof)
    # Hiding the key by dropping its entry must not prove absence.
    without = tuple(e for e in proof.entries if e.key != key)
    assert not verify_proof(root, key, None, dataclasses.replace(proof, entries=without))
    # Entries out of order, duplicated, or from another bucket are refused.
    doubled = (*proof.entries, proof.entries[-1])
    assert not verify_proof(root, key, b"v7", dataclasses.replace(proof, entries=doubled))
    stranger = next(k for k in (b"x%d" % i for i in range(10**6)) if merkle.bucket_of(k) != proof.bucket)
    extra = tuple(sorted((*proof.entries, ProofEntry(stranger, b"")), key=lambda e: e.key))
    assert not verify_proof(root, key, b"v7", dataclasses.replace(proof, entries=extra))


def test_a_consent_and_an_audit_entry_are_provable_against_the_block_root(
    chain: Chain, hospitals: list[Identity]
) -> None:
    registered(chain)
    r = record()
    chain.accept(hospitals[0], r)
    c = GrantConsent(new_id(), PATIENT.public, hospitals[1].public, "treatment", 2 * 10**12)
    chain.accept(PATIENT, c)
    root = chain.block([chain.sign(hospitals[1], AccessEvent(r.record_id, "treatment", c.consent_id, None))])
    consent_bytes = chain.kv.get(raw_key(consent_key(c.consent_id)))
    assert (
        consent_bytes is not None
        and decode(type(get_consent(chain.kv, c.consent_id)), consent_bytes).consent == c
    )
    assert verify_proof(
        root, consent_key(c.consent_id), consent_bytes, prove(chain.kv, consent_key(c.consent_id))
    )
    akey = audit_key(r.record_id, 0)
    audit_bytes = chain.kv.get(raw_key(akey))
    assert audit_bytes is not None and decode(AuditEntry, audit_bytes).reader == hospitals[1].public
    assert verify_proof(root, akey, audit_bytes, prove(chain.kv, akey))
    assert verify_proof(root, audit_key(r.record_id, 1), None, prove(chain.kv, audit_key(r.record_id, 1)))


def test_overlay_items_merge_pending_writes_in_key_order() -> None:
    base = MemoryKV({b"a1": b"x", b"a3": b"x", b"a5": b"x", b"b1": b"x"})
    writes: dict[bytes, bytes | None] = {
        b"a2": b"new",
        b"a3": None,
        b"a5": b"changed",
        b"a9": b"end",
        b"0": b"z",
    }
    ov = Overlay(base, writes)
    assert list(ov.items(b"a")) == [(b"a1", b"x"), (b"a2", b"new"), (b"a5", b"changed"), (b"a9", b"end")]
    assert ov.get(b"a3") is None and ov.get(b"a1") == b"x" and ov.get(b"a5") == b"changed"
    writes[b"a4"] = b"later"
    assert [k for k, _ in ov.items(b"a")] == [b"a1", b"a2", b"a4", b"a5", b"a9"]
    assert list(Overlay(ov, {b"a1": None}).items(b"a"))[0] == (b"a2", b"new")


@settings(max_examples=80, deadline=None)
@given(states, st.dictionaries(keys, st.none() | values, max_size=30), keys.map(lambda k: k[:1]))
def test_overlay_reads_equal_applying_the_writes(
    base: dict[bytes, bytes], writes: dict[bytes, bytes | None], prefix: bytes
) -> None:
    applied = MemoryKV(base)
    applied.apply(writes)
    ov = Overlay(MemoryKV(base), writes)
    assert list(ov.items(prefix)) == list(applied.items(prefix))
    assert list(ov.items(b"")) == sorted(applied.data.items())
    for k in list(base) + list(writes):
        assert ov.get(k) == applied.get(k)


@settings(max_examples=40, deadline=None)
@given(states, st.dictionaries(keys, st.none() | values, max_size=30), st.lists(keys, max_size=8))
def test_every_kv_reads_in_batches_what_it_reads_one_by_one(
    base: dict[bytes, bytes], writes: dict[bytes, bytes | None], probes: list[bytes]
) -> None:
    """``get_many`` / ``items_many`` (the state commitment's batched reads) agree with
    ``get`` / ``items`` on every KV: in memory, in LMDB (a snapshot, a store's state with and
    without a pinned read) and an overlay of pending writes; the roots over them agree too."""
    import tempfile

    from emrp2p.ledger.types import Genesis
    from emrp2p.store.api import StateDelta
    from emrp2p.store.lmdb_store import LmdbStore

    probes += [raw_key(p) for p in probes] + list(base)[:3]
    prefixes = [k[:1] for k in probes] + probes + [b"", b"\xff\xff"]
    first = {raw_key(k): v for k, v in writes.items()}  # a block not committed yet
    second = {raw_key(p): b"x" for p in probes}  # the next, executed on top of it
    applied = MemoryKV(base)
    pending = dict(first)
    merkle.commit(applied, pending)
    applied.apply(pending)
    expected = merkle.commit(applied, dict(second))

    def check(kv: Any, overlay: bool = False) -> None:
        assert kv.get_many(probes) == [kv.get(k) for k in probes]
        assert kv.items_many(prefixes) == [list(kv.items(p)) for p in prefixes]
        if overlay:
            assert kv.items_many(prefixes) == applied.items_many(prefixes)
            assert merkle.commit(kv, dict(second)) == expected

    with tempfile.TemporaryDirectory() as d, LmdbStore(d) as store:
        # As the genesis state: the store holds ``b"m"`` keys (the tree's nodes) in memory too.
        store.init_genesis(
            Genesis("kv-test", 0, ()), StateDelta(dict(base), merkle.state_root(MemoryKV(base)))
        )
        check(MemoryKV(base))
        check(Overlay(MemoryKV(base), pending), overlay=True)
        check(store.state)
        with store.snapshot() as snap:
            check(snap)
        with store.pinned():
            check(store.state)
            check(Overlay(store.state, pending), overlay=True)


def test_memory_kv_keeps_prefix_scans_sorted_across_small_applies() -> None:
    kv = MemoryKV({b"k%03d" % i: b"v" for i in range(0, 200, 2)})
    assert len(list(kv.items(b"k"))) == 100
    kv.apply({b"k001": b"new", b"k000": None, b"k199": b"new", b"k100": b"changed", b"k777": None})
    assert list(kv.items(b"k")) == sorted(kv.data.items())
    assert len(kv) == 101 and kv.get(b"k000") is None and kv.get(b"k100") == b"changed"
