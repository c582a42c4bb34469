"""Method registry: validates a request's params against the handler's signature.

A handler is a plain (preferably async) function whose parameters say what the
method takes::

    @dispatcher.method("chain.block")
    async def block(height: int, with_txs: bool = False) -> dict[str, Any]: ...

Params arrive by name (a JSON object) or by position (a JSON array). Each is
checked against the annotation before the handler runs, so a handler never sees
a wrong type, and a bad call answers -32602 with a message naming the parameter.

Supported annotations: ``int`` (not bool), ``float``, ``str``, ``bool``,
``bytes`` (sent as a hex string; ``Annotated[bytes, HexBytes(exact_len=32)]``
or the aliases ``Bytes32``/``Bytes16``/``Bytes64`` to fix the length),
``X | None``, ``Literal[...]``, ``list[X]``, ``dict[str, X]`` and ``Any``
(any JSON value). Anything else is refused when the handler is registered.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from emrp2p.rpc.errors import INVALID_PARAMS, METHOD_NOT_FOUND, RpcError

__all__ = ["Dispatcher", "HexBytes", "Bytes16", "Bytes32", "Bytes64", "Params"]

Params = list[Any] | dict[str, Any] | None
F = TypeVar("F", bound=Callable[..., Any])


@dataclasses.dataclass(frozen=True)
class HexBytes:
    """Length limits for a ``bytes`` parameter (sent as hex), used inside ``Annotated``."""

    exact_len: int | None = None
    max_len: int | None = None


Bytes16 = Annotated[bytes, HexBytes(exact_len=16)]
Bytes32 = Annotated[bytes, HexBytes(exact_len=32)]
Bytes64 = Annotated[bytes, HexBytes(exact_len=64)]


class _BadParam(Exception):
    pass


Check = Callable[[Any], Any]


def _any(v: Any) -> Any:
    return v


def _checker(tp: Any) -> Check:
    """A function that validates (and for bytes, converts) one JSON value, raising _BadParam."""
    if tp is Any or tp is object or tp is inspect.Parameter.empty:
        return _any
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Annotated:
        base, *extras = args
        limits = next((x for x in extras if isinstance(x, HexBytes)), None)
        if base is bytes and limits is not None:
            return _bytes_checker(limits)
        return _checker(base)
    if tp is bool:

        def check_bool(v: Any) -> Any:
            if type(v) is not bool:
                raise _BadParam(f"expected a boolean, got {_kind(v)}")
            return v

        return check_bool
    if tp is int:

        def check_int(v: Any) -> Any:
            if type(v) is not int:
                raise _BadParam(f"expected an integer, got {_kind(v)}")
            return v

        return check_int
    if tp is float:

        def check_float(v: Any) -> Any:
            if type(v) not in (int, float):
                raise _BadParam(f"expected a number, got {_kind(v)}")
            return float(v)

        return check_float
    if tp is str:

        def check_str(v: Any) -> Any:
            if type(v) is not str:
                raise _BadParam(f"expected a string, got {_kind(v)}")
            return v

        return check_str
    if tp is bytes:
        return _bytes_checker(HexBytes())
    if origin is typing.Literal:
        allowed = args

        def check_literal(v: Any) -> Any:
            if v not in allowed or type(v) not in {type(a) for a in allowed}:
                raise _BadParam(f"expected one of {', '.join(map(repr, allowed))}")
            return v

        return check_literal
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) != 1 or len(args) != 2:
            raise TypeError(f"only Optional unions are supported, not {tp!r}")
        inner = _checker(non_none[0])

        def check_optional(v: Any) -> Any:
            return None if v is None else inner(v)

        return check_optional
    if origin is list:
        item = _checker(args[0]) if args else _any

        def check_list(v: Any) -> Any:
            if type(v) is not list:
                raise _BadParam(f"expected an array, got {_kind(v)}")
            out = []
            for i, x in enumerate(v):
                try:
                    out.append(item(x))
                except _BadParam as e:
                    raise _BadParam(f"item {i}: {e}") from None
            return out

        return check_list
    if origin is dict:
        if args and args[0] is not str:
            raise TypeError(f"dict parameters must have str keys, not {tp!r}")
        value = _checker(args[1]) if args else _any

        def check_dict(v: Any) -> Any:
            if type(v) is not dict:
                raise _BadParam(f"expected an object, got {_kind(v)}")
            out = {}
            for k, x in v.items():
                try:
                    out[k] = value(x)
                except _BadParam as e:
                    raise _BadParam(f"key {k!r}: {e}") from None
            return out

        return check_dict
    raise TypeError(f"unsupported parameter annotation {tp!r}")


def _bytes_checker(limits: HexBytes) -> Check:
    def check_bytes(v: Any) -> Any:
        if type(v) is not str:
            raise _BadParam(f"expected a hex string, got {_kind(v)}")
        try:
            b = bytes.fromhex(v)
        except ValueError:
            b = None
        if b is None or 2 * len(b) != len(v):  # fromhex would skip whitespace
            raise _BadParam("expected a hex string (an even number of hex digits)")
        n = len(b)
        if limits.exact_len is not None and n != limits.exact_len:
            raise _BadParam(f"expected {limits.exact_len} bytes, got {n}")
        if limits.max_len is not None and n > limits.max_len:
            raise _BadParam(f"expected at most {limits.max_len} bytes, got {n}")
        return b

    return check_bytes


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(v), type(v).__name__)


@dataclasses.dataclass(frozen=True)
class _Param:
    name: str
    check: Check
    required: bool
    positional: bool


@dataclasses.dataclass(frozen=True)
class _Method:
    name: str
    func: Callable[..., Any]
    params: tuple[_Param, ...]
    is_async: bool

    def bind(self, params: Params) -> dict[str, Any]:
        by_name = {p.name: p for p in self.params}
        given: dict[str, Any]
        if params is None:
            given = {}
        elif isinstance(params, list):
            positional = [p for p in self.params if p.positional]
            if len(params) > len(positional):
                raise RpcError(
                    INVALID_PARAMS,
                    f"invalid params: {self.name} takes at most {len(positional)} positional "
                    f"parameters, got {len(params)}",
                )
            given = {p.name: v for p, v in zip(positional[: len(params)], params, strict=True)}
        else:
            unknown = sorted(set(params) - set(by_name))
            if unknown:
                raise RpcError(INVALID_PARAMS, f"invalid params: unexpected parameter {unknown[0]!r}")
            given = params
        kwargs: dict[str, Any] = {}
        for p in self.params:
            if p.name not in given:
                if p.required:
                    raise RpcError(INVALID_PARAMS, f"invalid params: missing required parameter {p.name!r}")
                continue
            try:
                kwargs[p.name] = p.check(given[p.name])
            except _BadParam as e:
                raise RpcError(INVALID_PARAMS, f"invalid params: {p.name!r}: {e}") from None
        return kwargs


class Dispatcher:
    """Named methods with validated params; ``call`` runs one."""

    def __init__(self) -> None:
        self._methods: dict[str, _Method] = {}

    def method(self, name: str) -> Callable[[F], F]:
        """Decorator registering ``func`` as the handler of method ``name``."""

        def register(func: F) -> F:
            self.add(name, func)
            return func

        return register

    def add(self, name: str, func: Callable[..., Any]) -> None:
        """Register ``func`` under ``name``; its signature is checked now, not at call time."""
        if name in self._methods:
            raise ValueError(f"method {name!r} already registered")
        if name.startswith("rpc."):
            raise ValueError("method names starting with 'rpc.' are reserved by JSON-RPC 2.0")
        sig = inspect.signature(func)
        hints = typing.get_type_hints(func, include_extras=True)
        params = []
        for p in sig.parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"{name}: handlers cannot take *args or **kwargs")
            if p.kind is p.POSITIONAL_ONLY:
                raise TypeError(f"{name}: handlers cannot take positional-only parameters")
            check = _checker(hints.get(p.name, Any))
            params.append(
                _Param(
                    name=p.name,
                    check=check,
                    required=p.default is p.empty,
                    positional=p.kind is p.POSITIONAL_OR_KEYWORD,
                )
            )
        self._methods[name] = _Method(
            name=name,
            func=func,
            params=tuple(params),
            is_async=inspect.iscoroutinefunction(func),
        )

    def __contains__(self, name: object) -> bool:
        return name in self._methods

    def names(self) -> list[str]:
        return sorted(self._methods)

    async def call(self, name: str, params: Params) -> Any:
        """Run method ``name``; -32601/-32602 as ``RpcError``; the handler's own errors propagate."""
        m = self._methods.get(name)
        if m is None:
            raise RpcError(METHOD_NOT_FOUND, f"method not found: {name}")
        kwargs = m.bind(params)
        if m.is_async:
            return await m.func(**kwargs)
        result = m.func(**kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result
