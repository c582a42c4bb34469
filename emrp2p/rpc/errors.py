"""Every JSON-RPC error code the daemon can answer, mapped once from exceptions.

Handlers never build error responses: they raise. An exception whose class (or
a base class) is named in ``APPLICATION_CODES`` becomes that application error;
``RpcError`` is passed through as it is; anything else is an internal error
(-32603), logged with its traceback, never shown to the client.

Classes are matched by name along the exception's MRO, so the most specific
entry wins (``ConsentNotFound`` before its base ``InvalidTx``) and the layers
below (``emrp2p.ledger.errors``, ``emrp2p.crypto``) need not import this module.
The error's ``data`` is always an object ``{"code": <stable snake_case code>}``;
for ledger rejections it is the ledger error's own ``.code``
(``emrp2p.ledger.errors.ERROR_CODES``), so a client can tell them apart even
where several share one numeric code.

=======  ==========================  =====================================================
code     message                     raised for
=======  ==========================  =====================================================
-32700   parse error                 a line that is not JSON (or not UTF-8)
-32600   invalid request             not a JSON-RPC 2.0 request; an empty batch;
                                     a request line over the size limit (then the
                                     connection is closed)
-32601   method not found            no such method
-32602   invalid params              missing, unknown or mistyped parameter
                                     (the message names the parameter)
-32603   internal error              a bug in the daemon; details only in its log
-32000   busy                        back-pressure: tx pool full or backlogged, too many
                                     connections, server overloaded; retry later (``Busy``)
-32001   invalid signature           ``InvalidSignature`` (ledger or crypto)
-32002   bad nonce                   ``BadNonce``: not the sender's next nonce
-32003   not found                   ``NotFound``: no block / tx / record / patient by
                                     that id in a query
-32004   invalid transaction         any other ledger rejection (``LedgerError``,
                                     ``InvalidTx`` and subclasses without a code of
                                     their own); ``data.code`` says which
-32005   unavailable                 ``Unavailable`` / ``NotLeader``: the node cannot
                                     serve this now (syncing, no leader, shutting down)
-32006   not authorized              ``NotAuthorized`` / ``NotAMember``
-32007   timeout                     ``Timeout`` (e.g. waiting for a commit),
                                     ``trio.TooSlowError``
-32010   consent not found           ``ConsentNotFound``
-32011   consent expired             ``ConsentExpired``
-32012   consent revoked             ``ConsentRevoked``
-32013   consent does not cover      ``ConsentDoesNotCover``
-32020   record erased               ``RecordErased``
=======  ==========================  =====================================================
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "PARSE_ERROR",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "INVALID_PARAMS",
    "INTERNAL_ERROR",
    "BUSY",
    "INVALID_SIGNATURE",
    "BAD_NONCE",
    "NOT_FOUND",
    "INVALID_TX",
    "UNAVAILABLE",
    "NOT_AUTHORIZED",
    "TIMEOUT",
    "CONSENT_NOT_FOUND",
    "CONSENT_EXPIRED",
    "CONSENT_REVOKED",
    "CONSENT_DOES_NOT_COVER",
    "RECORD_ERASED",
    "APPLICATION_CODES",
    "MESSAGES",
    "RpcError",
    "ApplicationError",
    "Busy",
    "NotFound",
    "Unavailable",
    "NotLeader",
    "Timeout",
    "SubscriptionDropped",
    "error_for_exception",
]

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

BUSY = -32000
INVALID_SIGNATURE = -32001
BAD_NONCE = -32002
NOT_FOUND = -32003
INVALID_TX = -32004
UNAVAILABLE = -32005
NOT_AUTHORIZED = -32006
TIMEOUT = -32007
CONSENT_NOT_FOUND = -32010
CONSENT_EXPIRED = -32011
CONSENT_REVOKED = -32012
CONSENT_DOES_NOT_COVER = -32013
RECORD_ERASED = -32020

MESSAGES: dict[int, str] = {
    PARSE_ERROR: "parse error",
    INVALID_REQUEST: "invalid request",
    METHOD_NOT_FOUND: "method not found",
    INVALID_PARAMS: "invalid params",
    INTERNAL_ERROR: "internal error",
    BUSY: "busy",
    INVALID_SIGNATURE: "invalid signature",
    BAD_NONCE: "bad nonce",
    NOT_FOUND: "not found",
    INVALID_TX: "invalid transaction",
    UNAVAILABLE: "unavailable",
    NOT_AUTHORIZED: "not authorized",
    TIMEOUT: "timeout",
    CONSENT_NOT_FOUND: "consent not found",
    CONSENT_EXPIRED: "consent expired",
    CONSENT_REVOKED: "consent revoked",
    CONSENT_DOES_NOT_COVER: "consent does not cover",
    RECORD_ERASED: "record erased",
}
"""The standard message of each code (the response's message adds the exception's text)."""

APPLICATION_CODES: dict[str, int] = {
    # emrp2p.rpc.errors (raised by the node's handlers)
    "Busy": BUSY,
    "NotFound": NOT_FOUND,
    "Unavailable": UNAVAILABLE,
    "Timeout": TIMEOUT,
    "TooSlowError": TIMEOUT,
    # emrp2p.ledger.errors and emrp2p.crypto
    "LedgerError": INVALID_TX,
    "InvalidSignature": INVALID_SIGNATURE,
    "BadNonce": BAD_NONCE,
    "NotAuthorized": NOT_AUTHORIZED,
    "NotAMember": NOT_AUTHORIZED,
    "ConsentNotFound": CONSENT_NOT_FOUND,
    "ConsentExpired": CONSENT_EXPIRED,
    "ConsentRevoked": CONSENT_REVOKED,
    "ConsentDoesNotCover": CONSENT_DOES_NOT_COVER,
    "RecordErased": RECORD_ERASED,
}
"""Exception class name -> application code; looked up along the MRO, most specific first."""

_DEFAULT_DATA_CODES: dict[int, str] = {
    BUSY: "busy",
    INVALID_SIGNATURE: "invalid_signature",
    NOT_FOUND: "not_found",
    UNAVAILABLE: "unavailable",
    TIMEOUT: "timeout",
}


class RpcError(Exception):
    """A JSON-RPC error: raised by handlers to answer with exactly this error,
    and by the clients when the server answered with one."""

    def __init__(self, code: int, message: str | None = None, data: Any = None) -> None:
        self.code = code
        self.message = message if message is not None else MESSAGES.get(code, "error")
        self.data = data
        super().__init__(f"{self.code}: {self.message}")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            out["data"] = self.data
        return out


class ApplicationError(Exception):
    """Base of the daemon-level errors below; ``code`` goes into the error's data."""

    code: ClassVar[str] = "application_error"


