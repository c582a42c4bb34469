"""Four nodes in one trio process over real libp2p on 127.0.0.1: the driver's contract."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio
import trio.testing

from emrp2p.cli.testnet import free_ports
from emrp2p.consensus import Config, SubmitStatus
from emrp2p.consensus.core import Role as CoreRole
from emrp2p.crypto import Identity
from emrp2p.ledger.types import Genesis, Member, Noop, Role, sign_tx
from emrp2p.net import Network
from emrp2p.node.node import Node, NodeSettings
from emrp2p.store.api import WriteBatch


def _settings(tmp_path: Path, n: int) -> list[NodeSettings]:
    ids = [Identity.from_test_name(f"hospital-{i}") for i in range(n)]
    genesis = Genesis(
        "inprocess",
        1_700_000_000_000,
        tuple(Member(i.public, f"H{k}", Role.VALIDATOR) for k, i in enumerate(ids)),
    )
    ports = free_ports(n)
    addrs = {
        i.public: f"/ip4/127.0.0.1/tcp/{p}/p2p/{Network.peer_id_of(i.public)}"
        for i, p in zip(ids, ports, strict=True)
    }
    return [
        NodeSettings(
            identity=ident,
            genesis=genesis,
            datadir=tmp_path / f"n{k}",
            listen=("127.0.0.1", ports[k]),
            peers={key: a for key, a in addrs.items() if key != ident.public},
            name=f"H{k}",
            consensus=Config(election_timeout_ms=1000, heartbeat_ms=100, min_block_interval_ms=20),
            rpc_socket=tmp_path / f"n{k}.sock",
        )
        for k, ident in enumerate(ids)
    ]


async def test_four_nodes_commit_submitted_transactions_and_agree(tmp_path: Path) -> None:
    settings = _settings(tmp_path, 4)
    (metrics_port,) = free_ports(1)
    settings[1].metrics_listen = ("127.0.0.1", metrics_port)
    client = Identity.from_test_name("client")
    chain_id = settings[0].genesis.chain_id
    txs = [sign_tx(client, chain_id, k, Noop(b"t%d" % k)) for k in range(50)]
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nodes = [await nursery.start(Node(s).run) for s in settings]
            results = await nodes[1].submit(txs)
            assert all(r.status is SubmitStatus.ACCEPTED for r in results)
            for tx in txs:
                w = await nodes[1].wait_committed(tx.tx_id, 30)
                assert w.state == "committed"
            await nodes[1].settled()  # committed is answered at certification; the write may follow
            top = nodes[1].store.committed_height()
            assert top >= 1
            while min(n.store.committed_height() for n in nodes) < top:
                await trio.sleep(0.05)
            hashes = {n.store.block(top).block_hash for n in nodes}  # type: ignore[union-attr]
            assert len(hashes) == 1
            body = await _scrape(metrics_port)
            assert b"emrp2p_peers_connected 3.0" in body
            nursery.cancel_scope.cancel()


async def _start_until_led(nursery: trio.Nursery, settings: list[NodeSettings]) -> tuple[list[Node], Node]:
    """Start a node per settings; return them and the leader, once one is established."""
    nodes = [await nursery.start(Node(s).run) for s in settings]
    while not any(n.core.role is CoreRole.LEADER for n in nodes):
        await trio.sleep(0.05)
    return nodes, next(n for n in nodes if n.core.role is CoreRole.LEADER)


async def _scrape(port: int) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /metrics HTTP/1.1\r\n\r\n")
        out = b""
        while chunk := await stream.receive_some(65536):
            out += chunk
    return out


async def test_a_full_disk_stops_the_node_with_a_clear_error_and_loses_nothing_committed(
    tmp_path: Path,
) -> None:
    from emrp2p.store.lmdb_store import LmdbStore, StoreFull
    from emrp2p.store.verify import verify_chain

    (s,) = _settings(tmp_path, 1)
    s.store_map_size = 1 << 20  # 1 MiB: fills after a few thousand transactions
    client = Identity.from_test_name("client")
    chain_id = s.genesis.chain_id
    committed: list[bytes] = []
    node = Node(s)
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                await nursery.start(node.run)
                nonce = 0
                while True:  # bounded by the map size: StoreFull ends the node within ~10k txs
                    batch = [sign_tx(client, chain_id, nonce + k, Noop(b"x" * 64)) for k in range(200)]
                    nonce += len(batch)
                    await node.submit(batch)
                    w = await node.wait_committed(batch[-1].tx_id, 30)
                    assert w.state == "committed"
                    committed.extend(tx.tx_id for tx in batch)
                    assert nonce < 100_000
    except BaseException as e:  # noqa: BLE001 - the group carries the store's error
        assert isinstance(e, BaseExceptionGroup) and e.subgroup(StoreFull) is not None, repr(e)
    else:
        raise AssertionError("the node kept running on a full store")
    assert committed
    # "Committed" was answered once the block was certified and written as accepted; a commit
    # write that then met the full disk leaves it there, and a restart with room commits it.
    store = LmdbStore(s.datadir / "chain", readonly=True)
    try:
        accepted = {tx.tx_id for b in store.accepted() for tx in b.txs}
        assert all(store.tx_height(t) is not None or t in accepted for t in committed)
        assert verify_chain(store).ok
    finally:
        store.close()
    import dataclasses

    node = Node(dataclasses.replace(s, store_map_size=16 << 20))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            w = await node.wait_committed(committed[-1], 30)
            assert w.state == "committed"
            await node.settled()
            assert all(node.store.tx_height(t) is not None for t in committed)
            nursery.cancel_scope.cancel()


async def test_commits_are_acknowledged_before_the_committer_writes_them_reads_wait_for_it_and_a_stop_writes_all_handed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The committer writes behind the core loop. An app hears "committed" without waiting for
    that write (the block is durable as accepted already), the RPC reads wait for it, and
    stopping the node still writes every commit the loop handed over."""
    import emrp2p.node.node as node_module
    from emrp2p.node.api import build_dispatcher
    from emrp2p.store.lmdb_store import LmdbStore

    handed: list[int] = []
    send_eagerly = node_module.send_eagerly

    async def recording(channel, item):  # type: ignore[no-untyped-def]
        if channel is node._commit_send:
            handed.extend(b.height for b in item[1])
        await send_eagerly(channel, item)

    monkeypatch.setattr(node_module, "send_eagerly", recording)
    (s,) = _settings(tmp_path, 1)
    client = Identity.from_test_name("client")
    chain_id = s.genesis.chain_id
    node = Node(s)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            dispatcher = build_dispatcher(node)
            write = node.store.write
            release = [False]

            def held_disk(batch: WriteBatch) -> None:
                while batch.commit and not release[0]:
                    time.sleep(0.005)  # in the committer's worker thread, until the test lets go
                write(batch)

            node.store.write = held_disk  # type: ignore[method-assign]
            tx = sign_tx(client, chain_id, 0, Noop(b"x"))
            reads: list[dict] = []
            try:
                await node.submit([tx])
                w = await node.wait_committed(tx.tx_id, 30)
                assert w.state == "committed" and w.height is not None
                assert node.store.committed_height() < w.height  # acknowledged before the write
                assert node.store.accepted()[-1].height >= w.height  # but durable as accepted

                async def read_block() -> None:
                    reads.append(await dispatcher.call("chain.block", {"height": w.height}))

                nursery.start_soon(read_block)
                await trio.testing.wait_all_tasks_blocked()
                assert not reads  # the read waits for the committer
            finally:
                release[0] = True
            with trio.fail_after(10):
                while not reads:
                    await trio.sleep(0.01)
            assert reads[0]["height"] == w.height
            assert node.store.tx_height(tx.tx_id) == w.height

            def slow_disk(batch: WriteBatch) -> None:
                if batch.commit:
                    time.sleep(0.05)  # commits queue up behind the committer
                write(batch)

            node.store.write = slow_disk  # type: ignore[method-assign]
            nonce = 1
            while node._commits.statistics().current_buffer_used == 0:  # one waits for the committer
                await node.submit([sign_tx(client, chain_id, nonce, Noop(b"y"))])
                nonce += 1
                assert nonce < 10_000
            nursery.cancel_scope.cancel()
    store = LmdbStore(s.datadir / "chain", readonly=True)
    try:
        assert store.committed_height() == max(handed)
    finally:
        store.close()


