"""JSON-RPC 2.0 message semantics, without I/O: one line in, one line (or nothing) out.

``handle_payload`` takes the bytes of one request line and a ``call`` function
that runs a method; it returns the response line, or ``None`` when nothing must
be answered (a notification, or a batch of notifications only). All of the
spec's cases are here: parse errors, invalid requests, empty and mixed batches,
notifications, error mapping (``emrp2p.rpc.errors``). A handler's unexpected
exception is logged with its traceback and answered as -32603 with no detail.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Awaitable, Callable
from typing import Any

from emrp2p.codec import to_plain
from emrp2p.logs import get_logger
from emrp2p.rpc.errors import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    RpcError,
    error_for_exception,
)

__all__ = ["Call", "Observe", "handle_payload", "encode_json", "error_line", "notification_line"]

log = get_logger("emrp2p.rpc")

Call = Callable[[str, Any], Awaitable[Any]]
Observe = Callable[[str, int], None]
"""Called once per request or notification with (method, code); code 0 means success."""

UNKNOWN_METHOD = "(unknown)"
"""The method label reported to ``observe`` for names that are not methods (bounded label set)."""


def _default(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray, enum.Enum)) or (
        dataclasses.is_dataclass(obj) and not isinstance(obj, type)
    ):
        return to_plain(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_default, allow_nan=False)


def encode_json(obj: Any) -> bytes:
    """Compact JSON (never containing a raw newline); bytes as hex, wire types via ``to_plain``."""
    return _ENCODER.encode(obj).encode()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _parse(data: bytes) -> Any:
    """``json.loads`` with NaN and Infinity refused; ``data`` must be UTF-8 (JSON-RPC over a socket)."""
    return _DECODER.decode(data.decode())


def _error(id_: Any, err: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "error": err.to_json()}


def error_line(id_: Any, err: RpcError) -> bytes:
    return encode_json(_error(id_, err)) + b"\n"


def notification_line(method: str, params: Any) -> bytes:
    return encode_json({"jsonrpc": "2.0", "method": method, "params": params}) + b"\n"


def _valid_id(id_: Any) -> bool:
    return id_ is None or type(id_) in (str, int, float)


async def _handle_one(req: Any, call: Call, observe: Observe | None) -> bytes | None:
    if not isinstance(req, dict):
        return encode_json(_error(None, RpcError(INVALID_REQUEST, "invalid request: not an object")))
    has_id = "id" in req
    id_ = req.get("id")
    if has_id and not _valid_id(id_):
        return encode_json(_error(None, RpcError(INVALID_REQUEST, "invalid request: bad id")))
    problem = None
    if req.get("jsonrpc") != "2.0":
        problem = 'invalid request: "jsonrpc" must be "2.0"'
    elif not isinstance(req.get("method"), str):
        problem = 'invalid request: "method" must be a string'
    elif "params" in req and not isinstance(req["params"], (list, dict)):
        problem = 'invalid request: "params" must be an array or an object'
    elif set(req) - {"jsonrpc", "method", "params", "id"}:
        problem = f"invalid request: unexpected member {sorted(set(req) - {'jsonrpc', 'method', 'params', 'id'})[0]!r}"
    if problem is not None:
        return encode_json(_error(id_, RpcError(INVALID_REQUEST, problem)))

    method: str = req["method"]
    err: RpcError | None = None
    result: Any = None
    try:
        result = await call(method, req.get("params"))
    except Exception as exc:
        err = error_for_exception(exc)
        if err is None:
            log.exception("rpc handler failed", method=method)
            err = RpcError(INTERNAL_ERROR)
    if observe is not None:
        label = UNKNOWN_METHOD if err is not None and err.code == METHOD_NOT_FOUND else method
        observe(label, 0 if err is None else err.code)
    if not has_id:
        return None
    if err is not None:
        return encode_json(_error(id_, err))
    try:
        return encode_json({"jsonrpc": "2.0", "id": id_, "result": result})
    except (TypeError, ValueError):
        log.exception("rpc result not serializable", method=method)
        return encode_json(_error(id_, RpcError(INTERNAL_ERROR)))


async def handle_payload(data: bytes, call: Call, observe: Observe | None = None) -> bytes | None:
    """The response line (with its newline) to one request line, or ``None`` for no response."""
    try:
        msg = _parse(data)
    except (ValueError, RecursionError):
        if observe is not None:
            observe(UNKNOWN_METHOD, PARSE_ERROR)
        return error_line(None, RpcError(PARSE_ERROR))
    if isinstance(msg, list):
        if not msg:
            return error_line(None, RpcError(INVALID_REQUEST, "invalid request: empty batch"))
        parts = []
        for req in msg:
            out = await _handle_one(req, call, observe)
            if out is not None:
                parts.append(out)
        if not parts:
            return None
        return b"[" + b",".join(parts) + b"]\n"
    out = await _handle_one(msg, call, observe)
    return None if out is None else out + b"\n"
