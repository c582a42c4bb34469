"""Consent, key grants, break-glass and the audit trail."""

from __future__ import annotations

import os

import pytest
from ledger_chain import BLOCK_MS, T0, Chain, new_id
from test_ledger_records import GUARDIAN, PATIENT, STRANGER, record, registered

from emrp2p.crypto import Identity
from emrp2p.ledger.errors import (
    BreakGlassExpired,
    BreakGlassNotFound,
    ConsentDoesNotCover,
    ConsentExpired,
    ConsentNotFound,
    ConsentRevoked,
    DuplicateId,
    InvalidPayload,
    NotAMember,
    NotAuthorized,
    RecordErased,
    UnknownMember,
    UnknownPatient,
    UnknownRecord,
)
from emrp2p.ledger.state import (
    BREAKGLASS_TTL_MS,
    EventKind,
    audit_entries,
    get_breakglass,
    get_consent,
    get_key_grant,
    patient_events,
)
from emrp2p.ledger.types import (
    AccessEvent,
    BreakGlass,
    EraseRecord,
    GrantConsent,
    KeyGrant,
    RegisterPatient,
    RegisterRecord,
    RevokeConsent,
)

FAR = T0 + 10**9


@pytest.fixture
def rec(chain: Chain, hospitals: list[Identity]) -> RegisterRecord:
    """A registered patient's Observation authored by hospital 0, replicated on hospital 1."""
    registered(chain)
    r = record(replicas=(hospitals[1].public,))
    chain.accept(hospitals[0], r)
    return r


def consent(grantee: bytes, expires: int = FAR, **kw: object) -> GrantConsent:
    args: dict[str, object] = {
        "consent_id": new_id(),
        "patient": PATIENT.public,
        "grantee": grantee,
        "purpose": "treatment",
        "expires_at": expires,
    }
    args.update(kw)
    return GrantConsent(**args)  # type: ignore[arg-type]


def grant(
    record_id: bytes, grantee: bytes, consent_id: bytes | None = None, bg: bytes | None = None
) -> KeyGrant:
    return KeyGrant(record_id, grantee, os.urandom(32), consent_id, bg)


# ---------------------------------------------------------------- consent


def test_patient_grants_consent_to_a_member_hospital(
    chain: Chain, hospitals: list[Identity], rec: RegisterRecord
) -> None:
    c = consent(hospitals[2].public, record_ids=(rec.record_id,))
    chain.accept(PATIENT, c)
    entry = get_consent(chain.kv, c.consent_id)
    assert entry is not None and entry.consent == c and entry.granted_by == PATIENT.public
    assert entry.live(T0) and not entry.revoked


def test_a_delegate_may_grant_and_revoke(
    chain: Chain, hospitals: list[Identity], rec: RegisterRecord
) -> None:
    c = consent(hospitals[2].public)
    chain.accept(GUARDIAN, c)
    chain.accept(GUARDIAN, RevokeConsent(c.consent_id))
    assert get_consent(chain.kv, c.consent_id).revoked  # type: ignore[union-attr]


def test_only_the_patient_or_a_delegate_grants(
    chain: Chain, hospitals: list[Identity], rec: RegisterRecord
) -> None:
    assert isinstance(chain.reject(hospitals[0], consent(hospitals[2].public)), NotAuthorized)
    assert isinstance(chain.reject(STRANGER, consent(hospitals[2].public)), NotAuthorized)
    assert isinstance(
        chain.reject(STRANGER, consent(hospitals[2].public, patient=STRANGER.public)), UnknownPatient
    )


def test_consent_grantee_must_be_a_member(chain: Chain, rec: RegisterRecord) -> None:
    assert isinstance(chain.reject(PATIENT, consent(STRANGER.public)), UnknownMember)


def test_consent_must_not_be_born_expired(
    chain: Chain, hospitals: list[Identity], rec: RegisterRecord
) -> None:
    now = chain.next_ctx().timestamp_ms
    assert isinstance(chain.reject(PATIENT, consent(hospitals[2].public, expires=now)), ConsentExpired)
    chain.accept(PATIENT, consent(hospitals[2].public, expires=now + 1))


def test_consent_ids_are_unique(chain: Chain, hospitals: list[Identity], rec: RegisterRecord) -> None:
    c = consent(hospitals[2].public)
    chain.accept(PATIENT, c)
    assert isinstance(
        chain.reject(PATIENT, consent(hospitals[1].public, consent_id=c.consent_id)), DuplicateId
    )


