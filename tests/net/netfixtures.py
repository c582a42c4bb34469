"""Helpers for the network tests: real libp2p hosts on 127.0.0.1."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from emrp2p.logs import configure_logging  # noqa: E402

configure_logging(json=False, level="WARNING")

from emrp2p.crypto import Identity  # noqa: E402
from emrp2p.net import Network  # noqa: E402


async def wait_until(pred: Callable[[], bool], timeout: float = 5.0, step: float = 0.01) -> None:
    """Poll a condition that has no event of its own, bounded by ``timeout``."""
    with trio.fail_after(timeout):
        while not pred():
            await trio.sleep(step)


def identities(n: int, prefix: str = "member") -> list[Identity]:
    return [Identity.from_test_name(f"{prefix}-{i}") for i in range(n)]


class Cluster:
    """Nodes that each run in their own cancel scope, so a test can stop one and start it again."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.scopes: dict[bytes, trio.CancelScope] = {}
        self.done: dict[bytes, trio.Event] = {}

    async def start(self, net: Network) -> Network:
        scope = trio.CancelScope()
        done = trio.Event()

        async def runner(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await net.run(task_status=task_status)
            finally:
                done.set()

        await self.nursery.start(runner)
        self.scopes[net.identity.public] = scope
        self.done[net.identity.public] = done
        return net

    async def stop(self, net: Network) -> None:
        self.scopes[net.identity.public].cancel()
        with trio.fail_after(10):
            await self.done[net.identity.public].wait()


StartMesh = Callable[..., Awaitable[list[Network]]]
