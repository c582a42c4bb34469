"""Fixtures for the network tests (helpers live in ``netfixtures``)."""

from __future__ import annotations

import pytest
import trio
from netfixtures import Cluster, StartMesh, identities

from emrp2p.net import NetConfig, Network


@pytest.fixture
async def cluster(nursery: trio.Nursery) -> Cluster:
    return Cluster(nursery)


@pytest.fixture
def start_mesh(cluster: Cluster) -> StartMesh:
    """Start ``n`` member nodes, each configured to dial every node started before it."""

    async def start(
        n: int = 3,
        *,
        config: NetConfig | None = None,
        extra_members: tuple[bytes, ...] = (),
        gossip: bool = True,
    ) -> list[Network]:
        ids = identities(n)
        keys = [i.public for i in ids] + list(extra_members)
        nets: list[Network] = []
        for ident in ids:
            peers = {net.identity.public: net.listen_addrs[0] for net in nets}
            nets.append(
                await cluster.start(
                    Network(ident, ("127.0.0.1", 0), keys, peers, gossip=gossip, config=config)
                )
            )
        with trio.fail_after(10):
            for a in nets:
                for b in nets:
                    if a is not b:
                        await a.wait_connected(b.identity.public)
        return nets

    return start
