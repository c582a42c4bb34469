"""End-to-end: real emrp2pd processes, real libp2p, 127.0.0.1, load through the RPC socket.

Bounds stated by these tests (election timeout 1 s, heartbeat 150 ms):
- after the leader is SIGKILLed, commits resume on the survivors within 10 s;
- a restarted or resumed node matches the others within 60 s.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from emrp2p.cluster import LocalCluster, NodeProcess, wait_until
from emrp2p.genesis import load_genesis
from emrp2p.loadgen import Submitter, TxFactory

pytestmark = pytest.mark.slow

RESUME_BOUND_S = 10.0
CATCH_UP_BOUND_S = 60.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path / "net", 4)
    try:
        c.start()
        yield c
    finally:
        c.stop()
        c.kill_all()


def _factory(c: LocalCluster, prefix: str = "e2e") -> TxFactory:
    return TxFactory(load_genesis(c.dir / "genesis.json").chain_id, senders=16, prefix=prefix)


def _submit_committed(node: NodeProcess, factory: TxFactory, n: int) -> list[dict[str, Any]]:
    """Submit ``n`` transactions and wait until each is acknowledged as durably committed."""
    txs = factory.make(n)
    node.rpc("tx.submit_many", {"txs": [tx.encoded.hex() for tx in txs]})
    return [
        node.rpc("tx.status", {"tx_id": tx.tx_id.hex(), "wait": True, "timeout": 30}, timeout=40)
        for tx in txs
    ]


def _assert_same_chain(nodes: list[NodeProcess]) -> int:
    height = min(n.rpc("node.status")["height"] for n in nodes)
    hashes = {n.rpc("chain.block", {"height": height})["hash"] for n in nodes}
    assert len(hashes) == 1, f"nodes differ at height {height}: {hashes}"
    roots = {n.rpc("chain.block", {"height": height})["state_root"] for n in nodes}
    assert len(roots) == 1
    return height


def _converge(nodes: list[NodeProcess], timeout: float) -> int:
    def level() -> bool:
        heads = [n.rpc("chain.head", timeout=2.0) for n in nodes]
        return len({(h["height"], h["hash"], h["state_root"]) for h in heads}) == 1

    wait_until(level, timeout, "all nodes at the same head")
    return _assert_same_chain(nodes)


def test_four_daemons_commit_and_hold_identical_chains(cluster: LocalCluster) -> None:
    factory = _factory(cluster)
    results = _submit_committed(cluster.nodes[1], factory, 200)
    assert all(r["status"] == "committed" for r in results)
    height = _converge(cluster.nodes, CATCH_UP_BOUND_S)
    assert height >= 1
    for node in cluster.nodes:
        report = node.rpc("chain.verify", timeout=60)
        assert report["ok"], report
        assert report["txs"] >= 200
    statuses = cluster.statuses()
    assert sum(s["role"] == "leader" for s in statuses) <= 1
    assert all(s["evidence"] == 0 for s in statuses)


def test_sigkill_of_the_leader_under_load_loses_no_committed_transaction(cluster: LocalCluster) -> None:
    factory = _factory(cluster)
    acknowledged = [
        r for r in _submit_committed(cluster.nodes[0], factory, 100) if r["status"] == "committed"
    ]
    leader = wait_until(cluster.leader, 20, "an established leader")
    survivors = [n for n in cluster.nodes if n is not leader]

    stop = threading.Event()
    load_errors: list[BaseException] = []

    def load() -> None:
        sub = Submitter(str(survivors[0].socket))
        try:
            while not stop.is_set():
                sub.submit(factory.make(20))
                time.sleep(0.05)
        except BaseException as e:  # pragma: no cover - surfaced by the assert below
            load_errors.append(e)
        finally:
            sub.close()

    t = threading.Thread(target=load, daemon=True)
    t.start()
    try:
        before = max(n.rpc("node.status")["height"] for n in survivors)
        leader.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        wait_until(
            lambda: min(n.rpc("node.status")["height"] for n in survivors) > before + 2,
            RESUME_BOUND_S + 30,
            "commits to resume without the old leader",
        )
        resumed_after = time.monotonic() - killed_at
    finally:
        stop.set()
        t.join(30)
    assert not load_errors, load_errors
    assert resumed_after < RESUME_BOUND_S, f"commits resumed only after {resumed_after:.1f} s"

    # Everything acknowledged as committed is still committed, on the survivors...
    for r in acknowledged:
        assert survivors[1].rpc("tx.status", {"tx_id": r["tx_id"]})["status"] == "committed"
    # ...and after the killed node restarts and catches up, on it too, byte for byte.
    leader.proc = None
    leader.start()
    leader.wait_ready()
    more = _submit_committed(survivors[0], factory, 20)
    assert all(r["status"] == "committed" for r in more)
    _converge(cluster.nodes, CATCH_UP_BOUND_S)
    for r in acknowledged:
        assert leader.rpc("tx.status", {"tx_id": r["tx_id"]})["status"] == "committed"
    assert leader.rpc("chain.verify", timeout=60)["ok"]


def test_a_stopped_leader_rejoins_without_forking_or_double_voting(cluster: LocalCluster) -> None:
    factory = _factory(cluster)
    _submit_committed(cluster.nodes[0], factory, 50)
    leader = wait_until(cluster.leader, 20, "an established leader")
    others = [n for n in cluster.nodes if n is not leader]
    leader.signal(signal.SIGSTOP)
    try:
        old_term = others[0].rpc("node.status")["term"]
        wait_until(lambda: others[0].rpc("node.status")["term"] > old_term, 20, "a term change")
        results = _submit_committed(others[0], factory, 50)
        assert all(r["status"] == "committed" for r in results)
    finally:
        leader.signal(signal.SIGCONT)
    _submit_committed(others[1], factory, 20)
    _converge(cluster.nodes, CATCH_UP_BOUND_S)
    assert all(s["evidence"] == 0 for s in cluster.statuses())
    assert leader.rpc("chain.verify", timeout=60)["ok"]


def test_a_stopped_follower_resumes_as_a_follower_without_a_term_change(tmp_path: Path) -> None:
    """Pre-vote: a follower frozen well past the election timeout wakes with its timer run out,
    but the others still hear the leader and refuse, so term and leader stay as they were."""
    # No scheduled hand-over during the test: any term change would be the stopped node's doing.
    pinned = ["--set", "consensus.max_blocks_per_term=1000000", "--set", "consensus.max_term_ms=3600000"]
    c = LocalCluster(tmp_path / "net", 4, extra_args=pinned)
    try:
        c.start()
        factory = _factory(c)
        _submit_committed(c.nodes[0], factory, 20)
        leader = wait_until(c.leader, 20, "an established leader")
        term = leader.rpc("node.status")["term"]
        lone, other = [n for n in c.nodes if n is not leader][:2]
        lone.signal(signal.SIGSTOP)
        try:
            stopped_at = time.monotonic()
            results = _submit_committed(other, factory, 30)  # the other three go on committing
            assert all(r["status"] == "committed" for r in results)
            time.sleep(max(0.0, stopped_at + 3.0 - time.monotonic()))  # the fault: 3 election timeouts
        finally:
            lone.signal(signal.SIGCONT)
        results = _submit_committed(lone, factory, 20)
        assert all(r["status"] == "committed" for r in results)
        _converge(c.nodes, CATCH_UP_BOUND_S)
        statuses = c.statuses()
        assert [s["term"] for s in statuses] == [term] * 4
        assert c.leader() is leader
        assert all(s["evidence"] == 0 for s in statuses)
    finally:
        c.stop()
        c.kill_all()


def test_a_node_down_for_over_a_thousand_blocks_catches_up(tmp_path: Path) -> None:
    # One transaction per block and no pause between blocks, so 1,000 blocks come quickly.
    overrides = ["--set", "consensus.max_txs_per_block=1", "--set", "consensus.min_block_interval_ms=0"]
    with LocalCluster(tmp_path / "net", 4, extra_args=overrides) as c:
        c.start()
        factory = _factory(c)
        late = c.nodes[3]
        assert late.stop() == 0
        sub = Submitter(str(c.nodes[0].socket))
        try:
            for _ in range(11):  # 1,100 transactions, 1,100 blocks
                sub.submit(factory.make(100))
        finally:
            sub.close()
        c.wait_height(1000, 240, [c.nodes[0]])
        height = c.nodes[0].rpc("node.status")["height"]
        assert height >= 1000
        late.proc = None
        late.start()
        late.wait_ready()
        c.wait_height(height, CATCH_UP_BOUND_S, [late])
        _converge(c.nodes, CATCH_UP_BOUND_S)
        assert late.rpc("chain.verify", timeout=120)["ok"]


def test_strangers_cannot_connect_and_garbage_from_a_member_is_dropped(cluster: LocalCluster) -> None:
    sys.path.insert(0, str(Path(__file__).parent.parent / "net"))
    from net_hostile import HostilePeer

    from emrp2p.crypto import Identity
    from emrp2p.crypto.keyfile import load_node_key
    from emrp2p.net import MSG_PROTOCOL

    target = cluster.nodes[0]
    status = target.rpc("node.status")
    own_addr = next(
        p["address"] for p in cluster.nodes[1].rpc("node.peers") if p["public_key"] == status["public_key"]
    )
    assert own_addr is not None

    async def attack() -> None:
        stranger = HostilePeer(Identity.generate())
        member_key = load_node_key(cluster.nodes[3].dir / "node.key")
        cluster.nodes[3].stop()
        impostor = HostilePeer(member_key)
        async with trio.open_nursery() as nursery:
            await nursery.start(stranger.run)
            await nursery.start(impostor.run)
            with trio.fail_after(30):
                # Refusal surfaces as many exception types (reset, EOF, failed upgrade): all mean "no".
                for _ in range(20):
                    with contextlib.suppress(Exception):
                        await stranger.send_raw(own_addr, MSG_PROTOCOL, b"\x00\x00\x00\x05hello")
                # A member (node 4's key) sends garbage on our protocol: the stream is reset, the node lives.
                with contextlib.suppress(Exception):
                    await impostor.send_raw(own_addr, MSG_PROTOCOL, b"\x00\x00\x00\x10" + b"\xff" * 16)
                    await impostor.send_raw(own_addr, MSG_PROTOCOL, b"\xff\xff\xff\xff" + b"x" * 64)
            nursery.cancel_scope.cancel()

    trio.run(attack)
    after = target.rpc("node.status")
    assert after["net"]["refused_strangers"] >= 1
    factory = _factory(cluster, prefix="after-attack")
    results = _submit_committed(cluster.nodes[0], factory, 10)
    assert all(r["status"] == "committed" for r in results)
    assert target.alive()
