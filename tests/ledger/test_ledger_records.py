"""Patients, delegates, the record index and erasure."""

from __future__ import annotations

import os

from ledger_chain import Chain, new_id

from emrp2p.crypto import Identity
from emrp2p.ledger.errors import (
    DuplicateId,
    InvalidPayload,
    NotAMember,
    NotAuthorized,
    RecordErased,
    RecordSuperseded,
    UnknownMember,
    UnknownPatient,
    UnknownRecord,
)
from emrp2p.ledger.state import get_patient, get_record
from emrp2p.ledger.types import EraseRecord, RegisterPatient, RegisterRecord, SetDelegate

PATIENT = Identity.from_test_name("patient")
GUARDIAN = Identity.from_test_name("guardian")
STRANGER = Identity.from_test_name("stranger")


def record(patient: bytes = PATIENT.public, rtype: str = "Observation", **kw: object) -> RegisterRecord:
    args: dict[str, object] = {
        "record_id": new_id(),
        "patient": patient,
        "resource_type": rtype,
        "manifest_hash": os.urandom(32),
        "size_class": 1,
    }
    args.update(kw)
    return RegisterRecord(**args)  # type: ignore[arg-type]


def registered(chain: Chain) -> Chain:
    chain.accept(PATIENT, RegisterPatient((GUARDIAN.public,)))
    return chain


# ---------------------------------------------------------------- patients


def test_a_patient_registers_with_its_own_key(chain: Chain) -> None:
    registered(chain)
    entry = get_patient(chain.kv, PATIENT.public)
    assert entry is not None and entry.delegates == (GUARDIAN.public,)


def test_a_patient_cannot_register_twice(chain: Chain) -> None:
    registered(chain)
    assert isinstance(chain.reject(PATIENT, RegisterPatient()), DuplicateId)


def test_a_patient_cannot_be_its_own_delegate(chain: Chain) -> None:
    assert isinstance(chain.reject(PATIENT, RegisterPatient((PATIENT.public,))), InvalidPayload)
    assert isinstance(
        chain.reject(PATIENT, RegisterPatient((GUARDIAN.public, GUARDIAN.public))), InvalidPayload
    )


def test_the_patient_adds_and_removes_delegates(chain: Chain) -> None:
    registered(chain)
    chain.accept(PATIENT, SetDelegate(STRANGER.public, True))
    assert get_patient(chain.kv, PATIENT.public).delegates == (GUARDIAN.public, STRANGER.public)  # type: ignore[union-attr]
    chain.accept(PATIENT, SetDelegate(GUARDIAN.public, False))
    assert get_patient(chain.kv, PATIENT.public).delegates == (STRANGER.public,)  # type: ignore[union-attr]


def test_delegate_changes_are_refused_when_they_make_no_sense(chain: Chain) -> None:
    registered(chain)
    assert isinstance(chain.reject(PATIENT, SetDelegate(GUARDIAN.public, True)), InvalidPayload)
    assert isinstance(chain.reject(PATIENT, SetDelegate(STRANGER.public, False)), InvalidPayload)
    assert isinstance(chain.reject(PATIENT, SetDelegate(PATIENT.public, True)), InvalidPayload)
    for i in range(7):
        chain.accept(PATIENT, SetDelegate(Identity.from_test_name(f"d{i}").public, True))
    assert isinstance(chain.reject(PATIENT, SetDelegate(STRANGER.public, True)), InvalidPayload)


def test_only_a_registered_patient_sets_delegates(chain: Chain) -> None:
    registered(chain)
    assert isinstance(chain.reject(GUARDIAN, SetDelegate(STRANGER.public, True)), UnknownPatient)


# ---------------------------------------------------------------- records


def test_a_member_hospital_registers_a_record(chain: Chain, hospitals: list[Identity]) -> None:
    registered(chain)
    r = record(replicas=(hospitals[1].public, hospitals[3].public))
    chain.accept(hospitals[0], r)
    entry = get_record(chain.kv, r.record_id)
    assert entry is not None
    assert (entry.author, entry.patient, entry.resource_type) == (
        hospitals[0].public,
        PATIENT.public,
        "Observation",
    )
    assert not entry.erased and entry.height == 2


def test_an_observer_hospital_may_author_records(chain: Chain, hospitals: list[Identity]) -> None:
    registered(chain)
    chain.accept(hospitals[3], record())