def test_consent_scope_is_checked(chain: Chain, hospitals: list[Identity], rec: RegisterRecord) -> None:
    bad_types = consent(hospitals[2].public, resource_types=("observation",))
    assert isinstance(chain.reject(PATIENT, bad_types), InvalidPayload)
    assert isinstance(
        chain.reject(PATIENT, consent(hospitals[2].public, record_ids=(new_id(),))), UnknownRecord
    )
    assert isinstance(
        chain.reject(PATIENT, consent(hospitals[2].public, purpose="free text")), InvalidPayload
    )
    chain.accept(GUARDIAN, RegisterPatient())
    theirs = record(patient=GUARDIAN.public)
    chain.accept(hospitals[0], theirs)
    assert isinstance(
        chain.reject(PATIENT, consent(hospitals[2].public, record_ids=(theirs.record_id,))), NotAuthorized
    )


def test_revocation_rules(chain: Chain, hospitals: list[Identity], rec: RegisterRecord) -> None:
    assert isinstance(chain.reject(PATIENT, RevokeConsent(new_id())), ConsentNotFound)
    c = consent(hospitals[2].public)
    chain.accept(PATIENT, c)
    assert isinstance(chain.reject(hospitals[2], RevokeConsent(c.consent_id)), NotAuthorized)
    chain.accept(PATIENT, RevokeConsent(c.consent_id))
    assert isinstance(chain.reject(PATIENT, RevokeConsent(c.consent_id)), ConsentRevoked)


# ---------------------------------------------------------------- key grants


def test_the_author_grants_a_key_under_a_live_consent(
    chain: Chain, hospitals: list[Identity], rec: RegisterRecord
) -> None:
    c = consent(hospitals[2].public, record_ids=(rec.record_id,))
    chain.accept(PATIENT, c)
    g = grant(rec.record_id, hospitals[2].public, c.consent_id)
    chain.accept(hospitals[0], g)
    entry = get_key_grant(chain.kv, rec.record_id, hospitals[2].public)
    assert (
        entry is not None
        and entry.granter == hospitals[0].public
        and entry.wrapped_key_hash == g.wrapped_key_hash
    )


def test_a_replica_and_a_key_holder_may_grant_too(
    chain: Chain, hospitals: list[Identity], rec: RegisterRecord
) -> None:
    c2 = consent(hospitals[2].public)
    c3 = consent(hospitals[3].public)
    chain.accept(PATIENT, c2)
    chain.accept(PATIENT, c3)
    chain.accept(hospitals[1], grant(rec.record_id, hospitals[2].public, c2.consent_id))  # replica
    chain.accept(hospitals[2], grant(rec.record_id, hospitals[3].public, c3.consent_id))  # key holder


def test_a_hospital_without_the_key_cannot_grant(
    chain: Chain, hospitals: list[Identity], rec: RegisterRecord
) -> None:
    c = consent(hospitals[3].public)
    chain.accept(PATIENT, c)
    assert isinstance(
        chain.reject(hospitals[2], grant(rec.record_id, hospitals[3].public, c.consent_id)), NotAuthorized
    )
    assert isinstance(
        chain.reject(STRANGER, grant(rec.record_id, hospitals[3].public, c.consent_id)), NotAMember
    )


def test_key_grants_need_a_consent_that_covers_them(
    chain: Chain, hospitals: list[Identity], rec: RegisterRecord
) -> None:
    h2 = hospitals[2].public
    assert isinstance(chain.reject(hospitals[0], grant(rec.record_id, h2, new_id())), ConsentNotFound)
    assert isinstance(chain.reject(hospitals[0], grant(rec.record_id, h2)), InvalidPayload)
    assert isinstance(
        chain.reject(hospitals[0], grant(rec.record_id, h2, new_id(), new_id())), InvalidPayload
    )
    for_other = consent(hospitals[3].public)
    other_type = consent(h2, resource_types=("Condition",))
    other_record = consent(h2, record_ids=())
    chain.accept(PATIENT, for_other)
    chain.accept(PATIENT, other_type)
    for c in (for_other, other_type):
        assert isinstance(
            chain.reject(hospitals[0], grant(rec.record_id, h2, c.consent_id)), ConsentDoesNotCover
        )
    chain.accept(PATIENT, other_record)  # empty scope = everything
    chain.accept(hospitals[0], grant(rec.record_id, h2, other_record.consent_id))


