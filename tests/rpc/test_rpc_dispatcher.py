"""Registering handlers: signatures are checked once, when registered."""

from __future__ import annotations

from typing import Any

import pytest

from emrp2p.rpc import Dispatcher, RpcError
from emrp2p.rpc.errors import INVALID_PARAMS


def test_an_unsupported_annotation_is_refused_at_registration() -> None:
    d = Dispatcher()

    async def h(x: set[int]) -> None: ...

    with pytest.raises(TypeError, match="unsupported"):
        d.add("h", h)


def test_var_args_and_non_optional_unions_are_refused() -> None:
    d = Dispatcher()

    async def star(*xs: int) -> None: ...

    async def union(x: int | str) -> None: ...

    with pytest.raises(TypeError):
        d.add("star", star)
    with pytest.raises(TypeError):
        d.add("union", union)


def test_a_method_name_is_registered_once_and_rpc_names_are_reserved() -> None:
    d = Dispatcher()

    async def h() -> None: ...

    d.add("h", h)
    with pytest.raises(ValueError, match="already"):
        d.add("h", h)
    with pytest.raises(ValueError, match="reserved"):
        d.add("rpc.discover", h)
    assert "h" in d and d.names() == ["h"]


async def test_keyword_only_parameters_cannot_be_given_by_position() -> None:
    d = Dispatcher()

    @d.method("k")
    async def k(a: int, *, b: int = 0) -> int:
        return a + b

    assert await d.call("k", {"a": 1, "b": 2}) == 3
    with pytest.raises(RpcError) as e:
        await d.call("k", [1, 2])
    assert e.value.code == INVALID_PARAMS


async def test_a_sync_handler_and_an_unannotated_parameter_work() -> None:
    d = Dispatcher()

    @d.method("s")
    def s(x: Any, y=1) -> list[Any]:  # type: ignore[no-untyped-def]
        return [x, y]

    assert await d.call("s", [{"a": None}]) == [{"a": None}, 1]
