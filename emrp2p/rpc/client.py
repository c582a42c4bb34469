"""Clients for the daemon's JSON-RPC socket: async (trio) and a plain blocking one.

``RpcClient`` keeps one connection, pipelines calls from any number of tasks
(responses are matched by id) and routes event notifications to
subscriptions. ``SyncRpcClient`` / ``call_sync`` use the standard ``socket``
module only, for the CLI and for benchmarks driving a daemon from another
process. Both raise ``RpcError`` (with the server's code, message and data)
when the server answers with an error, and ``ConnectionError`` when the
connection is lost.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import trio

from emrp2p.rpc.errors import RpcError, SubscriptionDropped
from emrp2p.rpc.framing import LineReader
from emrp2p.rpc.protocol import encode_json

__all__ = ["RpcClient", "ClientSubscription", "SyncRpcClient", "call_sync", "DEFAULT_MAX_RESPONSE_BYTES"]

DEFAULT_MAX_RESPONSE_BYTES = 256 << 20

Params = list[Any] | dict[str, Any] | None


def _params(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Params:
    if args and kwargs:
        raise TypeError("pass params by position or by name, not both")
    if args:
        return list(args)
    return kwargs or None


def _request(id_: int | None, method: str, params: Params) -> dict[str, Any]:
    req: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        req["params"] = params
    if id_ is not None:
        req["id"] = id_
    return req


def _result(response: Mapping[str, Any]) -> Any:
    err = response.get("error")
    if err is not None:
        raise RpcError(err.get("code", 0), err.get("message", ""), err.get("data"))
    return response.get("result")


class _Waiter:
    def __init__(self, subscribe_topic: str | None = None) -> None:
        self.event = trio.Event()
        self.response: Mapping[str, Any] | None = None
        self.failure: BaseException | None = None
        self.subscribe_topic = subscribe_topic
        self.subscription: ClientSubscription | None = None


class ClientSubscription:
    """Events of one subscription as ``(topic, event)``; ends with ``SubscriptionDropped``
    if the server (or this client's own queue) dropped it."""

    def __init__(self, client: RpcClient, id_: int, topic: str, queue_size: int) -> None:
        self.id = id_
        self.topic = topic
        self.dropped = False
        self._client = client
        self._send, self._recv = trio.open_memory_channel[tuple[str, Any]](queue_size)

    def _deliver(self, topic: str, event: Any) -> bool:
        try:
            self._send.send_nowait((topic, event))
        except trio.WouldBlock:
            self._drop()
            return False
        except trio.ClosedResourceError:
            return False
        return True

    def _drop(self) -> None:
        self.dropped = True
        self._send.close()

    async def receive(self) -> tuple[str, Any]:
        try:
            return await self._recv.receive()
        except trio.EndOfChannel:
            if self.dropped:
                raise SubscriptionDropped(f"subscription {self.id} was dropped") from None
            raise

    def __aiter__(self) -> ClientSubscription:
        return self

    async def __anext__(self) -> tuple[str, Any]:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def unsubscribe(self) -> None:
        self._send.close()
        if self._client._subs.pop(self.id, None) is not None and not self.dropped:
            with contextlib.suppress(ConnectionError, RpcError):
                await self._client.call("events.unsubscribe", subscription=self.id)

    async def __aenter__(self) -> ClientSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.unsubscribe()


class RpcClient:
    """``async with RpcClient(path) as client: await client.call("node.status")``."""

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        *,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        event_queue_size: int = 1024,
    ) -> None:
        self.socket_path = os.fspath(socket_path)
        self.max_response_bytes = max_response_bytes
        self.event_queue_size = event_queue_size
        self._ids = itertools.count(1)
        self._pending: dict[int, _Waiter] = {}
        self._subs: dict[int, ClientSubscription] = {}
        self._send_lock = trio.Lock()
        self._failure: BaseException | None = None
        self._stack = contextlib.AsyncExitStack()
        self._stream: trio.SocketStream | None = None
        self._nursery: trio.Nursery | None = None

    async def __aenter__(self) -> RpcClient:
        async with contextlib.AsyncExitStack() as stack:
            self._stream = await trio.open_unix_socket(self.socket_path)
            stack.push_async_callback(self._stream.aclose)
            self._nursery = await stack.enter_async_context(trio.open_nursery())
            self._nursery.start_soon(self._reader)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        await self.aclose()
        return None

    async def aclose(self) -> None:
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
            self._nursery = None
        await self._stack.aclose()
        self._fail(ConnectionError("client closed"))

    async def call(self, method: str, /, *args: Any, **params: Any) -> Any:
        """Call ``method`` with params by position or by name; its result, or ``RpcError``."""
        (response,) = await self._exchange([(method, _params(args, params))])
        return _result(response)

    async def call_batch(
        self, calls: Sequence[tuple[str, Params]], *, return_errors: bool = False
    ) -> list[Any]:
        """Send ``calls`` as one batch; results in order. The first error is raised (after all
        answers arrived) unless ``return_errors``, which puts ``RpcError`` objects in place."""
        if not calls:
            raise ValueError("an empty batch is not a valid request")
        responses = await self._exchange(list(calls), batch=True)
        out: list[Any] = []
        for r in responses:
            try:
                out.append(_result(r))
            except RpcError as e:
                if not return_errors:
                    raise
                out.append(e)
        return out

    async def notify(self, method: str, /, *args: Any, **params: Any) -> None:
        """Send a notification (no response, no error report)."""
        await self._send(encode_json(_request(None, method, _params(args, params))) + b"\n")

    async def subscribe(self, topic: str) -> ClientSubscription:
        """Subscribe to a topic ("*" for all); use as ``async with await client.subscribe(t) as s``."""
        waiter = _Waiter(subscribe_topic=topic)
        (response,) = await self._exchange([("events.subscribe", {"topic": topic})], waiters=[waiter])
        _result(response)
        assert waiter.subscription is not None
        return waiter.subscription

    async def _exchange(
        self,
        calls: list[tuple[str, Params]],
        *,
        batch: bool = False,
        waiters: list[_Waiter] | None = None,
    ) -> list[Mapping[str, Any]]:
        if self._failure is not None:
            raise self._failure
        ws = waiters or [_Waiter() for _ in calls]
        ids = [next(self._ids) for _ in calls]
        reqs = [_request(i, m, p) for i, (m, p) in zip(ids, calls, strict=True)]
        self._pending.update(zip(ids, ws, strict=True))
        try:
            await self._send(encode_json(reqs if batch else reqs[0]) + b"\n")
            out = []
            for w in ws:
                await w.event.wait()
                if w.failure is not None:
                    raise w.failure
                assert w.response is not None
                out.append(w.response)
            return out
        finally:
            for i in ids:
                self._pending.pop(i, None)

    async def _send(self, line: bytes) -> None:
        if self._stream is None:
            raise RuntimeError("use RpcClient in 'async with'")
        try:
            async with self._send_lock:
                await self._stream.send_all(line)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
            raise ConnectionError(f"connection to {self.socket_path} lost") from e

    def _fail(self, failure: BaseException) -> None:
        if self._failure is None:
            self._failure = failure
        for w in self._pending.values():
            if not w.event.is_set():
                w.failure = failure
                w.event.set()
        for sub in list(self._subs.values()):
            sub._send.close()
        self._subs.clear()

    async def _reader(self) -> None:
        assert self._stream is not None
        reader = LineReader(self._stream, self.max_response_bytes)
        try:
            while True:
                line = await reader.next_line()
                if line is None:
                    break
                msg = json.loads(line)
                for item in msg if isinstance(msg, list) else [msg]:
                    self._route(item)
        except trio.Cancelled:
            raise
        except Exception as e:
            self._fail(ConnectionError(f"connection to {self.socket_path} failed: {e}"))
            return
        self._fail(ConnectionError(f"connection to {self.socket_path} closed by the server"))

    def _route(self, msg: Mapping[str, Any]) -> None:
        if "method" in msg:
            params = msg.get("params") or {}
            sid = params.get("subscription")
            sub = self._subs.get(sid) if isinstance(sid, int) else None
            if sub is None:
                return
            if msg["method"] == "events":
                if not sub._deliver(params.get("topic", sub.topic), params.get("event")):
                    self._subs.pop(sub.id, None)
                    if self._nursery is not None:
                        self._nursery.start_soon(self._unsubscribe_quietly, sub.id)
            elif msg["method"] == "events.dropped":
                self._subs.pop(sub.id, None)
                sub._drop()
            return
        id_ = msg.get("id")
        if id_ is None:
            # An error the server could not attach to a request (e.g. too many connections):
            # it closes the connection next, so every caller gets it.
            self._fail(
                RpcError(
                    **{k: v for k, v in msg.get("error", {}).items() if k in ("code", "message", "data")}
                )
            )
            return
        w = self._pending.get(id_)
        if w is None or w.event.is_set():
            return
        w.response = msg
        if w.subscribe_topic is not None and "result" in msg:
            w.subscription = ClientSubscription(self, msg["result"], w.subscribe_topic, self.event_queue_size)
            self._subs[w.subscription.id] = w.subscription
        w.event.set()

    async def _unsubscribe_quietly(self, sid: int) -> None:
        with contextlib.suppress(ConnectionError, RpcError):
            await self.call("events.unsubscribe", subscription=sid)


