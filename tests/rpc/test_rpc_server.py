"""The server on a real Unix socket: socket file handling, framing, connections, subscriptions."""

from __future__ import annotations

import grp
import os
import socket
import stat

import pytest
import trio
import trio.testing
from rpc_helpers import Sample, raw_client

from emrp2p.rpc import (
    Dispatcher,
    EventBus,
    RpcClient,
    RpcError,
    RpcServer,
    SocketInUse,
    SubscriptionDropped,
    SyncRpcClient,
    call_sync,
)
from emrp2p.rpc import errors as codes


async def test_the_socket_is_created_with_mode_0600(server: RpcServer, sock_path: str) -> None:
    st = os.stat(sock_path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert [n for n in os.listdir(os.path.dirname(sock_path)) if n.endswith(".tmp")] == []


async def test_with_a_group_the_socket_is_group_read_writable_and_owned_by_it(
    nursery: trio.Nursery, sock_path: str, sample: Sample
) -> None:
    group = grp.getgrgid(os.getgid()).gr_name
    await nursery.start(RpcServer(sock_path, sample.dispatcher, group=group).run)
    st = os.stat(sock_path)
    assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == os.getgid()


async def test_a_stale_socket_file_is_replaced(nursery: trio.Nursery, sock_path: str, sample: Sample) -> None:
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(sock_path)
    dead.close()
    assert stat.S_ISSOCK(os.stat(sock_path).st_mode)
    await nursery.start(RpcServer(sock_path, sample.dispatcher).run)
    async with RpcClient(sock_path) as client:
        assert await client.call("add", 1, 2) == 3


async def test_a_second_server_refuses_to_start_while_the_first_is_alive(
    server: RpcServer, sock_path: str, sample: Sample
) -> None:
    with pytest.raises(SocketInUse, match="another server"):
        await RpcServer(sock_path, sample.dispatcher).run()
    async with RpcClient(sock_path) as client:
        assert await client.call("add", 2, 2) == 4


async def test_a_path_that_is_not_a_socket_is_never_replaced(sock_path: str, sample: Sample) -> None:
    with open(sock_path, "w") as f:
        f.write("keep me")
    with pytest.raises(SocketInUse, match="not a socket"):
        await RpcServer(sock_path, sample.dispatcher).run()
    with open(sock_path) as f:
        assert f.read() == "keep me"


async def test_the_socket_file_is_removed_when_the_server_stops(sock_path: str, sample: Sample) -> None:
    async with trio.open_nursery() as n:
        await n.start(RpcServer(sock_path, sample.dispatcher).run)
        assert os.path.exists(sock_path)
        n.cancel_scope.cancel()
    assert not os.path.exists(sock_path)


async def test_calls_batches_and_errors_through_the_async_client(server: RpcServer, sock_path: str) -> None:
    async with RpcClient(sock_path) as client:
        assert await client.call("greet", name="ward 3", excited=True) == "hello ward 3!"
        assert await client.call("blob.reverse", blob="abcd") == "cdab"
        with pytest.raises(RpcError) as e:
            await client.call("fail.app", kind="bad_nonce")
        assert e.value.code == codes.BAD_NONCE and e.value.data == {"code": "bad_nonce"}
        results = await client.call_batch(
            [("add", [1, 2]), ("nope", None), ("add", {"a": 3, "b": 4})], return_errors=True
        )
        assert results[0] == 3 and isinstance(results[1], RpcError) and results[2] == 7
        assert results[1].code == codes.METHOD_NOT_FOUND
        with pytest.raises(RpcError) as e:
            await client.call_batch([("add", [1, 2]), ("add", ["x", 2])])
        assert e.value.code == codes.INVALID_PARAMS
        await client.notify("record", 9)
        assert await client.call("add", 0, 0) == 0


async def test_requests_on_one_connection_are_answered_in_order_and_notifications_run(
    server: RpcServer, sock_path: str, sample: Sample
) -> None:
    async with raw_client(sock_path) as c:
        await c.send(
            b'{"jsonrpc":"2.0","method":"record","params":[1]}\n'
            b'{"jsonrpc":"2.0","method":"add","params":[1,1],"id":1}\n\n'
            b'[{"jsonrpc":"2.0","method":"record","params":[2]}]\n'
            b'{"jsonrpc":"2.0","method":"add","params":[2,2],"id":2}\n'
        )
        assert (await c.recv())["result"] == 2
        assert (await c.recv())["result"] == 4
    assert sample.notified == [1, 2]


async def test_malformed_json_gets_a_parse_error_and_the_connection_stays_usable(
    server: RpcServer, sock_path: str
) -> None:
    async with raw_client(sock_path) as c:
        await c.send(b"{this is not json\n")
        resp = await c.recv()
        assert resp["error"]["code"] == codes.PARSE_ERROR and resp["id"] is None
        assert (await c.request({"jsonrpc": "2.0", "method": "add", "params": [5, 5], "id": 3}))[
            "result"
        ] == 10


async def test_an_oversize_request_gets_an_error_and_the_connection_is_closed(
    server: RpcServer, sock_path: str
) -> None:
    async with raw_client(sock_path) as c:
        await c.send(b'{"jsonrpc":"2.0","method":"echo","params":["' + b"x" * 10_000 + b'"],"id":1}\n')
        resp = await c.recv()
        assert resp["error"]["code"] == codes.INVALID_REQUEST and resp["id"] is None
        assert await c.recv() is None
    async with raw_client(sock_path) as c:
        await c.send(b'{"jsonrpc":"2.0","method":"echo","params":["' + b"x" * 5000)
        resp = await c.recv()
        assert resp["error"]["code"] == codes.INVALID_REQUEST and "4096" in resp["error"]["message"]
        assert await c.recv() is None
    async with RpcClient(sock_path) as client:
        assert await client.call("echo", "x" * 3000) == "x" * 3000


async def test_a_client_that_disconnects_mid_request_does_not_disturb_the_server(
    server: RpcServer, sock_path: str, sample: Sample
) -> None:
    async with raw_client(sock_path) as c:
        await c.send_json({"jsonrpc": "2.0", "method": "held", "id": 1})
        await sample.entered.wait()
    async with raw_client(sock_path) as c:
        await c.send(b'{"jsonrpc":"2.0","method":"add","par')
    sample.gate.set()
    await sample.finished.wait()
    async with RpcClient(sock_path) as client:
        assert await client.call("add", 4, 5) == 9
    await trio.testing.wait_all_tasks_blocked()
    assert server.active_connections == 0


async def test_several_clients_are_served_concurrently(
    server: RpcServer, sock_path: str, sample: Sample
) -> None:
    n = 8
    sample.rendezvous_n = n
    results: dict[int, list[int]] = {}

    async def one(i: int) -> None:
        async with RpcClient(sock_path) as client:
            out = [await client.call("rendezvous")]
            out += [await client.call("add", i, k) for k in range(20)]
            results[i] = out

    with trio.fail_after(10):
        async with trio.open_nursery() as n_:
            for i in range(n):
                n_.start_soon(one, i)
    assert results == {i: [n] + [i + k for k in range(20)] for i in range(n)}


async def test_one_client_pipelines_calls_from_many_tasks(server: RpcServer, sock_path: str) -> None:
    got: dict[int, int] = {}
    async with RpcClient(sock_path) as client:

        async def one(i: int) -> None:
            got[i] = await client.call("add", i, i)

        async with trio.open_nursery() as n:
            for i in range(50):
                n.start_soon(one, i)
    assert got == {i: 2 * i for i in range(50)}


async def test_a_connection_over_the_limit_is_told_busy(
    nursery: trio.Nursery, sock_path: str, sample: Sample
) -> None:
    await nursery.start(RpcServer(sock_path, sample.dispatcher, max_connections=2).run)
    async with RpcClient(sock_path) as a, RpcClient(sock_path) as b:
        assert await a.call("add", 1, 0) == 1 and await b.call("add", 2, 0) == 2
        async with raw_client(sock_path) as c:
            resp = await c.recv()
            assert resp["error"]["code"] == codes.BUSY and resp["id"] is None
            assert await c.recv() is None
        async with RpcClient(sock_path) as third:
            with pytest.raises(RpcError) as e:
                await third.call("add", 1, 1)
            assert e.value.code == codes.BUSY


async def test_the_blocking_client_works_from_another_thread(server: RpcServer, sock_path: str) -> None:
    def work() -> list[object]:
        out: list[object] = [call_sync(sock_path, "add", [20, 22], timeout=5)]
        with SyncRpcClient(sock_path, timeout=5) as c:
            out.append(c.call("greet", {"name": "lab"}))
            try:
                c.call("fail.app", {"kind": "consent_not_found"})
            except RpcError as e:
                out.append(e.code)
        return out

    assert await trio.to_thread.run_sync(work) == [42, "hello lab", codes.CONSENT_NOT_FOUND]


async def test_subscribers_receive_events_as_notifications_until_they_unsubscribe(
    server: RpcServer, sock_path: str, bus: EventBus
) -> None:
    async with raw_client(sock_path) as c:
        resp = await c.request(
            {"jsonrpc": "2.0", "method": "events.subscribe", "params": {"topic": "blocks"}, "id": 1}
        )
        sid = resp["result"]
        assert bus.subscriber_count("blocks") == 1
        bus.publish("blocks", {"height": 7, "hash": bytes.fromhex("abcd")})
        bus.publish("consent", {"id": "not for us"})
        assert await c.recv() == {
            "jsonrpc": "2.0",
            "method": "events",
            "params": {"subscription": sid, "topic": "blocks", "event": {"height": 7, "hash": "abcd"}},
        }
        resp = await c.request({"jsonrpc": "2.0", "method": "events.unsubscribe", "params": [sid], "id": 2})
        assert resp == {"jsonrpc": "2.0", "id": 2, "result": True}
        assert bus.subscriber_count() == 0
        resp = await c.request({"jsonrpc": "2.0", "method": "events.unsubscribe", "params": [sid], "id": 3})
        assert resp["result"] is False


async def test_a_disconnected_subscriber_is_removed_from_the_bus(
    server: RpcServer, sock_path: str, bus: EventBus
) -> None:
    async with RpcClient(sock_path) as client:
        await client.subscribe("*")
        await client.subscribe("blocks")
        assert bus.subscriber_count() == 2
    await trio.testing.wait_all_tasks_blocked()
    assert bus.subscriber_count() == 0


async def test_the_async_client_yields_events_of_its_subscriptions(
    server: RpcServer, sock_path: str, bus: EventBus
) -> None:
    async with RpcClient(sock_path) as client:
        async with await client.subscribe("*") as everything:
            blocks = await client.subscribe("blocks")
            bus.publish("blocks", {"height": 1})
            bus.publish("audit", {"record": "r1"})
            assert await blocks.receive() == ("blocks", {"height": 1})
            assert await everything.receive() == ("blocks", {"height": 1})
            assert await everything.receive() == ("audit", {"record": "r1"})
        assert bus.subscriber_count("*") == 0
        await blocks.unsubscribe()
        assert bus.subscriber_count() == 0


async def test_a_slow_subscriber_is_dropped_with_a_notice_without_blocking_others(
    server: RpcServer, sock_path: str, bus: EventBus
) -> None:
    pad = "x" * 2000
    async with raw_client(sock_path) as slow, RpcClient(sock_path) as fast_client:
        slow_sid = (
            await slow.request(
                {"jsonrpc": "2.0", "method": "events.subscribe", "params": ["blocks"], "id": 1}
            )
        )["result"]
        fast = await fast_client.subscribe("blocks")
        published = 0
        with trio.fail_after(10):
            while bus.subscriber_count("blocks") == 2:
                assert published < 100_000
                bus.publish("blocks", {"height": published, "pad": pad})
                assert await fast.receive() == ("blocks", {"height": published, "pad": pad})
                published += 1
            for extra in range(published, published + 20):
                bus.publish("blocks", {"height": extra, "pad": pad})
                assert (await fast.receive())[1]["height"] == extra
        assert not fast.dropped and bus.dropped_total == 1
        heights = []
        while True:
            msg = await slow.recv()
            if msg["method"] == "events.dropped":
                assert msg["params"]["subscription"] == slow_sid
                break
            heights.append(msg["params"]["event"]["height"])
        assert heights == list(range(len(heights))) and 0 < len(heights) < published
        resp = await slow.request({"jsonrpc": "2.0", "method": "add", "params": [1, 1], "id": 2})
        assert resp["result"] == 2


async def test_the_async_client_reports_a_dropped_subscription(
    server: RpcServer, sock_path: str, bus: EventBus
) -> None:
    async with RpcClient(sock_path, event_queue_size=2) as client:
        sub = await client.subscribe("blocks")
        for h in range(3):
            bus.publish("blocks", {"height": h})
        await trio.testing.wait_all_tasks_blocked()  # the server sent them all, the client read them all
        assert [await sub.receive() for _ in range(2)] == [
            ("blocks", {"height": 0}),
            ("blocks", {"height": 1}),
        ]
        with pytest.raises(SubscriptionDropped):
            await sub.receive()
        assert await client.call("add", 1, 0) == 1
        assert bus.subscriber_count() == 0


async def test_the_async_client_fails_pending_calls_when_the_server_goes_away(
    sock_path: str, sample: Sample
) -> None:
    async with trio.open_nursery() as n:
        await n.start(RpcServer(sock_path, sample.dispatcher).run)
        async with RpcClient(sock_path) as client:

            async def cancel_server() -> None:
                await sample.entered.wait()
                n.cancel_scope.cancel()

            n.start_soon(cancel_server)
            with pytest.raises(ConnectionError):
                await client.call("held")


async def test_a_client_that_stops_reading_is_disconnected_after_the_send_timeout(
    nursery: trio.Nursery, sock_path: str, sample: Sample
) -> None:
    bus = EventBus(queue_size=2)
    server = RpcServer(sock_path, sample.dispatcher, events=bus, send_timeout=0.05)
    await nursery.start(server.run)
    async with raw_client(sock_path) as stuck:
        resp = await stuck.request(
            {"jsonrpc": "2.0", "method": "events.subscribe", "params": ["blocks"], "id": 1}
        )
        assert resp["result"] == 1 and server.active_connections == 1
        with trio.fail_after(10):
            while server.active_connections:
                bus.publish("blocks", {"pad": "x" * 4000})
                await trio.sleep(0.01)
        while (msg := await stuck.recv()) is not None:
            assert msg["method"] in ("events", "events.dropped")


async def test_an_answer_larger_than_the_socket_buffer_arrives_whole_and_in_order(
    server: RpcServer, sock_path: str
) -> None:
    # 4.8 MB: written in part at once (what the socket takes), the rest as the client reads;
    # the second answer waits for it.
    async with raw_client(sock_path) as c:
        await c.send(
            b'{"jsonrpc":"2.0","method":"greet","params":{"name":"abcdefghij","times":300000},"id":1}\n'
            b'{"jsonrpc":"2.0","method":"add","params":[2,3],"id":2}\n'
        )
        big = await c.recv()
        assert big["id"] == 1 and big["result"] == "hello abcdefghij" * 300000
        assert await c.recv() == {"jsonrpc": "2.0", "id": 2, "result": 5}


async def test_a_client_pipelining_requests_does_not_keep_the_event_loop_to_itself(
    nursery: trio.Nursery, sock_path: str
) -> None:
    ticks = 0
    seen: list[int] = []
    d = Dispatcher()

    @d.method("tick")
    async def tick() -> int:
        seen.append(ticks)
        return ticks

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    await nursery.start(RpcServer(sock_path, d).run)
    async with raw_client(sock_path) as c:
        nursery.start_soon(ticker)
        # 200 requests in one write: the server reads them in one go, and answers each at once.
        await c.send(b'{"jsonrpc":"2.0","method":"tick","id":1}\n' * 200)
        for _ in range(200):
            assert (await c.recv())["id"] == 1
    # Other tasks ran between them (one scheduler pass per request; none if the server
    # answered all 200 from its buffer without yielding).
    assert len(seen) == 200 and seen[-1] - seen[0] >= 150
