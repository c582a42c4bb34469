"""The daemon's JSON-RPC 2.0 server on a Unix socket (protocol: see ``emrp2p.rpc``)."""

from __future__ import annotations

import errno
import grp
import os
import secrets
import stat
from typing import Any

import trio

from emrp2p.logs import get_logger
from emrp2p.rpc.dispatcher import Dispatcher, Params
from emrp2p.rpc.errors import BUSY, INVALID_REQUEST, RpcError, SubscriptionDropped
from emrp2p.rpc.events import EventBus, Subscription
from emrp2p.rpc.framing import LineReader, LineTooLong
from emrp2p.rpc.protocol import Observe, error_line, handle_payload, notification_line

__all__ = [
    "RpcServer",
    "SocketInUse",
    "DEFAULT_MAX_REQUEST_BYTES",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_SEND_TIMEOUT",
    "MAX_SOCKET_PATH",
]

log = get_logger("emrp2p.rpc")

DEFAULT_MAX_REQUEST_BYTES = 16 << 20
DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_SEND_TIMEOUT = 30.0
MAX_SOCKET_PATH = 107
"""Linux's sun_path holds 108 bytes including the terminating NUL."""

_ACCEPT_RETRY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


class SocketInUse(RuntimeError):
    """Another live server answers on the socket path (or the path is not a socket)."""


class _SlowClient(Exception):
    pass


