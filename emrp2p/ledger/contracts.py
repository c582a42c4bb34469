"""The built-in contracts: one handler per payload type, plus its stateless checks.

A handler gets a ``TxState`` (reads and journalled writes) and the payload,
checks every rule, raising the ``InvalidTx`` subclass that names what is
wrong, and only then writes. Rules, in brief:

- membership: a validator proposes; validators approve; when approvals (the
  proposer's included) from a majority of the validators in force are in, the
  change is scheduled and applied at the start of block ``effective_height``.
  No change may leave the network without a validator, and none is scheduled
  while another is (one change in force at a time keeps consensus safe).
- patients: a patient registers with its own key (the pseudonym) and manages
  its delegates (guardians); a delegate may act for the patient on consent and
  erasure, not on delegates.
- records: a member hospital registers a record for a registered patient;
  versions form a linear chain through ``previous``.
- consent: granted and revoked by the patient or a delegate, to a member
  hospital, until ``expires_at`` (block time, exclusive). Its scope is the
  union of the listed record ids and resource types; nothing listed is all.
- key grants and reads (``AccessEvent``) need authority: a live consent
  covering the hospital and record, or that hospital's own break-glass for the
  patient (and record, if it names one) less than ``BREAKGLASS_TTL_MS`` old.
  A read without authority is refused, not recorded as unauthorised: the
  ledger is the record of what was allowed, and a hospital's software asks it
  before decrypting. Each accepted read is an audit entry with its own proof.
- break-glass: a member hospital declares emergency access with a reason; it
  is stored and an event is appended to the patient's event list.
- erasure: by the patient or a delegate; the record keeps only hashes and
  pseudonyms, and no key grant, read or new version may follow.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from emrp2p.ledger.errors import (
    AlreadyMember,
    BreakGlassExpired,
    BreakGlassNotFound,
    ChangePending,
    ConsentDoesNotCover,
    ConsentExpired,
    ConsentNotFound,
    ConsentRevoked,
    DuplicateApproval,
    DuplicateId,
    InvalidPayload,
    LastValidator,
    NotAMember,
    NotAuthorized,
    ProposalClosed,
    ProposalExpired,
    RecordErased,
    RecordSuperseded,
    UnknownMember,
    UnknownPatient,
    UnknownProposal,
    UnknownRecord,
)
from emrp2p.ledger.execute import TxState, apply_changes
from emrp2p.ledger.state import (
    BREAKGLASS_TTL_MS,
    SCHEDULE_KEY,
    AuditEntry,
    BreakGlassEntry,
    ConsentEntry,
    EventKind,
    KeyGrantEntry,
    PatientEntry,
    PatientEvent,
    ProposalEntry,
    RecordEntry,
    Schedule,
    ScheduledChange,
    audit_count_key,
    audit_key,
    breakglass_key,
    consent_key,
    event_count_key,
    event_key,
    key_grant_key,
    patient_key,
    proposal_key,
    record_key,
)
from emrp2p.ledger.types import (
    AccessEvent,
    Action,
    ApproveMembership,
    BreakGlass,
    EraseRecord,
    GrantConsent,
    KeyGrant,
    Member,
    Payload,
    ProposeMembership,
    RegisterPatient,
    RegisterRecord,
    RevokeConsent,
    SetDelegate,
)

__all__ = ["HANDLERS", "STATIC_CHECKS", "RESOURCE_TYPE", "valid_resource_type"]

RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")
"""A plausible FHIR resource type name (``Observation``, ``DiagnosticReport``)."""

CODE_TEXT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}")
"""Reason codes and purposes: short machine codes, never free text (which could carry PHI)."""

MAX_DELEGATES = 8


def valid_resource_type(name: str) -> bool:
    return RESOURCE_TYPE.fullmatch(name) is not None


def _unique(items: tuple[Any, ...], what: str) -> None:
    if len(set(items)) != len(items):
        raise InvalidPayload(f"{what} listed twice")


def _code(text: str, what: str) -> None:
    if CODE_TEXT.fullmatch(text) is None:
        raise InvalidPayload(f"{what} {text!r} is not a short code")


# --------------------------------------------------------------------------- stateless checks


def _check_propose(p: ProposeMembership) -> None:
    if p.action == Action.ADD and not p.name.strip():
        raise InvalidPayload("a new member needs a name")


def _check_register_patient(p: RegisterPatient) -> None:
    _unique(p.delegates, "delegate")


def _check_register_record(p: RegisterRecord) -> None:
    if not valid_resource_type(p.resource_type):
        raise InvalidPayload(f"{p.resource_type!r} is not a FHIR resource type name")
    _unique(p.replicas, "replica")
    if p.previous == p.record_id:
        raise InvalidPayload("a record cannot supersede itself")


def _check_grant_consent(p: GrantConsent) -> None:
    _code(p.purpose, "purpose")
    for t in p.resource_types:
        if not valid_resource_type(t):
            raise InvalidPayload(f"{t!r} is not a FHIR resource type name")
    _unique(p.resource_types, "resource type")
    _unique(p.record_ids, "record id")


def _exactly_one_authority(consent_id: bytes | None, breakglass_id: bytes | None) -> None:
    if (consent_id is None) == (breakglass_id is None):
        raise InvalidPayload("name exactly one of consent_id and breakglass_id")


def _check_key_grant(p: KeyGrant) -> None:
    _exactly_one_authority(p.consent_id, p.breakglass_id)


def _check_breakglass(p: BreakGlass) -> None:
    _code(p.reason_code, "reason code")


def _check_access(p: AccessEvent) -> None:
    _code(p.purpose, "purpose")
    _exactly_one_authority(p.consent_id, p.breakglass_id)


# --------------------------------------------------------------------------- shared rules


def _require_member(s: TxState) -> Member:
    m = s.members.get(s.sender)
    if m is None:
        raise NotAMember("only member hospitals may do this")
    return m


def _require_validator(s: TxState) -> None:
    if s.sender not in s.validators:
        raise NotAuthorized("only validators vote on membership")


def _require_grantee(s: TxState, node: bytes) -> None:
    if node not in s.members:
        raise UnknownMember(f"{node.hex()[:16]} is not a member")


def _patient_authority(s: TxState, patient: bytes) -> PatientEntry:
    """The patient's entry, if the sender is the patient or one of its delegates."""
    entry = s.read(patient_key(patient), PatientEntry)
    if entry is None:
        raise UnknownPatient("patient is not registered")
    if s.sender != patient and s.sender not in entry.delegates:
        raise NotAuthorized("only the patient or a delegate may do this")
    return entry


