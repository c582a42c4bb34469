"""Canonical CBOR for every wire and ledger type.

Each type is a frozen dataclass registered with ``@wire(tag)``. Its one encoding
is the CBOR array ``[tag, field1, field2, ...]`` in declaration order, written
with cbor2's canonical mode. Decoding is strict: the bytes must decode to
exactly that shape, with the declared field types and limits, with nothing
trailing, and must re-encode to the very same bytes (so there is exactly one
accepted encoding of every value, and hashes over encodings are stable).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import io
import operator
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, TypeVar

import cbor2

__all__ = [
    "CodecError",
    "MalformedEncoding",
    "NonCanonicalEncoding",
    "SchemaMismatch",
    "OversizeValue",
    "TrailingBytes",
    "UnknownType",
    "wire",
    "encode",
    "decode",
    "decode_any",
    "to_plain",
    "Limits",
    "MAX_BYTES",
    "MAX_ITEMS",
    "MAX_TEXT",
]

MAX_BYTES = 1 << 20
MAX_TEXT = 4096
MAX_ITEMS = 100_000
MAX_MESSAGE = 64 << 20
INT_MIN = -(1 << 63)
INT_MAX = (1 << 64) - 1


class CodecError(ValueError):
    """Bytes that are not a valid encoding of the expected type."""


class MalformedEncoding(CodecError):
    """Not well-formed CBOR, or CBOR of a kind we never write (maps, floats, tags)."""


class NonCanonicalEncoding(CodecError):
    """Valid CBOR for the value, but not its one canonical encoding."""


class SchemaMismatch(CodecError):
    """Wrong number of fields, or a field of the wrong type."""


class OversizeValue(CodecError):
    """A field or the whole message exceeds its limit."""


class TrailingBytes(CodecError):
    """Bytes left over after the encoded value."""


class UnknownType(CodecError):
    """A type tag that no registered type carries (or not the one expected)."""


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per-field limits, attached with ``field(metadata={"limits": Limits(...)})``."""

    max_len: int | None = None
    exact_len: int | None = None
    min_value: int | None = None
    max_value: int | None = None


_REGISTRY: dict[int, type[Any]] = {}
_PLAIN: dict[type[Any], tuple[tuple[str, ...], tuple[Callable[[Any], Any], ...], bool]] = {}
"""Wire types with no __post_init__ or slots: decoded without calling their __init__."""
_PLANS: dict[type[Any], tuple[int, tuple[tuple[str, Callable[[Any], Any], Callable[[Any], Any]], ...]]] = {}

T = TypeVar("T")


def wire(tag: int) -> Callable[[type[T]], type[T]]:
    """Register a frozen dataclass as a wire type with a unique integer tag."""

    def register(cls: type[T]) -> type[T]:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__} must be a dataclass")
        if tag in _REGISTRY and _REGISTRY[tag] is not cls:
            raise TypeError(f"wire tag {tag} already used by {_REGISTRY[tag].__name__}")
        _REGISTRY[tag] = cls
        setattr(cls, "_wire_tag", tag)  # noqa: B010 - a class attribute the codec reads back
        return cls

    return register


def _tag_hook(decoder: Any, tag: Any) -> Any:
    raise MalformedEncoding(f"CBOR semantic tag {tag.tag} is not allowed")