class Busy(ApplicationError):
    """Back-pressure: the node refuses more work now; the client should retry later."""

    code = "busy"


class NotFound(ApplicationError):
    """A query named something (block, tx, record, patient) that does not exist."""

    code = "not_found"


class Unavailable(ApplicationError):
    """The node cannot serve this request now (syncing, shutting down, no quorum)."""

    code = "unavailable"


class NotLeader(Unavailable):
    """The request needs the leader and this node is not it (and cannot forward)."""

    code = "not_leader"


class Timeout(ApplicationError):
    """A wait the client asked for (e.g. for a commit) ran out."""

    code = "timeout"


class SubscriptionDropped(Exception):
    """The server dropped an event subscription (the subscriber fell too far behind)."""


def error_for_exception(exc: BaseException) -> RpcError | None:
    """The application error for ``exc``, or ``None`` if it is not one (an internal error)."""
    if isinstance(exc, RpcError):
        return exc
    for cls in type(exc).__mro__:
        code = APPLICATION_CODES.get(cls.__name__)
        if code is None:
            continue
        data_code = getattr(exc, "code", None)
        if not isinstance(data_code, str):
            data_code = _DEFAULT_DATA_CODES.get(code, cls.__name__)
        detail = str(exc)
        message = MESSAGES[code] if not detail else f"{MESSAGES[code]}: {detail}"
        return RpcError(code, message, {"code": data_code})
    return None