def _live_record(s: TxState, record_id: bytes) -> RecordEntry:
    rec = s.read(record_key(record_id), RecordEntry)
    if rec is None:
        raise UnknownRecord("no such record")
    if rec.erased:
        raise RecordErased("record was erased")
    return rec


def _check_authority(
    s: TxState,
    hospital: bytes,
    record_id: bytes,
    rec: RecordEntry,
    consent_id: bytes | None,
    breakglass_id: bytes | None,
) -> None:
    """A live consent or break-glass lets ``hospital`` have ``record_id`` now, or raise why not."""
    now = s.ctx.timestamp_ms
    if consent_id is not None:
        consent = s.read(consent_key(consent_id), ConsentEntry)
        if consent is None:
            raise ConsentNotFound("no such consent")
        if consent.revoked:
            raise ConsentRevoked("consent was revoked")
        if now >= consent.consent.expires_at:
            raise ConsentExpired("consent has expired")
        if not consent.covers(hospital, record_id, rec):
            raise ConsentDoesNotCover("consent does not cover this hospital and record")
        return
    assert breakglass_id is not None
    bg = s.read(breakglass_key(breakglass_id), BreakGlassEntry)
    if bg is None:
        raise BreakGlassNotFound("no such break-glass declaration")
    if bg.hospital != hospital or bg.patient != rec.patient or bg.record_id not in (None, record_id):
        raise NotAuthorized("break-glass declaration does not cover this hospital and record")
    if now >= bg.timestamp_ms + BREAKGLASS_TTL_MS:
        raise BreakGlassExpired("break-glass declaration has expired")