async def test_forwarded_batches_over_the_leaders_intake_budget_are_dropped_and_counted(
    tmp_path: Path,
) -> None:
    import dataclasses

    settings = [dataclasses.replace(s, forward_queue_bytes=64) for s in _settings(tmp_path, 4)]
    client = Identity.from_test_name("client")
    chain_id = settings[0].genesis.chain_id
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nodes, leader = await _start_until_led(nursery, settings)
            follower = next(n for n in nodes if n is not leader)
            tx = sign_tx(client, chain_id, 0, Noop(b"over budget"))
            (result,) = await follower.submit([tx])
            assert result.status is SubmitStatus.ACCEPTED
            while leader.metrics.forward_drops._value.get() == 0:
                await trio.sleep(0.05)
            assert tx.tx_id not in leader.core.pool
            assert follower.core.tx_status(tx.tx_id).state.value == "pending"
            # The leader's own intake is not affected.
            own = sign_tx(client, chain_id, 0, Noop(b"direct"))
            (result,) = await leader.submit([own])
            w = await leader.wait_committed(own.tx_id, 30)
            assert w.state == "committed"
            nursery.cancel_scope.cancel()


async def test_apps_are_told_busy_before_any_check_once_the_oldest_pending_transaction_waited_too_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One validator of four up: nothing can commit, so its pool only ages. Past
    ``max_backlog_ms`` a submission is answered busy without a signature check, and through
    the RPC methods before the transaction is even decoded (its id is the hash of its bytes)."""
    import dataclasses

    import emrp2p.node.api as api
    from emrp2p.codec import encode
    from emrp2p.rpc.errors import Busy

    s = dataclasses.replace(_settings(tmp_path, 4)[0], max_backlog_ms=200)
    client = Identity.from_test_name("client")
    a, b = (sign_tx(client, s.genesis.chain_id, k, Noop(b"%d" % k)) for k in range(2))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            node = await nursery.start(Node(s).run)
            assert [r.status for r in await node.submit([a])] == [SubmitStatus.ACCEPTED]
            while node.core.backlog_ms() <= 200:
                await trio.sleep(0.02)
            checks = node._preverify

            async def must_not_check(txs: list, inline_max: int = 16) -> None:  # type: ignore[type-arg]
                raise AssertionError("a transaction refused for the backlog was checked")

            node._preverify = must_not_check  # type: ignore[method-assign]
            assert [(r.tx_id, r.status) for r in await node.submit([b])] == [(b.tx_id, SubmitStatus.BUSY)]
            assert node.metrics.backlog_refusals._value.get() == 1
            assert b.tx_id not in node.core.pool

            def must_not_decode(*args: object, **kwargs: object) -> None:
                raise AssertionError("a transaction refused for the backlog was decoded")

            monkeypatch.setattr(api, "decode", must_not_decode)
            methods = api.build_dispatcher(node)
            answer = await methods.call("tx.submit_many", {"txs": [encode(b).hex()]})
            assert answer == [{"tx_id": b.tx_id.hex(), "status": "busy"}]
            with pytest.raises(Busy):
                await methods.call("tx.submit", {"tx": encode(b).hex()})
            assert node.metrics.backlog_refusals._value.get() == 3
            assert b.tx_id not in node.core.pool
            node._preverify = checks  # type: ignore[method-assign]
            nursery.cancel_scope.cancel()


async def test_a_pool_takes_its_share_of_two_blocks_until_the_network_commits_then_what_it_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Room in a pool is what the network committed of it over ``max_backlog_ms``, at least the
    node's share of two full blocks: past it a batch's tail is answered busy, undecoded."""
    import dataclasses

    import emrp2p.node.api as api
    from emrp2p.codec import encode

    cfg = Config(election_timeout_ms=1000, heartbeat_ms=100, min_block_interval_ms=20, max_txs_per_block=4)
    settings = [dataclasses.replace(s, consensus=cfg, max_backlog_ms=5000) for s in _settings(tmp_path, 4)]
    client = Identity.from_test_name("client")
    txs = [sign_tx(client, settings[0].genesis.chain_id, k, Noop(b"%d" % k)) for k in range(60)]
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            alone = await nursery.start(Node(settings[0]).run)  # 1 of 4 validators: no commits
            # Its share of two 4-transaction blocks among 4 validators: 2.
            assert [r.status for r in await alone.submit(txs[:5])] == [SubmitStatus.ACCEPTED] * 2 + [
                SubmitStatus.BUSY
            ] * 3
            assert alone.metrics.backlog_refusals._value.get() == 3
            real_decode = api.decode
            decoded: list[bytes] = []

            def counting_decode(cls: type, data: bytes, **kw: object) -> object:
                decoded.append(bytes(data))
                return real_decode(cls, data, **kw)

            monkeypatch.setattr(api, "decode", counting_decode)
            methods = api.build_dispatcher(alone)
            answer = await methods.call("tx.submit_many", {"txs": [encode(tx).hex() for tx in txs[2:4]]})
            assert answer == [{"tx_id": tx.tx_id.hex(), "status": "busy"} for tx in txs[2:4]]
            assert decoded == []
            for s in settings[1:]:
                await nursery.start(Node(s).run)
            # Commits make room: what the network committed of this pool over the window.
            taken = 2
            most = 0
            while taken < len(txs):
                results = await alone.submit(txs[taken:])
                accepted = sum(r.status is SubmitStatus.ACCEPTED for r in results)
                assert all(r.status is SubmitStatus.BUSY for r in results[accepted:])
                most = max(most, accepted)
                taken += accepted
                await trio.sleep(0.05)
            await alone.wait_committed(txs[-1].tx_id, 30)
            assert most > 2
            assert alone.core.pool.drained == len(txs)
            nursery.cancel_scope.cancel()