class RpcServer:
    """Serves ``dispatcher`` on a Unix socket; run it with ``await nursery.start(server.run)``.

    ``mode`` defaults to 0600, or 0660 when ``group`` (a group name) is given;
    the socket file is created with its final mode and owner before it appears
    at ``socket_path`` (bound under a temporary name, then renamed), so there is
    no moment when others could connect. With ``events``, the connection-level
    methods ``events.subscribe`` / ``events.unsubscribe`` are served too.
    ``observe(method, code)`` is called for every request (for metrics).
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        dispatcher: Dispatcher,
        *,
        mode: int | None = None,
        group: str | None = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        events: EventBus | None = None,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
        observe: Observe | None = None,
    ) -> None:
        self.socket_path = os.fspath(socket_path)
        self.dispatcher = dispatcher
        self.mode = mode if mode is not None else (0o660 if group is not None else 0o600)
        self.group = group
        self.max_request_bytes = max_request_bytes
        self.max_connections = max_connections
        self.events = events
        self.send_timeout = send_timeout
        self.observe = observe
        self.active_connections = 0

    async def run(
        self,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,  # type: ignore[name-defined]
    ) -> None:
        """Bind, then serve until cancelled; removes the socket file on the way out."""
        sock = await self._bind()
        inode = os.stat(self.socket_path).st_ino
        listener = trio.SocketListener(sock)
        try:
            async with trio.open_nursery() as nursery:
                log.info("rpc listening", socket=self.socket_path, mode=oct(self.mode), group=self.group)
                task_status.started(self.socket_path)
                while True:
                    try:
                        stream = await listener.accept()
                    except OSError as e:
                        if e.errno not in _ACCEPT_RETRY_ERRNOS:
                            raise
                        log.warning("rpc accept failed, retrying", error=str(e))
                        await trio.sleep(0.1)
                        continue
                    nursery.start_soon(self._guarded, stream)
        finally:
            with trio.CancelScope(shield=True):
                await listener.aclose()
            try:
                if os.stat(self.socket_path).st_ino == inode:
                    os.unlink(self.socket_path)
            except FileNotFoundError:
                pass

    async def _bind(self) -> trio.socket.SocketType:
        path = self.socket_path
        directory, name = os.path.split(os.path.abspath(path))
        tmp = os.path.join(directory, f".{secrets.token_hex(4)}.tmp")
        for p in (path, tmp):
            if len(os.fsencode(p)) > MAX_SOCKET_PATH:
                raise ValueError(f"socket path {p!r} is too long (max {MAX_SOCKET_PATH} bytes)")
        await self._clear_stale(path)
        gid = grp.getgrnam(self.group).gr_gid if self.group is not None else -1
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        try:
            await sock.bind(tmp)
            try:
                os.chmod(tmp, self.mode)
                if gid != -1:
                    os.chown(tmp, -1, gid)
                sock.listen(128)
                os.rename(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
        except BaseException:
            sock.close()
            raise
        return sock

    @staticmethod
    async def _clear_stale(path: str) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise SocketInUse(f"{path} exists and is not a socket; refusing to replace it")
        probe = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        try:
            await probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            log.info("rpc removing stale socket", socket=path)
            os.unlink(path)
            return
        finally:
            probe.close()
        raise SocketInUse(f"another server is listening on {path}")

    async def _guarded(self, stream: trio.SocketStream) -> None:
        """One connection; whatever happens to it stays with it."""
        counted = False
        try:
            if self.active_connections >= self.max_connections:
                with trio.move_on_after(1):
                    err = RpcError(BUSY, "busy: too many connections", {"code": "busy"})
                    await stream.send_all(error_line(None, err))
                return
            self.active_connections += 1
            counted = True
            await _Connection(self, stream).serve()
        except (trio.BrokenResourceError, trio.ClosedResourceError, _SlowClient):
            pass
        except Exception:
            log.exception("rpc connection failed")
        finally:
            if counted:
                self.active_connections -= 1
            await trio.aclose_forcefully(stream)


class _Connection:
    """Reads requests in order, answers each in turn, and forwards its subscriptions' events."""

    def __init__(self, server: RpcServer, stream: trio.SocketStream) -> None:
        self.server = server
        self.stream = stream
        self.send_lock = trio.Lock()
        self.subs: dict[int, Subscription] = {}
        self.new_subs: list[Subscription] = []
        self.methods = Dispatcher()
        self.nursery: trio.Nursery
        if server.events is not None:
            self.methods.add("events.subscribe", self.subscribe)
            self.methods.add("events.unsubscribe", self.unsubscribe)

    async def subscribe(self, topic: str) -> int:
        """Start receiving ``events`` notifications for ``topic`` ("*" for all); returns its id."""
        assert self.server.events is not None
        sub = self.server.events.subscribe(topic)
        self.subs[sub.id] = sub
        self.new_subs.append(sub)
        return sub.id

    async def unsubscribe(self, subscription: int) -> bool:
        """Stop a subscription of this connection; false if there was none by that id."""
        sub = self.subs.pop(subscription, None)
        if sub is None:
            return False
        sub.close()
        return True

    async def call(self, method: str, params: Params) -> Any:
        if method in self.methods:
            return await self.methods.call(method, params)
        return await self.server.dispatcher.call(method, params)

    async def send(self, line: bytes) -> None:
        if not self.send_lock.locked():
            # An answer almost always fits in the socket's buffer: write it now, without the
            # lock, timer and scheduler passes of the awaited path (a third of a small call's
            # CPU); what does not fit goes that way, under the send timeout. Nothing else is
            # being sent (that holds the lock), and nothing runs before the lock is taken.
            try:
                sent = os.write(self.stream.socket.fileno(), line)
            except BlockingIOError:
                sent = 0
            except OSError as e:  # the client went away (EPIPE, ECONNRESET)
                raise trio.BrokenResourceError(str(e)) from e
            if sent == len(line):
                return
            line = line[sent:]
        async with self.send_lock:
            with trio.move_on_after(self.server.send_timeout) as scope:
                await self.stream.send_all(line)
            if scope.cancelled_caught:
                raise _SlowClient

    async def serve(self) -> None:
        reader = LineReader(self.stream, self.server.max_request_bytes)
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                try:
                    await self._requests(reader)
                except (trio.BrokenResourceError, trio.ClosedResourceError, _SlowClient):
                    pass
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            for sub in self.subs.values():
                sub.close()

    async def _requests(self, reader: LineReader) -> None:
        while True:
            try:
                line = await reader.next_line()
            except LineTooLong:
                limit = self.server.max_request_bytes
                err = RpcError(INVALID_REQUEST, f"invalid request: request over {limit} bytes")
                await self.send(error_line(None, err))
                return
            if line is None:
                return
            response = await handle_payload(line, self.call, self.server.observe)
            if response is not None:
                await self.send(response)
            for sub in self.new_subs:
                self.nursery.start_soon(self._forward, sub)
            self.new_subs.clear()

    async def _forward(self, sub: Subscription) -> None:
        """Sends ``sub``'s events as notifications; a full queue ends it with ``events.dropped``.
        A client that stops reading altogether is disconnected after ``send_timeout``."""
        try:
            async for topic, event in sub:
                try:
                    line = notification_line(
                        "events", {"subscription": sub.id, "topic": topic, "event": event}
                    )
                except (TypeError, ValueError):
                    log.exception("rpc event not serializable", topic=topic)
                    continue
                await self.send(line)
        except SubscriptionDropped:
            self.subs.pop(sub.id, None)
            log.warning("rpc subscriber dropped: queue full", subscription=sub.id, topic=sub.topic)
            try:
                await self.send(
                    notification_line(
                        "events.dropped",
                        {"subscription": sub.id, "topic": sub.topic, "reason": "queue full: client too slow"},
                    )
                )
            except (trio.BrokenResourceError, trio.ClosedResourceError, _SlowClient):
                self.nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError, _SlowClient):
            self.nursery.cancel_scope.cancel()
