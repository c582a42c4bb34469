"""A raw line client and a sample method table for the RPC tests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import trio

from emrp2p.crypto import InvalidSignature as CryptoInvalidSignature
from emrp2p.ledger import errors as ledger
from emrp2p.rpc import Busy, Bytes32, Dispatcher, NotFound, NotLeader, RpcError, Timeout
from emrp2p.rpc.framing import LineReader


class RawClient:
    """Sends bytes and reads whole response lines: the wire exactly as a client sees it."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.reader = LineReader(stream, 1 << 24)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send_json(self, obj: Any) -> None:
        await self.send(json.dumps(obj).encode() + b"\n")

    async def recv(self) -> Any:
        """The next message, or None once the server closed the connection."""
        line = await self.reader.next_line()
        return None if line is None else json.loads(line)

    async def request(self, obj: Any) -> Any:
        await self.send_json(obj)
        return await self.recv()


@asynccontextmanager
async def raw_client(path: str) -> AsyncIterator[RawClient]:
    stream = await trio.open_unix_socket(path)
    try:
        yield RawClient(stream)
    finally:
        await stream.aclose()


class Sample:
    """Methods covering each parameter type, each error class, and a gate to hold a request open."""

    def __init__(self) -> None:
        self.notified: list[int] = []
        self.gate = trio.Event()
        self.entered = trio.Event()
        self.finished = trio.Event()
        self.rendezvous_n = 0
        self.rendezvous_count = 0
        self.rendezvous_all = trio.Event()
        self.dispatcher = Dispatcher()
        d = self.dispatcher

        @d.method("add")
        async def add(a: int, b: int) -> int:
            return a + b

        @d.method("greet")
        async def greet(name: str, excited: bool = False, times: int | None = None) -> str:
            return ("hello " + name + ("!" if excited else "")) * (times or 1)

        @d.method("echo")
        async def echo(value: Any) -> Any:
            return value

        @d.method("digest.len")
        async def digest_len(digest: Bytes32) -> int:
            return len(digest)

        @d.method("blob.reverse")
        async def blob_reverse(blob: bytes) -> bytes:
            return blob[::-1]

        @d.method("sum")
        async def sum_(values: list[int], weights: dict[str, float] | None = None) -> float:
            return sum(values) * (weights or {}).get("all", 1.0)

        @d.method("color")
        def color(name: Literal["red", "green"]) -> str:
            return name.upper()

        @d.method("record")
        async def record(x: int) -> None:
            self.notified.append(x)

        @d.method("held")
        async def held() -> str:
            self.entered.set()
            await self.gate.wait()
            self.finished.set()
            return "released"

        @d.method("rendezvous")
        async def rendezvous() -> int:
            """Returns only once ``rendezvous_n`` callers are inside at the same time."""
            self.rendezvous_count += 1
            if self.rendezvous_count == self.rendezvous_n:
                self.rendezvous_all.set()
            await self.rendezvous_all.wait()
            return self.rendezvous_count

        @d.method("fail.internal")
        async def fail_internal() -> None:
            raise RuntimeError("secret database path /var/lib/emrp2p")

        @d.method("fail.unserializable")
        async def fail_unserializable() -> object:
            return object()

        @d.method("fail.rpc")
        async def fail_rpc() -> None:
            raise RpcError(-32099, "custom failure", {"hint": 1})

        errors: dict[str, Exception] = {
            "busy": Busy("tx pool full"),
            "not_found": NotFound("no block at height 9"),
            "not_leader": NotLeader(),
            "timeout": Timeout("not committed in 5 s"),
            "too_slow": trio.TooSlowError(),
            "bad_nonce": ledger.BadNonce("nonce 3, expected 2"),
            "invalid_signature": ledger.InvalidSignature("bad sig"),
            "crypto_signature": CryptoInvalidSignature("bad sig"),
            "unknown_patient": ledger.UnknownPatient("no such patient"),
            "not_authorized": ledger.NotAuthorized("not a delegate"),
            "not_a_member": ledger.NotAMember("not a member"),
            "consent_not_found": ledger.ConsentNotFound("no consent"),
            "consent_expired": ledger.ConsentExpired("expired"),
            "consent_revoked": ledger.ConsentRevoked("revoked"),
            "consent_does_not_cover": ledger.ConsentDoesNotCover("other grantee"),
            "record_erased": ledger.RecordErased("erased"),
        }

        @d.method("fail.app")
        async def fail_app(kind: str) -> None:
            raise errors[kind]