def test_a_non_member_cannot_register_a_record(chain: Chain) -> None:
    registered(chain)
    assert isinstance(chain.reject(STRANGER, record()), NotAMember)


def test_a_record_needs_a_registered_patient(chain: Chain, hospitals: list[Identity]) -> None:
    assert isinstance(chain.reject(hospitals[0], record()), UnknownPatient)


def test_a_record_id_is_used_once(chain: Chain, hospitals: list[Identity]) -> None:
    registered(chain)
    r = record()
    chain.accept(hospitals[0], r)
    assert isinstance(chain.reject(hospitals[1], record(record_id=r.record_id)), DuplicateId)


def test_resource_types_must_look_like_fhir_names(chain: Chain, hospitals: list[Identity]) -> None:
    registered(chain)
    for bad in ("observation", "O", "Obs ervation", "Observation1", "", "Ünicode"):
        assert isinstance(chain.reject(hospitals[0], record(rtype=bad)), InvalidPayload), bad
    chain.accept(hospitals[0], record(rtype="DiagnosticReport"))


def test_replicas_must_be_distinct_members(chain: Chain, hospitals: list[Identity]) -> None:
    registered(chain)
    assert isinstance(chain.reject(hospitals[0], record(replicas=(STRANGER.public,))), UnknownMember)
    dup = (hospitals[1].public, hospitals[1].public)
    assert isinstance(chain.reject(hospitals[0], record(replicas=dup)), InvalidPayload)


def test_versions_chain_linearly_for_the_same_patient(chain: Chain, hospitals: list[Identity]) -> None:
    registered(chain)
    v1 = record()
    chain.accept(hospitals[0], v1)
    v2 = record(previous=v1.record_id)
    chain.accept(hospitals[0], v2)
    assert get_record(chain.kv, v1.record_id).superseded_by == v2.record_id  # type: ignore[union-attr]
    assert isinstance(chain.reject(hospitals[0], record(previous=v1.record_id)), RecordSuperseded)
    assert isinstance(chain.reject(hospitals[0], record(previous=new_id())), UnknownRecord)
    chain.accept(GUARDIAN, RegisterPatient())
    other = record(patient=GUARDIAN.public, previous=v2.record_id)
    assert isinstance(chain.reject(hospitals[0], other), InvalidPayload)


def test_a_record_cannot_supersede_itself(chain: Chain, hospitals: list[Identity]) -> None:
    registered(chain)
    rid = new_id()
    assert isinstance(chain.reject(hospitals[0], record(record_id=rid, previous=rid)), InvalidPayload)


# ---------------------------------------------------------------- erasure


def test_the_patient_erases_a_record_leaving_only_hashes(chain: Chain, hospitals: list[Identity]) -> None:
    registered(chain)
    r = record(replicas=(hospitals[1].public,))
    chain.accept(hospitals[0], r)
    chain.accept(PATIENT, EraseRecord(r.record_id))
    entry = get_record(chain.kv, r.record_id)
    assert entry is not None and entry.erased
    assert entry.resource_type == "" and entry.manifest_hash == r.manifest_hash


def test_a_delegate_may_erase(chain: Chain, hospitals: list[Identity]) -> None:
    registered(chain)
    r = record()
    chain.accept(hospitals[0], r)
    chain.accept(GUARDIAN, EraseRecord(r.record_id))


def test_others_may_not_erase(chain: Chain, hospitals: list[Identity]) -> None:
    registered(chain)
    r = record()
    chain.accept(hospitals[0], r)
    assert isinstance(chain.reject(hospitals[0], EraseRecord(r.record_id)), NotAuthorized)
    assert isinstance(chain.reject(STRANGER, EraseRecord(r.record_id)), NotAuthorized)
    assert isinstance(chain.reject(PATIENT, EraseRecord(new_id())), UnknownRecord)


def test_an_erased_record_cannot_be_erased_again_or_superseded(
    chain: Chain, hospitals: list[Identity]
) -> None:
    registered(chain)
    r = record()
    chain.accept(hospitals[0], r)
    chain.accept(PATIENT, EraseRecord(r.record_id))
    assert isinstance(chain.reject(PATIENT, EraseRecord(r.record_id)), RecordErased)
    assert isinstance(chain.reject(hospitals[0], record(previous=r.record_id)), RecordErased)
