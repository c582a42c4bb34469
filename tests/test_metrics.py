"""Prometheus metrics (emrp2p.node.metrics): one registry per node, served over HTTP on 127.0.0.1."""

from __future__ import annotations

import contextlib
import functools

import trio
from prometheus_client.parser import text_string_to_metric_families

from emrp2p.node.metrics import NodeMetrics, serve_metrics


async def http_get(port: int, request: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        out = b""
        while chunk := await stream.receive_some(65536):
            out += chunk
    return out


def sample_value(body: bytes, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    raise KeyError(name)


async def test_metrics_are_served_on_127_0_0_1_and_parse(nursery: trio.Nursery) -> None:
    m = NodeMetrics()
    m.height.set(42)
    m.committed_txs.inc(7)
    m.observe_rpc("tx.submit", None)
    m.observe_rpc("tx.submit", -32000)
    m.commit_latency.observe(0.003)
    port = await nursery.start(serve_metrics, m.registry, "127.0.0.1", 0)
    resp = await http_get(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = resp.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"text/plain" in head
    assert sample_value(body, "emrp2p_chain_height") == 42
    assert sample_value(body, "emrp2p_committed_txs_total") == 7
    assert sample_value(body, "emrp2p_rpc_requests_total", method="tx.submit", code="-32000") == 1
    assert sample_value(body, "emrp2p_rpc_requests_total", method="tx.submit", code="0") == 1
    assert sample_value(body, "emrp2p_commit_latency_seconds_bucket", le="0.001") == 0
    assert sample_value(body, "emrp2p_commit_latency_seconds_bucket", le="0.005") == 1
    assert sample_value(body, "emrp2p_commit_latency_seconds_bucket", le="5.0") == 1
    assert sample_value(body, "process_resident_memory_bytes") > 10e6  # what an operator watches
    assert sample_value(body, "process_open_fds") > 0


async def test_other_paths_and_methods_are_not_found(nursery: trio.Nursery) -> None:
    port = await nursery.start(serve_metrics, NodeMetrics().registry, "127.0.0.1", 0)
    assert (await http_get(port, b"GET / HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404")
    assert (await http_get(port, b"POST /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404")


async def test_each_node_has_its_own_registry(nursery: trio.Nursery) -> None:
    a, b = NodeMetrics(), NodeMetrics()
    a.height.set(1)
    b.height.set(2)
    pa = await nursery.start(serve_metrics, a.registry, "127.0.0.1", 0)
    pb = await nursery.start(serve_metrics, b.registry, "127.0.0.1", 0)
    body_a = (await http_get(pa, b"GET /metrics HTTP/1.1\r\n\r\n")).partition(b"\r\n\r\n")[2]
    body_b = (await http_get(pb, b"GET /metrics HTTP/1.1\r\n\r\n")).partition(b"\r\n\r\n")[2]
    assert sample_value(body_a, "emrp2p_chain_height") == 1
    assert sample_value(body_b, "emrp2p_chain_height") == 2


async def test_an_endless_request_is_cut_off_and_a_silent_client_blocks_no_one(nursery: trio.Nursery) -> None:
    port = await nursery.start(serve_metrics, NodeMetrics().registry, "127.0.0.1", 0)
    silent = await trio.open_tcp_stream("127.0.0.1", port)
    async with silent:
        # The server stops reading at its limit and closes; TCP may reset the rest.
        with trio.fail_after(10), contextlib.suppress(trio.BrokenResourceError):
            await http_get(port, b"GET /metrics HTTP/1.1\r\nX-Junk: " + b"j" * 1_000_000)
        assert (await http_get(port, b"GET /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 200")


async def test_network_gauges_are_refreshed_at_each_scrape(nursery: trio.Nursery) -> None:
    m = NodeMetrics()
    connected = [2]
    port = await nursery.start(
        functools.partial(
            serve_metrics, refresh=lambda: m.update_net({"frames_in": 10 * connected[0]}, connected[0])
        ),
        m.registry,
        "127.0.0.1",
        0,
    )
    body = (await http_get(port, b"GET /metrics HTTP/1.1\r\n\r\n")).partition(b"\r\n\r\n")[2]
    assert sample_value(body, "emrp2p_peers_connected") == 2
    assert sample_value(body, "emrp2p_net", counter="frames_in") == 20
    connected[0] = 3
    body = (await http_get(port, b"GET /metrics HTTP/1.1\r\n\r\n")).partition(b"\r\n\r\n")[2]
    assert sample_value(body, "emrp2p_peers_connected") == 3