def _plan(cls: type[Any]) -> tuple[int, tuple[tuple[str, Callable[[Any], Any], Callable[[Any], Any]], ...]]:
    plan = _PLANS.get(cls)
    if plan is not None:
        return plan
    tag = getattr(cls, "_wire_tag", None)
    if tag is None or _REGISTRY.get(tag) is not cls:
        raise UnknownType(f"{cls.__name__} is not a registered wire type")
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = []
    for f in dataclasses.fields(cls):
        limits = f.metadata.get("limits", Limits())
        enc, dec = _converters(hints[f.name], limits, f"{cls.__name__}.{f.name}")
        fields.append((f.name, enc, dec))
    plan = (tag, tuple(fields))
    _PLANS[cls] = plan
    if not hasattr(cls, "__post_init__") and not hasattr(cls, "__slots__"):
        # A type that keeps its encoding gets it while decoding (one dumps of the decoded
        # primitives), unless it nests values keeping their own: then its encoding is made
        # from theirs when first asked for (a block, from its transactions' bytes).
        eager = _keeps_encoding(cls) and not any(
            _nests_encodings(hints[f.name]) for f in dataclasses.fields(cls)
        )
        names, decoders = tuple(f[0] for f in fields), tuple(f[2] for f in fields)
        _PLAIN[cls] = (names, decoders, eager)
        _FAST[cls] = _compile_fast(cls, names, decoders, eager)
    return plan


def _nests_encodings(tp: Any) -> bool:
    """Whether a field of type ``tp`` may hold a value that keeps its own encoding."""
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _keeps_encoding(tp)
    return any(_nests_encodings(a) for a in typing.get_args(tp) if a is not Ellipsis)


def _identity(v: Any) -> Any:
    return v


def _inline(decoder: Callable[[Any], Any], condition: str) -> None:
    """Attach to a field decoder the test (on ``{v}``) that accepts exactly what it accepts
    unchanged, so that :func:`_compile_fast` can inline it."""
    decoder._inline = condition  # type: ignore[attr-defined]


_FAST: dict[type[Any], Callable[[Any], Any]] = {}
"""Per plain wire type, a decoder compiled with its simple field checks inlined."""


def _compile_fast(
    cls: type[Any], names: tuple[str, ...], decoders: tuple[Callable[[Any], Any], ...], eager: bool
) -> Callable[[Any], Any]:
    """One function per type: unpack, test every simple field inline, build the object.

    Anything the inline tests refuse goes to the generic path, which raises the precise
    error; so the fast path accepts exactly what the generic one accepts.
    """
    n = len(names)
    env: dict[str, Any] = {
        "_slow": functools.partial(_plain_decode, cls),
        "_cls": cls,
        "_new": object.__new__,
        "_set": object.__setattr__,
        "_dumps": cbor2.dumps,
    }
    tests = []
    values = []
    for i, dec in enumerate(decoders):
        cond = getattr(dec, "_inline", None)
        if cond is None:
            env[f"_d{i}"] = dec
            values.append(f"_d{i}(f{i})")
        else:
            tests.append("(" + cond.format(v=f"f{i}") + ")")
            values.append(f"f{i}")
    unpack = ", ".join(["_"] + [f"f{i}" for i in range(n)])
    body = [
        "def fast(v):",
        f"    if type(v) is not list or len(v) != {n + 1}:",
        "        return _slow(v)",
        f"    {unpack}, = v",
    ]
    if tests:
        body += [f"    if not ({' and '.join(tests)}):", "        return _slow(v)"]
    items = ", ".join(f"{name!r}: {val}" for name, val in zip(names, values, strict=True))
    body.append(f"    d = {{{items}}}")
    if eager:
        body.append("    d['encoded'] = _dumps(v, canonical=True)")
    body += ["    obj = _new(_cls)", "    _set(obj, '__dict__', d)", "    return obj"]
    exec("\n".join(body), env)  # noqa: S102 - source built above from field specs only
    fast: Callable[[Any], Any] = env["fast"]
    return fast