async def test_a_follower_checking_a_block_for_longer_than_the_election_timeout_keeps_its_leader(
    tmp_path: Path,
) -> None:
    """On a loaded machine a big block's signature checks can outlast the election timeout, and
    the leader's later messages wait behind them to be stepped; their arrival still shows the
    leader alive, so the follower does not start an election against a healthy leader."""
    settings = _settings(tmp_path, 4)
    timeout_s = settings[0].consensus.election_timeout_ms / 1000
    client = Identity.from_test_name("client")
    tx = sign_tx(client, settings[0].genesis.chain_id, 0, Noop(b"slow check"))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nodes, leader = await _start_until_led(nursery, settings)
            follower = next(n for n in nodes if n is not leader)
            checking, release = trio.Event(), trio.Event()
            checks = follower._preverify

            async def slow(txs: list, inline_max: int = 16, first: tuple | None = None) -> bool:  # type: ignore[type-arg]
                checking.set()  # only the leader's proposal brings this follower transactions
                if first is not None:  # as a check in a worker thread does
                    await follower._inbox_send.send(first)
                await release.wait()
                await checks(txs, inline_max)
                return first is not None

            follower._preverify = slow  # type: ignore[method-assign]
            await leader.submit([tx])
            await checking.wait()
            await trio.sleep(2.5 * timeout_s)  # the window in which nothing is to happen
            assert not follower.core._prevote_grants, "the follower started an election"
            assert follower.core.term == leader.core.term
            release.set()
            while follower.store.tx_height(tx.tx_id) is None:  # the held block then commits
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()