def _patient_event(
    s: TxState, patient: bytes, kind: EventKind, breakglass_id: bytes, record_id: bytes | None
) -> None:
    event = PatientEvent(
        kind, s.sender, breakglass_id, record_id, s.ctx.timestamp_ms, s.ctx.height, s.tx.tx_id
    )
    s.append(event_count_key(patient), lambda i: event_key(patient, i), event)


# --------------------------------------------------------------------------- membership


def _one_at_a_time(s: TxState) -> None:
    """Refuse a second change while one is scheduled.

    Consensus safety across a change rests on every majority of the validators before it
    meeting every majority after it. One added or removed validator at a time guarantees
    that (Raft's single-server changes); two at once need not (4 validators, 2 swapped: a
    majority of 3 old and one of 3 new can share no member).
    """
    sched = s.read(SCHEDULE_KEY, Schedule)
    if sched is not None and sched.changes:
        raise ChangePending(
            f"a membership change takes effect at height {sched.changes[0].effective_height}; "
            "propose or approve another after it"
        )


def _projected(s: TxState, extra: ScheduledChange) -> None:
    """Refuse ``extra`` if it would leave no validator (no other change can be scheduled)."""
    _, refused = apply_changes(tuple(s.members.values()), [extra])
    if refused:
        raise LastValidator("the change would leave no validator")


def _change_of(s: TxState, p: ProposeMembership) -> ScheduledChange:
    if p.action == Action.REMOVE:
        current = s.members.get(p.node)
        member = current if current is not None else Member(p.node, p.name, p.role)
    else:
        member = Member(p.node, p.name, p.role)
    return ScheduledChange(p.effective_height, p.proposal_id, p.action, member)


def _maybe_schedule(s: TxState, entry: ProposalEntry) -> ProposalEntry:
    validators = s.validators
    votes = sum(1 for a in entry.approvals if a in validators)
    if votes * 2 <= len(validators):
        return entry
    change = _change_of(s, entry.proposal)
    _one_at_a_time(s)
    _projected(s, change)
    s.write(SCHEDULE_KEY, Schedule((change,)))
    return ProposalEntry(entry.proposal, entry.proposer, entry.approvals, True, entry.height)


def propose_membership(s: TxState, p: ProposeMembership) -> None:
    _require_validator(s)
    if s.get(proposal_key(p.proposal_id)) is not None:
        raise DuplicateId("proposal id already used")
    if p.effective_height <= s.ctx.height:
        raise ProposalExpired(f"effective height {p.effective_height} is not after block {s.ctx.height}")
    current = s.members.get(p.node)
    if p.action == Action.ADD:
        if current is not None and current.role == p.role:
            raise AlreadyMember("node is already a member with that role")
    elif current is None:
        raise UnknownMember("node to remove is not a member")
    _projected(s, _change_of(s, p))
    _one_at_a_time(s)
    entry = ProposalEntry(p, s.sender, (s.sender,), False, s.ctx.height)
    s.write(proposal_key(p.proposal_id), _maybe_schedule(s, entry))


def approve_membership(s: TxState, p: ApproveMembership) -> None:
    _require_validator(s)
    entry = s.read(proposal_key(p.proposal_id), ProposalEntry)
    if entry is None:
        raise UnknownProposal("no such proposal")
    if entry.scheduled:
        raise ProposalClosed("proposal already has its majority")
    if s.sender in entry.approvals:
        raise DuplicateApproval("already approved")
    if entry.proposal.effective_height <= s.ctx.height:
        raise ProposalExpired("proposal's effective height has passed")
    entry = ProposalEntry(entry.proposal, entry.proposer, (*entry.approvals, s.sender), False, entry.height)
    s.write(proposal_key(p.proposal_id), _maybe_schedule(s, entry))


