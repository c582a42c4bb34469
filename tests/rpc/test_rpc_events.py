"""The event bus alone: topics, bounded queues, dropping a slow subscriber."""

from __future__ import annotations

import pytest
import trio

from emrp2p.rpc import EventBus, SubscriptionDropped


async def test_a_subscriber_gets_the_events_of_its_topic_and_star_gets_all() -> None:
    bus = EventBus()
    blocks = bus.subscribe("blocks")
    everything = bus.subscribe("*")
    assert bus.publish("blocks", {"height": 1}) == 2
    assert bus.publish("consent", {"id": "c1"}) == 1
    assert await blocks.receive() == ("blocks", {"height": 1})
    assert await everything.receive() == ("blocks", {"height": 1})
    assert await everything.receive() == ("consent", {"id": "c1"})
    with pytest.raises(trio.WouldBlock):
        blocks._recv.receive_nowait()


async def test_a_full_subscriber_is_dropped_while_publish_never_waits_and_others_keep_up() -> None:
    bus = EventBus(queue_size=2)
    slow = bus.subscribe("blocks")
    fast = bus.subscribe("blocks")
    for h in range(5):
        bus.publish("blocks", {"height": h})
        assert (await fast.receive())[1] == {"height": h}
    assert slow.dropped and not fast.dropped
    assert bus.subscriber_count("blocks") == 1 and bus.dropped_total == 1
    assert [await slow.receive() for _ in range(2)] == [("blocks", {"height": 0}), ("blocks", {"height": 1})]
    with pytest.raises(SubscriptionDropped):
        await slow.receive()


async def test_closing_a_subscription_ends_its_stream_after_what_was_queued() -> None:
    bus = EventBus()
    with bus.subscribe("blocks") as sub:
        bus.publish("blocks", {"height": 1})
    assert bus.subscriber_count() == 0
    assert bus.publish("blocks", {"height": 2}) == 0
    assert [e async for e in sub] == [("blocks", {"height": 1})]
