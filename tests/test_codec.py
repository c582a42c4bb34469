"""The codec: every ledger type round-trips, and no other bytes than the one canonical encoding decode.

Values are generated from the types' own field declarations (types and
limits), so a new field or type is covered without touching this file.
Mutations are either arbitrary (flips, truncation, trailing bytes), where
decoding must fail or give back a value that re-encodes to exactly the input,
or structural (the same value written non-canonically; a map, a float or a tag
smuggled in), where decoding must fail.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
import types
import typing
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import emrp2p.ledger.merkle
import emrp2p.ledger.state  # noqa: F401 - registers the state entry types
import emrp2p.ledger.types as lt
from emrp2p.codec import (
    MAX_BYTES,
    MAX_TEXT,
    CodecError,
    Limits,
    MalformedEncoding,
    NonCanonicalEncoding,
    TrailingBytes,
    decode,
    decode_any,
    encode,
)
from emrp2p.crypto.keyfile import NodeKeyFile, PatientKeystore

SMALL = 8  # cap generated collection sizes: the codec is the subject, not big data


def _payload_classes() -> list[type[Any]]:
    return [
        c
        for c in vars(lt).values()
        if isinstance(c, type) and issubclass(c, lt.Payload) and c is not lt.Payload
    ]


NO_LIMITS = Limits()


def strategy_for(tp: Any, limits: Limits = NO_LIMITS) -> st.SearchStrategy[Any]:
    if typing.get_origin(tp) is typing.Annotated:
        found = [m for m in typing.get_args(tp)[1:] if isinstance(m, Limits)]
        return strategy_for(typing.get_args(tp)[0], found[0] if found else limits)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        return st.booleans()
    if isinstance(tp, type) and issubclass(tp, enum.IntEnum):
        return st.sampled_from(list(tp))
    if tp is int:
        lo = -(1 << 63) if limits.min_value is None else limits.min_value
        hi = (1 << 64) - 1 if limits.max_value is None else limits.max_value
        return st.integers(lo, hi) | st.integers(lo, min(hi, max(lo, 0) + 300))
    if tp is bytes:
        if limits.exact_len is not None:
            return st.binary(min_size=limits.exact_len, max_size=limits.exact_len)
        return st.binary(max_size=min(limits.max_len or MAX_BYTES, 80))
    if tp is str:
        return st.text(max_size=min(limits.max_len or MAX_TEXT, 20)).filter(
            lambda s: len(s) <= (limits.max_len or MAX_TEXT)
        )
    if origin is tuple:
        item = strategy_for(args[0], Limits(exact_len=limits.exact_len))
        return st.lists(item, max_size=min(limits.max_len or SMALL, SMALL)).map(tuple)
    if origin in (typing.Union, types.UnionType):
        inner = next(a for a in args if a is not type(None))
        return st.none() | strategy_for(inner, limits)
    if tp is lt.Payload:
        return st.one_of([strategy_for(c) for c in _payload_classes()])
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp, include_extras=True)
        fields = {
            f.name: strategy_for(hints[f.name], f.metadata.get("limits", Limits()))
            for f in dataclasses.fields(tp)
        }
        return st.builds(tp, **fields)
    raise TypeError(f"no strategy for {tp!r}")


WIRE_TYPES: list[type[Any]] = [
    *_payload_classes(),
    lt.UnsignedTx,
    lt.Tx,
    lt.Vote,
    lt.VoteBody,
    lt.Signature,
    lt.Certificate,
    lt.BlockHeader,
    lt.Block,
    lt.Member,
    lt.Genesis,
    emrp2p.ledger.merkle.ProofEntry,
    emrp2p.ledger.merkle.StateProof,
    *[
        c
        for c in vars(emrp2p.ledger.state).values()
        if isinstance(c, type) and dataclasses.is_dataclass(c) and hasattr(c, "_wire_tag")
    ],
    NodeKeyFile,
    PatientKeystore,
]

any_value = st.one_of([strategy_for(c) for c in WIRE_TYPES])
fast = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("cls", WIRE_TYPES, ids=lambda c: c.__name__)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_type_round_trips(cls: type[Any], data: st.DataObject) -> None:
    value = data.draw(strategy_for(cls))
    encoded = encode(value)
    assert decode(cls, encoded) == value
    assert decode_any(encoded) == value
    assert encode(decode(cls, encoded)) == encoded


def _accept_only_canonical(data: bytes) -> None:
    try:
        value = decode_any(data)
    except CodecError:
        return
    assert encode(value) == data


@fast
@given(any_value, st.data())
def test_flipped_bytes_fail_or_decode_to_their_own_encoding(value: Any, data: st.DataObject) -> None:
    encoded = bytearray(encode(value))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(encoded) - 1))
        encoded[i] ^= data.draw(st.integers(1, 255))
    _accept_only_canonical(bytes(encoded))


@fast
@given(any_value, st.data())
def test_truncated_encodings_fail(value: Any, data: st.DataObject) -> None:
    encoded = encode(value)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(CodecError):
        decode_any(encoded[:cut])


@fast
@given(any_value, st.binary(min_size=1, max_size=8))
def test_trailing_bytes_fail(value: Any, extra: bytes) -> None:
    with pytest.raises(TrailingBytes):
        decode_any(encode(value) + extra)


# ---------------------------------------------------------------- structural mutations


def _head(major: int, n: int, longer: int) -> bytes:
    forms = [(24, None), (1 << 8, "B"), (1 << 16, ">H"), (1 << 32, ">I"), (1 << 64, ">Q")]
    smallest = next(i for i, (limit, _) in enumerate(forms) if n < limit)
    i = min(smallest + longer, 4)
    if i == 0:
        return bytes([major << 5 | n])
    fmt = forms[i][1]
    assert fmt is not None
    return bytes([major << 5 | (23 + i)]) + struct.pack(fmt, n)


class Rewriter:
    """Re-encodes a decoded CBOR tree, writing node number ``target`` (pre-order) the ``how`` way."""

    def __init__(self, target: int, how: str) -> None:
        self.target, self.how, self.seen, self.applied = target, how, 0, False

    def enc(self, v: Any) -> bytes:
        mine = self.seen == self.target
        self.seen += 1
        how = self.how if mine else ""
        if how == "tag":
            self.applied = True
            return b"\xc1" + self._plain(v, "")
        out = self._plain(v, how)
        return out

    def _plain(self, v: Any, how: str) -> bytes:
        longer = 1 if how == "long" else 0
        if v is None or isinstance(v, bool):
            return cbor2.dumps(v)
        if isinstance(v, int):
            if how == "float":
                self.applied = True
                return b"\xfb" + struct.pack(">d", float(v))
            self.applied |= longer == 1 and v < (1 << 64) and v >= -(1 << 64) and abs(v) < (1 << 32)
            return _head(0, v, longer) if v >= 0 else _head(1, -1 - v, longer)
        if isinstance(v, (bytes, str)):
            raw = v if isinstance(v, bytes) else v.encode()
            major = 2 if isinstance(v, bytes) else 3
            if how == "indefinite":
                self.applied = True
                return bytes([major << 5 | 31]) + _head(major, len(raw), 0) + raw + b"\xff"
            self.applied |= longer == 1 and len(raw) < (1 << 32)
            return _head(major, len(raw), longer) + raw
        if isinstance(v, list):
            items = b"".join(self.enc(x) for x in v)
            if how == "indefinite":
                self.applied = True
                return b"\x9f" + items + b"\xff"
            if how == "map":
                self.applied = True
                return _head(5, len(v), 0) + b"".join(_head(0, i, 0) + self.enc(x) for i, x in enumerate(v))
            self.applied |= longer == 1
            return _head(4, len(v), longer) + items
        raise TypeError(type(v))


@fast
@given(any_value, st.data(), st.sampled_from(["long", "indefinite", "float", "tag", "map"]))
def test_non_canonical_or_foreign_cbor_never_decodes(value: Any, data: st.DataObject, how: str) -> None:
    canonical = encode(value)
    tree = cbor2.loads(canonical)
    counter = Rewriter(-1, "")
    assert counter.enc(tree) == canonical, "the test's encoder writes canonical CBOR by default"
    rw = Rewriter(data.draw(st.integers(0, counter.seen - 1)), how)
    mutated = rw.enc(tree)
    if not rw.applied:
        return
    assert mutated != canonical
    with pytest.raises(CodecError):
        decode_any(mutated)


def test_an_int_in_a_longer_form_is_non_canonical() -> None:
    canonical = encode(lt.Noop(b""))
    assert canonical == bytes([0x82, 0x18, 180, 0x40])
    with pytest.raises(NonCanonicalEncoding):
        decode_any(bytes([0x82, 0x19, 0, 180, 0x40]))


def test_maps_floats_and_tags_are_malformed_or_refused() -> None:
    for bad in (
        cbor2.dumps({0: 180, 1: b""}),
        bytes([0x82, 0xFB]) + struct.pack(">d", 180.0) + b"\x40",
        bytes([0x82, 0x18, 180, 0xC2, 0x40]),
    ):
        with pytest.raises(CodecError):
            decode_any(bad)
    with pytest.raises(MalformedEncoding):
        decode_any(bytes([0x82, 0x18, 180, 0xD8, 100, 0x40]))  # a tag without built-in meaning


def _outcome(fn: Any, v: Any) -> Any:
    try:
        return ("ok", fn(v))
    except CodecError as e:
        return (type(e).__name__, str(e))


def test_the_compiled_decoder_accepts_and_refuses_exactly_what_the_generic_one_does() -> None:
    from emrp2p.codec import _FAST, _plain_decode, _plan
    from emrp2p.crypto import Identity
    from emrp2p.ledger.types import Noop, Tx, sign_tx

    tx = sign_tx(Identity.from_test_name("fast"), b"c" * 32, 7, Noop(b"tag"))
    _plan(Tx)
    good = [2, tx.sender, tx.nonce, [180, b"tag"], tx.signature]
    variants = [
        good,
        good[:-1],
        good + [b""],
        [2, tx.sender[:31], tx.nonce, [180, b"tag"], tx.signature],
        [2, tx.sender, -1, [180, b"tag"], tx.signature],
        [2, tx.sender, True, [180, b"tag"], tx.signature],
        [2, tx.sender, 1 << 64, [180, b"tag"], tx.signature],
        [2, tx.sender, tx.nonce, [180, b"x" * 65], tx.signature],
        [2, tx.sender, tx.nonce, [180, "tag"], tx.signature],
        [2, tx.sender, tx.nonce, [2, b"tag"], tx.signature],
        [2, tx.sender, tx.nonce, [180, b"tag"], bytearray(tx.signature)],
        "not a list",
    ]
    for v in variants:
        fast, slow = _outcome(_FAST[Tx], v), _outcome(lambda x: _plain_decode(Tx, x), v)
        if fast[0] == "ok":
            assert slow[0] == "ok" and fast[1] == slow[1] == tx
        else:
            assert fast == slow
    assert _outcome(_FAST[Tx], good) == ("ok", tx)


def test_a_transaction_gets_its_encoding_while_decoding_and_a_block_makes_its_own_from_theirs() -> None:
    """A leaf that keeps its encoding (a transaction) gets it while decoding; a block, which
    nests transactions, makes its own from their bytes when first asked (a second dumps of all
    its primitives would cost as much as decoding it), then keeps it for the proposal and
    both store writes."""
    from emrp2p.codec import _from_prim
    from emrp2p.consensus import Message, Propose
    from emrp2p.crypto import Identity
    from emrp2p.ledger.types import Block, BlockHeader, Noop, sign_block, sign_tx, tx_root

    who = Identity.from_test_name("lazy")
    txs = tuple(sign_tx(who, b"c" * 32, n, Noop(b"t")) for n in range(3))
    header = BlockHeader(b"c" * 32, 1, 0, b"p" * 32, who.public, 5, tx_root(txs), b"s" * 32, 3)
    block = sign_block(who, header, txs)
    raw = _from_prim(cbor2.loads(encode(block)))
    assert isinstance(raw, Block)
    assert all("encoded" in tx.__dict__ for tx in raw.txs)
    assert "encoded" not in raw.__dict__
    assert raw.encoded == encode(block)
    data = encode(Propose(0, block))
    decoded = decode(Message, data)
    assert isinstance(decoded, Propose)
    assert decoded.block.__dict__["encoded"] == encode(block)  # made by the canonical check, kept
    assert encode(decoded) == data


@pytest.mark.parametrize("n", [0, 1, 23, 24, 255, 256, 65535, 65536, 70000])
def test_an_array_head_is_the_one_cbor2_writes(n: int) -> None:
    from emrp2p.codec import _array_head

    head = _array_head(n)
    assert cbor2.dumps([0] * n, canonical=True) == head + b"\x00" * n


@pytest.mark.parametrize("n", [0, 1, 23, 24, 300])
def test_an_array_of_transactions_is_written_from_their_bytes_exactly_as_item_by_item(n: int) -> None:
    """A tuple of values that keep their encodings is written as one piece (the array's head,
    then their bytes); it must be the very bytes the generic encoding writes."""
    from emrp2p.codec import _to_prim
    from emrp2p.consensus import ForwardTxs
    from emrp2p.crypto import Identity
    from emrp2p.ledger.types import Noop, sign_tx

    who = Identity.from_test_name("join")
    txs = tuple(sign_tx(who, b"c" * 32, i, Noop(i.to_bytes(3, "big"))) for i in range(n))
    generic = cbor2.dumps([_to_prim(ForwardTxs(()))[0], [_to_prim(tx) for tx in txs]], canonical=True)
    assert encode(ForwardTxs(txs)) == generic
    assert decode(ForwardTxs, generic).txs == txs


def test_bad_items_are_refused_alike_before_and_after_the_fast_paths_warm() -> None:
    """Items of a tuple of records and members of a union go straight to their compiled
    decoders once known; what those refuse still gets the generic path's precise error."""
    from emrp2p.codec import OversizeValue, SchemaMismatch, UnknownType
    from emrp2p.consensus import ForwardTxs
    from emrp2p.crypto import Identity
    from emrp2p.ledger.types import Noop, sign_tx

    tx = sign_tx(Identity.from_test_name("warm"), b"c" * 32, 1, Noop(b"t"))
    good = [2, tx.sender, tx.nonce, [180, b"t"], tx.signature]
    tag = cbor2.loads(encode(ForwardTxs(())))[0]
    bad = {
        "short": ([2, tx.sender, tx.nonce, [180, b"t"]], SchemaMismatch),
        "foreign item": ([20, 0, 0, b"h" * 32, tx.sender, tx.signature], UnknownType),
        "payload over its limit": ([2, tx.sender, tx.nonce, [180, b"x" * 65], tx.signature], OversizeValue),
        "payload not a payload": (
            [2, tx.sender, tx.nonce, [22, tx.sender, tx.signature], tx.signature],
            UnknownType,
        ),
        "payload field of the wrong type": (
            [2, tx.sender, tx.nonce, [180, "t"], tx.signature],
            SchemaMismatch,
        ),
        "tag a bool": ([True, tx.sender, tx.nonce, [180, b"t"], tx.signature], SchemaMismatch),
    }
    for _ in range(2):  # the first round warms the fast paths up, the second runs on them
        assert decode(ForwardTxs, cbor2.dumps([tag, [good, good]])).txs == (tx, tx)
        for item, error in bad.values():
            with pytest.raises(error):
                decode(ForwardTxs, cbor2.dumps([tag, [good, item]]))
