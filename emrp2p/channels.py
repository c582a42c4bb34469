"""Putting an item on a trio memory channel without a scheduling pass when it has room."""

from __future__ import annotations

from typing import TypeVar

import trio

__all__ = ["send_eagerly"]

T = TypeVar("T")


async def send_eagerly(channel: trio.MemorySendChannel[T], item: T) -> None:
    """``channel.send(item)``, minus the pass through trio's scheduler when the channel has room.

    trio's ``send`` yields to every other ready task even when it need not wait; a message on
    its way from the network to the core crossed three channels, and each pass costs as much
    CPU as a small task step. A full channel is waited on exactly as by ``send`` (back-pressure,
    a cancellation point); a closed one raises as ``send`` does.
    """
    try:
        channel.send_nowait(item)
    except trio.WouldBlock:
        await channel.send(item)
