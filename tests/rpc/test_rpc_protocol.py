"""JSON-RPC 2.0 semantics, message by message, without sockets."""

from __future__ import annotations

import json
from typing import Any

import pytest
import structlog
from rpc_helpers import Sample

from emrp2p.rpc import errors
from emrp2p.rpc.protocol import handle_payload


async def ask(sample: Sample, payload: Any, observe: Any = None) -> Any:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    out = await handle_payload(data, sample.dispatcher.call, observe)
    if out is None:
        return None
    assert out.endswith(b"\n") and out.count(b"\n") == 1
    return json.loads(out)


def req(method: str, params: Any = None, id_: Any = 1) -> dict[str, Any]:
    r: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        r["params"] = params
    if id_ is not ...:
        r["id"] = id_
    return r


async def test_a_request_gets_its_result_with_its_id(sample: Sample) -> None:
    assert await ask(sample, req("add", {"a": 2, "b": 3}, "x-1")) == {
        "jsonrpc": "2.0",
        "id": "x-1",
        "result": 5,
    }


async def test_params_may_be_given_by_position(sample: Sample) -> None:
    assert (await ask(sample, req("add", [2, 3])))["result"] == 5


async def test_a_request_with_null_id_is_still_answered(sample: Sample) -> None:
    assert await ask(sample, req("add", [1, 1], None)) == {"jsonrpc": "2.0", "id": None, "result": 2}


@pytest.mark.parametrize(
    "payload",
    [b'{"jsonrpc": "2.0", "method": "add", "params": [1, 2', b"\xff\xfe", b"[NaN]", b"{" * 100_000],
    ids=["truncated", "not-utf8", "nan", "too-deep"],
)
async def test_malformed_json_is_a_parse_error_with_null_id(sample: Sample, payload: bytes) -> None:
    resp = await ask(sample, payload)
    assert resp["id"] is None
    assert resp["error"]["code"] == errors.PARSE_ERROR


@pytest.mark.parametrize(
    "payload",
    [
        1,
        "add",
        {"method": "add", "id": 1},
        {"jsonrpc": "1.0", "method": "add", "id": 1},
        {"jsonrpc": "2.0", "method": 7, "id": 1},
        {"jsonrpc": "2.0", "method": "add", "params": "1,2", "id": 1},
        {"jsonrpc": "2.0", "method": "add", "id": {"a": 1}},
        {"jsonrpc": "2.0", "method": "add", "id": True},
        {"jsonrpc": "2.0", "method": "add", "param": [1, 2], "id": 1},
        {"jsonrpc": "2.0", "method": 1, "params": "bar"},
    ],
)
async def test_a_message_that_is_not_a_request_is_an_invalid_request(sample: Sample, payload: Any) -> None:
    resp = await ask(sample, payload)
    assert resp["error"]["code"] == errors.INVALID_REQUEST


async def test_an_invalid_request_keeps_its_id_when_the_id_itself_is_valid(sample: Sample) -> None:
    resp = await ask(sample, {"jsonrpc": "1.0", "method": "add", "id": 42})
    assert resp["id"] == 42 and resp["error"]["code"] == errors.INVALID_REQUEST


async def test_an_unknown_method_is_method_not_found(sample: Sample) -> None:
    resp = await ask(sample, req("no.such.method"))
    assert resp["error"]["code"] == errors.METHOD_NOT_FOUND
    assert "no.such.method" in resp["error"]["message"]


