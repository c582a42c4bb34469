"""send_eagerly: a channel with room takes the item at once; a full one is waited on as by send."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from emrp2p.channels import send_eagerly


async def test_a_channel_with_room_takes_the_item_without_a_scheduling_pass() -> None:
    send, receive = trio.open_memory_channel[int](2)
    with trio.testing.assert_no_checkpoints():
        await send_eagerly(send, 1)
    with trio.testing.assert_checkpoints():
        await send.send(2)  # trio's own send yields even with room
    assert [receive.receive_nowait(), receive.receive_nowait()] == [1, 2]


async def test_a_full_channel_is_waited_on_in_order_and_the_wait_can_be_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    send, receive = trio.open_memory_channel[int](1)
    await send_eagerly(send, 1)
    with trio.move_on_after(1) as scope:
        await send_eagerly(send, 2)
    assert scope.cancelled_caught
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_eagerly, send, 3)
        await trio.testing.wait_all_tasks_blocked()
        assert receive.receive_nowait() == 1
        await trio.testing.wait_all_tasks_blocked()
    assert receive.receive_nowait() == 3


async def test_a_closed_channel_raises_as_send_does() -> None:
    send, receive = trio.open_memory_channel[int](1)
    await receive.aclose()
    with pytest.raises(trio.BrokenResourceError):
        await send_eagerly(send, 1)
    await send.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await send_eagerly(send, 1)
