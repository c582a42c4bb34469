"""The node's Prometheus metrics, on a registry of its own (several nodes may share a process)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import trio
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

__all__ = ["NodeMetrics", "serve_metrics"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class NodeMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_cpu_seconds_total, fds
        self.height = Gauge("emrp2p_chain_height", "Height of the last committed block", registry=r)
        self.committed_blocks = Counter("emrp2p_committed_blocks", "Blocks committed", registry=r)
        self.committed_txs = Counter("emrp2p_committed_txs", "Transactions committed", registry=r)
        self.pool_size = Gauge("emrp2p_tx_pool_size", "Pending transactions", registry=r)
        self.peers = Gauge("emrp2p_peers_connected", "Members with a live connection", registry=r)
        self.term = Gauge("emrp2p_term", "Current consensus term", registry=r)
        self.is_leader = Gauge("emrp2p_is_leader", "1 while this node leads an established term", registry=r)
        self.commit_latency = Histogram(
            "emrp2p_commit_latency_seconds",
            "From local submission to the committed answer",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rpc_requests = Counter(
            "emrp2p_rpc_requests", "JSON-RPC requests by method and code", ["method", "code"], registry=r
        )
        self.bad_messages = Counter("emrp2p_bad_messages", "Undecodable peer or gossip messages", registry=r)
        self.send_drops = Counter(
            "emrp2p_send_drops", "Messages not queued to a peer (queue full)", registry=r
        )
        self.forward_drops = Counter(
            "emrp2p_forward_drops",
            "Forwarded transaction batches dropped because intake was full (the forwarder retries)",
            registry=r,
        )
        self.compact_proposals = Counter(
            "emrp2p_compact_proposals",
            "Compact proposals received: filled in from relayed and pooled transactions, or asked "
            "for whole (some were missing)",
            ["outcome"],
            registry=r,
        )
        self.backlog_refusals = Counter(
            "emrp2p_backlog_refusals",
            "Submitted transactions answered busy because the pool held its backlog (max_backlog_ms)",
            registry=r,
        )
        self.net = Gauge("emrp2p_net", "Network layer counters", ["counter"], registry=r)
        self._rpc_children: dict[tuple[str, int], Any] = {}

    def observe_rpc(self, method: str, code: int | None) -> None:
        """Count one request; the label set is bounded (known methods, error codes)."""
        key = (method, code or 0)
        child = self._rpc_children.get(key)
        if child is None:
            child = self._rpc_children[key] = self.rpc_requests.labels(method=method, code=str(key[1]))
        child.inc()

    def update_net(self, snapshot: dict[str, Any], peers: int) -> None:
        self.peers.set(peers)
        for name, value in snapshot.items():
            self.net.labels(counter=name).set(value)


async def serve_metrics(
    registry: CollectorRegistry,
    host: str,
    port: int,
    *,
    refresh: Callable[[], None] | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer ``GET /metrics`` in Prometheus text format on ``host:port`` (127.0.0.1 by default).

    A tiny HTTP/1.0-style responder on trio: bounded request size, a read
    timeout, one response per connection. Not prometheus_client's own server
    (threads, and it binds every interface by default). ``refresh`` runs before
    each scrape, for gauges read off other components rather than kept current.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started(listeners[0].socket.getsockname()[1])

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            with trio.move_on_after(5):
                while b"\r\n\r\n" not in data and len(data) < 8192:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        break
                    data += chunk
            line = data.split(b"\r\n", 1)[0].split()
            if len(line) >= 2 and line[0] == b"GET" and line[1].split(b"?")[0] == b"/metrics":
                if refresh is not None:
                    refresh()
                body, status = generate_latest(registry), b"200 OK"
            else:
                body, status = b"not found\n", b"404 Not Found"
            head = b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (
                status,
                CONTENT_TYPE_LATEST.encode(),
                len(body),
            )
            with trio.move_on_after(5):
                await stream.send_all(head + body)

    async def guarded(stream: trio.SocketStream) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await handle(stream)

    await trio.serve_listeners(guarded, listeners)