@pytest.mark.parametrize(
    ("method", "params", "named"),
    [
        ("add", {"a": 1}, "'b'"),
        ("add", {"a": 1, "b": "2"}, "'b'"),
        ("add", {"a": True, "b": 2}, "'a'"),
        ("add", {"a": 1.5, "b": 2}, "'a'"),
        ("add", {"a": 1, "b": 2, "c": 3}, "'c'"),
        ("add", [1, 2, 3], "at most 2"),
        ("greet", {"name": "x", "excited": "yes"}, "'excited'"),
        ("greet", {"name": "x", "times": "2"}, "'times'"),
        ("digest.len", {"digest": "ab" * 31}, "'digest'"),
        ("digest.len", {"digest": "zz" * 32}, "'digest'"),
        ("blob.reverse", {"blob": "abc"}, "'blob'"),
        ("blob.reverse", {"blob": "ab cd"}, "'blob'"),
        ("sum", {"values": [1, "2"]}, "'values': item 1"),
        ("sum", {"values": [1], "weights": {"all": "x"}}, "'weights': key 'all'"),
        ("color", {"name": "blue"}, "'name'"),
        ("echo", None, "'value'"),
    ],
)
async def test_bad_params_are_invalid_params_naming_the_parameter(
    sample: Sample, method: str, params: Any, named: str
) -> None:
    resp = await ask(sample, req(method, params))
    assert resp["error"]["code"] == errors.INVALID_PARAMS
    assert named in resp["error"]["message"]


async def test_typed_params_reach_the_handler_converted(sample: Sample) -> None:
    assert (await ask(sample, req("digest.len", ["00" * 32])))["result"] == 32
    assert (await ask(sample, req("blob.reverse", {"blob": "0102ff"})))["result"] == "ff0201"
    assert (await ask(sample, req("greet", {"name": "a", "excited": True, "times": 2})))[
        "result"
    ] == "hello a!hello a!"
    assert (await ask(sample, req("greet", {"name": "a", "times": None})))["result"] == "hello a"
    assert (await ask(sample, req("sum", {"values": [1, 2], "weights": {"all": 2}})))["result"] == 6.0
    assert (await ask(sample, req("color", ["green"])))["result"] == "GREEN"


async def test_an_unexpected_exception_is_an_internal_error_that_reveals_nothing(sample: Sample) -> None:
    with structlog.testing.capture_logs() as logs:
        resp = await ask(sample, req("fail.internal"))
    assert resp["error"] == {"code": errors.INTERNAL_ERROR, "message": "internal error"}
    assert "secret" not in json.dumps(resp)
    assert any(e["log_level"] == "error" and e.get("method") == "fail.internal" for e in logs)


async def test_a_result_that_cannot_be_serialized_is_an_internal_error(sample: Sample) -> None:
    with structlog.testing.capture_logs():
        resp = await ask(sample, req("fail.unserializable"))
    assert resp["error"]["code"] == errors.INTERNAL_ERROR


async def test_an_rpc_error_raised_by_a_handler_is_answered_as_it_is(sample: Sample) -> None:
    resp = await ask(sample, req("fail.rpc"))
    assert resp["error"] == {"code": -32099, "message": "custom failure", "data": {"hint": 1}}


@pytest.mark.parametrize(
    ("kind", "code", "data_code"),
    [
        ("busy", errors.BUSY, "busy"),
        ("not_found", errors.NOT_FOUND, "not_found"),
        ("not_leader", errors.UNAVAILABLE, "not_leader"),
        ("timeout", errors.TIMEOUT, "timeout"),
        ("too_slow", errors.TIMEOUT, "timeout"),
        ("bad_nonce", errors.BAD_NONCE, "bad_nonce"),
        ("invalid_signature", errors.INVALID_SIGNATURE, "invalid_signature"),
        ("crypto_signature", errors.INVALID_SIGNATURE, "invalid_signature"),
        ("unknown_patient", errors.INVALID_TX, "unknown_patient"),
        ("not_authorized", errors.NOT_AUTHORIZED, "not_authorized"),
        ("not_a_member", errors.NOT_AUTHORIZED, "not_a_member"),
        ("consent_not_found", errors.CONSENT_NOT_FOUND, "consent_not_found"),
        ("consent_expired", errors.CONSENT_EXPIRED, "consent_expired"),
        ("consent_revoked", errors.CONSENT_REVOKED, "consent_revoked"),
        ("consent_does_not_cover", errors.CONSENT_DOES_NOT_COVER, "consent_does_not_cover"),
        ("record_erased", errors.RECORD_ERASED, "record_erased"),
    ],
)
async def test_named_exceptions_map_to_their_documented_application_codes(
    sample: Sample, kind: str, code: int, data_code: str
) -> None:
    resp = await ask(sample, req("fail.app", {"kind": kind}))
    assert resp["error"]["code"] == code
    assert resp["error"]["data"] == {"code": data_code}
    assert resp["error"]["message"].startswith(errors.MESSAGES[code])