async def test_forwarded_transactions_waiting_together_are_checked_in_one_batch(tmp_path: Path) -> None:
    """A loaded leader's forward lane takes every message waiting at once: one signature batch
    (one thread round trip), not one per message, then each message goes on to the core."""
    from emrp2p.codec import encode
    from emrp2p.consensus import ForwardTxs

    (s,) = _settings(tmp_path, 1)
    node = Node(s)
    try:
        client = Identity.from_test_name("client")
        txs = [sign_tx(client, s.genesis.chain_id, k, Noop(b"%d" % k)) for k in range(9)]
        checked: list[list[bytes]] = []

        async def preverify(batch: list, inline_max: int = 16) -> None:  # type: ignore[type-arg]
            checked.append([tx.tx_id for tx in batch])

        node._preverify = preverify  # type: ignore[method-assign]
        senders = [Identity.from_test_name(f"peer-{k}").public for k in range(3)]
        for k, sender in enumerate(senders):
            payload = encode(ForwardTxs(tuple(txs[3 * k : 3 * k + 3])))
            node._forward_bytes += len(payload)
            node._forward_send.send_nowait((sender, payload))
        node._forward_send.close()
        await node._receive_forwards()
        assert checked == [[tx.tx_id for tx in txs]]
        stepped = [node._inbox.receive_nowait() for _ in senders]
        assert [(kind, sender, msg.txs) for kind, sender, msg in stepped] == [
            ("msg", sender, tuple(txs[3 * k : 3 * k + 3])) for k, sender in enumerate(senders)
        ]
        assert node._forward_bytes == 0
    finally:
        node.store.close()