# --------------------------------------------------------------------------- patients


def register_patient(s: TxState, p: RegisterPatient) -> None:
    if s.get(patient_key(s.sender)) is not None:
        raise DuplicateId("patient already registered")
    if s.sender in p.delegates:
        raise InvalidPayload("a patient cannot be its own delegate")
    s.write(patient_key(s.sender), PatientEntry(p.delegates, s.ctx.height))


def set_delegate(s: TxState, p: SetDelegate) -> None:
    entry = s.read(patient_key(s.sender), PatientEntry)
    if entry is None:
        raise UnknownPatient("only a registered patient sets its delegates")
    if p.active:
        if p.delegate == s.sender:
            raise InvalidPayload("a patient cannot be its own delegate")
        if p.delegate in entry.delegates:
            raise InvalidPayload("already a delegate")
        if len(entry.delegates) >= MAX_DELEGATES:
            raise InvalidPayload(f"at most {MAX_DELEGATES} delegates")
        delegates = (*entry.delegates, p.delegate)
    else:
        if p.delegate not in entry.delegates:
            raise InvalidPayload("not a delegate")
        delegates = tuple(d for d in entry.delegates if d != p.delegate)
    s.write(patient_key(s.sender), PatientEntry(delegates, entry.height))


# --------------------------------------------------------------------------- records


def register_record(s: TxState, p: RegisterRecord) -> None:
    _require_member(s)
    if s.get(record_key(p.record_id)) is not None:
        raise DuplicateId("record id already used")
    if s.get(patient_key(p.patient)) is None:
        raise UnknownPatient("patient is not registered")
    for r in p.replicas:
        _require_grantee(s, r)
    if p.previous is not None:
        prev = _live_record(s, p.previous)
        if prev.patient != p.patient:
            raise InvalidPayload("a new version must be for the same patient")
        if prev.superseded_by is not None:
            raise RecordSuperseded("previous version already has a successor")
        s.write(
            record_key(p.previous),
            RecordEntry(
                prev.author, prev.patient, prev.resource_type, prev.manifest_hash, prev.size_class,
                prev.replicas, prev.previous, p.record_id, False, prev.height,
            ),
        )  # fmt: skip
    s.write(
        record_key(p.record_id),
        RecordEntry(
            s.sender, p.patient, p.resource_type, p.manifest_hash, p.size_class,
            p.replicas, p.previous, None, False, s.ctx.height,
        ),
    )  # fmt: skip


def erase_record(s: TxState, p: EraseRecord) -> None:
    rec = s.read(record_key(p.record_id), RecordEntry)
    if rec is None:
        raise UnknownRecord("no such record")
    _patient_authority(s, rec.patient)
    if rec.erased:
        raise RecordErased("record already erased")
    s.write(
        record_key(p.record_id),
        RecordEntry(
            rec.author, rec.patient, "", rec.manifest_hash, 0,
            rec.replicas, rec.previous, rec.superseded_by, True, rec.height,
        ),
    )  # fmt: skip


# --------------------------------------------------------------------------- consent


def grant_consent(s: TxState, p: GrantConsent) -> None:
    _patient_authority(s, p.patient)
    _require_grantee(s, p.grantee)
    if s.get(consent_key(p.consent_id)) is not None:
        raise DuplicateId("consent id already used")
    if p.expires_at <= s.ctx.timestamp_ms:
        raise ConsentExpired("consent would already be expired")
    for rid in p.record_ids:
        rec = s.read(record_key(rid), RecordEntry)
        if rec is None:
            raise UnknownRecord(f"record {rid.hex()} does not exist")
        if rec.patient != p.patient:
            raise NotAuthorized(f"record {rid.hex()} belongs to another patient")
    s.write(consent_key(p.consent_id), ConsentEntry(p, s.sender, False, s.ctx.height))