def test_every_application_code_is_documented_in_the_module_table() -> None:
    doc = errors.__doc__ or ""
    for code in errors.MESSAGES:
        assert f"\n{code}   {errors.MESSAGES[code]}" in doc, code


def test_every_ledger_error_maps_to_an_application_code() -> None:
    from emrp2p.ledger.errors import ERROR_CODES

    for code, cls in ERROR_CODES.items():
        exc = cls.__new__(cls)
        Exception.__init__(exc, "x")
        err = errors.error_for_exception(exc)
        assert err is not None and err.code <= -32000 and err.data == {"code": code}


async def test_a_notification_runs_but_gets_no_response(sample: Sample) -> None:
    assert await ask(sample, req("record", {"x": 7}, ...)) is None
    assert sample.notified == [7]


async def test_a_failing_notification_gets_no_response_either(sample: Sample) -> None:
    assert await ask(sample, req("no.such.method", None, ...)) is None
    with structlog.testing.capture_logs():
        assert await ask(sample, req("fail.internal", None, ...)) is None
    assert await ask(sample, req("add", {"a": "x"}, ...)) is None


async def test_a_batch_is_answered_in_an_array_without_entries_for_notifications(sample: Sample) -> None:
    batch = [
        req("add", [1, 2], 1),
        req("record", [5], ...),
        req("no.such", None, 2),
        req("add", {"a": 1}, 3),
        {"foo": "boo"},
        req("greet", ["x"], "4"),
    ]
    resp = await ask(sample, batch)
    assert [r["id"] for r in resp] == [1, 2, 3, None, "4"]
    assert resp[0]["result"] == 3
    assert resp[1]["error"]["code"] == errors.METHOD_NOT_FOUND
    assert resp[2]["error"]["code"] == errors.INVALID_PARAMS
    assert resp[3]["error"]["code"] == errors.INVALID_REQUEST
    assert resp[4]["result"] == "hello x"
    assert sample.notified == [5]


async def test_a_batch_of_notifications_only_gets_nothing_back(sample: Sample) -> None:
    assert await ask(sample, [req("record", [1], ...), req("record", [2], ...)]) is None
    assert sample.notified == [1, 2]


async def test_an_empty_batch_is_one_invalid_request_not_an_array(sample: Sample) -> None:
    resp = await ask(sample, [])
    assert resp["id"] is None and resp["error"]["code"] == errors.INVALID_REQUEST


async def test_a_batch_of_non_requests_gets_one_invalid_request_each(sample: Sample) -> None:
    resp = await ask(sample, [1, 2, 3])
    assert [r["error"]["code"] for r in resp] == [errors.INVALID_REQUEST] * 3


async def test_a_batch_with_broken_json_is_a_single_parse_error(sample: Sample) -> None:
    resp = await ask(sample, b'[{"jsonrpc": "2.0", "method": "add", "params": [1,2], "id": 1},{"jsonrpc"')
    assert resp["error"]["code"] == errors.PARSE_ERROR and resp["id"] is None


async def test_observe_sees_each_request_with_its_code_and_bounds_unknown_names(sample: Sample) -> None:
    seen: list[tuple[str, int]] = []
    await ask(
        sample,
        [req("add", [1, 2]), req("bogus.1"), req("add", ["x", 1], ...)],
        lambda m, c: seen.append((m, c)),
    )
    assert seen == [("add", 0), ("(unknown)", errors.METHOD_NOT_FOUND), ("add", errors.INVALID_PARAMS)]