@pytest.mark.parametrize("unchecked", [0, 3, 40])
async def test_a_proposal_and_the_commit_its_certificate_makes_reach_the_core_together_unless_checks_wait(
    tmp_path: Path, unchecked: int
) -> None:
    """A proposal carrying its parent's certificate: when its transactions' checks are few
    enough to run inline, the commit and the proposal reach the core as one item (one turn,
    one store write); when they go to a worker thread, the commit goes first, not waiting."""
    from emrp2p.consensus import CommitNotice, Propose
    from emrp2p.crypto import pending_checks
    from emrp2p.ledger.types import BlockHeader, Certificate, Signature, sign_block
    from emrp2p.node.node import INLINE_VERIFY_MAX

    (s,) = _settings(tmp_path, 1)
    node = Node(s)
    try:
        chain_id = s.genesis.chain_id
        client = Identity.from_test_name(f"client-{unchecked}")
        known = [sign_tx(client, chain_id, k, Noop(b"known")) for k in range(5)]
        fresh = [sign_tx(client, chain_id, 5 + k, Noop(b"fresh")) for k in range(unchecked)]
        assert await node._preverify(known) is False  # inline: nothing is sent anywhere
        leader = Identity.from_test_name("leader")
        cert = Certificate(0, 1, b"p" * 32, (Signature(leader.public, b"s" * 64),))
        header = BlockHeader(chain_id, 2, 0, b"p" * 32, leader.public, 5, b"r" * 32, b"s" * 32, 0, cert)
        propose = Propose(0, sign_block(leader, header, tuple(known + fresh)))
        node._check_send.send_nowait((leader.public, propose))
        node._check_send.close()
        await node._check_messages()
        items = []
        while True:
            try:
                items.append(node._inbox.receive_nowait())
            except trio.WouldBlock:
                break
        notice = CommitNotice(0, cert)
        if unchecked <= INLINE_VERIFY_MAX:
            assert items == [("msgs", leader.public, (notice, propose))]
        else:
            assert items == [("msg", leader.public, notice), ("msg", leader.public, propose)]
        sb = node.ledger.signing_bytes
        assert pending_checks([(tx.sender, sb(tx), tx.signature) for tx in propose.block.txs]) == []
    finally:
        node.store.close()


async def test_a_flood_of_forwarded_transactions_is_decoded_and_checked_a_bounded_round_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decoding happens on the event loop: the forward lane takes what is waiting only up to
    ``FORWARD_ROUND_BYTES`` a round, so a flood cannot hold up the leader's heartbeats."""
    import emrp2p.node.node as node_module
    from emrp2p.codec import encode
    from emrp2p.consensus import ForwardTxs

    (s,) = _settings(tmp_path, 1)
    node = Node(s)
    try:
        client = Identity.from_test_name("client")
        txs = [sign_tx(client, s.genesis.chain_id, k, Noop(b"%d" % k)) for k in range(9)]
        payloads = [encode(ForwardTxs(tuple(txs[3 * k : 3 * k + 3]))) for k in range(3)]
        monkeypatch.setattr(node_module, "FORWARD_ROUND_BYTES", len(payloads[0]) + len(payloads[1]))
        checked: list[list[bytes]] = []

        async def preverify(batch: list, inline_max: int = 16) -> None:  # type: ignore[type-arg]
            checked.append([tx.tx_id for tx in batch])

        node._preverify = preverify  # type: ignore[method-assign]
        sender = Identity.from_test_name("peer").public
        for payload in payloads:
            node._forward_bytes += len(payload)
            node._forward_send.send_nowait((sender, payload))
        node._forward_send.close()
        await node._receive_forwards()
        assert checked == [[tx.tx_id for tx in txs[:6]], [tx.tx_id for tx in txs[6:]]]
        assert [node._inbox.receive_nowait()[2].txs for _ in payloads] == [
            tuple(txs[3 * k : 3 * k + 3]) for k in range(3)
        ]
        assert node._forward_bytes == 0
    finally:
        node.store.close()