def _converters(tp: Any, limits: Limits, where: str) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Annotated:
        found = [m for m in args[1:] if isinstance(m, Limits)]
        return _converters(args[0], found[0] if found else limits, where)
    if tp is bool:

        def dec_bool(v: Any) -> bool:
            if type(v) is not bool:
                raise SchemaMismatch(f"{where}: expected bool")
            return v

        _inline(dec_bool, "type({v}) is bool")
        return _identity, dec_bool
    if tp is int or (isinstance(tp, type) and issubclass(tp, enum.IntEnum)):
        lo = INT_MIN if limits.min_value is None else limits.min_value
        hi = INT_MAX if limits.max_value is None else limits.max_value
        conv: Callable[[int], Any] = tp if tp is not int else _identity

        def dec_int(v: Any) -> Any:
            if type(v) is not int:
                raise SchemaMismatch(f"{where}: expected int")
            if not lo <= v <= hi:
                raise OversizeValue(f"{where}: {v} out of range [{lo}, {hi}]")
            try:
                return conv(v)
            except ValueError as e:
                raise SchemaMismatch(f"{where}: {e}") from None

        enc_int: Callable[[Any], Any] = int if tp is not int else _identity
        if tp is int:
            _inline(dec_int, f"type({{v}}) is int and {lo} <= {{v}} <= {hi}")
        return enc_int, dec_int
    if tp is bytes or tp is str:
        kind = tp
        max_len = limits.max_len if limits.max_len is not None else (MAX_BYTES if tp is bytes else MAX_TEXT)
        exact = limits.exact_len

        def dec_str(v: Any) -> Any:
            if type(v) is not kind:
                raise SchemaMismatch(f"{where}: expected {kind.__name__}")
            if exact is not None and len(v) != exact:
                raise SchemaMismatch(f"{where}: expected exactly {exact} bytes, got {len(v)}")
            if len(v) > max_len:
                raise OversizeValue(f"{where}: length {len(v)} over {max_len}")
            return v

        if exact is None:
            size = f"len({{v}}) <= {max_len}"
        else:
            size = f"len({{v}}) == {exact}" if exact <= max_len else "False"
        _inline(dec_str, f"type({{v}}) is {kind.__name__} and {size}")
        return _identity, dec_str
    if origin is tuple:
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"{where}: only tuple[X, ...] is supported")
        # On a tuple, exact_len limits each item and max_len the item count.
        item_tp = args[0]
        enc_item, dec_item = _converters(item_tp, Limits(exact_len=limits.exact_len), where + "[]")
        max_items = limits.max_len if limits.max_len is not None else MAX_ITEMS

        if isinstance(item_tp, type) and dataclasses.is_dataclass(item_tp) and _keeps_encoding(item_tp):

            def enc_tuple(v: Any) -> Any:
                # Canonical CBOR nests without context: the array's head, then each item's own
                # encoding. One piece for the whole array instead of one per item.
                if all(type(x) is item_tp for x in v):
                    return _Encoded(_array_head(len(v)) + b"".join([x.encoded for x in v]))
                return [enc_item(x) for x in v]

        else:

            def enc_tuple(v: Any) -> Any:
                return [enc_item(x) for x in v]

        def dec_tuple(v: Any) -> Any:
            if type(v) is not list:
                raise SchemaMismatch(f"{where}: expected array")
            if len(v) > max_items:
                raise OversizeValue(f"{where}: {len(v)} items over {max_items}")
            return tuple([dec_item(x) for x in v])

        return enc_tuple, dec_tuple
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1 and len(args) == 2:
            enc_inner, dec_inner = _converters(non_none[0], limits, where)

            def enc_opt(v: Any) -> Any:
                return None if v is None else enc_inner(v)

            def dec_opt(v: Any) -> Any:
                return None if v is None else dec_inner(v)

            return enc_opt, dec_opt
        raise TypeError(f"{where}: only Optional unions are supported; use a base class")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        base = tp
        tag = getattr(tp, "_wire_tag", None)
        exact_cls = tag is not None and _REGISTRY.get(tag) is tp

        def dec_record(v: Any) -> Any:
            if exact_cls and type(v) is list and v and type(v[0]) is int and v[0] == tag:
                fast = _FAST.get(base)
                if fast is not None:
                    return fast(v)  # an object of exactly ``base``, or the precise error
            obj = _from_prim(v)
            if exact_cls and type(obj) is not base or not isinstance(obj, base):
                raise UnknownType(f"{where}: expected {base.__name__}, got {type(obj).__name__}")
            return obj

        return _nested_prim, dec_record
    if isinstance(tp, type) and not dataclasses.is_dataclass(tp) and getattr(tp, "_wire_base", False):
        base2 = tp
        known: dict[int, Callable[[Any], Any]] = {}
        """Tag -> fast decoder of the members of the union met so far."""

        def dec_base(v: Any) -> Any:
            if type(v) is list and v and type(v[0]) is int:
                fast = known.get(v[0])
                if fast is not None:
                    return fast(v)
            obj = _from_prim(v)
            if not isinstance(obj, base2):
                raise UnknownType(f"{where}: {type(obj).__name__} is not a {base2.__name__}")
            fast = _FAST.get(type(obj))
            if fast is not None:
                known[v[0]] = fast
            return obj

        return _nested_prim, dec_base
    raise TypeError(f"{where}: unsupported field type {tp!r}")


