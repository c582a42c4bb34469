"""The ledger state: its layout, the entries stored in it, and read helpers.

State is a flat key-value map. Contracts address it by *logical* keys (below);
``emrp2p.ledger.merkle.raw_key`` places each one in its Merkle bucket, and the
KV holds raw keys only. Values are canonical encodings of the entry types
here (wire tags 310-349), so a state proof carries bytes anyone can decode.

Lists that grow without bound (a record's audit trail, a patient's events) are
a counter key plus one key per item, so they spread over buckets and each item
has its own short proof.

The read helpers (``get_record``, ``audit_entries``, ...) take any ``KV`` —
the store's committed state, or an ``Overlay`` of uncommitted blocks over it.
"""

from __future__ import annotations

import bisect
import enum
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from emrp2p.codec import Limits, decode, wire
from emrp2p.ledger.merkle import raw_key
from emrp2p.ledger.types import (
    Action,
    GrantConsent,
    Member,
    ProposeMembership,
    Role,
)
from emrp2p.store.api import KV

__all__ = [
    "Overlay",
    "MemoryKV",
    "MemberList",
    "ScheduledChange",
    "Schedule",
    "ProposalEntry",
    "PatientEntry",
    "RecordEntry",
    "ConsentEntry",
    "KeyGrantEntry",
    "BreakGlassEntry",
    "AuditEntry",
    "EventKind",
    "PatientEvent",
    "get_nonce",
    "get_members",
    "get_schedule",
    "get_proposal",
    "get_patient",
    "get_record",
    "get_consent",
    "get_key_grant",
    "get_breakglass",
    "audit_count",
    "audit_entries",
    "patient_event_count",
    "patient_events",
]


# --------------------------------------------------------------------------- KV implementations