async def test_a_follower_commits_a_block_as_soon_as_the_next_proposal_brings_its_certificate(
    tmp_path: Path,
) -> None:
    """The leader sends no commit notice when its next proposal carries the parent's certificate;
    the follower must commit then, not only after it has checked the new block's signatures."""
    import dataclasses

    from emrp2p.node.node import INLINE_VERIFY_MAX

    # Heartbeats (which also carry the certificate) are too rare to stand in for the proposal.
    cfg = Config(election_timeout_ms=6000, heartbeat_ms=3000, min_block_interval_ms=20)
    settings = [dataclasses.replace(s, consensus=cfg) for s in _settings(tmp_path, 4)]
    client = Identity.from_test_name("client")
    chain_id = settings[0].genesis.chain_id
    a = sign_tx(client, chain_id, 0, Noop(b"a"))
    b = sign_tx(client, chain_id, 1, Noop(b"b"))
    gates = {a.tx_id: trio.Event(), b.tx_id: trio.Event()}

    def hold(node: Node, tx_id: bytes) -> None:
        """``node`` checks no proposal carrying ``tx_id`` until that transaction's gate opens."""
        checks = node._preverify

        async def held(txs: list, inline_max: int = INLINE_VERIFY_MAX, first: tuple | None = None) -> bool:  # type: ignore[type-arg]
            if not any(tx.tx_id == tx_id for tx in txs):
                return await checks(txs, inline_max, first)
            if first is not None:  # a long check: as one in a worker thread does
                await node._inbox_send.send(first)
            await gates[tx_id].wait()
            await checks(txs, inline_max)
            return first is not None

        node._preverify = held  # type: ignore[method-assign]

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nodes, leader = await _start_until_led(nursery, settings)
            f1, f2, f3 = (n for n in nodes if n is not leader)
            hold(f2, a.tx_id)  # no quorum for a's block until b waits in the leader's pool
            hold(f3, a.tx_id)
            hold(f1, b.tx_id)  # f1 cannot check the proposal that certifies a's block

            async def lost(payload: bytes) -> None:
                """Gossiped commit notices (lossy, at most one a second) are lost."""

            leader.net.publish = lost  # type: ignore[method-assign]
            await leader.submit([a])
            while not any(a in blk.txs for blk in f1.core.accepted_blocks()):
                await trio.sleep(0.01)
            height = f1.core.committed_height + 1
            await leader.submit([b])
            gates[a.tx_id].set()
            with trio.fail_after(2):  # well before the next heartbeat (3 s)
                while f1.core.committed_height < height:
                    await trio.sleep(0.01)
            assert not any(b in blk.txs for blk in f1.core.accepted_blocks())
            gates[b.tx_id].set()
            assert (await leader.wait_committed(b.tx_id, 10)).state == "committed"
            while f1.core.committed_height <= height:  # and f1 goes on with b's block
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()


def _count(counter: object, outcome: str) -> float:
    return counter.labels(outcome)._value.get()  # type: ignore[attr-defined]