class _Encoded:
    """A nested value's canonical encoding, written as it is (see :func:`_nested_prim`)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def _array_head(n: int) -> bytes:
    """The canonical CBOR head of an array of ``n`` items (major type 4, shortest length)."""
    if n < 24:
        return bytes((0x80 + n,))
    if n < 0x100:
        return b"\x98" + n.to_bytes(1, "big")
    if n < 0x10000:
        return b"\x99" + n.to_bytes(2, "big")
    return b"\x9a" + n.to_bytes(4, "big")  # MAX_ITEMS bounds every array well below 2**32


def _write_encoded(encoder: Any, value: Any) -> None:
    if type(value) is not _Encoded:
        raise TypeError(f"{type(value).__name__} is not a wire primitive")
    encoder.write(value.data)


_KEEPS_ENCODING: dict[type[Any], bool] = {}


def _keeps_encoding(cls: type[Any]) -> bool:
    """Whether ``cls`` caches its own canonical encoding (an ``encoded`` cached property)."""
    keeps = _KEEPS_ENCODING.get(cls)
    if keeps is None:
        keeps = _KEEPS_ENCODING[cls] = isinstance(getattr(cls, "encoded", None), functools.cached_property)
    return keeps


def _nested_prim(v: Any) -> Any:
    """A field's record value: its cached encoding if it keeps one, else its primitive form.

    Canonical CBOR nests without context (an array's encoding is its head, then each item's
    own encoding), so writing a transaction's cached bytes inside a block or a batch gives
    the same bytes as encoding it again, for a fraction of the cost.
    """
    if _keeps_encoding(type(v)):
        return _Encoded(v.encoded)
    return _to_prim(v)


def _to_prim(obj: Any) -> list[Any]:
    tag, fields = _plan(type(obj))
    out: list[Any] = [tag]
    for name, enc, _ in fields:
        out.append(enc(getattr(obj, name)))
    return out


def _from_prim(v: Any) -> Any:
    if type(v) is not list or not v:
        raise SchemaMismatch("expected a tagged array")
    tag = v[0]
    if type(tag) is not int:
        raise SchemaMismatch("type tag must be an integer")
    cls = _REGISTRY.get(tag)
    if cls is None:
        raise UnknownType(f"unknown type tag {tag}")
    fast = _FAST.get(cls)
    if fast is None:
        _, fields = _plan(cls)  # the first use of a plain type compiles its fast decoder
        fast = _FAST.get(cls)
        if fast is None:
            if len(v) != len(fields) + 1:
                raise SchemaMismatch(f"{cls.__name__}: expected {len(fields)} fields, got {len(v) - 1}")
            kwargs = {name: dec(x) for (name, _, dec), x in zip(fields, v[1:], strict=True)}
            try:
                return cls(**kwargs)
            except (TypeError, ValueError) as e:
                raise SchemaMismatch(f"{cls.__name__}: {e}") from None
    return fast(v)


def _plain_decode(cls: type[Any], v: list[Any]) -> Any:
    """The generic decoding of a plain type (every field checked by its decoder), which skips
    the frozen dataclass __init__ (one object.__setattr__ per field)."""
    _, fields = _plan(cls)
    if len(v) != len(fields) + 1:
        raise SchemaMismatch(f"{cls.__name__}: expected {len(fields)} fields, got {len(v) - 1}")
    names, decoders, eager = _PLAIN[cls]
    obj = object.__new__(cls)
    d = dict(zip(names, map(operator.call, decoders, v[1:]), strict=True))
    if eager:
        # The canonical encoding of a part is the part of the canonical whole (which
        # ``decode`` checks), so this equals ``encode(obj)`` at a fraction of the cost.
        d["encoded"] = cbor2.dumps(v, canonical=True)
    _set_dict(obj, d)
    return obj


def _set_dict(obj: Any, d: dict[str, Any]) -> None:
    object.__setattr__(obj, "__dict__", d)


class WireBase:
    """Base for a family of wire types usable as one field type (a tagged union)."""

    _wire_base: ClassVar[bool] = True


def encode(obj: Any) -> bytes:
    """The canonical encoding of a registered wire value."""
    return cbor2.dumps(_to_prim(obj), canonical=True, default=_write_encoded)


def _loads_strict(data: bytes, max_size: int) -> Any:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedEncoding("expected bytes")
    if len(data) > max_size:
        raise OversizeValue(f"message of {len(data)} bytes over {max_size}")
    try:
        # Reads the first value and ignores what follows: _check_canonical catches trailing bytes.
        return cbor2.loads(data, tag_hook=_tag_hook)
    except CodecError:
        raise
    except Exception as e:  # cbor2 raises several types for broken input
        raise MalformedEncoding(f"not well-formed CBOR: {e}") from None


def _check_canonical(obj: Any, data: bytes) -> None:
    """``data`` must be exactly ``encode(obj)``: the one canonical encoding of what it decoded to.

    Re-encoding the object (not the decoded primitives) reuses the canonical encodings its
    nested transactions computed while decoding; a value that keeps its own encoding (a
    transaction) computed exactly that while decoding, so it is not encoded again.
    """
    expected = obj.encoded if _keeps_encoding(type(obj)) else encode(obj)
    if expected != bytes(data):
        fp = io.BytesIO(data)
        cbor2.CBORDecoder(fp, tag_hook=_tag_hook).decode()
        if fp.tell() != len(data):
            raise TrailingBytes(f"{len(data) - fp.tell()} bytes after the value")
        raise NonCanonicalEncoding("encoding is not canonical")


def decode(cls: type[T], data: bytes, *, max_size: int = MAX_MESSAGE) -> T:
    """Strictly decode ``data`` as a value of exactly ``cls`` (or a subclass for a base)."""
    value = _loads_strict(data, max_size)
    obj = _from_prim(value)
    if not isinstance(obj, cls):
        raise UnknownType(f"expected {cls.__name__}, got {type(obj).__name__}")
    _check_canonical(obj, data)
    return obj


def decode_any(data: bytes, *, max_size: int = MAX_MESSAGE) -> Any:
    """Strictly decode any registered wire value."""
    value = _loads_strict(data, max_size)
    obj = _from_prim(value)
    _check_canonical(obj, data)
    return obj


def to_plain(obj: Any) -> Any:
    """A JSON-friendly view of a wire value (bytes as hex), for RPC and logs."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {"type": type(obj).__name__}
        for f in dataclasses.fields(obj):
            out[f.name] = to_plain(getattr(obj, f.name))
        return out
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj).hex()
    if isinstance(obj, tuple):
        return [to_plain(x) for x in obj]
    if isinstance(obj, enum.Enum):
        return obj.name.lower()
    return obj