def test_consent_scope_is_the_union_of_record_ids_and_types(
    chain: Chain, hospitals: list[Identity], rec: RegisterRecord
) -> None:
    c = consent(hospitals[2].public, resource_types=("Observation",), record_ids=())
    chain.accept(PATIENT, c)
    chain.accept(hospitals[0], grant(rec.record_id, hospitals[2].public, c.consent_id))
    other = record(rtype="Condition")
    chain.accept(hospitals[0], other)
    both = consent(hospitals[3].public, resource_types=("Procedure",), record_ids=(other.record_id,))
    chain.accept(PATIENT, both)
    chain.accept(hospitals[0], grant(other.record_id, hospitals[3].public, both.consent_id))
    assert isinstance(
        chain.reject(hospitals[0], grant(rec.record_id, hospitals[3].public, both.consent_id)),
        ConsentDoesNotCover,
    )


def test_expired_or_revoked_consent_grants_nothing(
    chain: Chain, hospitals: list[Identity], rec: RegisterRecord
) -> None:
    h2 = hospitals[2].public
    short = consent(h2, expires=T0 + 5 * BLOCK_MS)
    chain.accept(PATIENT, short)
    chain.empty_blocks(3)
    assert isinstance(chain.reject(hospitals[0], grant(rec.record_id, h2, short.consent_id)), ConsentExpired)
    revoked = consent(h2)
    chain.accept(PATIENT, revoked)
    chain.accept(PATIENT, RevokeConsent(revoked.consent_id))
    assert isinstance(
        chain.reject(hospitals[0], grant(rec.record_id, h2, revoked.consent_id)), ConsentRevoked
    )


def test_key_grants_for_unknown_erased_records_or_to_non_members_are_rejected(
    chain: Chain, hospitals: list[Identity], rec: RegisterRecord
) -> None:
    c = consent(hospitals[2].public)
    chain.accept(PATIENT, c)
    assert isinstance(
        chain.reject(hospitals[0], grant(new_id(), hospitals[2].public, c.consent_id)), UnknownRecord
    )
    assert isinstance(
        chain.reject(hospitals[0], grant(rec.record_id, STRANGER.public, c.consent_id)), UnknownMember
    )
    chain.accept(PATIENT, EraseRecord(rec.record_id))
    assert isinstance(
        chain.reject(hospitals[0], grant(rec.record_id, hospitals[2].public, c.consent_id)), RecordErased
    )


# ---------------------------------------------------------------- break-glass


def test_break_glass_is_stored_and_raises_a_patient_event(
    chain: Chain, hospitals: list[Identity], rec: RegisterRecord
) -> None:
    bg = BreakGlass(new_id(), PATIENT.public, "emergency.unconscious", None)
    tx = chain.accept(hospitals[2], bg)
    entry = get_breakglass(chain.kv, bg.breakglass_id)
    assert entry is not None and entry.hospital == hospitals[2].public and entry.tx_id == tx.tx_id
    events = patient_events(chain.kv, PATIENT.public)
    assert [(e.kind, e.hospital, e.breakglass_id) for e in events] == [
        (EventKind.BREAK_GLASS, hospitals[2].public, bg.breakglass_id)
    ]


def test_break_glass_rules(chain: Chain, hospitals: list[Identity], rec: RegisterRecord) -> None:
    assert isinstance(chain.reject(STRANGER, BreakGlass(new_id(), PATIENT.public, "er", None)), NotAMember)
    assert isinstance(
        chain.reject(hospitals[2], BreakGlass(new_id(), STRANGER.public, "er", None)), UnknownPatient
    )
    assert isinstance(
        chain.reject(hospitals[2], BreakGlass(new_id(), PATIENT.public, "", None)), InvalidPayload
    )
    assert isinstance(
        chain.reject(hospitals[2], BreakGlass(new_id(), PATIENT.public, "er", new_id())), UnknownRecord
    )
    bg = BreakGlass(new_id(), PATIENT.public, "er", rec.record_id)
    chain.accept(hospitals[2], bg)
    assert isinstance(
        chain.reject(hospitals[3], BreakGlass(bg.breakglass_id, PATIENT.public, "er", None)), DuplicateId
    )


def test_break_glass_authorises_a_key_grant_for_its_hospital_only(
    chain: Chain, hospitals: list[Identity], rec: RegisterRecord
) -> None:
    bg = BreakGlass(new_id(), PATIENT.public, "er", None)
    chain.accept(hospitals[2], bg)
    assert isinstance(
        chain.reject(hospitals[0], grant(rec.record_id, hospitals[3].public, None, bg.breakglass_id)),
        NotAuthorized,
    )
    assert isinstance(
        chain.reject(hospitals[0], grant(rec.record_id, hospitals[2].public, None, new_id())),
        BreakGlassNotFound,
    )
    chain.accept(hospitals[0], grant(rec.record_id, hospitals[2].public, None, bg.breakglass_id))
    kinds = [e.kind for e in patient_events(chain.kv, PATIENT.public)]
    assert kinds == [EventKind.BREAK_GLASS, EventKind.BREAK_GLASS_KEY_GRANT]