async def test_followers_fill_in_compact_proposals_from_what_the_leader_relayed(tmp_path: Path) -> None:
    """Transactions submitted at the leader and at a follower commit everywhere, the followers
    building each block from the leader's relays and their own pools, never asking for it whole."""
    settings = _settings(tmp_path, 4)
    chain_id = settings[0].genesis.chain_id
    at_leader = [sign_tx(Identity.from_test_name("c1"), chain_id, k, Noop(b"l%d" % k)) for k in range(30)]
    at_follower = [sign_tx(Identity.from_test_name("c2"), chain_id, k, Noop(b"f%d" % k)) for k in range(30)]
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nodes, leader = await _start_until_led(nursery, settings)
            for n in nodes:  # every link up, so that no relay is lost to a dial in progress
                for m in nodes:
                    if m is not n:
                        await n.net.wait_connected(m.identity.public)
            follower = next(n for n in nodes if n is not leader)
            await leader.submit(at_leader)
            await follower.submit(at_follower)
            for node, txs in ((leader, at_leader), (follower, at_follower)):
                for tx in txs:
                    assert (await node.wait_committed(tx.tx_id, 30)).state == "committed"
            top = leader.core.committed_height
            for n in nodes:
                while n.store.committed_height() < top:
                    await trio.sleep(0.02)
            assert len({n.store.block(top).block_hash for n in nodes}) == 1  # type: ignore[union-attr]
            followers = [n for n in nodes if n is not leader]
            assert sum(_count(n.metrics.compact_proposals, "filled") for n in followers) >= 3
            assert sum(_count(n.metrics.compact_proposals, "asked") for n in followers) == 0
            nursery.cancel_scope.cancel()


async def test_a_follower_that_lost_the_relays_asks_for_whole_proposals_and_votes(tmp_path: Path) -> None:
    """A follower lacking relayed transactions asks for the whole proposal; with a third follower
    ignoring proposals, no block commits without its vote, so commits show it got them (well
    before a heartbeat could make the leader send the block again)."""
    import dataclasses

    cfg = Config(election_timeout_ms=6000, heartbeat_ms=3000, min_block_interval_ms=20)
    settings = [dataclasses.replace(s, consensus=cfg) for s in _settings(tmp_path, 4)]
    chain_id = settings[0].genesis.chain_id
    txs = [sign_tx(Identity.from_test_name("c"), chain_id, k, Noop(b"%d" % k)) for k in range(20)]
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nodes, leader = await _start_until_led(nursery, settings)
            deaf, absent = [n for n in nodes if n is not leader][:2]
            deaf._take_shared = lambda msg: None  # type: ignore[method-assign]
            absent._expand = lambda sender, msg: None  # type: ignore[method-assign]
            await leader.submit(txs)
            with trio.fail_after(2):
                for tx in txs:
                    assert (await leader.wait_committed(tx.tx_id, 30)).state == "committed"
            assert _count(deaf.metrics.compact_proposals, "asked") >= 1
            assert _count(deaf.metrics.compact_proposals, "filled") == 0
            nursery.cancel_scope.cancel()


async def test_signatures_a_worker_thread_is_checking_are_waited_for_not_checked_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follower's relayed transactions are being checked when the proposal naming them comes:
    the proposal's lane waits for those checks, and checks only what no one else is checking."""
    import threading

    import emrp2p.node.node as node_module

    (s,) = _settings(tmp_path, 1)
    node = Node(s)
    try:
        client = Identity.from_test_name("client")
        txs = [sign_tx(client, s.genesis.chain_id, k, Noop(b"%d" % k)) for k in range(60)]
        relayed, rest = txs[:40], txs[40:]
        checked: list[int] = []
        started, release = trio.Event(), threading.Event()
        real = node_module.check_pending

        def slow_check(todo: list) -> None:  # type: ignore[type-arg]
            checked.append(len(todo))
            if len(checked) == 1:
                trio.from_thread.run_sync(started.set)
                release.wait(10)
            real(todo)

        monkeypatch.setattr(node_module, "check_pending", slow_check)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node._preverify, relayed, 0)
            await started.wait()
            nursery.start_soon(node._preverify, txs, 0)
            await trio.testing.wait_all_tasks_blocked()
            assert checked == [40]  # the second waits for the first
            release.set()
        assert checked == [40, len(rest)]
        assert node._in_check == {}
    finally:
        node.store.close()