class Overlay:
    """A KV that reads through pending writes (``None`` = deleted) onto a base KV.

    ``writes`` is shared, not copied: later writes to it show through. Keys may
    be added or have their value changed (to ``None`` to delete) but are never
    removed from the dict, which is how ``items`` notices new keys cheaply.
    """

    __slots__ = ("_base", "_writes", "_sorted")

    def __init__(self, base: KV, writes: dict[bytes, bytes | None]) -> None:
        self._base = base
        self._writes = writes
        self._sorted: list[bytes] = []

    def get(self, key: bytes) -> bytes | None:
        w = self._writes
        if key in w:
            return w[key]
        return self._base.get(key)

    def items(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        pending = self._pending(prefix)
        if not pending:
            return self._base.items(prefix)
        return self._merge(self._base.items(prefix), pending)

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        w = self._writes
        below = iter(self._base.get_many([key for key in keys if key not in w]))
        return [w[key] if key in w else next(below) for key in keys]

    def items_many(self, prefixes: Sequence[bytes]) -> list[list[tuple[bytes, bytes]]]:
        out = []
        for prefix, below in zip(prefixes, self._base.items_many(prefixes), strict=True):
            pending = self._pending(prefix)
            out.append(list(self._merge(below, pending)) if pending else below)
        return out

    def _pending(self, prefix: bytes) -> list[bytes]:
        """The written keys under ``prefix``, in order."""
        writes = self._writes
        if len(self._sorted) != len(writes):
            self._sorted = sorted(writes)
        keys = self._sorted
        i = bisect.bisect_left(keys, prefix)
        pending: list[bytes] = []
        while i < len(keys) and keys[i].startswith(prefix):
            pending.append(keys[i])
            i += 1
        return pending

    def _merge(
        self, below: Iterable[tuple[bytes, bytes]], pending: list[bytes]
    ) -> Iterator[tuple[bytes, bytes]]:
        """The base's entries (in key order) with the ``pending`` written keys laid over them."""
        writes = self._writes
        j = 0
        for key, value in below:
            while j < len(pending) and pending[j] < key:
                mine = writes[pending[j]]
                if mine is not None:
                    yield pending[j], mine
                j += 1
            if j < len(pending) and pending[j] == key:
                mine = writes[key]
                if mine is not None:
                    yield key, mine
                j += 1
            else:
                yield key, value
        while j < len(pending):
            mine = writes[pending[j]]
            if mine is not None:
                yield pending[j], mine
            j += 1


class MemoryKV:
    """A KV over a dict, for tests and the simulator; ``apply`` commits a block's writes."""

    __slots__ = ("data", "_sorted")

    def __init__(self, data: dict[bytes, bytes] | None = None) -> None:
        self.data: dict[bytes, bytes] = dict(data or {})
        self._sorted: list[bytes] | None = None

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def items(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        if self._sorted is None:
            self._sorted = sorted(self.data)
        keys = self._sorted
        i = bisect.bisect_left(keys, prefix)
        out = []
        while i < len(keys) and keys[i].startswith(prefix):
            out.append((keys[i], self.data[keys[i]]))
            i += 1
        return iter(out)

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        get = self.data.get
        return [get(key) for key in keys]

    def items_many(self, prefixes: Sequence[bytes]) -> list[list[tuple[bytes, bytes]]]:
        return [list(self.items(prefix)) for prefix in prefixes]

    def apply(self, writes: dict[bytes, bytes | None]) -> None:
        data = self.data
        keys = self._sorted
        if keys is not None and len(writes) * 8 > len(keys):
            keys = self._sorted = None
        for key, value in writes.items():
            if value is None:
                if key in data:
                    del data[key]
                    if keys is not None:
                        del keys[bisect.bisect_left(keys, key)]
            else:
                if keys is not None and key not in data:
                    bisect.insort(keys, key)
                data[key] = value

    def __len__(self) -> int:
        return len(self.data)


# --------------------------------------------------------------------------- entries


def _lim(**limits: int) -> dict[str, Limits]:
    return {"limits": Limits(**limits)}


@wire(310)
@dataclass(frozen=True)
class MemberList:
    """All current members, in genesis order with later additions appended."""

    members: tuple[Member, ...] = field(metadata={"limits": Limits(max_len=1024)})


@wire(311)
@dataclass(frozen=True)
class ScheduledChange:
    """A membership change that a majority approved, applied at the start of block ``effective_height``."""

    effective_height: int = field(metadata=_lim(min_value=0))
    proposal_id: bytes = field(metadata=_lim(exact_len=16))
    action: Action
    member: Member


@wire(312)
@dataclass(frozen=True)
class Schedule:
    changes: tuple[ScheduledChange, ...] = field(metadata={"limits": Limits(max_len=1024)})


@wire(313)
@dataclass(frozen=True)
class ProposalEntry:
    proposal: ProposeMembership
    proposer: bytes = field(metadata=_lim(exact_len=32))
    approvals: tuple[bytes, ...] = field(metadata={"limits": Limits(exact_len=32, max_len=1024)})
    scheduled: bool
    height: int = field(metadata=_lim(min_value=0))


@wire(314)
@dataclass(frozen=True)
class PatientEntry:
    """A registered patient: the key is the pseudonym; only delegate keys are kept."""

    delegates: tuple[bytes, ...] = field(metadata={"limits": Limits(exact_len=32, max_len=8)})
    height: int = field(metadata=_lim(min_value=0))


@wire(315)
@dataclass(frozen=True)
class RecordEntry:
    """A record in the index. Once ``erased``, only hashes and pseudonyms remain."""

    author: bytes = field(metadata=_lim(exact_len=32))
    patient: bytes = field(metadata=_lim(exact_len=32))
    resource_type: str = field(metadata=_lim(max_len=64))
    manifest_hash: bytes = field(metadata=_lim(exact_len=32))
    size_class: int = field(metadata=_lim(min_value=0))
    replicas: tuple[bytes, ...] = field(metadata={"limits": Limits(exact_len=32, max_len=16)})
    previous: bytes | None = field(metadata={"limits": Limits(exact_len=16)})
    superseded_by: bytes | None = field(metadata={"limits": Limits(exact_len=16)})
    erased: bool
    height: int = field(metadata=_lim(min_value=0))


@wire(316)
@dataclass(frozen=True)
class ConsentEntry:
    consent: GrantConsent
    granted_by: bytes = field(metadata=_lim(exact_len=32))
    revoked: bool
    height: int = field(metadata=_lim(min_value=0))

    def live(self, now_ms: int) -> bool:
        return not self.revoked and now_ms < self.consent.expires_at

    def covers(self, grantee: bytes, record_id: bytes, record: RecordEntry) -> bool:
        """Scope is the union of the listed record ids and resource types; nothing listed means all."""
        c = self.consent
        if c.grantee != grantee or c.patient != record.patient:
            return False
        if not c.record_ids and not c.resource_types:
            return True
        return record_id in c.record_ids or record.resource_type in c.resource_types


@wire(317)
@dataclass(frozen=True)
class KeyGrantEntry:
    granter: bytes = field(metadata=_lim(exact_len=32))
    wrapped_key_hash: bytes = field(metadata=_lim(exact_len=32))
    consent_id: bytes | None = field(metadata={"limits": Limits(exact_len=16)})
    breakglass_id: bytes | None = field(metadata={"limits": Limits(exact_len=16)})
    height: int = field(metadata=_lim(min_value=0))


@wire(318)
@dataclass(frozen=True)
class BreakGlassEntry:
    """Emergency access declared by ``hospital``; valid for ``BREAKGLASS_TTL_MS`` after ``timestamp_ms``."""

    hospital: bytes = field(metadata=_lim(exact_len=32))
    patient: bytes = field(metadata=_lim(exact_len=32))
    reason_code: str = field(metadata=_lim(max_len=64))
    record_id: bytes | None = field(metadata={"limits": Limits(exact_len=16)})
    timestamp_ms: int = field(metadata=_lim(min_value=0))
    height: int = field(metadata=_lim(min_value=0))
    tx_id: bytes = field(metadata=_lim(exact_len=32))


@wire(319)
@dataclass(frozen=True)
class AuditEntry:
    """One read of a record by a hospital other than its author, and the authority it relied on."""

    reader: bytes = field(metadata=_lim(exact_len=32))
    record_id: bytes = field(metadata=_lim(exact_len=16))
    purpose: str = field(metadata=_lim(max_len=64))
    consent_id: bytes | None = field(metadata={"limits": Limits(exact_len=16)})
    breakglass_id: bytes | None = field(metadata={"limits": Limits(exact_len=16)})
    timestamp_ms: int = field(metadata=_lim(min_value=0))
    height: int = field(metadata=_lim(min_value=0))
    tx_id: bytes = field(metadata=_lim(exact_len=32))


class EventKind(enum.IntEnum):
    BREAK_GLASS = 1
    """A hospital declared emergency access to the patient's records."""
    BREAK_GLASS_ACCESS = 2
    """A hospital read a record under break-glass."""
    BREAK_GLASS_KEY_GRANT = 3
    """A record's key was granted under break-glass."""


@wire(320)
@dataclass(frozen=True)
class PatientEvent:
    """Something the patient must be told about (break-glass), kept as a list per patient."""

    kind: EventKind
    hospital: bytes = field(metadata=_lim(exact_len=32))
    breakglass_id: bytes = field(metadata=_lim(exact_len=16))
    record_id: bytes | None = field(metadata={"limits": Limits(exact_len=16)})
    timestamp_ms: int = field(metadata=_lim(min_value=0))
    height: int = field(metadata=_lim(min_value=0))
    tx_id: bytes = field(metadata=_lim(exact_len=32))


BREAKGLASS_TTL_MS = 24 * 3600 * 1000
"""How long a break-glass declaration authorises key grants and reads."""


# --------------------------------------------------------------------------- logical keys


def nonce_key(sender: bytes) -> bytes:
    return b"n" + sender


MEMBERS_KEY = b"M"
SCHEDULE_KEY = b"S"


def proposal_key(proposal_id: bytes) -> bytes:
    return b"P" + proposal_id


def patient_key(patient: bytes) -> bytes:
    return b"p" + patient


def record_key(record_id: bytes) -> bytes:
    return b"r" + record_id


def consent_key(consent_id: bytes) -> bytes:
    return b"c" + consent_id


def key_grant_key(record_id: bytes, grantee: bytes) -> bytes:
    return b"k" + record_id + grantee


def breakglass_key(breakglass_id: bytes) -> bytes:
    return b"b" + breakglass_id


def audit_count_key(record_id: bytes) -> bytes:
    return b"A" + record_id


def audit_key(record_id: bytes, index: int) -> bytes:
    """Logical key of a record's ``index``-th audit entry (what a state proof of an access names)."""
    return b"a" + record_id + index.to_bytes(8, "big")


def event_count_key(patient: bytes) -> bytes:
    return b"E" + patient


def event_key(patient: bytes, index: int) -> bytes:
    return b"e" + patient + index.to_bytes(8, "big")


# --------------------------------------------------------------------------- reads

E = TypeVar("E")


def read(state: KV, key: bytes, cls: type[E]) -> E | None:
    """The entry at logical ``key``, decoded as ``cls``, or ``None``."""
    raw = state.get(raw_key(key))
    return None if raw is None else decode(cls, raw)


def read_int(state: KV, key: bytes) -> int:
    raw = state.get(raw_key(key))
    return 0 if raw is None else int.from_bytes(raw, "big")


def get_nonce(state: KV, sender: bytes) -> int:
    """The nonce the sender's next transaction must carry."""
    return read_int(state, nonce_key(sender))


@functools.lru_cache(maxsize=8)
def _decode_shared(cls: type[E], raw: bytes) -> E:
    """``decode``, remembered: the member list and the schedule are read for every block and
    change rarely (the decoded values are immutable, so one object can serve every reader)."""
    return decode(cls, raw)


def get_members(state: KV) -> tuple[Member, ...]:
    raw = state.get(raw_key(MEMBERS_KEY))
    return () if raw is None else _decode_shared(MemberList, raw).members


def get_schedule(state: KV) -> tuple[ScheduledChange, ...]:
    raw = state.get(raw_key(SCHEDULE_KEY))
    return () if raw is None else _decode_shared(Schedule, raw).changes


def get_proposal(state: KV, proposal_id: bytes) -> ProposalEntry | None:
    return read(state, proposal_key(proposal_id), ProposalEntry)


def get_patient(state: KV, patient: bytes) -> PatientEntry | None:
    return read(state, patient_key(patient), PatientEntry)


def get_record(state: KV, record_id: bytes) -> RecordEntry | None:
    return read(state, record_key(record_id), RecordEntry)


def get_consent(state: KV, consent_id: bytes) -> ConsentEntry | None:
    return read(state, consent_key(consent_id), ConsentEntry)


def get_key_grant(state: KV, record_id: bytes, grantee: bytes) -> KeyGrantEntry | None:
    return read(state, key_grant_key(record_id, grantee), KeyGrantEntry)


def get_breakglass(state: KV, breakglass_id: bytes) -> BreakGlassEntry | None:
    return read(state, breakglass_key(breakglass_id), BreakGlassEntry)


def audit_count(state: KV, record_id: bytes) -> int:
    return read_int(state, audit_count_key(record_id))


def audit_entries(state: KV, record_id: bytes, start: int = 0, limit: int | None = None) -> list[AuditEntry]:
    """A record's audit trail in ledger order, from entry ``start``, at most ``limit`` entries."""
    count = audit_count(state, record_id)
    return _sequence(state, count, lambda i: audit_key(record_id, i), AuditEntry, start, limit)


def patient_event_count(state: KV, patient: bytes) -> int:
    return read_int(state, event_count_key(patient))


def patient_events(state: KV, patient: bytes, start: int = 0, limit: int | None = None) -> list[PatientEvent]:
    """Events the patient must be told about (break-glass), in ledger order."""
    count = patient_event_count(state, patient)
    return _sequence(state, count, lambda i: event_key(patient, i), PatientEvent, start, limit)


def _sequence(
    state: KV, count: int, key: Callable[[int], bytes], cls: type[E], start: int, limit: int | None
) -> list[E]:
    """Entries ``start`` .. of a counted sequence (entry i under ``key(i)``), at most ``limit``."""
    end = count if limit is None else min(count, start + limit)
    out = []
    for i in range(start, end):
        entry = read(state, key(i), cls)
        assert entry is not None, f"{cls.__name__} counter ahead of its entries"
        out.append(entry)
    return out


def validators_of(members: tuple[Member, ...]) -> tuple[bytes, ...]:
    return tuple(m.node for m in members if m.role == Role.VALIDATOR)