def test_break_glass_naming_a_record_covers_only_that_record(
    chain: Chain, hospitals: list[Identity], rec: RegisterRecord
) -> None:
    other = record()
    chain.accept(hospitals[0], other)
    bg = BreakGlass(new_id(), PATIENT.public, "er", other.record_id)
    chain.accept(hospitals[2], bg)
    assert isinstance(
        chain.reject(hospitals[0], grant(rec.record_id, hospitals[2].public, None, bg.breakglass_id)),
        NotAuthorized,
    )
    chain.accept(hospitals[0], grant(other.record_id, hospitals[2].public, None, bg.breakglass_id))


def test_break_glass_expires(chain: Chain, hospitals: list[Identity], rec: RegisterRecord) -> None:
    bg = BreakGlass(new_id(), PATIENT.public, "er", None)
    chain.accept(hospitals[2], bg)
    late = chain.reject(
        hospitals[0],
        grant(rec.record_id, hospitals[2].public, None, bg.breakglass_id),
        skip_ms=BREAKGLASS_TTL_MS,
    )
    assert isinstance(late, BreakGlassExpired)


# ---------------------------------------------------------------- audit


def test_a_read_under_consent_is_audited(
    chain: Chain, hospitals: list[Identity], rec: RegisterRecord
) -> None:
    c = consent(hospitals[2].public)
    chain.accept(PATIENT, c)
    tx = chain.accept(hospitals[2], AccessEvent(rec.record_id, "treatment", c.consent_id, None))
    chain.accept(hospitals[2], AccessEvent(rec.record_id, "treatment", c.consent_id, None))
    trail = audit_entries(chain.kv, rec.record_id)
    assert len(trail) == 2 and trail[0].reader == hospitals[2].public and trail[0].tx_id == tx.tx_id
    assert audit_entries(chain.kv, rec.record_id, start=1) == trail[1:]
    assert patient_events(chain.kv, PATIENT.public) == []


def test_a_read_under_break_glass_is_audited_and_told_to_the_patient(
    chain: Chain, hospitals: list[Identity], rec: RegisterRecord
) -> None:
    bg = BreakGlass(new_id(), PATIENT.public, "er", None)
    chain.accept(hospitals[2], bg)
    chain.accept(hospitals[2], AccessEvent(rec.record_id, "emergency", None, bg.breakglass_id))
    assert audit_entries(chain.kv, rec.record_id)[0].breakglass_id == bg.breakglass_id
    assert patient_events(chain.kv, PATIENT.public)[-1].kind == EventKind.BREAK_GLASS_ACCESS


def test_a_read_without_authority_is_refused(
    chain: Chain, hospitals: list[Identity], rec: RegisterRecord
) -> None:
    assert isinstance(chain.reject(hospitals[2], AccessEvent(rec.record_id, "t", None, None)), InvalidPayload)
    assert isinstance(
        chain.reject(hospitals[2], AccessEvent(rec.record_id, "t", new_id(), None)), ConsentNotFound
    )
    c = consent(hospitals[3].public)
    chain.accept(PATIENT, c)
    assert isinstance(
        chain.reject(hospitals[2], AccessEvent(rec.record_id, "t", c.consent_id, None)), ConsentDoesNotCover
    )
    assert audit_entries(chain.kv, rec.record_id) == []


def test_reads_of_own_unknown_or_erased_records_are_not_audit_events(
    chain: Chain, hospitals: list[Identity], rec: RegisterRecord
) -> None:
    c = consent(hospitals[0].public)
    chain.accept(PATIENT, c)
    assert isinstance(
        chain.reject(hospitals[0], AccessEvent(rec.record_id, "t", c.consent_id, None)), InvalidPayload
    )
    assert isinstance(
        chain.reject(hospitals[2], AccessEvent(new_id(), "t", c.consent_id, None)), UnknownRecord
    )
    assert isinstance(chain.reject(STRANGER, AccessEvent(rec.record_id, "t", c.consent_id, None)), NotAMember)
    c2 = consent(hospitals[2].public)
    chain.accept(PATIENT, c2)
    chain.accept(PATIENT, EraseRecord(rec.record_id))
    assert isinstance(
        chain.reject(hospitals[2], AccessEvent(rec.record_id, "t", c2.consent_id, None)), RecordErased
    )
