"""Why the ledger refused a transaction or a block.

Every error carries a stable short ``code`` (``"bad_nonce"``) that the RPC
layer maps once to an application error code; the message is for people.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "LedgerError",
    "InvalidTx",
    "InvalidSignature",
    "BadNonce",
    "InvalidPayload",
    "NotAMember",
    "UnknownMember",
    "AlreadyMember",
    "NotAuthorized",
    "UnknownPatient",
    "UnknownRecord",
    "RecordErased",
    "RecordSuperseded",
    "ConsentNotFound",
    "ConsentExpired",
    "ConsentRevoked",
    "ConsentDoesNotCover",
    "BreakGlassNotFound",
    "BreakGlassExpired",
    "DuplicateId",
    "UnknownProposal",
    "ProposalClosed",
    "ProposalExpired",
    "DuplicateApproval",
    "LastValidator",
    "ChangePending",
    "InvalidBlock",
    "ERROR_CODES",
]


class LedgerError(Exception):
    code: ClassVar[str] = "ledger_error"


class InvalidTx(LedgerError):
    """The transaction cannot be executed; it changes nothing (not even the nonce)."""

    code = "invalid_tx"


class InvalidSignature(InvalidTx):
    code = "invalid_signature"


class BadNonce(InvalidTx):
    """The nonce is not exactly the sender's next nonce (a replay, a gap, or a reordering)."""

    code = "bad_nonce"


class InvalidPayload(InvalidTx):
    """The payload is malformed whatever the state (bad resource type, duplicates, ...)."""

    code = "invalid_payload"


class NotAMember(InvalidTx):
    """The sender is not a consortium member, and the call is for member hospitals only."""

    code = "not_a_member"


class UnknownMember(InvalidTx):
    """A node named in the payload (grantee, replica, node to remove) is not a member."""

    code = "unknown_member"


class AlreadyMember(InvalidTx):
    code = "already_member"


class NotAuthorized(InvalidTx):
    """The sender is known but may not do this (not the patient or a delegate, not a validator...)."""

    code = "not_authorized"


class UnknownPatient(InvalidTx):
    code = "unknown_patient"


class UnknownRecord(InvalidTx):
    code = "unknown_record"


class RecordErased(InvalidTx):
    code = "record_erased"


class RecordSuperseded(InvalidTx):
    """A new version must supersede the latest one: version chains do not fork."""

    code = "record_superseded"


class ConsentNotFound(InvalidTx):
    code = "consent_not_found"


class ConsentExpired(InvalidTx):
    code = "consent_expired"


class ConsentRevoked(InvalidTx):
    code = "consent_revoked"


class ConsentDoesNotCover(InvalidTx):
    """The consent exists and is live but not for this grantee, patient or record."""

    code = "consent_does_not_cover"


class BreakGlassNotFound(InvalidTx):
    code = "breakglass_not_found"


class BreakGlassExpired(InvalidTx):
    code = "breakglass_expired"


class DuplicateId(InvalidTx):
    """An id (record, consent, proposal, break-glass, patient) that is already taken."""

    code = "duplicate_id"


class UnknownProposal(InvalidTx):
    code = "unknown_proposal"


class ProposalClosed(InvalidTx):
    """The membership proposal already reached a majority and is scheduled."""

    code = "proposal_closed"


class ProposalExpired(InvalidTx):
    """The proposal's effective height is not after the current block any more."""

    code = "proposal_expired"


class DuplicateApproval(InvalidTx):
    code = "duplicate_approval"


class LastValidator(InvalidTx):
    """The change would leave the network without a validator."""

    code = "last_validator"


class ChangePending(InvalidTx):
    """Another membership change is scheduled: one at a time, each once the previous took effect."""

    code = "change_pending"


class InvalidBlock(LedgerError):
    """A block that carries an invalid transaction: followers refuse it whole."""

    code = "invalid_block"

    def __init__(self, index: int, cause: InvalidTx) -> None:
        super().__init__(f"tx {index}: {cause.code}: {cause}")
        self.index = index
        self.cause = cause


def _all_codes() -> dict[str, type[LedgerError]]:
    out: dict[str, type[LedgerError]] = {}
    stack: list[type[LedgerError]] = [LedgerError]
    while stack:
        cls = stack.pop()
        if cls.code in out:
            raise TypeError(f"duplicate ledger error code {cls.code}")
        out[cls.code] = cls
        stack.extend(cls.__subclasses__())
    return out


ERROR_CODES: dict[str, type[LedgerError]] = _all_codes()
"""Every error class by its code, for the RPC layer's mapping table."""
