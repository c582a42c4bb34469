"""Fixtures: a real server on a Unix socket in tmp_path, with the sample methods and an event bus."""

from __future__ import annotations

import pytest
import trio
from rpc_helpers import Sample

from emrp2p.rpc import EventBus, RpcServer


@pytest.fixture
def sample() -> Sample:
    return Sample()


@pytest.fixture
def sock_path(tmp_path: object) -> str:
    return str(tmp_path) + "/emrp2pd.sock"  # type: ignore[operator]


@pytest.fixture
def bus() -> EventBus:
    return EventBus(queue_size=8)


@pytest.fixture
async def server(nursery: trio.Nursery, sock_path: str, sample: Sample, bus: EventBus) -> RpcServer:
    srv = RpcServer(sock_path, sample.dispatcher, events=bus, max_request_bytes=4096, max_connections=16)
    await nursery.start(srv.run)
    return srv