class SyncRpcClient:
    """A blocking client on one connection (no threads, no trio): ``call`` waits for its answer."""

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        *,
        timeout: float = 10.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self._ids = itertools.count(1)
        self._buf = bytearray()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(os.fspath(socket_path))
        except BaseException:
            self._sock.close()
            raise

    def call(self, method: str, params: Params = None) -> Any:
        """The result of ``method``; ``RpcError``, ``TimeoutError`` or ``ConnectionError`` otherwise."""
        id_ = next(self._ids)
        deadline = time.monotonic() + self.timeout
        self._sock.settimeout(self.timeout)
        self._sock.sendall(encode_json(_request(id_, method, params)) + b"\n")
        while True:
            msg = json.loads(self._line(deadline))
            if isinstance(msg, dict) and "method" in msg:
                continue
            if isinstance(msg, dict) and msg.get("id") in (id_, None):
                return _result(msg)
            raise ConnectionError(f"unexpected response: {msg!r:.200}")

    def _line(self, deadline: float) -> bytes:
        while True:
            i = self._buf.find(b"\n")
            if i >= 0:
                line = bytes(self._buf[:i])
                del self._buf[: i + 1]
                if line.strip():
                    return line
                continue
            if len(self._buf) > self.max_response_bytes:
                raise ConnectionError("response too large")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no response in time")
            self._sock.settimeout(remaining)
            data = self._sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed by the server")
            self._buf += data

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> SyncRpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def call_sync(
    socket_path: str | os.PathLike[str], method: str, params: Params = None, timeout: float = 10.0
) -> Any:
    """One call on a fresh connection, blocking: for the CLI and for other processes."""
    with SyncRpcClient(socket_path, timeout=timeout) as client:
        return client.call(method, params)
