"""Publish/subscribe for node events, never blocking the publisher.

The node calls ``publish(topic, event)`` (synchronous, from the trio thread)
when something happens: a block committed, a consent granted, a break-glass
access. Each subscriber has its own bounded queue; a subscriber whose queue is
full is dropped on the spot (its stream ends with ``SubscriptionDropped`` after
the events already queued), so a slow RPC client can never slow the node or the
other subscribers. Subscribing to ``"*"`` receives every topic.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import trio

from emrp2p.rpc.errors import SubscriptionDropped

__all__ = ["EventBus", "Subscription", "ALL_TOPICS", "DEFAULT_QUEUE_SIZE"]

ALL_TOPICS = "*"
DEFAULT_QUEUE_SIZE = 1024


class Subscription:
    """One subscriber's queue of ``(topic, event)``; iterate it with ``async for``."""

    def __init__(self, bus: EventBus, id_: int, topic: str, queue_size: int) -> None:
        self.id = id_
        self.topic = topic
        self.dropped = False
        self._bus = bus
        self._send, self._recv = trio.open_memory_channel[tuple[str, Mapping[str, Any]]](queue_size)

    def _offer(self, topic: str, event: Mapping[str, Any]) -> bool:
        try:
            self._send.send_nowait((topic, event))
        except trio.WouldBlock:
            self.dropped = True
            self._send.close()
            return False
        except trio.ClosedResourceError:
            return False
        return True

    async def receive(self) -> tuple[str, Mapping[str, Any]]:
        """The next ``(topic, event)``; ``SubscriptionDropped`` once dropped and drained;
        ``trio.EndOfChannel`` once closed by its owner."""
        try:
            return await self._recv.receive()
        except trio.EndOfChannel:
            if self.dropped:
                raise SubscriptionDropped(f"subscription {self.id} dropped: queue full") from None
            raise

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> tuple[str, Mapping[str, Any]]:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Unsubscribe; events already queued can still be received."""
        self._bus._remove(self)
        self._send.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    """Topics to subscribers; ``publish`` is synchronous and never waits."""

    def __init__(self, *, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.queue_size = queue_size
        self._ids = itertools.count(1)
        self._subs: dict[str, dict[int, Subscription]] = {}
        self.dropped_total = 0

    def subscribe(self, topic: str, *, queue_size: int | None = None) -> Subscription:
        sub = Subscription(self, next(self._ids), topic, queue_size or self.queue_size)
        self._subs.setdefault(topic, {})[sub.id] = sub
        return sub

    def publish(self, topic: str, event: Mapping[str, Any]) -> int:
        """Queue ``event`` for every subscriber of ``topic`` (and of ``"*"``); returns how many
        took it. Subscribers with a full queue are dropped."""
        delivered = 0
        targets = list(self._subs.get(topic, {}).values())
        if topic != ALL_TOPICS:
            targets += self._subs.get(ALL_TOPICS, {}).values()
        for sub in targets:
            if sub._offer(topic, event):
                delivered += 1
            elif sub.dropped:
                self.dropped_total += 1
                self._remove(sub)
        return delivered

    def subscriber_count(self, topic: str | None = None) -> int:
        if topic is not None:
            return len(self._subs.get(topic, {}))
        return sum(len(s) for s in self._subs.values())

    def _remove(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.topic)
        if subs is not None:
            subs.pop(sub.id, None)
            if not subs:
                del self._subs[sub.topic]