def revoke_consent(s: TxState, p: RevokeConsent) -> None:
    entry = s.read(consent_key(p.consent_id), ConsentEntry)
    if entry is None:
        raise ConsentNotFound("no such consent")
    _patient_authority(s, entry.consent.patient)
    if entry.revoked:
        raise ConsentRevoked("consent already revoked")
    s.write(consent_key(p.consent_id), ConsentEntry(entry.consent, entry.granted_by, True, entry.height))


# --------------------------------------------------------------------------- key grants, break-glass, audit


def key_grant(s: TxState, p: KeyGrant) -> None:
    _require_member(s)
    rec = _live_record(s, p.record_id)
    _require_grantee(s, p.grantee)
    holder = (
        s.sender == rec.author
        or s.sender in rec.replicas
        or s.get(key_grant_key(p.record_id, s.sender)) is not None
    )
    if not holder:
        raise NotAuthorized("only the author, a replica or a key holder may grant a record's key")
    _check_authority(s, p.grantee, p.record_id, rec, p.consent_id, p.breakglass_id)
    s.write(
        key_grant_key(p.record_id, p.grantee),
        KeyGrantEntry(s.sender, p.wrapped_key_hash, p.consent_id, p.breakglass_id, s.ctx.height),
    )
    if p.breakglass_id is not None:
        _patient_event(s, rec.patient, EventKind.BREAK_GLASS_KEY_GRANT, p.breakglass_id, p.record_id)


def break_glass(s: TxState, p: BreakGlass) -> None:
    _require_member(s)
    if s.get(breakglass_key(p.breakglass_id)) is not None:
        raise DuplicateId("break-glass id already used")
    if s.get(patient_key(p.patient)) is None:
        raise UnknownPatient("patient is not registered")
    if p.record_id is not None:
        rec = _live_record(s, p.record_id)
        if rec.patient != p.patient:
            raise NotAuthorized("record belongs to another patient")
    entry = BreakGlassEntry(
        s.sender, p.patient, p.reason_code, p.record_id, s.ctx.timestamp_ms, s.ctx.height, s.tx.tx_id
    )
    s.write(breakglass_key(p.breakglass_id), entry)
    _patient_event(s, p.patient, EventKind.BREAK_GLASS, p.breakglass_id, p.record_id)


def access_event(s: TxState, p: AccessEvent) -> None:
    _require_member(s)
    rec = _live_record(s, p.record_id)
    if rec.author == s.sender:
        raise InvalidPayload("a hospital's reads of its own records are not audited on the ledger")
    _check_authority(s, s.sender, p.record_id, rec, p.consent_id, p.breakglass_id)
    entry = AuditEntry(
        s.sender,
        p.record_id,
        p.purpose,
        p.consent_id,
        p.breakglass_id,
        s.ctx.timestamp_ms,
        s.ctx.height,
        s.tx.tx_id,
    )
    s.append(audit_count_key(p.record_id), lambda i: audit_key(p.record_id, i), entry)
    if p.breakglass_id is not None:
        _patient_event(s, rec.patient, EventKind.BREAK_GLASS_ACCESS, p.breakglass_id, p.record_id)


HANDLERS: dict[type[Payload], Callable[[TxState, Any], None]] = {
    ProposeMembership: propose_membership,
    ApproveMembership: approve_membership,
    RegisterPatient: register_patient,
    SetDelegate: set_delegate,
    RegisterRecord: register_record,
    GrantConsent: grant_consent,
    RevokeConsent: revoke_consent,
    KeyGrant: key_grant,
    BreakGlass: break_glass,
    AccessEvent: access_event,
    EraseRecord: erase_record,
}

STATIC_CHECKS: dict[type[Payload], Callable[[Any], None]] = {
    ProposeMembership: _check_propose,
    RegisterPatient: _check_register_patient,
    RegisterRecord: _check_register_record,
    GrantConsent: _check_grant_consent,
    KeyGrant: _check_key_grant,
    BreakGlass: _check_breakglass,
    AccessEvent: _check_access,
}
